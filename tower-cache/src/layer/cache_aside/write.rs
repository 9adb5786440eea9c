//! A write: passed to the inner service, then, when it succeeds, the
//! entries of its tags invalidated (and, with write-through, its answer
//! stored as the entry a `GET` of its URI reads).

use std::sync::Arc;

use bytes::Bytes;
use http::request::Parts;
use http::{HeaderMap, Method, Request, Response};
use http_body::Body;
use tower_service::Service;

use super::CacheAsideLayer;
use crate::Fill;
use crate::http::{
    CacheBody, CacheStatus, Collected, Decision, HttpRules, Storability, collect_limited,
};
use crate::store::Store;

/// Sends a write to the inner service; when it succeeds, invalidates
/// `tags` (again after the double-delete delay, if set) and, with
/// write-through, stores the answer of a `PUT` or `PATCH`.
pub(super) async fn write<S, ReqB, ResB, St, G>(
    layer: Arc<CacheAsideLayer<St, G>>,
    inner: S,
    parts: Parts,
    body: ReqB,
    tags: Vec<String>,
) -> Result<Response<CacheBody<ResB>>, S::Error>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
    ResB: Body<Data = Bytes> + Unpin,
    St: Store,
{
    // Where a successful PUT/PATCH's answer is stored, with write-through.
    let read_key = (layer.write_through && matches!(parts.method, Method::PUT | Method::PATCH))
        .then(|| {
            let mut read = parts.clone();
            read.method = Method::GET;
            match layer.rules.decide(&read) {
                Decision::Read { key, per_user, .. } => Some((key, per_user, read)),
                _ => None,
            }
        })
        .flatten();
    // The request's origin, for the URIs its answer names.
    let authority = parts
        .uri
        .authority()
        .map(|a| a.as_str().to_owned())
        .or_else(|| {
            let host = parts.headers.get(http::header::HOST)?;
            host.to_str().ok().map(str::to_owned)
        });
    // The key a successful write inserts into the existence filter.
    let written = layer.absent.as_ref().and_then(|a| a.written(&parts));
    let mut inner = inner;
    let mut res = inner.call(Request::from_parts(parts, body)).await?;
    layer.rules.take_response_tags(res.headers_mut());
    // A non-error answer (2xx, 3xx) invalidates (RFC 9111 §4.4).
    let status = res.status();
    if !(status.is_success() || status.is_redirection()) {
        return Ok(res.map(CacheBody::stream));
    }
    if let (Some(absent), Some(key)) = (&layer.absent, &written)
        && status.is_success()
    {
        absent.insert(key).await;
    }
    let mut tags = tags;
    for tag in HttpRules::response_uri_tags(authority.as_deref(), res.headers()) {
        if !tags.contains(&tag) {
            tags.push(tag);
        }
    }
    for tag in &tags {
        layer.cache.remove_tag(tag).await;
    }
    tracing::debug!(cache = %layer.profile.name(), ?tags, "write succeeded; invalidated");
    let res = match read_key {
        Some((key, per_user, read)) if status.is_success() => {
            store_written(&layer, res, key, per_user, read).await
        }
        _ => res.map(CacheBody::stream),
    };
    if let Some(delay) = layer.double_delete {
        let cache = layer.cache.clone();
        layer.cache.spawn("double_delete", async move {
            tokio::time::sleep(delay).await;
            for tag in &tags {
                cache.remove_tag(tag).await;
            }
        });
    }
    Ok(res)
}

/// Write-through for HTTP: stores the representation a successful write
/// answered with as the entry its `GET` reads.
async fn store_written<ResB, St, G>(
    layer: &CacheAsideLayer<St, G>,
    res: Response<ResB>,
    key: String,
    per_user: bool,
    read: Parts,
) -> Response<CacheBody<ResB>>
where
    ResB: Body<Data = Bytes> + Unpin,
    St: Store,
{
    let (res_parts, body) = res.into_parts();
    let Storability::Store { ttl, .. } = layer.rules.storability(&res_parts, per_user, false)
    else {
        return Response::from_parts(res_parts, CacheBody::stream(body));
    };
    let (data, trailers) = match collect_limited(body, layer.rules.max_body_bytes).await {
        Collected::Complete { data, trailers } => (data, trailers),
        Collected::TooLarge(body) | Collected::Failed(body) => {
            return Response::from_parts(res_parts, body);
        }
    };
    let stored = layer
        .rules
        .to_stored(res_parts, data, trailers, &read.headers);
    let mut fill = Fill::new(stored.encode()).with_tags(layer.rules.read_tags(&read));
    fill.ttl = ttl;
    layer.cache.put(&key, &layer.profile, fill).await;
    stored.respond(CacheStatus::Miss, 0, false, &HeaderMap::new())
}
