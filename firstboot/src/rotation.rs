//! `globular cert rotate --all`, on a control plane: asks every node, one
//! at a time (control planes first, then workers, each by name), to renew
//! every certificate it has, and waits until it did before asking the
//! next. The request is the node record's `rotate_requested`; the node's
//! health loop sees it through the API (`GET /v1/self`), renews etcd's
//! certificates and then the node certificate, and that renewal moves the
//! record's `renewed_at` past the request: the sign this waits for. The
//! first node that does not rotate in time stops the run.

use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use globular_cluster::registry::{self, NodeRecord};
use globular_cluster::Role;

use crate::layout::Layout;

/// How often the record of the node being rotated is read.
const POLL: Duration = Duration::from_secs(1);

/// Rotates every node's certificates; `progress` gets a line per node.
pub async fn rotate_all(
    layout: &Layout,
    per_node: Duration,
    mut progress: impl FnMut(&str),
) -> anyhow::Result<()> {
    if !layout.etcd_config().exists() {
        bail!("`globular cert rotate --all` runs on a control-plane node (it writes the registry)");
    }
    let config = layout.load_node_config()?;
    let etcd = crate::etcd_client::substrate(layout, config.etcd_endpoints.clone())?;
    let mut nodes = Vec::new();
    for (key, value) in etcd.list(&registry::nodes_prefix()).await? {
        let record: NodeRecord =
            serde_json::from_slice(&value).with_context(|| format!("parsing {key}"))?;
        nodes.push(record);
    }
    nodes.sort_by(|a, b| {
        (a.role != Role::ControlPlane, &a.name).cmp(&(b.role != Role::ControlPlane, &b.name))
    });
    for node in &nodes {
        let started = Instant::now();
        let key = registry::node_key(&node.name);
        let requested = request(&etcd, &key).await?;
        loop {
            let (record, _) = read(&etcd, &key).await?;
            if record.renewed_at >= requested {
                progress(&format!(
                    "rotated {} ({}): certificate {} after {:.1} s",
                    record.name,
                    record.role,
                    record.cert_serial,
                    started.elapsed().as_secs_f64()
                ));
                break;
            }
            if started.elapsed() >= per_node {
                bail!(
                    "node {} did not renew its certificates within {} s of the request \
                     (is its health loop running? `globular health` there); the nodes after \
                     it were not asked",
                    node.name,
                    per_node.as_secs()
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }
    progress(&format!("every node rotated ({})", nodes.len()));
    Ok(())
}

async fn read(
    etcd: &globular_substrate::etcd::Etcd,
    key: &str,
) -> anyhow::Result<(NodeRecord, i64)> {
    let (value, revision) = etcd
        .get(key)
        .await?
        .with_context(|| format!("{key} is gone"))?;
    let record = serde_json::from_slice(&value).with_context(|| format!("parsing {key}"))?;
    Ok((record, revision))
}

/// Sets the record's `rotate_requested` past its `renewed_at` (compare and
/// swap: a renewal may write the record meanwhile); the request's time.
async fn request(etcd: &globular_substrate::etcd::Etcd, key: &str) -> anyhow::Result<i64> {
    for _ in 0..20 {
        let (mut record, revision) = read(etcd, key).await?;
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        record.rotate_requested = now.max(record.renewed_at + 1);
        let value = serde_json::to_vec(&record)?;
        if etcd.replace(key, &value, revision).await? {
            return Ok(record.rotate_requested);
        }
    }
    bail!("{key} kept changing; could not ask for a rotation")
}
