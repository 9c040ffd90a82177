//! Signing in to etcd and managing its users and roles
//! (`globular_cluster::etcd_auth` says who is who).
//!
//! Through the gateway a client certificate identifies nobody once auth is
//! on: the client signs in with a password (`/v3/auth/authenticate`) and
//! sends the token with each call. etcd's simple tokens are known to the
//! member that made them only, and expire when idle: the client keeps one
//! per endpoint and signs in again when a member refuses it.

use anyhow::{bail, Context as _};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde_json::{json, Value};

use super::{decode, prefix_end, Etcd, CALL_TIMEOUT};

/// A user and its password.
#[derive(Clone)]
pub(super) struct User {
    name: String,
    password: String,
}

impl std::fmt::Debug for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("User")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// What a role may do with a key range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    Read,
    Write,
    ReadWrite,
}

impl Permission {
    fn as_str(self) -> &'static str {
        match self {
            Permission::Read => "READ",
            Permission::Write => "WRITE",
            Permission::ReadWrite => "READWRITE",
        }
    }
}

/// Whether an error from etcd means "sign in (again) and retry": no
/// token, an expired one, or one from before the users or roles changed.
pub(super) fn wants_sign_in(message: &str) -> bool {
    [
        "invalid auth token",
        "user name is empty",
        "revision of auth store is old",
        "permission denied",
    ]
    .iter()
    .any(|m| message.contains(m))
}

impl Etcd {
    /// This client signs in as `user` with `password` whenever etcd's auth
    /// is on (and calls without a token while it is off).
    pub fn with_user(mut self, user: &str, password: &str) -> Etcd {
        self.user = Some(std::sync::Arc::new(User {
            name: user.to_owned(),
            password: password.to_owned(),
        }));
        self.tokens = std::sync::Arc::default();
        self
    }

    /// The token to send to `ep`: the one kept from signing in there,
    /// unless `fresh` (then sign in again). `None` without a user or while
    /// auth is off at that member.
    pub(super) async fn token(&self, ep: &str, fresh: bool) -> anyhow::Result<Option<String>> {
        let Some(user) = &self.user else {
            return Ok(None);
        };
        let tokens = || self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        if !fresh {
            if let Some(token) = tokens().get(ep) {
                return Ok(token.clone());
            }
        }
        let url = format!("{}/v3/auth/authenticate", ep.trim_end_matches('/'));
        let resp = self
            .http
            .post(&url)
            .json(&json!({"name": user.name, "password": user.password}))
            .timeout(CALL_TIMEOUT)
            .send()
            .await
            .with_context(|| format!("etcd: signing in at {ep}"))?;
        let status = resp.status();
        let body: Value = resp
            .json()
            .await
            .with_context(|| format!("etcd: signing in at {ep}: bad JSON"))?;
        let token = if status.is_success() {
            let token = body.get("token").and_then(Value::as_str);
            Some(token.context("etcd: signing in: no token")?.to_owned())
        } else {
            let message = body.get("message").and_then(Value::as_str).unwrap_or("");
            if !message.contains("authentication is not enabled") {
                bail!(
                    "etcd: signing in at {ep} as {}: {status}: {message}",
                    user.name
                );
            }
            None
        };
        tokens().insert(ep.to_owned(), token.clone());
        Ok(token)
    }

    /// Whether etcd's auth is on.
    pub async fn auth_enabled(&self) -> anyhow::Result<bool> {
        let resp = self.call("/v3/auth/status", json!({})).await?;
        Ok(resp
            .get("enabled")
            .and_then(Value::as_bool)
            .unwrap_or(false))
    }

    /// Turns etcd's auth on (the `root` user must exist); a no-op when on.
    pub async fn enable_auth(&self) -> anyhow::Result<()> {
        if !self.auth_enabled().await? {
            self.call("/v3/auth/enable", json!({})).await?;
        }
        Ok(())
    }

    /// What `role` grants: (key, range end, `READ`/`WRITE`/`READWRITE`);
    /// `None` if there is no such role.
    pub async fn role_grants(&self, role: &str) -> anyhow::Result<Option<Vec<Grant>>> {
        let resp = match self.call("/v3/auth/role/get", json!({"role": role})).await {
            Ok(resp) => resp,
            Err(e) if format!("{e:#}").contains("role name not found") => return Ok(None),
            Err(e) => return Err(e.context(format!("reading etcd role {role}"))),
        };
        let mut out = Vec::new();
        for perm in resp
            .get("perm")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            out.push(Grant {
                key: decode(perm, "key")?,
                range_end: decode(perm, "range_end")?,
                // The gateway leaves out the default (READ).
                permission: perm
                    .get("permType")
                    .and_then(Value::as_str)
                    .unwrap_or("READ")
                    .to_owned(),
            });
        }
        Ok(Some(out))
    }

    /// The roles of `user`; `None` if there is no such user.
    pub async fn user_roles(&self, user: &str) -> anyhow::Result<Option<Vec<String>>> {
        match self.call("/v3/auth/user/get", json!({"name": user})).await {
            Ok(resp) => Ok(Some(
                resp.get("roles")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(|r| r.as_str().map(str::to_owned))
                    .collect(),
            )),
            Err(e) if format!("{e:#}").contains("user name not found") => Ok(None),
            Err(e) => Err(e.context(format!("reading etcd user {user}"))),
        }
    }

    /// Makes `role` grant exactly `grants` (key prefix, permission):
    /// creates it, grants what is missing, revokes what is not asked for.
    /// Whether anything changed.
    pub async fn ensure_role(
        &self,
        role: &str,
        grants: &[(&str, Permission)],
    ) -> anyhow::Result<bool> {
        let wanted: Vec<Grant> = grants
            .iter()
            .map(|(p, perm)| Grant::prefix(p, *perm))
            .collect();
        let have = match self.role_grants(role).await? {
            Some(have) => have,
            None => {
                self.call("/v3/auth/role/add", json!({"name": role}))
                    .await
                    .with_context(|| format!("adding etcd role {role}"))?;
                Vec::new()
            }
        };
        let mut changed = false;
        for grant in have.iter().filter(|g| !wanted.contains(g)) {
            self.call(
                "/v3/auth/role/revoke",
                json!({"role": role, "key": B64.encode(&grant.key), "range_end": B64.encode(&grant.range_end)}),
            )
            .await
            .with_context(|| format!("revoking a permission of etcd role {role}"))?;
            changed = true;
        }
        for grant in wanted.iter().filter(|g| !have.contains(g)) {
            self.call(
                "/v3/auth/role/grant",
                json!({"name": role, "perm": {
                    "permType": grant.permission,
                    "key": B64.encode(&grant.key),
                    "range_end": B64.encode(&grant.range_end),
                }}),
            )
            .await
            .with_context(|| format!("granting etcd role {role}"))?;
            changed = true;
        }
        Ok(changed)
    }

    /// Makes `user` exist with exactly `roles`; a user created without a
    /// password signs in by its certificate's common name only (gRPC).
    /// Whether anything changed.
    pub async fn ensure_user(
        &self,
        user: &str,
        password: Option<&str>,
        roles: &[&str],
    ) -> anyhow::Result<bool> {
        let mut changed = false;
        let have = match self.user_roles(user).await? {
            Some(have) => have,
            None => {
                let request = match password {
                    Some(password) => json!({"name": user, "password": password}),
                    None => json!({"name": user, "options": {"no_password": true}}),
                };
                self.call("/v3/auth/user/add", request)
                    .await
                    .with_context(|| format!("adding etcd user {user}"))?;
                changed = true;
                Vec::new()
            }
        };
        for role in have.iter().filter(|r| !roles.contains(&r.as_str())) {
            self.call("/v3/auth/user/revoke", json!({"name": user, "role": role}))
                .await
                .with_context(|| format!("revoking {role} from etcd user {user}"))?;
            changed = true;
        }
        for role in roles.iter().filter(|r| !have.iter().any(|h| h == *r)) {
            self.call("/v3/auth/user/grant", json!({"user": user, "role": role}))
                .await
                .with_context(|| format!("granting {role} to etcd user {user}"))?;
            changed = true;
        }
        Ok(changed)
    }
}

/// One permission of an etcd role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub key: Vec<u8>,
    pub range_end: Vec<u8>,
    /// `READ`, `WRITE` or `READWRITE`.
    pub permission: String,
}

impl Grant {
    /// `permission` on every key under `prefix`.
    pub fn prefix(prefix: &str, permission: Permission) -> Grant {
        Grant {
            key: prefix.as_bytes().to_vec(),
            range_end: prefix_end(prefix),
            permission: permission.as_str().to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn errors_that_ask_for_a_new_token() {
        assert!(super::wants_sign_in("etcdserver: invalid auth token"));
        assert!(super::wants_sign_in("etcdserver: user name is empty"));
        assert!(!super::wants_sign_in("etcdserver: key not found"));
    }
}
