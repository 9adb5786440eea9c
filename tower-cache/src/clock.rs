//! Wall-clock time as the cache sees it.
//!
//! Entries carry absolute timestamps (milliseconds since the Unix epoch) so
//! that every instance sharing a Redis agrees on when an entry stops being
//! fresh. The clock advances with `tokio::time`, so tests that pause tokio's
//! clock (`#[tokio::test(start_paused = true)]`) and call
//! `tokio::time::advance` move cache time forward too.

use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

struct Anchor {
    wall_ms: u64,
    instant: std::time::Instant,
}

static ANCHOR: OnceLock<Anchor> = OnceLock::new();

fn anchor() -> &'static Anchor {
    ANCHOR.get_or_init(|| Anchor {
        wall_ms: SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, ms),
        instant: std::time::Instant::now(),
    })
}

/// The cache's clock: milliseconds since the Unix epoch, advancing with
/// tokio's clock (so a test that pauses and advances tokio's time moves
/// it too). [`Entry`](crate::Entry) timestamps are on this clock; it
/// decides freshness, never the order of invalidations.
///
/// ```
/// use tower_cache::{Entry, now_ms};
///
/// let entry = Entry::new("v");
/// assert!(entry.is_fresh_at(now_ms()));
/// ```
#[must_use]
pub fn now_ms() -> u64 {
    let a = anchor();
    let now = tokio::time::Instant::now().into_std();
    match now.checked_duration_since(a.instant) {
        Some(ahead) => a.wall_ms.saturating_add(ms(ahead)),
        None => a.wall_ms.saturating_sub(ms(a.instant.duration_since(now))),
    }
}

/// `now_ms() + d`, saturating.
pub(crate) fn after(d: Duration) -> u64 {
    now_ms().saturating_add(ms(d))
}

/// `d` in whole milliseconds, saturating at `u64::MAX` (585 million years).
pub(crate) fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
