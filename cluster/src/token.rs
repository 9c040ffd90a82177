//! Bootstrap tokens in kubeadm's format: `[a-z0-9]{6}.[a-z0-9]{16}`.
//!
//! The first part is a public id, the second a secret. The cluster stores
//! only a SHA-256 of the secret, with an expiry and the roles the token may
//! enroll.

use ring::rand::SecureRandom as _;
use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};

use crate::Role;

const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";

/// Why a token was refused. The enrollment API matches on it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("token is malformed (expected [a-z0-9]{{6}}.[a-z0-9]{{16}})")]
    Malformed,
    #[error("token {0} is not known")]
    Unknown(String),
    #[error("token {0} does not match")]
    WrongSecret(String),
    #[error("token {id} expired at {expired}")]
    Expired { id: String, expired: String },
    #[error("token {id} may not enroll role {role} (allowed: {allowed})")]
    RoleNotAllowed {
        id: String,
        role: Role,
        allowed: String,
    },
}

/// A token lifetime that puts the expiry beyond what a date can hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a lifetime of {0} puts the expiry out of range")]
pub struct TtlOutOfRange(pub Duration);

/// When a token made at `now` with lifetime `ttl` expires (whole seconds).
pub fn expiry(now: OffsetDateTime, ttl: Duration) -> Result<OffsetDateTime, TtlOutOfRange> {
    now.replace_nanosecond(0)
        .unwrap_or(now)
        .checked_add(ttl)
        .ok_or(TtlOutOfRange(ttl))
}

/// A bootstrap token: public id and secret.
#[derive(Clone, PartialEq, Eq)]
pub struct BootstrapToken {
    id: String,
    secret: String,
}

impl std::fmt::Debug for BootstrapToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BootstrapToken({}.<redacted>)", self.id)
    }
}

impl BootstrapToken {
    /// A new random token.
    pub fn generate() -> BootstrapToken {
        let rng = ring::rand::SystemRandom::new();
        let pick = |n: usize| -> String {
            let mut out = String::with_capacity(n);
            while out.len() < n {
                let mut b = [0u8; 1];
                rng.fill(&mut b).expect("the system random generator works");
                // 252 = 7 * 36: reject the tail to keep the choice uniform.
                if b[0] < 252 {
                    out.push(ALPHABET[usize::from(b[0]) % ALPHABET.len()] as char);
                }
            }
            out
        };
        BootstrapToken {
            id: pick(6),
            secret: pick(16),
        }
    }

    pub fn parse(s: &str) -> Result<BootstrapToken, TokenError> {
        let (id, secret) = s.split_once('.').ok_or(TokenError::Malformed)?;
        let ok = |part: &str, len: usize| {
            part.len() == len && part.bytes().all(|b| ALPHABET.contains(&b))
        };
        if !ok(id, 6) || !ok(secret, 16) {
            return Err(TokenError::Malformed);
        }
        Ok(BootstrapToken {
            id: id.to_owned(),
            secret: secret.to_owned(),
        })
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// The full `id.secret` text (a secret).
    pub fn expose(&self) -> String {
        format!("{}.{}", self.id, self.secret)
    }

    fn secret_hash(&self) -> String {
        hex::encode(ring::digest::digest(&ring::digest::SHA256, self.secret.as_bytes()).as_ref())
    }
}

/// What the cluster stores about a token (no secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenRecord {
    pub id: String,
    /// Lowercase hex SHA-256 of the secret part.
    pub secret_sha256: String,
    pub roles: Vec<Role>,
    #[serde(with = "time::serde::rfc3339")]
    pub expires: OffsetDateTime,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
}

impl TokenRecord {
    pub fn new(
        token: &BootstrapToken,
        roles: Vec<Role>,
        ttl: Duration,
    ) -> Result<TokenRecord, TtlOutOfRange> {
        Ok(TokenRecord {
            id: token.id.clone(),
            secret_sha256: token.secret_hash(),
            roles,
            expires: expiry(OffsetDateTime::now_utc(), ttl)?,
            description: String::new(),
        })
    }

    /// Checks `token` against this record for enrolling `role` at `now`.
    pub fn check(
        &self,
        token: &BootstrapToken,
        role: Role,
        now: OffsetDateTime,
    ) -> Result<(), TokenError> {
        let expected = hex::decode(&self.secret_sha256).unwrap_or_default();
        let actual = ring::digest::digest(&ring::digest::SHA256, token.secret.as_bytes());
        if token.id != self.id
            || expected.len() != 32
            || !constant_time_eq(&expected, actual.as_ref())
        {
            return Err(TokenError::WrongSecret(token.id.clone()));
        }
        if now >= self.expires {
            return Err(TokenError::Expired {
                id: self.id.clone(),
                expired: self
                    .expires
                    .format(&time::format_description::well_known::Rfc3339)
                    .unwrap_or_default(),
            });
        }
        if !self.roles.contains(&role) {
            return Err(TokenError::RoleNotAllowed {
                id: self.id.clone(),
                role,
                allowed: self
                    .roles
                    .iter()
                    .map(|r| r.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
        Ok(())
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Parses a duration such as `90s`, `30m`, `1h`, `7d`.
pub fn parse_ttl(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("duration {s:?} needs a unit (s, m, h, d)"))?;
    let (digits, unit) = s.split_at(split);
    let n: i64 = digits
        .parse()
        .map_err(|_| format!("duration {s:?} does not start with a number"))?;
    let per_unit: i64 = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => {
            return Err(format!(
                "duration {s:?} has unknown unit {unit:?} (s, m, h, d)"
            ))
        }
    };
    let d = n
        .checked_mul(per_unit)
        .map(Duration::seconds)
        .ok_or_else(|| format!("duration {s:?} is too long"))?;
    if d <= Duration::ZERO {
        return Err(format!("duration {s:?} must be positive"));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_parse() {
        for _ in 0..50 {
            let t = BootstrapToken::generate();
            let text = t.expose();
            assert_eq!(text.len(), 23);
            assert_eq!(BootstrapToken::parse(&text).unwrap(), t);
        }
    }

    #[test]
    fn malformed_tokens() {
        for bad in [
            "",
            "abcdef",
            "abcdef.0123456789abcde",
            "ABCDEF.0123456789abcdef",
            "abcdef.0123456789abcdeF",
            "abcde.0123456789abcdefg",
        ] {
            assert_eq!(
                BootstrapToken::parse(bad),
                Err(TokenError::Malformed),
                "{bad}"
            );
        }
    }

    #[test]
    fn record_checks_secret_expiry_and_role() {
        let t = BootstrapToken::generate();
        let rec = TokenRecord::new(&t, vec![Role::Worker], Duration::hours(1)).unwrap();
        let now = OffsetDateTime::now_utc();
        rec.check(&t, Role::Worker, now).unwrap();
        assert!(matches!(
            rec.check(&t, Role::ControlPlane, now),
            Err(TokenError::RoleNotAllowed { .. })
        ));
        assert!(matches!(
            rec.check(&t, Role::Worker, now + Duration::hours(2)),
            Err(TokenError::Expired { .. })
        ));
        let other = BootstrapToken::parse(&format!("{}.0000000000000000", t.id())).unwrap();
        assert!(matches!(
            rec.check(&other, Role::Worker, now),
            Err(TokenError::WrongSecret(_))
        ));
        assert!(!format!("{t:?}").contains(&t.expose()[7..]));
    }

    #[test]
    fn ttl_parsing() {
        assert_eq!(parse_ttl("1h").unwrap(), Duration::hours(1));
        assert_eq!(parse_ttl("90s").unwrap(), Duration::seconds(90));
        assert!(parse_ttl("1y").is_err());
        assert!(parse_ttl("h").is_err());
        assert!(parse_ttl("0s").is_err());
        // Too long to hold: refused, not a panic.
        assert!(parse_ttl(&format!("{}d", i64::MAX)).is_err());
        assert!(parse_ttl(&format!("{}h", i64::MAX / 3600 + 1)).is_err());
        assert!(parse_ttl(&format!("{}s", i64::MAX)).is_ok());
        assert!(parse_ttl(&format!("{}0s", i64::MAX)).is_err());
    }

    #[test]
    fn an_expiry_out_of_range_is_an_error_not_a_panic() {
        let t = BootstrapToken::generate();
        let huge = Duration::seconds(i64::MAX);
        assert_eq!(
            TokenRecord::new(&t, vec![Role::Worker], huge),
            Err(TtlOutOfRange(huge))
        );
        assert!(expiry(OffsetDateTime::now_utc(), Duration::MAX).is_err());
        assert!(expiry(OffsetDateTime::now_utc(), Duration::MIN).is_err());
        let now = OffsetDateTime::now_utc();
        assert_eq!(
            expiry(now, Duration::days(1)).unwrap(),
            now.replace_nanosecond(0).unwrap() + Duration::days(1)
        );
    }
}
