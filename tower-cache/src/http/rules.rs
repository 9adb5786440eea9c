//! A route's HTTP caching rules: the configuration that the other files
//! of this module read to decide, store and answer.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::request::Parts;
use http::{HeaderName, StatusCode};

use super::status::{DEFAULT_CACHE_STATUS_NAME, cache_status_name};
use super::{DEFAULT_TAG_HEADER, KeyScheme, RequestClass};

/// Gives the identity a per-user entry is keyed by, or `None` to bypass.
pub(crate) type UserFn = Arc<dyn Fn(&Parts) -> Option<String> + Send + Sync>;
/// Gives tags from a request.
pub(crate) type TagsFn = Arc<dyn Fn(&Parts) -> Vec<String> + Send + Sync>;
/// Says what a request is to the cache.
pub(crate) type ClassifyFn = Arc<dyn Fn(&Parts) -> RequestClass + Send + Sync>;

/// Default largest body stored: 1 MiB.
pub const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;

/// Default bound on heuristic freshness in the shared-cache mode: 1 hour.
pub const DEFAULT_HEURISTIC_MAX: Duration = Duration::from_secs(3600);

/// Default time an entry with a validator is kept after it can no longer
/// be served, to be revalidated: 10 minutes.
pub const DEFAULT_KEEP: Duration = Duration::from_secs(600);

/// The targeted cache field a shared cache obeys by default (RFC 9213).
pub static CDN_CACHE_CONTROL: HeaderName = HeaderName::from_static("cdn-cache-control");

/// The statuses stored by default.
pub(crate) const DEFAULT_STATUSES: [u16; 7] = [200, 203, 204, 300, 301, 404, 410];

/// The per-route rules of the HTTP layers.
#[derive(Clone)]
pub(crate) struct HttpRules {
    pub key: KeyScheme,
    pub per_user: Option<UserFn>,
    pub tags: Option<TagsFn>,
    pub invalidates: Option<TagsFn>,
    pub classify: Option<ClassifyFn>,
    pub statuses: Vec<StatusCode>,
    pub max_body_bytes: usize,
    pub respect_origin_ttl: bool,
    pub grpc_methods: Vec<String>,
    /// Where handlers name the tags of their response; `None`: nowhere.
    pub tag_header: Option<HeaderName>,
    /// The shared-cache mode: the origin's headers decide freshness (RFC
    /// 9111 as a proxy applies it).
    pub shared: bool,
    /// The targeted cache fields obeyed in the shared-cache mode, first
    /// first (RFC 9213).
    pub targeted: Vec<HeaderName>,
    /// The bound on heuristic freshness.
    pub heuristic_max: Duration,
    /// How long an entry with a validator is kept past its stale windows.
    pub keep: Duration,
    /// The route policy's stale windows (stale-while-revalidate,
    /// stale-if-error), for an origin that names one of them only.
    pub policy_windows: (Duration, Duration),
    /// Whether answers carry `X-Cache`.
    pub x_cache: bool,
    /// The cache's name in `Cache-Status`, ready to write; `None`: no
    /// `Cache-Status`.
    pub cache_status: Option<Bytes>,
}

impl Default for HttpRules {
    fn default() -> Self {
        HttpRules {
            key: KeyScheme::default(),
            per_user: None,
            tags: None,
            invalidates: None,
            classify: None,
            statuses: DEFAULT_STATUSES
                .iter()
                .filter_map(|s| StatusCode::from_u16(*s).ok())
                .collect(),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            respect_origin_ttl: true,
            grpc_methods: Vec::new(),
            tag_header: Some(DEFAULT_TAG_HEADER.clone()),
            shared: false,
            targeted: vec![CDN_CACHE_CONTROL.clone()],
            heuristic_max: DEFAULT_HEURISTIC_MAX,
            keep: DEFAULT_KEEP,
            policy_windows: (Duration::ZERO, Duration::ZERO),
            x_cache: true,
            cache_status: Some(cache_status_name(DEFAULT_CACHE_STATUS_NAME)),
        }
    }
}
