//! The one retry helper: what is retried, with which backoff, until which
//! deadline.
//!
//! Every wait of the node agent and the API client goes through
//! [`Retry::run`]: an attempt says whether it is done, failed for good
//! ([`Attempt::Fail`]: a refusal, a pin mismatch) or may succeed later
//! ([`Attempt::Again`]: unreachable, not ready yet). The last `Again` error is
//! returned once the deadline has passed.
//!
//! It lives in `globular-substrate` because its callers are async (tokio) and
//! all of them talk to the substrate: the agent's waits for etcd and the API,
//! its membership changes, and enrollment through the [`crate::client`].

use std::future::Future;
use std::time::Duration;

/// The outcome of one attempt.
#[derive(Debug)]
pub enum Attempt<T, E> {
    /// Done: return this.
    Done(T),
    /// Failed, may succeed later: wait and try again (until the deadline).
    Again(E),
    /// Failed for good: return this error now.
    Fail(E),
}

/// How long to keep trying and how long to wait between attempts: the
/// first wait is `initial`, each next one doubles, up to `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry {
    /// How long after the first attempt no new attempt starts.
    pub deadline: Duration,
    pub initial: Duration,
    pub max: Duration,
}

impl Retry {
    /// Attempts every `interval` until `deadline`.
    pub const fn every(interval: Duration, deadline: Duration) -> Retry {
        Retry {
            deadline,
            initial: interval,
            max: interval,
        }
    }

    /// Runs `attempt` until it is done or fails for good, or the deadline
    /// has passed (then its last error is returned).
    pub async fn run<T, E, F, Fut>(&self, mut attempt: F) -> Result<T, E>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Attempt<T, E>>,
    {
        let deadline = tokio::time::Instant::now() + self.deadline;
        let mut wait = self.initial;
        loop {
            match attempt().await {
                Attempt::Done(value) => return Ok(value),
                Attempt::Fail(e) => return Err(e),
                Attempt::Again(e) if tokio::time::Instant::now() >= deadline => return Err(e),
                Attempt::Again(_) => {}
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(self.max);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap()
    }

    #[test]
    fn retries_until_done() {
        let mut calls = 0;
        let policy = Retry::every(Duration::from_millis(10), Duration::from_secs(1));
        let result: Result<u32, &str> = runtime().block_on(policy.run(|| {
            calls += 1;
            let n = calls;
            async move {
                if n < 3 {
                    Attempt::Again("not yet")
                } else {
                    Attempt::Done(n)
                }
            }
        }));
        assert_eq!(result, Ok(3));
    }

    #[test]
    fn a_final_failure_is_not_retried() {
        let mut calls = 0;
        let policy = Retry::every(Duration::from_millis(10), Duration::from_secs(1));
        let result: Result<(), &str> = runtime().block_on(policy.run(|| {
            calls += 1;
            async { Attempt::Fail("refused") }
        }));
        assert_eq!((result, calls), (Err("refused"), 1));
    }

    #[test]
    fn gives_the_last_error_after_the_deadline_with_backoff() {
        let policy = Retry {
            deadline: Duration::from_millis(1000),
            initial: Duration::from_millis(100),
            max: Duration::from_millis(400),
        };
        let rt = runtime();
        let start = rt.block_on(async { tokio::time::Instant::now() });
        let mut waits = Vec::new();
        let result: Result<(), usize> = rt.block_on(policy.run(|| {
            waits.push(start.elapsed().as_millis());
            let n = waits.len();
            async move { Attempt::Again(n) }
        }));
        // Attempts at 0, 100, 300, 700, 1100 ms: 100, 200, 400, 400 apart.
        assert_eq!(waits, [0, 100, 300, 700, 1100]);
        assert_eq!(result, Err(5));
    }
}
