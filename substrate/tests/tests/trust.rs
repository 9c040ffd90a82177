//! Issue 11, the trust boundary, each rule as a test that tries to break it
//! against the real API and a real etcd: a worker's credentials are no etcd
//! client (client or peer port), a tampered record does not change what
//! renewal issues, addresses are owned, a joiner accepts only a
//! control-plane server, and superseded keys stay refused.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use globular_cluster::pki::{self, LeafSpec};
use globular_cluster::protocol::EnrollRequest;
use globular_cluster::registry::{self, EnrollmentPolicy, NodeRecord};
use globular_cluster::{ticket, Role};
use globular_substrate::client::enroll_with;
use globular_substrate::{tls, Client};

use crate::harness::Substrate;

fn request(token: &str, node: &str, address: &str) -> (EnrollRequest, String) {
    let (mut req, key) = crate::api::request(token, node);
    req.addresses = vec![address.into()];
    (req, key)
}

fn enroll(
    s: &Substrate,
    req: &EnrollRequest,
) -> anyhow::Result<globular_cluster::protocol::EnrollResponse> {
    s.runtime.block_on(enroll_with(
        std::slice::from_ref(&s.api),
        &s.ca.pin(),
        req,
        Duration::from_secs(10),
    ))
}

fn refused(s: &Substrate, req: &EnrollRequest, expect: &str) {
    let err = format!("{:#}", enroll(s, req).unwrap_err());
    assert!(err.contains(expect), "expected {expect:?} in {err:?}");
}

fn record(s: &Substrate, node: &str) -> Option<NodeRecord> {
    s.runtime
        .block_on(s.etcd_db.get(&registry::node_key(node)))
        .unwrap()
        .map(|(v, _)| serde_json::from_slice(&v).unwrap())
}

/// A TLS handshake with `identity` (cert, key) trusting `ca_pem`, then one
/// read: true if the server kept the connection (it accepted the client).
fn handshake(addr: &str, ca_pem: &str, identity: (&str, &str)) -> bool {
    let config = tls::client_config(ca_pem, Some(identity)).unwrap();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let name =
            rustls::pki_types::ServerName::IpAddress("127.0.0.1".parse::<IpAddr>().unwrap().into());
        let Ok(mut tls) = connector.connect(name, tcp).await else {
            return false;
        };
        // TLS 1.3: the server checks the client certificate after the
        // client finished; its refusal arrives as an alert on the next read.
        if tls
            .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            .await
            .is_err()
        {
            return false;
        }
        let mut buf = [0u8; 64];
        matches!(
            tokio::time::timeout(Duration::from_secs(3), tls.read(&mut buf)).await,
            Ok(Ok(n)) if n > 0
        )
    })
}

#[test]
fn issue_11_a_worker_is_no_etcd_client_or_peer() {
    let (s, token) = Substrate::start();
    let (req, key) = request(&token, "w1", "127.0.0.1/8");
    let cert = enroll(&s, &req).unwrap().certificate;
    let etcd_ca = s.etcd_ca.cert_pem();
    // The worker's own certificate, even trusting the etcd CA: client port
    // and peer port refuse it.
    for addr in [&s.etcd_client, &s.etcd_peer] {
        assert!(
            !handshake(addr, etcd_ca, (&cert, &key)),
            "{addr} accepted a worker"
        );
    }
    // A control-plane node certificate of the cluster CA is refused too:
    // only the etcd CA opens etcd.
    let (cp, cp_key) =
        s.ca.issue_with_new_key(&LeafSpec::node("cp9", Role::ControlPlane, &[]))
            .unwrap();
    assert!(!handshake(&s.etcd_client, etcd_ca, (&cp.cert_pem, &cp_key)));
    // The same probe succeeds with an etcd-CA identity, so it can fail.
    let (ok, ok_key) = s
        .etcd_ca
        .issue_with_new_key(&LeafSpec {
            common_name: "globular-substrate".into(),
            role: None,
            group: None,
            dns_names: vec![],
            ips: vec![],
            server: false,
            client: true,
            validity: None,
        })
        .unwrap();
    assert!(handshake(&s.etcd_client, etcd_ca, (&ok.cert_pem, &ok_key)));
    // And through the real etcd client: the worker can neither read nor write.
    let as_worker = globular_substrate::etcd::Etcd::new(
        vec![format!("https://{}", s.etcd_client)],
        etcd_ca,
        &cert,
        &key,
    )
    .unwrap();
    assert!(s.runtime.block_on(as_worker.list("/globular/")).is_err());
    assert!(s
        .runtime
        .block_on(as_worker.put("/globular/x", b"y"))
        .is_err());
    assert!(s.runtime.block_on(as_worker.members()).is_err());
    assert!(s
        .runtime
        .block_on(s.etcd_db.get("/globular/x"))
        .unwrap()
        .is_none());
}

#[test]
fn issue_11_renewal_ignores_a_tampered_record() {
    let (s, token) = Substrate::start();
    let (req, key) = request(&token, "w1", "127.0.0.1/8");
    let cert = enroll(&s, &req).unwrap().certificate;
    // Someone with etcd access makes w1 a control plane at cp1's address.
    let (value, _) = s
        .runtime
        .block_on(s.etcd_db.get(&registry::node_key("w1")))
        .unwrap()
        .unwrap();
    let mut rec: NodeRecord = serde_json::from_slice(&value).unwrap();
    rec.role = Role::ControlPlane;
    rec.addresses = vec!["10.9.9.9/24".into()];
    s.runtime
        .block_on(s.etcd_db.put(
            &registry::node_key("w1"),
            &serde_json::to_vec(&rec).unwrap(),
        ))
        .unwrap();
    let client =
        Client::with_ca(vec![s.api.clone()], s.ca.cert_pem(), Some((&cert, &key))).unwrap();
    let csr = pki::create_csr(&key, "w1").unwrap();
    let renewed = s.runtime.block_on(client.renew(&csr)).unwrap();
    let id = pki::identity_of_pem(&renewed.certificate).unwrap();
    let before = pki::identity_of_pem(&cert).unwrap();
    assert_eq!(id.role, Some(Role::Worker));
    assert_eq!(id.ips, before.ips);
    assert_eq!(id.dns_names, before.dns_names);
    assert_eq!(id.ips, ["127.0.0.1".parse::<IpAddr>().unwrap()]);
}

#[test]
fn issue_11_addresses_are_owned_and_nothing_is_recorded() {
    let (s, token) = Substrate::start_with(EnrollmentPolicy::default());
    // Loopback (the strict default), and a source that is not the node's.
    refused(
        &s,
        &request(&token, "w1", "127.0.0.1/8").0,
        "loopback address",
    );
    refused(
        &s,
        &request(&token, "w1", "10.1.2.3/24").0,
        "not one of the node's addresses",
    );
    assert!(record(&s, "w1").is_none());
    assert!(s
        .runtime
        .block_on(s.etcd_db.list(&format!("{}addresses/", registry::PREFIX)))
        .unwrap()
        .is_empty());

    // With the source check off (joiners behind NAT), another node's address
    // is still refused.
    let (s, token) = Substrate::start_with(EnrollmentPolicy {
        require_source_address: false,
        ..EnrollmentPolicy::default()
    });
    enroll(&s, &request(&token, "w1", "10.1.2.3/24").0).unwrap();
    refused(
        &s,
        &request(&token, "w2", "10.1.2.3/16").0,
        "10.1.2.3 belongs to node w1",
    );
    assert!(record(&s, "w2").is_none());
    let owner = s
        .runtime
        .block_on(
            s.etcd_db
                .get(&registry::address_key(&"10.1.2.3".parse().unwrap())),
        )
        .unwrap()
        .unwrap()
        .0;
    assert_eq!(owner, b"w1");
}

#[test]
fn issue_11_a_joiner_accepts_only_a_control_plane_server() {
    // An API served with a worker's certificate of the right CA.
    let (s, token) = Substrate::start();
    let (req, key) = request(&token, "w1", "127.0.0.1/8");
    let cert = enroll(&s, &req).unwrap().certificate;
    let cert_path = s.dir.path().join("w1.crt");
    let key_path = s.dir.path().join("w1.key");
    std::fs::write(&cert_path, &cert).unwrap();
    std::fs::write(&key_path, &key).unwrap();
    let rogue = tls::server_config(&cert_path, &key_path, s.ca.cert_pem()).unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(rogue));
    let listener = s
        .runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    s.runtime.spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let _ = acceptor.accept(tcp).await;
        }
    });
    let (w2, _) = request(&token, "w2", "127.0.0.1/8");
    let err = format!(
        "{:#}",
        s.runtime
            .block_on(enroll_with(
                std::slice::from_ref(&addr),
                &s.ca.pin(),
                &w2,
                Duration::from_secs(3)
            ))
            .unwrap_err()
    );
    assert!(err.contains("not a control-plane node's"), "{err}");
    // The node CLI's client refuses it too.
    let client = Client::with_ca(vec![addr], s.ca.cert_pem(), Some((&cert, &key))).unwrap();
    let err = format!("{:#}", s.runtime.block_on(client.nodes()).unwrap_err());
    assert!(err.contains("not a control-plane node's"), "{err}");
}

#[test]
fn issue_11_superseded_keys_stay_refused_after_many_reenrollments() {
    let (s, token) = Substrate::start();
    let claims = ticket::claims(
        &s.cluster_id,
        "w1",
        Role::Worker,
        &["127.0.0.1/8".into()],
        time::Duration::hours(1),
    )
    .unwrap();
    let w1_ticket = ticket::sign(&s.ca, &claims).unwrap();
    let (first, first_key) = request(&token, "w1", "127.0.0.1/8");
    let first_cert = enroll(&s, &first).unwrap().certificate;
    // A key-changing renewal: the old key is refused at once.
    let old = Client::with_ca(
        vec![s.api.clone()],
        s.ca.cert_pem(),
        Some((&first_cert, &first_key)),
    )
    .unwrap();
    let key = pki::generate_key_pem().unwrap();
    let renewed = s
        .runtime
        .block_on(old.renew(&pki::create_csr(&key, "w1").unwrap()))
        .unwrap()
        .certificate;
    let err = format!("{:#}", s.runtime.block_on(old.nodes()).unwrap_err());
    assert!(
        err.contains("403") && err.contains("not of its current key"),
        "{err}"
    );
    let mut keys = vec![(first_cert, first_key), (renewed, key)];
    // More re-enrollments than the old count-based history kept (16).
    for _ in 0..20 {
        let (mut req, key) = request(&token, "w1", "127.0.0.1/8");
        req.token = None;
        req.ticket = Some(w1_ticket.clone());
        let cert = enroll(&s, &req).unwrap().certificate;
        keys.push((cert, key));
    }
    let rec = record(&s, "w1").unwrap();
    assert_eq!(rec.superseded.len(), 21);
    let (last, older) = keys.split_last().unwrap();
    for (cert, key) in older {
        let client =
            Client::with_ca(vec![s.api.clone()], s.ca.cert_pem(), Some((cert, key))).unwrap();
        let err = format!("{:#}", s.runtime.block_on(client.nodes()).unwrap_err());
        assert!(err.contains("403"), "{err}");
        // Nor can the old key enroll again, even with the ticket.
        let mut req = request(&token, "w1", "127.0.0.1/8").0;
        req.csr = pki::create_csr(key, "w1").unwrap();
        req.token = None;
        req.ticket = Some(w1_ticket.clone());
        refused(&s, &req, "already used by the node");
    }
    let client = Client::with_ca(
        vec![s.api.clone()],
        s.ca.cert_pem(),
        Some((&last.0, &last.1)),
    )
    .unwrap();
    s.runtime.block_on(client.nodes()).unwrap();
}
