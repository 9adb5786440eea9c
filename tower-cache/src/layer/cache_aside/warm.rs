//! Warming a cache-aside route: reads sent through it before traffic.

use http::{Request, Response};
use http_body::Body;
use http_body_util::BodyExt;
use tower::ServiceExt;
use tower_service::Service;

use super::CacheAsideLayer;
use crate::WarmReport;
use crate::engine::Warmed;
use crate::store::Store;

impl<St: Store, G> CacheAsideLayer<St, G> {
    /// Sends each of `requests` (reads: `GET /products/12`) through
    /// `service`, which must route them through this layer (the app's
    /// router, or `layer.layer(inner)`), and reads each answer to its end
    /// so that it is stored. A request whose entry is stored and fresh is
    /// skipped; at most [`CacheBuilder::warm_concurrency`](crate::CacheBuilder::warm_concurrency)
    /// (default 16) are in flight at once. An answer that fails (an error,
    /// a 5xx, a body that breaks) is logged and counted, and warming goes
    /// on. Progress is logged at `info` every
    /// [`WARM_LOG_EVERY`](crate::engine::WARM_LOG_EVERY) requests and at
    /// the end.
    ///
    /// ```
    /// use std::time::Duration;
    /// use axum::{Router, body::Body, routing::get};
    /// use tower_cache::{Cache, CacheAsideLayer, Policy, store::MemoryStore};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let layer = CacheAsideLayer::new(
    ///     Cache::new(MemoryStore::default()),
    ///     "/products/{id}",
    ///     Policy::ttl(Duration::from_secs(60)),
    /// );
    /// let app: Router = Router::new()
    ///     .route("/products/{id}", get(|| async { "a product" }).layer(layer.clone()));
    /// let top = [12, 7, 3].map(|id| {
    ///     http::Request::get(format!("http://shop/products/{id}")).body(Body::empty()).unwrap()
    /// });
    /// let report = layer.warm(app, top).await;
    /// assert_eq!(report.loaded, 3);
    /// # }
    /// ```
    pub async fn warm<S, ReqB, ResB>(
        &self,
        service: S,
        requests: impl IntoIterator<Item = Request<ReqB>>,
    ) -> WarmReport
    where
        S: Service<Request<ReqB>, Response = Response<ResB>> + Clone,
        S::Error: std::fmt::Display,
        ResB: Body,
    {
        let name = self.profile.name();
        let warm = |req: Request<ReqB>| {
            let service = service.clone();
            async move {
                if let Some(key) = self.key_for(&req)
                    && self.cache.holds_fresh(&key).await
                {
                    return Warmed::Cached;
                }
                let uri = req.uri().clone();
                let res = match service.oneshot(req).await {
                    Ok(res) => res,
                    Err(error) => {
                        tracing::warn!(cache = %name, %uri, %error, "warming: request failed");
                        return Warmed::Failed;
                    }
                };
                let status = res.status();
                if res.into_body().collect().await.is_err() || status.is_server_error() {
                    tracing::warn!(cache = %name, %uri, %status, "warming: answer failed");
                    return Warmed::Failed;
                }
                Warmed::Loaded
            }
        };
        self.cache.warm_each(name, requests, warm).await
    }
}
