#!/usr/bin/env bash
# Benchmarks mirror against skopeo (loopback and emulated WAN, each over HTTPS
# with a CA the bench makes and over plain HTTP, and the headline command into
# the ECR stand-in) and prints markdown tables for the README.
# Run as root; takes about half an hour (`--profile tls` for the headline
# rows only).
# Extra arguments go to mirror-bench (e.g. `scripts/bench.sh --runs 1`; see
# `target/release/mirror-bench --help`). The tables are also written to
# bench/out/bench-DATE.md.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
repo=$(pwd)

section() { printf '\n==> %s\n' "$*" >&2; }

# What the bench runs: the registry, skopeo, /usr/bin/time, namespaces and
# tc/iptables for the WAN link, what PyPI NetfilterQueue (the delay program)
# needs to build, and python3-venv for it and moto (the ECR profile).
apt_packages=(
    docker-registry skopeo iproute2 iptables time util-linux curl
    ca-certificates build-essential pkg-config python3-venv python3-dev
    libnetfilter-queue-dev
)
# shellcheck source=scripts/lib/apt.sh
source scripts/lib/apt.sh
apt_install "${apt_packages[@]}"

# Sources ~/.cargo/env; installs Rust with rustup (minimal profile, rustfmt,
# clippy) when cargo is missing.
# shellcheck source=scripts/ensure-rust.sh
source scripts/ensure-rust.sh

# One venv for both: mirror-bench takes moto_server from beside --python.
venv="$repo/.venv"
if ! "$venv/bin/python" -c 'import netfilterqueue' >/dev/null 2>&1 ||
    [[ ! -x "$venv/bin/moto_server" ]]; then
    section "NetfilterQueue (the WAN delay program) and moto[server] (the ECR stand-in) in .venv"
    python=/usr/bin/python3
    [[ -x "$python" ]] || python=python3
    [[ -x "$venv/bin/python" ]] || "$python" -m venv "$venv"
    # Pinned, as the tests pin moto (scripts/requirements-test.txt).
    "$venv/bin/pip" install -q --disable-pip-version-check \
        -r scripts/requirements-test.txt NetfilterQueue==1.1.0
fi

section "cargo build --release --workspace --bins"
cargo build --release --workspace --bins

# Every profile unless the arguments name some (--profile adds up in mirror-bench).
profile=(--profile all)
for arg in "$@"; do
    [[ "$arg" == --profile || "$arg" == --profile=* ]] && profile=()
done
section "mirror-bench ${profile[*]} --markdown $*"
mkdir -p bench/out
out="bench/out/bench-$(date -u +%F).md"
target/release/mirror-bench "${profile[@]}" --markdown --python "$venv/bin/python" "$@" |
    tee "$out"
echo "written to $out" >&2
