//! The node CLI (`globular node list`, `globular service list`,
//! `globular token create`): talks to the substrate API with the node's own
//! certificate.

use std::io::Write as _;
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _};
use globular_cluster::protocol::{
    EnrollResponse, ErrorBody, NodeList, RegisterRequest, RenewRequest, ServiceList, TokenRequest,
    TokenResponse,
};
use globular_cluster::registry::ServiceRecord;
use globular_cluster::Role;
use serde::de::DeserializeOwned;

use crate::layout::Layout;
use crate::tls;

/// An mTLS client of the substrate API.
#[derive(Debug)]
pub struct Client {
    http: reqwest::Client,
    endpoints: Vec<String>,
}

impl Client {
    pub fn from_layout(layout: &Layout) -> anyhow::Result<Client> {
        let config = layout.load_node_config()?;
        let ca = layout.read(&layout.ca_cert())?;
        let cert = layout.read(&layout.node_cert())?;
        let key = layout.read(&layout.node_key())?;
        let http = tls::http_client(tls::client_config(&ca, Some((&cert, &key)))?)?;
        if config.api_endpoints.is_empty() {
            bail!(
                "{} lists no substrate API endpoints",
                layout.node_config().display()
            );
        }
        Ok(Client {
            http,
            endpoints: config.api_endpoints,
        })
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> anyhow::Result<T> {
        let mut last = None;
        for ep in &self.endpoints {
            let url = format!("https://{ep}{path}");
            let mut req = self
                .http
                .request(method.clone(), &url)
                .timeout(Duration::from_secs(10));
            if let Some(body) = &body {
                req = req.json(body);
            }
            match req.send().await {
                Ok(resp) if resp.status().is_success() => {
                    return resp
                        .json()
                        .await
                        .with_context(|| format!("reading the answer of {url}"));
                }
                Ok(resp) => {
                    let status = resp.status();
                    let text = resp.text().await.unwrap_or_default();
                    let msg = serde_json::from_str::<ErrorBody>(&text)
                        .map(|b| b.error)
                        .unwrap_or(text);
                    bail!("{url}: {status}: {msg}");
                }
                Err(e) => last = Some(anyhow!(e).context(url)),
            }
        }
        Err(last.unwrap_or_else(|| anyhow!("no endpoints")))
    }

    pub async fn nodes(&self) -> anyhow::Result<NodeList> {
        self.call(reqwest::Method::GET, "/v1/nodes", None).await
    }

    pub async fn services(&self, name: Option<&str>) -> anyhow::Result<ServiceList> {
        let path = match name {
            Some(n) => format!("/api/services?name={n}"),
            None => "/api/services".into(),
        };
        self.call(reqwest::Method::GET, &path, None).await
    }

    pub async fn register(&self, req: &RegisterRequest) -> anyhow::Result<ServiceRecord> {
        self.call(
            reqwest::Method::POST,
            "/api/register",
            Some(serde_json::to_value(req)?),
        )
        .await
    }

    /// Asks for a new certificate for this node (the CSR's key may be new).
    pub async fn renew(&self, csr: &str) -> anyhow::Result<EnrollResponse> {
        let req = RenewRequest {
            csr: csr.to_owned(),
        };
        self.call(
            reqwest::Method::POST,
            "/v1/renew",
            Some(serde_json::to_value(req)?),
        )
        .await
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
        self.call(
            reqwest::Method::POST,
            "/v1/tokens",
            Some(serde_json::to_value(req)?),
        )
        .await
    }
}

/// A node CLI command.
#[derive(Debug, Clone)]
pub enum Command {
    NodeList,
    ServiceList {
        name: Option<String>,
    },
    TokenCreate {
        roles: Vec<Role>,
        ttl: time::Duration,
    },
}

/// Runs a node CLI command and prints its result on stdout.
pub fn run(layout: &Layout, command: Command) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let text = runtime.block_on(async {
        let client = Client::from_layout(layout)?;
        anyhow::Ok(match command {
            Command::NodeList => {
                let mut out = format!(
                    "{:<20} {:<14} {:<20} {:<12} {}\n",
                    "NAME", "ROLE", "ADDRESSES", "IMAGE", "SERIAL"
                );
                for n in client.nodes().await?.nodes {
                    out += &format!(
                        "{:<20} {:<14} {:<20} {:<12} {}\n",
                        n.name,
                        n.role,
                        n.addresses.join(","),
                        n.image_version,
                        n.cert_serial
                    );
                }
                out
            }
            Command::ServiceList { name } => {
                let mut out = format!(
                    "{:<32} {:<16} {:<16} {}\n",
                    "SERVICE", "ID", "NODE", "ENDPOINT"
                );
                for s in client.services(name.as_deref()).await?.services {
                    out += &format!(
                        "{:<32} {:<16} {:<16} {}:{}\n",
                        s.name, s.id, s.node, s.address, s.port
                    );
                }
                out
            }
            Command::TokenCreate { roles, ttl } => {
                let t = client.create_token(roles, ttl).await?;
                format!("{}\n", t.token)
            }
        })
    })?;
    std::io::stdout()
        .write_all(text.as_bytes())
        .context("writing to stdout")
}
