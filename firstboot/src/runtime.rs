//! The one tokio runtime construction of the `globular` binary (and of its
//! integration tests).

use std::future::Future;

use anyhow::Context as _;

/// How many threads run the tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Threads {
    /// The calling thread only: a CLI command.
    One,
    /// A fixed number of worker threads: the agent.
    Workers(usize),
    /// One worker per CPU: the substrate API.
    PerCpu,
}

/// A runtime with I/O and timers.
pub fn build(threads: Threads) -> anyhow::Result<tokio::runtime::Runtime> {
    let mut builder = match threads {
        Threads::One => tokio::runtime::Builder::new_current_thread(),
        Threads::Workers(_) | Threads::PerCpu => tokio::runtime::Builder::new_multi_thread(),
    };
    if let Threads::Workers(n) = threads {
        builder.worker_threads(n);
    }
    builder
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// Runs `future` to completion on a new runtime.
pub fn block_on<T>(
    threads: Threads,
    future: impl Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    build(threads)?.block_on(future)
}
