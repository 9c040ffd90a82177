//! Requests and responses of the substrate API (JSON over HTTPS on port 10016).

use serde::{Deserialize, Serialize};

use crate::registry::{NodeRecord, ServiceRecord};
use crate::Role;

/// The routes of the substrate API, defined once for the server's router
/// and the client.
pub mod routes {
    /// A route: its HTTP method and path, and whether a request may be
    /// sent again to another endpoint after a server error (5xx), when the
    /// first endpoint may already have carried it out.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct Route {
        pub method: &'static str,
        pub path: &'static str,
        pub repeatable: bool,
    }

    /// A request that changes state: not sent again after a 5xx (a second
    /// token, a second certificate).
    const fn post(path: &'static str) -> Route {
        Route {
            method: "POST",
            path,
            repeatable: false,
        }
    }
    const fn get(path: &'static str) -> Route {
        Route {
            method: "GET",
            path,
            repeatable: true,
        }
    }

    /// Token + CSR + role -> certificate. Repeatable: the same key
    /// converges to one node record, whichever endpoint stored it.
    pub const ENROLL: Route = Route {
        repeatable: true,
        ..post("/v1/enroll")
    };
    /// mTLS: a CSR for the caller's own name -> certificate.
    pub const RENEW: Route = post("/v1/renew");
    /// mTLS: the node registry.
    pub const NODES: Route = get("/v1/nodes");
    /// mTLS: the caller's own node record (a rotation asked of it).
    pub const SELF: Route = get("/v1/self");
    /// mTLS, control-plane nodes: a new bootstrap token.
    pub const TOKENS: Route = post("/v1/tokens");
    /// mTLS: register a service instance.
    pub const REGISTER: Route = post("/api/register");
    /// mTLS: service instances (`?name=`).
    pub const SERVICES: Route = get("/api/services");
    /// mTLS: the cluster's DNS zone as the authority serves it.
    pub const DNS: Route = get("/v1/dns");
    /// mTLS: a CSR for the caller's Kubernetes node identity
    /// (`system:node:<name>`) -> a certificate from Kubernetes' CA.
    /// Repeatable: it writes nothing, and a second certificate for the
    /// same key and names is as good as the first.
    pub const KUBERNETES_NODE_CERTIFICATE: Route = Route {
        repeatable: true,
        ..post("/v1/kubernetes/node-certificate")
    };
    /// Liveness.
    pub const HEALTHZ: Route = get("/healthz");
}

/// `POST /v1/enroll`: a CSR made on the node, with the node's enrollment
/// ticket or a role token (a token enrolls new names only).
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrollRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// The node's ticket ([`crate::ticket`]), signed by the CA holder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ticket: Option<String>,
    /// PEM certificate signing request; its common name must be `node`.
    pub csr: String,
    pub node: String,
    pub role: Role,
    /// CIDR addresses of the node (its IPs go into the certificate).
    #[serde(default)]
    pub addresses: Vec<String>,
    #[serde(default)]
    pub image_version: String,
}

/// Redacts the token secret.
impl std::fmt::Debug for EnrollRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnrollRequest")
            .field(
                "token_id",
                &self
                    .token
                    .as_deref()
                    .map(|t| t.split('.').next().unwrap_or_default()),
            )
            .field("ticket", &self.ticket.is_some())
            .field("node", &self.node)
            .field("role", &self.role)
            .field("addresses", &self.addresses)
            .field("image_version", &self.image_version)
            .finish_non_exhaustive()
    }
}

/// Answer to an enrollment or a renewal.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EnrollResponse {
    /// The node certificate (PEM).
    pub certificate: String,
    /// The CA bundle (PEM) to trust from now on.
    pub ca_bundle: String,
    /// etcd client URLs (`https://ip:port`).
    pub etcd_endpoints: Vec<String>,
    /// Substrate API endpoints (`ip:port`) of the control-plane nodes.
    pub api_endpoints: Vec<String>,
    pub cluster_name: String,
}

/// `POST /v1/renew` (mTLS): a CSR for the caller's own name.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RenewRequest {
    pub csr: String,
}

/// `POST /v1/kubernetes/node-certificate` (mTLS): a certificate of the
/// caller's Kubernetes node identity, signed by Kubernetes' client CA. The
/// server issues exactly what is asked or refuses: the common name must be
/// `system:node:<caller>`, the group `system:nodes`, and the names among
/// those the caller's node certificate carries (its name, its addresses);
/// or kube-proxy's `system:kube-proxy`, client use, no group, no names.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubernetesCertRequest {
    /// PEM certificate signing request, made on the node; its common name
    /// is `common_name`.
    pub csr: String,
    pub common_name: String,
    /// The subject organization (Kubernetes' group); empty for none.
    #[serde(default)]
    pub group: String,
    #[serde(default)]
    pub client: bool,
    #[serde(default)]
    pub server: bool,
    #[serde(default)]
    pub dns_names: Vec<String>,
    #[serde(default)]
    pub ips: Vec<std::net::IpAddr>,
}

/// Answer to [`KubernetesCertRequest`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KubernetesCertResponse {
    /// The certificate (PEM).
    pub certificate: String,
    /// Kubernetes' client CA (PEM): an intermediate of the cluster CA.
    pub ca_certificate: String,
}

/// `POST /v1/tokens` (control-plane identities only).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    pub roles: Vec<Role>,
    /// Lifetime in seconds.
    pub ttl_seconds: i64,
    #[serde(default)]
    pub description: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenResponse {
    pub token: String,
    pub expires: String,
}

/// `POST /api/register`: the caller's node is taken from its certificate.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    pub name: String,
    #[serde(default)]
    pub id: Option<String>,
    pub address: String,
    pub port: u16,
    #[serde(default)]
    pub protocol: String,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub metadata: std::collections::BTreeMap<String, String>,
}

/// `GET /v1/nodes`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeList {
    pub nodes: Vec<NodeRecord>,
}

/// `GET /v1/dns`: the zone the control planes answer for.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DnsZone {
    /// The zone's name (`<cluster>.<domain>.`).
    pub zone: String,
    /// The SOA serial (the registry revision).
    pub serial: u32,
    /// Every record in master-file form, the SOA first.
    pub records: Vec<String>,
}

/// `GET /api/services`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServiceList {
    pub services: Vec<ServiceRecord>,
}

/// Body of every refusal.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
}

impl ErrorBody {
    /// The message of a refusal's body: the `error` field of an [`ErrorBody`],
    /// or the raw text when a peer answered with something else.
    pub fn message(body: String) -> String {
        serde_json::from_str::<ErrorBody>(&body)
            .map(|b| b.error)
            .unwrap_or(body)
    }
}
