//! The substrate's etcd client on a control-plane node, and turning etcd's
//! auth on (`globular_cluster::etcd_auth` says who may do what).

use anyhow::Context as _;
use globular_cluster::etcd_auth::{self, ROOT_ROLE, ROOT_USER, SUBSTRATE_USER};
use globular_substrate::etcd::Etcd;

use crate::layout::Layout;

/// etcd at `endpoints` as the substrate's services reach it: the etcd CA,
/// the substrate's client certificate (read again when it is renewed),
/// signed in as `globular-substrate`.
pub fn substrate(layout: &Layout, endpoints: Vec<String>) -> anyhow::Result<Etcd> {
    let password = layout.read(&layout.etcd_password())?;
    Ok(Etcd::from_files(
        endpoints,
        &layout.read(&layout.etcd_ca_cert())?,
        &layout.etcd_cert("client"),
        &layout.etcd_key("client"),
    )?
    .with_user(SUBSTRATE_USER, password.trim()))
}

/// The substrate's etcd password, derived from the etcd CA key.
pub fn substrate_password(etcd_ca_key_pem: &str) -> anyhow::Result<String> {
    etcd_auth::password(etcd_ca_key_pem, SUBSTRATE_USER).context("deriving the etcd password")
}

/// Turns etcd's auth on, with `root` (no way to sign in) and the
/// substrate's user; a no-op when it is on. The first control plane does
/// this before it writes anything.
pub async fn turn_on_auth(etcd: &Etcd, substrate_password: &str) -> anyhow::Result<()> {
    etcd.ensure_user(ROOT_USER, None, &[ROOT_ROLE]).await?;
    etcd.ensure_user(SUBSTRATE_USER, Some(substrate_password), &[ROOT_ROLE])
        .await?;
    etcd.enable_auth().await.context("turning etcd's auth on")
}
