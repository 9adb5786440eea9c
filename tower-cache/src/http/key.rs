//! Cache keys for HTTP requests.
//!
//! A key is `{namespace}v{version}:` followed by the request's fields,
//! each written as `{length}:{text}` so that no field can spell the end
//! of another, in a fixed order with a tag before each optional part:
//!
//! ```text
//! {name} {method} {host | -} {path} {query} [ h{header} {count}:{value}* ]* [ u{user hash} ] [ b{body hash} ]
//! ```
//!
//! - `name` is the layer's name: two routes never address each other's
//!   entries, even through a crafted `Host` or path.
//! - The host is the request's authority (absolute URI or `Host`),
//!   lower-cased, and must be a valid RFC 3986 host and port: a request
//!   whose `Host` is not one bypasses the cache. A request with no host at
//!   all is keyed with `-`, which no valid host can be.
//! - The path is normalized as RFC 3986 §6.2.2 allows: percent-encoded
//!   unreserved characters are decoded (`/products/%31%32` is
//!   `/products/12`) and the hex digits of the other escapes are upper-cased.
//! - The query is sorted by parameter name, keeping the order of one name's
//!   values; empty pieces are dropped.
//! - Header values (those a route varies on) enter as their raw bytes: the
//!   number of values, then each value length-prefixed.
//! - The user is a SHA-256 of it (never the user itself), the gRPC message
//!   a SHA-256 of its bytes.
//!
//! Every byte outside visible ASCII, and `%`, is percent-encoded, so a key
//! is printable text and the encoding stays one-to-one. Keys longer than
//! [`MAX_PLAIN_KEY_LEN`] are replaced by `{namespace}v{version}:sha256:`
//! and the SHA-256 of the fields; a plain key's fields start with a digit,
//! so a plain key is never mistaken for a hashed one.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::sync::{Arc, OnceLock};

use http::request::Parts;
use http::{HeaderMap, HeaderName};
use sha2::{Digest, Sha256};

/// Keys longer than this are replaced by their SHA-256.
pub const MAX_PLAIN_KEY_LEN: usize = 256;

/// A function giving a request's key, or `None` to bypass the cache.
pub(crate) type KeyFn = Arc<dyn Fn(&Parts) -> Option<String> + Send + Sync>;

/// How a route turns requests into keys.
#[derive(Clone)]
pub(crate) struct KeyScheme {
    /// The layer's name: every key of the layer starts with it.
    pub name: String,
    pub namespace: String,
    pub version: u32,
    pub headers: Vec<HeaderName>,
    pub custom: Option<KeyFn>,
    pub host: bool,
    /// What every key starts with (`{namespace}v{version}:` and the name
    /// field), written once by the first key; [`KeyScheme::changed`]
    /// forgets it.
    pub head: OnceLock<String>,
}

impl Default for KeyScheme {
    fn default() -> Self {
        KeyScheme {
            name: String::new(),
            namespace: "http:".to_owned(),
            version: 2,
            headers: Vec::new(),
            custom: None,
            host: true,
            head: OnceLock::new(),
        }
    }
}

/// The host a request is addressed to.
enum RequestHost<'a> {
    Valid(&'a str),
    Absent,
    Invalid,
}

/// The request's host and port: the URI's authority (absolute form,
/// HTTP/2 `:authority`), else the `Host` header. Anything that is not an
/// RFC 3986 host with an optional port (no user info, nothing empty) is
/// invalid.
fn request_host(parts: &Parts) -> RequestHost<'_> {
    let raw: &[u8] = match parts.uri.authority() {
        Some(authority) => authority.as_str().as_bytes(),
        None => match parts.headers.get(http::header::HOST) {
            Some(host) => host.as_bytes(),
            None => return RequestHost::Absent,
        },
    };
    match std::str::from_utf8(raw) {
        Ok(host) if valid_authority(raw) => RequestHost::Valid(host),
        _ => RequestHost::Invalid,
    }
}

/// Whether `raw` is `host [":" port]` as RFC 3986 §3.2.2-3.2.3 define
/// them: an IP literal in brackets, or a non-empty registered name or IPv4
/// address (unreserved characters, sub-delimiters and percent-escapes),
/// then digits after a colon. Checked by hand, without allocating: it runs
/// on every request.
fn valid_authority(raw: &[u8]) -> bool {
    let (host, rest) = if raw.first() == Some(&b'[') {
        match raw.iter().position(|b| *b == b']') {
            Some(end) => {
                let literal = &raw[1..end];
                let ipv6 = !literal.is_empty()
                    && literal
                        .iter()
                        .all(|b| b.is_ascii_hexdigit() || matches!(b, b':' | b'.'));
                let future = literal.first() == Some(&b'v')
                    && literal
                        .iter()
                        .all(|b| is_unreserved(*b) || is_sub_delim(*b) || *b == b':');
                let ok = ipv6 || future;
                if !ok {
                    return false;
                }
                (&raw[..=end], &raw[end + 1..])
            }
            None => return false,
        }
    } else {
        let end = raw.iter().position(|b| *b == b':').unwrap_or(raw.len());
        let host = &raw[..end];
        if host.is_empty() || !valid_reg_name(host) {
            return false;
        }
        (host, &raw[end..])
    };
    debug_assert!(!host.is_empty());
    match rest {
        [] => true,
        [b':', port @ ..] => port.iter().all(u8::is_ascii_digit),
        _ => false,
    }
}

fn is_sub_delim(b: u8) -> bool {
    matches!(
        b,
        b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b';' | b'='
    )
}

/// `*( unreserved / pct-encoded / sub-delims )`.
fn valid_reg_name(name: &[u8]) -> bool {
    let mut i = 0;
    while i < name.len() {
        let b = name[i];
        if b == b'%' {
            let escape = name.get(i + 1..i + 3);
            if !escape.is_some_and(|e| e.iter().all(u8::is_ascii_hexdigit)) {
                return false;
            }
            i += 3;
        } else if is_unreserved(b) || is_sub_delim(b) {
            i += 1;
        } else {
            return false;
        }
    }
    true
}

impl KeyScheme {
    /// `{namespace}v{version}:` and the name field, written once.
    fn head(&self) -> &str {
        self.head.get_or_init(|| {
            let mut head = String::with_capacity(self.namespace.len() + self.name.len() + 16);
            head.push_str(&self.namespace);
            head.push('v');
            head.push_str(itoa::Buffer::new().format(self.version));
            head.push(':');
            push_text_field(&mut head, &self.name);
            head
        })
    }

    /// To be called after a field changes: the head is written again.
    pub(crate) fn changed(&mut self) {
        self.head = OnceLock::new();
    }

    /// Length of `{namespace}v{version}:`.
    fn prefix_len(&self) -> usize {
        let mut digits = 1;
        let mut v = self.version / 10;
        while v > 0 {
            digits += 1;
            v /= 10;
        }
        self.namespace.len() + 2 + digits
    }

    /// The key of a read of `parts`; `user` for per-user entries, `body`
    /// for requests whose body is part of their identity (gRPC). `None`
    /// when the request's host is invalid or a custom key function says to
    /// bypass.
    pub(crate) fn key(
        &self,
        parts: &Parts,
        user: Option<&str>,
        body: Option<&[u8]>,
    ) -> Option<String> {
        self.key_for_audience(parts, user, false, body)
    }

    /// [`KeyScheme::key`], for a request whose credentials a shared cache
    /// may answer with a response its origin marked shareable (RFC 9111
    /// §3.5) when `authorized`: such entries have keys of their own, apart
    /// from those of requests without credentials.
    pub(crate) fn key_for_audience(
        &self,
        parts: &Parts,
        user: Option<&str>,
        authorized: bool,
        body: Option<&[u8]>,
    ) -> Option<String> {
        let head = self.head();
        let mut key = String::with_capacity(
            head.len() + parts.uri.path_and_query().map_or(0, |pq| pq.as_str().len()) + 64,
        );
        key.push_str(head);
        let prefix_len = self.prefix_len();
        if let Some(custom) = &self.custom {
            key.push_str(" c");
            push_text_field(&mut key, &custom(parts)?);
        } else {
            key.push(' ');
            // HEAD is answered from the GET entry.
            if parts.method == http::Method::GET || parts.method == http::Method::HEAD {
                key.push_str("3:GET");
            } else {
                push_text_field(&mut key, parts.method.as_str());
            }
            key.push(' ');
            if self.host {
                match request_host(parts) {
                    RequestHost::Valid(host) => push_lowercase_field(&mut key, host),
                    RequestHost::Absent => key.push('-'),
                    RequestHost::Invalid => return None,
                }
            } else {
                key.push('*');
            }
            key.push(' ');
            push_text_field(&mut key, &normalize_path(parts.uri.path()));
            key.push(' ');
            push_text_field(&mut key, &normalized_query(parts.uri.query().unwrap_or("")));
        }
        for name in &self.headers {
            push_header_field(&mut key, name, &parts.headers);
        }
        if let Some(user) = user {
            key.push_str(" u");
            push_user_hash(&mut key, user);
        }
        if authorized {
            key.push_str(" a");
        }
        if let Some(body) = body {
            key.push_str(" b");
            push_hex(&mut key, &Sha256::digest(body));
        }
        Some(hash_if_long(key, prefix_len))
    }

    /// The key of the variant of `key` for the request `headers` carry,
    /// for a response whose `Vary` names `names` (beyond the headers the
    /// route varies on): one entry per combination of their values.
    pub(crate) fn variant(&self, key: &str, names: &[HeaderName], headers: &HeaderMap) -> String {
        let mut names: Vec<&HeaderName> = names.iter().collect();
        names.sort_unstable_by(|a, b| a.as_str().cmp(b.as_str()));
        names.dedup();
        let mut out = String::with_capacity(key.len() + 32);
        out.push_str(key);
        out.push_str(" V");
        for name in names {
            push_header_field(&mut out, name, headers);
        }
        hash_if_long(out, self.prefix_len().min(key.len()))
    }
}

/// Replaces what follows the prefix by its SHA-256 when the key is long.
fn hash_if_long(mut key: String, prefix_len: usize) -> String {
    if key.len() > MAX_PLAIN_KEY_LEN {
        let digest = Sha256::digest(&key.as_bytes()[prefix_len..]);
        key.truncate(prefix_len);
        key.push_str("sha256:");
        push_hex(&mut key, &digest);
    }
    key
}

/// Whether a byte is written as `%XX` in a key.
fn needs_escape(b: u8) -> bool {
    !(0x21..=0x7e).contains(&b) || b == b'%'
}

/// Appends `{length}:{bytes}`, bytes outside visible ASCII and `%`
/// percent-encoded; the length is that of the encoded text.
fn push_field(out: &mut String, bytes: &[u8]) {
    let escapes = escapes(bytes);
    if escapes == 0
        && let Ok(text) = std::str::from_utf8(bytes)
    {
        push_plain_field(out, text);
    } else {
        push_escaped_field(out, bytes, escapes, false);
    }
}

/// [`push_field`] of text, the usual case: no UTF-8 check to make.
fn push_text_field(out: &mut String, text: &str) {
    match escapes(text.as_bytes()) {
        0 => push_plain_field(out, text),
        n => push_escaped_field(out, text.as_bytes(), n, false),
    }
}

/// [`push_text_field`] in ASCII lower case.
fn push_lowercase_field(out: &mut String, text: &str) {
    let bytes = text.as_bytes();
    match escapes(bytes) {
        0 if !bytes.iter().any(u8::is_ascii_uppercase) => push_plain_field(out, text),
        n => push_escaped_field(out, bytes, n, true),
    }
}

/// How many bytes of `bytes` are written as `%XX`.
fn escapes(bytes: &[u8]) -> usize {
    bytes.iter().filter(|b| needs_escape(**b)).count()
}

fn push_plain_field(out: &mut String, text: &str) {
    out.push_str(itoa::Buffer::new().format(text.len()));
    out.push(':');
    out.push_str(text);
}

fn push_escaped_field(out: &mut String, bytes: &[u8], escapes: usize, lower: bool) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    out.push_str(itoa::Buffer::new().format(bytes.len() + 2 * escapes));
    out.push(':');
    out.reserve(bytes.len() + 2 * escapes);
    for &b in bytes {
        if needs_escape(b) {
            out.push('%');
            out.push(HEX[usize::from(b >> 4)] as char);
            out.push(HEX[usize::from(b & 0xf)] as char);
        } else if lower {
            out.push(b.to_ascii_lowercase() as char);
        } else {
            out.push(b as char);
        }
    }
}

/// ` h{name} {count}:{value}*`: every value of the header, raw, in order;
/// a header the request lacks has count 0, so it differs from an empty
/// value.
fn push_header_field(key: &mut String, name: &HeaderName, headers: &HeaderMap) {
    key.push_str(" h");
    push_text_field(key, name.as_str());
    let values = headers.get_all(name);
    key.push(' ');
    key.push_str(itoa::Buffer::new().format(values.iter().count()));
    key.push(':');
    for v in values {
        push_field(key, v.as_bytes());
    }
}

/// The user as a SHA-256 (128 bits of it, in hex): a user id or token
/// is never kept, nor logged with the key, in plain text.
fn push_user_hash(key: &mut String, user: &str) {
    let mut hasher = Sha256::new();
    hasher.update(b"tower-cache user\0");
    hasher.update(user.as_bytes());
    push_hex(key, &hasher.finalize()[..16]);
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn hex_value(b: u8) -> Option<u8> {
    (b as char).to_digit(16).and_then(|d| u8::try_from(d).ok())
}

/// `text` with percent-encoded unreserved characters decoded and the hex
/// digits of the other escapes upper-cased (RFC 3986 §6.2.2.1-2): two
/// spellings of one URI component normalize alike.
pub(crate) fn normalize_path(text: &str) -> Cow<'_, str> {
    let bytes = text.as_bytes();
    if !bytes.contains(&b'%') {
        return Cow::Borrowed(text);
    }
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| {
                Some((
                    hex_value(*bytes.get(i + 1)?)?,
                    hex_value(*bytes.get(i + 2)?)?,
                ))
            })
            .flatten();
        if let Some((hi, lo)) = escaped {
            let b = hi << 4 | lo;
            if is_unreserved(b) {
                out.push(b);
            } else {
                out.push(b'%');
                out.extend(bytes[i + 1..i + 3].iter().map(u8::to_ascii_uppercase));
            }
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    // Only ASCII escapes were replaced, by ASCII: still UTF-8, so the
    // lossy conversion never changes anything.
    Cow::Owned(
        String::from_utf8(out)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()),
    )
}

/// Query parameters sorted by name, keeping the order of the values of
/// one name (`?b=2&a=1` and `?a=1&b=2` share an entry; `?s=a&s=b` and
/// `?s=b&s=a` do not); empty pieces are dropped and each piece is
/// normalized like the path.
fn normalized_query(query: &str) -> Cow<'_, str> {
    fn name(pair: &str) -> &str {
        pair.split_once('=').map_or(pair, |(n, _)| n)
    }
    if query.is_empty() {
        return Cow::Borrowed("");
    }
    let mut pairs: Vec<Cow<'_, str>> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(normalize_path)
        .collect();
    pairs.sort_by(|a, b| name(a).cmp(name(b)));
    Cow::Owned(pairs.join("&"))
}

pub(crate) fn push_hex(out: &mut String, bytes: &[u8]) {
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Request;

    fn parts(uri: &str, headers: &[(&str, &str)]) -> Parts {
        let mut b = Request::get(uri);
        for (n, v) in headers {
            b = b.header(*n, *v);
        }
        b.body(()).unwrap().into_parts().0
    }

    fn scheme() -> KeyScheme {
        KeyScheme {
            name: "/products/{id}".to_owned(),
            ..KeyScheme::default()
        }
    }

    #[test]
    fn query_order_does_not_matter_but_values_do() {
        let s = scheme();
        let a = s.key(&parts("http://h/p?b=2&a=1", &[]), None, None);
        let b = s.key(&parts("http://h/p?a=1&b=2", &[]), None, None);
        let c = s.key(&parts("http://h/p?a=1&b=3", &[]), None, None);
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(
            a.as_deref(),
            Some("http:v2:14:/products/{id} 3:GET 1:h 2:/p 7:a=1&b=2")
        );
    }

    #[test]
    fn a_crafted_host_never_reaches_another_routes_entry() {
        let s = scheme();
        // `GET /reports/top` with `Host: /products/2?x=` once spelled the
        // key of `GET /products/2?x=/reports/top`.
        let crafted = parts("/reports/top", &[("host", "/products/2?x=")]);
        assert_eq!(s.key(&crafted, None, None), None, "invalid Host bypasses");
        let slash = parts("/", &[("host", "/")]);
        assert_eq!(s.key(&slash, None, None), None);
        for bad in ["", "a b", "user@h", "h:8x", "h:1:2", "[::1", "h/x"] {
            assert_eq!(
                s.key(&parts("/", &[("host", bad)]), None, None),
                None,
                "{bad:?}"
            );
        }
        let mut non_ascii = parts("/", &[]);
        non_ascii.headers.insert(
            http::header::HOST,
            http::HeaderValue::from_bytes(b"caf\xc3\xa9").unwrap(),
        );
        assert_eq!(
            s.key(&non_ascii, None, None),
            None,
            "never collapses to \"\""
        );
        let absent = s.key(&parts("//", &[]), None, None);
        assert!(absent.is_some(), "no Host at all is keyed as such");
        for good in ["h", "H:80", "127.0.0.1:3000", "[::1]:8080", "a-b.example"] {
            let key = s.key(&parts("/", &[("host", good)]), None, None);
            assert!(key.is_some(), "{good:?}");
            assert_ne!(key, absent);
        }
        // Two routes never share a key.
        let other = KeyScheme {
            name: "/reports/top".to_owned(),
            ..KeyScheme::default()
        };
        let p = parts("http://h/products/2", &[]);
        assert_ne!(s.key(&p, None, None), other.key(&p, None, None));
    }

    #[test]
    fn header_values_enter_as_raw_bytes() {
        let s = KeyScheme {
            headers: vec![HeaderName::from_static("x-a")],
            ..scheme()
        };
        let with = |v: &[u8]| {
            let mut p = parts("/p", &[]);
            p.headers
                .insert("x-a", http::HeaderValue::from_bytes(v).unwrap());
            s.key(&p, None, None)
        };
        assert_ne!(with(b":%%\xC2"), with(b":%%\xCB"));
        assert_ne!(with(b"a,b"), {
            let mut p = parts("/p", &[("x-a", "a"), ("x-a", "b")]);
            p.headers.remove("host");
            s.key(&p, None, None)
        });
        let empty = s.key(&parts("/p", &[("x-a", "")]), None, None);
        let absent = s.key(&parts("/p", &[]), None, None);
        assert_ne!(empty, absent);
    }

    #[test]
    fn spellings_of_one_path_share_a_key() {
        let s = scheme();
        let plain = s.key(&parts("/products/12", &[]), None, None);
        assert_eq!(plain, s.key(&parts("/products/%31%32", &[]), None, None));
        assert_eq!(plain, s.key(&parts("/%70roducts/12", &[]), None, None));
        assert_ne!(plain, s.key(&parts("/products/12%2F", &[]), None, None));
        assert_eq!(
            s.key(&parts("/a%2fb", &[]), None, None),
            s.key(&parts("/a%2Fb", &[]), None, None)
        );
        assert_ne!(
            s.key(&parts("/a%2Fb", &[]), None, None),
            s.key(&parts("/a/b", &[]), None, None),
            "an escaped reserved character stays escaped"
        );
        assert_eq!(normalize_path("/x%7e%41%zz%"), "/x~A%zz%");
    }

    #[test]
    fn long_keys_are_hashed_not_truncated() {
        let s = scheme();
        let long_a = format!("/p?q={}a", "x".repeat(400));
        let long_b = format!("/p?q={}b", "x".repeat(400));
        let a = s.key(&parts(&long_a, &[]), None, None).unwrap();
        let b = s.key(&parts(&long_b, &[]), None, None).unwrap();
        assert!(
            a.len() <= MAX_PLAIN_KEY_LEN && a.starts_with("http:v2:sha256:"),
            "{a}"
        );
        assert_ne!(a, b);
    }

    #[test]
    fn host_can_be_left_out() {
        let s = KeyScheme {
            host: false,
            ..scheme()
        };
        let a = s.key(&parts("/p", &[("host", "a:1")]), None, None);
        let b = s.key(&parts("/p", &[("host", "b:2")]), None, None);
        assert_eq!(a, b);
        assert_eq!(
            a.as_deref(),
            Some("http:v2:14:/products/{id} 3:GET * 2:/p 0:")
        );
        let invalid = s.key(&parts("/p", &[("host", "/x")]), None, None);
        assert_eq!(a, invalid, "an unused host is not checked");
    }

    #[test]
    fn version_bump_changes_every_key() {
        let v1 = scheme();
        let v2 = KeyScheme {
            version: 3,
            ..scheme()
        };
        let p = parts("/p", &[]);
        assert_ne!(v1.key(&p, None, None), v2.key(&p, None, None));
        assert_eq!(v1.prefix_len(), "http:v2:".len());
        assert_eq!(
            KeyScheme {
                version: 1234,
                ..scheme()
            }
            .prefix_len(),
            "http:v1234:".len()
        );
    }

    fn bob_and_forgeries(s: &KeyScheme) -> (Option<String>, Vec<Option<String>>) {
        let bob = s.key(&parts("http://h/me", &[]), Some("bob"), None);
        let forged = vec![
            s.key(&parts("http://h/me|user=bob", &[]), None, None),
            s.key(&parts("http://h/me?x=|user=bob", &[]), None, None),
            s.key(&parts("http://h/me%20u", &[]), None, None),
            s.key(
                &parts("http://h/me", &[("accept-language", "fr u")]),
                None,
                None,
            ),
            s.key(
                &parts("http://h/me", &[("accept-language", "fr|user=bob")]),
                Some("mallory"),
                None,
            ),
        ];
        (bob, forged)
    }

    #[test]
    fn no_request_spells_another_users_key() {
        let plain = scheme();
        let (bob, forged) = bob_and_forgeries(&plain);
        for f in &forged {
            assert_ne!(f, &bob);
        }
        let vary = KeyScheme {
            headers: vec![HeaderName::from_static("accept-language")],
            ..scheme()
        };
        let bob_fr = vary.key(
            &parts("http://h/me", &[("accept-language", "fr")]),
            Some("bob"),
            None,
        );
        let (_, forged) = bob_and_forgeries(&vary);
        for f in &forged {
            assert_ne!(f, &bob_fr, "{f:?}");
        }
        // A custom key cannot spell a field either.
        let custom = KeyScheme {
            custom: Some(Arc::new(|p: &Parts| Some(p.uri.path().to_owned()))),
            ..scheme()
        };
        assert_ne!(
            custom.key(&parts("http://h/me%20u", &[]), None, None),
            custom.key(&parts("http://h/me", &[]), Some("bob"), None)
        );
    }

    #[test]
    fn users_are_hashed_never_kept_in_plain_text() {
        let s = scheme();
        let key = s
            .key(&parts("/me", &[]), Some("token-abc123"), None)
            .unwrap();
        assert!(!key.contains("token-abc123"), "{key}");
        assert!(key.contains(" u"), "{key}");
        assert_eq!(
            key,
            s.key(&parts("/me", &[]), Some("token-abc123"), None)
                .unwrap(),
            "stable"
        );
    }

    #[test]
    fn repeated_query_names_keep_their_value_order() {
        let s = scheme();
        let ab = s.key(&parts("/p?sort=a&sort=b", &[]), None, None);
        let ba = s.key(&parts("/p?sort=b&sort=a", &[]), None, None);
        assert_ne!(ab, ba);
        let mixed = s.key(&parts("/p?sort=b&x=1&sort=a", &[]), None, None);
        let moved = s.key(&parts("/p?x=1&sort=b&sort=a", &[]), None, None);
        assert_eq!(
            mixed, moved,
            "other names may move, one name's values may not"
        );
    }

    #[test]
    fn variants_are_keyed_by_the_named_headers() {
        let s = scheme();
        let names = [HeaderName::from_static("accept-language")];
        let fr = parts("/p", &[("accept-language", "fr")]);
        let en = parts("/p", &[("accept-language", "en")]);
        let key = s.key(&fr, None, None).unwrap();
        assert_ne!(
            s.variant(&key, &names, &fr.headers),
            s.variant(&key, &names, &en.headers)
        );
        assert_ne!(s.variant(&key, &names, &fr.headers), key);
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        /// A request drawn from small alphabets, so that near-collisions
        /// (shared prefixes, separators, escapes) are common.
        #[derive(Debug, Clone)]
        struct Req {
            name: String,
            method: &'static str,
            host: Option<Vec<u8>>,
            path: String,
            query: Vec<String>,
            header: Option<Vec<Vec<u8>>>,
            user: Option<String>,
            body: Option<Vec<u8>>,
        }

        fn text(alphabet: &'static str, max: usize) -> impl Strategy<Value = String> {
            let chars: Vec<char> = alphabet.chars().collect();
            proptest::collection::vec(proptest::sample::select(chars), 0..max)
                .prop_map(|c| c.into_iter().collect())
        }

        fn header_bytes() -> impl Strategy<Value = Vec<u8>> {
            let bytes: Vec<u8> = b" \t:,|%=ab\x80\xc2\xcb\xff".to_vec();
            proptest::collection::vec(proptest::sample::select(bytes), 0..5)
        }

        fn req() -> impl Strategy<Value = Req> {
            (
                text("/ab{}", 4),
                proptest::sample::select(vec!["GET", "HEAD", "POST"]),
                proptest::option::of(proptest::collection::vec(
                    proptest::sample::select(b"aB1:/?[]@ .\x80".to_vec()),
                    0..5,
                )),
                text("/a:|%20F", 6).prop_map(|p| format!("/{p}")),
                proptest::collection::vec(text("a=b|:", 4), 0..3),
                proptest::option::of(proptest::collection::vec(header_bytes(), 0..3)),
                proptest::option::of(text("ab|", 3)),
                proptest::option::of(proptest::collection::vec(any::<u8>(), 0..3)),
            )
                .prop_map(|(name, method, host, path, query, header, user, body)| {
                    Req {
                        name,
                        method,
                        host,
                        path,
                        query,
                        header,
                        user,
                        body,
                    }
                })
        }

        fn build(r: &Req) -> Option<Parts> {
            let query = r.query.join("&");
            let uri = if query.is_empty() {
                r.path.clone()
            } else {
                format!("{}?{query}", r.path)
            };
            let mut b = Request::builder().method(r.method).uri(uri);
            if let Some(host) = &r.host {
                b = b.header("host", http::HeaderValue::from_bytes(host).ok()?);
            }
            for v in r.header.iter().flatten() {
                b = b.header("x-a", http::HeaderValue::from_bytes(v).ok()?);
            }
            Some(b.body(()).ok()?.into_parts().0)
        }

        /// What the key promises to tell apart, in the test's own terms.
        fn identity(r: &Req, p: &Parts) -> impl PartialEq + std::fmt::Debug {
            let method = if r.method == "HEAD" { "GET" } else { r.method };
            let mut query: Vec<String> =
                r.query.iter().filter(|q| !q.is_empty()).cloned().collect();
            query.sort_by(|a, b| a.split('=').next().cmp(&b.split('=').next()));
            (
                r.name.clone(),
                method,
                r.host.as_ref().map(|h| h.to_ascii_lowercase()),
                p.uri.path().to_owned(),
                query,
                r.header.clone().unwrap_or_default(),
                r.user.clone(),
                r.body.clone(),
            )
        }

        fn key_of(r: &Req, p: &Parts) -> Option<String> {
            let s = KeyScheme {
                name: r.name.clone(),
                headers: vec![HeaderName::from_static("x-a")],
                ..KeyScheme::default()
            };
            s.key(p, r.user.as_deref(), r.body.as_deref())
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(4096))]

            #[test]
            fn different_requests_never_share_a_key(a in req(), b in req()) {
                let (Some(pa), Some(pb)) = (build(&a), build(&b)) else {
                    return Ok(());
                };
                let (Some(ka), Some(kb)) = (key_of(&a, &pa), key_of(&b, &pb)) else {
                    return Ok(());
                };
                if identity(&a, &pa) == identity(&b, &pb) {
                    prop_assert_eq!(ka, kb);
                } else {
                    prop_assert_ne!(ka, kb);
                }
            }

            #[test]
            fn a_request_and_its_variants_never_share_a_key(a in req(), b in req()) {
                let (Some(pa), Some(pb)) = (build(&a), build(&b)) else {
                    return Ok(());
                };
                let (Some(ka), Some(kb)) = (key_of(&a, &pa), key_of(&b, &pb)) else {
                    return Ok(());
                };
                let s = KeyScheme::default();
                let names = [HeaderName::from_static("x-a")];
                prop_assert_ne!(&ka, &s.variant(&kb, &names, &pb.headers));
            }
        }
    }
}
