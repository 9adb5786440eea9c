use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tower::{Service, ServiceExt, service_fn};
use tower_layer::Layer;

use super::*;
use crate::store::MemoryStore;
use crate::{Cache, CacheStatus, Policy, ReadThroughLayer, Write};

type Batch = Vec<Write<u64, i64>>;

/// A writer that records what it was given.
#[derive(Clone, Default)]
struct Recorder {
    calls: Arc<AtomicUsize>,
    batches: Arc<Mutex<Vec<Batch>>>,
}

impl Recorder {
    fn service(
        &self,
    ) -> impl Service<
        Vec<Write<u64, i64>>,
        Response = (),
        Error = std::io::Error,
        Future = impl Send + 'static,
    > + Send
    + 'static {
        let me = self.clone();
        service_fn(move |batch: Vec<Write<u64, i64>>| {
            me.calls.fetch_add(1, Ordering::SeqCst);
            me.batches.lock().unwrap().push(batch);
            async { Ok(()) }
        })
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    /// Every write the writer received, in order.
    fn writes(&self) -> Vec<Write<u64, i64>> {
        self.batches
            .lock()
            .unwrap()
            .iter()
            .flatten()
            .cloned()
            .collect()
    }
}

fn layer() -> WriteBehindLayer<u64, i64, MemoryStore> {
    WriteBehindLayer::new(Cache::new(MemoryStore::default()), "wb", Policy::default())
        .namespace("wb:")
}

/// Value written by `task` as its `seq`-th write to a key.
fn tagged(task: i64, seq: i64) -> i64 {
    seq * 1_000 + task
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_concurrent_writes_end_with_the_last_value_per_key() {
    const KEYS: u64 = 100;
    const TASKS_PER_KEY: i64 = 10;
    const WRITES_PER_TASK: i64 = 10;
    let cache = Cache::new(MemoryStore::default());
    let writer = Recorder::default();
    let svc = WriteBehindLayer::<u64, i64, _>::new(cache.clone(), "wb", Policy::default())
        .namespace("wb:")
        .max_delay(Duration::from_millis(5))
        .layer(writer.service());
    let handle = svc.handle();
    // Ten tasks race on every key; each writes increasing values to it.
    let mut tasks = Vec::new();
    for task in 0..TASKS_PER_KEY {
        for key in 0..KEYS {
            let mut svc = svc.clone();
            tasks.push(tokio::spawn(async move {
                for seq in 1..=WRITES_PER_TASK {
                    svc.ready()
                        .await
                        .unwrap()
                        .call(Write::new(key, tagged(task, seq)))
                        .await
                        .unwrap();
                }
            }));
        }
    }
    for t in tasks {
        t.await.unwrap();
    }
    handle.flush().await.unwrap();

    // Writes to a key reach the writer in the order they were acknowledged:
    // each task's writes arrive in the order it made them.
    let mut last_seq: HashMap<(u64, i64), i64> = HashMap::new();
    let mut last: HashMap<u64, i64> = HashMap::new();
    for w in writer.writes() {
        let (task, seq) = (w.value % 1_000, w.value / 1_000);
        let previous = last_seq.insert((w.key, task), seq).unwrap_or(0);
        assert!(
            seq > previous,
            "key {} task {task}: {previous} then {seq}",
            w.key
        );
        last.insert(w.key, w.value);
    }
    assert_eq!(last.len(), KEYS as usize);
    let mut read = ReadThroughLayer::new(cache, "wb", Policy::default())
        .namespace("wb:")
        .layer(service_fn(|_: u64| async { Ok::<i64, std::io::Error>(-1) }));
    for key in 0..KEYS {
        let value = last[&key];
        // The write acknowledged last to a key is the final write of its
        // task (nothing followed it), and the writer and the cache agree
        // on it.
        assert_eq!(value / 1_000, WRITES_PER_TASK, "key {key} ended on {value}");
        assert_eq!(read.lookup(key).await.unwrap(), (value, CacheStatus::Hit));
    }
    let stats = handle.stats();
    assert_eq!(stats.acknowledged, 10_000);
    assert!(
        writer.calls() < 1_000,
        "{} writer calls for 10,000 writes",
        writer.calls()
    );
    assert!(stats.coalesced > 5_000, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counter_merge_sums_exactly() {
    let writer = Recorder::default();
    let svc = layer()
        .max_delay(Duration::from_secs(3_600))
        .merge(|a, b| a + b)
        .layer(writer.service());
    let handle = svc.handle();
    let tasks: Vec<_> = (0..1_000)
        .map(|_| {
            let svc = svc.clone();
            tokio::spawn(async move { svc.oneshot(Write::new(7, 1)).await.unwrap() })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    // Nothing goes out before max_delay: every increment is pending.
    assert_eq!(writer.calls(), 0);
    assert_eq!(handle.pending(&7), Some(1_000));
    handle.flush().await.unwrap();
    assert_eq!(
        writer.writes(),
        vec![Write::new(7, 1_000)],
        "1,000 increments become one write of the sum"
    );
    assert_eq!(handle.pending(&7), None);
    assert_eq!(handle.stats().coalesced, 999);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_blocks_poll_ready_until_the_writer_catches_up() {
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let delivered = Arc::new(AtomicUsize::new(0));
    let entered = Arc::new(tokio::sync::Notify::new());
    let writer = {
        let (gate, delivered, entered) = (gate.clone(), delivered.clone(), entered.clone());
        service_fn(move |batch: Vec<Write<u64, i64>>| {
            let (gate, delivered) = (gate.clone(), delivered.clone());
            entered.notify_one();
            async move {
                gate.acquire().await.unwrap().forget();
                delivered.fetch_add(batch.len(), Ordering::SeqCst);
                Ok::<_, std::io::Error>(())
            }
        })
    };
    let mut svc = layer().queue_capacity(4).max_batch(1).layer(writer);
    // The first write reaches the writer, which holds it until the gate
    // opens: from then on the worker takes nothing more from the queue.
    svc.ready()
        .await
        .unwrap()
        .call(Write::new(0, 1))
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(30), entered.notified())
        .await
        .expect("the writer got the first batch");
    let waker = futures_util::task::noop_waker();
    let mut cx = Context::from_waker(&waker);
    let mut accepted = 1u64;
    loop {
        match svc.poll_ready(&mut cx) {
            Poll::Ready(Ok(())) => {
                svc.call(Write::new(accepted, 1)).await.unwrap();
                accepted += 1;
            }
            Poll::Pending => break,
            Poll::Ready(Err(e)) => panic!("{e}"),
        }
        assert!(accepted < 100, "the queue never filled");
        tokio::task::yield_now().await;
    }
    // The writer holds one batch, the queue holds the rest.
    assert!((4..=6).contains(&accepted), "accepted {accepted}");
    assert!(matches!(svc.poll_ready(&mut cx), Poll::Pending));

    gate.add_permits(1_000);
    tokio::time::timeout(Duration::from_secs(30), svc.ready())
        .await
        .expect("released when the writer catches up")
        .unwrap();
    svc.call(Write::new(999, 1)).await.unwrap();
    svc.handle().flush().await.unwrap();
    assert_eq!(delivered.load(Ordering::SeqCst) as u64, accepted + 1);
}

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
            .oneshot(Write::new(key, key as i64))
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

#[tokio::test(start_paused = true)]
async fn shutdown_drains_everything_and_refuses_later_writes() {
    let writer = Recorder::default();
    let mut svc = layer()
        .max_delay(Duration::from_secs(3_600))
        .layer(writer.service());
    for key in 0..50u64 {
        svc.ready()
            .await
            .unwrap()
            .call(Write::new(key, 1))
            .await
            .unwrap();
    }
    assert_eq!(writer.calls(), 0, "nothing delivered before the delay");
    let handle = svc.handle();
    handle.shutdown().await;
    assert_eq!(writer.writes().len(), 50);
    assert!(svc.ready().await.is_err(), "closed after shutdown");
    handle.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn flush_waits_for_delivery_and_drop_drains() {
    let writer = Recorder::default();
    let svc = layer()
        .max_delay(Duration::from_secs(3_600))
        .layer(writer.service());
    svc.clone().oneshot(Write::new(1, 5)).await.unwrap();
    let handle = svc.handle();
    handle.flush().await.unwrap();
    assert_eq!(writer.writes(), vec![Write::new(1, 5)]);

    svc.clone().oneshot(Write::new(2, 6)).await.unwrap();
    drop(svc);
    drop(handle);
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(
        writer.writes().len(),
        2,
        "dropping every handle drains the queue"
    );
}

#[tokio::test]
async fn a_read_after_a_write_is_a_hit_with_the_new_value() {
    let cache = Cache::new(MemoryStore::default());
    let writer = Recorder::default();
    let svc = WriteBehindLayer::<u64, i64, _>::new(cache.clone(), "prices", Policy::default())
        .namespace("price:")
        .max_delay(Duration::from_secs(3_600))
        .layer(writer.service());
    svc.clone().oneshot(Write::new(1, 250)).await.unwrap();
    let mut read = ReadThroughLayer::new(cache, "prices", Policy::default())
        .namespace("price:")
        .layer(service_fn(|_: u64| async {
            Ok::<i64, std::io::Error>(100)
        }));
    assert_eq!(read.lookup(1).await.unwrap(), (250, CacheStatus::Hit));
    assert_eq!(writer.calls(), 0, "acknowledged before the writer saw it");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_to_one_key_leave_the_last_acknowledged_in_the_cache() {
    let cache = Cache::new(MemoryStore::default());
    let writer = Recorder::default();
    let mut svc = WriteBehindLayer::<u64, i64, _>::new(cache.clone(), "c", Policy::default())
        .max_delay(Duration::from_millis(1))
        .layer(writer.service());
    let mut acks = Vec::new();
    for v in 1..=500i64 {
        svc.ready().await.unwrap();
        acks.push(tokio::spawn(svc.call(Write::new(1, v))));
    }
    for a in acks {
        a.await.unwrap().unwrap();
    }
    let mut read = ReadThroughLayer::new(cache, "c", Policy::default())
        .layer(service_fn(|_: u64| async { Ok::<i64, std::io::Error>(0) }));
    assert_eq!(read.lookup(1).await.unwrap(), (500, CacheStatus::Hit));
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
    let first = Duration::from_millis(1_000);
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

/// Events captured by a [`Capture`] subscriber: level, message and fields.
#[derive(Clone, Default)]
struct Capture {
    events: Arc<Mutex<Vec<(tracing::Level, String)>>>,
}

struct Fields(String);

impl tracing::field::Visit for Fields {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0.push_str(&format!("{}={value:?} ", field.name()));
    }
}

impl tracing::Subscriber for Capture {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        let mut fields = Fields(String::new());
        event.record(&mut fields);
        self.events
            .lock()
            .unwrap()
            .push((*event.metadata().level(), fields.0));
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

/// The global default of this test binary: asks every thread's own
/// subscriber, records nothing itself.
struct Discard;

impl tracing::Subscriber for Discard {
    fn register_callsite(
        &self,
        _: &'static tracing::Metadata<'static>,
    ) -> tracing::subscriber::Interest {
        tracing::subscriber::Interest::sometimes()
    }
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        false
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, _: &tracing::Event<'_>) {}
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

impl Capture {
    /// Makes this the current thread's subscriber until the guard drops.
    ///
    /// `tracing` caches each callsite's interest for the whole process, and
    /// a callsite first reached on a thread without a subscriber (another
    /// test's worker, say) would be cached as "never" and stay silent here
    /// too. A global default interested "sometimes" in every callsite keeps
    /// each event asking the current thread's subscriber instead.
    fn install(&self) -> tracing::subscriber::DefaultGuard {
        static GLOBAL: std::sync::Once = std::sync::Once::new();
        GLOBAL.call_once(|| {
            let _ = tracing::subscriber::set_global_default(Discard);
        });
        let guard = tracing::subscriber::set_default(self.clone());
        // Callsites cached before the global default existed learn of it.
        tracing::callsite::rebuild_interest_cache();
        guard
    }

    fn at(&self, level: tracing::Level) -> Vec<String> {
        let events = self.events.lock().unwrap();
        events
            .iter()
            .filter(|(l, _)| *l == level)
            .map(|(_, e)| e.clone())
            .collect()
    }
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
async fn dropping_the_last_handle_drains_in_the_background_with_a_log_line() {
    let capture = Capture::default();
    let _guard = capture.install();
    let writer = Recorder::default();
    let svc = layer()
        .max_delay(Duration::from_secs(3_600))
        .layer(writer.service());
    for key in 0..20u64 {
        svc.clone().oneshot(Write::new(key, 1)).await.unwrap();
    }
    let handle = svc.handle();
    drop(svc);
    tokio::task::yield_now().await;
    assert_eq!(writer.calls(), 0, "a handle keeps the queue open");
    drop(handle);
    // Long before max_delay: the drain does not wait for it.
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(writer.writes().len(), 20);
    let infos = capture.at(tracing::Level::INFO);
    assert!(infos.iter().any(|e| e.contains("drained")), "{infos:?}");
}

#[tokio::test(start_paused = true)]
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
