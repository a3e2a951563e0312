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
# buildah: a daemonless build as a layout source; umoci, debootstrap: a real
# Debian image layout (needs root and http://deb.debian.org, fails saying so if
# it is unreachable); patch: applies the Dockerfile rewrite's diffs.
# prometheus: scrapes `mirror sync --every --listen` in the daemon test.
apt_packages=(
    docker-registry skopeo apache2-utils iproute2 iptables jq time curl
    ca-certificates build-essential pkg-config python3-venv
    buildah umoci debootstrap patch prometheus
)
# shellcheck source=scripts/lib/apt.sh
source scripts/lib/apt.sh
apt_install "${apt_packages[@]}"

# --- Rust ------------------------------------------------------------------
# Sources ~/.cargo/env; installs Rust with rustup (minimal profile, rustfmt,
# clippy) when cargo is missing.
# shellcheck source=scripts/ensure-rust.sh
source scripts/ensure-rust.sh

# --- Python: moto for the ECR stand-in -------------------------------------
# Pinned versions (scripts/requirements-test.txt); a copy of the file in the
# venv says what it holds, so a changed pin reinstalls.
venv="$repo/.venv"
requirements="$repo/scripts/requirements-test.txt"
if [[ ! -x "$venv/bin/moto_server" ]] || ! cmp -s "$requirements" "$venv/requirements-test.txt"; then
    section "Python venv with the pinned moto[server] in .venv"
    # Debian's python3 is the one python3-venv belongs to.
    python=/usr/bin/python3
    [[ -x "$python" ]] || python=python3
    [[ -x "$venv/bin/python" ]] || "$python" -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check -r "$requirements"
    cp "$requirements" "$venv/requirements-test.txt"
fi
export PATH="$venv/bin:$PATH"

# --- checks ----------------------------------------------------------------
section "cargo fmt --check"
cargo fmt --all --check

section "cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings

# A test that cannot check its claim fails or is #[ignore]d with the reason,
# never passes by returning early; the ignored ones are listed at the end so
# that nobody mistakes them for passes. The suite needs Debian's mirror
# (http://deb.debian.org, for debootstrap): that test fails saying so when it
# is unreachable.
section "cargo test"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
cargo test --workspace "$@" 2>&1 | tee "$log" || status=$?
ignored=$(grep -E '^test .* \.\.\. ignored' "$log" | sed -E 's/^test (.*) \.\.\. ignored,? ?/  \1: /' || true)
section "ignored tests (not run): $(grep -cE '^test .* \.\.\. ignored' "$log" || true)"
[[ -z "$ignored" ]] || printf '%s\n' "$ignored"
exit "$status"
