//! Conversation ids. A 1:1 conversation's stream id is the first 16 hex characters of the
//! SHA-256 of the two user ids, sorted and concatenated, so both sides (and every server)
//! compute the same id without asking anyone.

use std::sync::Arc;

use sha2::{Digest, Sha256};

pub fn stream_id(a: &str, b: &str) -> Arc<str> {
    let (first, second) = if a <= b { (a, b) } else { (b, a) };
    let mut hasher = Sha256::new();
    hasher.update(first.as_bytes());
    hasher.update(second.as_bytes());
    let digest = hasher.finalize();
    // Written by hand: a `format!` per byte was a visible share of the CDC path's profile.
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut id = [0u8; 16];
    for (i, b) in digest[..8].iter().enumerate() {
        id[2 * i] = HEX[usize::from(b >> 4)];
        id[2 * i + 1] = HEX[usize::from(b & 0xf)];
    }
    Arc::from(std::str::from_utf8(&id).expect("hex digits are ASCII"))
}

/// A conversation: a 1:1 stream or a group. Its messages share one key in the log, so
/// they stay in order on one partition.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Conversation {
    Stream(Arc<str>),
    Group(Arc<str>),
}

impl Conversation {
    /// The record key in `chat.messages`.
    pub fn key(&self) -> &str {
        match self {
            Conversation::Stream(id) | Conversation::Group(id) => id,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::stream_id;

    #[test]
    fn stream_ids_ignore_order_and_are_16_hex_chars() {
        let id = stream_id("alice", "bob");
        assert_eq!(id, stream_id("bob", "alice"));
        assert_eq!(id.len(), 16);
        assert!(id.chars().all(|c| c.is_ascii_hexdigit()));
        // sha256("alicebob") starts with these bytes.
        assert_eq!(&*id, "a83ab2505ace9a87");
        assert_ne!(id, stream_id("alice", "carol"));
    }
}
