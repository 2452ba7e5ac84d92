#!/usr/bin/env bash
# The whole test suite: set-up, static checks, unit tests, root integration tests on veth labs, manifest checks.
# Run as root on Debian 12 from the repository root: sudo scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "test.sh: run as root (the integration tests build network namespaces)" >&2; exit 1; }

bash scripts/deps.sh
export CARGO_TERM_COLOR=never RUST_BACKTRACE=1

step() { printf '\n== %s\n' "$*"; }
# A fresh machine installs the same list today: fail here, not on the next new machine, when apt
# could no longer resolve it (a version pinned and since replaced, a package renamed or removed).
step "dependencies resolve"; bash scripts/deps.sh --check
before_ns=$(ip netns list | awk '{print $1}' | sort)
before_links=$(ip -o link show | awk -F': ' '{print $2}' | cut -d@ -f1 | sort)
step "format";  cargo fmt --all --check
step "clippy";  cargo clippy --workspace --all-targets --locked -- -D warnings
step "docs";    RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --locked -q
step "build";   cargo build --workspace --all-targets --locked
step "tests";   cargo test --workspace --locked --no-fail-fast -- --include-ignored
# The load-balancer lab tests ran on the AF_XDP data path above; once more on the kernel XDP fast path.
lab_tests=()
for t in nf-maglev/tests/lab_*.rs; do lab_tests+=(--test "$(basename "$t" .rs)"); done
step "load-balancer lab tests, data_path xdp"
LAB_DATA_PATH=xdp cargo test -p nf-maglev --locked --no-fail-fast "${lab_tests[@]}" -- --include-ignored
if [ -x scripts/k8s-validate.sh ]; then
  step "kubernetes manifests"; bash scripts/k8s-validate.sh
fi
step "leftovers"
left_ns=$(comm -13 <(echo "$before_ns") <(ip netns list | awk '{print $1}' | sort))
left_links=$(comm -13 <(echo "$before_links") <(ip -o link show | awk -F': ' '{print $2}' | cut -d@ -f1 | sort))
[ -z "$left_ns$left_links" ] || { echo "left behind: namespaces [$left_ns] links [$left_links]" >&2; exit 1; }
xdp=$(ip -o link show | grep -E ' xdp(generic|drv)? ' || true)
[ -z "$xdp" ] || { echo "XDP programs left attached: $xdp" >&2; exit 1; }
echo "all tests passed"
