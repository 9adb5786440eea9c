//! Two requests share an HTTP cache key only when they are the same
//! request: same layer, method (HEAD read as GET), host (lower-cased),
//! path and query (percent-encoded unreserved characters decoded, the hex
//! of other escapes upper-cased; query pieces non-empty and stably sorted
//! by name), values of the varied header `x-a` (raw, in order), user and
//! body. Two spellings of one request share a key.
//!
//! The requests are drawn from small alphabets of the characters that
//! separate, escape or delimit, so that near-collisions are common. The
//! equivalence is written here, apart from the library's key code.

#![no_main]

use arbitrary::Arbitrary;
use http::header::HOST;
use http::request::Parts;
use http::{HeaderName, HeaderValue, Method};
use libfuzzer_sys::fuzz_target;
use tower_cache::fuzzing::http_key;

const NAME: &[u8] = b"/ab{}| :%0u-";
const HOST_CHARS: &[u8] = b"aAbB1:.[]@-_/ ?#%09";
const PATH: &[u8] = b"/0123456789aAbBeEfFu%:|?&=#;@~-._ +";
const QUERY: &[u8] = b"0123456789aAbBeEfF%=&|:;+ /?#~";
const HEADER: &[u8] = b" \t:,|%=ab\"";
const USER: &[u8] = b"ab| u%:";
/// Characters outside ASCII for text that must be UTF-8.
const WIDE: &[char] = &['\u{e9}', '\u{0}', '\u{7f}', '\u{20ac}', '\u{fffd}'];

/// The bytes of `raw` below 0x80 spelled from `alphabet`; the others kept.
fn spell(raw: &[u8], alphabet: &[u8]) -> Vec<u8> {
    raw.iter()
        .map(|&b| {
            if b < 0x80 {
                alphabet[usize::from(b) % alphabet.len()]
            } else {
                b
            }
        })
        .collect()
}

/// `raw` spelled from `alphabet`, bytes from 0x80 on as wide characters.
fn spell_text(raw: &[u8], alphabet: &[u8]) -> String {
    raw.iter()
        .map(|&b| {
            if b < 0x80 {
                char::from(alphabet[usize::from(b) % alphabet.len()])
            } else {
                WIDE[usize::from(b) % WIDE.len()]
            }
        })
        .collect()
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Verb {
    Get,
    Head,
    Post,
    Put,
    Delete,
}

impl Verb {
    fn method(self) -> Method {
        match self {
            Verb::Get => Method::GET,
            Verb::Head => Method::HEAD,
            Verb::Post => Method::POST,
            Verb::Put => Method::PUT,
            Verb::Delete => Method::DELETE,
        }
    }
}

#[derive(Arbitrary, Debug)]
struct RawRequest {
    name: Vec<u8>,
    verb: Verb,
    /// The `Host` header.
    host: Option<Vec<u8>>,
    /// An authority in the URI (absolute form), which wins over `Host`.
    authority: Option<Vec<u8>>,
    path: Vec<u8>,
    query: Option<Vec<u8>>,
    x_a: Vec<Vec<u8>>,
    user: Option<Vec<u8>>,
    body: Option<Vec<u8>>,
}

/// A request as the test sees it, and as the key builder gets it.
#[derive(Debug)]
struct Request {
    name: String,
    x_a: Vec<Vec<u8>>,
    user: Option<String>,
    body: Option<Vec<u8>>,
    parts: Parts,
}

impl Request {
    /// `None` when `http` refuses the request.
    fn build(raw: &RawRequest) -> Option<Request> {
        let mut uri = Vec::new();
        if let Some(authority) = &raw.authority {
            uri.extend_from_slice(b"http://");
            uri.extend(spell(authority, HOST_CHARS));
        }
        uri.extend(spell(&raw.path, PATH));
        if let Some(query) = &raw.query {
            uri.push(b'?');
            uri.extend(spell(query, QUERY));
        }
        let mut builder = http::Request::builder().method(raw.verb.method()).uri(uri);
        if let Some(host) = &raw.host {
            builder = builder.header(
                HOST,
                HeaderValue::from_bytes(&spell(host, HOST_CHARS)).ok()?,
            );
        }
        let x_a: Vec<Vec<u8>> = raw.x_a.iter().map(|v| spell(v, HEADER)).collect();
        for value in &x_a {
            builder = builder.header("x-a", HeaderValue::from_bytes(value).ok()?);
        }
        let parts = builder.body(()).ok()?.into_parts().0;
        Some(Request {
            name: spell_text(&raw.name, NAME),
            x_a,
            user: raw.user.as_deref().map(|u| spell_text(u, USER)),
            body: raw.body.clone(),
            parts,
        })
    }

    fn key(&self) -> Option<String> {
        http_key(
            &self.name,
            &[HeaderName::from_static("x-a")],
            &self.parts,
            self.user.as_deref(),
            self.body.as_deref(),
        )
    }

    /// What a key must tell apart.
    fn identity(&self) -> Identity {
        let method = if self.parts.method == Method::HEAD {
            Method::GET
        } else {
            self.parts.method.clone()
        };
        let host = match self.parts.uri.authority() {
            Some(authority) => Some(authority.as_str().as_bytes().to_vec()),
            None => self.parts.headers.get(HOST).map(|h| h.as_bytes().to_vec()),
        };
        let mut query: Vec<Vec<u8>> = self
            .parts
            .uri
            .query()
            .unwrap_or("")
            .split('&')
            .map(|piece| normalize(piece.as_bytes()))
            .filter(|piece| !piece.is_empty())
            .collect();
        query.sort_by(|a, b| param_name(a).cmp(param_name(b)));
        Identity {
            name: self.name.clone(),
            method,
            host: host.map(|h| h.to_ascii_lowercase()),
            path: normalize(self.parts.uri.path().as_bytes()),
            query,
            x_a: self.x_a.clone(),
            user: self.user.clone(),
            body: self.body.clone(),
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
struct Identity {
    name: String,
    method: Method,
    host: Option<Vec<u8>>,
    path: Vec<u8>,
    query: Vec<Vec<u8>>,
    x_a: Vec<Vec<u8>>,
    user: Option<String>,
    body: Option<Vec<u8>>,
}

/// The part of a query piece before its first `=`.
fn param_name(piece: &[u8]) -> &[u8] {
    match piece.iter().position(|&b| b == b'=') {
        Some(end) => &piece[..end],
        None => piece,
    }
}

fn hex_digit(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// RFC 3986 §2.3.
fn unreserved(b: u8) -> bool {
    matches!(b, b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~')
}

/// `text` with escapes of unreserved characters decoded and the hex
/// digits of every other escape upper-cased; a `%` that starts no escape
/// stays as it is.
fn normalize(text: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    let mut i = 0;
    while i < text.len() {
        let escape = match text.get(i..i + 3) {
            Some(&[b'%', hi, lo]) => hex_digit(hi)
                .zip(hex_digit(lo))
                .map(|(h, l)| (h * 16 + l, hi, lo)),
            _ => None,
        };
        match escape {
            Some((byte, _, _)) if unreserved(byte) => {
                out.push(byte);
                i += 3;
            }
            Some((_, hi, lo)) => {
                out.extend([b'%', hi.to_ascii_uppercase(), lo.to_ascii_uppercase()]);
                i += 3;
            }
            None => {
                out.push(text[i]);
                i += 1;
            }
        }
    }
    out
}

fuzz_target!(|input: (RawRequest, RawRequest)| {
    let (Some(a), Some(b)) = (Request::build(&input.0), Request::build(&input.1)) else {
        return;
    };
    let (key_a, key_b) = (a.key(), b.key());
    let same = a.identity() == b.identity();
    if key_a.is_some() && key_a == key_b && !same {
        panic!(
            "two different requests share the key {key_a:?}\n\
             first:  {a:#?}\n  {:?}\n\
             second: {b:#?}\n  {:?}",
            a.identity(),
            b.identity()
        );
    }
    if same && key_a != key_b {
        panic!(
            "two spellings of one request get different keys\n\
             first:  {a:#?}\n  key {key_a:?}\n\
             second: {b:#?}\n  key {key_b:?}"
        );
    }
});
