//! Enrollment refusals: each one is a clear error and issues no certificate.

use std::time::Duration;

use globular_cluster::pki;
use globular_cluster::protocol::EnrollRequest;
use globular_cluster::{ticket, Role};
use globular_firstboot::node_cli;
use globular_substrate::client::enroll_with;
use globular_task::Task;

use crate::harness::{runtime, Cluster, AGENT};

/// The address of the test's joiners.
const W1_ADDRESS: &str = "127.0.0.201/8";

fn request(token: &str, node: &str, csr_name: &str, role: Role) -> (EnrollRequest, String) {
    let key = pki::generate_key_pem().unwrap();
    let req = EnrollRequest {
        token: Some(token.into()),
        ticket: None,
        csr: pki::create_csr(&key, csr_name).unwrap(),
        node: node.into(),
        role,
        addresses: vec![W1_ADDRESS.into()],
        image_version: "test-1".into(),
    };
    (req, key)
}

#[test]
fn refusals_issue_nothing() {
    let cluster = Cluster::new();
    let cp1 = cluster.node("cp1", Role::ControlPlane, true, &[]);
    cluster.run_agent(&cp1).unwrap();
    let endpoints = vec![cp1.api()];
    let pin = cluster.secrets.info.ca_cert_hash.clone();
    let token_for = |role: Role| {
        cluster
            .secrets
            .tokens
            .iter()
            .find(|t| t.roles == [role])
            .unwrap()
            .token
            .clone()
    };
    let worker_token = token_for(Role::Worker);
    let rt = runtime();
    let enroll = |req: &EnrollRequest, pin: &str| {
        rt.block_on(enroll_with(&endpoints, pin, req, Duration::from_secs(10)))
    };
    let refused = |req: &EnrollRequest, pin: &str, expect: &str| {
        let err = format!("{:#}", enroll(req, pin).unwrap_err());
        assert!(err.contains(expect), "expected {expect:?} in {err:?}");
    };

    // Wrong token (right id, wrong secret) and an unknown one.
    let wrong = format!("{}.0000000000000000", &worker_token[..6]);
    refused(
        &request(&wrong, "w1", "w1", Role::Worker).0,
        &pin,
        "does not match",
    );
    refused(
        &request("zzzzzz.0000000000000000", "w1", "w1", Role::Worker).0,
        &pin,
        "not known",
    );
    refused(
        &request("nope", "w1", "w1", Role::Worker).0,
        &pin,
        "malformed",
    );
    // A worker token asking for the control-plane role.
    refused(
        &request(&worker_token, "w1", "w1", Role::ControlPlane).0,
        &pin,
        "may not enroll role control-plane",
    );
    // A CSR for another node's name.
    refused(
        &request(&worker_token, "w1", "cp1", Role::Worker).0,
        &pin,
        "asks for node name \"cp1\"",
    );
    // A CSR that is not valid: garbage, and a valid one with a broken signature.
    let (mut bad, _) = request(&worker_token, "w1", "w1", Role::Worker);
    bad.csr =
        "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n".into();
    refused(&bad, &pin, "csr:");
    let (mut tampered, _) = request(&worker_token, "w1", "w1", Role::Worker);
    let mut der = pki::pem_block(&tampered.csr, "CERTIFICATE REQUEST").unwrap();
    let last = der.len() - 3;
    der[last] ^= 0x55;
    tampered.csr = pem("CERTIFICATE REQUEST", &der);
    refused(&tampered, &pin, "csr:");
    // A server whose CA does not match the pin: refused before sending anything.
    let other = pki::Ca::generate("other").unwrap().pin();
    refused(
        &request(&worker_token, "w1", "w1", Role::Worker).0,
        &other,
        "does not match the pinned hash",
    );

    // An expired token (made by the control plane with a 1 s lifetime).
    let client = node_cli::client(&cp1.layout()).unwrap();
    let short = rt
        .block_on(client.create_token(vec![Role::Worker], time::Duration::seconds(1)))
        .unwrap();
    std::thread::sleep(Duration::from_millis(2100));
    refused(
        &request(&short.token, "w1", "w1", Role::Worker).0,
        &pin,
        "expired",
    );

    // Addresses are owned (issue 11): no unspecified, link-local, multicast
    // or broadcast address, not too many, and not another node's.
    for (address, expect) in [
        ("0.0.0.0/0", "unspecified"),
        ("169.254.7.7/16", "link-local"),
        ("fe80::7/64", "link-local"),
        ("239.1.1.1/8", "multicast"),
        ("255.255.255.255/32", "broadcast"),
        (cp1.address(), "belongs to node cp1"),
    ] {
        let (mut req, _) = request(&worker_token, "w1", "w1", Role::Worker);
        req.addresses = vec![address.into()];
        refused(&req, &pin, expect);
    }
    let (mut many, _) = request(&worker_token, "w1", "w1", Role::Worker);
    many.addresses = (1..=5).map(|i| format!("127.0.1.{i}/8")).collect();
    refused(&many, &pin, "at most 4 addresses");

    // Nothing was issued: the registry holds the bootstrap node only.
    let nodes = rt.block_on(client.nodes()).unwrap().nodes;
    assert_eq!(
        nodes.iter().map(|n| n.name.as_str()).collect::<Vec<_>>(),
        ["cp1"]
    );

    // The same key enrolling twice gets the same certificate.
    let (req, _key) = request(&worker_token, "w1", "w1", Role::Worker);
    let first = enroll(&req, &pin).unwrap();
    let second = enroll(&req, &pin).unwrap();
    assert_eq!(first.certificate, second.certificate);
    // A token cannot take an existing name (issue 11): neither a
    // control-plane's nor a worker's with a new key (a stolen worker token
    // does not re-enroll w1 under the attacker's key).
    refused(
        &request(&worker_token, "cp1", "cp1", Role::Worker).0,
        &pin,
        "re-enrolling cp1 needs its ticket",
    );
    let (again, _) = request(&worker_token, "w1", "w1", Role::Worker);
    refused(&again, &pin, "re-enrolling w1 needs its ticket");
    // A ticket for another node, or one that says another role, does not
    // help; w1's own ticket re-enrolls it (a wiped or reimaged node).
    let ticket_of = |node: &str, role: Role| {
        let claims = ticket::claims(
            &cluster.secrets.info.id,
            node,
            role,
            &[W1_ADDRESS.into()],
            time::Duration::hours(1),
        )
        .unwrap();
        ticket::sign(&cluster.secrets.ca, &claims).unwrap()
    };
    let mut with_ticket = again.clone();
    with_ticket.token = None;
    with_ticket.ticket = Some(ticket_of("w2", Role::Worker));
    refused(&with_ticket, &pin, "ticket is for node \"w2\"");
    with_ticket.ticket = Some(ticket_of("w1", Role::ControlPlane));
    refused(&with_ticket, &pin, "ticket is for role");
    let forged = pki::Ca::generate("test").unwrap();
    with_ticket.ticket = Some(
        ticket::sign(
            &forged,
            &ticket::claims(
                &cluster.secrets.info.id,
                "w1",
                Role::Worker,
                &[W1_ADDRESS.into()],
                time::Duration::hours(1),
            )
            .unwrap(),
        )
        .unwrap(),
    );
    refused(&with_ticket, &pin, "signature does not verify");
    with_ticket.ticket = Some(ticket_of("w1", Role::Worker));
    let third = enroll(&with_ticket, &pin).unwrap();
    assert_ne!(third.certificate, first.certificate);
    // The superseded key cannot come back, even with the ticket.
    let mut old_key = req.clone();
    old_key.ticket = with_ticket.ticket.clone();
    refused(&old_key, &pin, "already used by the node");
    let nodes = rt.block_on(client.nodes()).unwrap().nodes;
    assert_eq!(nodes.len(), 2);
    let w1 = nodes.iter().find(|n| n.name == "w1").unwrap();
    let old = pki::identity_of_pem(&first.certificate).unwrap();
    assert_eq!(w1.certificate, third.certificate);
    assert_eq!(w1.superseded.len(), 1);
    assert_eq!(w1.superseded[0].cert_serial, old.serial);
    assert_eq!(w1.superseded[0].expires, old.not_after);
}

#[test]
fn malformed_seed_names_the_field_and_writes_nothing() {
    let cluster = Cluster::new();
    let w1 = cluster.node("w1", Role::Worker, false, &["127.0.0.1:1".into()]);
    let text = std::fs::read_to_string(&w1.seed_path).unwrap();
    std::fs::write(&w1.seed_path, text.replace("role: worker", "role: boss")).unwrap();
    let err = cluster.run_agent(&w1).unwrap_err();
    assert!(err.contains("node.role"), "{err}");
    assert!(err.contains("boss"), "{err}");
    assert!(!w1.layout().state().exists());
    assert!(!w1.layout().seed().exists());
    assert!(!w1.layout().node_key().exists());

    std::fs::write(
        &w1.seed_path,
        text.replace(
            &format!("  addresses:\n  - {}\n", w1.address()),
            &format!(
                "  addresses:\n  - {}\n",
                w1.address().trim_end_matches("/8")
            ),
        ),
    )
    .unwrap();
    let err = Task::new("running the agent", AGENT)
        .args([
            "firstboot",
            "--services",
            "spawn",
            "--no-network",
            "--no-hostname",
            "--root",
        ])
        .arg(&w1.root)
        .arg("--seed")
        .arg(&w1.seed_path)
        .run()
        .unwrap_err()
        .to_string();
    assert!(err.contains("node.addresses[0]"), "{err}");
}

fn pem(label: &str, der: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    format!("-----BEGIN {label}-----\n{b64}\n-----END {label}-----\n")
}
