//! README.md's quick start is `examples/quick_start.rs` word for word, its
//! dependency lines name the workspace's versions, and the program does
//! what the README says: served over real TCP, a `GET` misses, then hits,
//! and a `PUT` deletes the entry.

#[allow(dead_code)] // its `main` serves on port 3000; the test serves its `app` on a free port
#[path = "../examples/quick_start.rs"]
mod quick_start;

use tower_cache::Cache;
use tower_cache::store::{MemoryStore, SharedStore};

const README: &str = include_str!("../../README.md");
const WORKSPACE: &str = include_str!("../../Cargo.toml");

/// The body of the first fenced block of `lang` in README's quick start.
fn quick_start_block(lang: &str) -> String {
    let section = README
        .split("\n## ")
        .find(|s| s.starts_with("Quick start"))
        .expect("README.md has a `## Quick start` section");
    let fence = format!("```{lang}\n");
    let start = section
        .find(&fence)
        .unwrap_or_else(|| panic!("the quick start has a {lang} block"));
    let body = &section[start + fence.len()..];
    let end = body.find("```\n").expect("the block is closed");
    body[..end].to_owned()
}

#[test]
fn the_readme_quick_start_is_the_example_program() {
    let example = include_str!("../examples/quick_start.rs");
    assert!(
        quick_start_block("rust") == example,
        "README.md's quick start and tower-cache/examples/quick_start.rs differ: \
         copy the example (after `cargo fmt`) into the README's rust block"
    );
}

#[test]
fn the_readme_dependencies_are_the_workspace_versions() {
    let lines = quick_start_block("toml");
    assert!(lines.starts_with("[dependencies]\n"), "{lines}");
    for line in lines.lines().skip(1) {
        let (name, spec) = line.split_once(" = ").expect("`name = spec` lines");
        let version = spec
            .split('"')
            .nth(1)
            .unwrap_or_else(|| panic!("{name} names a version"));
        let expected = match name {
            "tower-cache" => WORKSPACE
                .lines()
                .find_map(|l| l.strip_prefix("version = \""))
                .map(|v| {
                    v.trim_end_matches('"')
                        .rsplit_once('.')
                        .map_or(v, |(mm, _)| mm)
                })
                .expect("the workspace version"),
            _ => WORKSPACE
                .lines()
                .find(|l| l.starts_with(&format!("{name} = ")))
                .and_then(|l| l.split('"').nth(1))
                .unwrap_or_else(|| panic!("{name} is a workspace dependency")),
        };
        assert_eq!(version, expected, "README's {name} version");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_quick_start_caches_reads_and_a_put_invalidates() {
    let products = quick_start::Products::default();
    products.write().await.insert(1, "Teapot".to_owned());
    let cache = Cache::new(SharedStore::new(MemoryStore::default()));
    let app = quick_start::app(cache, products.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/products/1", listener.local_addr().unwrap());
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let http = reqwest::Client::new();
    let get = || async {
        let res = http.get(&url).send().await.unwrap();
        let x_cache = res.headers()["x-cache"].to_str().unwrap().to_owned();
        (x_cache, res.text().await.unwrap())
    };
    assert_eq!(get().await, ("MISS".to_owned(), "Teapot".to_owned()));
    // Changed behind the cache's back: a hit still answers the old name.
    products.write().await.insert(1, "Kettle".to_owned());
    assert_eq!(get().await, ("HIT".to_owned(), "Teapot".to_owned()));

    let put = http.put(&url).body("Samovar").send().await.unwrap();
    assert_eq!(put.status(), 204);
    assert_eq!(get().await, ("MISS".to_owned(), "Samovar".to_owned()));
    assert_eq!(get().await, ("HIT".to_owned(), "Samovar".to_owned()));
    server.abort();
}
