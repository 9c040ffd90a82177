//! Response-rate limiting per source over UDP: a spoofed source cannot
//! turn the authority into a flood aimed at it.
//!
//! Each source network (an IPv4 /24, an IPv6 /56: one host's or one site's
//! worth of addresses) has a token bucket of `burst` responses refilled at
//! `rate` per second. A response over the limit is dropped, except every
//! `slip`-th one, which goes out truncated (TC, no records): a real client
//! behind that network retries over TCP, which needs a handshake and so a
//! real address, and TCP is never limited here. Buckets live in a few
//! shards, each behind its own lock; a shard that grows past
//! [`MAX_SOURCES`] forgets sources idle for a second.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Instant;

/// Sources remembered per shard before idle ones are dropped.
const MAX_SOURCES: usize = 16384;
const SHARDS: usize = 16;

/// The limit per source network.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    /// Responses per second.
    pub rate: f64,
    /// Responses that may go out at once.
    pub burst: f64,
    /// Of the responses over the limit, every `slip`-th is sent truncated
    /// (0: none).
    pub slip: u32,
}

impl Default for RateLimit {
    /// 200 responses a second, bursts of 400: far above what a node's
    /// resolver asks of one zone, far below a flood.
    fn default() -> RateLimit {
        RateLimit {
            rate: 200.0,
            burst: 400.0,
            slip: 2,
        }
    }
}

/// What to do with a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Send,
    /// Send it truncated (TC, no records).
    Slip,
    Drop,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
    over: u32,
}

/// The buckets of every source network.
#[derive(Debug)]
pub struct Limiter {
    limit: RateLimit,
    shards: Vec<Mutex<HashMap<[u8; 8], Bucket>>>,
}

impl Limiter {
    pub fn new(limit: RateLimit) -> Limiter {
        Limiter {
            limit,
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
        }
    }

    /// Counts one response to `source` at `now`.
    pub fn check(&self, source: IpAddr, now: Instant) -> Verdict {
        let key = network(source);
        let shard = usize::from(key[2] ^ key[5] ^ key[6]) % SHARDS;
        let mut buckets = self.shards[shard].lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() >= MAX_SOURCES && !buckets.contains_key(&key) {
            buckets.retain(|_, b| now.duration_since(b.at).as_secs_f64() < 1.0);
        }
        let limit = &self.limit;
        let bucket = buckets.entry(key).or_insert(Bucket {
            tokens: limit.burst,
            at: now,
            over: 0,
        });
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * limit.rate).min(limit.burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            return Verdict::Send;
        }
        bucket.over = bucket.over.wrapping_add(1);
        if limit.slip > 0 && bucket.over.is_multiple_of(limit.slip) {
            Verdict::Slip
        } else {
            Verdict::Drop
        }
    }
}

/// The source network of `ip`: its /24 or /56, tagged by family.
fn network(ip: IpAddr) -> [u8; 8] {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            [4, o[0], o[1], o[2], 0, 0, 0, 0]
        }
        IpAddr::V6(v6) => {
            let o = v6.octets();
            [6, o[0], o[1], o[2], o[3], o[4], o[5], o[6]]
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_source_over_its_rate_is_dropped_with_every_second_slipped() {
        let limiter = Limiter::new(RateLimit {
            rate: 10.0,
            burst: 5.0,
            slip: 2,
        });
        let now = Instant::now();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let same_net: IpAddr = "10.0.0.200".parse().unwrap();
        let other: IpAddr = "10.0.1.1".parse().unwrap();
        for _ in 0..5 {
            assert_eq!(limiter.check(a, now), Verdict::Send);
        }
        assert_eq!(limiter.check(same_net, now), Verdict::Drop);
        assert_eq!(limiter.check(a, now), Verdict::Slip);
        assert_eq!(limiter.check(other, now), Verdict::Send);
        // 100 ms later one token is back.
        let later = now + Duration::from_millis(100);
        assert_eq!(limiter.check(a, later), Verdict::Send);
        assert_eq!(limiter.check(a, later), Verdict::Drop);
    }

    #[test]
    fn many_sources_are_forgotten_when_idle() {
        let limiter = Limiter::new(RateLimit::default());
        let now = Instant::now();
        for i in 0..(MAX_SOURCES * SHARDS * 2) as u32 {
            let ip = IpAddr::from(std::net::Ipv4Addr::from(i << 8));
            limiter.check(ip, now + Duration::from_secs(u64::from(i / 50_000) * 2));
        }
        let held: usize = limiter.shards.iter().map(|s| s.lock().unwrap().len()).sum();
        assert!(held <= MAX_SOURCES * SHARDS, "{held}");
    }
}
