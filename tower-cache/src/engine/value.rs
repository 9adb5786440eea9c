//! What loaders produce and fetches answer: [`Fill`], [`Loaded`], [`Fetched`].

use std::time::Duration;

use bytes::Bytes;

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
    /// A loaded value that was not stored.
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
