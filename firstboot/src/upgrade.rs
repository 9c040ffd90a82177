//! `globular node wait NAME --image-version V`: the gate between two nodes
//! of an upgrade by reimaging (docs/kubernetes.md, "Upgrading"). A node
//! booted from a new image with its seed enrolls again; this waits until
//! the cluster sees all of it back, at the new version, and fails with
//! what is missing when it is not within the time given, so that an
//! upgrade stops at the first node that does not come back healthy.
//!
//! Back means, from the registry and (with `--kubeconfig`) Kubernetes:
//! - the node's record says image `V` (it enrolled from the new image);
//! - a control plane's `globular.Etcd` and `globular.SubstrateApi` records
//!   exist and its health loop checked them since that enrollment, and
//!   every record of the node that the loop keeps (`checked_at`: those
//!   two, and the records of packages applied on a control plane, such as
//!   the apiserver's) was checked since the enrollment and says
//!   `running`: a package's record says so only once its own checks
//!   passed on the new image;
//! - with a kubeconfig, the Kubernetes Node of that name, where the node
//!   has one (workers; a worker must have one): `Ready`, its status posted
//!   since the enrollment, and with `--kubelet-version` at that version.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::bail;
use globular_cluster::protocol::{NodeList, ServiceList};
use globular_cluster::registry::{API_SERVICE, ETCD_SERVICE};
use globular_cluster::Role;
use globular_task::{Task, TaskError};
use serde::Deserialize;

use crate::layout::Layout;
use crate::runtime::{self, Threads};

/// What the node must be.
#[derive(Debug, Clone)]
pub struct Want {
    pub node: String,
    pub image_version: String,
    /// Read the Kubernetes Node with this kubeconfig.
    pub kubeconfig: Option<PathBuf>,
    /// The Node's `kubeletVersion` (`v1.37.2`).
    pub kubelet_version: Option<String>,
}

/// How often the cluster is read again.
const POLL: Duration = Duration::from_secs(5);

/// Waits up to `timeout`; logs what is still missing whenever it changes.
pub fn wait(layout: &Layout, want: &Want, timeout: Duration) -> anyhow::Result<String> {
    let client = crate::node_cli::client(layout)?;
    let started = Instant::now();
    let mut last: Vec<String> = Vec::new();
    loop {
        let read = runtime::block_on(Threads::One, async {
            let nodes = client.nodes().await?;
            let services = client.all_services(None).await?;
            anyhow::Ok((nodes, services))
        });
        let missing = match read {
            Err(e) => vec![format!("the substrate API did not answer: {e:#}")],
            Ok((nodes, services)) => {
                let missing = substrate_missing(&nodes, &services, want);
                match &want.kubeconfig {
                    Some(kubeconfig) if missing.is_empty() => {
                        kubernetes_missing(kubeconfig, want, &nodes)
                    }
                    _ => missing,
                }
            }
        };
        if missing.is_empty() {
            return Ok(format!(
                "{} is back at {} after {} s\n",
                want.node,
                want.image_version,
                started.elapsed().as_secs()
            ));
        }
        if started.elapsed() >= timeout {
            bail!(
                "{} is not back at {} after {} s: {}",
                want.node,
                want.image_version,
                timeout.as_secs(),
                missing.join("; ")
            );
        }
        if missing != last {
            tracing::info!("{}: waiting: {}", want.node, missing.join("; "));
            last = missing;
        }
        std::thread::sleep(POLL);
    }
}

/// What the registry does not yet show of `want` (empty: all of it).
pub fn substrate_missing(nodes: &NodeList, services: &ServiceList, want: &Want) -> Vec<String> {
    let Some(node) = nodes.nodes.iter().find(|n| n.name == want.node) else {
        return vec![format!("{} is not enrolled", want.node)];
    };
    if node.image_version != want.image_version {
        return vec![format!(
            "{} runs image {}, not {}",
            node.name, node.image_version, want.image_version
        )];
    }
    let mut missing = Vec::new();
    let own: Vec<_> = services
        .services
        .iter()
        .filter(|s| s.node == node.name)
        .collect();
    if node.role == Role::ControlPlane {
        for name in [ETCD_SERVICE, API_SERVICE] {
            if !own.iter().any(|s| s.name == name) {
                missing.push(format!("{name} is not registered"));
            }
        }
    }
    for s in own {
        // A control plane's health loop keeps its substrate records: one it
        // never checked was not checked since the enrollment either.
        let kept = node.role == Role::ControlPlane
            && [ETCD_SERVICE, API_SERVICE].contains(&s.name.as_str());
        let checked: i64 = match s.metadata.get("checked_at") {
            Some(at) => at.parse().unwrap_or(0),
            None if kept => 0,
            None => continue,
        };
        let health = s.metadata.get("health").map_or("-", String::as_str);
        if checked < node.enrolled_at {
            missing.push(format!("{} not checked since the enrollment", s.name));
        } else if health != "running" {
            missing.push(format!("{} is {health}", s.name));
        }
    }
    missing
}

#[derive(Debug, Deserialize)]
struct KubeNode {
    status: KubeNodeStatus,
}

#[derive(Debug, Default, Deserialize)]
struct KubeNodeStatus {
    #[serde(default)]
    conditions: Vec<Condition>,
    #[serde(default, rename = "nodeInfo")]
    node_info: NodeInfo,
}

#[derive(Debug, Deserialize)]
struct Condition {
    #[serde(rename = "type")]
    kind: String,
    status: String,
    #[serde(default, rename = "lastHeartbeatTime")]
    last_heartbeat: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct NodeInfo {
    #[serde(default, rename = "kubeletVersion")]
    kubelet_version: String,
}

/// What the Kubernetes Node (`kubectl get node -o json`) does not yet show
/// for a node that enrolled at `enrolled_at` (Unix seconds).
pub fn node_missing(node_json: &[u8], want: &Want, enrolled_at: i64) -> Vec<String> {
    let node: KubeNode = match serde_json::from_slice(node_json) {
        Ok(node) => node,
        Err(e) => {
            return vec![format!(
                "the Node {} is not JSON kubectl reads: {e}",
                want.node
            )]
        }
    };
    let mut missing = Vec::new();
    let ready = node.status.conditions.iter().find(|c| c.kind == "Ready");
    match ready {
        Some(c) if c.status == "True" => {
            let heartbeat = c
                .last_heartbeat
                .as_deref()
                .and_then(|t| {
                    time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
                        .ok()
                })
                .map_or(0, |t| t.unix_timestamp());
            if heartbeat < enrolled_at {
                missing.push(format!(
                    "the Node {} has not reported since the enrollment",
                    want.node
                ));
            }
        }
        Some(c) => missing.push(format!("the Node {} is Ready={}", want.node, c.status)),
        None => missing.push(format!("the Node {} has no Ready condition", want.node)),
    }
    if let Some(version) = &want.kubelet_version {
        let running = &node.status.node_info.kubelet_version;
        if running.is_empty() {
            missing.push(format!("the Node {} reports no kubelet version", want.node));
        } else if running != version {
            missing.push(format!("the Node {} runs kubelet {running}", want.node));
        }
    }
    missing
}

/// What the Kubernetes Node of an enrolled node does not yet show; a
/// control plane runs no kubelet, so for it no Node is all there is to see.
fn kubernetes_missing(kubeconfig: &Path, want: &Want, nodes: &NodeList) -> Vec<String> {
    let Some(node) = nodes.nodes.iter().find(|n| n.name == want.node) else {
        return vec![format!("{} is not enrolled", want.node)];
    };
    let read = Task::new(format!("reading the Node {}", want.node), "kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args([
            "get",
            "node",
            &want.node,
            "-o",
            "json",
            "--request-timeout=20s",
        ])
        .read();
    match read {
        Ok(json) => node_missing(&json, want, node.enrolled_at),
        Err(TaskError::Failed { stderr, .. })
            if node.role == Role::ControlPlane && stderr.contains("(NotFound)") =>
        {
            Vec::new()
        }
        Err(e) => vec![format!("{:#}", anyhow::Error::new(e))],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use globular_cluster::registry::{NodeRecord, ServiceRecord};

    fn want(version: &str) -> Want {
        Want {
            node: "cp-2".into(),
            image_version: version.into(),
            kubeconfig: None,
            kubelet_version: Some("v1.37.2".into()),
        }
    }

    fn node(role: Role, image: &str, enrolled_at: i64) -> NodeList {
        NodeList {
            nodes: vec![NodeRecord {
                name: "cp-2".into(),
                role,
                addresses: vec!["10.0.0.12/24".into()],
                image_version: image.into(),
                cert_serial: "01".into(),
                key_id: "sha256:00".into(),
                certificate: String::new(),
                enrolled_at,
                renewed_at: enrolled_at,
                superseded: vec![],
                rotate_requested: 0,
            }],
        }
    }

    fn record(name: &str, meta: &[(&str, &str)]) -> ServiceRecord {
        ServiceRecord {
            name: name.into(),
            id: "cp-2".into(),
            node: "cp-2".into(),
            address: "10.0.0.12".into(),
            port: 1,
            protocol: String::new(),
            tags: vec![],
            metadata: meta
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            registered_at: 0,
        }
    }

    #[test]
    fn a_control_plane_is_back_when_each_checked_record_says_running_since_it_enrolled() {
        let nodes = node(Role::ControlPlane, "0.2.0", 1000);
        let running = [("health", "running"), ("checked_at", "1010")];
        let all = ServiceList {
            services: vec![
                record(ETCD_SERVICE, &running),
                record(API_SERVICE, &running),
                record("kubernetes.KubernetesService", &running),
            ],
        };
        assert!(substrate_missing(&nodes, &all, &want("0.2.0")).is_empty());

        // Still the old image.
        let old = node(Role::ControlPlane, "0.1.0", 900);
        assert_eq!(
            substrate_missing(&old, &all, &want("0.2.0")),
            ["cp-2 runs image 0.1.0, not 0.2.0"]
        );
        // The apiserver's record from before the reimage, not checked since.
        let mut stale = all.clone();
        stale.services[2]
            .metadata
            .insert("checked_at".into(), "990".into());
        assert_eq!(
            substrate_missing(&nodes, &stale, &want("0.2.0")),
            ["kubernetes.KubernetesService not checked since the enrollment"]
        );
        // A component failing its check.
        let mut degraded = all.clone();
        degraded.services[2]
            .metadata
            .insert("health".into(), "degraded".into());
        assert_eq!(
            substrate_missing(&nodes, &degraded, &want("0.2.0")),
            ["kubernetes.KubernetesService is degraded"]
        );
        // etcd's record as the agent registered it, before any round of
        // the health loop.
        let mut unchecked = all.clone();
        unchecked.services[0].metadata.clear();
        assert_eq!(
            substrate_missing(&nodes, &unchecked, &want("0.2.0")),
            ["globular.Etcd not checked since the enrollment"]
        );
        // etcd's record gone.
        let mut no_etcd = all.clone();
        no_etcd.services.remove(0);
        assert_eq!(
            substrate_missing(&nodes, &no_etcd, &want("0.2.0")),
            ["globular.Etcd is not registered"]
        );
        assert_eq!(
            substrate_missing(&NodeList { nodes: vec![] }, &all, &want("0.2.0")),
            ["cp-2 is not enrolled"]
        );
    }

    #[test]
    fn a_worker_needs_no_substrate_record() {
        let nodes = node(Role::Worker, "0.2.0", 1000);
        let kubelet = record("kubernetes.Kubelet", &[("health", "running")]);
        let services = ServiceList {
            services: vec![kubelet],
        };
        assert!(substrate_missing(&nodes, &services, &want("0.2.0")).is_empty());
    }

    fn kube_node(ready: &str, heartbeat: &str, version: &str) -> Vec<u8> {
        serde_json::json!({"status": {
            "conditions": [
                {"type": "MemoryPressure", "status": "False", "lastHeartbeatTime": heartbeat},
                {"type": "Ready", "status": ready, "lastHeartbeatTime": heartbeat}
            ],
            "nodeInfo": {"kubeletVersion": version}
        }})
        .to_string()
        .into_bytes()
    }

    #[test]
    fn a_node_is_back_when_ready_at_the_version_since_it_enrolled() {
        // 2026-12-06T20:00:00Z
        let enrolled = 1_796_587_200;
        let w = want("0.2.0");
        let ok = kube_node("True", "2026-12-06T20:00:30Z", "v1.37.2");
        assert!(node_missing(&ok, &w, enrolled).is_empty());
        assert_eq!(
            node_missing(
                &kube_node("True", "2026-12-06T19:59:00Z", "v1.36.3"),
                &w,
                enrolled
            ),
            [
                "the Node cp-2 has not reported since the enrollment",
                "the Node cp-2 runs kubelet v1.36.3"
            ]
        );
        assert_eq!(
            node_missing(
                &kube_node("Unknown", "2026-12-06T20:00:30Z", "v1.37.2"),
                &w,
                enrolled
            ),
            ["the Node cp-2 is Ready=Unknown"]
        );
        assert_eq!(
            node_missing(b"{\"status\": {}}", &w, enrolled),
            [
                "the Node cp-2 has no Ready condition",
                "the Node cp-2 reports no kubelet version"
            ]
        );
        assert!(node_missing(b"<html>", &w, enrolled)[0].contains("not JSON"));
    }
}
