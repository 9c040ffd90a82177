//! Cluster-wide locks (`Etcd::lock`) on a real etcd: one holder at a time,
//! a released lock goes to the next waiter, a holder that stopped renewing
//! (a crash) loses it one lease TTL later, the same holder takes its own
//! lock over, and a waiter that runs out of time names the holder.

use std::time::{Duration, Instant};

use crate::harness::Substrate;

const KEY: &str = "/globular/locks/packages/test";

#[test]
fn one_holder_at_a_time_and_a_crashed_holder_expires() {
    let (s, _) = Substrate::start();
    let etcd = s.etcd_db.clone();
    s.runtime.block_on(async {
        // Renewed every 2 s: a loaded machine's stalls stay well inside it.
        let ttl = Duration::from_secs(6);
        let long = Duration::from_secs(30);
        let cp1 = etcd.lock(KEY, "cp-1", ttl, long).await.unwrap();
        let (value, _) = etcd.get(KEY).await.unwrap().expect("the lock key");
        assert_eq!(value, b"cp-1");

        // Held and renewed: a waiter gives up after its wait, naming the
        // holder, even though the wait is longer than the lease's TTL.
        let t = Instant::now();
        let err = etcd
            .lock(KEY, "cp-2", ttl, Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(t.elapsed() >= Duration::from_secs(5), "{:?}", t.elapsed());
        assert!(format!("{err:#}").contains("held by cp-1"), "{err:#}");

        // Released: the key goes with the lease at once (not a TTL later),
        // and the waiter gets the lock.
        let waiter = {
            let etcd = etcd.clone();
            tokio::spawn(async move { etcd.lock(KEY, "cp-2", ttl, long).await })
        };
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!waiter.is_finished());
        cp1.release().await.unwrap();
        let now = etcd.get(KEY).await.unwrap().map(|(v, _)| v);
        assert!(now.is_none() || now.as_deref() == Some(b"cp-2"), "{now:?}");
        let cp2 = waiter.await.unwrap().unwrap();
        assert_eq!(etcd.get(KEY).await.unwrap().unwrap().0, b"cp-2");

        // cp-2 "crashes": it stops renewing. Its own next run takes the
        // lock over at once; anyone else gets it within a TTL and a poll.
        drop(cp2);
        let again = etcd.lock(KEY, "cp-2", ttl, long).await.unwrap();
        drop(again);
        let t = Instant::now();
        let cp3 = etcd.lock(KEY, "cp-3", ttl, long).await.unwrap();
        let waited = t.elapsed();
        assert!(
            waited >= Duration::from_secs(1) && waited < ttl + Duration::from_secs(10),
            "{waited:?}"
        );
        cp3.release().await.unwrap();
        assert_eq!(etcd.get(KEY).await.unwrap(), None);
    });
}
