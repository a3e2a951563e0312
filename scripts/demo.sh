#!/usr/bin/env bash
# The walkthrough without AWS or internet: starts local stand-ins (moto as
# the AWS API, a registry with ECR's manners, a registry with Docker Hub's
# manners holding a generated python-shaped image as python:3.10-slim-buster),
# runs `mirror sync fixtures/walkthrough.yaml` against them, shows what
# landed, runs it again (nothing to do), and cleans up.
#
# Installs what it needs the way scripts/test.sh does (apt packages,
# Rust, moto in .venv); on a machine that has them it starts at once.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
repo=$(pwd)

section() { printf '\n==> %s\n' "$*" >&2; }

# --- what the stand-ins need -------------------------------------------------
apt_packages=(docker-registry ca-certificates build-essential pkg-config python3-venv)
# shellcheck source=scripts/lib/apt.sh
source scripts/lib/apt.sh
apt_install "${apt_packages[@]}"
# shellcheck source=scripts/ensure-rust.sh
source scripts/ensure-rust.sh
venv="$repo/.venv"
if [[ ! -x "$venv/bin/moto_server" ]]; then
    section "Python venv with moto[server] in .venv"
    python=/usr/bin/python3
    [[ -x "$python" ]] || python=python3
    [[ -x "$venv/bin/python" ]] || "$python" -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check 'moto[server]'
fi
export PATH="$venv/bin:$PATH"

section "cargo build --release (mirror, mirror-stand-ins)"
cargo build --release --quiet -p mirror --bin mirror -p mirror-testkit --bin mirror-stand-ins
mirror="$repo/target/release/mirror"

# --- the stand-ins --------------------------------------------------------------
work=$(mktemp -d)
stand_ins=""
cleanup() {
    exec 3>&- 2>/dev/null || true
    if [[ -n "$stand_ins" ]]; then
        kill "$stand_ins" 2>/dev/null || true
        wait "$stand_ins" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

section "starting the stand-ins (generating a 230 MB python-shaped image the first time)"
mkfifo "$work/keep-open"
"$repo/target/release/mirror-stand-ins" <"$work/keep-open" >"$work/env" &
stand_ins=$!
exec 3>"$work/keep-open" # the stand-ins stop when this closes
for _ in $(seq 600); do
    grep -qx ready "$work/env" 2>/dev/null && break
    kill -0 "$stand_ins" 2>/dev/null || { echo "the stand-ins did not start" >&2; exit 1; }
    sleep 0.5
done
grep -qx ready "$work/env" || { echo "the stand-ins did not get ready" >&2; exit 1; }
# shellcheck disable=SC1091
source <(grep '^export ' "$work/env")
# Relative paths in the file start at its directory, so this runs anywhere.
export HOME="$work" DOCKER_CONFIG="$work/docker"

section "mirror sync --plan fixtures/walkthrough.yaml"
"$mirror" sync --plan fixtures/walkthrough.yaml

section "mirror sync fixtures/walkthrough.yaml"
"$mirror" sync fixtures/walkthrough.yaml

section "what landed: python, platform by platform (mirror verify), and every tag (--plan)"
"$mirror" verify python:3.10-slim-buster --to cruddur-python
"$mirror" sync --plan fixtures/walkthrough.yaml
"$mirror" log-group cruddur --retention-days 1

section "mirror sync fixtures/walkthrough.yaml, again: nothing to do (HEADs and a referrers look-up; no pull, no write)"
"$mirror" sync fixtures/walkthrough.yaml

section "done: stand-ins stopped, $work removed"
