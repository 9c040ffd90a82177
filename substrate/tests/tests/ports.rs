//! Loopback ports for the servers a test starts (etcd, the API, agents).
//!
//! Asking the kernel for port 0 and closing the socket is racy twice over:
//! the kernel may hand the same port to the next caller in this process (two
//! etcd listeners on one port), and an outgoing connection may take it from
//! the ephemeral range before the server binds it. So ports come from below
//! the ephemeral range, never twice in one process, and only if nothing holds
//! them now. Shared by the substrate's and the node agent's tests.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, TcpListener};
use std::sync::Mutex;

/// Ports this process has handed out.
static GIVEN: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());

/// The lowest port handed out.
const FIRST: u16 = 10_000;

/// The first port of the kernel's ephemeral range (`ip_local_port_range`).
fn ephemeral_start() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .filter(|start| *start > FIRST + 1_000)
        .unwrap_or(32_768)
}

/// A TCP port on 127.0.0.1 that nothing holds, below the ephemeral range,
/// never returned before in this process.
pub fn free_port() -> u16 {
    let end = ephemeral_start();
    let span = u32::from(end - FIRST);
    // Test binaries of one run start at different places in the range.
    let start = std::process::id() % span;
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    for i in 0..span {
        let port = FIRST + ((start + i) % span) as u16;
        if given.contains(&port) {
            continue;
        }
        if TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
            given.insert(port);
            return port;
        }
    }
    panic!("no free loopback port in {FIRST}..{end}")
}
