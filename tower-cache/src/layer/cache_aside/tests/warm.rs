//! Warming a route: reads sent through it before traffic.

use super::*;

fn reads(ids: &[u32]) -> Vec<Request<Full<Bytes>>> {
    ids.iter()
        .map(|id| {
            Request::get(format!("http://h/items/{id}"))
                .body(Full::new(Bytes::new()))
                .unwrap()
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn a_warmed_read_is_a_hit_and_what_is_cached_is_not_loaded_again() {
    let origin = Origin::default();
    let layer = layer(Policy::default());
    let svc = layer.clone().layer(origin.service());
    let report = layer.warm(svc.clone(), reads(&[1, 2, 3])).await;
    assert_eq!((report.loaded, report.cached, report.failed), (3, 0, 0));
    assert_eq!(origin.calls(), 3);
    assert_eq!(get(&svc, "http://h/items/2").await.x_cache(), "HIT");
    let again = layer.warm(svc.clone(), reads(&[1, 2, 3, 4])).await;
    assert_eq!((again.loaded, again.cached, again.failed), (1, 3, 0));
    assert_eq!(origin.calls(), 4);
}

#[tokio::test(start_paused = true)]
async fn a_read_that_fails_is_counted_and_warming_goes_on() {
    let origin = Origin::default();
    origin.failing.store(true, Ordering::SeqCst);
    let layer = layer(Policy::default());
    let svc = layer.clone().layer(origin.service());
    let mut requests = reads(&[1]);
    requests.push(
        Request::get("http://h/flaky")
            .body(Full::new(Bytes::new()))
            .unwrap(),
    );
    requests.extend(reads(&[2]));
    let report = layer.warm(svc.clone(), requests).await;
    assert_eq!((report.loaded, report.cached, report.failed), (2, 0, 1));
    assert_eq!(get(&svc, "http://h/items/1").await.x_cache(), "HIT");
}
