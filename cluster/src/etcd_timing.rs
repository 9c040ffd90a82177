//! etcd's Raft timing for a cluster: how often a leader sends heartbeats
//! and how long a follower waits for one before it calls an election
//! (`builder cluster new --etcd-heartbeat`, the seed's
//! `cluster.etcd_heartbeat_ms`; docs/operations.md).

/// etcd's own default heartbeat interval, in milliseconds.
pub const DEFAULT_HEARTBEAT_MS: u64 = 100;
/// The election timeout is this many heartbeat intervals: etcd's defaults
/// (100 ms, 1 s) and its tuning guide's ratio.
pub const ELECTION_HEARTBEATS: u64 = 10;
/// The shortest heartbeat interval a cluster may have, in milliseconds.
pub const MIN_HEARTBEAT_MS: u64 = 10;
/// The longest: its election timeout is etcd's maximum, 50 s.
pub const MAX_HEARTBEAT_MS: u64 = 5000;

pub fn default_heartbeat_ms() -> u64 {
    DEFAULT_HEARTBEAT_MS
}

pub fn is_default_heartbeat(ms: &u64) -> bool {
    *ms == DEFAULT_HEARTBEAT_MS
}

/// `ms` if it is a heartbeat interval etcd accepts with its election
/// timeout ([`election_timeout_ms`]).
pub fn check_heartbeat(ms: u64) -> Result<u64, String> {
    if !(MIN_HEARTBEAT_MS..=MAX_HEARTBEAT_MS).contains(&ms) {
        return Err(format!(
            "an etcd heartbeat interval must be between {MIN_HEARTBEAT_MS} and {MAX_HEARTBEAT_MS} ms, not {ms} ms"
        ));
    }
    Ok(ms)
}

/// The election timeout that goes with a heartbeat interval.
pub fn election_timeout_ms(heartbeat_ms: u64) -> u64 {
    heartbeat_ms.saturating_mul(ELECTION_HEARTBEATS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heartbeats_outside_what_etcd_accepts_are_refused() {
        assert_eq!(check_heartbeat(DEFAULT_HEARTBEAT_MS), Ok(100));
        assert_eq!(election_timeout_ms(DEFAULT_HEARTBEAT_MS), 1000);
        assert_eq!(election_timeout_ms(MAX_HEARTBEAT_MS), 50_000);
        for bad in [0, 9, 5001, u64::MAX] {
            let err = check_heartbeat(bad).unwrap_err();
            assert!(err.contains(&format!("not {bad} ms")), "{err}");
        }
    }
}
