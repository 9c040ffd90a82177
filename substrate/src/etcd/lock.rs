//! A cluster-wide lock: a key bound to a lease. Whoever creates the key
//! holds the lock; the holder keeps its lease alive while it works, and the
//! lock goes with the lease: released by the holder, or expired a lease
//! TTL after the holder stopped (a crash, a power loss), so nobody waits on
//! a dead node for longer than that.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context as _};
use serde_json::json;

use super::{int, Condition, Etcd};
use crate::retry::{Attempt, Retry};

/// How often a waiter looks again, and says once a minute whom it waits for.
const POLL: Duration = Duration::from_secs(2);
const REPORT_EVERY: Duration = Duration::from_secs(60);

/// A held lock ([`Etcd::lock`]). [`Lock::release`] gives it up now;
/// dropped, it stops renewing and expires one lease TTL later.
#[derive(Debug)]
pub struct Lock {
    etcd: Etcd,
    key: String,
    lease: i64,
    keepalive: tokio::task::JoinHandle<()>,
}

impl Etcd {
    /// A lease of `ttl` (whole seconds, at least 1); its id.
    pub async fn lease_grant(&self, ttl: Duration) -> anyhow::Result<i64> {
        let ttl = ttl.as_secs().max(1);
        let resp = self
            .call("/v3/lease/grant", json!({"TTL": ttl.to_string()}))
            .await?;
        match int(&resp, "ID") {
            0 => Err(anyhow!("etcd lease grant: no lease id in {resp}")),
            id => Ok(id),
        }
    }

    /// Renews a lease; its remaining TTL in seconds, 0 once it has expired.
    pub async fn lease_keepalive(&self, lease: i64) -> anyhow::Result<i64> {
        let resp = self
            .call("/v3/lease/keepalive", json!({"ID": lease.to_string()}))
            .await?;
        Ok(resp.get("result").map_or(0, |r| int(r, "TTL")))
    }

    /// Ends a lease and deletes the keys bound to it.
    pub async fn lease_revoke(&self, lease: i64) -> anyhow::Result<()> {
        self.call("/v3/lease/revoke", json!({"ID": lease.to_string()}))
            .await?;
        Ok(())
    }

    /// Takes the lock `key` as `holder` (a name, stored as the key's
    /// value), waiting at most `wait` for whoever holds it. A lock held
    /// under the same holder name (this node's run before a crash or a
    /// restart) is taken over. Its lease lives `ttl` past the last renewal.
    pub async fn lock(
        &self,
        key: &str,
        holder: &str,
        ttl: Duration,
        wait: Duration,
    ) -> anyhow::Result<Lock> {
        let lease = self
            .lease_grant(ttl)
            .await
            .with_context(|| format!("a lease for lock {key}"))?;
        // Renewed from now: a waiter's lease must still exist when it
        // takes the lock.
        let etcd = self.clone();
        let every = Duration::from_secs((ttl.as_secs() / 3).max(1));
        let keepalive = tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                match etcd.lease_keepalive(lease).await {
                    Ok(0) => tracing::warn!("the lease of a held lock has expired"),
                    Ok(_) => {}
                    Err(e) => tracing::warn!("renewing a held lock's lease: {e:#}"),
                }
            }
        });
        let started = Instant::now();
        let reported = &Mutex::new(Instant::now());
        let taken = Retry::every(POLL, wait)
            .run(|| async move {
                match self.try_lock(key, holder, lease).await {
                    Ok(None) => Attempt::Done(()),
                    Ok(Some(other)) => {
                        let mut reported = reported.lock().unwrap_or_else(|e| e.into_inner());
                        if reported.elapsed() >= REPORT_EVERY {
                            tracing::info!(
                                "waiting {:.0} s for lock {key}, held by {other}",
                                started.elapsed().as_secs_f64()
                            );
                            *reported = Instant::now();
                        }
                        Attempt::Again(anyhow!("lock {key} is held by {other}"))
                    }
                    Err(e) => Attempt::Again(e),
                }
            })
            .await;
        if let Err(e) = taken {
            // Nothing is bound to the lease yet; it would expire anyway.
            keepalive.abort();
            let _ = self.lease_revoke(lease).await;
            return Err(e.context(format!("waiting {} s for lock {key}", wait.as_secs())));
        }
        Ok(Lock {
            etcd: self.clone(),
            key: key.to_owned(),
            lease,
            keepalive,
        })
    }

    /// One attempt: `None` once `key` is ours (bound to `lease`), else
    /// the name of its holder.
    async fn try_lock(
        &self,
        key: &str,
        holder: &str,
        lease: i64,
    ) -> anyhow::Result<Option<String>> {
        // Waiting costs a read, not a write: a transaction that may write
        // goes through Raft (a log entry and an fsync on every member)
        // even when its comparison fails.
        if let Some((other, _)) = self.get(key).await? {
            let other = String::from_utf8_lossy(&other).into_owned();
            if other != holder {
                return Ok(Some(other));
            }
        }
        let put = [(key.to_owned(), holder.as_bytes().to_vec())];
        let read = [key.to_owned()];
        let absent = Condition::Absent(key.to_owned());
        let Some(held) = self
            .txn_leased(&[absent], &put, Some(lease), &[], &read)
            .await?
        else {
            return Ok(None);
        };
        let Some(Some((other, revision))) = held.into_iter().next() else {
            // Released between the compare and the read: try again.
            return Ok(Some("nobody (just released)".into()));
        };
        let other = String::from_utf8_lossy(&other).into_owned();
        if other != holder {
            return Ok(Some(other));
        }
        let ours = Condition::ModRevision(key.to_owned(), revision);
        let taken = self
            .txn_leased(&[ours], &put, Some(lease), &[], &[])
            .await?
            .is_none();
        Ok((!taken).then(|| format!("{holder} (taking it over)")))
    }
}

impl Lock {
    /// Gives the lock up now.
    pub async fn release(self) -> anyhow::Result<()> {
        self.keepalive.abort();
        self.etcd
            .lease_revoke(self.lease)
            .await
            .with_context(|| format!("releasing lock {}", self.key))
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        self.keepalive.abort();
    }
}
