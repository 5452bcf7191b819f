#!/usr/bin/env bash
# The main job: build the shim, start a private containerd (everything under a
# temp dir) with the shim on its PATH, and run containers through
# io.containerd.runhcs.v1 with plain `ctr`, printing what happens.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/build.sh >/dev/null
SHIM_DIR=$PWD/build/bin
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

RT=(--runtime io.containerd.runhcs.v1)
step() { echo "== $*"; }
step "ctr run --rm ${RT[*]} --rootfs ROOTFS demo1 /bin/echo hello from runhcs"
CTR run --rm "${RT[@]}" --rootfs "$D/rootfs" demo1 /bin/echo hello from runhcs
step "ctr run --rm ... demo2 /bin/sh -c 'exit 3'"
set +e
CTR run --rm "${RT[@]}" --rootfs "$D/rootfs" demo2 /bin/sh -c 'exit 3'
echo "   exit status: $?"
set -e
step "ctr run -d ... demo3 (a shell that exits 42 on SIGTERM)"
CTR run -d "${RT[@]}" --rootfs "$D/rootfs" demo3 /bin/sh -c "trap 'exit 42' TERM; while true; do sleep 0.1; done"
sleep 0.2
CTR task ls | sed 's/^/   /'
step "ctr task exec --exec-id e1 demo3 /bin/uname -a"
CTR task exec --exec-id e1 demo3 /bin/uname -a | sed 's/^/   /'
step "ctr task ps demo3"
CTR task ps demo3 | sed 's/^/   /'
step "ctr task metrics demo3 (the container's cgroup)"
CTR task metrics demo3 | sed 's/^/   /'
step "ctr task pause / resume demo3"
CTR task pause demo3 && CTR task ls | grep demo3 | sed 's/^/   /'
CTR task resume demo3 && CTR task ls | grep demo3 | sed 's/^/   /'
step "ctr task kill demo3 (SIGTERM), then delete"
CTR task kill demo3
for _ in $(seq 50); do CTR task ls | grep -q "demo3.*STOPPED" && break; sleep 0.1; done
CTR task delete demo3 >/dev/null
CTR container delete demo3
step "ctr run --rm ... --annotation io.containerd.runhcs.v1.isolation=hypervisor demo4 uname -r"
echo "   host kernel:  $(uname -r)"
CTR run --rm "${RT[@]}" --annotation io.containerd.runhcs.v1.isolation=hypervisor \
  --rootfs "$D/rootfs" demo4 /bin/uname -r | sed 's/^/   guest kernel: /'
step "ctr run -d ... isolation=hypervisor demo5, then shimdiag (finds shims without containerd)"
CTR run -d "${RT[@]}" --annotation io.containerd.runhcs.v1.isolation=hypervisor \
  --rootfs "$D/rootfs" demo5 /bin/sleep 1000
for _ in $(seq 100); do CTR task ls | grep -q "demo5.*RUNNING" && break; sleep 0.1; done
SHIMDIAG=$SHIM_DIR/shimdiag
step "shimdiag list --pids"
"$SHIMDIAG" list --pids | grep -E "^Shim|demo-demo5" | sed 's/^/   /'
step "shimdiag tasks --execs demo-demo5"
"$SHIMDIAG" tasks --execs demo-demo5 | sed 's/^/   /'
step "shimdiag exec demo-demo5 sh -c 'uname -r; exit 7' (a process in the utility VM itself)"
set +e
"$SHIMDIAG" exec demo-demo5 sh -c 'uname -r; exit 7' | sed 's/^/   /'
echo "   exit status: ${PIPESTATUS[0]}"
set -e
step "shimdiag stacks demo-demo5 (the main thread, and where the guest's begin)"
"$SHIMDIAG" stacks demo-demo5 >"$D/stacks.txt"
grep -B2 -A1 "runhcs::shim::Serve" "$D/stacks.txt" | cut -c1-120 | sed 's/^/   /'
grep -A2 "^Guest Stacks" "$D/stacks.txt" | sed 's/^/   /'
CTR task kill -s KILL demo5
for _ in $(seq 100); do CTR task ls | grep -q "demo5.*STOPPED" && break; sleep 0.1; done
CTR task delete demo5 >/dev/null
CTR container delete demo5
sleep 0.3
step "events seen by ctr events:"
sed 's/^/   /' "$D/events.txt"
left=$(pgrep -fc "containerd-shim-runhcs-v1 .*-id demo[0-9] " || true)
step "shim processes left: $left"
[ "$left" = 0 ]
