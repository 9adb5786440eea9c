//! The decoded forms of stored responses a layer read lately from a store
//! that keeps none in process (Redis alone): an entry read again with the
//! same bytes is answered from its decoded form instead of decoding them
//! once more.

use std::hash::BuildHasher;
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use super::Decoded;
use crate::Entry;

/// How many decoded forms a layer keeps, one per slot; a key always lands
/// in the same slot, and a key of the same slot replaces it.
const SLOTS: usize = 32;

/// The largest stored response (its encoded bytes) whose decoded form is
/// kept: with [`SLOTS`], a layer holds at most 256 KiB of them.
const MAX_BYTES: usize = 8 * 1024;

/// A few decoded forms, each beside the exact bytes it was decoded from.
///
/// Nothing here decides what is served: the store's read does, every
/// time. The bytes it returned are compared whole with those kept, and
/// the decoded form is used only when they are the same, so it is the
/// form those bytes decode to, whatever key, version or store wrote them.
pub(crate) struct DecodedMemo {
    hasher: foldhash::fast::FixedState,
    slots: Box<[Mutex<Option<Memo>>]>,
}

struct Memo {
    value: Bytes,
    decoded: Arc<Decoded>,
}

impl Default for DecodedMemo {
    fn default() -> Self {
        DecodedMemo {
            hasher: foldhash::fast::FixedState::default(),
            slots: (0..SLOTS).map(|_| Mutex::new(None)).collect(),
        }
    }
}

impl DecodedMemo {
    /// The decoded form of `entry`, read from the store under `key`: the
    /// one kept when its bytes are the entry's, else decoded now (and kept,
    /// when small enough); `None` when they do not decode. Never waits: a
    /// slot another thread holds is passed by.
    pub(crate) fn decoded(&self, key: &str, entry: &Entry) -> Option<Arc<Decoded>> {
        // The hash's low byte picks the slot (`SLOTS` divides 256).
        let low = self.hasher.hash_one(key).to_le_bytes()[0];
        let slot = &self.slots[usize::from(low) % SLOTS];
        if let Ok(kept) = slot.try_lock()
            && let Some(memo) = &*kept
            && memo.value == entry.value
        {
            return Some(memo.decoded.clone());
        }
        let decoded = Arc::new(Decoded::of(entry)?);
        if entry.value.len() <= MAX_BYTES
            && let Ok(mut kept) = slot.try_lock()
        {
            let old = kept.replace(Memo {
                value: entry.value.clone(),
                decoded: decoded.clone(),
            });
            drop(kept);
            drop(old);
        }
        Some(decoded)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::StoredResponse;

    fn entry(body: &'static str) -> Entry {
        let mut headers = http::HeaderMap::new();
        headers.insert("content-type", http::HeaderValue::from_static("text/plain"));
        let stored = StoredResponse {
            status: http::StatusCode::OK,
            etag: http::HeaderValue::from_static("\"e\""),
            etag_generated: true,
            headers,
            vary: Vec::new(),
            body: Bytes::from_static(body.as_bytes()),
            trailers: None,
        };
        Entry::new(stored.encode())
    }

    #[test]
    fn the_same_bytes_share_one_decoded_form() {
        let memo = DecodedMemo::default();
        let a = memo.decoded("k", &entry("one")).expect("decodes");
        let b = memo.decoded("k", &entry("one")).expect("decodes");
        assert!(Arc::ptr_eq(&a, &b), "decoded once");
    }

    #[test]
    fn other_bytes_under_the_same_key_are_decoded_again() {
        let memo = DecodedMemo::default();
        let a = memo.decoded("k", &entry("one")).expect("decodes");
        let b = memo.decoded("k", &entry("two")).expect("decodes");
        assert_eq!(a.stored.body, "one");
        assert_eq!(b.stored.body, "two", "never the form of other bytes");
        let c = memo.decoded("k", &entry("two")).expect("decodes");
        assert!(Arc::ptr_eq(&b, &c), "the newer form is kept");
    }

    #[test]
    fn bytes_that_do_not_decode_are_no_form() {
        let memo = DecodedMemo::default();
        assert!(memo.decoded("k", &Entry::new(&b"garbage"[..])).is_none());
    }

    #[test]
    fn large_responses_are_not_kept() {
        let memo = DecodedMemo::default();
        let big: &'static str = Box::leak("x".repeat(MAX_BYTES + 1).into_boxed_str());
        let a = memo.decoded("k", &entry(big)).expect("decodes");
        let b = memo.decoded("k", &entry(big)).expect("decodes");
        assert!(!Arc::ptr_eq(&a, &b));
    }
}
