//! Delivery: retries with backoff, dead letters, and what they log and count.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tower::{ServiceExt, service_fn};
use tower_layer::Layer;

use super::capture::Capture;
use super::layer;
use crate::Write;
use crate::layer::write_behind::DeadLetter;

#[tokio::test(start_paused = true)]
async fn a_writer_failing_twice_gets_every_write_on_the_third_try() {
    let attempts = Arc::new(AtomicUsize::new(0));
    let got = Arc::new(Mutex::new(Vec::new()));
    let writer = {
        let (attempts, got) = (attempts.clone(), got.clone());
        service_fn(move |batch: Vec<Write<u64, i64>>| {
            let n = attempts.fetch_add(1, Ordering::SeqCst);
            let got = got.clone();
            async move {
                if n < 2 {
                    return Err(std::io::Error::other("database is locked"));
                }
                got.lock().unwrap().extend(batch);
                Ok(())
            }
        })
    };
    let svc = layer().max_batch(1_000).layer(writer);
    for key in 0..50u64 {
        svc.clone()
            .oneshot(Write::new(key, key.cast_signed()))
            .await
            .unwrap();
    }
    svc.handle().flush().await.unwrap();
    assert_eq!(attempts.load(Ordering::SeqCst), 3);
    let mut keys: Vec<u64> = got.lock().unwrap().iter().map(|w| w.key).collect();
    keys.sort_unstable();
    assert_eq!(keys, (0..50).collect::<Vec<_>>());
    let stats = svc.handle().stats();
    assert_eq!((stats.retries, stats.dead_letters), (2, 0));
}

#[tokio::test(start_paused = true)]
async fn what_keeps_failing_goes_to_the_dead_letter_handler() {
    let dead = Arc::new(Mutex::new(Vec::new()));
    let writer = service_fn(|_: Vec<Write<u64, i64>>| async {
        Err::<(), _>(std::io::Error::other("disk full"))
    });
    let svc = layer()
        .max_retries(2)
        .merge(|a, b| a + b)
        .dead_letter({
            let dead = dead.clone();
            move |letter: DeadLetter<u64, i64>| {
                assert_eq!(letter.attempts, 3);
                assert_eq!(letter.error.to_string(), "disk full");
                dead.lock().unwrap().extend(letter.writes);
            }
        })
        .layer(writer);
    for key in 0..10u64 {
        svc.clone().oneshot(Write::new(key, 1)).await.unwrap();
        svc.clone().oneshot(Write::new(key, 1)).await.unwrap();
    }
    let handle = svc.handle();
    handle.flush().await.unwrap();
    let dead = dead.lock().unwrap().clone();
    assert_eq!(dead.len(), 10);
    assert!(dead.iter().all(|w| w.value == 2));
    assert_eq!(handle.stats().dead_letters, 10);
    assert_eq!(handle.pending(&3), None);
}

/// Delays between the writer's calls to a batch that always fails, with
/// the backoff starting at `first`.
async fn retry_delays(first: Duration, retries: u32) -> Vec<Duration> {
    let calls = Arc::new(Mutex::new(Vec::new()));
    let writer = {
        let calls = calls.clone();
        service_fn(move |_: Vec<Write<u64, i64>>| {
            calls.lock().unwrap().push(tokio::time::Instant::now());
            async { Err::<(), _>(std::io::Error::other("down")) }
        })
    };
    let svc = layer()
        .max_retries(retries)
        .backoff(first, Duration::from_secs(3_600))
        .dead_letter(|_| {})
        .layer(writer);
    svc.clone().oneshot(Write::new(1, 1)).await.unwrap();
    svc.handle().flush().await.unwrap();
    let calls = calls.lock().unwrap().clone();
    assert_eq!(calls.len(), retries as usize + 1);
    calls.windows(2).map(|w| w[1] - w[0]).collect()
}

#[tokio::test(start_paused = true)]
async fn retries_back_off_exponentially_with_jitter() {
    let first = Duration::from_secs(1);
    let delays = retry_delays(first, 6).await;
    for (attempt, delay) in delays.iter().enumerate() {
        // Doubling from `first`, each within ±50 % jitter.
        let base = first * (1 << attempt);
        assert!(
            *delay >= base / 2 && *delay <= base * 3 / 2 + Duration::from_millis(2),
            "retry {} waited {delay:?}, base {base:?}",
            attempt + 1
        );
    }
    assert!(delays[5] > delays[0] * 4, "{delays:?}");
    // Jittered: not the plain doubling, and not the same twice in a row.
    let other = retry_delays(first, 6).await;
    let exact = |d: &[Duration]| {
        d.iter()
            .enumerate()
            .all(|(i, d)| d.abs_diff(first * (1 << i)) <= Duration::from_millis(2))
    };
    assert!(!exact(&delays) && !exact(&other), "{delays:?}");
    assert_ne!(delays, other);
}

#[tokio::test(start_paused = true)]
async fn the_default_dead_letter_handler_logs_the_keys_at_error_level_and_counts() {
    let capture = Capture::default();
    let _guard = capture.install();
    let writer = service_fn(|_: Vec<Write<u64, i64>>| async {
        Err::<(), _>(std::io::Error::other("disk full"))
    });
    let svc = layer().max_retries(1).layer(writer);
    for key in [3u64, 4] {
        svc.clone().oneshot(Write::new(key, 1)).await.unwrap();
    }
    let handle = svc.handle();
    handle.flush().await.unwrap();
    let errors = capture.at(tracing::Level::ERROR);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].contains("wb:3") && errors[0].contains("wb:4") && errors[0].contains("disk full"),
        "{}",
        errors[0]
    );
    assert_eq!(handle.stats().dead_letters, 2);
}

#[tokio::test(start_paused = true)]
#[expect(
    clippy::float_cmp,
    reason = "counters are whole numbers, held exactly as f64"
)]
async fn metrics_are_emitted_with_the_layer_name() {
    let metrics = crate::test_support::Metrics::default();
    let _guard = metrics::set_default_local_recorder(&metrics);
    let calls = Arc::new(AtomicUsize::new(0));
    // Fails its first call, and every batch holding key 99.
    let writer = {
        let calls = calls.clone();
        service_fn(move |batch: Vec<Write<u64, i64>>| {
            let first = calls.fetch_add(1, Ordering::SeqCst) == 0;
            let poisoned = batch.iter().any(|w| w.key == 99);
            async move {
                if first || poisoned {
                    return Err(std::io::Error::other("refused"));
                }
                Ok(())
            }
        })
    };
    let svc = layer().max_retries(1).dead_letter(|_| {}).layer(writer);
    let handle = svc.handle();
    for value in 1..=3 {
        svc.clone().oneshot(Write::new(1, value)).await.unwrap();
    }
    assert!(
        metrics
            .values("tower_cache_write_behind_queue_depth", &[("cache", "wb")])
            .contains(&1.0),
        "a queued write is counted"
    );
    handle.flush().await.unwrap();
    svc.clone().oneshot(Write::new(99, 1)).await.unwrap();
    handle.flush().await.unwrap();

    let sum = |name: &str| metrics.sum(name, &[("cache", "wb")]);
    assert_eq!(
        metrics
            .values("tower_cache_write_behind_queue_depth", &[("cache", "wb")])
            .last(),
        Some(&0.0)
    );
    assert_eq!(sum("tower_cache_write_behind_batches_total"), 1.0);
    assert_eq!(sum("tower_cache_write_behind_coalesced_total"), 2.0);
    assert_eq!(sum("tower_cache_write_behind_retries_total"), 2.0);
    assert_eq!(sum("tower_cache_write_behind_dead_letters_total"), 1.0);
    assert_eq!(
        metrics
            .values("tower_cache_write_behind_flush_seconds", &[("cache", "wb")])
            .len(),
        1
    );
}
