//! etcd's `NOSPACE` alarm on a real etcd with a small quota: writes stop,
//! `Etcd::recover_space` compacts, defragments and disarms, writes resume,
//! and every key keeps its latest value.

use crate::harness::Substrate;

const QUOTA: &str = "--quota-backend-bytes=8388608";

#[test]
fn a_full_backend_is_compacted_defragmented_and_writable_again() {
    let (s, _) = Substrate::start_with_etcd_args(&[QUOTA]);
    let etcd = s.etcd_db.clone();
    s.runtime.block_on(async {
        etcd.put("/globular/test/kept", b"kept").await.unwrap();
        // One key written over and over: its old revisions fill the quota.
        let value = vec![b'x'; 256 * 1024];
        let mut written = 0;
        let err = loop {
            match etcd.put("/globular/test/big", &value).await {
                Ok(()) => written += 1,
                Err(e) => break format!("{e:#}"),
            }
            assert!(written < 200, "8 MiB quota never reached");
        };
        assert!(err.contains("database space exceeded"), "{err}");
        let alarms = etcd.alarms().await.unwrap();
        assert!(alarms.iter().any(|a| a.kind == "NOSPACE"), "{alarms:?}");
        // Still refused: the alarm stays until it is disarmed.
        let again = etcd.put("/globular/test/small", b"s").await.unwrap_err();
        assert!(format!("{again:#}").contains("space exceeded"), "{again:#}");

        let done = etcd.recover_space().await.unwrap();
        assert_eq!(done.defragmented.len(), 1, "{done:?}");
        assert!(done.disarmed.iter().all(|a| a.kind == "NOSPACE"));
        assert!(!done.disarmed.is_empty(), "{done:?}");
        assert!(etcd.alarms().await.unwrap().is_empty());

        etcd.put("/globular/test/small", b"s").await.unwrap();
        assert_eq!(
            etcd.get("/globular/test/kept").await.unwrap().unwrap().0,
            b"kept"
        );
        assert_eq!(
            etcd.get("/globular/test/big").await.unwrap().unwrap().0,
            value
        );
        // A second run finds nothing to disarm and harms nothing.
        let twice = etcd.recover_space().await.unwrap();
        assert!(twice.disarmed.is_empty(), "{twice:?}");
        etcd.put("/globular/test/small", b"t").await.unwrap();
    });
}
