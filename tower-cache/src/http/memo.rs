//! The decoded forms of stored responses a layer read lately from a store
//! that keeps none in process (Redis alone): an entry read again with the
//! same bytes is answered from its decoded form instead of decoding them
//! once more ([`BytesMemo`]: at most 64 forms of at most 8 KiB each a
//! layer).

use std::sync::Arc;

use super::Decoded;
use crate::Entry;
use crate::memo::BytesMemo;

/// A few decoded forms, each beside the exact bytes it was decoded from.
///
/// Nothing here decides what is served: the store's read does, every
/// time. The bytes it returned are compared whole with those kept, and
/// the decoded form is used only when they are the same, so it is the
/// form those bytes decode to.
#[derive(Default)]
pub(crate) struct DecodedMemo(BytesMemo<Arc<Decoded>>);

impl DecodedMemo {
    /// The decoded form of `entry`, read from the store under `key`: the
    /// one kept when its bytes are the entry's, else decoded now (and kept,
    /// when small enough); `None` when they do not decode.
    pub(crate) fn decoded(&self, key: &str, entry: &Entry) -> Option<Arc<Decoded>> {
        let slot = self.0.slot(key);
        if let Some(decoded) = slot.get(key, &entry.value) {
            return Some(decoded);
        }
        let decoded = Arc::new(Decoded::of(entry)?);
        slot.keep(key, entry.value.clone(), decoded.clone());
        Some(decoded)
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::http::StoredResponse;
    use crate::memo::MAX_BYTES;

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
