//! A UDP worker's cache of encoded responses.
//!
//! A response depends on the zone snapshot and on the request's bytes; the
//! request's id (its first two bytes) is only copied. So the encoded
//! response is kept under the request without its id, for the snapshot it
//! was made from, and only its id is patched on a hit: a repeated question
//! costs a hash lookup instead of a parse and an encode. Each worker has its
//! own cache (no locks); it is emptied when the zone changes or when it
//! holds [`MAX_ENTRIES`].

use std::collections::HashMap;
use std::sync::Arc;

use super::zone::Zone;

/// Responses kept per worker.
const MAX_ENTRIES: usize = 4096;

#[derive(Debug, Default)]
pub struct Cache {
    zone: Option<Arc<Zone>>,
    entries: HashMap<Vec<u8>, Vec<u8>>,
    /// The last response that was not cached.
    scratch: Vec<u8>,
}

impl Cache {
    /// The response to `request` in `zone`: the cached one with the
    /// request's id, or the one `make` returns (cached). `None`: drop it.
    pub fn answer(
        &mut self,
        zone: Option<&Arc<Zone>>,
        request: &[u8],
        make: impl FnOnce() -> Option<Vec<u8>>,
    ) -> Option<&[u8]> {
        let Some(zone) = zone.filter(|_| request.len() >= 12) else {
            self.scratch = make()?;
            return Some(&self.scratch);
        };
        if !self.zone.as_ref().is_some_and(|z| Arc::ptr_eq(z, zone)) {
            self.zone = Some(zone.clone());
            self.entries.clear();
        }
        let key = &request[2..];
        if self.entries.contains_key(key) {
            let response = self.entries.get_mut(key)?;
            response[..2].copy_from_slice(&request[..2]);
            return Some(response);
        }
        let made = make()?;
        if made.len() < 2 {
            self.scratch = made;
            return Some(&self.scratch);
        }
        if self.entries.len() >= MAX_ENTRIES {
            self.entries.clear();
        }
        Some(self.entries.entry(key.to_vec()).or_insert(made))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::answer::{respond, Transport};
    use crate::dns::zone::tests_support::registry;
    use hickory_proto::op::{Message, Query};
    use hickory_proto::rr::{Name, RecordType};

    #[test]
    fn a_hit_carries_the_new_id_and_a_new_zone_empties_the_cache() {
        let zone = Arc::new(Zone::build(&registry()).unwrap());
        let mut q = Message::new();
        q.add_query(Query::query(
            Name::from_ascii("cp1.prod.globular.internal.").unwrap(),
            RecordType::A,
        ));
        q.set_id(1);
        let first = q.to_vec().unwrap();
        q.set_id(2);
        let second = q.to_vec().unwrap();
        let mut cache = Cache::default();
        let make = |r: &[u8]| respond(Some(&zone), r, Transport::Udp);
        let a = cache
            .answer(Some(&zone), &first, || make(&first))
            .unwrap()
            .to_vec();
        let b = cache
            .answer(Some(&zone), &second, || panic!("not cached"))
            .unwrap()
            .to_vec();
        assert_eq!(Message::from_vec(&a).unwrap().id(), 1);
        assert_eq!(Message::from_vec(&b).unwrap().id(), 2);
        assert_eq!(a[2..], b[2..]);
        let newer = Arc::new(Zone::build(&registry()).unwrap());
        let mut made = false;
        cache.answer(Some(&newer), &second, || {
            made = true;
            respond(Some(&newer), &second, Transport::Udp)
        });
        assert!(made);
    }
}
