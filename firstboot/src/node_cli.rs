//! The node CLI (`globular node list`, `globular service list`,
//! `globular token create`): talks to the substrate API with the node's own
//! certificate.

use std::io::Write as _;

use anyhow::{bail, Context as _};
use globular_cluster::pki::Ca;
use globular_cluster::protocol::RegisterRequest;
use globular_cluster::seed::Seed;
use globular_cluster::{fsutil, pki, Role};
use globular_substrate::Client;

use crate::agent;
use crate::layout::Layout;

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
    /// Register a service instance (as this node).
    ServiceRegister(RegisterRequest),
    TokenCreate {
        roles: Vec<Role>,
        ttl: time::Duration,
    },
    /// Renew the node certificate (same key) if it expires within `before`.
    CertRenew {
        before: time::Duration,
    },
}

/// Renews the node certificate with the node's own key; only the certificate
/// file changes (atomically), so a crash leaves the old or the new one. On a
/// control-plane node the etcd server and peer certificates are renewed too
/// (same keys, signed with the local CA); etcd and the substrate API pick up
/// the new files on their next TLS handshake.
async fn renew(layout: &Layout, client: &Client, before: time::Duration) -> anyhow::Result<String> {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let due = |id: &pki::CertIdentity| id.not_after - now <= before.whole_seconds();
    let mut out = String::new();

    let cert_path = layout.node_cert();
    let current = pki::identity_of_pem(&layout.read(&cert_path)?)
        .with_context(|| format!("reading {}", cert_path.display()))?;
    if due(&current) {
        let key = layout.read(&layout.node_key())?;
        let csr = pki::create_csr(&key, &current.common_name)?;
        let response = client.renew(&csr).await?;
        let renewed =
            pki::identity_of_pem(&response.certificate).context("the renewed certificate")?;
        if renewed.public_key_der != current.public_key_der
            || renewed.common_name != current.common_name
        {
            bail!("the server renewed a certificate for another key or name");
        }
        fsutil::write_atomic(&cert_path, response.certificate.as_bytes(), fsutil::PUBLIC)
            .with_context(|| format!("writing {}", cert_path.display()))?;
        out += &format!("renewed: node certificate {}\n", renewed.serial);
    } else {
        out += &format!(
            "node certificate {} is valid for {} more days; not renewed\n",
            current.serial,
            (current.not_after - now) / 86_400
        );
    }

    if layout.ca_key().exists() && layout.etcd_cert("server").exists() {
        let ca = Ca::from_pem(
            &layout.read(&layout.ca_cert())?,
            &layout.read(&layout.ca_key())?,
        )
        .context("loading the CA")?;
        let seed_path = layout.seed();
        let seed = Seed::parse(&layout.read(&seed_path)?, &seed_path.display().to_string())?;
        for kind in ["server", "peer"] {
            let path = layout.etcd_cert(kind);
            let id = pki::identity_of_pem(&layout.read(&path)?)
                .with_context(|| format!("reading {}", path.display()))?;
            if !due(&id) {
                continue;
            }
            let issued = ca.issue(&id.public_key_der, &agent::etcd_leaf_spec(&seed, kind))?;
            fsutil::write_atomic(&path, issued.cert_pem.as_bytes(), fsutil::PUBLIC)
                .with_context(|| format!("writing {}", path.display()))?;
            out += &format!("renewed: etcd {kind} certificate {}\n", issued.serial);
        }
    }
    Ok(out)
}

fn to_json(value: &impl serde::Serialize) -> anyhow::Result<String> {
    Ok(serde_json::to_string_pretty(value)? + "\n")
}

/// Runs a node CLI command and prints its result on stdout.
pub fn run(layout: &Layout, command: Command) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let text = runtime.block_on(async {
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
                to_json(&client.services(name.as_deref()).await?)?
            }
            Command::ServiceList { name, json: false } => {
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
            Command::ServiceRegister(req) => to_json(&client.register(&req).await?)?,
            Command::TokenCreate { roles, ttl } => {
                let t = client.create_token(roles, ttl).await?;
                format!("{}\n", t.token)
            }
            Command::CertRenew { before } => renew(layout, &client, before).await?,
        })
    })?;
    std::io::stdout()
        .write_all(text.as_bytes())
        .context("writing to stdout")
}
