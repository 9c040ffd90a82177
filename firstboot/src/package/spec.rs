//! A package spec: the YAML file `globular apply` makes a node match.
//!
//! ```yaml
//! apiVersion: globular/v1
//! kind: Package
//! name: kubernetes-control-plane
//! version: "1.37.2"
//! role: control-plane            # the nodes it is for
//! settings: {secure_port: 6443}   # defaults a user may override (--set)
//! etcd: {user: U, role: R, prefix: /registry/}   # an etcd user limited to a prefix
//! certificates:                   # keys made on the node, files DIR/NAME.{crt,key}
//!   - {name: apiserver, ca: kubernetes, common_name: kube-apiserver,
//!      usage: [server], dns: [...], ips: [...]}
//!   - {name: kubelet, ca: kubernetes, issuer: substrate,   # signed by the API
//!      common_name: "system:node:{{ node.name }}", group: system:nodes, usage: [client]}
//! kubeconfigs:                    # DIR/NAME.kubeconfig
//!   - {name: scheduler, certificate: scheduler, server: "https://127.0.0.1:6443"}
//! components:                     # long-running programs (absolute paths)
//!   - {name: kube-apiserver, program: "{{ settings.bin_dir }}/kube-apiserver", args: [...]}
//! health:                         # what says the package works
//!   - {name: apiserver, url: "https://127.0.0.1:6443/readyz", ca: kubernetes, expect: ok}
//! register:                       # registry entries for this node
//!   - {service: kubernetes.KubernetesService, port: "6443", protocol: tcp}
//! ```
//!
//! Strings are tera templates (`render.rs` lists the variables). Errors
//! name the file and the field.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context as _};
use globular_cluster::Role;
use serde::Deserialize;

/// The format this code reads.
pub const API_VERSION: &str = "globular/v1";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    #[serde(rename = "apiVersion")]
    pub api_version: String,
    pub kind: String,
    pub name: String,
    pub version: String,
    pub role: Role,
    #[serde(default)]
    pub settings: BTreeMap<String, serde_yaml_ng::Value>,
    #[serde(default)]
    pub etcd: Option<EtcdAccess>,
    #[serde(default)]
    pub certificates: Vec<Certificate>,
    #[serde(default)]
    pub kubeconfigs: Vec<Kubeconfig>,
    #[serde(default)]
    pub files: Vec<File>,
    #[serde(default)]
    pub manifests: Option<Manifests>,
    #[serde(default)]
    pub components: Vec<Component>,
    #[serde(default)]
    pub health: Vec<Health>,
    #[serde(default)]
    pub register: Vec<Registration>,
}

/// An etcd user that may read and write one key prefix (authenticated by
/// a certificate the package issues from the etcd CA, named after it).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EtcdAccess {
    pub user: String,
    pub role: String,
    pub prefix: String,
}

/// Which CA signs a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CaName {
    /// Kubernetes' client CA (an intermediate of the cluster CA).
    Kubernetes,
    /// Kubernetes' front-proxy CA (an intermediate of the cluster CA).
    FrontProxy,
    /// The etcd CA.
    Etcd,
}

impl CaName {
    /// The file name of the CA under the node's `pki/` (`.crt`, `.key`).
    pub fn file(self) -> &'static str {
        match self {
            CaName::Kubernetes => "kubernetes-ca",
            CaName::FrontProxy => "front-proxy-ca",
            CaName::Etcd => "etcd-ca",
        }
    }
}

/// Who signs a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Issuer {
    /// This node, with the CA's key from its seed (control planes).
    #[default]
    Node,
    /// The substrate API (`POST /v1/kubernetes/node-certificate`), for a
    /// node without Kubernetes' CA key: only the node's own Kubernetes
    /// identity, `system:node:<name>` in `system:nodes`, with names its node
    /// certificate carries.
    Substrate,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Usage {
    Server,
    Client,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Certificate {
    pub name: String,
    pub ca: CaName,
    #[serde(default)]
    pub issuer: Issuer,
    pub common_name: String,
    /// The subject organization (Kubernetes' group).
    #[serde(default)]
    pub group: Option<String>,
    pub usage: Vec<Usage>,
    #[serde(default)]
    pub dns: Vec<String>,
    /// IP addresses; an entry may render to several, comma-separated.
    #[serde(default)]
    pub ips: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Kubeconfig {
    pub name: String,
    pub certificate: String,
    pub server: String,
}

/// A file the package writes into its directory (`DIR/NAME`, 0600): a
/// component's configuration. `content` is a template.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct File {
    pub name: String,
    pub content: String,
}

/// Kubernetes objects applied once the health checks pass
/// (`manifests.rs`), through `server` as an administrator made on the node.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifests {
    pub server: String,
    pub objects: Vec<File>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Component {
    pub name: String,
    pub program: String,
    #[serde(default)]
    pub args: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Health {
    pub name: String,
    /// An `https://` URL, or an `http://` one on a loopback address (a
    /// component's local health port, the kubelet's 10248).
    pub url: String,
    /// The CA that signed the server's certificate (`https://` only).
    #[serde(default)]
    pub ca: Option<CaName>,
    /// The body the check expects (trimmed); without it any 2xx answer
    /// passes (kube-proxy's `/healthz` answers JSON with a time in it).
    #[serde(default)]
    pub expect: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Registration {
    pub service: String,
    /// A template rendering to a port number.
    pub port: String,
    #[serde(default = "default_protocol")]
    pub protocol: String,
}

fn default_protocol() -> String {
    "tcp".into()
}

/// Whether `rest` (a URL after `http://`) starts with a loopback host:
/// 127.0.0.1, \[::1\] or localhost.
fn loopback_authority(rest: &str) -> bool {
    let authority = rest.split('/').next().unwrap_or_default();
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => authority.split(':').next().unwrap_or_default(),
    };
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// A name that is safe as a file name and a systemd instance name: a
/// lowercase DNS label, like a node's.
fn valid_name(name: &str) -> bool {
    globular_cluster::valid_node_name(name)
}

impl Spec {
    /// Reads and checks the spec at `path`.
    pub fn load(path: &Path) -> anyhow::Result<Spec> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Spec::parse(&text, &path.display().to_string())
    }

    /// Parses and checks a spec; errors start with `origin`.
    pub fn parse(text: &str, origin: &str) -> anyhow::Result<Spec> {
        let spec: Spec = serde_yaml_ng::from_str(text).with_context(|| origin.to_owned())?;
        spec.check().map_err(|e| anyhow::anyhow!("{origin}: {e}"))?;
        Ok(spec)
    }

    fn check(&self) -> anyhow::Result<()> {
        if self.api_version != API_VERSION {
            bail!(
                "field `apiVersion`: {:?}, expected {API_VERSION:?}",
                self.api_version
            );
        }
        if self.kind != "Package" {
            bail!("field `kind`: {:?}, expected \"Package\"", self.kind);
        }
        if !valid_name(&self.name) {
            bail!(
                "field `name`: {:?} is not lowercase letters, digits and dashes",
                self.name
            );
        }
        for (key, value) in &self.settings {
            if !key
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
            {
                bail!("field `settings.{key}`: names are lowercase letters, digits and `_`");
            }
            if scalar(value).is_none() {
                bail!("field `settings.{key}`: a setting is a string, a number or a boolean");
            }
        }
        let mut names = Vec::new();
        for (i, c) in self.certificates.iter().enumerate() {
            if !valid_name(&c.name) || names.contains(&c.name.as_str()) {
                bail!(
                    "field `certificates[{i}].name`: {:?} is not a new valid name",
                    c.name
                );
            }
            if c.usage.is_empty() {
                bail!("field `certificates[{i}].usage`: say server, client or both");
            }
            if c.issuer == Issuer::Substrate && c.ca != CaName::Kubernetes {
                bail!(
                    "field `certificates[{i}].issuer`: the substrate signs with Kubernetes' CA only (ca: kubernetes)"
                );
            }
            names.push(&c.name);
        }
        for (i, k) in self.kubeconfigs.iter().enumerate() {
            if !valid_name(&k.name) {
                bail!(
                    "field `kubeconfigs[{i}].name`: {:?} is not a valid name",
                    k.name
                );
            }
            if !names.contains(&k.certificate.as_str()) {
                bail!(
                    "field `kubeconfigs[{i}].certificate`: no certificate is named {:?}",
                    k.certificate
                );
            }
        }
        let mut components: Vec<&str> = Vec::new();
        for (i, c) in self.components.iter().enumerate() {
            if !valid_name(&c.name) || components.contains(&c.name.as_str()) {
                bail!(
                    "field `components[{i}].name`: {:?} is not a new valid name",
                    c.name
                );
            }
            components.push(&c.name);
        }
        for (i, k) in self.files.iter().enumerate() {
            let taken = names.contains(&k.name.as_str())
                || self.kubeconfigs.iter().any(|c| c.name == k.name);
            let name_ok = !k.name.is_empty()
                && !k.name.starts_with('.')
                && k.name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b));
            if !name_ok || taken {
                bail!(
                    "field `files[{i}].name`: {:?} is not a new file name (lowercase letters, digits, `-`, `_`, `.`)",
                    k.name
                );
            }
        }
        if let Some(manifests) = &self.manifests {
            if self.role != Role::ControlPlane {
                bail!(
                    "field `manifests`: only a control plane holds the CA an administrator needs"
                );
            }
            let mut seen = Vec::new();
            for (i, o) in manifests.objects.iter().enumerate() {
                if !valid_name(&o.name) || seen.contains(&o.name.as_str()) {
                    bail!(
                        "field `manifests.objects[{i}].name`: {:?} is not a new valid name",
                        o.name
                    );
                }
                seen.push(&o.name);
            }
        }
        for (i, h) in self.health.iter().enumerate() {
            let plain = h.url.strip_prefix("http://");
            if !(h.url.starts_with("https://") || plain.is_some_and(loopback_authority)) {
                bail!(
                    "field `health[{i}].url`: {:?} is not an https:// URL or an http:// one on a loopback address",
                    h.url
                );
            }
            match (plain, h.ca) {
                (None, None) => {
                    bail!("field `health[{i}].ca`: an https:// check names the CA of its server")
                }
                (Some(_), Some(_)) => {
                    bail!("field `health[{i}].ca`: a plain http:// check has no CA")
                }
                _ => {}
            }
        }
        if let Some(etcd) = &self.etcd {
            if !etcd.prefix.starts_with('/') || !etcd.prefix.ends_with('/') || etcd.prefix == "/" {
                bail!(
                    "field `etcd.prefix`: {:?} is not a key prefix like /registry/",
                    etcd.prefix
                );
            }
            if etcd.prefix.starts_with(globular_cluster::registry::PREFIX) {
                bail!(
                    "field `etcd.prefix`: {:?} is the substrate's own",
                    etcd.prefix
                );
            }
            let issued = self
                .certificates
                .iter()
                .any(|c| c.ca == CaName::Etcd && c.common_name == etcd.user);
            if !issued {
                bail!(
                    "field `etcd.user`: no certificate from the etcd CA has the common name {:?}",
                    etcd.user
                );
            }
        }
        Ok(())
    }

    /// The settings with `overrides` (`NAME=VALUE`) applied; an override
    /// of a setting the spec does not have is an error.
    pub fn settings_with(&self, overrides: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
        let mut out: BTreeMap<String, String> = self
            .settings
            .iter()
            .map(|(k, v)| (k.clone(), scalar(v).unwrap_or_default()))
            .collect();
        for o in overrides {
            let (key, value) = o
                .split_once('=')
                .with_context(|| format!("--set {o:?}: expected NAME=VALUE"))?;
            match out.get_mut(key) {
                Some(slot) => *slot = value.to_owned(),
                None => bail!(
                    "--set {key}: package {} has no such setting (it has: {})",
                    self.name,
                    out.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            }
        }
        Ok(out)
    }
}

fn scalar(value: &serde_yaml_ng::Value) -> Option<String> {
    match value {
        serde_yaml_ng::Value::String(s) => Some(s.clone()),
        serde_yaml_ng::Value::Number(n) => Some(n.to_string()),
        serde_yaml_ng::Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str =
        "apiVersion: globular/v1\nkind: Package\nname: p\nversion: '1'\nrole: control-plane\n";

    #[test]
    fn bad_specs_name_the_field() {
        let cases = [
            (MINIMAL.replace("globular/v1", "v2"), "apiVersion"),
            (MINIMAL.replace("name: p", "name: P!"), "name"),
            (format!("{MINIMAL}colour: blue\n"), "colour"),
            (format!("{MINIMAL}settings: {{a: [1]}}\n"), "settings.a"),
            (
                format!("{MINIMAL}kubeconfigs: [{{name: k, certificate: nope, server: x}}]\n"),
                "kubeconfigs[0].certificate",
            ),
            (
                format!(
                    "{MINIMAL}components: [{{name: c, program: /p}}, {{name: c, program: /q}}]\n"
                ),
                "components[1].name",
            ),
            (
                format!("{MINIMAL}etcd: {{user: u, role: r, prefix: /globular/}}\n"),
                "etcd.prefix",
            ),
            (
                format!("{MINIMAL}etcd: {{user: u, role: r, prefix: /registry/}}\n"),
                "etcd.user",
            ),
            (
                format!(
                    "{MINIMAL}health: [{{name: h, url: 'http://x', ca: kubernetes, expect: ok}}]\n"
                ),
                "health[0].url",
            ),
            (
                format!("{MINIMAL}health: [{{name: h, url: 'http://10.0.0.1:10248/healthz', expect: ok}}]\n"),
                "health[0].url",
            ),
            (
                format!("{MINIMAL}health: [{{name: h, url: 'http://127.0.0.1.example:1/', expect: ok}}]\n"),
                "health[0].url",
            ),
            (
                format!("{MINIMAL}health: [{{name: h, url: 'https://127.0.0.1/', expect: ok}}]\n"),
                "health[0].ca",
            ),
            (
                format!("{MINIMAL}health: [{{name: h, url: 'http://127.0.0.1:1/', ca: etcd, expect: ok}}]\n"),
                "health[0].ca",
            ),
            (
                format!("{MINIMAL}files: [{{name: ../x, content: y}}]\n"),
                "files[0].name",
            ),
            (
                format!("{MINIMAL}manifests: {{server: s, objects: [{{name: a, content: x}}, {{name: a, content: y}}]}}\n"),
                "manifests.objects[1].name",
            ),
            (
                format!("{}manifests: {{server: s, objects: []}}\n", MINIMAL.replace("control-plane", "worker")),
                "field `manifests`",
            ),
            (
                format!(
                    "{MINIMAL}certificates: [{{name: c, ca: etcd, issuer: substrate, common_name: x, usage: [client]}}]\n"
                ),
                "certificates[0].issuer",
            ),
            (
                format!(
                    "{MINIMAL}certificates: [{{name: c, ca: kubernetes, issuer: anyone, common_name: x, usage: [client]}}]\n"
                ),
                "issuer",
            ),
        ];
        for (text, field) in cases {
            let err = format!("{:#}", Spec::parse(&text, "p.yaml").unwrap_err());
            assert!(err.starts_with("p.yaml"), "{err}");
            assert!(err.contains(field), "expected {field:?} in {err:?}");
        }
    }

    #[test]
    fn overrides_replace_known_settings_only() {
        let spec = Spec::parse(
            &format!("{MINIMAL}settings: {{port: 6443, on: true}}\n"),
            "p",
        )
        .unwrap();
        let s = spec.settings_with(&["port=7443".into()]).unwrap();
        assert_eq!(s["port"], "7443");
        assert_eq!(s["on"], "true");
        let err = spec
            .settings_with(&["nope=1".into()])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("no such setting") && err.contains("port"),
            "{err}"
        );
        assert!(spec.settings_with(&["port".into()]).is_err());
    }
}
