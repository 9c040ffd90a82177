#!/usr/bin/env bash
# Quick start: install host tools, build the builder, and build the worker disk
# image with the default profile into ./output/.
set -euo pipefail
cd "$(dirname "$0")/.."
# Go from go.dev lives in /usr/local/go/bin, which a non-login shell may lack.
if ! command -v go >/dev/null && [ -x /usr/local/go/bin/go ]; then
    export PATH="$PATH:/usr/local/go/bin"
fi

bash scripts/install-deps.sh
cargo build --release --workspace --bins
./target/release/builder summary --role worker
./target/release/builder build --role worker --output-dir output
