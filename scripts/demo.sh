#!/usr/bin/env bash
# The Maglev demo: builds the release binaries, then for each forwarding mode (gre, l2dsr) builds a lab of
# network namespaces (a client, nf-maglev on a 2-queue veth, three HTTP backends with weights 1/1/2 on one
# bridged segment), makes real TCP connections to the VIP 198.18.100.1:80 through nf-maglev, prints how
# they spread over the backends and a few /metrics lines, and tears the lab down (also on Ctrl-C).
# Run as root on Debian 12 from anywhere in the repository: sudo scripts/demo.sh [--connections N]
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "demo.sh: run as root (the lab builds network namespaces and attaches XDP programs)" >&2; exit 1; }

bash scripts/deps.sh
export CARGO_TERM_COLOR=never
cargo build --release --locked -p nf-maglev -p lab
lab=target/release/lab

# The demo runs in the foreground: Ctrl-C reaches it, it removes its lab and exits with 130; the shell
# then stops too instead of starting the next mode.
trap 'exit 130' INT TERM
status=0
for mode in gre l2dsr; do
  printf '\n== maglev demo, mode %s\n' "$mode"
  rc=0
  "$lab" maglev-demo --mode "$mode" "$@" || rc=$?
  if [ "$rc" -ge 128 ]; then
    echo "demo.sh: interrupted" >&2
    exit "$rc"
  fi
  if [ "$rc" -ne 0 ]; then
    status=1
    echo "demo.sh: the $mode demo failed" >&2
  fi
done
exit "$status"
