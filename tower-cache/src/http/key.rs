//! Cache keys for HTTP requests.

use std::fmt::Write as _;
use std::sync::Arc;

use http::HeaderName;
use http::request::Parts;
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
            key.push_str(&custom(parts)?);
        } else {
            // HEAD is answered from the GET entry.
            if parts.method == http::Method::HEAD {
                key.push_str("GET");
            } else {
                key.push_str(parts.method.as_str());
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
                key.push_str(&host.to_ascii_lowercase());
            }
            key.push_str(parts.uri.path());
            if let Some(query) = parts.uri.query() {
                key.push('?');
                push_normalized_query(&mut key, query);
            }
        }
        for name in &self.headers {
            key.push('|');
            key.push_str(name.as_str());
            key.push('=');
            for (i, v) in parts.headers.get_all(name).iter().enumerate() {
                if i > 0 {
                    key.push(',');
                }
                key.push_str(&String::from_utf8_lossy(v.as_bytes()));
            }
        }
        if let Some(user) = user {
            key.push_str("|user=");
            key.push_str(user);
        }
        if let Some(body) = body {
            key.push_str("|body=");
            push_hex(&mut key, &Sha256::digest(body));
        }
        if key.len() > MAX_PLAIN_KEY_LEN {
            let digest = Sha256::digest(&key.as_bytes()[prefix_len..]);
            key.truncate(prefix_len);
            key.push_str("sha256:");
            push_hex(&mut key, &digest);
        }
        Some(key)
    }
}

/// Query parameters sorted by name then value, so `?b=2&a=1` and
/// `?a=1&b=2` share an entry; empty pieces are dropped.
fn push_normalized_query(out: &mut String, query: &str) {
    let mut pairs: Vec<&str> = query.split('&').filter(|p| !p.is_empty()).collect();
    pairs.sort_unstable();
    for (i, p) in pairs.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        out.push_str(p);
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
}
