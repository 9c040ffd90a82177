//! The DNS authority in-process against the real etcd of the harness,
//! asked by real DNS clients: `dig` (bind9-dnsutils) and `kdig`
//! (knot-dnsutils). The zone is `test.example.internal.` (the harness's
//! cluster record).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use globular_cluster::protocol::RegisterRequest;
use globular_cluster::registry::{self, NodeRecord, ServiceRecord};
use globular_cluster::Role;
use globular_substrate::client::enroll_with;
use globular_substrate::dns::{self, Limits, Listeners, RateLimit};
use globular_substrate::Client;
use globular_task::Task;

use crate::api::{registered_request, request};
use crate::harness::Substrate;

const ZONE: &str = "test.example.internal";

/// The authority serving the harness's etcd on a free loopback port (UDP
/// and TCP), until dropped.
struct Authority {
    port: u16,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for Authority {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl Authority {
    fn start(s: &Substrate, limits: Limits) -> Authority {
        let (listeners, port) = s.runtime.block_on(async {
            loop {
                let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
                let port = udp.local_addr().unwrap().port();
                // The same port for TCP, as on port 53; taken: another try.
                if let Ok(tcp) = tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
                    break (
                        Listeners {
                            udp: vec![udp],
                            tcp: vec![tcp],
                        },
                        port,
                    );
                }
            }
        });
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        s.runtime
            .spawn(dns::run(s.etcd_db.clone(), listeners, limits, async {
                let _ = stopped.await;
            }));
        Authority {
            port,
            stop: Some(stop),
        }
    }

    /// `dig @127.0.0.1 -p PORT ARGS`, one try of one second.
    fn dig(&self, args: &[&str]) -> String {
        let mut all = vec![
            "@127.0.0.1".to_owned(),
            "-p".into(),
            self.port.to_string(),
            "+time=1".into(),
            "+tries=1".into(),
        ];
        all.extend(args.iter().map(|a| a.to_string()));
        Task::new("asking the authority with dig", "dig")
            .package("bind9-dnsutils")
            .args(all)
            .read_string()
            .unwrap()
    }

    /// `dig +short` lines, sorted.
    fn short(&self, name: &str, rtype: &str) -> Vec<String> {
        let mut lines: Vec<String> = self
            .dig(&["+short", name, rtype])
            .lines()
            .map(str::to_owned)
            .collect();
        lines.sort();
        lines
    }

    /// `kdig @127.0.0.1 -p PORT ARGS`.
    fn kdig(&self, args: &[&str]) -> String {
        self.kdig_status(args).unwrap()
    }

    /// [`Authority::kdig`], its failure as text (kdig fails on REFUSED).
    fn kdig_status(&self, args: &[&str]) -> Result<String, String> {
        let mut all = vec![
            "@127.0.0.1".to_owned(),
            "-p".into(),
            self.port.to_string(),
            "+time=1".into(),
            "+retry=0".into(),
        ];
        all.extend(args.iter().map(|a| a.to_string()));
        Task::new("asking the authority with kdig", "kdig")
            .package("knot-dnsutils")
            .args(all)
            .read_string()
            .map_err(|e| format!("{e:?}"))
    }

    /// Waits (at most `limit`) until `dig +short NAME TYPE` says `want`;
    /// returns how long it took.
    fn until(&self, name: &str, rtype: &str, want: &[&str], limit: Duration) -> Duration {
        let start = Instant::now();
        loop {
            let got = self.short(name, rtype);
            if got == want {
                return start.elapsed();
            }
            assert!(
                start.elapsed() < limit,
                "{name} {rtype}: still {got:?} after {limit:?}, want {want:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn node(name: &str, role: Role, addresses: &[&str]) -> NodeRecord {
    NodeRecord {
        name: name.into(),
        role,
        addresses: addresses.iter().map(|a| a.to_string()).collect(),
        image_version: "test-1".into(),
        cert_serial: String::new(),
        key_id: String::new(),
        certificate: String::new(),
        enrolled_at: 0,
        renewed_at: 0,
        superseded: Vec::new(),
        rotate_requested: 0,
    }
}

fn service(name: &str, id: &str, address: &str, port: u16) -> ServiceRecord {
    ServiceRecord {
        name: name.into(),
        id: id.into(),
        node: id.into(),
        address: address.into(),
        port,
        protocol: "https".into(),
        tags: Vec::new(),
        metadata: Default::default(),
        registered_at: 0,
    }
}

/// Writes records straight into etcd, as the API and the agent would.
fn put_records(s: &Substrate, nodes: &[NodeRecord], services: &[ServiceRecord]) {
    s.runtime.block_on(async {
        for n in nodes {
            let value = serde_json::to_vec(n).unwrap();
            s.etcd_db
                .put(&registry::node_key(&n.name), &value)
                .await
                .unwrap();
            // The address index, written with the node record.
            for cidr in &n.addresses {
                let ip = cidr.split('/').next().unwrap().parse().unwrap();
                s.etcd_db
                    .put(&registry::address_key(&ip), n.name.as_bytes())
                    .await
                    .unwrap();
            }
        }
        for svc in services {
            let value = serde_json::to_vec(svc).unwrap();
            s.etcd_db
                .put(&registry::service_key(&svc.name, &svc.id), &value)
                .await
                .unwrap();
        }
    });
}

/// Two control planes, a worker, the substrate's services and Kubernetes'.
fn small_cluster(s: &Substrate) {
    put_records(
        s,
        &[
            node("cp1", Role::ControlPlane, &["10.0.0.1/24", "fd00::1/64"]),
            node("cp2", Role::ControlPlane, &["10.0.0.2/24"]),
            node("w1", Role::Worker, &["10.0.0.21/24"]),
        ],
        &[
            service(registry::API_SERVICE, "cp1", "10.0.0.1", 10016),
            service(registry::API_SERVICE, "cp2", "10.0.0.2", 10016),
            service("kubernetes.KubernetesService", "cp1", "fd00::1", 6443),
        ],
    );
}

fn name(label: &str) -> String {
    format!("{label}.{ZONE}.")
}

#[test]
fn issue_15_every_record_kind_answers_real_clients() {
    let (s, _) = Substrate::start();
    small_cluster(&s);
    let dns = Authority::start(&s, Limits::default());
    dns.until(&name("w1"), "A", &["10.0.0.21"], Duration::from_secs(10));

    let soa = dns.short(&format!("{ZONE}."), "SOA");
    assert_eq!(soa.len(), 1, "{soa:?}");
    assert!(
        soa[0].starts_with(&format!("{} hostmaster.{ZONE}. ", name("cp1"))),
        "{soa:?}"
    );
    assert_eq!(
        dns.short(&format!("{ZONE}."), "NS"),
        [name("cp1"), name("cp2")]
    );
    assert_eq!(dns.short(&name("cp1"), "A"), ["10.0.0.1"]);
    assert_eq!(dns.short(&name("CP1"), "AAAA"), ["fd00::1"]);
    assert_eq!(dns.short(&name("cp2"), "A"), ["10.0.0.2"]);
    assert_eq!(
        dns.short(&name("globular-substrateapi"), "A"),
        ["10.0.0.1", "10.0.0.2"]
    );
    assert_eq!(
        dns.short(&name("kubernetes-kubernetesservice"), "AAAA"),
        ["fd00::1"]
    );
    assert_eq!(
        dns.short(&name("_globular-substrateapi._tcp"), "SRV"),
        [
            format!("0 0 10016 {}", name("cp1.globular-substrateapi")),
            format!("0 0 10016 {}", name("cp2.globular-substrateapi")),
        ]
    );
    assert_eq!(
        dns.short(&name("cp2.globular-substrateapi"), "A"),
        ["10.0.0.2"]
    );

    // Authoritative, no recursion offered, the SRV targets' addresses in
    // the additional section.
    let full = dns.dig(&[&name("_kubernetes-kubernetesservice._tcp"), "SRV"]);
    assert!(full.contains("flags: qr aa rd;"), "{full}");
    assert!(full.contains("status: NOERROR"), "{full}");
    let glue = name("cp1.kubernetes-kubernetesservice");
    assert!(
        full.lines().any(|l| l.split_whitespace().eq([
            glue.as_str(),
            "5",
            "IN",
            "AAAA",
            "fd00::1"
        ])),
        "{full}"
    );
    // The same through Knot's client, over TCP too.
    let k = dns.kdig(&[&name("_globular-substrateapi._tcp"), "SRV"]);
    assert!(
        k.contains("status: NOERROR") && k.contains("Flags: qr aa rd"),
        "{k}"
    );
    assert_eq!(k.matches("\tSRV\t").count(), 2, "{k}");
    let k = dns.kdig(&["+tcp", &name("cp1"), "AAAA"]);
    assert!(k.contains("TCP") && k.contains("fd00::1"), "{k}");
    // The serial is the registry's revision.
    let serial: i64 = soa[0].split(' ').nth(2).unwrap().parse().unwrap();
    let (_, revision) = s
        .runtime
        .block_on(s.etcd_db.list_at(&registry::nodes_prefix(), None))
        .unwrap();
    assert_eq!(serial, revision);
}

#[test]
fn issue_15_unknown_names_nxdomain_with_soa_others_refused_any_minimal() {
    let (s, _) = Substrate::start();
    small_cluster(&s);
    let dns = Authority::start(&s, Limits::default());
    dns.until(&name("w1"), "A", &["10.0.0.21"], Duration::from_secs(10));

    let nx = dns.dig(&[&name("nope"), "A"]);
    assert!(
        nx.contains("status: NXDOMAIN") && nx.contains("flags: qr aa rd;"),
        "{nx}"
    );
    assert!(
        nx.contains(";; AUTHORITY SECTION:") && nx.contains(&format!("{ZONE}.\t5\tIN\tSOA")),
        "{nx}"
    );
    // A name that exists without the type: NOERROR, no answer, the SOA.
    let nodata = dns.dig(&[&name("w1"), "MX"]);
    assert!(
        nodata.contains("status: NOERROR") && nodata.contains("ANSWER: 0"),
        "{nodata}"
    );
    assert!(nodata.contains("IN\tSOA"), "{nodata}");
    // An empty non-terminal exists.
    let ent = dns.dig(&[&name("_tcp"), "A"]);
    assert!(ent.contains("status: NOERROR"), "{ent}");
    // Outside the zone, even its parent: refused, not authoritative.
    for outside in ["example.com.", "example.internal."] {
        let r = dns.dig(&[outside, "A"]);
        assert!(r.contains("status: REFUSED") && !r.contains(" aa"), "{r}");
    }
    // ANY: the minimal answer of RFC 8482.
    let any = dns.kdig(&[&name("cp1"), "ANY"]);
    assert!(any.contains("HINFO") && any.contains("RFC8482"), "{any}");
    // Zone transfers are refused.
    let axfr = dns
        .kdig_status(&["+tcp", &format!("{ZONE}."), "AXFR"])
        .unwrap_err();
    assert!(axfr.contains("REFUSED"), "{axfr}");
}

#[test]
fn issue_15_a_truncated_answer_falls_back_to_tcp() {
    let (s, _) = Substrate::start();
    let many: Vec<ServiceRecord> = (0..60)
        .map(|i| {
            service(
                "example.Big",
                &format!("instance-{i}"),
                &format!("10.1.0.{i}"),
                8000 + i,
            )
        })
        .collect();
    put_records(
        &s,
        &[node("cp1", Role::ControlPlane, &["10.0.0.1/24"])],
        &many,
    );
    let dns = Authority::start(&s, Limits::default());
    let srv = name("_example-big._tcp");
    let start = Instant::now();
    while dns.short(&srv, "SRV").len() != 60 {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no 60 SRV records"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Over UDP without EDNS: TC set, nothing in it, at most 512 bytes.
    let udp = dns.dig(&["+ignore", "+noedns", &srv, "SRV"]);
    assert!(
        udp.contains("flags: qr aa tc rd;") && udp.contains("ANSWER: 0"),
        "{udp}"
    );
    assert!(msg_size(&udp) <= 512, "{udp}");
    // With a large EDNS buffer: still no more than 1232 bytes over UDP.
    let edns = dns.dig(&["+ignore", "+bufsize=65000", &srv, "SRV"]);
    assert!(edns.contains(" tc ") && msg_size(&edns) <= 1232, "{edns}");
    // dig and kdig retry over TCP and get all 60.
    let fallback = dns.dig(&["+noedns", &srv, "SRV"]);
    assert!(
        fallback.contains("Truncated, retrying in TCP mode"),
        "{fallback}"
    );
    assert!(fallback.contains("ANSWER: 60"), "{fallback}");
    let k = dns.kdig(&[&srv, "SRV"]);
    assert!(
        k.contains("TCP") && k.matches("\tSRV\t").count() == 60,
        "{k}"
    );
}

/// `;; MSG SIZE  rcvd: N` of dig's output.
fn msg_size(dig: &str) -> usize {
    dig.lines()
        .find_map(|l| l.strip_prefix(";; MSG SIZE  rcvd: "))
        .unwrap_or_else(|| panic!("no size in {dig}"))
        .trim()
        .parse()
        .unwrap()
}

#[test]
#[allow(clippy::print_stderr)] // the times, for `--nocapture` runs
fn issue_15_a_service_registered_then_removed_within_a_second() {
    let (s, token) = Substrate::start();
    let dns = Authority::start(&s, Limits::default());
    // An enrollment through the API: the node's name answers.
    let (req, key) = request(&token, "w1");
    let enrolled = s
        .runtime
        .block_on(enroll_with(
            std::slice::from_ref(&s.api),
            &s.ca.pin(),
            &req,
            Duration::from_secs(10),
        ))
        .unwrap();
    let took = dns.until(&name("w1"), "A", &["127.0.0.1"], Duration::from_secs(10));
    eprintln!("enrollment answered after {took:?}");

    let client = Client::with_ca(
        vec![s.api.clone()],
        s.ca.cert_pem(),
        Some((&enrolled.certificate, &key)),
    )
    .unwrap();
    s.runtime
        .block_on(client.register(&RegisterRequest {
            name: "example.Web".into(),
            ..registered_request()
        }))
        .unwrap();
    let took = dns.until(
        &name("example-web"),
        "A",
        &["127.0.0.1"],
        Duration::from_secs(1),
    );
    eprintln!("registration answered after {took:?}");
    dns.until(
        &name("_example-web._tcp"),
        "SRV",
        &[&format!("0 0 8080 {}", name("w1.example-web"))],
        Duration::from_secs(1),
    );
    // The API shows the same zone.
    let zone = s.runtime.block_on(client.dns()).unwrap();
    assert_eq!(zone.zone, format!("{ZONE}."));
    assert!(
        zone.records
            .contains(&format!("{} 5 IN A 127.0.0.1", name("example-web"))),
        "{zone:?}"
    );

    // Removed from the registry: gone within a second.
    s.runtime
        .block_on(
            s.etcd_db
                .txn(&[], &[], &[registry::service_key("example.Web", "w1")], &[]),
        )
        .unwrap();
    let took = dns.until(&name("example-web"), "A", &[], Duration::from_secs(1));
    eprintln!("removal answered after {took:?}");
    let nx = dns.dig(&[&name("example-web"), "A"]);
    assert!(nx.contains("status: NXDOMAIN"), "{nx}");
}

#[test]
fn issue_15_malformed_packets_are_dropped_and_the_server_answers_on() {
    let (s, _) = Substrate::start();
    small_cluster(&s);
    let dns = Authority::start(&s, Limits::default());
    dns.until(&name("w1"), "A", &["10.0.0.21"], Duration::from_secs(10));
    let to: SocketAddr = ([127, 0, 0, 1], dns.port).into();
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let garbage: [&[u8]; 5] = [
        b"",
        b"\x00\x01",
        &[0xff; 12],
        // A header claiming 65535 questions.
        b"\x12\x34\x01\x00\xff\xff\x00\x00\x00\x00\x00\x00",
        // A compression pointer to itself.
        b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\xc0\x0c\x00\x01\x00\x01",
    ];
    for g in garbage {
        socket.send_to(g, to).unwrap();
        let mut buf = [0u8; 512];
        assert!(socket.recv_from(&mut buf).is_err(), "answered {g:?}");
    }
    // Garbage over TCP closes that connection only.
    use std::io::Write as _;
    let mut tcp = std::net::TcpStream::connect(to).unwrap();
    tcp.write_all(b"\x00\x05hello").unwrap();
    assert_eq!(dns.short(&name("w1"), "A"), ["10.0.0.21"]);
    assert!(dns.kdig(&["+tcp", &name("w1"), "A"]).contains("10.0.0.21"));
}

#[test]
fn issue_15_a_flooding_source_is_rate_limited_over_udp_not_tcp() {
    let (s, _) = Substrate::start();
    small_cluster(&s);
    let limit = RateLimit {
        rate: 5.0,
        burst: 10.0,
        slip: 2,
    };
    let dns = Authority::start(
        &s,
        Limits {
            rate_limit: Some(limit),
            ..Limits::default()
        },
    );
    dns.until(&name("w1"), "A", &["10.0.0.21"], Duration::from_secs(10));
    std::thread::sleep(Duration::from_secs(3)); // the bucket is full again
    let to: SocketAddr = ([127, 0, 0, 1], dns.port).into();
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut query = hickory_proto::op::Message::new();
    query.add_query(hickory_proto::op::Query::query(
        hickory_proto::rr::Name::from_ascii(name("w1")).unwrap(),
        hickory_proto::rr::RecordType::A,
    ));
    for id in 0..100u16 {
        query.set_id(id);
        socket.send_to(&query.to_vec().unwrap(), to).unwrap();
    }
    let (mut full, mut truncated) = (0, 0);
    let mut buf = [0u8; 512];
    while let Ok((n, _)) = socket.recv_from(&mut buf) {
        let m = hickory_proto::op::Message::from_vec(&buf[..n]).unwrap();
        if m.truncated() {
            assert!(m.answers().is_empty());
            truncated += 1;
        } else {
            full += 1;
        }
    }
    assert!((10..=13).contains(&full), "{full} full answers");
    assert!(
        (40..=50).contains(&truncated),
        "{truncated} truncated answers"
    );
    // TCP is not limited.
    for _ in 0..3 {
        assert!(dns.kdig(&["+tcp", &name("w1"), "A"]).contains("10.0.0.21"));
    }
}
