#!/usr/bin/env bash
# The project's one test command: installs what the tests need (only what is
# missing), then runs fmt, clippy and the whole test suite. Extra arguments go
# to `cargo test` (e.g. `scripts/test.sh -- --nocapture`).
#
# Works on a fresh Debian machine as root (apt, PyPI and crates.io reachable);
# on a machine that has everything it installs nothing and starts at once.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
repo=$(pwd)

section() { printf '\n==> %s\n' "$*"; }

# --- system packages -------------------------------------------------------
# docker-registry: the reference registry the tests run (distribution 2.8);
# skopeo: the independent witness; apache2-utils: htpasswd; iproute2, iptables:
# network namespaces for the WAN bench; time: /usr/bin/time for the bench;
# build-essential, pkg-config: crates with C parts; python3-venv: moto;
# buildah: a daemonless build as a layout source (the test skips itself where
# buildah cannot build); umoci, debootstrap: a real Debian image layout (needs
# root and http://deb.debian.org, fails saying so if it is unreachable).
apt_packages=(
    docker-registry skopeo apache2-utils iproute2 iptables jq time curl
    ca-certificates build-essential pkg-config python3-venv
    buildah umoci debootstrap
)
# `dpkg -s` alone also succeeds for a removed package whose config files remain.
installed() {
    [[ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" == "install ok installed" ]]
}
missing=()
for package in "${apt_packages[@]}"; do
    installed "$package" || missing+=("$package")
done
if ((${#missing[@]})); then
    section "apt-get install ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# --- Rust ------------------------------------------------------------------
# Sources ~/.cargo/env; installs Rust with rustup (minimal profile, rustfmt,
# clippy) when cargo is missing.
# shellcheck source=scripts/ensure-rust.sh
source scripts/ensure-rust.sh

# --- Python: moto for the ECR stand-in -------------------------------------
venv="$repo/.venv"
if [[ ! -x "$venv/bin/moto_server" ]]; then
    section "Python venv with moto[server] in .venv"
    # Debian's python3 is the one python3-venv belongs to.
    python=/usr/bin/python3
    [[ -x "$python" ]] || python=python3
    [[ -x "$venv/bin/python" ]] || "$python" -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check 'moto[server]'
fi
"$venv/bin/python3" -c 'import cryptography' 2>/dev/null || "$venv/bin/pip" install -q --disable-pip-version-check 'cryptography==50.0.2' # signs the referrer tests' cosign signatures
export PATH="$venv/bin:$PATH"

# --- checks ----------------------------------------------------------------
section "cargo fmt --check"
cargo fmt --all --check

section "cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings

section "cargo test"
cargo test --workspace "$@"
