//! The existence filter in front of a route's misses.

use super::*;
use crate::filter::ExistenceFilter;

fn item_of(parts: &http::request::Parts) -> Option<String> {
    parts.uri.path().strip_prefix("/items/").map(str::to_owned)
}

async fn filter_of(ids: std::ops::RangeInclusive<u32>) -> ExistenceFilter {
    let filter = ExistenceFilter::builder().expected_items(1_000).build();
    filter
        .load(ids.map(|id| id.to_string()))
        .await
        .expect("in process");
    filter
}

#[tokio::test(start_paused = true)]
async fn a_key_the_filter_never_saw_is_answered_404_without_the_origin() {
    let origin = Origin::default();
    let layer = layer(Policy::default()).existence_filter(filter_of(1..=100).await, item_of);
    let profile = layer.profile().clone();
    let svc = layer.layer(origin.service());
    let mut answered = 0;
    for id in 1_000..1_200 {
        let r = get(&svc, &format!("http://h/items/{id}")).await;
        if r.status == StatusCode::NOT_FOUND {
            assert!(r.body.is_empty(), "an empty body");
            assert_eq!(r.x_cache(), "MISS");
            assert!(
                r.headers["cache-status"]
                    .to_str()
                    .unwrap()
                    .contains("detail=absent"),
                "{:?}",
                r.headers
            );
            answered += 1;
        }
    }
    // The false positives (about 1 %) went to the origin, nothing else.
    assert_eq!(origin.calls(), 200 - answered);
    assert!(answered > 180, "{answered} of 200 answered by the filter");
    assert_eq!(profile.stats().filtered, answered as u64);
    // Nothing was stored for them: the filter answers again.
    let again = get(&svc, "http://h/items/1000").await;
    assert_eq!(
        origin.calls(),
        200 - answered + usize::from(again.status != StatusCode::NOT_FOUND)
    );
}

#[tokio::test(start_paused = true)]
async fn a_key_the_filter_holds_is_loaded_and_then_hit() {
    let origin = Origin::default();
    let svc = layer(Policy::default())
        .existence_filter(filter_of(1..=100).await, item_of)
        .layer(origin.service());
    let first = get(&svc, "http://h/items/7").await;
    assert_eq!((first.status, first.x_cache()), (StatusCode::OK, "MISS"));
    let second = get(&svc, "http://h/items/7").await;
    assert_eq!(second.x_cache(), "HIT");
    assert_eq!(origin.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_successful_put_inserts_its_key_and_the_absent_answer_is_configurable() {
    let origin = Origin::default();
    let filter = filter_of(1..=10).await;
    let svc = layer(Policy::default())
        .existence_filter(filter.clone(), item_of)
        .absent_response(
            StatusCode::GONE,
            Some(HeaderValue::from_static("application/json")),
            r#"{"error":"no such item"}"#,
        )
        .layer(origin.service());
    // 5000 is no false positive of this filter (checked, so the test says
    // what it means).
    assert!(!filter.contains_local("5000"));
    let before = get(&svc, "http://h/items/5000").await;
    assert_eq!(before.status, StatusCode::GONE);
    assert_eq!(before.headers["content-type"], "application/json");
    assert_eq!(before.text(), r#"{"error":"no such item"}"#);
    assert_eq!(origin.calls(), 0);
    let put = send(&svc, Method::PUT, "http://h/items/5000", &[]).await;
    assert_eq!(put.status, StatusCode::OK);
    let after = get(&svc, "http://h/items/5000").await;
    assert_eq!(
        (after.status, after.text()),
        (StatusCode::OK, "item 5000 #2".to_owned())
    );
}
