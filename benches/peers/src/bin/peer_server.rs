//! The three peers over TCP for the load comparison, each under its own
//! prefix: `/tower-http-cache/products/{id}`, `/hitbox/products/{id}` and
//! `/http-cache-tower/products/{id}`. Every request after a route's first
//! is a cache hit; `/origin-calls` tells how many times the handler ran
//! over all three (tower-http-cache marks no hit in its headers).
//! `BIND` (default `127.0.0.1:3300`).

use axum::Router;
use axum::routing::get;
use tower_cache_peers::{Target, origin_calls};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let bind = std::env::var("BIND").unwrap_or_else(|_| "127.0.0.1:3300".to_owned());
    let app = Target::ALL
        .into_iter()
        .fold(Router::new(), |app, t| {
            app.merge(t.router(&format!("/{}/products/{{id}}", t.name())))
        })
        .route(
            "/origin-calls",
            get(|| async { origin_calls().to_string() }),
        );
    let listener = tokio::net::TcpListener::bind(&bind).await?;
    axum::serve(listener, app).await?;
    Ok(())
}
