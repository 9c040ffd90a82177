//! Issue 11, item 7: the API holds under abuse. Slow connections, a source
//! over its connection limit, stalled handshakes and bodies, oversized
//! bodies and registry records, floods of made-up token ids, and a 500 that
//! tells nothing of the server's insides.
//!
//! Each test can fail with its protection removed (checked by removing
//! each: the connection limits, the open-files helper, the negative cache,
//! the rate limit, the fixed 500 message). The measured times and read
//! counts go to stderr (`--nocapture`) as the figures for docs/security.md.
#![allow(clippy::print_stderr)]

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use globular_cluster::pki;
use globular_cluster::protocol::{EnrollRequest, EnrollResponse, RegisterRequest};
use globular_substrate::api::{
    self, Limits, INTERNAL_ERROR, UNKNOWN_TOKEN_BURST, UNKNOWN_TOKEN_RATE,
};
use globular_substrate::client::enroll_with;
use globular_substrate::{tls, Client};
use reqwest::StatusCode;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpSocket, TcpStream};

use crate::api::{registered_request, request};
use crate::harness::Substrate;

/// Enrolls through the API at `s` only, trying for up to `within`.
async fn enroll(
    s: &Substrate,
    req: &EnrollRequest,
    within: Duration,
) -> anyhow::Result<EnrollResponse> {
    enroll_with(std::slice::from_ref(&s.api), &s.ca.pin(), req, within).await
}

/// A worker `node` enrolled with `token`: its answer and key.
fn enrolled(s: &Substrate, token: &str, node: &str) -> (EnrollResponse, String) {
    let (req, key) = request(token, node);
    let response = s
        .runtime
        .block_on(enroll(s, &req, Duration::from_secs(10)))
        .unwrap();
    (response, key)
}

/// A TCP connection to `to` from the loopback address `from`.
async fn connect_from(from: Ipv4Addr, to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::from((from, 0))).unwrap();
    socket.connect(to).await.unwrap()
}

/// A TLS connection (trusting the CA pin) to `to` from `from`.
async fn tls_from(
    from: Ipv4Addr,
    to: SocketAddr,
    config: &Arc<rustls::ClientConfig>,
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let tcp = connect_from(from, to).await;
    let name = rustls_pki_types::ServerName::IpAddress(to.ip().into());
    tokio_rustls::TlsConnector::from(config.clone())
        .connect(name, tcp)
        .await
        .unwrap()
}

/// Whether the server closes `stream` within `within` (an end of stream or
/// a reset, rather than silence).
async fn closed_within(stream: &mut (impl tokio::io::AsyncRead + Unpin), within: Duration) -> bool {
    let mut buf = [0u8; 256];
    loop {
        match tokio::time::timeout(within, stream.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
        }
    }
}

/// What the server answers on `stream` until it closes it.
async fn answer(stream: &mut (impl tokio::io::AsyncRead + Unpin), within: Duration) -> String {
    let mut out = Vec::new();
    let _ = tokio::time::timeout(within, stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

fn api_addr(s: &Substrate) -> SocketAddr {
    s.api.parse().unwrap()
}

fn pinned_config(s: &Substrate) -> Arc<rustls::ClientConfig> {
    Arc::new(tls::pinned_client_config(&s.ca.pin()).unwrap())
}

/// An HTTPS client that trusts the CA pin (the raw answers, not the API client's).
fn pinned_http(s: &Substrate) -> reqwest::Client {
    tls::http_client(tls::pinned_client_config(&s.ca.pin()).unwrap()).unwrap()
}

/// etcd's count of range requests (reads), from its metrics.
async fn etcd_reads(s: &Substrate) -> u64 {
    let mut stream = TcpStream::connect(&s.etcd_metrics).await.unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: etcd\r\n\r\n")
        .await
        .unwrap();
    let text = answer(&mut stream, Duration::from_secs(5)).await;
    text.lines()
        .find_map(|l| l.strip_prefix("etcd_mvcc_range_total "))
        .expect("etcd_mvcc_range_total in etcd's metrics")
        .trim()
        .parse::<f64>()
        .unwrap() as u64
}

/// Whether `GET /healthz` from 127.0.0.1, on a new connection each try,
/// succeeds within `within`.
async fn healthz_within(s: &Substrate, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        let client = Client::pinned(vec![s.api.clone()], &s.ca.pin()).unwrap();
        if tokio::time::timeout(within, client.healthz())
            .await
            .is_ok_and(|r| r.is_ok())
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// Raises this process's open-files limit with the server's helper, from
/// systemd's default soft limit of 1024: 2,000 slow connections are 4,000
/// open files here (both ends live in this process).
fn raise_nofile_from_1024() {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let limit = getrlimit(Resource::Nofile);
    let hard = limit.maximum.unwrap_or(u64::MAX);
    assert!(hard >= 8192, "the hard open-files limit {hard} is too low");
    setrlimit(
        Resource::Nofile,
        Rlimit {
            current: Some(1024),
            maximum: limit.maximum,
        },
    )
    .unwrap();
    assert_eq!(api::raise_nofile_limit().unwrap(), limit.maximum);
}

#[test]
fn two_thousand_slow_connections_do_not_stop_healthz_or_an_enrollment() {
    raise_nofile_from_1024();
    let (s, token) = Substrate::start();
    let (addr, config) = (api_addr(&s), pinned_config(&s));
    const SLOW: usize = 2000;
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    // From 127.0.0.2..=127.0.0.20: about 105 connections a source. Half
    // trickle a TLS handshake, half trickle request headers after one; each
    // sends a byte every 2 s and holds its connection until the end.
    let slow: Vec<_> = (0..SLOW)
        .map(|i| {
            let from = Ipv4Addr::new(127, 0, 0, 2 + (i % 19) as u8);
            let (config, ready) = (config.clone(), ready_tx.clone());
            s.runtime.spawn(async move {
                let trickle = |n: usize| {
                    let text = b"GET /healthz HTTP/1.1\r\nHost: api\r\n";
                    text[n % text.len()..][..1].to_vec()
                };
                if i % 2 == 0 {
                    let mut tcp = connect_from(from, addr).await;
                    let _ = ready.send(());
                    for n in 0.. {
                        // A TLS handshake record header, one byte at a time.
                        let _ = tcp.write_all(&[[0x16, 0x03, 0x01][n % 3]]).await;
                        tokio::time::sleep(Duration::from_secs(2)).await;
                    }
                } else {
                    let mut tls = tls_from(from, addr, &config).await;
                    let _ = ready.send(());
                    for n in 0.. {
                        let _ = tls.write_all(&trickle(n)).await;
                        let _ = tls.flush().await;
                        tokio::time::sleep(Duration::from_secs(2)).await;
                    }
                }
            })
        })
        .collect();
    drop(ready_tx);
    s.runtime.block_on(async {
        let start = Instant::now();
        for n in 0..SLOW {
            tokio::time::timeout(Duration::from_secs(60), ready_rx.recv())
                .await
                .unwrap_or_else(|_| panic!("only {n} slow connections opened"))
                .unwrap();
        }
        eprintln!("{SLOW} slow connections open in {:?}", start.elapsed());

        let t = Instant::now();
        Client::pinned(vec![s.api.clone()], &s.ca.pin())
            .unwrap()
            .healthz()
            .await
            .unwrap();
        let healthz = t.elapsed();
        let (req, _) = request(&token, "w1");
        let t = Instant::now();
        let response = enroll(&s, &req, Duration::from_secs(2)).await.unwrap();
        let enroll = t.elapsed();
        eprintln!("with {SLOW} slow connections: healthz {healthz:?}, enrollment {enroll:?}");
        assert!(healthz < Duration::from_secs(2), "healthz took {healthz:?}");
        assert!(
            enroll < Duration::from_secs(2),
            "enrollment took {enroll:?}"
        );
        assert_eq!(
            pki::identity_of_pem(&response.certificate)
                .unwrap()
                .common_name,
            "w1"
        );
    });
    // The slow connections were held open while measuring.
    assert!(slow.iter().all(|task| !task.is_finished()));
    for task in slow {
        task.abort();
    }
}

#[test]
fn a_source_over_its_limit_is_cut_off_and_others_get_through() {
    let limits = Limits {
        connections: 24,
        connections_per_source: 8,
        // Held connections stay until the test lets them go.
        handshake_timeout: Duration::from_secs(60),
        ..Limits::default()
    };
    let (s, _) = Substrate::start_with_limits(limits);
    let addr = api_addr(&s);
    let (a, b, c, d) = (
        Ipv4Addr::new(127, 0, 0, 2),
        Ipv4Addr::new(127, 0, 0, 3),
        Ipv4Addr::new(127, 0, 0, 4),
        Ipv4Addr::new(127, 0, 0, 5),
    );
    s.runtime.block_on(async {
        let mut from_a = Vec::new();
        for _ in 0..8 {
            from_a.push(connect_from(a, addr).await);
        }
        // The ninth from the same source is closed at once ...
        let mut ninth = connect_from(a, addr).await;
        assert!(closed_within(&mut ninth, Duration::from_secs(1)).await);
        // ... the eight it holds are not ...
        assert!(!closed_within(&mut from_a[0], Duration::from_millis(200)).await);
        // ... and another source still gets through.
        assert!(healthz_within(&s, Duration::from_secs(2)).await);

        // The global limit: 8 + 8 + 8 connections from three sources fill
        // it; a fourth source is then cut off, 127.0.0.1 too.
        let mut others = Vec::new();
        for from in [b, c] {
            for _ in 0..8 {
                others.push(connect_from(from, addr).await);
            }
        }
        let mut from_d = connect_from(d, addr).await;
        assert!(closed_within(&mut from_d, Duration::from_secs(1)).await);
        assert!(!healthz_within(&s, Duration::from_millis(500)).await);
        // Closed connections free their places.
        drop(from_a);
        assert!(healthz_within(&s, Duration::from_secs(2)).await);
        drop(others);
    });
}

#[test]
fn stalled_handshakes_headers_and_bodies_are_cut_and_large_bodies_refused() {
    let limits = Limits {
        handshake_timeout: Duration::from_millis(500),
        header_read_timeout: Duration::from_millis(500),
        request_timeout: Duration::from_secs(1),
        ..Limits::default()
    };
    let max_body = limits.max_body;
    let (s, _) = Substrate::start_with_limits(limits);
    let (addr, config) = (api_addr(&s), pinned_config(&s));
    let from = Ipv4Addr::LOCALHOST;
    s.runtime.block_on(async {
        // A TLS handshake that never finishes.
        let mut tcp = connect_from(from, addr).await;
        tcp.write_all(&[0x16, 0x03]).await.unwrap();
        assert!(closed_within(&mut tcp, Duration::from_secs(2)).await);

        // Request headers that never finish.
        let mut tls = tls_from(from, addr, &config).await;
        tls.write_all(b"GET /healthz HTTP/1.1\r\nHost: a")
            .await
            .unwrap();
        tls.flush().await.unwrap();
        assert!(closed_within(&mut tls, Duration::from_secs(2)).await);

        // A body that never finishes: 408 at the request timeout.
        let mut tls = tls_from(from, addr, &config).await;
        tls.write_all(b"POST /v1/enroll HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n{\"tok")
            .await
            .unwrap();
        tls.flush().await.unwrap();
        let t = Instant::now();
        let text = answer(&mut tls, Duration::from_secs(3)).await;
        assert!(text.starts_with("HTTP/1.1 408"), "{text}");
        assert!(text.contains("request body: not received"), "{text}");
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());

        // A body over the limit, declared or chunked: 413 with an ErrorBody.
        // The declared one is refused before any of it is read; a client
        // that kept writing it would see its connection closed under it
        // (EPIPE), so this one sends only the head.
        let mut tls = tls_from(from, addr, &config).await;
        let head = format!(
            "POST /v1/enroll HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n",
            max_body + 1
        );
        tls.write_all(head.as_bytes()).await.unwrap();
        tls.flush().await.unwrap();
        let text = answer(&mut tls, Duration::from_secs(3)).await;
        assert!(text.starts_with("HTTP/1.1 413"), "{text}");
        assert!(
            text.contains("request body: larger than 65536 bytes"),
            "{text}"
        );
        let mut tls = tls_from(from, addr, &config).await;
        let mut chunked =
            b"POST /v1/enroll HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        for _ in 0..(max_body / 4096 + 2) {
            chunked.extend_from_slice(b"1000\r\n");
            chunked.extend_from_slice(&[b' '; 4096]);
            chunked.extend_from_slice(b"\r\n");
        }
        let _ = tls.write_all(&chunked).await;
        let _ = tls.flush().await;
        let text = answer(&mut tls, Duration::from_secs(3)).await;
        assert!(text.starts_with("HTTP/1.1 413"), "{text}");
        assert!(text.contains("request body: larger than"), "{text}");
    });
}

fn service(name: &str, id: Option<String>) -> RegisterRequest {
    RegisterRequest {
        name: name.into(),
        id,
        ..registered_request()
    }
}

#[test]
fn oversized_records_and_too_many_instances_are_refused_and_not_written() {
    let (s, token) = Substrate::start();
    let (enrolled, key) = enrolled(&s, &token, "w1");
    let client = Client::with_ca(
        vec![s.api.clone()],
        s.ca.cert_pem(),
        Some((&enrolled.certificate, &key)),
    )
    .unwrap();
    s.runtime.block_on(async {
        // Every field within its own limit, the whole record over 4 KiB.
        let big = RegisterRequest {
            metadata: (0..8)
                .map(|i| (format!("k{i}"), "v".repeat(1000)))
                .collect(),
            ..service("example.Big", None)
        };
        let err = format!("{:#}", client.register(&big).await.unwrap_err());
        assert!(err.contains("413") && err.contains("record:"), "{err}");
        let long_tag = RegisterRequest {
            tags: vec!["t".repeat(129)],
            ..service("example.Big", None)
        };
        let err = format!("{:#}", client.register(&long_tag).await.unwrap_err());
        assert!(err.contains("400") && err.contains("tags[0]"), "{err}");
        assert!(client
            .services(Some("example.Big"))
            .await
            .unwrap()
            .services
            .is_empty());

        for i in 0..64 {
            client
                .register(&service("example.Many", Some(format!("i{i}"))))
                .await
                .unwrap();
        }
        let err = format!(
            "{:#}",
            client
                .register(&service("example.Many", Some("i64".into())))
                .await
                .unwrap_err()
        );
        assert!(err.contains("409") && err.contains("instances:"), "{err}");
        let err = format!(
            "{:#}",
            client
                .register(&service("example.Other", None))
                .await
                .unwrap_err()
        );
        assert!(err.contains("409"), "{err}");
        let many = client
            .services(Some("example.Many"))
            .await
            .unwrap()
            .services;
        assert_eq!(many.len(), 64);
        assert!(client
            .services(Some("example.Other"))
            .await
            .unwrap()
            .services
            .is_empty());
        // Registering an instance the node has again is not a new one.
        client
            .register(&service("example.Many", Some("i0".into())))
            .await
            .unwrap();
    });
}

#[test]
fn made_up_token_ids_cost_a_bounded_number_of_etcd_reads() {
    let (s, token) = Substrate::start();
    let http = pinned_http(&s);
    let url = format!("https://{}/v1/enroll", s.api);
    let post = move |token: String| {
        let (http, url) = (http.clone(), url.clone());
        async move {
            let body = serde_json::json!({
                "token": token, "csr": "-", "node": "w1", "role": "worker",
            });
            let resp = http.post(&url).json(&body).send().await.unwrap();
            (resp.status(), resp.text().await.unwrap())
        }
    };
    s.runtime.block_on(async {
        // One made-up id, asked about 200 times: etcd is asked once.
        let before = etcd_reads(&s).await;
        for _ in 0..200 {
            let (status, text) = post("abcdef.0000000000000000".into()).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{text}");
            assert!(text.contains("token abcdef is not known"), "{text}");
        }
        let reads = etcd_reads(&s).await - before;
        assert!(reads <= 1, "{reads} etcd reads for one made-up id");

        // 400 different made-up ids, 8 at a time: refused (403 when looked
        // up, 429 when over the rate), with at most the burst plus the rate
        // of etcd reads.
        let before = etcd_reads(&s).await;
        let start = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for worker in 0..8 {
            let post = post.clone();
            tasks.spawn(async move {
                let mut statuses = Vec::new();
                for i in 0..50 {
                    let id = format!("{worker}{i:05}");
                    statuses.push(post(format!("{id}.0000000000000000")).await);
                }
                statuses
            });
        }
        let mut statuses = Vec::new();
        while let Some(done) = tasks.join_next().await {
            statuses.extend(done.unwrap());
        }
        let elapsed = start.elapsed().as_secs_f64();
        let reads = etcd_reads(&s).await - before;
        let bound = f64::from(UNKNOWN_TOKEN_BURST) + f64::from(UNKNOWN_TOKEN_RATE) * elapsed + 1.0;
        eprintln!("400 made-up ids in {elapsed:.2} s: {reads} etcd reads (bound {bound:.0})");
        assert!((reads as f64) <= bound, "{reads} etcd reads, bound {bound}");
        for (status, text) in &statuses {
            assert!(
                *status == StatusCode::FORBIDDEN || *status == StatusCode::TOO_MANY_REQUESTS,
                "{status}: {text}"
            );
        }
        assert!(statuses.iter().any(|(st, _)| *st == StatusCode::FORBIDDEN));
        assert!(statuses
            .iter()
            .any(|(st, _)| *st == StatusCode::TOO_MANY_REQUESTS));

        // Once the flood stops, the lookups refill and a real token enrolls.
        tokio::time::sleep(Duration::from_secs_f64(
            f64::from(UNKNOWN_TOKEN_BURST) / f64::from(UNKNOWN_TOKEN_RATE),
        ))
        .await;
        let (req, _) = request(&token, "w1");
        enroll(&s, &req, Duration::from_secs(10)).await.unwrap();
    });
}

#[test]
fn a_500_tells_callers_nothing_of_the_server_insides() {
    let (mut s, token) = Substrate::start();
    let (enrolled, key) = enrolled(&s, &token, "w1");
    s.kill_etcd();
    // Past the token cache: the next enrollment asks etcd.
    std::thread::sleep(Duration::from_millis(1100));
    let mtls = tls::http_client(
        tls::client_config(s.ca.cert_pem(), Some((&enrolled.certificate, &key))).unwrap(),
    )
    .unwrap();
    let anonymous = pinned_http(&s);
    let expected = serde_json::json!({ "error": INTERNAL_ERROR });
    s.runtime.block_on(async {
        let (again, _) = request(&token, "w2");
        let answers = [
            anonymous
                .post(format!("https://{}/v1/enroll", s.api))
                .json(&again)
                .send()
                .await
                .unwrap(),
            mtls.get(format!("https://{}/v1/nodes", s.api))
                .send()
                .await
                .unwrap(),
        ];
        for resp in answers {
            assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
            let text = resp.text().await.unwrap();
            assert!(
                !text.contains("etcd") && !text.contains("127.0.0.1"),
                "{text}"
            );
            assert_eq!(
                serde_json::from_str::<serde_json::Value>(&text).unwrap(),
                expected
            );
        }
    });
}
