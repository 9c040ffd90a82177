//! A private L2 network between VMs: a hub in the test process.
//!
//! Every VM gets a QEMU `dgram` netdev that sends its Ethernet frames as UDP
//! datagrams to the hub on `127.0.0.1` and receives on its own loopback port.
//! The hub repeats each frame to every other VM of the network, like an
//! Ethernet hub. Nothing leaves the loopback interface: the guests' addresses
//! (from their seeds) exist only inside the VMs.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context as _;

/// A hub and the VM ports attached to it. Dropping it stops the hub.
#[derive(Debug)]
pub struct Network {
    hub: SocketAddr,
    ports: Arc<Mutex<Vec<SocketAddr>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Network {
    /// Starts a hub on a free loopback UDP port.
    pub fn new() -> anyhow::Result<Network> {
        let socket = UdpSocket::bind("127.0.0.1:0").context("binding the network hub")?;
        socket.set_read_timeout(Some(Duration::from_millis(200)))?;
        let hub = socket.local_addr()?;
        let ports: Arc<Mutex<Vec<SocketAddr>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (ports, stop) = (ports.clone(), stop.clone());
            std::thread::Builder::new()
                .name("l2-hub".into())
                .spawn(move || repeat(&socket, &ports, &stop))?
        };
        tracing::info!("network hub on {hub}");
        Ok(Network {
            hub,
            ports,
            stop,
            thread: Some(thread),
        })
    }

    /// The `-netdev` value attaching one NIC to this network (a new loopback
    /// port for it). `id` names the netdev.
    pub fn netdev(&self, id: &str) -> anyhow::Result<String> {
        // A port the kernel just handed out; QEMU binds it right after.
        let port = UdpSocket::bind("127.0.0.1:0")
            .and_then(|s| s.local_addr())
            .context("choosing a loopback port for a VM NIC")?;
        self.ports
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(port);
        Ok(format!(
            "dgram,id={id},local.type=inet,local.host=127.0.0.1,local.port={},\
             remote.type=inet,remote.host=127.0.0.1,remote.port={}",
            port.port(),
            self.hub.port()
        ))
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The hub: every frame from a known port goes to every other known port.
fn repeat(socket: &UdpSocket, ports: &Mutex<Vec<SocketAddr>>, stop: &AtomicBool) {
    // Ethernet frames with a virtio-net header fit in 64 KiB.
    let mut frame = vec![0u8; 65536];
    while !stop.load(Ordering::Relaxed) {
        let (len, from) = match socket.recv_from(&mut frame) {
            Ok(got) => got,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue
            }
            Err(e) => {
                tracing::warn!("network hub: {e}");
                continue;
            }
        };
        let targets: Vec<SocketAddr> = {
            let ports = ports.lock().unwrap_or_else(|e| e.into_inner());
            if !ports.contains(&from) {
                continue;
            }
            ports.iter().filter(|p| **p != from).copied().collect()
        };
        for to in targets {
            // A VM that is down refuses the datagram: its frames are lost,
            // as on a cable to a powered-off machine.
            let _ = socket.send_to(&frame[..len], to);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hub_repeats_frames_to_the_other_ports_only() {
        let net = Network::new().unwrap();
        let parse = |netdev: &str| -> UdpSocket {
            let port = netdev
                .split(',')
                .find_map(|kv| kv.strip_prefix("local.port="))
                .unwrap();
            let s = UdpSocket::bind(format!("127.0.0.1:{port}")).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            s
        };
        let a = parse(&net.netdev("a").unwrap());
        let b = parse(&net.netdev("b").unwrap());
        let c = parse(&net.netdev("c").unwrap());
        a.send_to(b"frame from a", net.hub).unwrap();
        let mut buf = [0u8; 64];
        for s in [&b, &c] {
            let n = s.recv(&mut buf).unwrap();
            assert_eq!(&buf[..n], b"frame from a");
        }
        a.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        assert!(a.recv(&mut buf).is_err(), "a frame came back to its sender");
        // Strangers are not repeated.
        let stranger = UdpSocket::bind("127.0.0.1:0").unwrap();
        stranger.send_to(b"spoof", net.hub).unwrap();
        b.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        assert!(b.recv(&mut buf).is_err(), "a stranger's frame was repeated");
    }
}
