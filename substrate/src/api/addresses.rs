//! Address ownership: which addresses a node may put in its certificate.
//!
//! A node's addresses become IP subject alternative names of its
//! certificate, so an address given to the wrong node lets that node pose
//! as another. The rules (policy in the cluster record,
//! [`EnrollmentPolicy`]): no unspecified, multicast, link-local, broadcast
//! or (by default) loopback addresses; at most a few per node; none that is
//! recorded for another node (`/globular/addresses/<ip>`, written in the
//! same transaction as the node record); and the enrollment connection
//! comes from one of them unless the cluster says otherwise.

use std::collections::BTreeSet;
use std::net::IpAddr;

use globular_cluster::registry::{self, EnrollmentPolicy};
use globular_cluster::seed;

use super::ApiError;

/// The IPs of `addresses` (CIDR), checked against `policy` and the
/// connection's source address `source`.
pub(super) fn check(
    policy: &EnrollmentPolicy,
    addresses: &[String],
    source: Option<IpAddr>,
) -> Result<Vec<IpAddr>, ApiError> {
    if addresses.is_empty() {
        return Err(ApiError::bad("addresses: at least one address is required"));
    }
    if addresses.len() > policy.max_addresses {
        return Err(ApiError::bad(format!(
            "addresses: at most {} addresses per node",
            policy.max_addresses
        )));
    }
    let mut ips = Vec::new();
    let mut seen = BTreeSet::new();
    for (i, a) in addresses.iter().enumerate() {
        let (ip, _) =
            seed::parse_cidr(a).map_err(|e| ApiError::bad(format!("addresses[{i}]: {e}")))?;
        if let Some(kind) = policy.refuses(ip) {
            return Err(ApiError::bad(format!(
                "addresses[{i}]: {ip} is a {kind} address; a node's addresses must be its own"
            )));
        }
        if !seen.insert(ip) {
            return Err(ApiError::bad(format!(
                "addresses[{i}]: {ip} is listed twice"
            )));
        }
        ips.push(ip);
    }
    if policy.require_source_address {
        let source = source.map(|s| s.to_canonical());
        if !source.is_some_and(|s| ips.contains(&s)) {
            return Err(ApiError::forbidden(format!(
                "addresses: the request comes from {}, which is not one of the node's addresses",
                source.map_or_else(|| "an unknown address".into(), |s| s.to_string())
            )));
        }
    }
    Ok(ips)
}

/// The index entries of a node's addresses (key, owner).
pub(super) fn index(node: &str, ips: &[IpAddr]) -> Vec<(String, Vec<u8>)> {
    ips.iter()
        .map(|ip| (registry::address_key(ip), node.as_bytes().to_vec()))
        .collect()
}

/// The refusal for an address recorded for `owner`.
pub(super) fn taken(key: &str, owner: &[u8]) -> ApiError {
    let ip = key.rsplit('/').next().unwrap_or(key);
    ApiError::new(
        axum::http::StatusCode::CONFLICT,
        format!(
            "addresses: {ip} belongs to node {}",
            String::from_utf8_lossy(owner)
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strict() -> EnrollmentPolicy {
        EnrollmentPolicy::default()
    }

    #[test]
    fn refuses_addresses_that_are_nobodys_own() {
        let src = Some("10.0.0.5".parse().unwrap());
        for bad in [
            "127.0.0.1/8",
            "127.1.2.3/8",
            "0.0.0.0/0",
            "224.0.0.1/4",
            "169.254.1.1/16",
            "255.255.255.255/32",
            "::1/128",
            "::/0",
            "fe80::1/64",
            "ff02::1/16",
            "::ffff:10.0.0.5/128",
        ] {
            let err = check(&strict(), &["10.0.0.5/24".into(), bad.into()], src).unwrap_err();
            assert_eq!(err.status, 400, "{bad}: {}", err.message);
        }
        check(&strict(), &["10.0.0.5/24".into()], src).unwrap();
    }

    #[test]
    fn a_few_addresses_from_the_source() {
        let policy = strict();
        let many: Vec<String> = (1..=5).map(|i| format!("10.0.0.{i}/24")).collect();
        let src = Some("10.0.0.1".parse().unwrap());
        assert_eq!(check(&policy, &many, src).unwrap_err().status, 400);
        assert_eq!(check(&policy, &[], src).unwrap_err().status, 400);
        let err = check(&policy, &["10.0.0.9/24".into()], src).unwrap_err();
        assert_eq!(err.status, 403, "{}", err.message);
        assert_eq!(
            check(&policy, &["10.0.0.9/24".into()], None)
                .unwrap_err()
                .status,
            403
        );
        // IPv4 seen on an IPv6 socket.
        let mapped = Some("::ffff:10.0.0.9".parse().unwrap());
        check(&policy, &["10.0.0.9/24".into()], mapped).unwrap();
        let open = EnrollmentPolicy {
            require_source_address: false,
            ..policy
        };
        check(&open, &["10.0.0.9/24".into()], src).unwrap();
        let dup = ["10.0.0.1/24".into(), "10.0.0.1/16".into()];
        assert_eq!(check(&policy, &dup, src).unwrap_err().status, 400);
    }

    #[test]
    fn loopback_only_when_the_cluster_allows_it() {
        let lab = EnrollmentPolicy {
            allow_loopback: true,
            require_source_address: false,
            ..strict()
        };
        check(&lab, &["127.0.0.5/8".into()], None).unwrap();
        assert!(check(&lab, &["0.0.0.0/8".into()], None).is_err());
    }
}
