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
}

impl Fill {
    /// A positive value with the policy's TTL and no tags.
    pub fn new(value: impl Into<Bytes>) -> Self {
        Fill {
            value: value.into(),
            tags: Vec::new(),
            ttl: None,
            negative: false,
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
