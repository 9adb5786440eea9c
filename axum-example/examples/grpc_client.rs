//! A gRPC client of the example app's `catalog.Catalog` service, with the
//! client code generated from `proto/catalog.proto`. With the app running
//! (`cargo run -p axum-example`):
//!
//! ```sh
//! cargo run -p axum-example --example grpc_client -- get 42
//! cargo run -p axum-example --example grpc_client -- update 42 Renamed 999
//! cargo run -p axum-example --example grpc_client -- top
//! ```
//!
//! `CATALOG_URL` names the app (default `http://127.0.0.1:3000`).

use std::error::Error;

use proto::catalog_client::CatalogClient;
use proto::{GetProductRequest, ListTopProductsRequest, UpdateProductRequest};

#[allow(missing_docs, clippy::pedantic)]
mod proto {
    tonic::include_proto!("catalog");
}

const USAGE: &str = "usage: grpc_client get ID | update ID NAME PRICE_CENTS | top";

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let url = std::env::var("CATALOG_URL").unwrap_or_else(|_| "http://127.0.0.1:3000".into());
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut client = CatalogClient::connect(url).await?;
    let reply = match args.as_slice() {
        ["get", id] => {
            let request = GetProductRequest { id: id.parse()? };
            client.get_product(request).await.map(show)
        }
        ["update", id, name, price_cents] => {
            let request = UpdateProductRequest {
                id: id.parse()?,
                name: (*name).to_owned(),
                price_cents: price_cents.parse()?,
            };
            client.update_product(request).await.map(show)
        }
        ["top"] => client
            .list_top_products(ListTopProductsRequest {})
            .await
            .map(show),
        _ => return Err(USAGE.into()),
    };
    reply.map_err(|status| format!("{:?}: {}", status.code(), status.message()).into())
}

/// Prints how the cache answered (`x-cache`) and the message.
fn show<M: std::fmt::Debug>(reply: tonic::Response<M>) {
    let x_cache = reply
        .metadata()
        .get("x-cache")
        .and_then(|v| v.to_str().ok());
    println!("x-cache: {}", x_cache.unwrap_or("-"));
    println!("{:#?}", reply.get_ref());
}
