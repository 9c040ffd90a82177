//! What one caller may take from the API: connections (global and per
//! source address), time (TLS handshake, request headers, the whole
//! request), request body size, and the rate of lookups the server makes on
//! a caller's behalf ([`RateLimit`]). The accept loop ([`super::server`])
//! enforces the connection limits and timeouts.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The API's limits; [`Limits::default`] is what a node serves with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Open connections in all; one more is closed at once.
    pub connections: usize,
    /// Open connections from one source (an IPv4 address or an IPv6 /64).
    pub connections_per_source: usize,
    /// Time from accepting a connection to the end of its TLS handshake.
    pub handshake_timeout: Duration,
    /// Time a connection has to send a request's headers, counted from
    /// when the server starts waiting for them (an idle keep-alive
    /// connection is closed after it too).
    pub header_read_timeout: Duration,
    /// Time for a whole request once its headers are in: reading the body
    /// (408 after it) and answering (503 after it).
    pub request_timeout: Duration,
    /// Bytes of a request body, on every route (413 above it).
    pub max_body: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            connections: 4096,
            connections_per_source: 256,
            handshake_timeout: Duration::from_secs(5),
            header_read_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
            max_body: 64 * 1024,
        }
    }
}

impl Limits {
    /// Warns if the open-files limit is below the connection limit (with
    /// room for etcd connections and the server's own files): a connection
    /// would then fail to be accepted rather than be refused by a limit.
    pub(super) fn check_nofile(&self) {
        let soft = rustix::process::getrlimit(rustix::process::Resource::Nofile).current;
        let needed = self.connections as u64 + 256;
        if let Some(soft) = soft.filter(|soft| *soft < needed) {
            tracing::warn!(
                "the open-files limit ({soft}) is below the connection limit ({}) plus 256; \
                 raise RLIMIT_NOFILE (LimitNOFILE=)",
                self.connections
            );
        }
    }
}

/// The open connections, in all and per source.
#[derive(Debug, Clone)]
pub(super) struct Connections {
    limits: (usize, usize),
    open: Arc<Mutex<Open>>,
}

#[derive(Debug, Default)]
struct Open {
    total: usize,
    per_source: HashMap<IpAddr, usize>,
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refused {
    Global,
    PerSource,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Refused::Global => "the server's connection limit",
            Refused::PerSource => "the connection limit of its source address",
        })
    }
}

/// One open connection, counted until dropped.
#[derive(Debug)]
pub(super) struct Permit {
    source: IpAddr,
    open: Arc<Mutex<Open>>,
}

impl Connections {
    pub(super) fn new(limits: &Limits) -> Connections {
        Connections {
            limits: (limits.connections, limits.connections_per_source),
            open: Default::default(),
        }
    }

    /// Counts a new connection from `peer`, or refuses it if a limit is reached.
    pub(super) fn admit(&self, peer: IpAddr) -> Result<Permit, Refused> {
        let source = source_of(peer);
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if open.total >= self.limits.0 {
            return Err(Refused::Global);
        }
        let n = open.per_source.entry(source).or_default();
        if *n >= self.limits.1 {
            return Err(Refused::PerSource);
        }
        *n += 1;
        open.total += 1;
        Ok(Permit {
            source,
            open: self.open.clone(),
        })
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        open.total = open.total.saturating_sub(1);
        if let Some(n) = open.per_source.get_mut(&self.source) {
            *n -= 1;
            if *n == 0 {
                open.per_source.remove(&self.source);
            }
        }
    }
}

/// The source a connection counts against: an IPv4 address (also when
/// mapped into IPv6), or the /64 of an IPv6 address (one host usually has
/// a whole /64).
fn source_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(
                u128::from(v6) & 0xffff_ffff_ffff_ffff_0000_0000_0000_0000,
            )),
        },
    }
}

/// A token bucket: `burst` events at once, then `per_second` on average.
#[derive(Debug)]
pub(super) struct RateLimit {
    per_second: f64,
    burst: f64,
    tokens: f64,
    at: Instant,
}

impl RateLimit {
    pub(super) fn new(per_second: u32, burst: u32, now: Instant) -> RateLimit {
        RateLimit {
            per_second: f64::from(per_second),
            burst: f64::from(burst),
            tokens: f64::from(burst),
            at: now,
        }
    }

    /// Takes one token if there is one at `now`.
    pub(super) fn take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.burst);
        self.at = now.max(self.at);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Raises this process's soft limit of open files (RLIMIT_NOFILE) to its
/// hard limit, so that the connection limit and not the file limit bounds
/// the connections the server holds. Returns the new soft limit (`None`:
/// unlimited).
pub fn raise_nofile_limit() -> std::io::Result<Option<u64>> {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        setrlimit(
            Resource::Nofile,
            Rlimit {
                current: limit.maximum,
                maximum: limit.maximum,
            },
        )?;
    }
    Ok(getrlimit(Resource::Nofile).current)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_source_over_its_limit_is_refused_and_others_are_not() {
        let c = Connections::new(&Limits {
            connections: 5,
            connections_per_source: 2,
            ..Limits::default()
        });
        let a1 = c.admit(ip("10.0.0.1")).unwrap();
        let _a2 = c.admit(ip("10.0.0.1")).unwrap();
        assert_eq!(c.admit(ip("10.0.0.1")).unwrap_err(), Refused::PerSource);
        // The same host through an IPv4-mapped address counts as itself.
        assert_eq!(
            c.admit(ip("::ffff:10.0.0.1")).unwrap_err(),
            Refused::PerSource
        );
        let _b = c.admit(ip("10.0.0.2")).unwrap();
        // A closed connection frees its place.
        drop(a1);
        let _a3 = c.admit(ip("10.0.0.1")).unwrap();
    }

    #[test]
    fn the_global_limit_holds_across_sources() {
        let c = Connections::new(&Limits {
            connections: 3,
            connections_per_source: 3,
            ..Limits::default()
        });
        let held: Vec<_> = ["10.0.0.1", "10.0.0.2", "10.0.0.3"]
            .iter()
            .map(|s| c.admit(ip(s)).unwrap())
            .collect();
        assert_eq!(c.admit(ip("10.0.0.4")).unwrap_err(), Refused::Global);
        drop(held);
        assert_eq!(c.open.lock().unwrap().total, 0);
        assert!(c.open.lock().unwrap().per_source.is_empty());
        c.admit(ip("10.0.0.4")).unwrap();
    }

    #[test]
    fn an_ipv6_source_is_its_64() {
        let c = Connections::new(&Limits {
            connections_per_source: 1,
            ..Limits::default()
        });
        let _a = c.admit(ip("2001:db8:1:2::1")).unwrap();
        assert_eq!(
            c.admit(ip("2001:db8:1:2:ffff::9")).unwrap_err(),
            Refused::PerSource
        );
        c.admit(ip("2001:db8:1:3::1")).unwrap();
    }

    #[test]
    fn rate_limit_allows_a_burst_then_the_rate() {
        let t0 = Instant::now();
        let mut r = RateLimit::new(10, 3, t0);
        assert!((0..3).all(|_| r.take(t0)));
        assert!(!r.take(t0));
        // 100 ms later: one more token.
        let t1 = t0 + Duration::from_millis(100);
        assert!(r.take(t1));
        assert!(!r.take(t1));
        // Never more than the burst, however long it was idle.
        let t2 = t1 + Duration::from_secs(3600);
        assert_eq!((0..10).filter(|_| r.take(t2)).count(), 3);
        // A clock that goes back does not add tokens.
        assert!(!r.take(t0));
    }

    #[test]
    fn nofile_soft_limit_is_raised_to_the_hard_limit() {
        use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
        let before = getrlimit(Resource::Nofile);
        if let Some(hard) = before.maximum {
            // Start from a lower soft limit, as under a default systemd unit.
            setrlimit(
                Resource::Nofile,
                Rlimit {
                    current: Some(hard.min(1024) - 1),
                    maximum: Some(hard),
                },
            )
            .unwrap();
        }
        assert_eq!(raise_nofile_limit().unwrap(), before.maximum);
        assert_eq!(getrlimit(Resource::Nofile).current, before.maximum);
    }
}
