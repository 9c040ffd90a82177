#!/usr/bin/env bash
# Build benchmarks (docs/benchmarks.md, "Building images"): whole-process
# figures on the worker profile.
#  1. cold build (empty cache) vs mmdebstrap alone on the same package set;
#  2. overlay-only rebuild (package stage cached) to erofs and squashfs;
#  3. size and write time of every OS-tree format and compressor.
# Needs root and the Debian mirror. Takes about 12 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
cargo build --release -q -p builder
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

seconds() { local s=$EPOCHREALTIME; "$@" >/dev/null 2>"$work/last.log"; echo "$EPOCHREALTIME - $s" | bc; }

echo "machine: $(nproc) cores, $(awk '/MemTotal/{printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(lscpu | sed -n 's/^Model name: *//p')"

# A private copy of profiles and overlays, so the overlay edit below touches nothing.
cp -a profiles overlays "$work/"
profiles=$work/profiles

# 1. Cold build vs mmdebstrap alone.
packages=$("$builder" summary --profiles-dir "$profiles" --role worker --json |
    python3 -c 'import json,sys; print(",".join(json.load(sys.stdin)["Packages"]))')
t_mm=$(seconds mmdebstrap --mode=root --variant=minbase --format=directory \
    '--aptopt=APT::Install-Recommends "false"' \
    --dpkgopt=path-exclude=/usr/share/doc/* --dpkgopt=path-include=/usr/share/doc/*/copyright \
    --dpkgopt=path-exclude=/usr/share/man/* --dpkgopt=path-exclude=/usr/share/info/* \
    --include="$packages" bookworm "$work/mm" \
    "deb http://deb.debian.org/debian bookworm main" \
    "deb http://deb.debian.org/debian bookworm-updates main" \
    "deb http://deb.debian.org/debian-security bookworm-security main")
rm -rf "$work/mm"
t_cold=$(seconds "$builder" build --profiles-dir "$profiles" --role worker --format erofs \
    --cache-dir "$work/cache" --output-dir "$work/out" --quiet)
echo "cold: mmdebstrap alone ${t_mm}s, builder build --format erofs ${t_cold}s, ratio $(echo "scale=2; $t_cold / $t_mm" | bc)"

# 2. Overlay-only rebuilds.
for format in erofs squashfs; do
    echo "benchmark $(date +%s%N)" > "$work/overlays/worker/etc/motd"
    t=$(seconds "$builder" build --profiles-dir "$profiles" --role worker --format "$format" \
        --cache-dir "$work/cache" --output-dir "$work/out" --quiet)
    echo "overlay-only rebuild to $format: ${t}s"
done

# 3. Formats and compressors (write time as the builder reports it).
# BENCH_SKIP_FORMATS=1 stops here (the table takes about 8 minutes).
[ -n "${BENCH_SKIP_FORMATS:-}" ] && exit 0
for spec in erofs:none erofs:lz4 erofs:lz4hc squashfs:zstd squashfs:xz squashfs:gzip \
    squashfs:lz4 tar:zstd tar:gzip cpio:zstd; do
    format=${spec%%:*}; comp=${spec#*:}
    RUST_LOG=info "$builder" build --profiles-dir "$profiles" --role worker --format "$format" \
        --compress-output "$comp" --cache-dir "$work/cache" --output-dir "$work/out" \
        > "$work/files" 2> "$work/log"
    file=$(head -n1 "$work/files")
    write=$(sed -n 's/.*writing .* done in \([0-9.]*\) s.*/\1/p' "$work/log")
    echo "format $format/$comp: $(du -m --apparent-size "$file" | cut -f1) MiB, written in ${write}s"
done
