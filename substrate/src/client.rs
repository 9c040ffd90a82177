//! The API client: the one client of the substrate API, used by the agent's
//! enrollment (trusting only the CA pin) and by the node CLI (mTLS with the
//! node certificate).
//!
//! A call tries the endpoints in order. An endpoint that cannot be reached
//! passes the call to the next one, and so does a server error (5xx) on a
//! route that is safe to send again ([`Route::repeatable`]: reads and
//! enrollment); a refusal (4xx), a 5xx on any other route (it may have been
//! carried out: a second token would be minted) or a server whose CA does
//! not match the pin ends it. A
//! refusal's [`ErrorBody`] message is the error's message.

use std::time::Duration;

use anyhow::anyhow;
use globular_cluster::protocol::routes::{self, Route};
use globular_cluster::protocol::{
    DnsZone, EnrollRequest, EnrollResponse, ErrorBody, KubernetesCertRequest,
    KubernetesCertResponse, NodeList, RegisterRequest, RenewRequest, ServiceList, TokenRequest,
    TokenResponse,
};
use globular_cluster::registry::{NodeRecord, ServiceRecord};
use globular_cluster::Role;
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;

use crate::retry::{Attempt, Retry};
use crate::tls;

/// How often an enrollment is sent again while no endpoint answers.
const ENROLL_INTERVAL: Duration = Duration::from_millis(500);

/// A client of the substrate API with endpoint failover.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    /// `ip:port` of the API servers, in the order they are tried. One
    /// request to one endpoint may take [`tls::REQUEST_TIMEOUT`], the API's
    /// own deadline (it answers 503 with the reason when it is reached).
    endpoints: Vec<String>,
}

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The server's CA does not match the pinned hash: no request was sent.
    #[error("{endpoint}: {message}")]
    Untrusted { endpoint: String, message: String },
    /// The server answered with an error status.
    #[error("{url}: {status}: {message}")]
    Status {
        endpoint: String,
        url: String,
        status: StatusCode,
        message: String,
    },
    /// No connection, or no answer in time.
    #[error("{url}")]
    Unreachable {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    /// The answer was not what the route returns.
    #[error("reading the answer of {url}")]
    BadAnswer {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("no endpoints")]
    NoEndpoints,
}

impl CallError {
    /// Whether asking again (later, or another endpoint) cannot help.
    pub fn is_final(&self) -> bool {
        match self {
            // 429: the server is shedding load (made-up tokens flood it):
            // later, or another endpoint, may answer.
            CallError::Status { status, .. } => {
                status.is_client_error() && *status != StatusCode::TOO_MANY_REQUESTS
            }
            CallError::Untrusted { .. } | CallError::BadAnswer { .. } => true,
            CallError::Unreachable { .. } | CallError::NoEndpoints => false,
        }
    }
}

/// Whether a call of `route` that failed with `err` goes on to the next
/// endpoint: not after a final error, and not after a server's answer to a
/// request that is unsafe to repeat.
fn fails_over(route: Route, err: &CallError) -> bool {
    let answered = matches!(err, CallError::Status { .. });
    !err.is_final() && (route.repeatable || !answered)
}

/// An error and its sources on one line (`a: b: c`).
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text += &format!(": {s}");
        source = s.source();
    }
    text
}

impl Client {
    /// A client for a node that knows only the CA pin (`sha256:...`).
    pub fn pinned(endpoints: Vec<String>, pin: &str) -> anyhow::Result<Client> {
        Client::pinned_from(endpoints, pin, None)
    }

    /// [`Client::pinned`] connecting from `source`, if given: a joiner with
    /// several addresses connects from one it claims (the API checks that
    /// the connection comes from one of them).
    pub fn pinned_from(
        endpoints: Vec<String>,
        pin: &str,
        source: Option<std::net::IpAddr>,
    ) -> anyhow::Result<Client> {
        Ok(Client {
            http: tls::http_client_from(tls::pinned_client_config(pin)?, source)?,
            endpoints,
        })
    }

    /// A client that trusts the CA and presents `identity` (the node's
    /// certificate and key, PEM), if any.
    pub fn with_ca(
        endpoints: Vec<String>,
        ca_pem: &str,
        identity: Option<(&str, &str)>,
    ) -> anyhow::Result<Client> {
        Ok(Client {
            http: tls::http_client(tls::api_client_config(ca_pem, identity)?)?,
            endpoints,
        })
    }

    /// Whether the first endpoint answers `GET /healthz` with a success.
    pub async fn healthz(&self) -> Result<(), CallError> {
        let ep = self.endpoints.first().ok_or(CallError::NoEndpoints)?;
        let url = format!("https://{ep}{}", routes::HEALTHZ.path);
        match self.http.get(&url).send().await {
            Ok(r) if r.status().is_success() => Ok(()),
            Ok(r) => Err(CallError::Status {
                endpoint: ep.clone(),
                url,
                status: r.status(),
                message: String::new(),
            }),
            Err(source) => Err(CallError::Unreachable { url, source }),
        }
    }

    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    /// One call of `route` (its path followed by `query`), with failover
    /// across the endpoints (see the module documentation).
    async fn call<T: DeserializeOwned>(
        &self,
        route: Route,
        query: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<T, CallError> {
        let method = Method::from_bytes(route.method.as_bytes()).unwrap_or(Method::POST);
        let mut last = None;
        for ep in &self.endpoints {
            let url = format!("https://{ep}{}{query}", route.path);
            let mut req = self.http.request(method.clone(), &url);
            if let Some(body) = body {
                req = req.json(body);
            }
            let err = match req.send().await {
                Ok(resp) if resp.status().is_success() => {
                    return resp
                        .json()
                        .await
                        .map_err(|source| CallError::BadAnswer { url, source });
                }
                Ok(resp) => {
                    let status = resp.status();
                    let text = resp.text().await.unwrap_or_default();
                    CallError::Status {
                        endpoint: ep.clone(),
                        url,
                        status,
                        message: ErrorBody::message(text),
                    }
                }
                Err(source) => {
                    let message = chain(&source);
                    // The server is not the cluster's substrate: asking it
                    // again cannot help.
                    if message.contains("pinned hash")
                        || message.contains("is not a control-plane node's")
                    {
                        CallError::Untrusted {
                            endpoint: ep.clone(),
                            message,
                        }
                    } else {
                        CallError::Unreachable { url, source }
                    }
                }
            };
            if !fails_over(route, &err) {
                return Err(err);
            }
            last = Some(err);
        }
        Err(last.unwrap_or(CallError::NoEndpoints))
    }

    async fn post<T: DeserializeOwned>(
        &self,
        route: Route,
        body: &impl serde::Serialize,
    ) -> anyhow::Result<T> {
        let body = serde_json::to_value(body)?;
        Ok(self.call(route, "", Some(&body)).await?)
    }

    /// Sends an enrollment, again while no endpoint answers (until
    /// `retry`'s deadline); a refusal is final.
    pub async fn enroll(
        &self,
        request: &EnrollRequest,
        retry: Retry,
    ) -> anyhow::Result<EnrollResponse> {
        let body = serde_json::to_value(request)?;
        let body = &body;
        retry
            .run(|| async move {
                match self.call(routes::ENROLL, "", Some(body)).await {
                    Ok(response) => Attempt::Done(response),
                    Err(CallError::Status {
                        endpoint,
                        status,
                        message,
                        ..
                    }) if status.is_client_error() => {
                        Attempt::Fail(anyhow!("enrollment refused by {endpoint}: {message}"))
                    }
                    Err(e) if e.is_final() => Attempt::Fail(e.into()),
                    Err(e) => Attempt::Again(anyhow::Error::new(e).context("enrolling")),
                }
            })
            .await
    }

    pub async fn nodes(&self) -> anyhow::Result<NodeList> {
        Ok(self.call(routes::NODES, "", None).await?)
    }

    /// This node's record (the identity the client presents).
    pub async fn own_record(&self) -> anyhow::Result<NodeRecord> {
        Ok(self.call(routes::SELF, "", None).await?)
    }

    /// Discovery: the instances (of `name`) that may work, leaving out
    /// those whose record says `health: failed`.
    pub async fn services(&self, name: Option<&str>) -> anyhow::Result<ServiceList> {
        let query = name.map(|n| format!("?name={n}")).unwrap_or_default();
        Ok(self.call(routes::SERVICES, &query, None).await?)
    }

    /// Every instance (of `name`), the failed ones too (`globular service
    /// list`).
    pub async fn all_services(&self, name: Option<&str>) -> anyhow::Result<ServiceList> {
        let query = match name {
            Some(n) => format!("?name={n}&all=true"),
            None => "?all=true".to_owned(),
        };
        Ok(self.call(routes::SERVICES, &query, None).await?)
    }

    /// The cluster's DNS zone.
    pub async fn dns(&self) -> anyhow::Result<DnsZone> {
        Ok(self.call(routes::DNS, "", None).await?)
    }

    pub async fn register(&self, req: &RegisterRequest) -> anyhow::Result<ServiceRecord> {
        self.post(routes::REGISTER, req).await
    }

    /// Asks for a new certificate for this node (the CSR's key may be new).
    pub async fn renew(&self, csr: &str) -> anyhow::Result<EnrollResponse> {
        let req = RenewRequest {
            csr: csr.to_owned(),
        };
        self.post(routes::RENEW, &req).await
    }

    /// Asks for a certificate of this node's Kubernetes identity.
    pub async fn kubernetes_node_certificate(
        &self,
        req: &KubernetesCertRequest,
    ) -> anyhow::Result<KubernetesCertResponse> {
        self.post(routes::KUBERNETES_NODE_CERTIFICATE, req).await
    }

    pub async fn create_token(
        &self,
        roles: Vec<Role>,
        ttl: time::Duration,
    ) -> anyhow::Result<TokenResponse> {
        let req = TokenRequest {
            roles,
            ttl_seconds: ttl.whole_seconds(),
            description: String::new(),
        };
        self.post(routes::TOKENS, &req).await
    }
}

/// Enrolls through the first endpoint that answers, trusting only a server
/// whose CA has `pin`; unreachable endpoints are tried again every 500 ms
/// until `timeout`.
pub async fn enroll_with(
    endpoints: &[String],
    pin: &str,
    request: &EnrollRequest,
    timeout: Duration,
) -> anyhow::Result<EnrollResponse> {
    enroll_from(endpoints, pin, request, timeout, None).await
}

/// [`enroll_with`] connecting from `source`, if given.
pub async fn enroll_from(
    endpoints: &[String],
    pin: &str,
    request: &EnrollRequest,
    timeout: Duration,
    source: Option<std::net::IpAddr>,
) -> anyhow::Result<EnrollResponse> {
    Client::pinned_from(endpoints.to_vec(), pin, source)?
        .enroll(request, Retry::every(ENROLL_INTERVAL, timeout))
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: u16) -> CallError {
        CallError::Status {
            endpoint: "10.0.0.1:10016".into(),
            url: "https://10.0.0.1:10016/".into(),
            status: StatusCode::from_u16(code).unwrap(),
            message: String::new(),
        }
    }

    /// A server error on a token request may have minted a token: another
    /// endpoint would mint a second one. Reads and enrollment (one record
    /// per key) go on; a refusal ends every call.
    #[test]
    fn a_server_error_fails_over_only_where_repeating_is_safe() {
        for route in [routes::TOKENS, routes::RENEW, routes::REGISTER] {
            assert!(!fails_over(route, &status(500)), "{route:?}");
        }
        for route in [routes::ENROLL, routes::NODES, routes::SERVICES] {
            assert!(fails_over(route, &status(503)), "{route:?}");
        }
        for route in [routes::ENROLL, routes::NODES, routes::TOKENS] {
            assert!(!fails_over(route, &status(403)), "{route:?}");
        }
        assert!(fails_over(routes::TOKENS, &CallError::NoEndpoints));
        // Load shedding is not a refusal: enrollment asks again.
        assert!(fails_over(routes::ENROLL, &status(429)));
        assert!(!status(429).is_final());
    }
}
