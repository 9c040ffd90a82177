//! etcd's users: who may touch which keys once etcd's auth is on.
//!
//! etcd trusts the etcd CA alone (control-plane nodes hold it). On top of
//! that, etcd's role-based auth gives each client the keys it needs:
//!
//! | user | authenticates with | role | keys |
//! |---|---|---|---|
//! | `root` | nothing that exists (no password; no certificate is issued with this name) | `root` | all (etcd needs it to turn auth on) |
//! | `globular-substrate` | password over the gRPC gateway | `root` | all (membership calls need `root`) |
//! | `kube-apiserver-etcd-client` | client certificate common name (gRPC) | `kubernetes` | `/registry/` only |
//!
//! etcd's gateway ignores a client certificate's common name and refuses
//! a certificate that has one while auth is on, so the substrate's client
//! certificate has none and the substrate signs in with a password. That
//! password is derived from the etcd CA key: every control plane computes
//! the same one, and nobody without the etcd CA key (who could mint any
//! etcd identity anyway) can.

use ring::hmac;

use crate::pki;

/// The substrate's services on control-plane nodes.
pub const SUBSTRATE_USER: &str = "globular-substrate";
/// etcd's own administrator; needed to turn auth on, used by nobody.
pub const ROOT_USER: &str = "root";
/// The role with every permission (etcd's built-in).
pub const ROOT_ROLE: &str = "root";
/// Kubernetes' apiserver: the common name of its etcd client certificate.
pub const KUBERNETES_USER: &str = "kube-apiserver-etcd-client";
/// The role of [`KUBERNETES_USER`]: read and write under [`KUBERNETES_PREFIX`].
pub const KUBERNETES_ROLE: &str = "kubernetes";
/// Where the apiserver keeps its objects (its `--etcd-prefix`).
pub const KUBERNETES_PREFIX: &str = "/registry/";

/// The password of `user`, derived from the etcd CA key (PEM).
pub fn password(etcd_ca_key_pem: &str, user: &str) -> Result<String, pki::PkiError> {
    let der = pki::pem_block(etcd_ca_key_pem, "PRIVATE KEY").map_err(pki::PkiError::InvalidKey)?;
    let key = hmac::Key::new(hmac::HMAC_SHA256, &der);
    let tag = hmac::sign(
        &key,
        format!("globular etcd password v1\0{user}").as_bytes(),
    );
    Ok(hex::encode(tag.as_ref()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_depend_on_the_key_and_the_user() {
        let a = pki::generate_key_pem().unwrap();
        let b = pki::generate_key_pem().unwrap();
        let pa = password(&a, SUBSTRATE_USER).unwrap();
        assert_eq!(pa, password(&a, SUBSTRATE_USER).unwrap());
        assert_eq!(pa.len(), 64);
        assert_ne!(pa, password(&b, SUBSTRATE_USER).unwrap());
        assert_ne!(pa, password(&a, KUBERNETES_USER).unwrap());
        // The same key written with other line breaks gives the same one.
        let rewrapped = a.replace('\n', "\r\n");
        assert_eq!(pa, password(&rewrapped, SUBSTRATE_USER).unwrap());
        assert!(password("not a key", SUBSTRATE_USER).is_err());
    }
}
