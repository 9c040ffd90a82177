//! The node CLI (`globular node list`, `globular service list`,
//! `globular dns`, `globular token create`): talks to the substrate API with the node's own
//! certificate.

use std::io::Write as _;

use anyhow::{bail, Context as _};
use globular_cluster::protocol::RegisterRequest;
use globular_cluster::Role;
use globular_substrate::Client;

use crate::layout::Layout;
use crate::runtime::{self, Threads};

/// The substrate API client of this node: its certificate (mTLS) and the
/// API endpoints of `node.json`.
pub fn client(layout: &Layout) -> anyhow::Result<Client> {
    let config = layout.load_node_config()?;
    if config.api_endpoints.is_empty() {
        bail!(
            "{} lists no substrate API endpoints",
            layout.node_config().display()
        );
    }
    let ca = layout.read(&layout.ca_cert())?;
    let cert = layout.read(&layout.node_cert())?;
    let key = layout.read(&layout.node_key())?;
    Client::with_ca(config.api_endpoints, &ca, Some((&cert, &key)))
}

/// A node CLI command.
#[derive(Debug, Clone)]
pub enum Command {
    NodeList {
        json: bool,
    },
    ServiceList {
        name: Option<String>,
        json: bool,
    },
    /// The DNS zone, in master-file form or as JSON.
    Dns {
        json: bool,
    },
    /// Register a service instance (as this node).
    ServiceRegister(RegisterRequest),
    TokenCreate {
        roles: Vec<Role>,
        ttl: time::Duration,
    },
}

fn to_json(value: &impl serde::Serialize) -> anyhow::Result<String> {
    Ok(serde_json::to_string_pretty(value)? + "\n")
}

/// Runs a node CLI command and prints its result on stdout.
pub fn run(layout: &Layout, command: Command) -> anyhow::Result<()> {
    let text = runtime::block_on(Threads::One, async {
        let client = client(layout)?;
        anyhow::Ok(match command {
            Command::NodeList { json: true } => to_json(&client.nodes().await?)?,
            Command::NodeList { json: false } => {
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
            Command::ServiceList { name, json: true } => {
                to_json(&client.all_services(name.as_deref()).await?)?
            }
            Command::ServiceList { name, json: false } => {
                let mut out = format!(
                    "{:<32} {:<16} {:<16} {:<22} {}\n",
                    "SERVICE", "ID", "NODE", "ENDPOINT", "HEALTH"
                );
                let now = time::OffsetDateTime::now_utc().unix_timestamp();
                for s in client.all_services(name.as_deref()).await?.services {
                    // Health as the registering service last reported it,
                    // and whether that is old news.
                    let mut health = s
                        .metadata
                        .get("health")
                        .map_or("-", String::as_str)
                        .to_owned();
                    if let Some(age) = s.stale(now) {
                        health += &format!(" (not checked for {age} s)");
                    }
                    out += &format!(
                        "{:<32} {:<16} {:<16} {:<22} {health}\n",
                        s.name,
                        s.id,
                        s.node,
                        format!("{}:{}", s.address, s.port)
                    );
                }
                out
            }
            Command::Dns { json: true } => to_json(&client.dns().await?)?,
            Command::Dns { json: false } => {
                let zone = client.dns().await?;
                let mut out = format!("; zone {} serial {}\n", zone.zone, zone.serial);
                for record in zone.records {
                    out += &record;
                    out.push('\n');
                }
                out
            }
            Command::ServiceRegister(req) => to_json(&client.register(&req).await?)?,
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
