//! The DNS authority on a synthetic zone, for `scripts/bench-dns.sh`:
//! writes the zone in master-file form (for Knot DNS and CoreDNS to serve
//! the same records) and a dnsperf query file, then serves the zone on
//! `127.0.0.1:PORT` (UDP and TCP) until killed, with no rate limit (the
//! other servers run without one too).
//!
//! `dns_bench OUT_DIR PORT [NODES SERVICES INSTANCES]`: writes
//! `OUT_DIR/bench.zone` and `OUT_DIR/queries.txt`; `PORT` 0 only writes.

#![allow(clippy::print_stdout)]

use std::sync::Arc;

use globular_cluster::registry::{ClusterRecord, EnrollmentPolicy, ServiceRecord, API_SERVICE};
use globular_substrate::dns::{server, Limits, Listeners, Registry, Zone, ZoneNode};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [out, port, rest @ ..] = args.as_slice() else {
        anyhow::bail!("usage: dns_bench OUT_DIR PORT [NODES SERVICES INSTANCES]");
    };
    let number = |i: usize, default: usize| -> anyhow::Result<usize> {
        Ok(rest
            .get(i)
            .map(|s| s.parse())
            .transpose()?
            .unwrap_or(default))
    };
    let (nodes, services, instances) = (number(0, 100)?, number(1, 50)?, number(2, 3)?);
    let registry = registry(nodes, services, instances);
    let zone = Zone::build(&registry)?;
    let out = std::path::Path::new(out);
    std::fs::write(out.join("bench.zone"), zone.to_master_file())?;
    std::fs::write(out.join("queries.txt"), queries(nodes, services))?;
    let port: u16 = port.parse()?;
    if port == 0 {
        return Ok(());
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listeners = Listeners {
            udp: vec![tokio::net::UdpSocket::bind(("127.0.0.1", port)).await?],
            tcp: vec![tokio::net::TcpListener::bind(("127.0.0.1", port)).await?],
        };
        let (_zone_tx, zone_rx) = tokio::sync::watch::channel(Some(Arc::new(zone)));
        let limits = Limits {
            rate_limit: None,
            ..Limits::default()
        };
        println!("serving {} on 127.0.0.1:{port}", registry.cluster.name);
        server::serve(listeners, zone_rx, limits, std::future::pending()).await;
        anyhow::Ok(())
    })
}

/// `nodes` nodes (the first three control planes), `services` services of
/// `instances` instances each, spread over the nodes.
fn registry(nodes: usize, services: usize, instances: usize) -> Registry {
    let node = |i: usize| ZoneNode {
        name: format!("node-{i}"),
        addresses: vec![
            format!("10.{}.{}.{}/16", i / 65536, (i / 256) % 256, i % 256),
            format!("fd00::{i:x}/64"),
        ],
    };
    let service = |s: usize, i: usize| {
        let n = (s * instances + i) % nodes.max(1);
        ServiceRecord {
            name: format!("bench.Service{s}"),
            id: format!("node-{n}"),
            node: format!("node-{n}"),
            address: format!("10.{}.{}.{}", n / 65536, (n / 256) % 256, n % 256),
            port: 8000 + s as u16,
            protocol: "https".into(),
            tags: Vec::new(),
            metadata: Default::default(),
            registered_at: 0,
        }
    };
    // The control planes: the substrate API's instances.
    let api = |n: usize| ServiceRecord {
        name: API_SERVICE.into(),
        port: 10016,
        ..service(0, n)
    };
    Registry {
        cluster: ClusterRecord {
            name: "bench".into(),
            id: "0".repeat(32),
            ca_cert_hash: String::new(),
            policy: EnrollmentPolicy::default(),
            domain: "globular.internal".into(),
            certificate_lifetime: globular_cluster::pki::default_lifetime_seconds(),
        },
        nodes: (0..nodes).map(node).collect(),
        services: (0..services)
            .flat_map(|s| (0..instances).map(move |i| (s, i)))
            .map(|(s, i)| service(s, i))
            .chain((0..nodes.min(3)).map(api))
            .collect(),
        revision: 1,
    }
}

/// A dnsperf data file: node A and AAAA, service A and SRV, a missing type
/// and a missing name, in a fixed mix.
fn queries(nodes: usize, services: usize) -> String {
    let zone = "bench.globular.internal";
    let mut out = String::new();
    for i in 0..1000 {
        let n = i % nodes.max(1);
        let s = i % services.max(1);
        let line = match i % 10 {
            0..=2 => format!("node-{n}.{zone} A"),
            3 => format!("node-{n}.{zone} AAAA"),
            4 | 5 => format!("bench-service{s}.{zone} A"),
            6 | 7 => format!("_bench-service{s}._tcp.{zone} SRV"),
            8 => format!("node-{n}.{zone} TXT"),
            _ => format!("missing-{i}.{zone} A"),
        };
        out.push_str(&line);
        out.push('\n');
    }
    out
}
