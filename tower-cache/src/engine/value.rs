//! What loaders produce and fetches answer: [`Fill`], [`Loaded`], [`Fetched`].

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;

use crate::entry::Entry;

/// A value a loader wants stored, built with [`Fill::new`] and its
/// builder methods.
///
/// ```
/// use std::time::Duration;
/// use tower_cache::Fill;
///
/// let fill = Fill::new("Ada")
///     .with_tags(vec!["user:1".into()])
///     .with_ttl(Duration::from_secs(5));
/// assert_eq!(&fill.value()[..], b"Ada");
/// ```
#[derive(Debug, Clone)]
pub struct Fill {
    /// The bytes to store.
    pub(crate) value: Bytes,
    /// Tags to invalidate it by.
    pub(crate) tags: Vec<String>,
    /// A TTL for this value instead of the policy's (for example from an
    /// HTTP `max-age`). Jitter still applies.
    pub(crate) ttl: Option<Duration>,
    /// A "not found" result, kept for the policy's negative TTL.
    pub(crate) negative: bool,
    /// How old the value already was when it was loaded.
    pub(crate) age: Duration,
    /// Stale windows of its own instead of the policy's.
    pub(crate) windows: Option<(Duration, Duration)>,
    /// How long to keep the value after it stops being fresh, to be
    /// revalidated.
    pub(crate) keep: Duration,
    /// Whether the policy's jitter may change the TTL.
    pub(crate) jitter: bool,
}

impl Fill {
    /// A positive value with the policy's TTL and no tags.
    pub fn new(value: impl Into<Bytes>) -> Self {
        Fill {
            value: value.into(),
            tags: Vec::new(),
            ttl: None,
            negative: false,
            age: Duration::ZERO,
            windows: None,
            keep: Duration::ZERO,
            jitter: true,
        }
    }

    /// Marks the value as a "not found" result (negative caching).
    #[must_use]
    pub fn negative(mut self) -> Self {
        self.negative = true;
        self
    }

    /// Sets the tags.
    #[must_use]
    pub fn with_tags(mut self, tags: Vec<String>) -> Self {
        self.tags = tags;
        self
    }

    /// The bytes to store.
    pub fn value(&self) -> &Bytes {
        &self.value
    }

    /// Overrides the policy's TTL for this value.
    #[must_use]
    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// The value was already `age` old when it was loaded (an HTTP `Age`,
    /// or the time since its `Date`): it is stored as read that long ago,
    /// so it stops being fresh `age` sooner and the entry's age counts it.
    /// Default: zero.
    #[must_use]
    pub fn with_age(mut self, age: Duration) -> Self {
        self.age = age;
        self
    }

    /// Stale windows for this value instead of the policy's (see
    /// [`Entry::with_stale_windows`](crate::Entry::with_stale_windows)):
    /// served at once while it reloads for `revalidate` after it stops
    /// being fresh, and when the reload fails for `if_error`. Default: the
    /// policy's.
    #[must_use]
    pub fn with_stale_windows(mut self, revalidate: Duration, if_error: Duration) -> Self {
        self.windows = Some((revalidate, if_error));
        self
    }

    /// Keeps the value for `keep` after it stops being fresh, without
    /// serving it longer than its stale windows allow, so that the next
    /// load can revalidate it ([`Loader::revalidate`](crate::Loader::revalidate))
    /// instead of reading it whole. Default: zero.
    #[must_use]
    pub fn with_keep(mut self, keep: Duration) -> Self {
        self.keep = keep;
        self
    }

    /// Stores the TTL exactly, without the policy's jitter (a freshness
    /// lifetime an HTTP origin gave, which a cache must not lengthen).
    /// Default: jittered.
    #[must_use]
    pub fn without_jitter(mut self) -> Self {
        self.jitter = false;
        self
    }
}

/// What a loader produced.
#[derive(Debug)]
pub enum Loaded<T> {
    /// Store this value and serve it to every caller waiting on the key.
    Store(Fill),
    /// Not cacheable: hand `T` to the caller whose loader ran. Callers that
    /// waited on the same key run their own loaders (hit-for-pass).
    Pass(T),
    /// The origin answered with a failure (such as an HTTP 5xx): not
    /// stored; a stale entry is served instead where the policy allows.
    /// Waiting callers receive the optional bytes in
    /// [`LoadError::Joined`](super::LoadError::Joined).
    Failed(T, Option<Bytes>),
    /// Hand `T` to the caller whose loader ran at once, and store the
    /// [`Fill`] the [`PendingFill`] yields once it is complete: a value the
    /// caller receives while it is still being read (an HTTP body that
    /// streams to its client as a copy of it is collected). The caller gets
    /// `T` as [`Fetched::Passed`]; the pending fill is awaited on a task
    /// of the cache's (the load's own), within what is left of
    /// [`Policy::load_timeout`](super::Policy::load_timeout), so the
    /// caller going away does not cancel it.
    ///
    /// Callers that waited on the key get the stored entry once it is
    /// stored. When the fill yields `None` (nothing to store), they run
    /// their own loaders, as after [`Loaded::Pass`]; when it times out,
    /// they get [`LoadError::Timeout`](super::LoadError::Timeout). After
    /// [`Cache::shutdown`](super::Cache::shutdown), when no task would
    /// await it, the pending fill is dropped and nothing is stored. A
    /// background refresh has no caller to hand `T` to: it drops `T` and
    /// awaits the fill all the same.
    Streaming(T, PendingFill),
}

/// The value of a [`Loaded::Streaming`] load, still being read: a future
/// that yields the [`Fill`] to store, or `None` when the value turned out
/// not to be storable (too large, or its read failed).
///
/// The engine drops it once the fill it yielded is stored and the waiting
/// callers have the entry: a future that feeds the caller's `T` may hold
/// back the end of it until then, so that a caller who read the value
/// whole and asks again is answered from the cache. It drops it
/// unfinished when the load times out or the cache shuts down: such a
/// future should then hand the rest of its source to the caller's `T`, so
/// that the caller still gets the whole value.
///
/// ```
/// use tower_cache::store::MemoryStore;
/// use tower_cache::{Cache, Fetched, Fill, Loaded, PendingFill, Policy, Profile};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let cache = Cache::new(MemoryStore::default());
/// let reports = Profile::new("reports", Policy::default());
/// let got = cache
///     .fetch("report:1", &reports, || async {
///         // The caller's part now, the whole value for the store later.
///         let whole = PendingFill::new(async { Some(Fill::new("pages 1-20")) });
///         Ok::<_, std::io::Error>(Loaded::Streaming("page 1", whole))
///     })
///     .await
///     .unwrap();
/// assert!(matches!(got, Fetched::Passed("page 1")));
/// // Stored, or waited for while it is being stored.
/// let again = cache
///     .fetch("report:1", &reports, || async {
///         Ok::<_, std::io::Error>(Loaded::Pass("not loaded again"))
///     })
///     .await
///     .unwrap();
/// assert_eq!(&again.entry().unwrap().value()[..], b"pages 1-20");
/// # }
/// ```
pub struct PendingFill(BoxFuture<'static, Option<Fill>>);

impl PendingFill {
    /// The fill `future` yields.
    pub fn new(future: impl Future<Output = Option<Fill>> + Send + 'static) -> Self {
        PendingFill(Box::pin(future))
    }
}

impl Future for PendingFill {
    type Output = Option<Fill>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Fill>> {
        self.0.as_mut().poll(cx)
    }
}

impl fmt::Debug for PendingFill {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PendingFill")
    }
}

/// How a fetch was answered.
#[derive(Debug)]
pub enum Fetched<T> {
    /// A fresh entry from the store.
    Hit(Entry),
    /// A stale entry (stale-while-revalidate, or stale-if-error after a
    /// failed reload).
    Stale(Entry),
    /// A freshly loaded and stored entry (by this caller or one it waited
    /// for).
    Miss(Entry),
    /// A loaded value handed to this caller only: not stored, or
    /// ([`Loaded::Streaming`]) stored once the rest of it is read.
    Passed(T),
}

impl<T> Fetched<T> {
    /// The entry, unless the value was passed through.
    pub fn entry(&self) -> Option<&Entry> {
        match self {
            Fetched::Hit(e) | Fetched::Stale(e) | Fetched::Miss(e) => Some(e),
            Fetched::Passed(_) => None,
        }
    }
}
