#!/usr/bin/env bash
# Installs what building and testing Globular images needs on Debian 12.
# Idempotent: packages already present are skipped. Needs root (or sudo).
set -euo pipefail

# Host tools by purpose. Keep in sync with docs/architecture.md ("Host tools").
packages=(
    # Rust crates with C parts, and etcd-client's protobuf build step
    build-essential pkg-config protobuf-compiler
    # Certificates and verification in tests (openssl verify)
    openssl ca-certificates
    # Substrate services in tests: real etcd
    etcd-server etcd-client
    # Seed config drives (FAT, label cidata) and their checks
    mtools dosfstools
)

missing=()
for p in "${packages[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$p")
    fi
done

if [ "${#missing[@]}" -gt 0 ]; then
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null || { echo "install-deps: need root or sudo to install: ${missing[*]}" >&2; exit 1; }
        sudo="sudo"
    fi
    echo "install-deps: installing ${missing[*]}" >&2
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The Rust toolchain: the workspace needs rustc >= 1.85 (Debian 12's own is older).
if ! command -v cargo >/dev/null; then
    echo "install-deps: cargo not found; install a Rust toolchain >= 1.85 (rustup)" >&2
    exit 1
fi
version=$(rustc --version | awk '{print $2}')
if [ "$(printf '%s\n1.85.0\n' "$version" | sort -V | head -n1)" != "1.85.0" ]; then
    echo "install-deps: rustc $version is older than 1.85" >&2
    exit 1
fi
