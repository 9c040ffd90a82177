//! The API in-process: enrollment through the pinned client, the mTLS
//! routes with the issued certificate, refusals, failover and shutdown.

use std::time::Duration;

use globular_cluster::pki;
use globular_cluster::protocol::{EnrollRequest, RegisterRequest};
use globular_cluster::Role;
use globular_substrate::client::enroll_with;
use globular_substrate::Client;

use crate::harness::Substrate;

pub(crate) fn request(token: &str, node: &str) -> (EnrollRequest, String) {
    let key = pki::generate_key_pem().unwrap();
    let req = EnrollRequest {
        token: Some(token.into()),
        ticket: None,
        csr: pki::create_csr(&key, node).unwrap(),
        node: node.into(),
        role: Role::Worker,
        addresses: vec!["127.0.0.1/8".into()],
        image_version: "test-1".into(),
    };
    (req, key)
}

/// An address nothing listens on.
fn closed_endpoint() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    drop(listener);
    addr
}

#[test]
fn enrollment_route_then_mtls_routes_in_process() {
    let (mut s, token) = Substrate::start();
    let pin = s.ca.pin();
    // The first endpoint is down: the client fails over to the API.
    let endpoints = vec![closed_endpoint(), s.api.clone()];
    let (req, key) = request(&token, "w1");
    let response = s
        .runtime
        .block_on(enroll_with(&endpoints, &pin, &req, Duration::from_secs(10)))
        .unwrap();
    let issued = pki::identity_of_pem(&response.certificate).unwrap();
    assert_eq!(issued.common_name, "w1");
    assert_eq!(issued.role, Some(Role::Worker));
    assert_eq!(pki::ca_pin_of_pem(&response.ca_bundle).unwrap(), pin);
    assert_eq!(response.cluster_name, "test");

    // The issued certificate opens the mTLS routes.
    let client = Client::with_ca(
        vec![s.api.clone()],
        s.ca.cert_pem(),
        Some((&response.certificate, &key)),
    )
    .unwrap();
    let nodes = s.runtime.block_on(client.nodes()).unwrap().nodes;
    assert_eq!(
        nodes.iter().map(|n| n.name.as_str()).collect::<Vec<_>>(),
        ["w1"]
    );
    let registered = s
        .runtime
        .block_on(client.register(&RegisterRequest {
            name: "example.Web".into(),
            ..registered_request()
        }))
        .unwrap();
    assert_eq!(
        (registered.node.as_str(), registered.id.as_str()),
        ("w1", "w1")
    );
    let services = s
        .runtime
        .block_on(client.services(Some("example.Web")))
        .unwrap()
        .services;
    assert_eq!(services.len(), 1);
    // An instance whose record says it failed is left out of discovery,
    // and listed when every instance is asked for.
    let mut metadata = std::collections::BTreeMap::new();
    metadata.insert("health".to_owned(), "failed".to_owned());
    s.runtime
        .block_on(client.register(&RegisterRequest {
            name: "example.Web".into(),
            metadata: metadata.into_iter().collect(),
            ..registered_request()
        }))
        .unwrap();
    let discovered = s
        .runtime
        .block_on(client.services(Some("example.Web")))
        .unwrap();
    let listed = s
        .runtime
        .block_on(client.all_services(Some("example.Web")))
        .unwrap();
    assert_eq!((discovered.services.len(), listed.services.len()), (0, 1));

    // Refusals: a reserved name from a worker, a token from a worker, an
    // unknown bootstrap token, a caller without a certificate.
    let reserved = RegisterRequest {
        name: "globular.SubstrateApi".into(),
        ..registered_request()
    };
    let err = format!(
        "{:#}",
        s.runtime.block_on(client.register(&reserved)).unwrap_err()
    );
    assert!(
        err.contains("403") && err.contains("control-plane nodes only"),
        "{err}"
    );
    let err = format!(
        "{:#}",
        s.runtime
            .block_on(client.create_token(vec![Role::Worker], time::Duration::hours(1)))
            .unwrap_err()
    );
    assert!(err.contains("only control-plane nodes"), "{err}");
    let (unknown, _) = request("zzzzzz.0000000000000000", "w2");
    let err = format!(
        "{:#}",
        s.runtime
            .block_on(enroll_with(
                &endpoints,
                &pin,
                &unknown,
                Duration::from_secs(10)
            ))
            .unwrap_err()
    );
    assert!(
        err.contains("enrollment refused by") && err.contains("not known"),
        "{err}"
    );
    let anonymous = Client::with_ca(vec![s.api.clone()], s.ca.cert_pem(), None).unwrap();
    let err = format!("{:#}", s.runtime.block_on(anonymous.nodes()).unwrap_err());
    assert!(
        err.contains("401") && err.contains("client certificate"),
        "{err}"
    );
    // A node's own record is its own: no certificate, no record; the
    // worker gets its record and nothing else (the route takes no name).
    let err = format!(
        "{:#}",
        s.runtime.block_on(anonymous.own_record()).unwrap_err()
    );
    assert!(err.contains("401"), "{err}");
    let own = s.runtime.block_on(client.own_record()).unwrap();
    assert_eq!(own.name, "w1");

    // The shutdown future ends the server loop.
    assert!(s.stop(), "serve did not return after the shutdown future");
}

pub(crate) fn registered_request() -> RegisterRequest {
    RegisterRequest {
        name: String::new(),
        id: None,
        address: "127.0.0.1".into(),
        port: 8080,
        protocol: "http".into(),
        tags: vec![],
        metadata: Default::default(),
    }
}

#[test]
fn a_server_with_another_ca_is_refused_before_sending() {
    let (s, token) = Substrate::start();
    let other = pki::Ca::generate("other").unwrap().pin();
    let (req, _) = request(&token, "w1");
    let err = format!(
        "{:#}",
        s.runtime
            .block_on(enroll_with(
                std::slice::from_ref(&s.api),
                &other,
                &req,
                Duration::from_secs(10)
            ))
            .unwrap_err()
    );
    assert!(err.contains("does not match the pinned hash"), "{err}");
}
