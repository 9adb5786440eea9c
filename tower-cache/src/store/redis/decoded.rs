//! The entries the store decoded lately, each beside the Redis key and the
//! exact bytes it was decoded from ([`BytesMemo`]: at most 64 entries of at
//! most 8 KiB each a store): an entry read again with the same bytes,
//! every hit of a key while it does not change, is not checked and parsed
//! again.

use bytes::Bytes;

use crate::entry::{DecodeError, Entry};
use crate::memo::BytesMemo;

/// A few decoded entries.
///
/// Nothing here decides what is served: the bytes Redis returned are
/// compared whole with those kept, under the same key, and the kept entry
/// is used only when both are the same, so it is the entry
/// [`Entry::decode`] makes of them. Bytes that differ in one bit are
/// decoded, and refused, as any others.
#[derive(Default)]
pub(super) struct DecodedEntries(BytesMemo<Entry>);

impl DecodedEntries {
    /// [`Entry::decode`] of `raw`, read under `rkey`: the entry kept when
    /// it came from the very same key and bytes, else decoded now (and
    /// kept, when small enough).
    pub(super) fn decode(&self, rkey: &str, raw: Vec<u8>) -> Result<Entry, DecodeError> {
        let slot = self.0.slot(rkey);
        if let Some(entry) = slot.get(rkey, &raw) {
            return Ok(entry);
        }
        let raw = Bytes::from(raw);
        let entry = Entry::decode(rkey, raw.clone())?;
        slot.keep(rkey, raw, entry.clone());
        Ok(entry)
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(key: &str, value: &'static str) -> Vec<u8> {
        Entry::new(value).with_tags(["t"]).encode(key).to_vec()
    }

    #[test]
    fn the_same_bytes_under_the_same_key_are_decoded_once() {
        let entries = DecodedEntries::default();
        let a = entries.decode("k", bytes("k", "one")).expect("decodes");
        let b = entries.decode("k", bytes("k", "one")).expect("decodes");
        assert_eq!(a, b);
        assert_eq!(a.value.as_ptr(), b.value.as_ptr(), "the kept entry");
    }

    #[test]
    fn other_bytes_are_decoded_again_and_bad_ones_refused() {
        let entries = DecodedEntries::default();
        entries.decode("k", bytes("k", "one")).expect("decodes");
        let two = entries.decode("k", bytes("k", "two")).expect("decodes");
        assert_eq!(two.value, "two", "never the entry of other bytes");
        let mut flipped = bytes("k", "two");
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert!(entries.decode("k", flipped).is_err(), "one bit off");
    }

    #[test]
    fn another_keys_bytes_are_refused_though_kept() {
        let entries = DecodedEntries::default();
        entries.decode("k", bytes("k", "one")).expect("decodes");
        assert_eq!(
            entries.decode("other", bytes("k", "one")),
            Err(DecodeError::WrongKey)
        );
    }
}
