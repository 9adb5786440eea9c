//! The catalog over gRPC (`proto/catalog.proto`), on the port of the HTTP
//! routes and over the same cache.
//!
//! Each method has its own route, so each gets its own layer:
//! `GetProduct` is cache-aside, its entries tagged `product:{id}` like the
//! HTTP entries of the product, so a write over either protocol drops
//! both; `UpdateProduct` writes and drops them; `ListTopProducts` is
//! refresh-ahead, like `GET /reports/top`.

use std::time::Duration;

use axum::Router;
use tonic::{Request, Response, Status};
use tower::util::MapRequest;
use tower_cache::{Cache, CacheAsideLayer, Policy, RefreshAheadLayer};
use tower_layer::Layer;

use crate::app::product_tag;
use crate::db::{self, Db, DbError};
use proto::catalog_server::{Catalog, CatalogServer};
use proto::{
    GetProductRequest, ListTopProductsRequest, Product, TopProduct, TopProducts,
    UpdateProductRequest,
};

/// The messages, server and client generated from `proto/catalog.proto`.
#[allow(missing_docs, clippy::pedantic)]
pub mod proto {
    tonic::include_proto!("catalog");
}

// The path of each method, as gRPC sends it; also the `route` label of
// its database queries.
const GET_PRODUCT: &str = "/catalog.Catalog/GetProduct";
const UPDATE_PRODUCT: &str = "/catalog.Catalog/UpdateProduct";
const LIST_TOP_PRODUCTS: &str = "/catalog.Catalog/ListTopProducts";

/// The gRPC routes over `db` and `cache`, to merge into the HTTP router.
pub fn routes(db: Db, cache: Cache) -> Router {
    let catalog = CatalogServer::new(CatalogService {
        db,
        cache: cache.clone(),
    });
    let products = CacheAsideLayer::new(
        cache.clone(),
        GET_PRODUCT,
        Policy::ttl(Duration::from_secs(60)).stale_while_revalidate(Duration::from_secs(30)),
    )
    .key_host(false)
    .tonic_method(GET_PRODUCT);
    let top = RefreshAheadLayer::new(
        CacheAsideLayer::new(
            cache,
            LIST_TOP_PRODUCTS,
            Policy::ttl(Duration::from_secs(5)).jitter(0.0),
        )
        .key_host(false)
        .tonic_method(LIST_TOP_PRODUCTS),
        0.8,
    );
    Router::new()
        .route_service(GET_PRODUCT, grpc(products.layer(catalog.clone())))
        .route_service(LIST_TOP_PRODUCTS, grpc(top.layer(catalog.clone())))
        // `UpdateProduct`, and `UNIMPLEMENTED` for a method the service
        // does not have.
        .route_service("/catalog.Catalog/{*method}", grpc(catalog))
}

/// A tonic service as an axum route: axum's request body becomes tonic's.
fn grpc<S>(service: S) -> MapRequest<S, fn(AxumRequest) -> TonicRequest> {
    MapRequest::new(service, |request: AxumRequest| {
        request.map(tonic::body::Body::new)
    })
}

type AxumRequest = http::Request<axum::body::Body>;
type TonicRequest = http::Request<tonic::body::Body>;

/// The `catalog.Catalog` service.
struct CatalogService {
    db: Db,
    cache: Cache,
}

#[tonic::async_trait]
impl Catalog for CatalogService {
    async fn get_product(
        &self,
        request: Request<GetProductRequest>,
    ) -> Result<Response<Product>, Status> {
        let id = request.into_inner().id;
        let product = self
            .db
            .product(GET_PRODUCT, id)
            .await
            .map_err(database_failure)?
            .ok_or_else(|| no_product(id))?;
        let mut reply = Response::new(Product::from(product));
        // The resource tag, as the HTTP handler sends it: the cache stores
        // it with the entry and takes it out of the reply.
        if let Ok(tag) = product_tag(id).parse() {
            reply.metadata_mut().insert("cache-tag", tag);
        }
        Ok(reply)
    }

    async fn update_product(
        &self,
        request: Request<UpdateProductRequest>,
    ) -> Result<Response<Product>, Status> {
        let UpdateProductRequest {
            id,
            name,
            price_cents,
        } = request.into_inner();
        if price_cents < 0 || name.trim().is_empty() {
            return Err(Status::invalid_argument(
                "name must not be empty and price_cents must not be negative",
            ));
        }
        let updated = self
            .db
            .update_product(UPDATE_PRODUCT, id, name.clone(), price_cents)
            .await
            .map_err(database_failure)?;
        if !updated {
            return Err(no_product(id));
        }
        // Every cached representation of the product, gRPC and HTTP,
        // carries its tag; the price route caches the price under its own
        // key.
        self.cache.remove_tag(&product_tag(id)).await;
        self.cache.remove(&format!("price:{id}")).await;
        Ok(Response::new(Product {
            id,
            name,
            price_cents,
        }))
    }

    async fn list_top_products(
        &self,
        _: Request<ListTopProductsRequest>,
    ) -> Result<Response<TopProducts>, Status> {
        let top = self
            .db
            .top_products(LIST_TOP_PRODUCTS)
            .await
            .map_err(database_failure)?;
        let products = top
            .into_iter()
            .map(|p| TopProduct {
                id: p.id,
                name: p.name,
                views: p.views,
            })
            .collect();
        Ok(Response::new(TopProducts { products }))
    }
}

impl From<db::Product> for Product {
    fn from(p: db::Product) -> Self {
        Product {
            id: p.id,
            name: p.name,
            price_cents: p.price_cents,
        }
    }
}

fn no_product(id: u64) -> Status {
    Status::not_found(format!("no product {id}"))
}

fn database_failure(e: DbError) -> Status {
    tracing::error!(error = %e, "database failure");
    Status::internal("database failure")
}
