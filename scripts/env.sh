# Sourced by the scripts in this directory: the environment they share.

# Go from go.dev lives in /usr/local/go/bin, which a non-login shell may lack.
if ! command -v go >/dev/null && [ -x /usr/local/go/bin/go ]; then
    export PATH="$PATH:/usr/local/go/bin"
fi

# One cargo target directory for every checkout on this machine, so a fresh
# clone compiles only the workspace's own crates: dependencies built for an
# earlier checkout are reused (cargo tells checkouts apart by their
# sources). Set CARGO_TARGET_DIR to use another.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/globular/cargo-target}"
# The same for the node agent the images' build script compiles
# (profiles/base/mkosi.build).
export GLOBULAR_AGENT_BUILD_DIR="${GLOBULAR_AGENT_BUILD_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/globular/agent-build}"
builder="$CARGO_TARGET_DIR/release/builder"
