#!/usr/bin/env bash
# Installs everything the project needs on Debian 12 (run as root). Idempotent: a second run changes nothing.
#
#   bash scripts/deps.sh          install what is missing, then check the minimum versions
#   bash scripts/deps.sh --check  install nothing: fail if apt could not resolve the whole list today
#                                 (a dry run of the exact install), or if a candidate is older than needed
#
# No package is pinned to an exact version: Debian point releases replace security updates (curl,
# bpftool, ...), and an exact pin stops resolving the day its successor ships. Where the version
# matters, the package is installed by name and a minimum is checked below.
set -euo pipefail

PACKAGES=(
  libxdp-dev libxdp1 xdp-tools libbpf-dev libbpf1   # AF_XDP sockets and BPF loading (cne-sys binds them)
  clang llvm libclang-dev                           # BPF objects (clang -target bpf) and bindgen
  bpftool socat curl iproute2 ethtool tcpdump iputils-ping
  pkg-config gcc make python3 python3-venv linux-libc-dev procps util-linux
  bird2                                             # BGP speaker of the routed lab (its own processes only)
)
# package:minimum version. Older ones lack what cne-sys binds or the BPF features our programs use.
MINIMUM=(
  libxdp-dev:1.3.1 libbpf-dev:1:1.1.2 clang:1:14
)

die() { echo "deps: $*" >&2; exit 1; }

# Prints the version dpkg has installed of $1, or nothing.
installed_version() { dpkg-query -W -f='${db:Status-Abbrev} ${Version}\n' "$1" 2>/dev/null | awk '$1 == "ii" {print $2}'; }
# Prints the version apt would install of $1, or nothing.
candidate_version() { apt-cache policy "$1" 2>/dev/null | awk '$1 == "Candidate:" && $2 != "(none)" {print $2}'; }

# Checks each minimum against $1 (a function printing a package's version); $2 says which version it is.
check_minimums() {
  local versions=$1 what=$2 entry name need found verdict=pass
  for entry in "${MINIMUM[@]}"; do
    name=${entry%%:*} need=${entry#*:}
    found=$($versions "$name")
    if [ -z "$found" ]; then
      echo "deps: $name: no $what version found, need >= $need" >&2; verdict=fail
    elif ! dpkg --compare-versions "$found" ge "$need"; then
      echo "deps: $name: $what version $found is older than the $need needed" >&2; verdict=fail
    fi
  done
  [ "$verdict" = pass ]
}

if [ "${1:-}" = "--check" ]; then
  [ -f /etc/debian_version ] || die "not a Debian system"
  export DEBIAN_FRONTEND=noninteractive
  # The same list the install asks for, resolved against today's package lists (apt only simulates).
  apt-get update -qq
  out=$(apt-get install --dry-run -qq --no-install-recommends "${PACKAGES[@]}" 2>&1) ||
    die "apt cannot resolve the package list:"$'\n'"$out"
  check_minimums candidate_version candidate || exit 1
  echo "deps: apt resolves all ${#PACKAGES[@]} packages; candidates meet the minimum versions"
  exit 0
fi

[ "$(id -u)" = 0 ] || die "run as root (apt-get installs packages)"
missing=()
for p in "${PACKAGES[@]}"; do
  [ -n "$(installed_version "$p")" ] || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# The package enables and may start a system-wide BIRD; the routed lab runs its own, one per namespace,
# and a host daemon would only hold sockets and routes nobody asked for.
if [ -n "$(installed_version bird2)" ] && command -v systemctl >/dev/null; then
  systemctl disable bird >/dev/null 2>&1 || true               # links only: works without a running systemd
  if [ -d /run/systemd/system ]; then systemctl stop bird >/dev/null 2>&1 || true; fi
fi
if command -v service >/dev/null && [ ! -d /run/systemd/system ] && service bird status >/dev/null 2>&1; then
  service bird stop >/dev/null 2>&1 || true
fi
check_minimums installed_version installed || die "upgrade the packages above (apt-get install --only-upgrade NAME)"

command -v cargo >/dev/null || die "cargo not found: install a stable Rust toolchain with rustup (https://rustup.rs)"
for component in rustfmt:fmt clippy:clippy; do
  name=${component%%:*} sub=${component#*:}
  if ! cargo "$sub" --version >/dev/null 2>&1; then
    rustup component add "$name" >/dev/null 2>&1 || die "cargo $sub not found: rustup component add $name"
  fi
done
