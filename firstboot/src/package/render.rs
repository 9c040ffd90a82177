//! Spec strings are tera templates. Variables:
//!
//! | variable | value |
//! |---|---|
//! | `node.name`, `node.ip`, `node.ips` | the node's name, first address, all addresses (a list) |
//! | `cluster.name`, `cluster.zone` | the cluster's name and its DNS zone (`<name>.<domain>`, docs/dns.md; from the node's seed) |
//! | `settings.NAME` | the package's settings after `--set` |
//! | `dir` | the package's directory on the node (`packages/NAME/`) |
//! | `pki` | the node's `pki/` |
//! | `ca.kubernetes`, `ca.front_proxy`, `ca.etcd` | the CA certificates' paths |
//! | `etcd.endpoints` | the etcd client URLs, comma-separated |
//! | `etcd.local` | this node's own etcd member's client URL (control planes only) |
//! | `version` | the package's version |
//!
//! Filter `first_ip`: the first address of a CIDR (`10.96.0.0/12` ->
//! `10.96.0.1`), the Kubernetes service IP.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use anyhow::Context as _;
use globular_cluster::registry;
use globular_cluster::seed::Seed;
use serde_json::{json, Value};

use super::spec::CaName;
use crate::layout::{Layout, NodeConfig};

/// What templates see.
#[derive(Debug, Clone)]
pub struct Facts {
    context: tera::Context,
    /// The node's first address (`node.ip`).
    ip: Option<String>,
}

impl Facts {
    pub fn new(
        layout: &Layout,
        node: &NodeConfig,
        package: &str,
        version: &str,
        settings: &BTreeMap<String, String>,
    ) -> anyhow::Result<Facts> {
        let ips: Vec<String> = node
            .addresses
            .iter()
            .map(|a| a.split('/').next().unwrap_or(a).to_owned())
            .collect();
        let ca = |name: CaName| layout.pki().join(format!("{}.crt", name.file()));
        let mut cluster = json!({"name": node.cluster_name});
        // The zone is the seed's (a node without one, as in unit tests, has
        // no `cluster.zone`: a template that uses it fails naming its field).
        if let Ok(text) = std::fs::read_to_string(layout.seed()) {
            let seed = Seed::parse(&text, &layout.seed().display().to_string())?;
            cluster["zone"] = Value::String(registry::zone_name(
                &seed.cluster.name,
                &seed.cluster.domain,
            ));
        }
        let value = json!({
            "node": {"name": node.name, "ip": ips.first(), "ips": ips},
            "cluster": cluster,
            "settings": settings,
            "dir": layout.package_dir(package),
            "pki": layout.pki(),
            "ca": {
                "kubernetes": ca(CaName::Kubernetes),
                "front_proxy": ca(CaName::FrontProxy),
                "etcd": ca(CaName::Etcd),
            },
            "etcd": etcd_facts(node, &ips),
            "version": version,
        });
        let context = tera::Context::from_value(value).context("building the template context")?;
        Ok(Facts {
            context,
            ip: ips.first().cloned(),
        })
    }

    /// The node's first address, without its prefix length.
    pub fn node_ip(&self) -> Option<&str> {
        self.ip.as_deref()
    }

    /// Renders one template; `what` names it in errors (`components[0].args[3]`).
    pub fn render(&self, template: &str, what: &str) -> anyhow::Result<String> {
        let mut tera = tera::Tera::default();
        tera.register_filter("first_ip", first_ip);
        tera.render_str(template, &self.context)
            .map_err(|e| anyhow::anyhow!("{what}: {}", chain(&e)))
    }

    /// Renders a list of templates, each possibly several comma-separated
    /// values; empty values are dropped.
    pub fn render_list(&self, templates: &[String], what: &str) -> anyhow::Result<Vec<String>> {
        let mut out = Vec::new();
        for (i, t) in templates.iter().enumerate() {
            let text = self.render(t, &format!("{what}[{i}]"))?;
            out.extend(
                text.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned),
            );
        }
        Ok(out)
    }
}

/// `etcd.endpoints`, and `etcd.local` where one endpoint is on one of this
/// node's addresses (a control plane's own member; a worker has none, and
/// a template that asks for it fails with the field's name).
fn etcd_facts(node: &NodeConfig, ips: &[String]) -> Value {
    let mut etcd = json!({"endpoints": node.etcd_endpoints.join(",")});
    let local = node
        .etcd_endpoints
        .iter()
        .find(|url| url_host(url).is_some_and(|host| ips.iter().any(|ip| ip == host)));
    if let Some(local) = local {
        etcd["local"] = Value::String(local.clone());
    }
    etcd
}

/// The host of `scheme://host:port/...` (an IPv6 one without brackets).
fn url_host(url: &str) -> Option<&str> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split('/').next()?;
    match authority.strip_prefix('[') {
        Some(v6) => v6.split_once(']').map(|(host, _)| host),
        None => Some(
            authority
                .rsplit_once(':')
                .map_or(authority, |(host, _)| host),
        ),
    }
}

/// A tera error with its causes (tera puts the useful part in `source`).
fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

fn first_ip(value: &Value, _: &HashMap<String, Value>) -> tera::Result<Value> {
    let text = value
        .as_str()
        .ok_or_else(|| tera::Error::msg("first_ip takes a CIDR string"))?;
    let (net, _) = text
        .split_once('/')
        .ok_or_else(|| tera::Error::msg(format!("first_ip: {text:?} is not a CIDR")))?;
    let ip: IpAddr = net
        .parse()
        .map_err(|_| tera::Error::msg(format!("first_ip: {text:?} is not a CIDR")))?;
    let next = match ip {
        IpAddr::V4(v4) => IpAddr::from((u32::from(v4).wrapping_add(1)).to_be_bytes()),
        IpAddr::V6(v6) => IpAddr::from((u128::from(v6).wrapping_add(1)).to_be_bytes()),
    };
    Ok(Value::String(next.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use globular_cluster::Role;

    fn facts() -> Facts {
        facts_of(node())
    }

    fn node() -> NodeConfig {
        NodeConfig {
            name: "cp1".into(),
            role: Role::ControlPlane,
            cluster_name: "c".into(),
            addresses: vec!["10.0.0.1/24".into(), "10.0.1.1/24".into()],
            api_listen: None,
            // Its own member second: `etcd.local` goes by address.
            etcd_endpoints: vec![
                "https://10.0.0.2:2379".into(),
                "https://10.0.0.1:2379".into(),
            ],
            api_endpoints: vec![],
            image_version: "0".into(),
            certificate_lifetime: globular_cluster::pki::default_lifetime_seconds(),
        }
    }

    fn facts_of(node: NodeConfig) -> Facts {
        let settings = BTreeMap::from([("service_cidr".to_owned(), "10.96.0.0/12".to_owned())]);
        Facts::new(
            &Layout::new("/var/lib/globular"),
            &node,
            "k",
            "1.37.2",
            &settings,
        )
        .unwrap()
    }

    #[test]
    fn templates_see_the_node_and_the_settings() {
        let f = facts();
        assert_eq!(
            f.render("{{ settings.service_cidr | first_ip }}", "x")
                .unwrap(),
            "10.96.0.1"
        );
        assert_eq!(
            f.render_list(
                &["{{ node.ips | join(sep=',') }}".into(), "127.0.0.1".into()],
                "ips"
            )
            .unwrap(),
            ["10.0.0.1", "10.0.1.1", "127.0.0.1"]
        );
        assert_eq!(
            f.render("{{ etcd.endpoints }}", "x").unwrap(),
            "https://10.0.0.2:2379,https://10.0.0.1:2379"
        );
        assert_eq!(
            f.render("{{ etcd.local }}", "x").unwrap(),
            "https://10.0.0.1:2379"
        );
        assert_eq!(
            f.render("{{ dir }}/a.crt {{ ca.front_proxy }}", "x")
                .unwrap(),
            "/var/lib/globular/packages/k/a.crt /var/lib/globular/pki/front-proxy-ca.crt"
        );
        let err = f
            .render("{{ settings.nope }}", "components[0].args[2]")
            .unwrap_err();
        assert!(
            format!("{err}").starts_with("components[0].args[2]"),
            "{err}"
        );
    }

    #[test]
    fn a_node_without_its_own_etcd_member_has_no_local_endpoint() {
        let mut worker = node();
        worker.role = Role::Worker;
        worker.etcd_endpoints = vec![
            "https://10.0.0.2:2379".into(),
            "https://[fd00::2]:2379".into(),
        ];
        let err = facts_of(worker)
            .render("--etcd-servers={{ etcd.local }}", "components[0].args[4]")
            .unwrap_err();
        let err = format!("{err}");
        assert!(err.starts_with("components[0].args[4]"), "{err}");
        assert!(err.contains("etcd.local"), "{err}");
    }

    #[test]
    fn url_hosts() {
        assert_eq!(url_host("https://10.0.0.1:2379"), Some("10.0.0.1"));
        assert_eq!(url_host("https://[fd00::1]:2379/x"), Some("fd00::1"));
        assert_eq!(url_host("https://cp1"), Some("cp1"));
        assert_eq!(url_host("10.0.0.1:2379"), None);
    }
}
