//! Tags: the path tag every entry carries, the tags a route adds to reads,
//! and the resource tags handlers name in a response header.

use http::request::Parts;
use http::{HeaderMap, HeaderName};

use super::HttpRules;

/// The response header a handler names its resource tags in, by default:
/// `Cache-Tag`.
pub static DEFAULT_TAG_HEADER: HeaderName = HeaderName::from_static("cache-tag");
/// At most this many tags are read from one response's tag header.
pub const MAX_RESPONSE_TAGS: usize = 64;
/// A tag in a response's tag header longer than this many bytes is ignored.
pub const MAX_TAG_LEN: usize = 256;

/// The tag every entry stored for `path` carries, and every successful
/// write to `path` invalidates: `path:{path}`, the path normalized as keys
/// are (percent-encoded unreserved characters decoded), so that
/// `/products/%31%32` and `/products/12` share a tag. Name it in
/// [`CacheAsideLayer::invalidates`](crate::CacheAsideLayer::invalidates) to
/// invalidate another path's entries.
///
/// ```
/// use tower_cache::http::path_tag;
///
/// assert_eq!(path_tag("/products/%31%32"), "path:/products/12");
/// ```
#[must_use]
pub fn path_tag(path: &str) -> String {
    let normalized = super::key::normalize_path(path);
    let mut tag = String::with_capacity(5 + normalized.len());
    tag.push_str("path:");
    tag.push_str(&normalized);
    tag
}

impl HttpRules {
    /// Removes the tag header from a response (it never leaves the layer)
    /// and returns the tags it named: comma-separated, trimmed, empty ones
    /// dropped, at most [`MAX_RESPONSE_TAGS`], none longer than
    /// [`MAX_TAG_LEN`].
    pub(crate) fn take_response_tags(&self, headers: &mut HeaderMap) -> Vec<String> {
        let Some(name) = &self.tag_header else {
            return Vec::new();
        };
        let http::header::Entry::Occupied(entry) = headers.entry(name) else {
            return Vec::new();
        };
        let mut tags = Vec::new();
        for value in entry.remove_entry_mult().1 {
            let Ok(value) = value.to_str() else { continue };
            for tag in value.split(',').map(str::trim) {
                if !tag.is_empty() && tag.len() <= MAX_TAG_LEN && tags.len() < MAX_RESPONSE_TAGS {
                    tags.push(tag.to_owned());
                }
            }
        }
        tags
    }

    /// The path tags of the `Location` and `Content-Location` URIs of a
    /// successful answer to an unsafe request, when they are of the
    /// request's origin (RFC 9111 §4.4): an absolute path is, and an
    /// absolute URI is when its authority is the request's (`authority`,
    /// compared without case). Other references, and URIs of another
    /// origin, invalidate nothing.
    pub(crate) fn response_uri_tags(authority: Option<&str>, headers: &HeaderMap) -> Vec<String> {
        let mut tags = Vec::new();
        for name in [http::header::LOCATION, http::header::CONTENT_LOCATION] {
            for value in headers.get_all(name) {
                let Ok(uri) = http::Uri::try_from(value.as_bytes()) else {
                    continue;
                };
                let same_origin = match uri.authority() {
                    None => uri.path().starts_with('/') && uri.scheme().is_none(),
                    Some(theirs) => {
                        authority.is_some_and(|ours| theirs.as_str().eq_ignore_ascii_case(ours))
                    }
                };
                if same_origin {
                    let tag = path_tag(uri.path());
                    if !tags.contains(&tag) {
                        tags.push(tag);
                    }
                }
            }
        }
        tags
    }

    /// The tags a stored read of `parts` carries.
    pub(crate) fn read_tags(&self, parts: &Parts) -> Vec<String> {
        let mut tags = vec![path_tag(parts.uri.path())];
        if let Some(f) = &self.tags {
            tags.extend(f(parts));
        }
        tags
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    #[test]
    fn response_tags_are_taken_out_of_the_response() {
        let r = HttpRules::default();
        let mut headers = HeaderMap::new();
        headers.append("cache-tag", HeaderValue::from_static("product:12, catalog"));
        headers.append("cache-tag", HeaderValue::from_static(" ,x"));
        headers.insert("content-type", HeaderValue::from_static("text/plain"));
        assert_eq!(
            r.take_response_tags(&mut headers),
            ["product:12", "catalog", "x"]
        );
        assert!(!headers.contains_key("cache-tag"), "never leaves the layer");
        assert!(headers.contains_key("content-type"));
        let mut many = HeaderMap::new();
        let value = (0..100)
            .map(|i| format!("t{i}"))
            .collect::<Vec<_>>()
            .join(",");
        many.insert("cache-tag", HeaderValue::from_str(&value).unwrap());
        assert_eq!(r.take_response_tags(&mut many).len(), MAX_RESPONSE_TAGS);
        let off = HttpRules {
            tag_header: None,
            ..HttpRules::default()
        };
        let mut kept = HeaderMap::new();
        kept.insert("cache-tag", HeaderValue::from_static("a"));
        assert!(off.take_response_tags(&mut kept).is_empty());
        assert!(kept.contains_key("cache-tag"));
    }

    #[test]
    fn location_and_content_location_of_the_same_origin_are_invalidated() {
        let tags = |authority: Option<&str>, pairs: &[(&str, &str)]| {
            let mut headers = HeaderMap::new();
            for (name, value) in pairs {
                headers.append(
                    HeaderName::from_bytes(name.as_bytes()).unwrap(),
                    HeaderValue::from_str(value).unwrap(),
                );
            }
            HttpRules::response_uri_tags(authority, &headers)
        };
        let shop = Some("shop.example");
        assert_eq!(
            tags(
                shop,
                &[
                    ("location", "/products/%37"),
                    ("content-location", "/orders/1")
                ]
            ),
            ["path:/products/7", "path:/orders/1"]
        );
        assert_eq!(
            tags(shop, &[("location", "https://SHOP.example/products/7?x=1")]),
            ["path:/products/7"]
        );
        assert!(
            tags(shop, &[("location", "https://other.example/products/7")]).is_empty(),
            "another origin is never invalidated"
        );
        assert!(
            tags(None, &[("location", "https://shop.example/products/7")]).is_empty(),
            "an absolute URI needs the request's origin to compare with"
        );
        assert!(tags(shop, &[("location", "products/7"), ("location", "::")]).is_empty());
        assert_eq!(
            tags(shop, &[("location", "/a"), ("content-location", "/a")]),
            ["path:/a"]
        );
    }
}
