#!/usr/bin/env bash
# The Debian package as an operator gets it:
#  1. builds it from a clean clone of HEAD (committed work only) with the
#     build dependencies debian/control names (apt-get build-dep), and checks
#     it with lintian (no error);
#  2. installs it with apt-get, then checks the installed files: binaries on
#     PATH, their version is the package's, man pages, examples, boot files;
#  3. starts a containerd whose PATH holds no build tree and runs, by runtime
#     name alone, a process-isolated container and a VM container (the
#     example vm.json), checks the VM runs the packaged kernel, and that
#     `shimdiag list` names the shim;
#  4. purges the package and finds none of its files, processes or runtime
#     state left.
# Needs root and a machine where scripts/deps.sh ran. The machine is left as
# found: the package purged, containerd stopped, the scratch dir removed.
set -euo pipefail
SRC=$(cd "$(dirname "$0")/.." && pwd)
W=$(mktemp -d /tmp/runhcs-pkg.XXXXXX)
CTRD_PID=
fail() {
  echo "package test: FAILED: $*" >&2
  exit 1
}
ctr_() { ctr --address "$W/ctrd/c.sock" "$@"; }
cleanup() {
  set +e
  if [ -n "$CTRD_PID" ]; then
    for id in vm1 proc1; do
      ctr_ task kill -s KILL "$id" >/dev/null 2>&1
      sleep 1
      ctr_ task delete "$id" >/dev/null 2>&1
      ctr_ container delete "$id" >/dev/null 2>&1
    done
    kill "$CTRD_PID" 2>/dev/null
    wait "$CTRD_PID" 2>/dev/null
  fi
  dpkg-query -W runhcs >/dev/null 2>&1 && apt-get purge -y -qq runhcs >/dev/null 2>&1
  rm -rf "$W"
}
trap cleanup EXIT
export DEBIAN_FRONTEND=noninteractive

dpkg-query -W -f='${Status}' runhcs 2>/dev/null | grep -q installed &&
  fail "runhcs is installed already (apt-get purge runhcs first)"

echo "package: building from a clean clone of $(git -C "$SRC" rev-parse --short HEAD)"
git clone -q "$SRC" "$W/runhcs"
(cd "$W/runhcs" && apt-get build-dep -y -qq ./ >"$W/build-dep.log" 2>&1) ||
  { tail -30 "$W/build-dep.log"; fail "apt-get build-dep"; }
start=$(date +%s)
(cd "$W/runhcs" && DEB_BUILD_OPTIONS="parallel=$(nproc)" dpkg-buildpackage -us -uc -b >"$W/build.log" 2>&1) ||
  { tail -60 "$W/build.log"; fail "dpkg-buildpackage"; }
version=$(cd "$W/runhcs" && dpkg-parsechangelog -S Version)
deb="$W/runhcs_${version}_amd64.deb"
[ -f "$deb" ] || fail "no $deb"
echo "package: built $(basename "$deb") ($(du -k "$deb" | cut -f1) KiB) in $(($(date +%s) - start)) s"
lint=$(lintian --fail-on error "$deb" 2>&1) || { echo "$lint"; fail "lintian reports an error"; }
grep -v "root privileges is not recommended" <<<"$lint" || true
echo "package: lintian: no error"

apt-get install -y -qq "$deb" >"$W/install.log" 2>&1 || { cat "$W/install.log"; fail "apt-get install"; }
mapfile -t files < <(dpkg -L runhcs)
[ "$(command -v containerd-shim-runhcs-v1)" = /usr/bin/containerd-shim-runhcs-v1 ] || fail "shim not on PATH"
[ "$(command -v shimdiag)" = /usr/bin/shimdiag ] || fail "shimdiag not on PATH"
commit=$(git -C "$SRC" rev-parse --short=12 HEAD)
v=$(containerd-shim-runhcs-v1 -v)
grep -q "Version:  $version\$" <<<"$v" || fail "shim -v: $v (want $version)"
grep -q "Revision: $commit\$" <<<"$v" || fail "shim -v: $v (want $commit)"
grep -q "^shimdiag $version (commit $commit)" < <(shimdiag --version) || fail "shimdiag --version: $(shimdiag --version)"
for f in /usr/share/man/man8/containerd-shim-runhcs-v1.8.gz /usr/share/man/man1/shimdiag.1.gz \
  /usr/share/doc/runhcs/examples/containerd-runhcs.toml /usr/share/doc/runhcs/examples/runtimeclass.yaml \
  /usr/share/doc/runhcs/examples/process.json /usr/share/doc/runhcs/examples/vm.json \
  /usr/lib/runhcs/boot/vmlinux /usr/lib/runhcs/boot/initrd.img /usr/lib/runhcs/boot/system.img \
  /usr/lib/runhcs/boot/kernel.release; do
  [ -s "$f" ] || fail "$f missing or empty"
done
echo "package: installed ${#files[@]} paths; shim and shimdiag report $version ($commit)"

# containerd with the system's PATH only.
mkdir -p "$W/ctrd" "$W/rootfs/bin" "$W/rootfs/proc" "$W/rootfs/dev" "$W/rootfs/sys" "$W/rootfs/tmp"
cp /bin/busybox "$W/rootfs/bin/"
for a in sh echo uname sleep cat; do ln -s busybox "$W/rootfs/bin/$a"; done
cat >"$W/ctrd/config.toml" <<EOF
version = 2
root = "$W/ctrd/root"
state = "$W/ctrd/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$W/ctrd/c.sock"
[ttrpc]
  address = "$W/ctrd/c.sock.ttrpc"
EOF
env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  containerd --config "$W/ctrd/config.toml" >"$W/ctrd/log" 2>&1 &
CTRD_PID=$!
for _ in $(seq 100); do ctr_ version >/dev/null 2>&1 && break; sleep 0.1; done
ctr_ version >/dev/null 2>&1 || { cat "$W/ctrd/log"; fail "containerd did not start"; }

out=$(ctr_ run --rm --runtime io.containerd.runhcs.v1 --rootfs "$W/rootfs" proc1 /bin/echo process-isolated 2>&1) ||
  { tail -20 "$W/ctrd/log"; fail "process-isolated run: $out"; }
[ "$out" = process-isolated ] || fail "process-isolated run printed: $out"
echo "package: a process-isolated container ran"

ctr_ run -d --runtime io.containerd.runhcs.v1 --runtime-config-path /usr/share/doc/runhcs/examples/vm.json \
  --rootfs "$W/rootfs" vm1 /bin/sleep 600 >/dev/null 2>&1 || { tail -20 "$W/ctrd/log"; fail "VM run"; }
for _ in $(seq 300); do ctr_ task ls 2>/dev/null | grep -q "^vm1 .*RUNNING" && break; sleep 0.2; done
ctr_ task ls | grep -q "^vm1 .*RUNNING" || { tail -20 "$W/ctrd/log"; fail "VM container not running"; }
krel=$(ctr_ task exec --exec-id uname vm1 /bin/uname -r)
[ "$krel" = "$(cat /usr/lib/runhcs/boot/kernel.release)" ] || fail "VM container's kernel: $krel"
pgrep -f "qemu-system.*-kernel /usr/lib/runhcs/boot/vmlinux" >/dev/null || fail "no QEMU on the packaged kernel"
shimdiag list | grep -qx "default-vm1" || fail "shimdiag list: $(shimdiag list)"
echo "package: a VM container ran on the packaged kernel ($krel); shimdiag list names its shim"
ctr_ task kill -s KILL vm1 >/dev/null 2>&1
for _ in $(seq 100); do ctr_ task ls 2>/dev/null | grep -q "^vm1 .*RUNNING" || break; sleep 0.1; done
ctr_ task delete vm1 >/dev/null
ctr_ container delete vm1 >/dev/null
kill "$CTRD_PID"
wait "$CTRD_PID" || true
CTRD_PID=

apt-get purge -y -qq runhcs >"$W/purge.log" 2>&1 || { cat "$W/purge.log"; fail "apt-get purge"; }
for f in "${files[@]}"; do
  # Directories the package shares with others (/usr, /usr/bin) stay.
  [ -d "$f" ] && [[ $f != /usr/lib/runhcs* && $f != /usr/share/doc/runhcs* ]] && continue
  [ -e "$f" ] && fail "$f left after purge"
done
# This test's shim and VM state (other shims may run beside it).
vm_dir=/run/runhcs/vm/$(printf default/vm1 | sha256sum | cut -c1-24)
for f in "$vm_dir" /run/runhcs/shims/default-vm1 /run/runhcs/shims/default-proc1 /run/runhcs/kvm-unusable; do
  [ -e "$f" ] && fail "runtime state left: $f"
done
pgrep -f "^/usr/bin/containerd-shim-runhcs-v1|/usr/lib/runhcs/boot" >/dev/null &&
  fail "processes left: $(pgrep -af "^/usr/bin/containerd-shim-runhcs-v1|/usr/lib/runhcs/boot")"
echo "package: purged; none of its files, state or processes left"
