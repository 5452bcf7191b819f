#!/usr/bin/env bash
# Builds the utility VM's boot files from a Debian cloud kernel and the guest
# agent, without installing anything on the host. KERNEL is the kernel's
# package (.deb, unpacked here) or an installed kernel's /boot/vmlinuz-<release>
# (its modules in /lib/modules/<release>; the Debian package build's way):
#   OUT/vmlinuz         the kernel, as packaged
#   OUT/initrd.img      lz4 cpio: /init = the agent, busybox-static and its
#                       applets, crun and its libraries, the kernel modules
#                       the VM needs (load order in /lib/modules/load*.list)
#   OUT/kernel.release  `uname -r` of that kernel
# Reproducible: sorted entries, every mtime 0, owner root. LZ4 (the legacy
# frame the kernel reads), not gzip: under TCG the kernel unpacks it in
# 0.38 s instead of 0.63 s, and init waits for that.
# Usage: build-image.sh KERNEL AGENT OUT
set -euo pipefail
KERNEL=$1 AGENT=$2 OUT=$3
# Loaded at boot, in three lists the agent reads: what it needs to reach
# the host (the mmio transport of microvm, the console: load.list), the PCI
# transport (q35: load-pci.list, loaded only when the VM has PCI devices),
# and, once it serves, shares, container layers and pod networks
# (load-later.list; calls that need them wait).
WANT_CHANNEL=(virtio_mmio virtio_console)
WANT_PCI=(virtio_pci)
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
R=$T/root
mkdir -p "$R"/{bin,sbin,usr/bin,usr/sbin,lib,proc,sys,dev,run,tmp,etc,root,mnt}

# Without debug info: it is most of the image otherwise.
strip --strip-all -o "$R/init" "$AGENT"
chmod 0755 "$R/init"

cp /bin/busybox "$R/bin/busybox"
for a in $("$R/bin/busybox" --list); do
  [ -e "$R/bin/$a" ] || ln -s busybox "$R/bin/$a"
done

CRUN=$(command -v crun)
install -m 0755 "$CRUN" "$R/usr/bin/crun"
# Its shared libraries and the loader, at the paths it was linked against.
for lib in $(ldd "$CRUN" | awk '/=> \//{print $3} /^\s*\/lib/{print $1}'); do
  mkdir -p "$R$(dirname "$lib")"
  cp -L "$lib" "$R$lib"
done
[ -e "$R/lib64" ] || { mkdir -p "$R/lib64"; cp -L /lib64/ld-linux-x86-64.so.2 "$R/lib64/"; }

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
copy_mods() {
  for ko in "${ORDER[@]}"; do
    mkdir -p "$R$(dirname "$ko")"
    cp "$K$ko" "$R$ko"
  done
}
mkdir -p "$R/lib/modules"
BOOT_ORDER=()
boot_list() {  # LIST MODULE...: those (and what they need, not yet listed)
  local list=$1 m
  shift
  ORDER=()
  for m in "$@"; do add_mod "$m"; done
  copy_mods
  printf '%s\n' "${ORDER[@]}" >"$R/lib/modules/$list"
  BOOT_ORDER+=("${ORDER[@]}")
}
boot_list load.list "${WANT_CHANNEL[@]}"
boot_list load-pci.list "${WANT_PCI[@]}"
boot_list load-later.list "${WANT_LATER[@]}"
ORDER=()
for m in "${ON_DEMAND[@]}"; do add_mod "$m"; done
copy_mods
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
done | LC_ALL=C sort >"$R/lib/modules/$KVER/modules.dep"
ln -s ../bin/busybox "$R/sbin/modprobe"

printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$R/etc/passwd"
printf 'root:x:0:\ntty:x:5:\nnogroup:x:65534:\n' >"$R/etc/group"
echo runhcs-uvm >"$R/etc/hostname"

mkdir -p "$OUT"
find "$R" -exec touch -h -d @0 {} +
(cd "$R" && find . -print0 | LC_ALL=C sort -z |
  cpio --null -o -H newc --reproducible --owner=0:0 --quiet) | lz4 -l -9 -q >"$OUT/initrd.img.tmp"
mv "$OUT/initrd.img.tmp" "$OUT/initrd.img"
cp "$K/boot/vmlinuz-$KVER" "$OUT/vmlinuz"
echo "$KVER" >"$OUT/kernel.release"
echo "build-image: $KVER, $(du -k "$OUT/initrd.img" | cut -f1) KiB initrd, modules: ${BOOT_ORDER[*]##*/}; on demand: ${ORDER[*]##*/}"
