//! What the app does before it serves: the existence filter of product
//! ids, built from the database (and shared through Redis when there is
//! one), and the warming of the most viewed products (`WARM=1`).

use axum::Router;
use axum::body::Body;
use tower_cache::filter::ExistenceFilter;
use tower_cache::store::RedisStore;
use tower_cache::{CacheAsideLayer, WarmReport};

use crate::db::{Db, DbError};

/// How many of the most viewed products `WARM=1` loads.
pub const WARM_TOP: u32 = 100;

/// The route label of the queries made at start-up.
const STARTUP: &str = "startup";

/// The filter of the product ids in `db`: sized for ten times as many as
/// there are now (at least 100,000) at a 0.1 % false-positive rate,
/// shared through `redis` when given.
pub async fn product_filter(
    db: &Db,
    redis: Option<RedisStore>,
) -> Result<ExistenceFilter, DbError> {
    let ids = db.product_ids(STARTUP).await?;
    let builder = ExistenceFilter::builder()
        .expected_items((ids.len() * 10).max(100_000))
        .false_positive_rate(0.001);
    let filter = match redis {
        Some(redis) => builder.shared("products", redis).build(),
        None => builder.build(),
    };
    match filter.load(ids.iter().map(u64::to_string)).await {
        Ok(n) => tracing::info!(
            products = n,
            bits = filter.num_bits(),
            "product filter built"
        ),
        Err(error) => {
            tracing::warn!(%error, "product filter built here only; it is shared once Redis answers");
        }
    }
    Ok(filter)
}

/// Warms the product route.
pub struct Warmer {
    products: CacheAsideLayer,
    db: Db,
}

impl Warmer {
    pub(crate) fn new(products: CacheAsideLayer, db: Db) -> Self {
        Warmer { products, db }
    }

    /// Loads the [`WARM_TOP`] most viewed products through `router`, so
    /// that their first request is a hit.
    pub async fn top_products(&self, router: Router) -> Result<WarmReport, DbError> {
        let ids = self.db.most_viewed(STARTUP, WARM_TOP).await?;
        let requests = ids.into_iter().filter_map(|id| {
            http::Request::get(format!("/products/{id}"))
                .body(Body::empty())
                .ok()
        });
        Ok(self.products.warm(router, requests).await)
    }
}
