//! Identifiers derived from the inputs digest.
//!
//! Every UUID, salt and serial number in a disk image comes from the 32-byte
//! inputs digest of the build, so rebuilding the same inputs gives a
//! bit-identical image. The derivation is
//!
//! ```text
//! bytes(purpose) = HMAC-SHA256(key = inputs digest, message = "globular-disk/v1/" + purpose)
//! uuid(purpose)  = first 16 bytes of bytes(purpose), with the version nibble set to 4
//!                  and the variant bits to 10 (RFC 9562), like systemd's id128_make_v4_uuid
//! ```
//!
//! The OS slot A data and verity partitions are the exception: their UUIDs are
//! the first and last 128 bits of the dm-verity root hash (Discoverable Partitions
//! Specification), which is itself reproducible because the salt and the verity
//! superblock UUID come from the digest.

use std::fmt;

use serde::{Serialize, Serializer};

const DOMAIN: &str = "globular-disk/v1/";

/// A 128-bit identifier in text byte order (as printed, not GPT's mixed-endian
/// on-disk order).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Uuid(pub [u8; 16]);

impl Uuid {
    /// Parses `8-4-4-4-12` hex text.
    pub fn parse(text: &str) -> Option<Uuid> {
        let hex: String = text.chars().filter(|c| *c != '-').collect();
        if hex.len() != 32 || text.len() != 36 {
            return None;
        }
        let bytes = hex::decode(hex).ok()?;
        Some(Uuid(bytes.try_into().ok()?))
    }

    /// The 16 bytes as GPT stores them (first three fields little-endian).
    pub fn to_gpt_bytes(self) -> [u8; 16] {
        let b = self.0;
        let mut out = b;
        out[0..4].copy_from_slice(&[b[3], b[2], b[1], b[0]]);
        out[4..6].copy_from_slice(&[b[5], b[4]]);
        out[6..8].copy_from_slice(&[b[7], b[6]]);
        out
    }

    /// The inverse of [`Uuid::to_gpt_bytes`].
    pub fn from_gpt_bytes(b: [u8; 16]) -> Uuid {
        // The swap is its own inverse.
        Uuid(Uuid(b).to_gpt_bytes())
    }
}

impl fmt::Display for Uuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let h = hex::encode(self.0);
        write!(
            f,
            "{}-{}-{}-{}-{}",
            &h[0..8],
            &h[8..12],
            &h[12..16],
            &h[16..20],
            &h[20..32]
        )
    }
}

impl fmt::Debug for Uuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl Serialize for Uuid {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Parses an inputs digest as the manifest writes it: 64 hex digits,
/// optionally prefixed with `sha256:`.
pub fn digest_from_hex(text: &str) -> anyhow::Result<[u8; 32]> {
    let hex_text = text.strip_prefix("sha256:").unwrap_or(text);
    let bytes =
        hex::decode(hex_text).map_err(|_| anyhow::anyhow!("inputs digest `{text}` is not hex"))?;
    <[u8; 32]>::try_from(bytes)
        .map_err(|_| anyhow::anyhow!("inputs digest `{text}` is not 32 bytes"))
}

/// `HMAC-SHA256(digest, "globular-disk/v1/" + purpose)`.
pub fn derive_bytes(digest: &[u8; 32], purpose: &str) -> [u8; 32] {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, digest);
    let tag = ring::hmac::sign(&key, format!("{DOMAIN}{purpose}").as_bytes());
    tag.as_ref().try_into().expect("HMAC-SHA256 is 32 bytes")
}

/// A version-4-shaped UUID for `purpose`.
pub fn derive_uuid(digest: &[u8; 32], purpose: &str) -> Uuid {
    let bytes = derive_bytes(digest, purpose);
    let mut id: [u8; 16] = bytes[..16].try_into().expect("16 bytes");
    id[6] = (id[6] & 0x0f) | 0x40;
    id[8] = (id[8] & 0x3f) | 0x80;
    Uuid(id)
}

/// Every identifier a disk image needs, derived once from the inputs digest.
#[derive(Debug, Clone, Serialize)]
pub struct Ids {
    /// GPT disk GUID.
    pub disk: Uuid,
    /// ESP partition UUID.
    pub esp_partition: Uuid,
    /// FAT volume serial of the ESP.
    pub esp_serial: u32,
    /// Slot B data and verity partition UUIDs (slot A's come from its root hash).
    pub slot_b: Uuid,
    pub slot_b_verity: Uuid,
    /// dm-verity salt (hex, 32 bytes) and superblock UUID of slot A.
    pub verity_salt: String,
    pub verity_uuid: Uuid,
    /// UUID for the OS filesystem (`mkfs.erofs -U`, not used by squashfs),
    /// offered to the build stage so the OS image is reproducible too.
    pub filesystem: Uuid,
}

impl Ids {
    pub fn derive(digest: &[u8; 32]) -> Ids {
        let serial = derive_bytes(digest, "esp-serial");
        Ids {
            disk: derive_uuid(digest, "disk"),
            esp_partition: derive_uuid(digest, "esp"),
            esp_serial: u32::from_be_bytes(serial[..4].try_into().expect("4 bytes")),
            slot_b: derive_uuid(digest, "slot-b"),
            slot_b_verity: derive_uuid(digest, "slot-b-verity"),
            verity_salt: hex::encode(derive_bytes(digest, "verity-salt")),
            verity_uuid: derive_uuid(digest, "verity-superblock"),
            filesystem: derive_uuid(digest, "os-filesystem"),
        }
    }
}

/// The data and hash partition UUIDs of a verity pair: the first and the last
/// 128 bits of the root hash.
pub fn uuids_from_root_hash(root_hash: &[u8; 32]) -> (Uuid, Uuid) {
    (
        Uuid(root_hash[..16].try_into().expect("16 bytes")),
        Uuid(root_hash[16..].try_into().expect("16 bytes")),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derivation_is_stable_and_v4_shaped() {
        let digest = [7u8; 32];
        let a = Ids::derive(&digest);
        let b = Ids::derive(&digest);
        assert_eq!(a.disk, b.disk);
        assert_ne!(a.disk, a.esp_partition);
        let text = a.disk.to_string();
        assert_eq!(text.len(), 36);
        assert_eq!(&text[14..15], "4", "{text}");
        assert!("89ab".contains(&text[19..20]), "{text}");
        assert_ne!(Ids::derive(&[8u8; 32]).disk, a.disk);
        assert_eq!(a.verity_salt.len(), 64);
    }

    #[test]
    fn digests_parse_from_hex() {
        let text = "ab".repeat(32);
        assert_eq!(digest_from_hex(&text).unwrap(), [0xab; 32]);
        assert_eq!(
            digest_from_hex(&format!("sha256:{text}")).unwrap(),
            [0xab; 32]
        );
        assert!(digest_from_hex("abcd").is_err());
    }

    #[test]
    fn uuid_text_and_gpt_order_round_trip() {
        let esp = Uuid::parse("c12a7328-f81f-11d2-ba4b-00a0c93ec93b").unwrap();
        assert_eq!(esp.to_string(), "c12a7328-f81f-11d2-ba4b-00a0c93ec93b");
        let gpt = esp.to_gpt_bytes();
        assert_eq!(&gpt[..4], &[0x28, 0x73, 0x2a, 0xc1]);
        assert_eq!(Uuid::from_gpt_bytes(gpt), esp);
        assert!(Uuid::parse("c12a7328f81f11d2ba4b00a0c93ec93b").is_none());
    }
}
