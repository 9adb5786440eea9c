//! Entry points for the fuzz targets under `fuzz/`: every decoder of bytes
//! read from a store, the `Cache-Control` parser and the HTTP key builder.
//! Not part of the API; enabled by the `fuzzing` feature.

use bytes::Bytes;
use http::request::Parts;
use http::{HeaderMap, HeaderName};

use crate::http::{CacheControl, KeyScheme, StoredResponse};

/// Decodes a stored entry envelope read under `key`; must never panic.
pub fn decode_entry(key: &str, bytes: &[u8]) -> bool {
    crate::Entry::decode(key, Bytes::copy_from_slice(bytes)).is_ok()
}

/// Decodes a stored HTTP response (an entry's payload); must never panic,
/// and what decodes must encode back to the same bytes.
pub fn decode_stored_response(bytes: &[u8]) -> bool {
    let bytes = Bytes::copy_from_slice(bytes);
    match StoredResponse::decode(&bytes) {
        Ok(stored) => {
            let again = stored.encode();
            let twice = StoredResponse::decode(&again).map(|s| s.encode());
            assert_eq!(twice.ok(), Some(again), "encoding is stable");
            true
        }
        Err(_) => false,
    }
}

/// Parses the `Cache-Control` and `Pragma` headers; must never panic.
pub fn parse_cache_control(headers: &HeaderMap) -> bool {
    let cc = CacheControl::parse(headers);
    cc.no_store || cc.no_cache || cc.private || cc.only_if_cached
}

/// The key of a read of `parts` by the default key scheme of a layer
/// named `name`, varying on `vary` and keyed per `user`; `None` when the
/// request bypasses the cache.
pub fn http_key(
    name: &str,
    vary: &[HeaderName],
    parts: &Parts,
    user: Option<&str>,
    body: Option<&[u8]>,
) -> Option<String> {
    let scheme = KeyScheme {
        name: name.to_owned(),
        headers: vary.to_vec(),
        ..KeyScheme::default()
    };
    scheme.key(parts, user, body)
}
