#!/usr/bin/env bash
# Installs everything the project needs on Debian 12 (run as root). Idempotent: a second run changes nothing.
set -euo pipefail

# Pinned to Debian 12 (bookworm) versions; packages that take security updates (curl, bpftool) float.
PINNED=(
  libxdp-dev=1.3.1-1 libxdp1=1.3.1-1 xdp-tools=1.3.1-1
  libbpf-dev=1:1.1.2-0+deb12u1 libbpf1=1:1.1.2-0+deb12u1
  clang-14=1:14.0.6-12 llvm-14=1:14.0.6-12 libclang-14-dev=1:14.0.6-12
  clang=1:14.0-55.7~deb12u1 llvm=1:14.0-55.7~deb12u1 libclang-dev=1:14.0-55.7~deb12u1
  socat=1.7.4.4-2 nginx-light=1.22.1-9+deb12u11 iproute2=6.1.0-3 ethtool=1:6.1-1
  tcpdump=4.99.3-1 iputils-ping=3:20221126-1+deb12u1
)
FLOATING=(bpftool curl pkg-config gcc make python3 linux-libc-dev procps util-linux)

missing=()
for p in "${PINNED[@]}" "${FLOATING[@]}"; do
  name=${p%%=*}
  dpkg-query -W -f='${Status}' "$name" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# nginx-light's package starts a server on :80 in the root namespace; the labs start their own in namespaces.
if command -v systemctl >/dev/null 2>&1; then systemctl disable --now nginx >/dev/null 2>&1 || true; fi

command -v cargo >/dev/null || { echo "deps: cargo not found (install Rust with rustup)" >&2; exit 1; }
rustup component add rustfmt clippy >/dev/null 2>&1 || true
