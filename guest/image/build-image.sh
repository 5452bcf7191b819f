#!/usr/bin/env bash
# Builds the utility VM's boot files from a Debian cloud kernel and the guest
# agent, without installing anything on the host. KERNEL is the kernel's
# package (.deb, unpacked here) or an installed kernel's /boot/vmlinuz-<release>
# (its modules in /lib/modules/<release>; the Debian package build's way):
#   OUT/vmlinux         the kernel, uncompressed: the ELF inside the packaged
#                       bzImage, which QEMU boots through its PVH entry (no
#                       decompression under TCG: ~0.3 s of every cold boot)
#   OUT/initrd.img      lz4 cpio, only what the agent needs before it serves:
#                       /init = the agent, the modules that reach the host and
#                       the system disk (/early/*.list), /etc; /bin, /sbin,
#                       /lib and /lib64 are links into /usr
#   OUT/system.img      read-only ext4 the agent mounts at /usr once it
#                       serves (a virtio disk, serial "runhcs-system"):
#                       busybox-static and its applets, crun and its
#                       libraries, the kernel modules loaded later or on
#                       demand (/lib/modules/load-later.list, modules.dep)
#   OUT/kernel.release  `uname -r` of that kernel
# Why two: under TCG the kernel unpacks the initramfs before init starts, at
# ~40 ms per MB, and a file system on a disk costs nothing until read; its
# pages are guest page cache (droppable), not tmpfs, and the host's page
# cache holds one copy for every VM.
# Reproducible: sorted entries, every mtime 0, owner root, fixed UUID, seed
# and clock for the file system. LZ4 (the legacy frame the kernel reads), not
# gzip: faster to unpack under TCG.
# Usage: build-image.sh KERNEL AGENT OUT
set -euo pipefail
KERNEL=$1 AGENT=$2 OUT=$3
# Loaded at boot, in three lists the agent reads: what it needs to reach
# the host (the PCI transport, which carries the agent's virtio-serial on
# every machine, and the console: load.list), the system disk's driver and
# microvm's mmio transport (load-system.list), both in the initramfs; then,
# from the system disk, shares, container layers and pod networks
# (load-later.list). Calls that need the later ones wait.
WANT_CHANNEL=(virtio_pci virtio_console)
WANT_SYSTEM=(virtio_mmio virtio_blk)
WANT_LATER=(virtiofs overlay virtio_net virtio_balloon)
# Not loaded at boot, but there for the kernel to load on demand (its
# request_module runs /sbin/modprobe, busybox's, with modules.dep): what
# privileged containers ask for (a bridge, veth pairs).
ON_DEMAND=(bridge veth)

T=$(mktemp -d /tmp/runhcs-image.XXXXXX)
trap 'rm -rf "$T"' EXIT
if [[ $KERNEL == *.deb ]]; then
  dpkg-deb -x "$KERNEL" "$T/k"
  KVER=$(ls "$T/k/lib/modules")
  K=$T/k
else
  KVER=${KERNEL##*/vmlinuz-}
  K=${KERNEL%/boot/vmlinuz-*}
  [ -f "$K/lib/modules/$KVER/modules.builtin" ] || { echo "build-image: no modules for $KVER in $K/lib/modules" >&2; exit 1; }
fi
MODS=$K/lib/modules/$KVER
R=$T/root  # the initramfs
S=$T/usr   # the system disk, /usr in the VM
mkdir -p "$R"/{usr,proc,sys,dev,run,tmp,etc,root,mnt,early} "$S"/{bin,sbin,lib,lib64}
for d in bin sbin lib lib64; do ln -s "usr/$d" "$R/$d"; done

# Without debug info: it is most of the image otherwise.
strip --strip-all -o "$R/init" "$AGENT"
chmod 0755 "$R/init"

cp /bin/busybox "$S/bin/busybox"
for a in $("$S/bin/busybox" --list); do
  [ -e "$S/bin/$a" ] || ln -s busybox "$S/bin/$a"
done

CRUN=$(command -v crun)
install -m 0755 "$CRUN" "$S/bin/crun"
# Its shared libraries and the loader, at the paths it was linked against
# (/lib and /usr/lib are one directory in the VM).
for lib in $(ldd "$CRUN" | awk '/=> \//{print $3} /^\s*\/lib/{print $1}'); do
  rel=${lib#/usr}
  mkdir -p "$S$(dirname "$rel")"
  cp -L "$lib" "$S$rel"
done
[ -e "$S/lib64/ld-linux-x86-64.so.2" ] || cp -L /lib64/ld-linux-x86-64.so.2 "$S/lib64/"

# Modules, dependencies first. A module's dependencies are its .modinfo
# "depends=" entry; file names may use '-' where module names use '_'.
declare -A done_mod deps_of
ORDER=()
find_ko() {
  local n=$1
  find "$MODS/kernel" \( -name "$n.ko" -o -name "${n//_/-}.ko" \) -print -quit
}
add_mod() {
  local n=$1 ko deps d
  [ -n "${done_mod[$n]:-}" ] && return
  ko=$(find_ko "$n")
  if [ -z "$ko" ]; then
    grep -q "/$n.ko\$\|/${n//_/-}.ko\$" "$MODS/modules.builtin" && { done_mod[$n]=builtin; return; }
    echo "build-image: module $n not found in $KVER" >&2
    exit 1
  fi
  done_mod[$n]=1
  deps=$(tr '\0' '\n' <"$ko" | sed -n 's/^depends=//p' | tr ',' ' ')
  for d in $deps; do add_mod "$d"; done
  deps_of[$n]=$deps
  done_mod[$n]=${ko#"$K"}
  ORDER+=("${ko#"$K"}")
}
# Debian signs its modules. This kernel does not enforce signatures (no
# CONFIG_MODULE_SIG_FORCE, no lockdown in the VM): it only checks one that
# is there, and taints itself when there is none. The check (SHA-256 of the
# module and an RSA verify) cost ~10 ms of the four modules loaded before
# the agent serves, under TCG; the VM's kernel loads nothing but these.
drop_signature() {  # KO: the appended signature (PKCS#7, struct module_signature, magic) goes
  local ko=$1 magic='~Module signature appended~' size len
  [ "$(tail -c 28 "$ko" | head -c 27)" = "$magic" ] || return 0
  size=$(stat -c %s "$ko")
  # module_signature is 12 bytes, its last 4 the signature's length, big-endian.
  len=$(tail -c 32 "$ko" | head -c 4 | od -An -tu1 | awk '{print (($1 * 256 + $2) * 256 + $3) * 256 + $4}')
  truncate -s $((size - 28 - 12 - len)) "$ko"
}
copy_mods() {  # DEST: ORDER's modules under DEST at their /lib/modules paths
  for ko in "${ORDER[@]}"; do
    mkdir -p "$1$(dirname "$ko")"
    cp "$K$ko" "$1$ko"
    drop_signature "$1$ko"
  done
}
mkdir -p "$S/lib/modules"
BOOT_ORDER=()
boot_list() {  # ROOT PREFIX LIST MODULE...: those (and what they need, not yet listed)
  local root=$1 prefix=$2 list=$3 m
  shift 3
  ORDER=()
  for m in "$@"; do add_mod "$m"; done
  copy_mods "$root$prefix"
  printf '%s\n' "${ORDER[@]/#/$prefix}" >"$root$list"
  BOOT_ORDER+=("${ORDER[@]}")
}
boot_list "$R" /early /early/load.list "${WANT_CHANNEL[@]}"
boot_list "$R" /early /early/load-system.list "${WANT_SYSTEM[@]}"
# /lib/modules/... in the VM is this disk's /lib/modules/...
boot_list "$S" "" /lib/modules/load-later.list "${WANT_LATER[@]}"
ORDER=()
for m in "${ON_DEMAND[@]}"; do add_mod "$m"; done
copy_mods "$S"
# modules.dep as depmod writes it: path relative to the release's directory,
# then every module it needs, each before the ones it needs (modprobe loads
# from the end).
post_order() {  # the module's dependencies, each after the ones it needs
  local d
  for d in ${deps_of[$1]:-}; do
    [ "${done_mod[$d]}" = builtin ] && continue
    post_order "$d"
    echo "${done_mod[$d]#/lib/modules/"$KVER"/}"
  done
}
for n in "${!deps_of[@]}"; do
  echo "${done_mod[$n]#/lib/modules/"$KVER"/}: $(post_order "$n" | awk '!seen[$0]++' | tac | paste -sd' ')"
done | LC_ALL=C sort >"$S/lib/modules/$KVER/modules.dep"
ln -s ../bin/busybox "$S/sbin/modprobe"

printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$R/etc/passwd"
printf 'root:x:0:\ntty:x:5:\nnogroup:x:65534:\n' >"$R/etc/group"
echo runhcs-uvm >"$R/etc/hostname"

mkdir -p "$OUT"
find "$R" "$S" -exec touch -h -d @0 {} +
(cd "$R" && find . -print0 | LC_ALL=C sort -z |
  cpio --null -o -H newc --reproducible --owner=0:0 --quiet) | lz4 -l -9 -q >"$OUT/initrd.img.tmp"
# Read-only: no journal, no reserved blocks, one inode per file plus slack;
# 4 KiB blocks and a quarter free (ext4 needs some room for its metadata).
KB=$(du -sk --apparent-size "$S" | cut -f1)
FILES=$(find "$S" | wc -l)
rm -f "$OUT/system.img.tmp"
truncate -s $((KB * 5 / 4 + 2048))k "$OUT/system.img.tmp"
E2FSPROGS_FAKE_TIME=1 mke2fs -q -t ext4 -O ^has_journal,^resize_inode -b 4096 -m 0 \
  -N $((FILES + 64)) -L runhcs-system -U 5c1ab5e0-0000-4000-8000-72756e686373 \
  -E root_owner=0:0,hash_seed=5c1ab5e0-0000-4000-8000-72756e686373 -d "$S" \
  "$OUT/system.img.tmp"
# mke2fs copies each file's ctime and atime: when it was made, read here.
(cd "$S" && find . | LC_ALL=C sort | sed 's|^\.||; s|^$|/|') |
  while IFS= read -r p; do printf 'sif "%s" ctime @0\nsif "%s" atime @0\n' "$p" "$p"; done >"$T/times.cmds"
E2FSPROGS_FAKE_TIME=1 debugfs -w -f "$T/times.cmds" "$OUT/system.img.tmp" >/dev/null 2>&1
mv "$OUT/initrd.img.tmp" "$OUT/initrd.img"
mv "$OUT/system.img.tmp" "$OUT/system.img"
# The bzImage's payload, decompressed as the kernel's scripts/extract-vmlinux
# does (each compressor's magic, tried where it occurs), kept only if it is
# the ELF with a PVH entry (XEN_ELFNOTE_PHYS32_ENTRY, note type 0x12).
extract_vmlinux() {  # BZIMAGE OUT
  local magic_tool magic tool off
  for magic_tool in '\x02\x21\x4c\x18:lz4 -dc' '\x28\xb5\x2f\xfd:zstd -dcq' \
    '\xfd\x37\x7a\x58\x5a\x00:xz -dcq' '\x1f\x8b\x08:gzip -dcq'; do
    magic=${magic_tool%%:*} tool=${magic_tool#*:}
    command -v "${tool%% *}" >/dev/null || continue
    for off in $(LC_ALL=C grep -obUaP "$magic" "$1" | cut -d: -f1); do
      tail -c +$((off + 1)) "$1" | $tool >"$2" 2>/dev/null || true
      if readelf -h "$2" >/dev/null 2>&1; then return 0; fi
    done
  done
  return 1
}
extract_vmlinux "$K/boot/vmlinuz-$KVER" "$T/vmlinux" ||
  { echo "build-image: no kernel ELF found in $K/boot/vmlinuz-$KVER" >&2; exit 1; }
readelf -n "$T/vmlinux" | grep -qE '\(0x00000012\)|PHYS32_ENTRY' ||
  { echo "build-image: $KVER has no PVH entry (CONFIG_PVH): QEMU cannot boot it uncompressed" >&2; exit 1; }
# QEMU keeps the kernel file mapped, and at every reset copies each loadable
# segment's file bytes into guest RAM and zero-fills the rest up to its
# memory size. The last segment ends in ~11 MiB of zeros held in the file
# (.bss, .init.scratch): ending each segment's file part at its last nonzero
# byte leaves the guest's memory the same, and spares every host the page
# cache of those zeros, which each VM's QEMU would otherwise read and map.
trim_zero_tails() {  # VMLINUX (ELF64, little-endian), in place
  perl -e '
    open(my $f, "+<:raw", $ARGV[0]) or die "$ARGV[0]: $!";
    my $d = do { local $/; <$f> };
    my ($phoff, $phentsize, $phnum) = unpack("x32 Q< x14 S< S<", $d);
    my $zeros = "\0" x 4096;
    for my $i (0 .. $phnum - 1) {
      my $ph = $phoff + $i * $phentsize;
      my ($type, $off, $filesz, $memsz) = unpack("L< x4 Q< x16 Q< Q<", substr($d, $ph, 48));
      next unless $type == 1 && $filesz > 0 && $filesz <= $memsz;
      my $end = $filesz;
      $end -= 4096 while $end >= 4096 && substr($d, $off + $end - 4096, 4096) eq $zeros;
      $end-- while $end > 0 && substr($d, $off + $end - 1, 1) eq "\0";
      next if $end == $filesz;
      seek($f, $ph + 32, 0) or die;
      print $f pack("Q<", $end) or die;
    }
    close($f) or die;
  ' "$1"
}
trim_zero_tails "$T/vmlinux"
mv "$T/vmlinux" "$OUT/vmlinux"
rm -f "$OUT/vmlinuz"
echo "$KVER" >"$OUT/kernel.release"
echo "build-image: $KVER, $(du -k "$OUT/vmlinux" | cut -f1) KiB vmlinux, $(du -k "$OUT/initrd.img" | cut -f1) KiB initrd, $(du -k --apparent-size "$OUT/system.img" | cut -f1) KiB system disk, modules: ${BOOT_ORDER[*]##*/}; on demand: ${ORDER[*]##*/}"
