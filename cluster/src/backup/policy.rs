//! When control planes take backups, how many they keep, and where they
//! copy them off the cluster: `backup.yaml` in the cluster's bundle, carried
//! by control-plane seeds only (the targets' credentials never reach a
//! worker). Absent, backups are hourly, 24 kept for at most 7 days, on the
//! node only.
//!
//! ```yaml
//! interval: 1h          # a control plane takes one this often
//! keep: 24              # archives kept in each place
//! max_age: 7d           # and none older (the newest is always kept)
//! targets:
//!   - directory: /mnt/backup
//!   - s3:
//!       endpoint: https://10.0.0.5:7070   # https only
//!       bucket: globular
//!       prefix: prod/                     # optional
//!       region: us-east-1                 # default
//!       access_key_id: ...
//!       secret_access_key: ...
//!       ca: |                             # the CA of the endpoint's certificate (pinned)
//!         -----BEGIN CERTIFICATE-----
//! ```

use std::path::Path;

use serde::{Deserialize, Serialize};
use time::Duration;

/// The file in a cluster bundle.
pub const FILE: &str = "backup.yaml";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    #[serde(default = "default_interval")]
    pub interval: String,
    #[serde(default = "default_keep")]
    pub keep: usize,
    #[serde(default = "default_max_age")]
    pub max_age: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<Target>,
}

fn default_interval() -> String {
    "1h".into()
}
fn default_keep() -> usize {
    24
}
fn default_max_age() -> String {
    "7d".into()
}

impl Default for Policy {
    fn default() -> Policy {
        Policy {
            interval: default_interval(),
            keep: default_keep(),
            max_age: default_max_age(),
            targets: Vec::new(),
        }
    }
}

/// A place backups are copied to: one of its fields is set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Target {
    /// A directory on the node: a mounted USB disk, an NFS export.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub directory: Option<String>,
    /// A bucket of an S3-compatible object store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<S3Target>,
}

/// What a [`Target`] is.
#[derive(Debug, Clone, Copy)]
pub enum Place<'a> {
    Directory(&'a str),
    S3(&'a S3Target),
}

#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Target {
    /// `https://HOST[:PORT]`: requests are path-style (`/BUCKET/KEY`).
    pub endpoint: String,
    pub bucket: String,
    /// Prepended to every object name (`prod/`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub prefix: String,
    #[serde(default = "default_region")]
    pub region: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    /// PEM of the CA that signed the endpoint's certificate: the only one
    /// trusted for it.
    pub ca: String,
}

fn default_region() -> String {
    "us-east-1".into()
}

impl std::fmt::Debug for S3Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Target")
            .field("endpoint", &self.endpoint)
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

impl Target {
    /// Which place this is (a validated target has exactly one).
    pub fn place(&self) -> Result<Place<'_>, String> {
        match (&self.directory, &self.s3) {
            (Some(path), None) => Ok(Place::Directory(path)),
            (None, Some(s3)) => Ok(Place::S3(s3)),
            _ => Err("one of `directory` and `s3`".into()),
        }
    }

    /// How logs and status name the target (no credentials).
    pub fn describe(&self) -> String {
        match self.place() {
            Ok(Place::Directory(path)) => format!("directory {path}"),
            Ok(Place::S3(s3)) => format!("s3 {}/{}/{}", s3.endpoint, s3.bucket, s3.prefix),
            Err(_) => "an invalid target".into(),
        }
    }
}

impl Policy {
    pub fn interval(&self) -> Duration {
        crate::token::parse_ttl(&self.interval).unwrap_or(Duration::HOUR)
    }
    pub fn max_age(&self) -> Duration {
        crate::token::parse_ttl(&self.max_age).unwrap_or(Duration::days(7))
    }

    /// Checks every field; the error names it (`targets[1].s3.endpoint`).
    pub fn validate(&self) -> Result<(), String> {
        crate::token::parse_ttl(&self.interval).map_err(|e| format!("field `interval`: {e}"))?;
        crate::token::parse_ttl(&self.max_age).map_err(|e| format!("field `max_age`: {e}"))?;
        if self.keep == 0 {
            return Err("field `keep`: at least 1".into());
        }
        for (i, target) in self.targets.iter().enumerate() {
            let field = |name: &str| format!("field `targets[{i}].{name}`");
            let place = target
                .place()
                .map_err(|e| format!("field `targets[{i}]`: {e}"))?;
            match place {
                Place::Directory(path) => {
                    if !Path::new(path).is_absolute() {
                        return Err(format!(
                            "{}: {path:?} is not an absolute path",
                            field("directory")
                        ));
                    }
                }
                Place::S3(s3) => {
                    let Some(host) = s3.endpoint.strip_prefix("https://") else {
                        return Err(format!(
                            "{}: {:?} is not an https:// URL (backups leave the node over TLS only)",
                            field("s3.endpoint"),
                            s3.endpoint
                        ));
                    };
                    if host.is_empty() || host.contains(['/', '?', '#', '@']) {
                        return Err(format!(
                            "{}: {:?}: only https://HOST[:PORT]",
                            field("s3.endpoint"),
                            s3.endpoint
                        ));
                    }
                    let bucket_ok = (3..=63).contains(&s3.bucket.len())
                        && s3.bucket.bytes().all(|b| {
                            b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.'
                        });
                    if !bucket_ok {
                        return Err(format!(
                            "{}: {:?} is not an S3 bucket name",
                            field("s3.bucket"),
                            s3.bucket
                        ));
                    }
                    if s3.prefix.starts_with('/') || s3.prefix.contains("..") {
                        return Err(format!(
                            "{}: {:?} must be relative",
                            field("s3.prefix"),
                            s3.prefix
                        ));
                    }
                    for (name, value) in [
                        ("region", &s3.region),
                        ("access_key_id", &s3.access_key_id),
                        ("secret_access_key", &s3.secret_access_key),
                    ] {
                        if value.is_empty() || value.contains(char::is_whitespace) {
                            return Err(format!(
                                "{}: empty or with spaces",
                                field(&format!("s3.{name}"))
                            ));
                        }
                    }
                    crate::pki::identity_of_pem(&s3.ca)
                        .map_err(|e| format!("{}: {e}", field("s3.ca")))?;
                }
            }
        }
        Ok(())
    }

    /// Parses and checks `backup.yaml`; errors name the file and field.
    pub fn parse(text: &str, origin: &str) -> anyhow::Result<Policy> {
        let policy: Policy =
            serde_yaml_ng::from_str(text).map_err(|e| anyhow::anyhow!("{origin}: {e}"))?;
        policy
            .validate()
            .map_err(|e| anyhow::anyhow!("{origin}: {e}"))?;
        Ok(policy)
    }

    /// The policy of a cluster bundle: its `backup.yaml`, if it has one.
    pub fn load(bundle: &Path) -> anyhow::Result<Option<Policy>> {
        let path = bundle.join(FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => Policy::parse(&text, &path.display().to_string()).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(anyhow::Error::new(e).context(format!("reading {}", path.display()))),
        }
    }
}

/// What the last scheduled backup did: the registry's
/// `/globular/backups/latest` (`globular backup status`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    pub name: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created: time::OffsetDateTime,
    /// The control plane that took it.
    pub node: String,
    /// The archive's SHA-256 (hex) and size.
    pub sha256: String,
    pub size: u64,
    /// etcd's revision in the snapshot.
    pub revision: i64,
    /// One entry per target of the policy.
    pub copies: Vec<CopyStatus>,
}

/// How the copy to one target went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CopyStatus {
    /// [`Target::describe`].
    pub target: String,
    pub ok: bool,
    pub attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_field_errors() {
        let p = Policy::parse("{}", "backup.yaml").unwrap();
        assert_eq!(p, Policy::default());
        assert_eq!(p.interval(), Duration::HOUR);
        for (text, field) in [
            ("interval: soon", "`interval`"),
            ("keep: 0", "`keep`"),
            ("targets: [{directory: rel}]", "`targets[0].directory`"),
            ("targets: [{}]", "`targets[0]`"),
            (
                "targets: [{s3: {endpoint: 'http://x', bucket: bkt, access_key_id: a, secret_access_key: s, ca: x}}]",
                "`targets[0].s3.endpoint`",
            ),
            (
                "targets: [{s3: {endpoint: 'https://x:1', bucket: B, access_key_id: a, secret_access_key: s, ca: x}}]",
                "`targets[0].s3.bucket`",
            ),
            (
                "targets: [{s3: {endpoint: 'https://x:1', bucket: bkt, access_key_id: a, secret_access_key: s, ca: x}}]",
                "`targets[0].s3.ca`",
            ),
            ("colour: blue", "unknown field"),
        ] {
            let err = format!("{:#}", Policy::parse(text, "backup.yaml").unwrap_err());
            assert!(err.contains(field) && err.starts_with("backup.yaml"), "{text}: {err}");
        }
    }

    #[test]
    fn debug_hides_the_secret_key() {
        let s3 = S3Target {
            endpoint: "https://x".into(),
            bucket: "bkt".into(),
            prefix: String::new(),
            region: default_region(),
            access_key_id: "AKID".into(),
            secret_access_key: "very-secret".into(),
            ca: String::new(),
        };
        assert!(!format!("{s3:?}").contains("very-secret"));
    }
}
