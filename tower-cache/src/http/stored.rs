//! A cached HTTP response and its binary encoding (the entry's payload).
//!
//! ```text
//! status u16 | flags u8 | etag (u16 len, bytes) | header count u16 | (name u16+bytes, value u16+bytes)*
//! | vary count u16 | (name u16+bytes, present u8, value u16+bytes)*
//! | body u32+bytes | trailer count u16 (0xFFFF: none) | (name, value)*
//! ```
//!
//! Flag bit 0: the `ETag` was computed from the body, not sent by the
//! origin (it answers the cache's clients, never goes to the origin).

use crate::entry::{u16_len, u32_len};
use bytes::{BufMut, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};

/// A response as the cache keeps it.
#[derive(Debug, Clone)]
pub(crate) struct StoredResponse {
    pub status: StatusCode,
    pub etag: HeaderValue,
    /// The `ETag` was computed from the body: the origin knows nothing of
    /// it.
    pub etag_generated: bool,
    pub headers: HeaderMap,
    /// The request header values the response varied on, at store time.
    pub vary: Vec<(HeaderName, Option<HeaderValue>)>,
    pub body: Bytes,
    pub trailers: Option<HeaderMap>,
}

#[derive(Debug)]
pub(crate) struct Malformed;

fn put_bytes16(buf: &mut BytesMut, b: &[u8]) {
    let len = u16_len(b.len());
    buf.put_u16(len);
    buf.put_slice(&b[..usize::from(len)]);
}

fn put_headers(buf: &mut BytesMut, headers: &HeaderMap) {
    let count = u16_len(headers.len()).min(u16::MAX - 1);
    buf.put_u16(count);
    for (name, value) in headers.iter().take(usize::from(count)) {
        put_bytes16(buf, name.as_str().as_bytes());
        put_bytes16(buf, value.as_bytes());
    }
}

struct Reader {
    buf: Bytes,
    pos: usize,
}

impl Reader {
    fn take(&mut self, n: usize) -> Result<Bytes, Malformed> {
        let end = self.pos.checked_add(n).ok_or(Malformed)?;
        if end > self.buf.len() {
            return Err(Malformed);
        }
        let out = self.buf.slice(self.pos..end);
        self.pos = end;
        Ok(out)
    }
    fn u8(&mut self) -> Result<u8, Malformed> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, Malformed> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, Malformed> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn bytes16(&mut self) -> Result<Bytes, Malformed> {
        let n = self.u16()? as usize;
        self.take(n)
    }
    fn name(&mut self) -> Result<HeaderName, Malformed> {
        HeaderName::from_bytes(&self.bytes16()?).map_err(|_| Malformed)
    }
    fn value(&mut self) -> Result<HeaderValue, Malformed> {
        HeaderValue::from_maybe_shared(self.bytes16()?).map_err(|_| Malformed)
    }
    /// Fails unless `count` items of at least `min_len` bytes each can
    /// still follow: nothing is allocated from a count the input cannot
    /// hold.
    fn check_count(&self, count: usize, min_len: usize) -> Result<(), Malformed> {
        if count.saturating_mul(min_len) > self.buf.len().saturating_sub(self.pos) {
            return Err(Malformed);
        }
        Ok(())
    }
    fn headers(&mut self, count: u16) -> Result<HeaderMap, Malformed> {
        // A header is at least its name's and its value's 2-byte lengths.
        self.check_count(count as usize, 4)?;
        // Room for the headers every answer from the cache adds (Age,
        // X-Cache, Cache-Status), so adding them never grows the map.
        let mut map = HeaderMap::try_with_capacity(count as usize + 3).map_err(|_| Malformed)?;
        for _ in 0..count {
            let name = self.name()?;
            let value = self.value()?;
            map.append(name, value);
        }
        Ok(map)
    }
}

impl StoredResponse {
    pub(crate) fn encode(&self) -> Bytes {
        let mut buf = BytesMut::with_capacity(64 + self.body.len() + self.headers.len() * 48);
        buf.put_u16(self.status.as_u16());
        buf.put_u8(u8::from(self.etag_generated));
        put_bytes16(&mut buf, self.etag.as_bytes());
        put_headers(&mut buf, &self.headers);
        let vary = u16_len(self.vary.len());
        buf.put_u16(vary);
        for (name, value) in self.vary.iter().take(usize::from(vary)) {
            put_bytes16(&mut buf, name.as_str().as_bytes());
            match value {
                Some(v) => {
                    buf.put_u8(1);
                    put_bytes16(&mut buf, v.as_bytes());
                }
                None => buf.put_u8(0),
            }
        }
        let len = u32_len(self.body.len());
        buf.put_u32(len);
        buf.put_slice(&self.body[..len as usize]);
        match &self.trailers {
            Some(t) => put_headers(&mut buf, t),
            None => buf.put_u16(u16::MAX),
        }
        buf.freeze()
    }

    /// Decodes a payload; the body shares `bytes`' buffer.
    pub(crate) fn decode(bytes: &Bytes) -> Result<StoredResponse, Malformed> {
        let mut r = Reader {
            buf: bytes.clone(),
            pos: 0,
        };
        let status = StatusCode::from_u16(r.u16()?).map_err(|_| Malformed)?;
        let etag_generated = match r.u8()? {
            0 => false,
            1 => true,
            _ => return Err(Malformed),
        };
        let etag = r.value()?;
        let count = r.u16()?;
        let headers = r.headers(count)?;
        let vary_count = r.u16()?;
        // A name's 2-byte length and the presence byte.
        r.check_count(vary_count as usize, 3)?;
        let mut vary = Vec::with_capacity(vary_count as usize);
        for _ in 0..vary_count {
            let name = r.name()?;
            let value = match r.u8()? {
                0 => None,
                1 => Some(r.value()?),
                _ => return Err(Malformed),
            };
            vary.push((name, value));
        }
        let len = r.u32()? as usize;
        let body = r.take(len)?;
        let trailers = match r.u16()? {
            u16::MAX => None,
            n => Some(r.headers(n)?),
        };
        if r.pos != bytes.len() {
            return Err(Malformed);
        }
        Ok(StoredResponse {
            status,
            etag,
            etag_generated,
            headers,
            vary,
            body,
            trailers,
        })
    }

    /// The conditional header to revalidate this response with (RFC 9111
    /// §4.3.1): `If-None-Match` with the origin's `ETag`, else
    /// `If-Modified-Since` with its `Last-Modified`; `None` when the origin
    /// gave no validator.
    pub(crate) fn validator(&self) -> Option<(HeaderName, HeaderValue)> {
        if !self.etag_generated {
            return Some((http::header::IF_NONE_MATCH, self.etag.clone()));
        }
        self.headers
            .get(http::header::LAST_MODIFIED)
            .map(|modified| (http::header::IF_MODIFIED_SINCE, modified.clone()))
    }

    /// Whether `request` has the header values this response varied on.
    pub(crate) fn vary_matches(&self, request: &HeaderMap) -> bool {
        self.vary
            .iter()
            .all(|(name, value)| request.get(name) == value.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> StoredResponse {
        let mut headers = HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_static("application/json"));
        headers.append("x-multi", HeaderValue::from_static("a"));
        headers.append("x-multi", HeaderValue::from_static("b"));
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", HeaderValue::from_static("0"));
        StoredResponse {
            status: StatusCode::OK,
            etag: HeaderValue::from_static("\"abc\""),
            etag_generated: false,
            headers,
            vary: vec![
                (
                    HeaderName::from_static("accept-language"),
                    Some(HeaderValue::from_static("fr")),
                ),
                (HeaderName::from_static("accept-encoding"), None),
            ],
            body: Bytes::from_static(b"{\"id\":1}"),
            trailers: Some(trailers),
        }
    }

    #[test]
    fn round_trips_headers_vary_body_and_trailers() {
        let s = sample();
        let d = StoredResponse::decode(&s.encode()).unwrap();
        assert_eq!(d.status, s.status);
        assert_eq!(d.etag, s.etag);
        assert_eq!(d.headers, s.headers);
        assert_eq!(d.vary, s.vary);
        assert_eq!(d.body, s.body);
        assert_eq!(d.trailers, s.trailers);
    }

    #[test]
    fn truncations_are_rejected() {
        let bytes = sample().encode();
        for len in 0..bytes.len() {
            assert!(
                StoredResponse::decode(&bytes.slice(..len)).is_err(),
                "{len}"
            );
        }
    }

    #[test]
    fn huge_counts_are_malformed_not_a_panic() {
        // 24,575 headers or more once made `HeaderMap::with_capacity` panic.
        for count in [24_575u16, 40_000, u16::MAX - 1] {
            let mut v = vec![0, 200, 0, 0, 0];
            v.extend_from_slice(&count.to_be_bytes());
            v.extend_from_slice(&[0; 64]);
            assert!(StoredResponse::decode(&Bytes::from(v)).is_err(), "{count}");
        }
        // The trailer count takes the same path.
        let mut v = sample().encode().to_vec();
        let trailers_at = v.len() - (2 + 2 + "grpc-status".len() + 2 + 1);
        v.truncate(trailers_at);
        v.extend_from_slice(&40_000u16.to_be_bytes());
        assert!(StoredResponse::decode(&Bytes::from(v)).is_err());
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn decoding_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
                let _ = StoredResponse::decode(&Bytes::from(bytes));
            }

            #[test]
            fn decoding_a_mutated_response_never_panics(at in 0usize..64, byte in any::<u8>()) {
                let mut v = sample().encode().to_vec();
                let at = at % v.len();
                v[at] = byte;
                let _ = StoredResponse::decode(&Bytes::from(v));
            }
        }
    }

    #[test]
    fn vary_compares_request_headers() {
        let s = sample();
        let mut req = HeaderMap::new();
        req.insert("accept-language", HeaderValue::from_static("fr"));
        assert!(s.vary_matches(&req));
        req.insert("accept-language", HeaderValue::from_static("en"));
        assert!(!s.vary_matches(&req));
        req.insert("accept-language", HeaderValue::from_static("fr"));
        req.insert("accept-encoding", HeaderValue::from_static("gzip"));
        assert!(!s.vary_matches(&req));
    }
}
