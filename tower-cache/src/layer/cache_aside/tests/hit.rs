//! The hit path of entries held in process answers exactly what the full
//! read path answers, and only for fresh entries of the request's variant.

use super::*;
use crate::Entry;
use crate::store::StoreError;

/// The same store without [`Store::resident`]: every read takes the full
/// path.
#[derive(Clone, Default)]
struct Remote(MemoryStore);

impl Store for Remote {
    async fn get(&self, key: &str) -> Result<Option<Entry>, StoreError> {
        self.0.get(key).await
    }
    async fn put(&self, key: &str, entry: Entry) -> Result<(), StoreError> {
        self.0.put(key, entry).await
    }
    async fn remove(&self, key: &str) -> Result<(), StoreError> {
        self.0.remove(key).await
    }
    async fn remove_tag(&self, tag: &str) -> Result<(), StoreError> {
        self.0.remove_tag(tag).await
    }
}

fn sorted(headers: &HeaderMap) -> Vec<(String, Vec<u8>)> {
    let mut all: Vec<_> = headers
        .iter()
        .map(|(n, v)| (n.as_str().to_owned(), v.as_bytes().to_vec()))
        .collect();
    all.sort();
    all
}

/// Sends each request to a layer over `MemoryStore` (hits held in
/// process) and to the same layer over a store that holds nothing in
/// process (hits by the full path), with the same clock: the answers are
/// the same, headers and body.
#[tokio::test(start_paused = true)]
async fn a_hit_held_in_process_answers_what_the_full_path_answers() {
    let policy = Policy::ttl(Duration::from_secs(60)).jitter(0.0);
    let (near, far) = (Origin::default(), Origin::default());
    let fast = CacheAsideLayer::new(Cache::new(MemoryStore::default()), "t", policy.clone())
        .layer(near.service());
    let full =
        CacheAsideLayer::new(Cache::new(Remote::default()), "t", policy).layer(far.service());
    let uri = "http://h/products/7";
    assert_eq!(get(&fast, uri).await.x_cache(), "MISS");
    assert_eq!(get(&full, uri).await.x_cache(), "MISS");
    let etag = get(&fast, uri).await.headers["etag"].clone();
    let etag = etag.to_str().unwrap().to_owned();
    let requests: [(Method, &[(&str, &str)]); 4] = [
        (Method::GET, &[]),
        (Method::HEAD, &[]),
        (Method::GET, &[("if-none-match", etag.as_str())]),
        (Method::GET, &[("if-none-match", "\"other\"")]),
    ];
    let mut first = None;
    for _ in 0..3 {
        for (method, headers) in &requests {
            let a = send(&fast, method.clone(), uri, headers).await;
            let b = send(&full, method.clone(), uri, headers).await;
            assert_eq!(a.x_cache(), "HIT", "{method} {headers:?}");
            assert_eq!(a.status, b.status, "{method} {headers:?}");
            assert_eq!(
                sorted(&a.headers),
                sorted(&b.headers),
                "{method} {headers:?}"
            );
            assert_eq!(a.body, b.body);
            first.get_or_insert(a.headers);
        }
        tokio::time::advance(Duration::from_secs(1)).await;
    }
    let first = first.expect("answered");
    let reply = get(&fast, uri).await;
    // The headers of one second are not kept into the next.
    for name in ["age", "cache-status"] {
        assert_ne!(reply.headers[name], first[name], "{name}");
    }
    assert_eq!(
        reply.headers["content-length"],
        reply.body.len().to_string().as_str()
    );
    assert_eq!((near.calls(), far.calls()), (1, 1));
}

/// An entry past its freshness is not answered in process: the full path
/// serves it stale and reloads it in the background.
#[tokio::test(start_paused = true)]
async fn a_stale_entry_held_in_process_takes_the_full_path() {
    let origin = Origin::default();
    let policy = Policy::ttl(Duration::from_secs(10))
        .stale_while_revalidate(Duration::from_secs(30))
        .jitter(0.0);
    let svc = layer(policy).layer(origin.service());
    let uri = "http://h/products/8";
    assert_eq!(get(&svc, uri).await.x_cache(), "MISS");
    tokio::time::advance(Duration::from_secs(11)).await;
    assert_eq!(get(&svc, uri).await.x_cache(), "STALE");
    for _ in 0..100 {
        if origin.calls() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(origin.calls(), 2, "the stale answer started a reload");
    let reply = get(&svc, uri).await;
    assert_eq!(reply.x_cache(), "HIT");
    assert_eq!(reply.text(), "/products/8 #2");
}
