#!/usr/bin/env bash
# Builds mirror (release) if needed and runs it with the given arguments:
#   ./scripts/run.sh python:3.10-slim-buster
# On a fresh Debian machine it installs the build tools and Rust first.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/ensure-rust.sh
source scripts/ensure-rust.sh
cargo build --release --quiet --bin mirror >&2
exec ./target/release/mirror "$@"
