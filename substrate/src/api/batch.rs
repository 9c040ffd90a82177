//! Group commit of enrollments.

use std::time::Duration;

use crate::etcd::{Etcd, MAX_TXN_OPS};

/// How long the group-commit writer waits for more enrollments.
const BATCH_LINGER: Duration = Duration::from_millis(2);

/// The answer to a compare-and-create: `None` if created, else the stored
/// value and its mod revision.
pub(super) type Created = anyhow::Result<Option<(Vec<u8>, i64)>>;

/// A compare-and-create of one key and where its answer goes.
pub(super) type CreateJob = (String, Vec<u8>, tokio::sync::oneshot::Sender<Created>);

/// Group commit of enrollments: the creates that queue up while one etcd
/// transaction is in flight go into the next one (up to etcd's limit of
/// operations per transaction). If any key of a batch exists, each is
/// retried on its own so that one answer does not depend on another.
pub(super) async fn create_batches(
    etcd: Etcd,
    mut rx: tokio::sync::mpsc::UnboundedReceiver<CreateJob>,
) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        // Linger briefly: an etcd transaction costs about a millisecond of
        // etcd CPU however many keys it writes.
        let linger = tokio::time::Instant::now() + BATCH_LINGER;
        while batch.len() < MAX_TXN_OPS {
            match tokio::time::timeout_at(linger, rx.recv()).await {
                Ok(Some(job)) => batch.push(job),
                Ok(None) | Err(_) => break,
            }
        }
        let mut keys: Vec<&str> = batch.iter().map(|(k, _, _)| k.as_str()).collect();
        keys.sort_unstable();
        keys.dedup();
        if batch.len() > 1 && keys.len() == batch.len() {
            let entries: Vec<(String, Vec<u8>)> = batch
                .iter()
                .map(|(k, v, _)| (k.clone(), v.clone()))
                .collect();
            match etcd.create_all(&entries).await {
                Ok(true) => {
                    for (_, _, reply) in batch {
                        let _ = reply.send(Ok(None));
                    }
                    continue;
                }
                Ok(false) => {}
                Err(e) => {
                    for (_, _, reply) in batch {
                        let _ = reply.send(Err(anyhow::anyhow!("{e:#}")));
                    }
                    continue;
                }
            }
        }
        for (key, value, reply) in batch {
            let etcd = etcd.clone();
            tokio::spawn(async move {
                let _ = reply.send(etcd.create_or_get(&key, &value).await);
            });
        }
    }
}
