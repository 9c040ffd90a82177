//! Issue 14, kubelet certificates from the substrate: an enrolled node gets
//! certificates of its Kubernetes identity (`system:node:<name>`,
//! `system:nodes`) from Kubernetes' CA through the real API, and every way
//! to get more than that is refused, naming what was wrong.

use std::net::IpAddr;
use std::time::Duration;

use globular_cluster::pki::{self, LeafSpec};
use globular_cluster::protocol::KubernetesCertRequest;
use globular_substrate::client::enroll_with;
use globular_substrate::Client;

use crate::harness::Substrate;

/// Enrolls `node` (a worker at 127.0.0.1) and returns its API client.
fn enrolled(s: &Substrate, token: &str, node: &str) -> (Client, String, String) {
    let (req, key) = crate::api::request(token, node);
    let cert = s
        .runtime
        .block_on(enroll_with(
            std::slice::from_ref(&s.api),
            &s.ca.pin(),
            &req,
            Duration::from_secs(10),
        ))
        .unwrap()
        .certificate;
    let client =
        Client::with_ca(vec![s.api.clone()], s.ca.cert_pem(), Some((&cert, &key))).unwrap();
    (client, cert, key)
}

/// A request for `common_name` with a new key; the key.
fn request(common_name: &str, server: bool) -> (KubernetesCertRequest, String) {
    let key = pki::generate_key_pem().unwrap();
    let req = KubernetesCertRequest {
        csr: pki::create_csr(&key, common_name).unwrap(),
        common_name: common_name.into(),
        group: "system:nodes".into(),
        client: !server,
        server,
        dns_names: if server { vec!["w1".into()] } else { vec![] },
        ips: if server {
            vec!["127.0.0.1".parse().unwrap()]
        } else {
            vec![]
        },
    };
    (req, key)
}

fn ask(s: &Substrate, client: &Client, req: &KubernetesCertRequest) -> anyhow::Result<String> {
    let answer = s
        .runtime
        .block_on(client.kubernetes_node_certificate(req))?;
    let kubernetes_ca = s.kubernetes_ca.as_ref().unwrap();
    assert_eq!(answer.ca_certificate, kubernetes_ca.cert_pem());
    Ok(answer.certificate)
}

fn refused(s: &Substrate, client: &Client, req: &KubernetesCertRequest, expect: &str) {
    let err = format!("{:#}", ask(s, client, req).unwrap_err());
    assert!(err.contains(expect), "expected {expect:?} in {err:?}");
}

#[test]
fn issue_14_a_node_gets_its_kubernetes_identity_and_nothing_more() {
    let (s, token) = Substrate::start();
    let (w1, w1_cert, w1_key) = enrolled(&s, &token, "w1");
    let kubernetes_ca = s.kubernetes_ca.as_ref().unwrap();
    let lifetime = time::Duration::seconds(pki::default_lifetime_seconds() as i64);

    // The kubelet's client certificate and its serving certificate, each
    // for a key made here, exactly as asked.
    for server in [false, true] {
        let (req, key) = request("system:node:w1", server);
        let cert = ask(&s, &w1, &req).unwrap();
        let want = LeafSpec {
            common_name: "system:node:w1".into(),
            role: None,
            group: Some("system:nodes".into()),
            dns_names: req.dns_names.clone(),
            ips: req.ips.clone(),
            server,
            client: !server,
            validity: Some(lifetime),
        };
        pki::check_issued(&cert, &key, kubernetes_ca.cert_pem(), &want).unwrap();
    }
    // Kubernetes' CA chains to the cluster CA, which every node trusts.
    pki::verify_issued(kubernetes_ca.cert_pem(), s.ca.cert_pem()).unwrap();

    // Another node's identity, or any other Kubernetes identity.
    for other in [
        "system:node:w2",
        "system:kube-controller-manager",
        "system:node:w1x",
        "w1",
    ] {
        refused(&s, &w1, &request(other, false).0, "common_name");
    }
    // Another group: system:masters is cluster-admin.
    let (mut req, _) = request("system:node:w1", false);
    req.group = "system:masters".into();
    refused(&s, &w1, &req, "group");
    // Names the node's certificate does not carry: the apiserver's, and an
    // address that is not the node's.
    let (mut req, _) = request("system:node:w1", true);
    req.dns_names = vec!["kubernetes.default.svc".into()];
    refused(&s, &w1, &req, "dns_names");
    let (mut req, _) = request("system:node:w1", true);
    req.ips = vec!["10.96.0.1".parse::<IpAddr>().unwrap()];
    refused(&s, &w1, &req, "ips");
    // A CSR for another identity than the request's.
    let (mut req, _) = request("system:node:w1", false);
    req.csr = request("system:node:w2", false).0.csr;
    refused(&s, &w1, &req, "csr");
    // A CSR that is not one.
    let (mut req, _) = request("system:node:w1", false);
    req.csr =
        "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n".into();
    refused(&s, &w1, &req, "csr");

    // No client certificate.
    let anonymous = Client::with_ca(vec![s.api.clone()], s.ca.cert_pem(), None).unwrap();
    refused(
        &s,
        &anonymous,
        &request("system:node:w1", false).0,
        "needs a client certificate",
    );
    // A certificate of the cluster CA for a node that never enrolled.
    let (cp9, cp9_key) =
        s.ca.issue_with_new_key(&LeafSpec::node(
            "cp9",
            globular_cluster::Role::ControlPlane,
            &[],
        ))
        .unwrap();
    let cp9 = Client::with_ca(
        vec![s.api.clone()],
        s.ca.cert_pem(),
        Some((&cp9.cert_pem, &cp9_key)),
    )
    .unwrap();
    refused(
        &s,
        &cp9,
        &request("system:node:cp9", false).0,
        "not enrolled",
    );
    // A Kubernetes node certificate (with its chain) is no substrate
    // identity: it cannot ask for another one.
    let (req, key) = request("system:node:w1", false);
    let cert = ask(&s, &w1, &req).unwrap();
    let chain = cert + kubernetes_ca.cert_pem();
    let kubelet =
        Client::with_ca(vec![s.api.clone()], s.ca.cert_pem(), Some((&chain, &key))).unwrap();
    refused(
        &s,
        &kubelet,
        &request("system:node:w1", false).0,
        "not enrolled",
    );
    // After a renewal with a new key, the old node certificate asks in vain.
    let new_key = pki::generate_key_pem().unwrap();
    s.runtime
        .block_on(w1.renew(&pki::create_csr(&new_key, "w1").unwrap()))
        .unwrap();
    let old = Client::with_ca(
        vec![s.api.clone()],
        s.ca.cert_pem(),
        Some((&w1_cert, &w1_key)),
    )
    .unwrap();
    refused(&s, &old, &request("system:node:w1", false).0, "superseded");
}

#[test]
fn issue_14_a_cluster_without_kubernetes_ca_says_so() {
    let (s, token) = Substrate::start_without_kubernetes();
    let (w1, _, _) = enrolled(&s, &token, "w1");
    let err = s
        .runtime
        .block_on(w1.kubernetes_node_certificate(&request("system:node:w1", false).0))
        .unwrap_err();
    assert!(format!("{err:#}").contains("no Kubernetes CA"), "{err:#}");
}
