#!/usr/bin/env bash
# The main job: build the shim, start a private containerd (everything under a
# temp dir) with the shim on its PATH, and run containers through
# io.containerd.runhcs.v1 with plain `ctr`, printing what happens.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/build.sh >/dev/null
SHIM_DIR=$PWD/build/cmd/shim
echo "== $("$SHIM_DIR/containerd-shim-runhcs-v1" -v | tr '\n' ' ')"

D=$(mktemp -d /tmp/runhcs-demo.XXXXXX)
SOCK=$D/containerd.sock
CTD_PID=
CTR() { ctr --address "$SOCK" -n demo "$@"; }
cleanup() {
  set +e
  [ -n "${EV_PID:-}" ] && kill "$EV_PID" 2>/dev/null
  if [ -n "$CTD_PID" ]; then
    for id in $(CTR task ls -q 2>/dev/null); do CTR task kill -s KILL "$id"; CTR task delete -f "$id"; done >/dev/null 2>&1
    for id in $(CTR container ls -q 2>/dev/null); do CTR container delete "$id"; done >/dev/null 2>&1
    kill "$CTD_PID" 2>/dev/null; wait "$CTD_PID" 2>/dev/null
  fi
  rm -rf "$D"
}
trap cleanup EXIT

mkdir -p "$D/rootfs/bin" "$D/rootfs/proc" "$D/rootfs/dev" "$D/rootfs/sys" "$D/rootfs/tmp"
cp /bin/busybox "$D/rootfs/bin/busybox"
for a in sh echo cat sleep true uname; do ln -s busybox "$D/rootfs/bin/$a"; done
cat >"$D/config.toml" <<CFG
version = 2
root = "$D/root"
state = "$D/state"
[grpc]
  address = "$SOCK"
[ttrpc]
  address = "$SOCK.ttrpc"
CFG
PATH=$SHIM_DIR:$PATH setsid containerd --config "$D/config.toml" </dev/null >"$D/containerd.log" 2>&1 &
CTD_PID=$!
for _ in $(seq 100); do CTR version >/dev/null 2>&1 && break; sleep 0.1; done
echo "== private containerd $(CTR version 2>/dev/null | awk '/Server/{s=1} s&&/Version/{print $2; exit}') under $D"
CTR events >"$D/events.txt" 2>&1 &
EV_PID=$!
sleep 0.3

echo "== ctr run --rm --runtime io.containerd.runhcs.v1 --rootfs ROOTFS demo1 echo hello from runhcs"
set +e
CTR run --rm --runtime io.containerd.runhcs.v1 --rootfs "$D/rootfs" demo1 /bin/echo hello from runhcs
rc=$?
set -e
echo "   exit status: $rc"
sleep 0.5
echo "== events seen by ctr events:"
sed 's/^/   /' "$D/events.txt"
left=$(pgrep -fc "containerd-shim-runhcs-v1 .*-id demo1 " || true)
echo "== shim processes left for demo1: $left"
if [ "$rc" -ne 0 ]; then
  echo "== the container did not run; containerd's log ends with:"
  tail -n 5 "$D/containerd.log" | sed 's/^/   /'
  exit 1
fi
