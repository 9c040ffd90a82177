#!/usr/bin/env bash
# Quick start: install host tools, build the builder, and resolve the default
# worker profile. (`builder build --role worker` joins here once the build stage
# lands; see the README.)
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh
cargo build --release --workspace --bins
./target/release/builder summary --role worker
