//! Integration tests of the substrate: the API started in-process (an
//! injected `127.0.0.1:0` listener and a shutdown future) against a real
//! etcd (3.6, built from `components/etcd`) on loopback, called through the one client.

#[path = "tests/harness.rs"]
mod harness;
#[path = "tests/ports.rs"]
mod ports;

#[path = "tests/api.rs"]
mod api;

#[path = "tests/dns.rs"]
mod dns;

#[path = "tests/abuse.rs"]
mod abuse;
#[path = "tests/kubernetes.rs"]
mod kubernetes;
#[path = "tests/locks.rs"]
mod locks;
#[path = "tests/space.rs"]
mod space;
#[path = "tests/trust.rs"]
mod trust;
