//! Typed values and keys: how a `V` becomes stored bytes and a `K` becomes a
//! cache key, for the typed layers (read-through, write-through,
//! write-behind).

use std::fmt::Write as _;

use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Why a value could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
#[error("cache codec error: {0}")]
pub struct CodecError(pub String);

/// Turns values into bytes and back. Bytes that do not decode are read as
/// a miss by the layers, never returned as an error.
pub trait Codec<V>: Clone + Send + Sync + 'static {
    /// Encodes `value`.
    fn encode(&self, value: &V) -> Result<Bytes, CodecError>;
    /// Decodes bytes written by [`Codec::encode`].
    fn decode(&self, bytes: &[u8]) -> Result<V, CodecError>;
}

/// The default codec: JSON through serde_json, readable with `redis-cli`.
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
            .map_err(|e| CodecError(e.to_string()))
    }
    fn decode(&self, bytes: &[u8]) -> Result<V, CodecError> {
        serde_json::from_slice(bytes).map_err(|e| CodecError(e.to_string()))
    }
}

/// A request type that names a cache key.
///
/// Layers prepend their namespace (for example `user:`), so a key needs to
/// be unique only within its layer. Implemented for strings, integers and
/// pairs of keys.
///
/// ```
/// use tower_cache::codec::CacheKey;
///
/// let mut key = String::from("user:");
/// 42u64.write_key(&mut key);
/// assert_eq!(key, "user:42");
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
        self.0.write_key(out);
        out.push(':');
        self.1.write_key(out);
    }
}

/// `namespace` followed by `key`'s own key.
pub fn key_in<K: CacheKey + ?Sized>(namespace: &str, key: &K) -> String {
    let mut out = String::with_capacity(namespace.len() + 16);
    out.push_str(namespace);
    key.write_key(&mut out);
    out
}
