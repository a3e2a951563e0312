# Sourced by the scripts: puts cargo on PATH, installing the C toolchain and
# Rust (rustup, minimal profile) when they are missing.
if ! command -v cc >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
    DEBIAN_FRONTEND=noninteractive apt-get update -q >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        build-essential pkg-config curl ca-certificates >&2
fi
if [[ -f "$HOME/.cargo/env" ]]; then
    # shellcheck source=/dev/null
    source "$HOME/.cargo/env"
fi
if ! command -v cargo >/dev/null 2>&1; then
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs |
        sh -s -- -y --profile minimal -c rustfmt,clippy >&2
    # shellcheck source=/dev/null
    source "$HOME/.cargo/env"
fi
