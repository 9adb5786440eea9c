//! The `Cache-Control` / `Pragma` parser on arbitrary field values (those
//! `HeaderValue` accepts): it never panics, and no earlier field line,
//! however malformed, hides a later `Cache-Control: no-store` or
//! `Pragma: no-cache`.

#![no_main]

use arbitrary::Arbitrary;
use http::header::{CACHE_CONTROL, PRAGMA};
use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;
use tower_cache::fuzzing::parse_cache_control;

#[derive(Arbitrary, Debug)]
enum Field {
    CacheControl(Vec<u8>),
    Pragma(Vec<u8>),
}

fuzz_target!(|fields: Vec<Field>| {
    let mut headers = HeaderMap::new();
    for field in &fields {
        let (name, raw) = match field {
            Field::CacheControl(raw) => (CACHE_CONTROL, raw),
            Field::Pragma(raw) => (PRAGMA, raw),
        };
        if let Ok(value) = HeaderValue::from_bytes(raw) {
            headers.append(name, value);
        }
    }
    let _ = parse_cache_control(&headers);

    let mut no_store = headers.clone();
    no_store.append(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    assert!(
        parse_cache_control(&no_store),
        "a later `Cache-Control: no-store` is ignored: {no_store:?}"
    );
    let mut no_cache = headers;
    no_cache.append(PRAGMA, HeaderValue::from_static("no-cache"));
    assert!(
        parse_cache_control(&no_cache),
        "a later `Pragma: no-cache` is ignored: {no_cache:?}"
    );
});
