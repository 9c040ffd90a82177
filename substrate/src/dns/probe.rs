//! Asks an authority for its zone's SOA over UDP: whether a control
//! plane's DNS answers (the health loop's `dns` check).

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{bail, Context as _};
use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use tokio::net::UdpSocket;

/// The zone serial `server` answers for `origin`'s SOA, authoritatively,
/// within `wait`; an error that says what came back otherwise.
pub async fn soa_serial(server: SocketAddr, origin: &str, wait: Duration) -> anyhow::Result<u32> {
    let name = Name::from_ascii(origin).with_context(|| format!("zone name {origin:?}"))?;
    let mut id = [0u8; 2];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut id)
        .map_err(|_| anyhow::anyhow!("no random query id"))?;
    let id = u16::from_be_bytes(id);
    let mut query = Message::new();
    query
        .set_id(id)
        .set_message_type(MessageType::Query)
        .set_op_code(OpCode::Query)
        .set_recursion_desired(false)
        .add_query(Query::query(name.clone(), RecordType::SOA));
    let request = query.to_vec().context("encoding the query")?;
    let local: SocketAddr = if server.is_ipv4() {
        "0.0.0.0:0".parse()?
    } else {
        "[::]:0".parse()?
    };
    let socket = UdpSocket::bind(local)
        .await
        .context("binding a UDP socket")?;
    socket
        .connect(server)
        .await
        .with_context(|| format!("connecting to {server}"))?;
    socket.send(&request).await.context("sending the query")?;
    let mut buf = vec![0u8; 4096];
    let answer = tokio::time::timeout(wait, async {
        loop {
            let n = socket.recv(&mut buf).await?;
            // Anything else on the socket (a late answer) is not ours.
            match Message::from_vec(&buf[..n]) {
                Ok(m) if m.id() == id && m.message_type() == MessageType::Response => {
                    return anyhow::Ok(m)
                }
                _ => continue,
            }
        }
    })
    .await
    .map_err(|_| anyhow::anyhow!("no answer from {server} within {} ms", wait.as_millis()))?
    .with_context(|| format!("asking {server}"))?;
    if answer.response_code() != ResponseCode::NoError {
        bail!(
            "{server} answered {} for {origin} SOA",
            answer.response_code()
        );
    }
    if !answer.authoritative() {
        bail!("{server} is not authoritative for {origin}");
    }
    answer
        .answers()
        .iter()
        .find_map(|r| match r.data() {
            RData::SOA(soa) if r.name() == &name => Some(soa.serial()),
            _ => None,
        })
        .with_context(|| format!("{server} gave no SOA for {origin}"))
}
