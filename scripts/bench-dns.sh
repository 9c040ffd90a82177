#!/usr/bin/env bash
# DNS authority benchmark: dnsperf on loopback against our authority
# (substrate/examples/dns_bench.rs), Knot DNS and, if it was built, CoreDNS,
# serving the same zone in the same run. Prints queries per second (a
# saturating run) and latency percentiles (a run at a fixed rate below every
# server's capacity) per server.
#
#   scripts/bench-dns.sh [SECONDS]        # default 10 s per saturating run
#
# Environment: COREDNS=/path/to/coredns (default: `coredns` on PATH, else
# skipped), LATENCY_QPS (default 20000), CLIENTS (dnsperf -c, default 8),
# OUTSTANDING (dnsperf -q, default 500).
# Needs: dnsperf, knot (knotd), cargo. scripts/install-deps.sh installs them.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-10}
latency_qps=${LATENCY_QPS:-20000}
clients=${CLIENTS:-8}
outstanding=${OUTSTANDING:-500}
coredns=${COREDNS:-$(command -v coredns || true)}

for tool in dnsperf knotd cargo; do
    command -v "$tool" >/dev/null || { echo "bench-dns: $tool is missing (scripts/install-deps.sh)" >&2; exit 1; }
done

work=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

echo "bench-dns: building the authority (release)" >&2
cargo build --release --quiet -p globular-substrate --example dns_bench
target=${CARGO_TARGET_DIR:-target}
bench="$target/release/examples/dns_bench"
"$bench" "$work" 0
zone=bench.globular.internal
records=$(grep -vc '^\$' "$work/bench.zone")

declare -A ports
ports[globular]=$(free_port)
"$bench" "$work" "${ports[globular]}" >"$work/globular.log" 2>&1 &
pids+=($!)

ports[knot]=$(free_port)
mkdir -p "$work/knot"
cp "$work/bench.zone" "$work/knot/$zone.zone"
cat >"$work/knot/knot.conf" <<EOF
server:
    rundir: "$work/knot"
    listen: 127.0.0.1@${ports[knot]}
database:
    storage: "$work/knot"
log:
  - target: stderr
    any: warning
zone:
  - domain: $zone
    storage: "$work/knot"
    file: "$zone.zone"
EOF
knotd -c "$work/knot/knot.conf" >"$work/knot.log" 2>&1 &
pids+=($!)

if [ -n "$coredns" ]; then
    ports[coredns]=$(free_port)
    cat >"$work/Corefile" <<EOF
$zone:${ports[coredns]} {
    bind 127.0.0.1
    file $work/bench.zone
}
EOF
    (cd "$work" && exec "$coredns" -conf "$work/Corefile" -quiet) >"$work/coredns.log" 2>&1 &
    pids+=($!)
else
    echo "bench-dns: no CoreDNS binary (COREDNS=...): skipped" >&2
fi

servers=(globular knot)
[ -n "$coredns" ] && servers+=(coredns)

# Each server answers before it is measured.
for s in "${servers[@]}"; do
    for _ in $(seq 50); do
        if dig +short +time=1 +tries=1 @127.0.0.1 -p "${ports[$s]}" "node-1.$zone" A 2>/dev/null | grep -q .; then
            break
        fi
        sleep 0.2
    done
    dig +short +time=1 +tries=1 @127.0.0.1 -p "${ports[$s]}" "node-1.$zone" A | grep -q . \
        || { echo "bench-dns: $s does not answer" >&2; cat "$work/$s.log" >&2 || true; exit 1; }
done

cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')
echo "machine: $(nproc) CPUs, $cpu; $(uname -r)"
echo "zone: $zone, $records records; dnsperf $(dnsperf -h 2>&1 | awk '/^Version/ {print $2}'), -c $clients -q $outstanding, ${seconds}s per run"
echo "knot: $(knotd -V 2>&1 | head -1)"
[ -n "$coredns" ] && echo "coredns: $("$coredns" -version 2>&1 | head -1)"
printf '%-10s %12s %8s %10s %10s %10s %10s\n' server "QPS" "lost" "p50 ms" "p90 ms" "p99 ms" "p99.9 ms"
for s in "${servers[@]}"; do
    out=$(dnsperf -s 127.0.0.1 -p "${ports[$s]}" -d "$work/queries.txt" -l "$seconds" \
        -c "$clients" -q "$outstanding" 2>&1)
    qps=$(awk '/Queries per second:/ {printf "%d", $4}' <<<"$out")
    lost=$(awk '/Queries lost:/ {print $3}' <<<"$out")
    # Latency at a fixed rate, every answer's time from dnsperf -v.
    dnsperf -s 127.0.0.1 -p "${ports[$s]}" -d "$work/queries.txt" -l 5 -Q "$latency_qps" \
        -c "$clients" -v 2>/dev/null \
        | awk '$1 == ">" {print $NF}' | sort -g >"$work/$s.lat"
    pct() { awk -v p="$1" '{a[NR]=$1} END {if (NR == 0) {print "-"; exit} i=int(NR*p); if (i < 1) i=1; printf "%.3f", a[i]*1000}' "$work/$s.lat"; }
    printf '%-10s %12s %8s %10s %10s %10s %10s\n' "$s" "$qps" "$lost" "$(pct 0.5)" "$(pct 0.9)" "$(pct 0.99)" "$(pct 0.999)"
done
