//! Feeds arbitrary bytes to the DNS request path (`dns::answer::respond`)
//! as a UDP and as a TCP request against a small zone. Dropping the input is
//! fine; a panic is a bug, and so is an answer that is not a well-formed
//! response to it or that is larger than the transport allows.

#![no_main]

use std::sync::OnceLock;

use globular_cluster::registry::{ClusterRecord, EnrollmentPolicy, ServiceRecord, API_SERVICE};
use globular_substrate::dns::answer::{respond, truncated, Transport, UDP_PAYLOAD};
use globular_substrate::dns::{Registry, Zone, ZoneNode};
use hickory_proto::op::{Message, MessageType};
use libfuzzer_sys::fuzz_target;

fn zone() -> &'static Zone {
    static ZONE: OnceLock<Zone> = OnceLock::new();
    ZONE.get_or_init(|| {
        let node = |name: &str, address: &str| ZoneNode {
            name: name.into(),
            addresses: vec![address.into()],
        };
        let service = |i: usize| ServiceRecord {
            name: "example.Big".into(),
            id: format!("instance-{i}"),
            node: "w1".into(),
            address: format!("10.1.0.{i}"),
            port: 8000,
            protocol: if i % 2 == 0 { "udp".into() } else { "https".into() },
            tags: Vec::new(),
            metadata: Default::default(),
            registered_at: 0,
        };
        Zone::build(&Registry {
            cluster: ClusterRecord {
                name: "fuzz".into(),
                id: "0".repeat(32),
                ca_cert_hash: String::new(),
                policy: EnrollmentPolicy::default(),
                domain: "example.internal".into(),
            },
            nodes: vec![
                node("cp1", "10.0.0.1/24"),
                node("w1", "fd00::21/64"),
            ],
            services: (0..80)
                .map(service)
                .chain([ServiceRecord {
                    name: API_SERVICE.into(),
                    id: "cp1".into(),
                    node: "cp1".into(),
                    address: "10.0.0.1".into(),
                    port: 10016,
                    ..service(0)
                }])
                .collect(),
            revision: 7,
        })
        .expect("the fuzz zone")
    })
}

fuzz_target!(|data: &[u8]| {
    for transport in [Transport::Udp, Transport::Tcp] {
        let Some(response) = respond(Some(zone()), data, transport) else {
            continue;
        };
        if transport == Transport::Udp {
            assert!(response.len() <= usize::from(UDP_PAYLOAD));
        }
        assert!(response.len() <= 65535);
        let message = Message::from_vec(&response).expect("our response parses");
        assert_eq!(message.message_type(), MessageType::Response);
        assert_eq!(&response[..2], &data[..2], "the id is the request's");
        let tc = truncated(&response).expect("a response truncates");
        assert!(Message::from_vec(&tc).expect("parses").truncated());
    }
    let _ = respond(None, data, Transport::Udp);
});
