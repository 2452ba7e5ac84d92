#!/usr/bin/env bash
# The Maglev demo: builds the release binaries, then for each forwarding mode (gre, l2dsr) builds a lab of
# network namespaces (a client, nf-maglev on a 2-queue veth, three HTTP backends with weights 1/1/2 on one
# bridged segment), makes real TCP connections to the VIP 198.18.100.1:80 through nf-maglev, prints how
# they spread over the backends and a few /metrics lines, and tears the lab down.
# Run as root on Debian 12 from anywhere in the repository: sudo scripts/demo.sh [--connections N]
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "demo.sh: run as root (the lab builds network namespaces and attaches XDP programs)" >&2; exit 1; }

bash scripts/deps.sh
export CARGO_TERM_COLOR=never
cargo build --release --locked -p nf-maglev -p lab
lab=target/release/lab

pid=""
# An interrupted run cannot unwind: remove whatever it left, found by its process id in the names.
cleanup() {
  if [ -n "$pid" ]; then
    "$lab" cleanup --prefix "lab${pid}_" --kill-procs >/dev/null 2>&1 || true
  fi
}
trap 'cleanup; exit 130' INT TERM

status=0
for mode in gre l2dsr; do
  printf '\n== maglev demo, mode %s\n' "$mode"
  "$lab" maglev-demo --mode "$mode" "$@" &
  pid=$!
  if ! wait "$pid"; then
    status=1
    echo "demo.sh: the $mode demo failed" >&2
  fi
  cleanup
  pid=""
done
exit "$status"
