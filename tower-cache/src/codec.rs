//! Typed values and keys: how a `V` becomes stored bytes and a `K` becomes a
//! cache key, for the typed layers (read-through, write-through,
//! write-behind).

use std::fmt::Write as _;
use std::sync::Arc;

use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Why a value could not be encoded or decoded; the codec's own error is
/// its [`source`](std::error::Error::source).
///
/// ```
/// use std::error::Error as _;
/// use tower_cache::codec::CodecError;
///
/// let e = CodecError::new(std::io::Error::other("bad bytes"));
/// assert_eq!(e.to_string(), "cache codec error: bad bytes");
/// assert!(e.source().is_some());
/// ```
#[derive(Debug, thiserror::Error)]
#[error("cache codec error: {source}")]
pub struct CodecError {
    source: tower::BoxError,
}

impl CodecError {
    /// An error caused by `source` (a serde error, a message).
    pub fn new(source: impl Into<tower::BoxError>) -> Self {
        CodecError {
            source: source.into(),
        }
    }
}

/// Turns values into bytes and back. Bytes that do not decode are read as
/// a miss by the layers, never returned as an error.
pub trait Codec<V>: Clone + Send + Sync + 'static {
    /// Encodes `value`.
    ///
    /// # Errors
    ///
    /// When `value` cannot be written in this format; the layers then
    /// answer with it uncached.
    fn encode(&self, value: &V) -> Result<Bytes, CodecError>;
    /// Decodes bytes written by [`Codec::encode`].
    ///
    /// # Errors
    ///
    /// When `bytes` are not a value of this format; the layers read them
    /// as a miss.
    fn decode(&self, bytes: &[u8]) -> Result<V, CodecError>;
    /// Whether `value`, encoded as `encoded`, means "not found", which
    /// read-through caches for the policy's negative TTL. Default: the
    /// encoding is JSON `null` (what [`JsonCodec`] writes for
    /// `Option::None`). [`NotFoundWhen`] picks them with a function of the
    /// value instead.
    fn is_not_found(&self, value: &V, encoded: &[u8]) -> bool {
        let _ = value;
        encoded == b"null"
    }
}

/// The default codec: JSON through `serde_json`, readable with `redis-cli`.
///
/// ```
/// use tower_cache::codec::{Codec, JsonCodec};
///
/// let bytes = JsonCodec.encode(&vec![1, 2, 3]).unwrap();
/// assert_eq!(&bytes[..], b"[1,2,3]");
/// let back: Vec<i32> = JsonCodec.decode(&bytes).unwrap();
/// assert_eq!(back, [1, 2, 3]);
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonCodec;

impl<V: Serialize + DeserializeOwned> Codec<V> for JsonCodec {
    fn encode(&self, value: &V) -> Result<Bytes, CodecError> {
        serde_json::to_vec(value)
            .map(Bytes::from)
            .map_err(CodecError::new)
    }
    fn decode(&self, bytes: &[u8]) -> Result<V, CodecError> {
        serde_json::from_slice(bytes).map_err(CodecError::new)
    }
}

/// A codec `C` whose "not found" values are the ones a function of the
/// value picks, rather than those that encode to JSON `null`. Built by
/// [`ReadThroughLayer::not_found_when`](crate::ReadThroughLayer::not_found_when);
/// it encodes and decodes as `C` does, and is a codec of `V` only, so a
/// function of another type than the loader's values does not compile.
///
/// ```
/// use tower_cache::codec::{Codec, JsonCodec, NotFoundWhen};
///
/// let codec = NotFoundWhen::new(JsonCodec, |price: &i64| *price < 0);
/// let bytes = codec.encode(&-1).unwrap();
/// assert!(codec.is_not_found(&-1, &bytes));
/// assert!(!codec.is_not_found(&5, &codec.encode(&5).unwrap()));
/// ```
pub struct NotFoundWhen<C, V> {
    codec: C,
    is_not_found: Arc<dyn Fn(&V) -> bool + Send + Sync>,
}

impl<C, V> NotFoundWhen<C, V> {
    /// `codec`, with `is_not_found` telling which values mean "not found".
    pub fn new(codec: C, is_not_found: impl Fn(&V) -> bool + Send + Sync + 'static) -> Self {
        NotFoundWhen {
            codec,
            is_not_found: Arc::new(is_not_found),
        }
    }

    /// The same function over another codec.
    pub(crate) fn with_codec<C2>(self, codec: C2) -> NotFoundWhen<C2, V> {
        NotFoundWhen {
            codec,
            is_not_found: self.is_not_found,
        }
    }
}

impl<C: Clone, V> Clone for NotFoundWhen<C, V> {
    fn clone(&self) -> Self {
        NotFoundWhen {
            codec: self.codec.clone(),
            is_not_found: self.is_not_found.clone(),
        }
    }
}

impl<C: std::fmt::Debug, V> std::fmt::Debug for NotFoundWhen<C, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NotFoundWhen")
            .field("codec", &self.codec)
            .finish_non_exhaustive()
    }
}

impl<C: Codec<V>, V: 'static> Codec<V> for NotFoundWhen<C, V> {
    fn encode(&self, value: &V) -> Result<Bytes, CodecError> {
        self.codec.encode(value)
    }
    fn decode(&self, bytes: &[u8]) -> Result<V, CodecError> {
        self.codec.decode(bytes)
    }
    fn is_not_found(&self, value: &V, _encoded: &[u8]) -> bool {
        (self.is_not_found)(value)
    }
}

/// A request type that names a cache key.
///
/// Layers prepend their namespace (for example `user:`), so a key needs to
/// be unique only within its layer. Implemented for strings, integers and
/// pairs of keys. Two different values of one key type never write the
/// same key: a string or an integer is written as it is, and each part of
/// a pair as a length-prefixed field, `{len}:{text}` (the length in bytes),
/// so a `:` inside a part cannot be mistaken for the boundary between two.
///
/// ```
/// use tower_cache::codec::CacheKey;
///
/// let mut key = String::from("user:");
/// 42u64.write_key(&mut key);
/// assert_eq!(key, "user:42");
///
/// let (mut a, mut b) = (String::new(), String::new());
/// ("a:b", "c").write_key(&mut a);
/// ("a", "b:c").write_key(&mut b);
/// assert_eq!(a, "3:a:b1:c");
/// assert_eq!(b, "1:a3:b:c");
/// ```
pub trait CacheKey {
    /// Appends this key to `out`.
    fn write_key(&self, out: &mut String);
}

impl CacheKey for str {
    fn write_key(&self, out: &mut String) {
        out.push_str(self);
    }
}

impl CacheKey for String {
    fn write_key(&self, out: &mut String) {
        out.push_str(self);
    }
}

impl<T: CacheKey + ?Sized> CacheKey for &T {
    fn write_key(&self, out: &mut String) {
        (**self).write_key(out);
    }
}

macro_rules! int_keys {
    ($($t:ty),*) => {$(
        impl CacheKey for $t {
            fn write_key(&self, out: &mut String) {
                let _ = write!(out, "{self}");
            }
        }
    )*};
}
int_keys!(
    u8, u16, u32, u64, u128, usize, i8, i16, i32, i64, i128, isize
);

impl<A: CacheKey, B: CacheKey> CacheKey for (A, B) {
    fn write_key(&self, out: &mut String) {
        write_field(&self.0, out);
        write_field(&self.1, out);
    }
}

/// Appends `key` as the field `{len}:{key}`, `len` being the length in
/// bytes of what `key` writes.
fn write_field<K: CacheKey + ?Sized>(key: &K, out: &mut String) {
    let start = out.len();
    key.write_key(out);
    let len = out.len() - start;
    // The length is known once the key is written: it goes in front, from
    // a buffer on the stack.
    let mut digits = [0u8; 21];
    let mut at = digits.len() - 1;
    digits[at] = b':';
    let mut n = len;
    loop {
        at -= 1;
        #[expect(clippy::cast_possible_truncation, reason = "n % 10 < 10")]
        let digit = (n % 10) as u8;
        digits[at] = b'0' + digit;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    let prefix = std::str::from_utf8(&digits[at..]).unwrap_or(":");
    out.insert_str(start, prefix);
}

/// `namespace` followed by `key`'s own key.
pub fn key_in<K: CacheKey + ?Sized>(namespace: &str, key: &K) -> String {
    let mut out = String::with_capacity(namespace.len() + 16);
    out.push_str(namespace);
    key.write_key(&mut out);
    out
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::{CacheKey, key_in};

    fn key<K: CacheKey>(k: &K) -> String {
        key_in("ns:", k)
    }

    #[test]
    fn single_values_are_written_as_they_are() {
        assert_eq!(key(&"a:b"), "ns:a:b");
        assert_eq!(key(&String::from("x")), "ns:x");
        assert_eq!(key(&42u64), "ns:42");
        assert_eq!(key(&-7i32), "ns:-7");
    }

    #[test]
    fn parts_of_a_pair_are_length_prefixed() {
        assert_eq!(key(&("a:b", "c")), "ns:3:a:b1:c");
        assert_eq!(key(&("a", "b:c")), "ns:1:a3:b:c");
        assert_eq!(key(&(12u32, "")), "ns:2:120:");
        assert_eq!(key(&(("a", "b"), 1u8)), "ns:6:1:a1:b1:1");
        assert_eq!(key(&("é", 0u8)), "ns:2:é1:0");
    }

    /// A key type built from strings, integers and pairs of them.
    type Nested = ((String, u64), (String, (i32, String)));

    proptest! {
        #[test]
        fn different_string_pairs_never_share_a_key(
            a in (".{0,12}", ".{0,12}"),
            b in (".{0,12}", ".{0,12}"),
        ) {
            prop_assume!(a != b);
            prop_assert_ne!(key(&a), key(&b));
        }

        #[test]
        fn different_pairs_of_colons_and_digits_never_share_a_key(
            a in ("[0-9:]{0,6}", "[0-9:]{0,6}"),
            b in ("[0-9:]{0,6}", "[0-9:]{0,6}"),
        ) {
            prop_assume!(a != b);
            prop_assert_ne!(key(&a), key(&b));
        }

        #[test]
        fn different_nested_keys_never_share_a_key(
            a in (("[a:1]{0,4}", any::<u64>()), ("[a:1]{0,4}", (any::<i32>(), "[a:1]{0,4}"))),
            b in (("[a:1]{0,4}", any::<u64>()), ("[a:1]{0,4}", (any::<i32>(), "[a:1]{0,4}"))),
        ) {
            let (a, b): (Nested, Nested) = (a, b);
            prop_assume!(a != b);
            prop_assert_ne!(key(&a), key(&b));
        }

        #[test]
        fn different_strings_and_integers_never_share_a_key(
            a in ".{0,16}",
            b in ".{0,16}",
            x in any::<i64>(),
            y in any::<i64>(),
        ) {
            prop_assert_eq!(a == b, key(&a) == key(&b));
            prop_assert_eq!(x == y, key(&x) == key(&y));
        }
    }
}
