//! The catalog's gRPC service, called by a tonic client (HTTP/2 without
//! TLS) on the port where the real app process serves its HTTP/1 routes.

#![allow(clippy::unwrap_used)] // a failed setup step should fail the test loudly

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use proto::catalog_client::CatalogClient;
use proto::{GetProductRequest, ListTopProductsRequest, Product, UpdateProductRequest};
use serde_json::{Value, json};
use tonic::transport::{Channel, Endpoint};
use tower_cache_tests::{PATIENCE, RedisServer};

#[allow(missing_docs, clippy::pedantic)]
mod proto {
    tonic::include_proto!("catalog");
}

const GET_PRODUCT: &str = "/catalog.Catalog/GetProduct";
const LIST_TOP_PRODUCTS: &str = "/catalog.Catalog/ListTopProducts";

/// A running `axum-example` process and a client of each protocol.
struct App {
    child: Child,
    http: reqwest::Client,
    base: String,
    grpc: CatalogClient<Channel>,
}

impl App {
    async fn start(env: &[(&str, &str)]) -> App {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(env!("CARGO_BIN_EXE_axum-example"))
            .env("BIND", format!("127.0.0.1:{port}"))
            .env("RUST_LOG", "warn")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let base = format!("http://127.0.0.1:{port}");
        let endpoint = Endpoint::from_shared(base.clone()).unwrap();
        // Up once it takes a gRPC connection.
        let deadline = Instant::now() + PATIENCE;
        let channel = loop {
            match endpoint.connect().await {
                Ok(channel) => break channel,
                Err(e) => assert!(Instant::now() < deadline, "the app did not come up: {e}"),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        App {
            child,
            http: reqwest::Client::new(),
            base,
            grpc: CatalogClient::new(channel),
        }
    }

    /// `GetProduct`: the product and the reply's `x-cache`.
    async fn get_product(&self, id: u64) -> (Product, String) {
        let reply = self
            .grpc
            .clone()
            .get_product(GetProductRequest { id })
            .await
            .unwrap();
        (reply.get_ref().clone(), x_cache(reply.metadata()))
    }

    /// `UpdateProduct`.
    async fn update_product(&self, id: u64, name: &str, price_cents: i64) -> Product {
        let request = UpdateProductRequest {
            id,
            name: name.to_owned(),
            price_cents,
        };
        let reply = self.grpc.clone().update_product(request).await.unwrap();
        reply.into_inner()
    }

    /// `ListTopProducts`: the ids in the report and the reply's `x-cache`.
    async fn top(&self) -> (Vec<u64>, String) {
        let reply = self
            .grpc
            .clone()
            .list_top_products(ListTopProductsRequest {})
            .await
            .unwrap();
        let ids = reply.get_ref().products.iter().map(|p| p.id).collect();
        (ids, x_cache(reply.metadata()))
    }

    /// `GET path` over HTTP/1: `X-Cache` and the JSON body.
    async fn http_get(&self, path: &str) -> (String, Value) {
        let res = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        assert_eq!(res.version(), reqwest::Version::HTTP_11);
        let x = res
            .headers()
            .get("x-cache")
            .map(|v| v.to_str().unwrap().to_owned());
        (x.unwrap_or_default(), res.json().await.unwrap())
    }

    /// `origin_queries_total` for `route`, from `/metrics`.
    async fn origin_queries(&self, route: &str) -> u64 {
        let series = format!("origin_queries_total{{route=\"{route}\"}} ");
        let url = format!("{}/metrics", self.base);
        let text = self
            .http
            .get(url)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(&series))
            .map_or(0, |n| n.trim().parse().unwrap())
    }
}

impl Drop for App {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn x_cache(metadata: &tonic::metadata::MetadataMap) -> String {
    let value = metadata.get("x-cache").map(|v| v.to_str().unwrap());
    value.unwrap_or_default().to_owned()
}

fn product(id: u64, name: &str, price_cents: i64) -> Product {
    Product {
        id,
        name: name.to_owned(),
        price_cents,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_product_twice_makes_one_query_and_answers_from_the_cache() {
    let app = App::start(&[]).await;
    let first = app.get_product(42).await;
    let second = app.get_product(42).await;
    assert_eq!(first, (product(42, "Product 42", 4200), "MISS".to_owned()));
    assert_eq!(second, (first.0, "HIT".to_owned()), "the cached reply");
    assert_eq!(app.origin_queries(GET_PRODUCT).await, 1);
    // Another message is another entry; an unknown product is NOT_FOUND.
    assert_eq!(app.get_product(43).await.0.name, "Product 43");
    let missing = GetProductRequest { id: 10_001 };
    let status = app.grpc.clone().get_product(missing).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound);
    assert_eq!(app.origin_queries(GET_PRODUCT).await, 3);
}

/// Both protocols' entries of product 7 are cached; `UpdateProduct` must
/// drop them all.
async fn assert_update_product_drops_grpc_and_http_entries(app: &App) {
    for expected in ["MISS", "HIT"] {
        assert_eq!(app.get_product(7).await.1, expected, "gRPC");
        assert_eq!(app.http_get("/products/7").await.0, expected, "HTTP");
        assert_eq!(app.http_get("/products/7/price").await.0, expected, "price");
    }
    let updated = app.update_product(7, "Renamed", 123).await;
    assert_eq!(updated, product(7, "Renamed", 123));

    assert_eq!(app.get_product(7).await.0, updated, "gRPC after the update");
    let (_, body) = app.http_get("/products/7").await;
    assert_eq!(
        body,
        json!({"id": 7, "name": "Renamed", "price_cents": 123})
    );
    let (_, body) = app.http_get("/products/7/price").await;
    assert_eq!(body, json!({"id": 7, "price_cents": 123}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_product_drops_the_grpc_and_the_http_entries() {
    let app = App::start(&[]).await;
    assert_update_product_drops_grpc_and_http_entries(&app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_product_drops_the_grpc_and_the_http_entries_with_redis() {
    let redis = RedisServer::start();
    let app = App::start(&[("REDIS_URL", &redis.url())]).await;
    assert_update_product_drops_grpc_and_http_entries(&app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_put_drops_the_grpc_entry() {
    let app = App::start(&[]).await;
    assert_eq!(app.get_product(8).await.1, "MISS");
    assert_eq!(app.get_product(8).await.1, "HIT");
    let put = app
        .http
        .put(format!("{}/products/8", app.base))
        .json(&json!({"name": "Renamed over HTTP", "price_cents": 5}))
        .send()
        .await
        .unwrap();
    assert!(put.status().is_success(), "{}", put.status());
    let (after, x) = app.get_product(8).await;
    assert_eq!(
        (after, x.as_str()),
        (product(8, "Renamed over HTTP", 5), "MISS")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_product_rejects_bad_input_and_unknown_products() {
    let app = App::start(&[]).await;
    let mut client = app.grpc.clone();
    for (id, name, price_cents, code) in [
        (1, " ", 100, tonic::Code::InvalidArgument),
        (1, "Name", -1, tonic::Code::InvalidArgument),
        (10_001, "Name", 100, tonic::Code::NotFound),
    ] {
        let request = UpdateProductRequest {
            id,
            name: name.to_owned(),
            price_cents,
        };
        let status = client.update_product(request).await.unwrap_err();
        assert_eq!(status.code(), code, "{id} {name:?} {price_cents}");
    }
    assert_eq!(app.get_product(1).await.0, product(1, "Product 1", 100));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_top_products_is_served_from_the_cache() {
    let app = App::start(&[]).await;
    let (first, x) = app.top().await;
    assert_eq!((first.len(), x.as_str()), (10, "MISS"));
    assert_eq!(app.top().await, (first, "HIT".to_owned()));
    assert_eq!(app.origin_queries(LIST_TOP_PRODUCTS).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_top_products_is_reloaded_by_a_hit_before_it_expires() {
    let app = App::start(&[]).await;
    // TTL 5 s, reloaded in the background by the first read past 4 s. A
    // miss on a busy machine (a read that reached the app after the
    // expiry) starts the wait again; what must come is a reload that a
    // hit started.
    let deadline = Instant::now() + PATIENCE;
    let mut misses = 0;
    loop {
        let (_, x) = app.top().await;
        match x.as_str() {
            "MISS" => misses += 1,
            "HIT" if app.origin_queries(LIST_TOP_PRODUCTS).await > misses => break,
            "HIT" => {}
            other => panic!("x-cache {other:?}"),
        }
        assert!(
            Instant::now() < deadline,
            "no reload ahead of expiry in {PATIENCE:?}; {misses} misses"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
