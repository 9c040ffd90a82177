//! One request in, one response out: the whole request path, with no I/O
//! (the fuzz target calls [`respond`] directly).
//!
//! - Anything that is not a well-formed query (shorter than a header, a
//!   response, a message hickory-proto cannot parse) is dropped: no answer,
//!   no panic.
//! - Opcodes other than QUERY: NOTIMP. Not exactly one question: FORMERR.
//!   EDNS version above 0: BADVERS. Classes other than IN, zone transfers
//!   (AXFR, IXFR), names outside the zone: REFUSED.
//! - `ANY` gets the minimal answer of RFC 8482: one synthesized HINFO
//!   (`"RFC8482" ""`).
//! - Unknown names: NXDOMAIN, known names without the type: NOERROR with no
//!   answer; both with the SOA in the authority section (RFC 2308).
//! - Size: over UDP, at most 512 bytes without EDNS, else the requester's
//!   payload size capped at ours ([`UDP_PAYLOAD`]). An answer that does not
//!   fit loses its additional section first, then everything but the
//!   question, with TC set: the client asks again over TCP.

use hickory_proto::op::{
    message::emit_message_parts, Edns, Header, Message, MessageType, OpCode, Query, ResponseCode,
};
use hickory_proto::rr::rdata::HINFO;
use hickory_proto::rr::{DNSClass, RData, Record, RecordType};
use hickory_proto::serialize::binary::BinEncoder;

use super::zone::{Lookup, Zone, NEGATIVE_TTL};

/// The largest UDP response we send and the payload size we advertise:
/// 1232 bytes, the DNS flag day 2020 value that avoids IP fragmentation.
pub const UDP_PAYLOAD: u16 = 1232;
/// The largest response without EDNS (RFC 1035).
const CLASSIC_UDP: usize = 512;
/// The length prefix of DNS over TCP allows no more.
const TCP_MAX: usize = 65535;

/// How the request came.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

/// The response to `request`, or `None` to drop it. `zone` is `None` until
/// the registry was read once: every query gets SERVFAIL then.
pub fn respond(zone: Option<&Zone>, request: &[u8], transport: Transport) -> Option<Vec<u8>> {
    // A header with QR set is a response: never answer one (no loops
    // between servers, no reflection of garbage).
    if request.len() < 12 || request[2] & 0x80 != 0 {
        return None;
    }
    let request = Message::from_vec(request).ok()?;
    let mut header = Header::response_from_request(request.header());
    header.set_message_type(MessageType::Response);
    let edns = request.extensions().as_ref().map(|_| {
        let mut edns = Edns::new();
        edns.set_max_payload(UDP_PAYLOAD);
        edns.set_version(0);
        edns
    });
    let limit = match transport {
        Transport::Tcp => TCP_MAX,
        Transport::Udp => match request.extensions() {
            Some(e) => usize::from(e.max_payload().clamp(CLASSIC_UDP as u16, UDP_PAYLOAD)),
            None => CLASSIC_UDP,
        },
    };
    let reply = Reply {
        header,
        edns: edns.as_ref(),
        limit,
    };
    let query = match request.queries() {
        [query] => query,
        _ => return reply.error(None, ResponseCode::FormErr),
    };
    if request.op_code() != OpCode::Query {
        return reply.error(Some(query), ResponseCode::NotImp);
    }
    if request
        .extensions()
        .as_ref()
        .is_some_and(|e| e.version() > 0)
    {
        return reply.error(Some(query), ResponseCode::BADVERS);
    }
    if query.query_class() != DNSClass::IN
        || matches!(query.query_type(), RecordType::AXFR | RecordType::IXFR)
    {
        return reply.error(Some(query), ResponseCode::Refused);
    }
    let Some(zone) = zone else {
        return reply.error(Some(query), ResponseCode::ServFail);
    };
    let name = query.name();
    let mut reply = reply;
    reply.header.set_authoritative(true);
    if query.query_type() == RecordType::ANY && zone.contains(name) {
        let hinfo = Record::from_rdata(
            name.clone(),
            NEGATIVE_TTL,
            RData::HINFO(HINFO::new("RFC8482".into(), String::new())),
        );
        return reply.send(query, std::slice::from_ref(&hinfo), &[], &[]);
    }
    match zone.lookup(name, query.query_type()) {
        Lookup::Answer {
            answers,
            additionals,
        } => reply.send(query, answers, &[], additionals),
        Lookup::NoData => reply.send(query, &[], zone.negative_soa(), &[]),
        Lookup::NxDomain => {
            reply.header.set_response_code(ResponseCode::NXDomain);
            reply.send(query, &[], zone.negative_soa(), &[])
        }
        Lookup::NotInZone => {
            reply.header.set_authoritative(false);
            reply.error(Some(query), ResponseCode::Refused)
        }
    }
}

/// `response` with every record dropped and TC set: what a rate-limited
/// source gets instead of a drop now and then ([`super::rrl`]).
pub fn truncated(response: &[u8]) -> Option<Vec<u8>> {
    let mut message = Message::from_vec(response).ok()?.truncate();
    message.set_authoritative(false);
    message.to_vec().ok()
}

/// A response being made: its header, OPT record and size limit.
struct Reply<'a> {
    header: Header,
    edns: Option<&'a Edns>,
    limit: usize,
}

impl Reply<'_> {
    fn error(mut self, query: Option<&Query>, code: ResponseCode) -> Option<Vec<u8>> {
        self.header.set_response_code(code);
        self.encode(query, &[], &[], &[])
    }

    /// The answer, or without its additional section, or truncated: the
    /// first that fits.
    fn send(
        mut self,
        query: &Query,
        answers: &[Record],
        authority: &[Record],
        additionals: &[Record],
    ) -> Option<Vec<u8>> {
        if let Some(full) = self.encode(Some(query), answers, authority, additionals) {
            return Some(full);
        }
        if !additionals.is_empty() {
            if let Some(fits) = self.encode(Some(query), answers, authority, &[]) {
                return Some(fits);
            }
        }
        self.header.set_truncated(true);
        self.encode(Some(query), &[], &[], &[])
    }

    /// The encoded message if it fits in the limit.
    fn encode(
        &self,
        query: Option<&Query>,
        answers: &[Record],
        authority: &[Record],
        additionals: &[Record],
    ) -> Option<Vec<u8>> {
        let mut buffer = Vec::with_capacity(self.limit.min(CLASSIC_UDP));
        let mut encoder = BinEncoder::new(&mut buffer);
        emit_message_parts(
            &self.header,
            &mut query.into_iter(),
            &mut answers.iter(),
            &mut authority.iter(),
            &mut additionals.iter(),
            self.edns,
            &[],
            &mut encoder,
        )
        .ok()?;
        (buffer.len() <= self.limit).then_some(buffer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::zone::tests_support::registry;
    use hickory_proto::rr::Name;

    fn query(name: &str, rtype: RecordType, edns: Option<u16>) -> Vec<u8> {
        let mut m = Message::new();
        m.set_id(7).set_recursion_desired(true);
        m.add_query(Query::query(Name::from_ascii(name).unwrap(), rtype));
        if let Some(size) = edns {
            let mut e = Edns::new();
            e.set_max_payload(size);
            m.set_edns(e);
        }
        m.to_vec().unwrap()
    }

    fn ask(zone: &Zone, name: &str, rtype: RecordType, edns: Option<u16>, t: Transport) -> Message {
        let bytes = respond(Some(zone), &query(name, rtype, edns), t).expect("an answer");
        Message::from_vec(&bytes).unwrap()
    }

    #[test]
    fn answers_nxdomain_refused_and_any() {
        let zone = Zone::build(&registry()).unwrap();
        let m = ask(
            &zone,
            "cp1.prod.globular.internal.",
            RecordType::A,
            None,
            Transport::Udp,
        );
        assert_eq!(m.response_code(), ResponseCode::NoError);
        assert!(m.authoritative() && m.recursion_desired() && !m.recursion_available());
        assert_eq!(m.id(), 7);
        assert_eq!(m.answers().len(), 1);
        let m = ask(
            &zone,
            "x.prod.globular.internal.",
            RecordType::A,
            None,
            Transport::Udp,
        );
        assert_eq!(m.response_code(), ResponseCode::NXDomain);
        assert_eq!(m.name_servers()[0].record_type(), RecordType::SOA);
        let m = ask(&zone, "example.com.", RecordType::A, None, Transport::Udp);
        assert_eq!(m.response_code(), ResponseCode::Refused);
        assert!(!m.authoritative());
        let m = ask(
            &zone,
            "cp1.prod.globular.internal.",
            RecordType::ANY,
            None,
            Transport::Udp,
        );
        assert_eq!(m.answers().len(), 1);
        assert_eq!(m.answers()[0].record_type(), RecordType::HINFO);
        let m = ask(
            &zone,
            "prod.globular.internal.",
            RecordType::AXFR,
            None,
            Transport::Tcp,
        );
        assert_eq!(m.response_code(), ResponseCode::Refused);
    }

    #[test]
    fn garbage_and_responses_are_dropped() {
        let zone = Zone::build(&registry()).unwrap();
        assert_eq!(respond(Some(&zone), &[], Transport::Udp), None);
        assert_eq!(respond(Some(&zone), &[0; 11], Transport::Udp), None);
        let mut response = query("cp1.prod.globular.internal.", RecordType::A, None);
        response[2] |= 0x80;
        assert_eq!(respond(Some(&zone), &response, Transport::Udp), None);
        let mut cut = query("cp1.prod.globular.internal.", RecordType::A, None);
        cut.truncate(20);
        assert_eq!(respond(Some(&zone), &cut, Transport::Udp), None);
    }

    #[test]
    fn no_zone_yet_is_servfail() {
        let q = query("cp1.prod.globular.internal.", RecordType::A, None);
        let m = Message::from_vec(&respond(None, &q, Transport::Udp).unwrap()).unwrap();
        assert_eq!(m.response_code(), ResponseCode::ServFail);
    }

    #[test]
    fn big_answers_are_truncated_over_udp_only() {
        let mut registry = registry();
        for i in 0..60 {
            registry
                .services
                .push(globular_cluster::registry::ServiceRecord {
                    id: format!("instance-number-{i}"),
                    address: format!("10.1.0.{i}"),
                    ..registry.services[0].clone()
                });
        }
        let zone = Zone::build(&registry).unwrap();
        let name = "_globular-substrateapi._tcp.prod.globular.internal.";
        let m = ask(&zone, name, RecordType::SRV, None, Transport::Udp);
        assert!(m.truncated() && m.answers().is_empty());
        let bytes = respond(
            Some(&zone),
            &query(name, RecordType::SRV, Some(4096)),
            Transport::Udp,
        )
        .unwrap();
        assert!(bytes.len() <= usize::from(UDP_PAYLOAD));
        let m = ask(&zone, name, RecordType::SRV, None, Transport::Tcp);
        assert!(!m.truncated());
        assert_eq!(m.answers().len(), 62);
        // A small EDNS answer fits whole and carries our payload size.
        let m = ask(
            &zone,
            "cp1.prod.globular.internal.",
            RecordType::A,
            Some(4096),
            Transport::Udp,
        );
        assert_eq!(m.extensions().as_ref().unwrap().max_payload(), UDP_PAYLOAD);
    }
}
