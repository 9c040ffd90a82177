//! Enrollment benchmark (ignored by default; run with
//! `cargo test --release -p globular-firstboot --test tests -- --ignored bench --nocapture`):
//! many joiners enroll concurrently against one control-plane node (the real
//! `globular serve` and etcd). Each enrollment is a fresh TLS connection with
//! CA pinning, token check, CSR verification, signing and an etcd
//! compare-and-create. Keys and CSRs are made before the clock starts.
//! Every joiner connects from its own loopback address (127.1.x.y), the one
//! it claims, as nodes do.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use globular_cluster::pki;
use globular_cluster::protocol::EnrollRequest;
use globular_cluster::Role;
use globular_substrate::client::{enroll_from, enroll_with};

use crate::harness::Cluster;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[test]
#[ignore = "benchmark"]
fn bench_enrollment() {
    let joiners = env_or("BENCH_JOINERS", 200);
    let total = env_or("BENCH_ENROLLMENTS", 2000);
    let cluster = Cluster::new();
    let cp1 = cluster.node("cp1", Role::ControlPlane, true, &[]);
    cluster.run_agent(&cp1).unwrap();
    let token = cluster
        .secrets
        .tokens
        .iter()
        .find(|t| t.roles == [Role::Worker])
        .unwrap()
        .token
        .clone();
    let pin = cluster.secrets.info.ca_cert_hash.clone();
    let requests: Vec<EnrollRequest> = (0..total + 1)
        .map(|i| {
            let name = format!("bench-{i}");
            let key = pki::generate_key_pem().unwrap();
            EnrollRequest {
                token: Some(token.clone()),
                ticket: None,
                csr: pki::create_csr(&key, &name).unwrap(),
                node: name,
                role: Role::Worker,
                // Each node owns its address.
                addresses: vec![format!("127.1.{}.{}/8", i / 250, 1 + i % 250)],
                image_version: "bench".into(),
            }
        })
        .collect();
    let endpoints = vec![cp1.api()];
    let rt =
        globular_firstboot::runtime::build(globular_firstboot::runtime::Threads::PerCpu).unwrap();
    // Warm up: one enrollment, so the API has its etcd connection and caches
    // (a serving control plane has them).
    let mut requests = requests;
    let warm = requests.pop().unwrap();
    rt.block_on(enroll_with(
        &endpoints,
        &pin,
        &warm,
        Duration::from_secs(30),
    ))
    .unwrap();
    let total = requests.len();
    let queue = Arc::new(Mutex::new(requests));
    let latencies = Arc::new(Mutex::new(Vec::with_capacity(total)));
    let cpu_before = cpu_seconds(&cp1);
    let start = Instant::now();
    rt.block_on(async {
        let mut tasks = Vec::new();
        for _ in 0..joiners {
            let (queue, latencies, endpoints, pin) = (
                queue.clone(),
                latencies.clone(),
                endpoints.clone(),
                pin.clone(),
            );
            tasks.push(tokio::spawn(async move {
                loop {
                    let Some(req) = queue.lock().unwrap().pop() else {
                        break;
                    };
                    // Each joiner connects from the address it claims, as
                    // a node does (the API limits connections per source).
                    let source = req.addresses[0].split('/').next().unwrap().parse().ok();
                    let t = Instant::now();
                    enroll_from(&endpoints, &pin, &req, Duration::from_secs(30), source)
                        .await
                        .unwrap();
                    latencies.lock().unwrap().push(t.elapsed());
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    });
    let wall = start.elapsed();
    let cpu_after = cpu_seconds(&cp1);
    let mut l = latencies.lock().unwrap().clone();
    l.sort();
    let pct = |p: f64| l[((l.len() as f64 * p).ceil() as usize).clamp(1, l.len()) - 1];
    let report = format!(
        "enrollments: {total}, concurrent joiners: {joiners}, wall: {:.2} s, rate: {:.0}/s, p50: {:.1} ms, p99: {:.1} ms, max: {:.1} ms\n",
        wall.as_secs_f64(),
        total as f64 / wall.as_secs_f64(),
        pct(0.50).as_secs_f64() * 1e3,
        pct(0.99).as_secs_f64() * 1e3,
        l.last().unwrap().as_secs_f64() * 1e3,
    ) + &format!(
        "CPU seconds during the run: API {:.2}, etcd {:.2}, joiners (this process) {:.2}\n",
        cpu_after[0] - cpu_before[0],
        cpu_after[1] - cpu_before[1],
        cpu_after[2] - cpu_before[2],
    );
    std::io::Write::write_all(&mut std::io::stderr(), report.as_bytes()).unwrap();
}

/// CPU seconds (user + system) of the node's API, its etcd and this process.
fn cpu_seconds(node: &crate::harness::Node) -> [f64; 3] {
    let of = |pid: &str| -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace().collect())
            .unwrap_or_default();
        // utime and stime are fields 14 and 15 (11 and 12 after the name).
        let ticks: f64 = fields.get(11..13).map_or(0.0, |f| {
            f.iter().filter_map(|t| t.parse::<f64>().ok()).sum()
        });
        ticks / 100.0
    };
    let pid = |name: &str| {
        std::fs::read_to_string(node.root.join("run").join(format!("{name}.pid")))
            .unwrap_or_default()
            .trim()
            .to_owned()
    };
    [of(&pid("api")), of(&pid("etcd")), of("self")]
}
