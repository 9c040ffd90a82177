#!/usr/bin/env bash
# Quick start: install host tools, build the builder, and build the worker disk
# image with the default profile into ./output/.
set -euo pipefail
cd "$(dirname "$0")/.."
# Go on PATH, the shared cargo target directory.
source scripts/env.sh

bash scripts/install-deps.sh
cargo build --release --workspace --bins
"$builder" summary --role worker
"$builder" build --role worker --output-dir output
