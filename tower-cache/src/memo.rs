//! A few values made from bytes a store returned, each kept beside the key
//! and the exact bytes it was made from: the same bytes read again under
//! the same key are not checked and parsed again.
//!
//! Nothing here decides what is served: the bytes read are compared whole
//! with those kept, and a kept value is used only when they are the same,
//! so it is the value those bytes make.

use std::hash::BuildHasher;
use std::sync::Mutex;

use bytes::Bytes;

/// How many values a memo keeps, one per slot; a key always lands in the
/// same slot, and a key of the same slot replaces it. Divides 256.
const SLOTS: usize = 64;

/// The longest bytes whose value is kept: with [`SLOTS`], a memo holds at
/// most 512 KiB of them.
pub(crate) const MAX_BYTES: usize = 8 * 1024;

/// [`SLOTS`] values, each beside its key and bytes.
pub(crate) struct BytesMemo<V> {
    hasher: foldhash::fast::FixedState,
    slots: Box<[Mutex<Option<Kept<V>>>]>,
}

struct Kept<V> {
    key: Box<str>,
    bytes: Bytes,
    value: V,
}

impl<V> Default for BytesMemo<V> {
    fn default() -> Self {
        BytesMemo {
            hasher: foldhash::fast::FixedState::default(),
            slots: (0..SLOTS).map(|_| Mutex::new(None)).collect(),
        }
    }
}

impl<V: Clone> BytesMemo<V> {
    /// The slot of `key`.
    pub(crate) fn slot(&self, key: &str) -> Slot<'_, V> {
        // The hash's low byte picks the slot (`SLOTS` divides 256).
        let low = self.hasher.hash_one(key).to_le_bytes()[0];
        Slot(&self.slots[usize::from(low) % SLOTS])
    }
}

/// One slot of a [`BytesMemo`]. Never waits: a slot another thread holds
/// is passed by, as if it held nothing.
pub(crate) struct Slot<'a, V>(&'a Mutex<Option<Kept<V>>>);

impl<V: Clone> Slot<'_, V> {
    /// The value kept for `key` when it was made from these very `bytes`.
    pub(crate) fn get(&self, key: &str, bytes: &[u8]) -> Option<V> {
        let kept = self.0.try_lock().ok()?;
        let kept = kept.as_ref()?;
        (kept.bytes[..] == *bytes && *kept.key == *key).then(|| kept.value.clone())
    }

    /// Keeps `value`, made from `bytes` read under `key`, in place of what
    /// the slot held; nothing when the bytes are longer than
    /// [`MAX_BYTES`] or the slot is held.
    pub(crate) fn keep(&self, key: &str, bytes: Bytes, value: V) {
        if bytes.len() > MAX_BYTES {
            return;
        }
        let Ok(mut kept) = self.0.try_lock() else {
            return;
        };
        let old = kept.replace(Kept {
            key: key.into(),
            bytes,
            value,
        });
        drop(kept);
        // The old value is freed outside the lock.
        drop(old);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_is_given_back_for_the_same_key_and_bytes_only() {
        let memo = BytesMemo::<u32>::default();
        memo.slot("k").keep("k", Bytes::from_static(b"one"), 1);
        assert_eq!(memo.slot("k").get("k", b"one"), Some(1));
        assert_eq!(memo.slot("k").get("k", b"two"), None, "other bytes");
        assert_eq!(memo.slot("other").get("other", b"one"), None, "other key");
        memo.slot("k").keep("k", Bytes::from_static(b"two"), 2);
        assert_eq!(memo.slot("k").get("k", b"one"), None, "replaced");
        assert_eq!(memo.slot("k").get("k", b"two"), Some(2));
    }

    #[test]
    fn long_bytes_are_not_kept() {
        let memo = BytesMemo::<u32>::default();
        let long = Bytes::from(vec![0u8; MAX_BYTES + 1]);
        memo.slot("k").keep("k", long.clone(), 1);
        assert_eq!(memo.slot("k").get("k", &long), None);
    }
}
