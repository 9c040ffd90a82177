//! `globular kubeconfig`: a short-lived administrator kubeconfig, made on
//! a control plane (which holds Kubernetes' CA), for `kubectl` there or
//! anywhere that reaches the API server. The certificate says
//! `CN=globular-admin`, `O=system:masters`; its key is made here and
//! printed with it (embedded, so the file works on another machine). The
//! API server is this node's `kubernetes.KubernetesService` in the
//! registry, unless `--server` says otherwise.

use anyhow::{bail, Context as _};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use globular_cluster::pki::{Ca, LeafSpec};

use crate::layout::Layout;
use crate::package::spec::CaName;
use crate::runtime::{self, Threads};

/// The service the Kubernetes package registers.
pub const KUBERNETES_SERVICE: &str = "kubernetes.KubernetesService";
/// The longest lifetime `--ttl` accepts.
pub const MAX_TTL: time::Duration = time::Duration::hours(24);

/// The kubeconfig text.
pub fn admin(
    layout: &Layout,
    ttl: time::Duration,
    server: Option<String>,
) -> anyhow::Result<String> {
    if ttl > MAX_TTL || ttl <= time::Duration::ZERO {
        bail!("--ttl: an administrator kubeconfig lives at most 24h");
    }
    let node = layout.load_node_config()?;
    let ca_cert = layout.kubernetes_secret(CaName::Kubernetes.file(), "crt");
    let ca_key = layout.kubernetes_secret(CaName::Kubernetes.file(), "key");
    if !ca_key.exists() {
        bail!(
            "{} does not exist: run this on a control-plane node of a cluster with Kubernetes",
            ca_key.display()
        );
    }
    let ca_pem = layout.read(&ca_cert)?;
    let ca = Ca::from_pem(&ca_pem, &layout.read(&ca_key)?).context("loading Kubernetes' CA")?;
    let server = match server {
        Some(server) => server,
        None => {
            let client = crate::node_cli::client(layout)?;
            let rt = runtime::build(Threads::One)?;
            let list = rt.block_on(client.services(Some(KUBERNETES_SERVICE)))?;
            let own = list
                .services
                .iter()
                .find(|s| s.node == node.name)
                .with_context(|| {
                    format!(
                        "{KUBERNETES_SERVICE} is not registered for {} (apply the Kubernetes \
                         package first, or give --server)",
                        node.name
                    )
                })?;
            let ip: std::net::IpAddr = own
                .address
                .parse()
                .with_context(|| format!("{KUBERNETES_SERVICE}: address {:?}", own.address))?;
            format!(
                "https://{}",
                globular_cluster::seed::host_port(ip, own.port)
            )
        }
    };
    let (issued, key) = ca.issue_with_new_key(&LeafSpec {
        common_name: "globular-admin".into(),
        group: Some("system:masters".into()),
        client: true,
        validity: Some(ttl),
        ..LeafSpec::default()
    })?;
    let doc = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": node.cluster_name, "cluster": {
            "server": server,
            "certificate-authority-data": B64.encode(&ca_pem),
        }}],
        "users": [{"name": "globular-admin", "user": {
            "client-certificate-data": B64.encode(&issued.cert_pem),
            "client-key-data": B64.encode(&key),
        }}],
        "contexts": [{"name": "globular-admin", "context": {
            "cluster": node.cluster_name, "user": "globular-admin",
        }}],
        "current-context": "globular-admin",
    });
    Ok(serde_yaml_ng::to_string(&doc)?)
}
