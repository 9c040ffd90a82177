//! Group commit of enrollments.

use std::time::Duration;

use crate::etcd::{Condition, Etcd, MAX_TXN_OPS};

/// How long the group-commit writer waits for more enrollments.
const BATCH_LINGER: Duration = Duration::from_millis(2);

/// The answer to a compare-and-create of a group of keys.
#[derive(Debug)]
pub(super) enum Created {
    /// Every key was written.
    Done,
    /// The first key (the node record) exists: its value and mod revision.
    Exists(Vec<u8>, i64),
    /// Another key of the group (an address) exists: the key and its value.
    Taken(String, Vec<u8>),
}

/// A compare-and-create of a group of keys (the node record first, then its
/// addresses) and where its answer goes.
pub(super) type CreateJob = (
    Vec<(String, Vec<u8>)>,
    tokio::sync::oneshot::Sender<anyhow::Result<Created>>,
);

/// Writes every key of `group` if none exists, in one transaction; else
/// says which exists.
pub(super) async fn create_group(
    etcd: &Etcd,
    group: &[(String, Vec<u8>)],
) -> anyhow::Result<Created> {
    let conditions: Vec<Condition> = group
        .iter()
        .map(|(k, _)| Condition::Absent(k.clone()))
        .collect();
    let keys: Vec<String> = group.iter().map(|(k, _)| k.clone()).collect();
    let Some(found) = etcd.txn(&conditions, group, &[], &keys).await? else {
        return Ok(Created::Done);
    };
    for (i, value) in found.into_iter().enumerate() {
        match (i, value) {
            (0, Some((value, revision))) => return Ok(Created::Exists(value, revision)),
            (_, Some((value, _))) => return Ok(Created::Taken(keys[i].clone(), value)),
            _ => {}
        }
    }
    anyhow::bail!("etcd txn on {}: neither created nor found", keys[0])
}

/// Group commit of enrollments: the creates that queue up while one etcd
/// transaction is in flight go into the next one (up to etcd's limit of
/// operations per transaction). If any key of a batch exists, each is
/// retried on its own so that one answer does not depend on another.
pub(super) async fn create_batches(
    etcd: Etcd,
    mut rx: tokio::sync::mpsc::UnboundedReceiver<CreateJob>,
) {
    while let Some(first) = rx.recv().await {
        let mut ops = first.0.len();
        let mut batch = vec![first];
        // Linger briefly: an etcd transaction costs about a millisecond of
        // etcd CPU however many keys it writes.
        let linger = tokio::time::Instant::now() + BATCH_LINGER;
        let mut held = None;
        while ops < MAX_TXN_OPS {
            match tokio::time::timeout_at(linger, rx.recv()).await {
                Ok(Some(job)) if ops + job.0.len() > MAX_TXN_OPS => {
                    held = Some(job);
                    break;
                }
                Ok(Some(job)) => {
                    ops += job.0.len();
                    batch.push(job);
                }
                Ok(None) | Err(_) => break,
            }
        }
        commit(&etcd, batch).await;
        if let Some(job) = held {
            commit(&etcd, vec![job]).await;
        }
    }
}

/// One transaction for the whole batch if its keys are distinct and none
/// exists; else each group on its own, so that one answer does not depend
/// on another.
async fn commit(etcd: &Etcd, batch: Vec<CreateJob>) {
    let mut keys: Vec<&str> = batch
        .iter()
        .flat_map(|(group, _)| group.iter().map(|(k, _)| k.as_str()))
        .collect();
    let total = keys.len();
    keys.sort_unstable();
    keys.dedup();
    if batch.len() > 1 && keys.len() == total {
        let entries: Vec<(String, Vec<u8>)> = batch
            .iter()
            .flat_map(|(group, _)| group.iter().cloned())
            .collect();
        match etcd.create_all(&entries).await {
            Ok(true) => {
                for (_, reply) in batch {
                    let _ = reply.send(Ok(Created::Done));
                }
                return;
            }
            Ok(false) => {}
            Err(e) => {
                for (_, reply) in batch {
                    let _ = reply.send(Err(anyhow::anyhow!("{e:#}")));
                }
                return;
            }
        }
    }
    for (group, reply) in batch {
        let etcd = etcd.clone();
        tokio::spawn(async move {
            let _ = reply.send(create_group(&etcd, &group).await);
        });
    }
}
