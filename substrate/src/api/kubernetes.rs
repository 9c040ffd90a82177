//! Kubernetes node certificates, `POST /v1/kubernetes/node-certificate`: an
//! enrolled node's CSR for its Kubernetes identity -> a certificate from
//! Kubernetes' client CA, which only control planes hold.
//!
//! This replaces the kubelet's bootstrap tokens and CSR approval: the
//! node's certificate (mTLS, of its current key) is the proof of who it is,
//! so nothing is left for an operator or a controller to approve. What is
//! signed comes from the request and is checked against what the CA
//! signed before, never against the registry (an etcd client could have
//! edited a record):
//!
//! | field | must be |
//! |---|---|
//! | common name | `system:node:<caller>` (Kubernetes' Node authorizer and NodeRestriction read it) |
//! | group | `system:nodes` |
//! | use | client, server, or both |
//! | DNS names | among the caller's certificate's (its node name) |
//! | IP addresses | among the caller's certificate's (its addresses at enrollment) |
//! | the CSR | signed by its key, with the same common name |
//!
//! The one other identity a node may have is kube-proxy's,
//! `system:kube-proxy`: client use only, no group, no names. Every node's
//! kube-proxy shares it, and Kubernetes binds it to `system:node-proxier`
//! out of the box (read services, endpoint slices and nodes; write events),
//! which a node's own identity cannot do (it cannot list endpoint slices).
//!
//! Its validity is the cluster's certificate lifetime. Anything else is
//! refused (403) and nothing is issued.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use globular_cluster::pki::{self, CertIdentity, LeafSpec};
use globular_cluster::protocol::{KubernetesCertRequest, KubernetesCertResponse};

use super::auth::Caller;
use super::error::{parse_body, ApiResult};
use super::{Api, ApiError};

/// The common name of a node's Kubernetes identity.
pub const NODE_PREFIX: &str = "system:node:";
/// The group of every node's Kubernetes identity.
pub const NODES_GROUP: &str = "system:nodes";
/// kube-proxy's user, bound to `system:node-proxier` by Kubernetes' defaults.
pub const KUBE_PROXY: &str = "system:kube-proxy";

pub(super) async fn node_certificate(
    State(api): State<Arc<Api>>,
    caller: Caller,
    body: axum::body::Bytes,
) -> ApiResult<KubernetesCertResponse> {
    let Some(ca) = &api.kubernetes_ca else {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "this control plane has no Kubernetes CA (its seed has none: the cluster's \
             bundle was made before Kubernetes)",
        ));
    };
    let req: KubernetesCertRequest = parse_body(&body)?;
    let csr = pki::verify_csr(&req.csr).map_err(|e| ApiError::bad(format!("csr: {e}")))?;
    let mut spec = allowed(&caller.id, &req).map_err(ApiError::forbidden)?;
    if csr.common_name != req.common_name {
        return Err(ApiError::forbidden(format!(
            "csr: asks for {:?} but the request is for {:?}",
            csr.common_name, req.common_name
        )));
    }
    spec.validity = Some(api.cluster().await?.certificate_lifetime());
    let issued = ca
        .issue(&csr.public_key_der, &spec)
        .map_err(|e| ApiError::bad(e.to_string()))?;
    let uses = match (spec.client, spec.server) {
        (true, true) => "client and server",
        (true, false) => "client",
        _ => "server",
    };
    tracing::info!(
        "issued Kubernetes certificate {} ({uses}) to {}",
        issued.serial,
        caller.id.common_name
    );
    Ok(Json(KubernetesCertResponse {
        certificate: issued.cert_pem,
        ca_certificate: ca.cert_pem().to_owned(),
    }))
}

/// What the caller `id` may have of `req`, or why not.
pub fn allowed(id: &CertIdentity, req: &KubernetesCertRequest) -> Result<LeafSpec, String> {
    if req.common_name == KUBE_PROXY {
        if !req.group.is_empty() {
            return Err(format!("group: {KUBE_PROXY} has none, not {:?}", req.group));
        }
        if req.server || !req.client {
            return Err(format!("{KUBE_PROXY} is for client use only"));
        }
        if !req.dns_names.is_empty() || !req.ips.is_empty() {
            return Err(format!("dns_names, ips: {KUBE_PROXY} has no names"));
        }
        return Ok(LeafSpec {
            common_name: KUBE_PROXY.to_owned(),
            client: true,
            ..LeafSpec::default()
        });
    }
    let node = &id.common_name;
    let want = format!("{NODE_PREFIX}{node}");
    if req.common_name != want {
        return Err(format!(
            "common_name: {:?} is not this node's Kubernetes identity ({want:?})",
            req.common_name
        ));
    }
    if req.group != NODES_GROUP {
        return Err(format!(
            "group: {:?}, but a node's is {NODES_GROUP:?}",
            req.group
        ));
    }
    if !req.client && !req.server {
        return Err("neither client nor server use asked for".into());
    }
    if let Some(name) = req.dns_names.iter().find(|n| !id.dns_names.contains(n)) {
        return Err(format!(
            "dns_names: {name:?} is not among the names of {node}'s certificate ({:?})",
            id.dns_names
        ));
    }
    if let Some(ip) = req.ips.iter().find(|ip| !id.ips.contains(ip)) {
        return Err(format!(
            "ips: {ip} is not among the addresses of {node}'s certificate ({:?})",
            id.ips
        ));
    }
    Ok(LeafSpec {
        common_name: want,
        role: None,
        group: Some(NODES_GROUP.to_owned()),
        dns_names: req.dns_names.clone(),
        ips: req.ips.clone(),
        server: req.server,
        client: req.client,
        validity: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller() -> CertIdentity {
        CertIdentity {
            common_name: "w1".into(),
            role: Some(globular_cluster::Role::Worker),
            dns_names: vec!["w1".into()],
            ips: vec!["10.0.0.5".parse().unwrap()],
            serial: "01".into(),
            public_key_der: vec![],
            not_before: 0,
            not_after: 0,
        }
    }

    fn request() -> KubernetesCertRequest {
        KubernetesCertRequest {
            csr: String::new(),
            common_name: "system:node:w1".into(),
            group: "system:nodes".into(),
            client: false,
            server: true,
            dns_names: vec!["w1".into()],
            ips: vec!["10.0.0.5".parse().unwrap()],
        }
    }

    #[test]
    fn a_node_gets_its_own_identity_and_names() {
        let spec = allowed(&caller(), &request()).unwrap();
        assert_eq!(spec.common_name, "system:node:w1");
        assert_eq!(spec.organization().as_deref(), Some("system:nodes"));
        assert!(spec.server && !spec.client);
        assert_eq!(spec.dns_names, ["w1"]);
        let client = KubernetesCertRequest {
            client: true,
            server: false,
            dns_names: vec![],
            ips: vec![],
            ..request()
        };
        assert!(allowed(&caller(), &client).unwrap().client);
    }

    /// Every field a node could use to become something else is refused,
    /// and the refusal names the field.
    #[test]
    fn anything_beyond_the_nodes_identity_is_refused() {
        let refused = |req: KubernetesCertRequest, field: &str| {
            let err = allowed(&caller(), &req).unwrap_err();
            assert!(err.starts_with(field), "{err}");
        };
        refused(
            KubernetesCertRequest {
                common_name: "system:node:w2".into(),
                ..request()
            },
            "common_name",
        );
        refused(
            KubernetesCertRequest {
                common_name: "system:kube-controller-manager".into(),
                ..request()
            },
            "common_name",
        );
        refused(
            KubernetesCertRequest {
                common_name: "w1".into(),
                ..request()
            },
            "common_name",
        );
        refused(
            KubernetesCertRequest {
                group: "system:masters".into(),
                ..request()
            },
            "group",
        );
        refused(
            KubernetesCertRequest {
                dns_names: vec!["kubernetes.default.svc".into()],
                ..request()
            },
            "dns_names",
        );
        refused(
            KubernetesCertRequest {
                ips: vec!["10.96.0.1".parse().unwrap()],
                ..request()
            },
            "ips",
        );
        refused(
            KubernetesCertRequest {
                client: false,
                server: false,
                ..request()
            },
            "neither",
        );
        // kube-proxy's identity, and nothing more of it.
        let proxy = KubernetesCertRequest {
            common_name: KUBE_PROXY.into(),
            group: String::new(),
            client: true,
            server: false,
            dns_names: vec![],
            ips: vec![],
            ..request()
        };
        let spec = allowed(&caller(), &proxy).unwrap();
        assert_eq!(spec.common_name, KUBE_PROXY);
        assert_eq!(spec.organization(), None);
        assert!(spec.client && !spec.server);
        refused(
            KubernetesCertRequest {
                group: "system:masters".into(),
                ..proxy.clone()
            },
            "group",
        );
        refused(
            KubernetesCertRequest {
                server: true,
                ..proxy.clone()
            },
            "system:kube-proxy is for client",
        );
        refused(
            KubernetesCertRequest {
                ips: vec!["10.0.0.5".parse().unwrap()],
                ..proxy
            },
            "dns_names, ips",
        );
    }
}
