//! A product-catalog web app on SQLite that shows every tower-cache
//! strategy on its own route, and serves the catalog over gRPC on the
//! same port.
//!
//! Environment: `BIND` (default `127.0.0.1:3000`), `DATABASE_URL` (default
//! a private in-memory SQLite; `sqlite://file.db?mode=rwc` for a file that
//! several instances share), `REDIS_URL` (when set: Redis as L2, with
//! cross-instance invalidation), `REDIS_CLUSTER_URLS` (comma-separated
//! seed node URLs of a Redis Cluster, used instead of `REDIS_URL` for the
//! L2, the invalidation channel and the durable log), `ORIGIN_DELAY_MS` (default 0: a delay
//! added to every database query), `CACHE_L1` (`off` keeps Redis as the
//! only store, to measure L2 hits), `CACHE_HOT_KEYS` (with `CACHE_L1=off`:
//! `off` reads every key from Redis; default on: the hottest keys are kept
//! in process for 1 s; with an L1, hot keys are only counted and
//! reported), `CACHE_HOT_REPLICAS` (default 0: how many copies of each
//! key read more than `CACHE_HOT_MIN_RATE` times a second (default 1000)
//! the L2 keeps in other slots, for a Redis Cluster), `VIEWS_FLUSH_MS` (default 250: how
//! long the write-behind view counter gathers a batch), `VIEWS_DURABLE`
//! (`1` with `REDIS_URL` or `REDIS_CLUSTER_URLS`: the view counter logs every acknowledged view in
//! a Redis Stream first, so a crash loses none, and applies each exactly
//! once; default `0`), `VIEWS_CONSUMER` (with `VIEWS_DURABLE=1`: this
//! instance's name in the log's consumer group, one that survives restarts
//! so that a restart delivers what was left at once; default a name unique
//! to the process), `PRODUCT_FILTER` (`off` turns off the existence filter
//! of product ids, which answers a product no instance ever saw with a
//! `404` without the database; built from the database at start-up and
//! shared through Redis with `REDIS_URL`; default on), `WARM` (`1`: load
//! the 100 most viewed products before serving, so their first request is
//! a hit; default `0`), `RUST_LOG`.

mod app;
mod dashboard;
mod db;
mod grpc;
mod startup;
mod views;

use std::time::Duration;

use metrics_exporter_prometheus::PrometheusBuilder;
use tower_cache::Cache;
use tower_cache::store::{
    HotKeys, MemoryStore, RedisStore, RedisStoreBuilder, SharedStore, TieredStore,
};

/// The L2's builder: on the Redis Cluster of `REDIS_CLUSTER_URLS` (seed
/// node URLs, comma-separated) when set, else on the Redis of `REDIS_URL`
/// when set, else none.
fn redis_from_env() -> Option<RedisStoreBuilder> {
    let builder = if let Some(seeds) = views::cluster_seeds() {
        tracing::info!(?seeds, "L2 on a Redis Cluster");
        RedisStore::cluster_builder(seeds)
    } else {
        let url = std::env::var("REDIS_URL").ok().filter(|u| !u.is_empty())?;
        RedisStore::builder(url)
    };
    let replicas = std::env::var("CACHE_HOT_REPLICAS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    let min_rate = std::env::var("CACHE_HOT_MIN_RATE")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(tower_cache::store::DEFAULT_HOT_KEY_MIN_RATE);
    Some(
        builder
            .hot_key_replicas(replicas)
            .hot_key_min_rate(min_rate),
    )
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,tower_cache=info".into()),
        )
        .init();
    // Installed before the layers are built: they take their metric
    // handles when created.
    let metrics = PrometheusBuilder::new().install_recorder()?;

    let bind = std::env::var("BIND").unwrap_or_else(|_| "127.0.0.1:3000".to_owned());
    let delay = millis("ORIGIN_DELAY_MS")?.unwrap_or(0);
    let mut options = app::Options::default();
    if let Some(ms) = millis("VIEWS_FLUSH_MS")? {
        options.views_flush = Duration::from_millis(ms.max(1));
    }
    let views_durable = views::durable_from_env()?;
    let database_url = std::env::var("DATABASE_URL").ok().filter(|u| !u.is_empty());
    let db = db::Db::open(database_url.as_deref(), Duration::from_millis(delay))?;

    let l1 = MemoryStore::builder().max_bytes(64 * 1024 * 1024).build();
    // Kept to stop its invalidation subscriber at shutdown.
    let mut tiered_store = None;
    // The Redis the product filter is shared through.
    let mut filter_redis = None;
    let store: SharedStore = match redis_from_env() {
        Some(builder) => {
            let l2 = builder.prefix("catalog:").build()?;
            filter_redis = Some(l2.clone());
            if views_durable {
                options.views_log = Some(views::log(&l2));
            }
            if std::env::var("CACHE_L1").is_ok_and(|v| v == "off") {
                if std::env::var("CACHE_HOT_KEYS").is_ok_and(|v| v == "off") {
                    tracing::info!("cache: L2 (Redis) only");
                    SharedStore::new(l2)
                } else {
                    tracing::info!("cache: L2 (Redis) only, hot keys kept in process for 1 s");
                    SharedStore::new(HotKeys::new(l2))
                }
            } else {
                let tiered = TieredStore::new(l1, l2);
                // Fail-open: start serving even when Redis is not up yet.
                if tokio::time::timeout(Duration::from_secs(2), tiered.ready())
                    .await
                    .is_err()
                {
                    tracing::warn!("Redis is not answering; serving from L1 until it does");
                }
                tracing::info!("cache: L1 (moka) + L2 (Redis)");
                tiered_store = Some(tiered.clone());
                SharedStore::new(HotKeys::builder(tiered).track_only().build())
            }
        }
        None => {
            tracing::info!("cache: L1 (moka) only; set REDIS_URL or REDIS_CLUSTER_URLS for an L2");
            SharedStore::new(l1)
        }
    };
    if !std::env::var("PRODUCT_FILTER").is_ok_and(|v| v == "off") {
        options.product_filter = Some(startup::product_filter(&db, filter_redis).await?);
    }
    let cache = Cache::new(store);
    let grpc = grpc::routes(db.clone(), cache.clone());
    let (router, shutdown, warmer) = app::router(db, cache.clone(), metrics, options);
    if std::env::var("WARM").is_ok_and(|v| v == "1") {
        let report = warmer.top_products(router.clone()).await?;
        tracing::info!(
            loaded = report.loaded,
            failed = report.failed,
            "warmed the most viewed products"
        );
    }
    // gRPC beside HTTP on one port: HTTP/1 and HTTP/2 (h2c) are both served.
    let router = router.merge(grpc);

    let served = async {
        let listener = tokio::net::TcpListener::bind(&bind).await?;
        tracing::info!(address = %listener.local_addr()?, "listening");
        axum::serve(listener, router)
            .with_graceful_shutdown(signal())
            .await
    }
    .await;
    // Whatever ended the server, acknowledged views reach the database.
    tracing::info!("stopped taking requests; delivering the views not yet in the database");
    shutdown.run().await;
    cache.shutdown().await;
    if let Some(tiered) = tiered_store {
        tiered.shutdown().await;
    }
    served?;
    tracing::info!("shut down cleanly");
    Ok(())
}

/// A whole number of milliseconds from the environment, if set.
fn millis(name: &str) -> Result<Option<u64>, String> {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => v
            .parse::<u64>()
            .map(Some)
            .map_err(|e| format!("{name}={v:?}: {e}")),
        _ => Ok(None),
    }
}

/// SIGINT or SIGTERM.
async fn signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
    tracing::info!("shutdown signal received");
}
