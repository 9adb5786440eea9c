use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;

use super::*;
use crate::store::MemoryStore;

type Err = std::io::Error;

fn cache() -> Cache<MemoryStore> {
    Cache::new(MemoryStore::new(16 << 20))
}

fn profile(policy: Policy) -> Profile {
    Profile::new("test", policy.jitter(0.0))
}

/// A loader counting its calls, answering `value` after `delay`.
fn loader(
    calls: &Arc<AtomicUsize>,
    value: &'static str,
    delay: Duration,
) -> impl FnOnce() -> futures_util::future::BoxFuture<'static, Result<Loaded<()>, Err>> + Send + 'static
{
    let calls = calls.clone();
    move || {
        Box::pin(async move {
            calls.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(delay).await;
            Ok(Loaded::Store(Fill::new(value)))
        })
    }
}

fn failing(
    calls: &Arc<AtomicUsize>,
) -> impl FnOnce() -> futures_util::future::BoxFuture<'static, Result<Loaded<()>, Err>> + Send + 'static
{
    let calls = calls.clone();
    move || {
        Box::pin(async move {
            calls.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(10)).await;
            Err(Err::other("origin down"))
        })
    }
}

fn value<T>(f: &Fetched<T>) -> &[u8] {
    &f.entry().expect("an entry").value
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_misses_load_once() {
    let cache = cache();
    let profile = profile(Policy::ttl(Duration::from_secs(60)));
    let calls = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..1_000)
        .map(|_| {
            let (cache, profile, calls) = (cache.clone(), profile.clone(), calls.clone());
            tokio::spawn(async move {
                let got = cache
                    .fetch(
                        "k",
                        &profile,
                        loader(&calls, "v", Duration::from_millis(50)),
                    )
                    .await
                    .expect("loaded");
                value(&got).to_vec()
            })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap(), b"v");
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(profile.stats().loads, 1);
}

#[tokio::test(start_paused = true)]
#[expect(
    clippy::float_cmp,
    reason = "counters are whole numbers, held exactly as f64"
)]
async fn callers_that_wait_for_another_callers_load_count_as_coalesced() {
    const CALLERS: u64 = 300;
    let cache = cache();
    let recorder = crate::test_support::Metrics::default();
    let profile =
        ::metrics::with_local_recorder(&recorder, || profile(Policy::ttl(Duration::from_secs(60))));
    // The load ends only once every other caller waits for it.
    let (open, gate) = tokio::sync::watch::channel(false);
    let tasks: Vec<_> = (0..CALLERS)
        .map(|_| {
            let (cache, profile, mut gate) = (cache.clone(), profile.clone(), gate.clone());
            tokio::spawn(async move {
                cache
                    .fetch::<_, (), Err, _>("k", &profile, move || async move {
                        let _ = gate.wait_for(|open| *open).await;
                        Ok(Loaded::Store(Fill::new("v")))
                    })
                    .await
            })
        })
        .collect();
    until(|| profile.stats().joined == CALLERS - 1).await;
    open.send_replace(true);
    for t in tasks {
        let got = t.await.unwrap().unwrap();
        assert!(matches!(got, Fetched::Miss(_)), "{got:?}");
    }
    let stats = profile.stats();
    assert_eq!(
        (stats.loads, stats.misses, stats.coalesced, stats.hits),
        (1, 1, CALLERS - 1, 0),
        "{stats:?}"
    );
    let requests = |result| recorder.sum("tower_cache_requests_total", &[("result", result)]);
    assert_eq!(requests("miss"), 1.0);
    assert_eq!(requests("coalesced"), (CALLERS - 1) as f64);
}

#[tokio::test(start_paused = true)]
async fn failed_load_reaches_every_waiter_and_is_not_cached() {
    let cache = cache();
    let profile = profile(Policy::default());
    let calls = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let (cache, profile, calls) = (cache.clone(), profile.clone(), calls.clone());
            tokio::spawn(async move { cache.fetch("k", &profile, failing(&calls)).await })
        })
        .collect();
    for t in tasks {
        match t.await.unwrap() {
            Err(LoadError::Origin(e)) => assert_eq!(e.to_string(), "origin down"),
            Err(LoadError::Joined(e)) => assert!(e.message().contains("origin down")),
            other => panic!("expected the load's error, got {other:?}"),
        }
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert!(cache.store().get("k").await.unwrap().is_none());
    let got = cache
        .fetch("k", &profile, loader(&calls, "v", Duration::ZERO))
        .await
        .unwrap();
    assert_eq!(value(&got), b"v");
}

#[tokio::test(start_paused = true)]
async fn dropped_leader_does_not_cancel_the_load() {
    let cache = cache();
    let profile = profile(Policy::default());
    let calls = Arc::new(AtomicUsize::new(0));
    let leader = {
        let (cache, profile, calls) = (cache.clone(), profile.clone(), calls.clone());
        tokio::spawn(async move {
            cache
                .fetch("k", &profile, loader(&calls, "v", Duration::from_secs(1)))
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(10)).await;
    let waiter = {
        let (cache, profile, calls) = (cache.clone(), profile.clone(), calls.clone());
        tokio::spawn(async move {
            cache
                .fetch("k", &profile, loader(&calls, "other", Duration::ZERO))
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(10)).await;
    leader.abort();
    let got = waiter.await.unwrap().unwrap();
    assert_eq!(value(&got), b"v");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert!(cache.store().get("k").await.unwrap().is_some());
}

#[tokio::test(start_paused = true)]
async fn panicking_load_frees_its_key() {
    let cache = cache();
    let profile = profile(Policy::default());
    let got = cache
        .fetch::<_, (), Err, _>("k", &profile, || async { panic!("loader bug") })
        .await;
    assert!(matches!(got, Err(LoadError::Aborted)), "{got:?}");
    let calls = Arc::new(AtomicUsize::new(0));
    let got = cache
        .fetch("k", &profile, loader(&calls, "v", Duration::ZERO))
        .await
        .unwrap();
    assert_eq!(value(&got), b"v");
}

#[tokio::test(start_paused = true)]
async fn hanging_load_times_out_and_frees_its_key() {
    let cache = cache();
    let profile = profile(Policy::default().load_timeout(Duration::from_secs(2)));
    let calls = Arc::new(AtomicUsize::new(0));
    let got = cache
        .fetch(
            "k",
            &profile,
            loader(&calls, "never", Duration::from_secs(3_600)),
        )
        .await;
    assert!(matches!(got, Err(LoadError::Timeout)), "{got:?}");
    let got = cache
        .fetch("k", &profile, loader(&calls, "v", Duration::ZERO))
        .await
        .unwrap();
    assert_eq!(value(&got), b"v");
}

#[tokio::test(start_paused = true)]
async fn stale_while_revalidate_serves_stale_and_reloads_once() {
    let cache = cache();
    let profile = profile(
        Policy::ttl(Duration::from_secs(10)).stale_while_revalidate(Duration::from_secs(30)),
    );
    let calls = Arc::new(AtomicUsize::new(0));
    cache
        .fetch("k", &profile, loader(&calls, "old", Duration::ZERO))
        .await
        .unwrap();
    tokio::time::advance(Duration::from_secs(15)).await;

    let reads: Vec<_> = (0..50)
        .map(|_| {
            let (cache, profile, calls) = (cache.clone(), profile.clone(), calls.clone());
            tokio::spawn(async move {
                cache
                    .fetch(
                        "k",
                        &profile,
                        loader(&calls, "new", Duration::from_millis(100)),
                    )
                    .await
            })
        })
        .collect();
    for r in reads {
        let got = r.await.unwrap().unwrap();
        assert!(matches!(got, Fetched::Stale(_)));
        assert_eq!(value(&got), b"old");
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(calls.load(Ordering::SeqCst), 2, "one background reload");
    let got = cache
        .fetch("k", &profile, loader(&calls, "x", Duration::ZERO))
        .await
        .unwrap();
    assert!(matches!(got, Fetched::Hit(_)));
    assert_eq!(value(&got), b"new");
    assert_eq!(profile.stats().stale, 50);
}

/// A reader that read the stale entry before another's reload stored the
/// new one, and asks for its refresh only after that reload ended, finds
/// the fresh entry and does not load again.
#[tokio::test(start_paused = true)]
async fn a_refresh_asked_for_after_another_reload_ended_does_not_load_again() {
    let cache = cache();
    let profile = profile(
        Policy::ttl(Duration::from_secs(10)).stale_while_revalidate(Duration::from_secs(30)),
    );
    let calls = Arc::new(AtomicUsize::new(0));
    cache
        .fetch("k", &profile, loader(&calls, "old", Duration::ZERO))
        .await
        .unwrap();
    tokio::time::advance(Duration::from_secs(15)).await;
    // Read while stale, before any reload.
    let seen = cache.store().get("k").await.unwrap().expect("stale entry");

    let got = cache
        .fetch("k", &profile, loader(&calls, "new", Duration::ZERO))
        .await
        .unwrap();
    assert!(matches!(got, Fetched::Stale(_)));
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(calls.load(Ordering::SeqCst), 2, "the first reload");

    let check = |_: &Entry| Verdict::Serve;
    let late = cache
        .fetch_found(
            "k",
            &profile,
            Some(seen),
            check,
            loader(&calls, "newer", Duration::ZERO),
        )
        .await;
    let Checked::Done(Ok(late)) = late else {
        panic!("served");
    };
    assert_eq!(value(&late), b"old", "served what it read, stale");
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "the entry the first reload stored is fresh: no second load"
    );
    let got = cache
        .fetch("k", &profile, loader(&calls, "x", Duration::ZERO))
        .await
        .unwrap();
    assert_eq!(value(&got), b"new");
}

#[tokio::test(start_paused = true)]
async fn stale_if_error_serves_stale_when_reload_fails() {
    let cache = cache();
    let profile =
        profile(Policy::ttl(Duration::from_secs(10)).stale_if_error(Duration::from_secs(60)));
    let calls = Arc::new(AtomicUsize::new(0));
    cache
        .fetch("k", &profile, loader(&calls, "old", Duration::ZERO))
        .await
        .unwrap();
    tokio::time::advance(Duration::from_secs(20)).await;
    let got = cache.fetch("k", &profile, failing(&calls)).await.unwrap();
    assert!(matches!(got, Fetched::Stale(_)));
    assert_eq!(value(&got), b"old");
    let got = cache
        .fetch("k", &profile, loader(&calls, "new", Duration::ZERO))
        .await
        .unwrap();
    assert!(matches!(got, Fetched::Miss(_)));
    assert_eq!(value(&got), b"new");
    // Past the window the error reaches the caller.
    tokio::time::advance(Duration::from_secs(100)).await;
    assert!(cache.fetch("k", &profile, failing(&calls)).await.is_err());
}

#[tokio::test(start_paused = true)]
async fn negative_results_use_their_own_ttl() {
    let cache = cache();
    let profile =
        profile(Policy::ttl(Duration::from_secs(60)).negative_ttl(Duration::from_secs(2)));
    let calls = Arc::new(AtomicUsize::new(0));
    let not_found = |calls: &Arc<AtomicUsize>| {
        let calls = calls.clone();
        move || async move {
            calls.fetch_add(1, Ordering::SeqCst);
            Ok::<_, Err>(Loaded::<()>::Store(Fill::new("null").negative()))
        }
    };
    cache.fetch("k", &profile, not_found(&calls)).await.unwrap();
    tokio::time::advance(Duration::from_secs(1)).await;
    let got = cache.fetch("k", &profile, not_found(&calls)).await.unwrap();
    assert!(matches!(got, Fetched::Hit(_)));
    tokio::time::advance(Duration::from_secs(2)).await;
    let got = cache.fetch("k", &profile, not_found(&calls)).await.unwrap();
    assert!(matches!(got, Fetched::Miss(_)));
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn jitter_spreads_expiries_of_entries_written_together() {
    let cache = cache();
    let profile = Profile::new("jitter", Policy::ttl(Duration::from_secs(100)));
    let calls = Arc::new(AtomicUsize::new(0));
    let mut expiries = std::collections::HashSet::new();
    for i in 0..200 {
        let got = cache
            .fetch(
                &format!("k{i}"),
                &profile,
                loader(&calls, "v", Duration::ZERO),
            )
            .await
            .unwrap();
        let e = got.entry().unwrap();
        let ttl = e.fresh_until - e.stored_at;
        assert!((90_000..=110_000).contains(&ttl), "{ttl}");
        expiries.insert(e.fresh_until / 1_000);
    }
    assert!(
        expiries.len() > 15,
        "expiries spread over {} seconds",
        expiries.len()
    );
}

#[tokio::test(start_paused = true)]
async fn refresh_ahead_keeps_a_regularly_read_key_warm() {
    let cache = cache();
    let profile = profile(Policy::ttl(Duration::from_secs(10)).refresh_ahead_at(0.8));
    let calls = Arc::new(AtomicUsize::new(0));
    cache
        .fetch(
            "k",
            &profile,
            loader(&calls, "v", Duration::from_millis(50)),
        )
        .await
        .unwrap();
    for _ in 0..60 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let got = cache
            .fetch(
                "k",
                &profile,
                loader(&calls, "v", Duration::from_millis(50)),
            )
            .await
            .unwrap();
        assert!(matches!(got, Fetched::Hit(_)), "read was {got:?}");
    }
    let stats = profile.stats();
    assert_eq!(stats.misses, 1, "{stats:?}");
    assert!(stats.refreshes >= 5, "{stats:?}");
}

#[tokio::test(start_paused = true)]
async fn background_refreshes_are_bounded() {
    let cache = Cache::builder(MemoryStore::new(1 << 20))
        .max_refreshes(2)
        .build();
    let profile = profile(
        Policy::ttl(Duration::from_secs(1)).stale_while_revalidate(Duration::from_secs(60)),
    );
    let calls = Arc::new(AtomicUsize::new(0));
    for i in 0..10 {
        cache
            .fetch(
                &format!("k{i}"),
                &profile,
                loader(&calls, "v", Duration::ZERO),
            )
            .await
            .unwrap();
    }
    tokio::time::advance(Duration::from_secs(2)).await;
    for i in 0..10 {
        let got = cache
            .fetch(
                &format!("k{i}"),
                &profile,
                loader(&calls, "v", Duration::from_secs(5)),
            )
            .await
            .unwrap();
        assert!(matches!(got, Fetched::Stale(_)));
    }
    let stats = profile.stats();
    assert_eq!(stats.refreshes, 2, "{stats:?}");
    assert_eq!(stats.refreshes_skipped, 8, "{stats:?}");
    cache.shutdown().await;
}

#[tokio::test]
async fn undecodable_entry_is_removed_and_reloaded() {
    let cache = cache();
    let profile = profile(Policy::default());
    cache
        .store()
        .put("k", Entry::new(Bytes::from_static(b"\xffgarbage")))
        .await
        .unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let got = cache
        .fetch_checked(
            "k",
            &profile,
            |e| std::str::from_utf8(&e.value).is_ok(),
            loader(&calls, "good", Duration::ZERO),
        )
        .await
        .unwrap();
    assert!(matches!(got, Fetched::Miss(_)));
    assert_eq!(value(&got), b"good");
}

#[tokio::test]
async fn passed_results_are_not_stored() {
    let cache = cache();
    let profile = profile(Policy::default());
    let got = cache
        .fetch::<_, u32, Err, _>("k", &profile, || async { Ok(Loaded::Pass(7)) })
        .await
        .unwrap();
    assert!(matches!(got, Fetched::Passed(7)));
    assert!(cache.store().get("k").await.unwrap().is_none());
}

/// A `MemoryStore` whose reads answer `delay` after reading, like a
/// remote store whose reply is still on the wire when another caller's
/// load finishes.
struct LateReads {
    inner: MemoryStore,
    delay: Duration,
}

impl Store for LateReads {
    async fn get(&self, key: &str) -> Result<Option<Entry>, crate::StoreError> {
        let found = self.inner.get(key).await;
        tokio::time::sleep(self.delay).await;
        found
    }
    async fn put(&self, key: &str, entry: Entry) -> Result<(), crate::StoreError> {
        self.inner.put(key, entry).await
    }
    async fn remove(&self, key: &str) -> Result<(), crate::StoreError> {
        self.inner.remove(key).await
    }
    async fn remove_tag(&self, tag: &str) -> Result<(), crate::StoreError> {
        self.inner.remove_tag(tag).await
    }
}

#[tokio::test(start_paused = true)]
async fn a_miss_read_before_the_load_finished_does_not_load_again() {
    let cache = Cache::new(LateReads {
        inner: MemoryStore::new(16 << 20),
        delay: Duration::from_millis(100),
    });
    let profile = profile(Policy::ttl(Duration::from_secs(60)));
    let calls = Arc::new(AtomicUsize::new(0));
    // The first caller loads at once for 10 ms; the second reads the empty
    // store at 5 ms but learns it only at 105 ms, after the load finished.
    let first = tokio::spawn({
        let (cache, profile, calls) = (cache.clone(), profile.clone(), calls.clone());
        async move {
            cache
                .reload(
                    "k",
                    &profile,
                    loader(&calls, "v", Duration::from_millis(10)),
                )
                .await
        }
    });
    tokio::time::sleep(Duration::from_millis(5)).await;
    let second = cache
        .fetch("k", &profile, loader(&calls, "again", Duration::ZERO))
        .await
        .unwrap();
    assert!(matches!(first.await.unwrap().unwrap(), Fetched::Miss(_)));
    assert!(matches!(second, Fetched::Hit(_)));
    assert_eq!(value(&second), b"v");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn staggered_misses_with_slow_reads_load_once() {
    let cache = Cache::new(LateReads {
        inner: MemoryStore::new(16 << 20),
        delay: Duration::from_millis(20),
    });
    let profile = profile(Policy::ttl(Duration::from_secs(60)));
    let calls = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..400u64)
        .map(|i| {
            let (cache, profile, calls) = (cache.clone(), profile.clone(), calls.clone());
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_micros(i * 100)).await;
                cache
                    .fetch("k", &profile, loader(&calls, "v", Duration::from_millis(5)))
                    .await
                    .map(|f| value(&f).to_vec())
            })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap(), b"v");
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_that_started_before_a_remove_does_not_store_the_old_value() {
    let cache = cache();
    let profile = profile(Policy::ttl(Duration::from_secs(60)));
    let db = Arc::new(std::sync::atomic::AtomicU64::new(1));
    let read_db = Arc::new(tokio::sync::Notify::new());
    let release = Arc::new(tokio::sync::Notify::new());
    let reader = tokio::spawn({
        let (cache, profile, db) = (cache.clone(), profile.clone(), db.clone());
        let (read_db, release) = (read_db.clone(), release.clone());
        async move {
            cache
                .fetch::<_, (), Err, _>("k", &profile, move || async move {
                    let old = db.load(Ordering::SeqCst);
                    read_db.notify_one();
                    release.notified().await;
                    Ok(Loaded::Store(Fill::new(old.to_string())))
                })
                .await
        }
    });
    read_db.notified().await;
    // The writer: update the database, delete the key.
    db.store(2, Ordering::SeqCst);
    cache.remove("k").await;
    // A reader arriving after the delete does not wait for the old load.
    let after = cache
        .fetch::<_, (), Err, _>("k", &profile, || async {
            Ok(Loaded::Store(Fill::new("2")))
        })
        .await
        .unwrap();
    assert_eq!(value(&after), b"2");
    release.notify_one();
    let old = reader.await.unwrap().unwrap();
    assert_eq!(value(&old), b"1", "the racing reader gets what it loaded");
    let stored = cache.store().get("k").await.unwrap().expect("stored");
    assert_eq!(&stored.value[..], b"2", "the old value was not put back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loads_racing_with_writes_never_leave_an_old_value() {
    let cache = cache();
    let profile = profile(Policy::ttl(Duration::from_secs(600)));
    let db = Arc::new(std::sync::atomic::AtomicU64::new(0));
    for round in 0..40u64 {
        let readers: Vec<_> = (0..50u64)
            .map(|i| {
                let (cache, profile, db) = (cache.clone(), profile.clone(), db.clone());
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_micros(i * 20)).await;
                    let load = move || async move {
                        let v = db.load(Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_micros(300)).await;
                        Ok::<_, Err>(Loaded::<()>::Store(Fill::new(v.to_string())))
                    };
                    let _ = cache.fetch("k", &profile, load).await;
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_micros(500)).await;
        db.store(round + 1, Ordering::SeqCst);
        cache.remove("k").await;
        for r in readers {
            r.await.unwrap();
        }
        if let Some(entry) = cache.store().get("k").await.unwrap() {
            assert_eq!(
                std::str::from_utf8(&entry.value).unwrap(),
                (round + 1).to_string(),
                "round {round}: an old value outlived the write"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_in_flight_does_not_survive_its_tags_invalidation() {
    let cache = cache();
    let profile = profile(Policy::ttl(Duration::from_secs(60)));
    let started = Arc::new(tokio::sync::Notify::new());
    let release = Arc::new(tokio::sync::Notify::new());
    let reader = tokio::spawn({
        let (cache, profile) = (cache.clone(), profile.clone());
        let (started, release) = (started.clone(), release.clone());
        async move {
            cache
                .fetch::<_, (), Err, _>("k", &profile, move || async move {
                    started.notify_one();
                    release.notified().await;
                    Ok(Loaded::Store(
                        Fill::new("old").with_tags(vec!["p:1".into()]),
                    ))
                })
                .await
        }
    });
    // The load is in flight when its tag is invalidated.
    started.notified().await;
    cache.remove_tag("p:1").await;
    release.notify_one();
    reader.await.unwrap().unwrap();
    assert!(cache.store().get("k").await.unwrap().is_none());
}

#[tokio::test(start_paused = true)]
async fn misses_after_shutdown_are_loaded_on_the_callers_task() {
    let cache = cache();
    let profile = profile(Policy::default());
    cache.shutdown().await;
    let calls = Arc::new(AtomicUsize::new(0));
    let got = cache
        .fetch("k", &profile, loader(&calls, "v", Duration::from_millis(5)))
        .await
        .unwrap();
    assert_eq!(value(&got), b"v");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn loads_of_callers_whose_shared_load_passed_are_counted() {
    let cache = cache();
    let profile = profile(Policy::default());
    let tasks: Vec<_> = (0..10)
        .map(|_| {
            let (cache, profile) = (cache.clone(), profile.clone());
            tokio::spawn(async move {
                cache
                    .fetch::<_, u32, Err, _>("k", &profile, || async {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        Ok(Loaded::Pass(7))
                    })
                    .await
            })
        })
        .collect();
    for t in tasks {
        assert!(matches!(t.await.unwrap().unwrap(), Fetched::Passed(7)));
    }
    let stats = profile.stats();
    assert_eq!(stats.loads, 10, "{stats:?}");
    assert_eq!(stats.joined, 9, "{stats:?}");
}

/// A loader counting its calls that hands `now` to its caller at once and
/// stores what `fill` sends, or nothing when its sender is dropped.
fn streaming(
    calls: &Arc<AtomicUsize>,
    now: u32,
    fill: tokio::sync::oneshot::Receiver<&'static str>,
) -> impl FnOnce() -> futures_util::future::BoxFuture<'static, Result<Loaded<u32>, Err>> + Send + 'static
{
    let calls = calls.clone();
    move || {
        Box::pin(async move {
            calls.fetch_add(1, Ordering::SeqCst);
            let fill = PendingFill::new(async move { fill.await.ok().map(Fill::new) });
            Ok(Loaded::Streaming(now, fill))
        })
    }
}

/// A loader of `u32` values storing `value`.
fn storing(
    calls: &Arc<AtomicUsize>,
    value: &'static str,
) -> impl FnOnce() -> futures_util::future::BoxFuture<'static, Result<Loaded<u32>, Err>> + Send + 'static
{
    let calls = calls.clone();
    move || {
        Box::pin(async move {
            calls.fetch_add(1, Ordering::SeqCst);
            Ok(Loaded::Store(Fill::new(value)))
        })
    }
}

/// Lets the other tasks run until `done` holds.
async fn until(mut done: impl FnMut() -> bool) {
    for _ in 0..10_000 {
        if done() {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!("never happened");
}

/// A caller joining the load of `k` on `cache`, with a loader of its own
/// for when it has to load alone.
fn join(
    cache: &Cache<MemoryStore>,
    profile: &Profile,
    calls: &Arc<AtomicUsize>,
) -> tokio::task::JoinHandle<Result<Fetched<u32>, LoadError<Err>>> {
    let (cache, profile, calls) = (cache.clone(), profile.clone(), calls.clone());
    tokio::spawn(async move { cache.fetch("k", &profile, storing(&calls, "alone")).await })
}

#[tokio::test(start_paused = true)]
async fn a_streamed_value_reaches_its_caller_before_its_fill_is_stored() {
    let cache = cache();
    let profile = profile(Policy::default());
    let calls = Arc::new(AtomicUsize::new(0));
    let (fill, pending) = tokio::sync::oneshot::channel();
    let got = cache
        .fetch("k", &profile, streaming(&calls, 1, pending))
        .await
        .unwrap();
    assert!(matches!(got, Fetched::Passed(1)), "{got:?}");
    assert!(cache.store().get("k").await.unwrap().is_none());
    let waiter = join(&cache, &profile, &calls);
    until(|| profile.stats().joined == 1).await;
    fill.send("whole").unwrap();
    let got = waiter.await.unwrap().unwrap();
    assert!(matches!(got, Fetched::Miss(_)), "{got:?}");
    assert_eq!(value(&got), b"whole");
    let again = cache
        .fetch("k", &profile, storing(&calls, "again"))
        .await
        .unwrap();
    assert!(matches!(again, Fetched::Hit(_)), "{again:?}");
    assert_eq!(value(&again), b"whole");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    let stats = profile.stats();
    assert_eq!(
        (stats.loads, stats.misses, stats.coalesced),
        (1, 1, 1),
        "{stats:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn waiters_of_a_streamed_load_that_stores_nothing_load_alone() {
    let cache = cache();
    let profile = profile(Policy::default());
    let calls = Arc::new(AtomicUsize::new(0));
    let (fill, pending) = tokio::sync::oneshot::channel::<&'static str>();
    let got = cache
        .fetch("k", &profile, streaming(&calls, 1, pending))
        .await
        .unwrap();
    assert!(matches!(got, Fetched::Passed(1)), "{got:?}");
    let waiter = join(&cache, &profile, &calls);
    until(|| profile.stats().joined == 1).await;
    drop(fill);
    let got = waiter.await.unwrap().unwrap();
    assert_eq!(value(&got), b"alone");
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn a_streamed_fill_past_the_load_timeout_times_out_its_waiters() {
    let cache = cache();
    let profile = profile(Policy::default().load_timeout(Duration::from_secs(2)));
    let calls = Arc::new(AtomicUsize::new(0));
    let (fill, pending) = tokio::sync::oneshot::channel::<&'static str>();
    let got = cache
        .fetch("k", &profile, streaming(&calls, 1, pending))
        .await
        .unwrap();
    assert!(matches!(got, Fetched::Passed(1)), "{got:?}");
    let waiter = join(&cache, &profile, &calls);
    let got = waiter.await.unwrap();
    assert!(matches!(got, Err(LoadError::Timeout)), "{got:?}");
    assert!(fill.is_closed(), "the pending fill was dropped");
    let got = cache
        .fetch("k", &profile, storing(&calls, "v"))
        .await
        .unwrap();
    assert_eq!(value(&got), b"v", "the key was freed");
    assert_eq!(profile.stats().load_errors, 1);
}

#[tokio::test(start_paused = true)]
async fn a_streamed_load_after_shutdown_is_handed_over_and_not_stored() {
    let cache = cache();
    let profile = profile(Policy::default());
    cache.shutdown().await;
    let calls = Arc::new(AtomicUsize::new(0));
    let (fill, pending) = tokio::sync::oneshot::channel::<&'static str>();
    let got = cache
        .fetch("k", &profile, streaming(&calls, 1, pending))
        .await
        .unwrap();
    assert!(matches!(got, Fetched::Passed(1)), "{got:?}");
    assert!(fill.is_closed(), "no task awaits the pending fill");
    assert!(cache.store().get("k").await.unwrap().is_none());
}
