use proptest::prelude::*;

use super::*;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime")
}

proptest! {
    #[test]
    fn an_inserted_key_is_always_reported_present(
        loaded in proptest::collection::vec(".{0,24}", 0..200),
        inserted in proptest::collection::vec(".{0,24}", 0..50),
        expected in 1usize..500,
        rate in 0.0001f64..0.5,
    ) {
        let filter = ExistenceFilter::builder()
            .expected_items(expected)
            .false_positive_rate(rate)
            .build();
        runtime().block_on(async {
            filter.load(&loaded).await.expect("in process");
            for key in &inserted {
                filter.insert(key).await.expect("in process");
            }
            for key in loaded.iter().chain(&inserted) {
                prop_assert!(filter.may_contain(key).await, "{key:?} inserted");
                prop_assert!(filter.contains_local(key));
            }
            Ok(())
        })?;
    }
}

#[tokio::test]
async fn absent_keys_are_reported_present_at_about_the_configured_rate() {
    let filter = ExistenceFilter::builder()
        .expected_items(10_000)
        .false_positive_rate(0.01)
        .build();
    assert_eq!(
        filter
            .load((0..10_000u64).map(|id| id.to_string()))
            .await
            .expect("in process"),
        10_000
    );
    let mut present = 0;
    for id in 1_000_000..1_100_000u64 {
        if filter.may_contain(&id.to_string()).await {
            present += 1;
        }
    }
    // 1 % of 100,000 is 1,000; twice that would be a wrongly sized filter.
    assert!(present < 2_000, "{present} false positives in 100,000");
    assert_eq!(filter.stats().inserted, 10_000);
}

#[tokio::test]
async fn a_filter_from_a_stream_holds_every_key() {
    let filter = ExistenceFilter::builder().expected_items(1_000).build();
    let keys = futures_util::stream::iter((0..1_000u32).map(|n| format!("k{n}")));
    assert_eq!(filter.load_stream(keys).await.expect("in process"), 1_000);
    for n in 0..1_000u32 {
        assert!(filter.may_contain(&format!("k{n}")).await);
    }
}

#[test]
fn out_of_range_rates_are_kept_within_bounds() {
    // Neither panics nor allocates without bound.
    let tiny = ExistenceFilter::builder()
        .expected_items(10)
        .false_positive_rate(0.0)
        .build();
    assert!(tiny.num_bits() < 10_000);
    let loose = ExistenceFilter::builder()
        .expected_items(10)
        .false_positive_rate(f64::NAN)
        .build();
    assert!(loose.num_bits() > 0);
}
