#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit and integration tests (real
# mmdebstrap builds, real etcd, QEMU boots), and one full worker image build.
# This is what CI runs (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."
# Go on PATH, the shared cargo target directory.
source scripts/env.sh

bash scripts/install-deps.sh

step() { printf '\n== %s ==\n' "$*" >&2; }

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "cargo test"
cargo test --workspace --locked

step "full worker image build"
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
cargo run --release --locked -q -p builder -- build --role worker --output-dir "$out" --quiet
(cd "$out" && sha256sum -c ./*.SHA256SUMS)
cargo run --release --locked -q -p builder -- inspect "$out"/globular-worker_*.raw

step "build benchmark, short mode (scripts/bench-build.sh)"
# One round on a small tree: keeps the benchmark script working.
BENCH_SHORT=1 bash scripts/bench-build.sh
