//! `globular pod-routes`: routes to the other nodes' pod ranges, so that a
//! pod's address is reachable from every node (a Service's backend on
//! another worker, a pod talking to a pod). Each Node has a range
//! (`spec.podCIDR`, given by the controller manager) behind its CNI
//! bridge; this node routes each other range via that node's
//! `InternalIP`, as flannel's host-gw does on one L2 network.
//!
//! A component of the Kubernetes node package: it reads the Nodes through
//! the API servers with kube-proxy's identity (Kubernetes lets
//! `system:kube-proxy` list Nodes) every few seconds, and makes the routes
//! it owns (`proto` [`PROTOCOL`]) exactly those, adding, replacing and
//! deleting with `ip route`. systemd-networkd may drop routes it did not
//! make when it reconfigures a link; the next round puts them back.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context as _};
use globular_task::Task;
use serde::Deserialize;

/// The routing protocol number marking the routes this owns (`ip route
/// ... proto 77`; numbers below 256 that iproute2 names nothing).
pub const PROTOCOL: &str = "77";

/// A route to a node's pod range.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Route {
    /// The range, as `ip` prints it (`10.244.1.0/24`).
    pub cidr: String,
    pub via: IpAddr,
}

#[derive(Debug, Deserialize)]
struct NodeList {
    #[serde(default)]
    items: Vec<Node>,
}

#[derive(Debug, Deserialize)]
struct Node {
    metadata: Metadata,
    #[serde(default)]
    spec: NodeSpec,
    #[serde(default)]
    status: NodeStatus,
}

#[derive(Debug, Deserialize)]
struct Metadata {
    name: String,
}

#[derive(Debug, Default, Deserialize)]
struct NodeSpec {
    #[serde(default, rename = "podCIDRs")]
    pod_cidrs: Vec<String>,
    #[serde(default, rename = "podCIDR")]
    pod_cidr: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct NodeStatus {
    #[serde(default)]
    addresses: Vec<Address>,
}

#[derive(Debug, Deserialize)]
struct Address {
    #[serde(rename = "type")]
    kind: String,
    address: String,
}

/// The routes this node (`own`) wants from a Node list (the API's JSON):
/// every other Node's IPv4 pod ranges via its first IPv4 `InternalIP`.
/// Nodes without a range or an address yet are left out.
pub fn wanted(nodes_json: &[u8], own: &str) -> anyhow::Result<Vec<Route>> {
    let list: NodeList = serde_json::from_slice(nodes_json).context("reading the Node list")?;
    let mut out = Vec::new();
    for node in list.items {
        if node.metadata.name == own {
            continue;
        }
        let via = node
            .status
            .addresses
            .iter()
            .filter(|a| a.kind == "InternalIP")
            .filter_map(|a| a.address.parse::<IpAddr>().ok())
            .find(IpAddr::is_ipv4);
        let Some(via) = via else { continue };
        let mut cidrs = node.spec.pod_cidrs;
        if cidrs.is_empty() {
            cidrs.extend(node.spec.pod_cidr);
        }
        for cidr in cidrs {
            // Only well-formed IPv4 ranges reach `ip`.
            let Some((net, len)) = cidr.split_once('/') else {
                continue;
            };
            let ok = net.parse::<std::net::Ipv4Addr>().is_ok()
                && len.parse::<u8>().is_ok_and(|l| l <= 32);
            if ok {
                out.push(Route { cidr, via });
            }
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

#[derive(Debug, Deserialize)]
struct IpRoute {
    dst: String,
    #[serde(default)]
    gateway: Option<String>,
}

/// The routes of [`PROTOCOL`] in `ip -j route show proto 77`'s output.
pub fn parse_current(json: &str) -> anyhow::Result<Vec<Route>> {
    let text = json.trim();
    if text.is_empty() {
        return Ok(Vec::new());
    }
    let routes: Vec<IpRoute> = serde_json::from_str(text).context("reading `ip -j route`")?;
    let mut out: Vec<Route> = routes
        .into_iter()
        .filter_map(|r| {
            Some(Route {
                via: r.gateway?.parse().ok()?,
                cidr: r.dst,
            })
        })
        .collect();
    out.sort();
    Ok(out)
}

/// What to change: routes to add or replace, and ranges to delete.
pub fn plan(current: &[Route], wanted: &[Route]) -> (Vec<Route>, Vec<String>) {
    let now: BTreeMap<&str, IpAddr> = current.iter().map(|r| (r.cidr.as_str(), r.via)).collect();
    let set: Vec<Route> = wanted
        .iter()
        .filter(|r| now.get(r.cidr.as_str()) != Some(&r.via))
        .cloned()
        .collect();
    let delete = current
        .iter()
        .filter(|r| !wanted.iter().any(|w| w.cidr == r.cidr))
        .map(|r| r.cidr.clone())
        .collect();
    (set, delete)
}

fn ip(what: &str, args: &[&str]) -> anyhow::Result<String> {
    Ok(Task::new(what.to_owned(), "ip")
        .package("iproute2")
        .args(args)
        .read_string()?)
}

/// One round: reads the Nodes and makes the routes match; what changed.
async fn round(http: &reqwest::Client, server: &str, own: &str) -> anyhow::Result<Vec<String>> {
    let url = format!("{server}/api/v1/nodes");
    let resp = http
        .get(&url)
        .timeout(Duration::from_secs(20))
        .send()
        .await
        .with_context(|| format!("GET {url}"))?;
    let status = resp.status();
    let body = resp.bytes().await.with_context(|| format!("GET {url}"))?;
    if !status.is_success() {
        bail!("GET {url}: {status}: {}", String::from_utf8_lossy(&body));
    }
    let wanted = wanted(&body, own)?;
    let current = parse_current(&ip(
        "listing the pod routes",
        &["-j", "route", "show", "proto", PROTOCOL],
    )?)?;
    let (set, delete) = plan(&current, &wanted);
    let mut changes = Vec::new();
    for r in set {
        let via = r.via.to_string();
        ip(
            "setting a pod route",
            &["route", "replace", &r.cidr, "via", &via, "proto", PROTOCOL],
        )?;
        changes.push(format!("route {} via {via}", r.cidr));
    }
    for cidr in delete {
        ip(
            "deleting a pod route",
            &["route", "del", &cidr, "proto", PROTOCOL],
        )?;
        changes.push(format!("no route {cidr}"));
    }
    Ok(changes)
}

/// Runs rounds every `interval` until killed. `kubeconfig` is one the
/// package wrote (server, CA, certificate and key files; the files are read
/// again when they are renewed).
pub async fn run(kubeconfig: &Path, own: &str, interval: Duration) -> anyhow::Result<()> {
    let config = crate::package::KubeconfigFiles::load(kubeconfig)?;
    let ca = std::fs::read_to_string(&config.ca)
        .with_context(|| format!("reading {}", config.ca.display()))?;
    let tls = globular_substrate::tls::client_config_from_files(&ca, &config.cert, &config.key)?;
    let http = globular_substrate::tls::http_client(tls)?;
    tracing::info!(
        "pod routes of {own}: Nodes from {} every {} s",
        config.server,
        interval.as_secs()
    );
    loop {
        match round(&http, &config.server, own).await {
            Ok(changes) => {
                for c in changes {
                    tracing::info!("{c}");
                }
            }
            Err(err) => tracing::warn!("pod routes: {err:#}"),
        }
        tokio::time::sleep(interval).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NODES: &str = r#"{"items": [
        {"metadata": {"name": "w1"}, "spec": {"podCIDR": "10.244.0.0/24", "podCIDRs": ["10.244.0.0/24"]},
         "status": {"addresses": [{"type": "InternalIP", "address": "10.77.0.21"}, {"type": "Hostname", "address": "w1"}]}},
        {"metadata": {"name": "w2"}, "spec": {"podCIDR": "10.244.1.0/24"},
         "status": {"addresses": [{"type": "InternalIP", "address": "fd00::2"}, {"type": "InternalIP", "address": "10.77.0.22"}]}},
        {"metadata": {"name": "w3"}, "spec": {}, "status": {"addresses": [{"type": "InternalIP", "address": "10.77.0.23"}]}},
        {"metadata": {"name": "w4"}, "spec": {"podCIDRs": ["10.244.3.0/24; reboot"]},
         "status": {"addresses": [{"type": "InternalIP", "address": "10.77.0.24"}]}},
        {"metadata": {"name": "cp1"}, "spec": {"podCIDR": "10.244.2.0/24"}, "status": {}}
    ]}"#;

    fn route(cidr: &str, via: &str) -> Route {
        Route {
            cidr: cidr.into(),
            via: via.parse().unwrap(),
        }
    }

    /// Every other node with a range and an IPv4 address; not this node,
    /// not one without a range or an address, and no range that is not one.
    #[test]
    fn each_other_nodes_range_via_its_address() {
        assert_eq!(
            wanted(NODES.as_bytes(), "w1").unwrap(),
            [route("10.244.1.0/24", "10.77.0.22")]
        );
        assert_eq!(
            wanted(NODES.as_bytes(), "w2").unwrap(),
            [route("10.244.0.0/24", "10.77.0.21")]
        );
        assert!(wanted(b"{}", "w1").unwrap().is_empty());
        assert!(wanted(b"not json", "w1").is_err());
    }

    #[test]
    fn routes_are_added_moved_and_removed() {
        let current = parse_current(
            r#"[{"dst":"10.244.1.0/24","gateway":"10.77.0.22","dev":"enp0s1","protocol":"77","flags":[]},
                {"dst":"10.244.5.0/24","gateway":"10.77.0.25","dev":"enp0s1","protocol":"77","flags":[]}]"#,
        )
        .unwrap();
        let wanted = [
            route("10.244.0.0/24", "10.77.0.21"),
            route("10.244.1.0/24", "10.77.0.99"),
        ];
        let (set, delete) = plan(&current, &wanted);
        assert_eq!(set, wanted);
        assert_eq!(delete, ["10.244.5.0/24"]);
        let (set, delete) = plan(&wanted, &wanted);
        assert!(set.is_empty() && delete.is_empty());
        assert!(parse_current("").unwrap().is_empty());
        assert!(parse_current("[]").unwrap().is_empty());
    }
}
