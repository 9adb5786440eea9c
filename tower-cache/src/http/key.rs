//! Cache keys for HTTP requests.
//!
//! A key is `{namespace}v{version}:{method} {host}{path}?{query}`, then
//! one `|{header}={values}` field per header the route varies on, then
//! `|user={hash}` for a per-user entry and `|body={hash}` for a gRPC
//! message. Every part that comes from the request is escaped (`%` as
//! `%25`, `|` as `%7C`, `,` in header values as `%2C`), so no request can
//! spell a field of another request's key: `GET /me|user=bob` is not
//! Bob's entry. The user is stored only as a SHA-256, never in plain
//! text.

use std::fmt::Write as _;
use std::sync::Arc;

use http::request::Parts;
use http::{HeaderMap, HeaderName};
use sha2::{Digest, Sha256};

/// Keys longer than this are replaced by their SHA-256.
pub const MAX_PLAIN_KEY_LEN: usize = 256;

/// A function giving a request's key, or `None` to bypass the cache.
pub type KeyFn = Arc<dyn Fn(&Parts) -> Option<String> + Send + Sync>;

/// How a route turns requests into keys.
#[derive(Clone)]
pub(crate) struct KeyScheme {
    pub namespace: String,
    pub version: u32,
    pub headers: Vec<HeaderName>,
    pub custom: Option<KeyFn>,
    pub host: bool,
}

impl Default for KeyScheme {
    fn default() -> Self {
        KeyScheme {
            namespace: "http:".to_owned(),
            version: 1,
            headers: Vec::new(),
            custom: None,
            host: true,
        }
    }
}

impl KeyScheme {
    /// The key of a read of `parts`; `user` for per-user entries, `body`
    /// for requests whose body is part of their identity (gRPC). `None`
    /// when a custom key function says to bypass.
    pub(crate) fn key(
        &self,
        parts: &Parts,
        user: Option<&str>,
        body: Option<&[u8]>,
    ) -> Option<String> {
        let mut key = String::with_capacity(96);
        let _ = write!(key, "{}v{}:", self.namespace, self.version);
        let prefix_len = key.len();
        if let Some(custom) = &self.custom {
            push_escaped(&mut key, &custom(parts)?, false);
        } else {
            // HEAD is answered from the GET entry.
            if parts.method == http::Method::HEAD {
                key.push_str("GET");
            } else {
                push_escaped(&mut key, parts.method.as_str(), false);
            }
            key.push(' ');
            if self.host {
                let host = parts
                    .uri
                    .authority()
                    .map(|a| a.as_str())
                    .or_else(|| {
                        parts
                            .headers
                            .get(http::header::HOST)
                            .and_then(|h| h.to_str().ok())
                    })
                    .unwrap_or("");
                push_escaped(&mut key, &host.to_ascii_lowercase(), false);
            }
            push_escaped(&mut key, parts.uri.path(), false);
            if let Some(query) = parts.uri.query() {
                key.push('?');
                push_normalized_query(&mut key, query);
            }
        }
        for name in &self.headers {
            push_header_field(&mut key, name, &parts.headers);
        }
        if let Some(user) = user {
            key.push_str("|user=");
            push_user_hash(&mut key, user);
        }
        if let Some(body) = body {
            key.push_str("|body=");
            push_hex(&mut key, &Sha256::digest(body));
        }
        Some(hash_if_long(key, prefix_len))
    }

    /// The key of the variant of `key` for the request `headers` carry,
    /// for a response whose `Vary` names `names` (beyond the headers the
    /// route varies on): one entry per combination of their values.
    pub(crate) fn variant(&self, key: &str, names: &[HeaderName], headers: &HeaderMap) -> String {
        let prefix_len = self.namespace.len() + format!("v{}:", self.version).len();
        let mut names: Vec<&HeaderName> = names.iter().collect();
        names.sort_unstable_by(|a, b| a.as_str().cmp(b.as_str()));
        names.dedup();
        let mut out = String::with_capacity(key.len() + 32);
        out.push_str(key);
        out.push_str("|vary");
        for name in names {
            push_header_field(&mut out, name, headers);
        }
        hash_if_long(out, prefix_len.min(key.len()))
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

/// `|{name}={values}`, values joined by `,`; a header the request lacks
/// is `|{name}` without `=`, so it differs from an empty value.
fn push_header_field(key: &mut String, name: &HeaderName, headers: &HeaderMap) {
    key.push('|');
    key.push_str(name.as_str());
    let mut values = headers.get_all(name).iter().peekable();
    if values.peek().is_none() {
        return;
    }
    key.push('=');
    for (i, v) in values.enumerate() {
        if i > 0 {
            key.push(',');
        }
        push_escaped(key, &String::from_utf8_lossy(v.as_bytes()), true);
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

/// Appends `part` with `%`, `|` (and `,` when `comma`) percent-encoded,
/// so that a part never spells a field separator.
fn push_escaped(out: &mut String, part: &str, comma: bool) {
    for c in part.chars() {
        match c {
            '%' => out.push_str("%25"),
            '|' => out.push_str("%7C"),
            ',' if comma => out.push_str("%2C"),
            c => out.push(c),
        }
    }
}

/// Query parameters sorted by name, keeping the order of the values of
/// one name (`?b=2&a=1` and `?a=1&b=2` share an entry; `?s=a&s=b` and
/// `?s=b&s=a` do not); empty pieces are dropped.
fn push_normalized_query(out: &mut String, query: &str) {
    let mut pairs: Vec<&str> = query.split('&').filter(|p| !p.is_empty()).collect();
    fn name(pair: &str) -> &str {
        pair.split_once('=').map_or(pair, |(n, _)| n)
    }
    pairs.sort_by(|a, b| name(a).cmp(name(b)));
    for (i, p) in pairs.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        push_escaped(out, p, false);
    }
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

    #[test]
    fn query_order_does_not_matter_but_values_do() {
        let s = KeyScheme::default();
        let a = s.key(&parts("http://h/p?b=2&a=1", &[]), None, None);
        let b = s.key(&parts("http://h/p?a=1&b=2", &[]), None, None);
        let c = s.key(&parts("http://h/p?a=1&b=3", &[]), None, None);
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(a.as_deref(), Some("http:v1:GET h/p?a=1&b=2"));
    }

    #[test]
    fn named_headers_users_and_hosts_separate_entries() {
        let s = KeyScheme {
            headers: vec![HeaderName::from_static("accept-language")],
            ..KeyScheme::default()
        };
        let fr = s.key(
            &parts("/p", &[("host", "x"), ("accept-language", "fr")]),
            None,
            None,
        );
        let en = s.key(
            &parts("/p", &[("host", "x"), ("accept-language", "en")]),
            None,
            None,
        );
        let other_host = s.key(
            &parts("/p", &[("host", "y"), ("accept-language", "fr")]),
            None,
            None,
        );
        assert_ne!(fr, en);
        assert_ne!(fr, other_host);
        let p = parts("/me", &[]);
        assert_ne!(s.key(&p, Some("1"), None), s.key(&p, Some("2"), None));
    }

    #[test]
    fn long_keys_are_hashed_not_truncated() {
        let s = KeyScheme::default();
        let long_a = format!("/p?q={}a", "x".repeat(400));
        let long_b = format!("/p?q={}b", "x".repeat(400));
        let a = s.key(&parts(&long_a, &[]), None, None).unwrap();
        let b = s.key(&parts(&long_b, &[]), None, None).unwrap();
        assert!(
            a.len() <= MAX_PLAIN_KEY_LEN && a.starts_with("http:v1:sha256:"),
            "{a}"
        );
        assert_ne!(a, b);
    }

    #[test]
    fn host_can_be_left_out() {
        let s = KeyScheme {
            host: false,
            ..KeyScheme::default()
        };
        let a = s.key(&parts("/p", &[("host", "a:1")]), None, None);
        let b = s.key(&parts("/p", &[("host", "b:2")]), None, None);
        assert_eq!(a, b);
        assert_eq!(a.as_deref(), Some("http:v1:GET /p"));
    }

    #[test]
    fn version_bump_changes_every_key() {
        let v1 = KeyScheme::default();
        let v2 = KeyScheme {
            version: 2,
            ..KeyScheme::default()
        };
        let p = parts("/p", &[]);
        assert_ne!(v1.key(&p, None, None), v2.key(&p, None, None));
    }

    fn bob_and_forgeries(s: &KeyScheme) -> (Option<String>, Vec<Option<String>>) {
        let bob = s.key(&parts("http://h/me", &[]), Some("bob"), None);
        let forged = vec![
            s.key(&parts("http://h/me|user=bob", &[]), None, None),
            s.key(&parts("http://h/me?x=|user=bob", &[]), None, None),
            s.key(
                &parts("http://h/me", &[("accept-language", "fr|user=bob")]),
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
        let plain = KeyScheme::default();
        let (bob, forged) = bob_and_forgeries(&plain);
        for f in &forged {
            assert_ne!(f, &bob);
        }
        let vary = KeyScheme {
            headers: vec![HeaderName::from_static("accept-language")],
            ..KeyScheme::default()
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
            ..KeyScheme::default()
        };
        assert_ne!(
            custom.key(&parts("http://h/me|user=bob", &[]), None, None),
            custom.key(&parts("http://h/me", &[]), Some("bob"), None)
        );
    }

    #[test]
    fn escaping_is_injective() {
        let s = KeyScheme::default();
        let raw = s.key(&parts("http://h/a|b", &[]), None, None);
        let encoded = s.key(&parts("http://h/a%7Cb", &[]), None, None);
        assert_ne!(raw, encoded);
        assert_eq!(raw.as_deref(), Some("http:v1:GET h/a%7Cb"));
        let vary = KeyScheme {
            headers: vec![HeaderName::from_static("x-a")],
            ..KeyScheme::default()
        };
        let empty = vary.key(&parts("/p", &[("x-a", "")]), None, None);
        let absent = vary.key(&parts("/p", &[]), None, None);
        assert_ne!(empty, absent);
    }

    #[test]
    fn users_are_hashed_never_kept_in_plain_text() {
        let s = KeyScheme::default();
        let key = s
            .key(&parts("/me", &[]), Some("token-abc123"), None)
            .unwrap();
        assert!(!key.contains("token-abc123"), "{key}");
        assert!(key.contains("|user="), "{key}");
        assert_eq!(
            key,
            s.key(&parts("/me", &[]), Some("token-abc123"), None)
                .unwrap(),
            "stable"
        );
    }

    #[test]
    fn repeated_query_names_keep_their_value_order() {
        let s = KeyScheme::default();
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
        let s = KeyScheme::default();
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
}
