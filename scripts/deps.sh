#!/usr/bin/env bash
# Installs what the build, the tests and the main job need on Debian 12.
# Idempotent and quiet: does nothing when everything is present.
set -euo pipefail
PKGS=(
  cmake ninja-build g++ clang clang-format libclang-rt-14-dev pkg-config git
  protobuf-compiler libprotobuf-dev libprotoc-dev libspdlog-dev libfmt-dev nlohmann-json3-dev
  libboost-dev libboost-program-options-dev
  libgtest-dev libgmock-dev libbenchmark-dev libgrpc++-dev protobuf-compiler-grpc gnuplot-nox
  containerd runc crun busybox-static procps util-linux iproute2 iptables containernetworking-plugins
  qemu-system-x86 cpio lz4 e2fsprogs libgcc-12-dev tmux dpkg-dev debhelper lintian
)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The utility VM's kernel: the Debian cloud kernel's versioned package,
# downloaded (not installed) for the image build (guest/image).
KDIR=/var/cache/runhcs
KPKG=$(apt-cache depends linux-image-cloud-amd64 2>/dev/null | awk '/Depends: linux-image-/{print $2; exit}')
if [ -z "$KPKG" ]; then
  apt-get update -qq
  KPKG=$(apt-cache depends linux-image-cloud-amd64 | awk '/Depends: linux-image-/{print $2; exit}')
fi
if ! ls "$KDIR/${KPKG}"_*.deb >/dev/null 2>&1; then
  echo "deps: downloading $KPKG"
  mkdir -p "$KDIR"
  (cd "$KDIR" && apt-get download -qq "$KPKG" 2>/dev/null) || { apt-get update -qq && (cd "$KDIR" && apt-get download -qq "$KPKG"); }
fi
