//! A private L2 network between VMs: a switch in the test process.
//!
//! Every VM gets a QEMU `dgram` netdev that sends its Ethernet frames as UDP
//! datagrams to the switch on `127.0.0.1` and receives on its own loopback
//! port. The switch learns which port each source MAC address sends from
//! and delivers a frame to that port only; broadcast, multicast and frames
//! for a MAC it has not seen yet go to every other port. (A hub that sent
//! every frame everywhere made each VM's emulated NIC and kernel take in,
//! and drop, all the other nodes' etcd and API traffic: CPU that the two
//! cores running four VMs under TCG do not have.) Nothing leaves the
//! loopback interface: the guests' addresses (from their seeds) exist only
//! inside the VMs.

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context as _;

/// The switch and the VM ports attached to it. Dropping it stops the switch.
#[derive(Debug)]
pub struct Network {
    hub: SocketAddr,
    ports: Arc<Mutex<Vec<SocketAddr>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Network {
    /// Starts the switch on a free loopback UDP port.
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
        // A port the kernel just handed out; QEMU binds it right after. The
        // kernel may hand out a port again once its socket is closed, so one
        // another NIC of this network has is skipped.
        let mut ports = self.ports.lock().unwrap_or_else(|e| e.into_inner());
        let port = loop {
            let port = UdpSocket::bind("127.0.0.1:0")
                .and_then(|s| s.local_addr())
                .context("choosing a loopback port for a VM NIC")?;
            if !ports.contains(&port) && port != self.hub {
                break port;
            }
        };
        ports.push(port);
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

/// Where a frame goes: the port its destination MAC was learned on, or
/// every port but the sender's (broadcast, multicast, not yet learned).
fn destinations(
    frame: &[u8],
    from: SocketAddr,
    ports: &[SocketAddr],
    learned: &mut HashMap<[u8; 6], SocketAddr>,
) -> Vec<SocketAddr> {
    let (Some(dst), Some(src)) = (frame.get(0..6), frame.get(6..12)) else {
        return Vec::new();
    };
    let mut mac = [0u8; 6];
    mac.copy_from_slice(src);
    // A unicast source (the group bit clear) is where replies go.
    if mac[0] & 1 == 0 {
        learned.insert(mac, from);
    }
    mac.copy_from_slice(dst);
    match learned.get(&mac) {
        Some(to) if mac[0] & 1 == 0 && *to != from && ports.contains(to) => vec![*to],
        _ => ports.iter().filter(|p| **p != from).copied().collect(),
    }
}

/// The switch: every frame from a known port goes where [`destinations`]
/// says.
fn repeat(socket: &UdpSocket, ports: &Mutex<Vec<SocketAddr>>, stop: &AtomicBool) {
    // Ethernet frames (QEMU's dgram netdev sends them without a virtio-net
    // header) fit in 64 KiB.
    let mut frame = vec![0u8; 65536];
    let mut learned = HashMap::new();
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
        let targets = {
            let ports = ports.lock().unwrap_or_else(|e| e.into_inner());
            if !ports.contains(&from) {
                continue;
            }
            destinations(&frame[..len], from, &ports, &mut learned)
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

    /// Unicast goes to the port its MAC was learned on, broadcast and
    /// unknown destinations to every other port.
    #[test]
    fn switch_delivers_unicast_to_the_learned_port_only() {
        let mac = |n: u8| [0x52, 0x54, 0, 0, 0, n];
        let frame = |dst: [u8; 6], src: [u8; 6]| [&dst[..], &src[..], b"\x08\x00payload"].concat();
        let ports: Vec<SocketAddr> = (1..=3)
            .map(|n| format!("127.0.0.1:{}", 40000 + n).parse().unwrap())
            .collect();
        let (a, b, c) = (ports[0], ports[1], ports[2]);
        let mut learned = HashMap::new();
        // b's MAC is not known yet: flooded.
        assert_eq!(
            destinations(&frame(mac(2), mac(1)), a, &ports, &mut learned),
            [b, c]
        );
        // b answers: a's MAC was learned from the first frame.
        assert_eq!(
            destinations(&frame(mac(1), mac(2)), b, &ports, &mut learned),
            [a]
        );
        assert_eq!(
            destinations(&frame(mac(2), mac(1)), a, &ports, &mut learned),
            [b]
        );
        // Broadcast (ARP) goes everywhere else.
        let broadcast = [0xff; 6];
        assert_eq!(
            destinations(&frame(broadcast, mac(3)), c, &ports, &mut learned),
            [a, b]
        );
        // A runt is dropped, not a panic.
        assert!(destinations(b"short", a, &ports, &mut learned).is_empty());
        // A VM that moved (a reimaged node keeps its MAC on a new port).
        let d: SocketAddr = "127.0.0.1:40004".parse().unwrap();
        let ports = [ports.clone(), vec![d]].concat();
        assert_eq!(
            destinations(&frame(mac(9), mac(2)), d, &ports, &mut learned),
            [a, b, c]
        );
        assert_eq!(
            destinations(&frame(mac(2), mac(1)), a, &ports, &mut learned),
            [d]
        );
    }
}
