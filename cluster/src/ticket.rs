//! Enrollment tickets: what the CA holder (`builder seed`) says a node is.
//!
//! A ticket names one node of one cluster, its role and its addresses, and
//! expires. It is signed with the cluster CA key, so only whoever holds the
//! secrets bundle can make one, and the substrate API verifies it with the
//! CA certificate alone. A ticket is the authority for a name: enrolling a
//! name that is already recorded with another key (a wiped or reimaged
//! node) needs that node's ticket; a role token only enrolls new names.
//!
//! Text form: `gt1.<claims>.<signature>`, both parts base64url without
//! padding; the claims are JSON and the signature is ECDSA P-256 SHA-256
//! (ASN.1 DER) over the bytes of the claims part as sent.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::pki::{self, Ca};
use crate::Role;

const PREFIX: &str = "gt1";

/// Longest ticket text accepted (a ticket is a few hundred bytes).
const MAX_LEN: usize = 4096;

/// The longest a ticket may be valid.
pub const MAX_TTL: time::Duration = time::Duration::days(3 * 365);

/// What a ticket says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Claims {
    /// The cluster id (`cluster.yaml`).
    pub cluster: String,
    pub node: String,
    pub role: Role,
    /// CIDR addresses, as in the seed.
    pub addresses: Vec<String>,
    /// Unix times.
    pub issued_at: i64,
    pub not_after: i64,
}

/// Why a ticket was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TicketError {
    #[error("ticket is malformed: {0}")]
    Malformed(String),
    #[error("ticket signature does not verify with the cluster CA")]
    BadSignature,
    #[error("ticket is for cluster {0}, not this one")]
    OtherCluster(String),
    #[error("ticket expired at unix time {0}")]
    Expired(i64),
    #[error("ticket is for {field} {ticket:?}, the request says {request:?}")]
    Mismatch {
        field: &'static str,
        ticket: String,
        request: String,
    },
}

/// Whether `text` has a ticket's form (prefix and length); the signature
/// and claims are checked by [`verify`], against the cluster's CA.
pub fn is_well_formed(text: &str) -> bool {
    text.len() <= MAX_LEN && text.starts_with(PREFIX) && text[PREFIX.len()..].starts_with('.')
}

/// Signs `claims` with the CA: the ticket text.
pub fn sign(ca: &Ca, claims: &Claims) -> Result<String, pki::PkiError> {
    let body = B64.encode(serde_json::to_vec(claims).expect("claims serialize"));
    let sig = ca.sign(body.as_bytes())?;
    Ok(format!("{PREFIX}.{body}.{}", B64.encode(sig)))
}

/// Claims for `node` valid from now for `ttl` (at most [`MAX_TTL`]).
pub fn claims(
    cluster: &str,
    node: &str,
    role: Role,
    addresses: &[String],
    ttl: time::Duration,
) -> Result<Claims, String> {
    if ttl <= time::Duration::ZERO || ttl > MAX_TTL {
        return Err(format!(
            "ticket lifetime must be positive and at most {} days",
            MAX_TTL.whole_days()
        ));
    }
    let now = OffsetDateTime::now_utc().unix_timestamp();
    Ok(Claims {
        cluster: cluster.to_owned(),
        node: node.to_owned(),
        role,
        addresses: addresses.to_vec(),
        issued_at: now,
        // ttl is at most MAX_TTL: no overflow.
        not_after: now.saturating_add(ttl.whole_seconds()),
    })
}

/// Checks a ticket's form, its signature against `ca_pem`, its cluster and
/// its expiry at `now`; returns its claims. Never panics on any input.
pub fn verify(text: &str, ca_pem: &str, cluster: &str, now: i64) -> Result<Claims, TicketError> {
    if text.len() > MAX_LEN {
        return Err(TicketError::Malformed(format!(
            "longer than {MAX_LEN} bytes"
        )));
    }
    let mut parts = text.split('.');
    let (Some(PREFIX), Some(body), Some(sig), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TicketError::Malformed(format!(
            "expected {PREFIX}.<claims>.<signature>"
        )));
    };
    let sig = B64
        .decode(sig)
        .map_err(|e| TicketError::Malformed(format!("signature: {e}")))?;
    pki::verify_signature(ca_pem, body.as_bytes(), &sig).map_err(|_| TicketError::BadSignature)?;
    let json = B64
        .decode(body)
        .map_err(|e| TicketError::Malformed(format!("claims: {e}")))?;
    let claims: Claims = serde_json::from_slice(&json)
        .map_err(|e| TicketError::Malformed(format!("claims: {e}")))?;
    if claims.cluster != cluster {
        return Err(TicketError::OtherCluster(claims.cluster));
    }
    if now > claims.not_after {
        return Err(TicketError::Expired(claims.not_after));
    }
    Ok(claims)
}

impl Claims {
    /// Checks that a request for `node`, `role` and `addresses` is what the
    /// ticket says (addresses in any order).
    pub fn check(&self, node: &str, role: Role, addresses: &[String]) -> Result<(), TicketError> {
        let mismatch = |field, ticket: String, request: String| {
            Err(TicketError::Mismatch {
                field,
                ticket,
                request,
            })
        };
        if self.node != node {
            return mismatch("node", self.node.clone(), node.to_owned());
        }
        if self.role != role {
            return mismatch("role", self.role.to_string(), role.to_string());
        }
        let (mut a, mut b) = (self.addresses.clone(), addresses.to_vec());
        a.sort();
        b.sort();
        if a != b {
            return mismatch("addresses", a.join(","), b.join(","));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ticket(ca: &Ca) -> String {
        let c = claims(
            "c1",
            "w1",
            Role::Worker,
            &["10.0.0.5/24".into()],
            time::Duration::days(1),
        )
        .unwrap();
        sign(ca, &c).unwrap()
    }

    #[test]
    fn signed_ticket_verifies_and_binds_its_claims() {
        let ca = Ca::generate("t").unwrap();
        let t = ticket(&ca);
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let c = verify(&t, ca.cert_pem(), "c1", now).unwrap();
        assert_eq!((c.node.as_str(), c.role), ("w1", Role::Worker));
        c.check("w1", Role::Worker, &["10.0.0.5/24".into()])
            .unwrap();
        assert!(c
            .check("w2", Role::Worker, &["10.0.0.5/24".into()])
            .is_err());
        assert!(c
            .check("w1", Role::ControlPlane, &["10.0.0.5/24".into()])
            .is_err());
        assert!(c
            .check("w1", Role::Worker, &["10.0.0.6/24".into()])
            .is_err());
        assert_eq!(
            verify(&t, ca.cert_pem(), "c2", now),
            Err(TicketError::OtherCluster("c1".into()))
        );
        assert!(matches!(
            verify(&t, ca.cert_pem(), "c1", c.not_after + 1),
            Err(TicketError::Expired(_))
        ));
    }

    #[test]
    fn another_ca_or_edited_claims_do_not_verify() {
        let ca = Ca::generate("t").unwrap();
        let other = Ca::generate("t").unwrap();
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let t = ticket(&other);
        assert_eq!(
            verify(&t, ca.cert_pem(), "c1", now),
            Err(TicketError::BadSignature)
        );
        // The same signature over claims that say control-plane.
        let t = ticket(&ca);
        let (_, rest) = t.split_once('.').unwrap();
        let (body, sig) = rest.split_once('.').unwrap();
        let json = String::from_utf8(B64.decode(body).unwrap()).unwrap();
        let edited = B64.encode(json.replace("worker", "control-plane"));
        let forged = format!("{PREFIX}.{edited}.{sig}");
        assert_eq!(
            verify(&forged, ca.cert_pem(), "c1", now),
            Err(TicketError::BadSignature)
        );
    }

    #[test]
    fn garbage_never_panics() {
        let ca = Ca::generate("t").unwrap();
        let t = ticket(&ca);
        for len in 0..t.len() {
            let _ = verify(&t[..len], ca.cert_pem(), "c1", 0);
        }
        for s in [
            "",
            ".",
            "gt1..",
            "gt1.a.b.c",
            "gt1.!!.!!",
            &"x".repeat(10_000),
        ] {
            assert!(verify(s, ca.cert_pem(), "c1", 0).is_err(), "{s}");
        }
        assert!(claims("c", "n", Role::Worker, &[], time::Duration::MAX).is_err());
        assert!(claims("c", "n", Role::Worker, &[], time::Duration::MIN).is_err());
    }
}
