//! The circuit breaker in front of every Redis call.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ::metrics::Gauge;

use super::StoreError;
use crate::clock;
use crate::metrics::Tally;

/// Default wait before Redis is tried again after it failed: 1 s.
pub const DEFAULT_RETRY_INTERVAL: Duration = Duration::from_secs(1);
/// Default consecutive Redis failures that open the circuit breaker: 3.
pub const DEFAULT_FAILURE_THRESHOLD: u64 = 3;

/// Consecutive failures open it; while open, L2 is skipped; after the retry
/// interval one call probes L2; a success closes it.
///
/// Each opening starts a new generation. A call remembers the generation
/// it started in, and only a success from the current generation closes
/// the breaker: a slow call that began before an outage was detected and
/// answers afterwards says nothing about Redis now.
pub(crate) struct Breaker {
    threshold: u64,
    retry_ms: u64,
    failures: AtomicU64,
    /// 0 when closed; otherwise when the next probe may go out.
    open_until: AtomicU64,
    /// Bumped each time the breaker opens.
    generation: AtomicU64,
    /// Calls that succeeded: a call that times out while this stands
    /// still was answered no more than any other.
    successes: AtomicU64,
    /// Breakers open now (`tower_cache_l2_breaker_open`), moved by one at
    /// each opening and closing.
    open: Gauge,
    /// Times it opened.
    outages: Tally,
}

/// What a call allowed through the breaker remembers of it when it
/// started: the generation (only a success of the current one closes it)
/// and how many calls had succeeded (none since, and a timeout is an
/// outage).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ticket {
    generation: u64,
    successes: u64,
}

impl Breaker {
    /// A breaker opened by `threshold` failures in a row, probing every
    /// `retry`.
    pub(crate) fn new(threshold: u64, retry: Duration) -> Self {
        Breaker {
            threshold,
            retry_ms: clock::ms(retry),
            failures: AtomicU64::new(0),
            open_until: AtomicU64::new(0),
            generation: AtomicU64::new(0),
            successes: AtomicU64::new(0),
            open: ::metrics::gauge!(crate::metrics::L2_BREAKER_OPEN),
            outages: Tally::named(crate::metrics::L2_OUTAGES_TOTAL),
        }
    }

    /// Times it opened.
    pub(crate) fn outages(&self) -> u64 {
        self.outages.get()
    }

    /// The ticket of a call made now outside [`Breaker::allow`] (a health
    /// check), whose success may close the breaker.
    pub(crate) fn ticket(&self) -> Ticket {
        Ticket {
            generation: self.generation.load(Ordering::Acquire),
            successes: self.successes.load(Ordering::Acquire),
        }
    }

    pub(crate) fn is_open(&self) -> bool {
        self.open_until.load(Ordering::Acquire) != 0
    }

    /// `Some(ticket)` when a call may go to L2 (closed, or this call is
    /// the probe).
    pub(crate) fn allow(&self) -> Option<Ticket> {
        let ticket = self.ticket();
        let until = self.open_until.load(Ordering::Acquire);
        if until == 0 {
            return Some(ticket);
        }
        let now = clock::now_ms();
        let probe = now >= until
            && self
                .open_until
                .compare_exchange(
                    until,
                    now + self.retry_ms,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                )
                .is_ok();
        probe.then_some(ticket)
    }

    /// Records a success of the call that `call` started; `true` when it
    /// closed the breaker.
    pub(crate) fn on_success(&self, call: Ticket) -> bool {
        self.successes.fetch_add(1, Ordering::AcqRel);
        if self.generation.load(Ordering::Acquire) != call.generation {
            return false;
        }
        self.failures.store(0, Ordering::Relaxed);
        let closed = self.open_until.swap(0, Ordering::AcqRel) != 0;
        if closed {
            self.open.decrement(1.0);
        }
        closed
    }

    /// Records a failure of the call that `call` started; `true` when it
    /// opened the breaker. It opens at once when the server is gone
    /// ([`StoreError::Unavailable`]: connection refused, reset or closed)
    /// or stuck (a timeout, and no call succeeded during the whole time
    /// this one waited: every call in flight is waiting too); after
    /// `threshold` failures in a row otherwise (one slow call among
    /// answered ones).
    pub(crate) fn on_failure(&self, error: &StoreError, call: Ticket) -> bool {
        let failures = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        // A failed probe: wait another interval (unless a success closed
        // the breaker meanwhile; then this failure counts as any other).
        let next_probe = clock::now_ms() + self.retry_ms;
        if self
            .open_until
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |until| {
                (until != 0).then_some(next_probe)
            })
            .is_ok()
        {
            return false;
        }
        let stuck = || self.successes.load(Ordering::Acquire) == call.successes;
        let fatal = match error {
            StoreError::Unavailable => true,
            StoreError::Timeout => stuck(),
            _ => false,
        };
        if (fatal || failures >= self.threshold)
            && self
                .open_until
                .compare_exchange(
                    0,
                    clock::now_ms() + self.retry_ms,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                )
                .is_ok()
        {
            self.generation.fetch_add(1, Ordering::AcqRel);
            self.open.increment(1.0);
            self.outages.incr();
            return true;
        }
        false
    }
}

impl Drop for Breaker {
    fn drop(&mut self) {
        if self.is_open() {
            self.open.decrement(1.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn success_of_a_call_started_before_the_breaker_opened_does_not_close_it() {
        let breaker = Breaker::new(3, Duration::from_secs(1));
        let slow = breaker.allow().expect("closed");
        for _ in 0..3 {
            breaker.on_failure(&StoreError::Timeout, breaker.ticket());
        }
        assert!(breaker.is_open());
        assert!(!breaker.on_success(slow), "an old success is ignored");
        assert!(breaker.is_open());
        assert_eq!(breaker.allow(), None, "still skipping L2");

        tokio::time::advance(Duration::from_millis(1_001)).await;
        let probe = breaker.allow().expect("one probe after the interval");
        assert_eq!(breaker.allow(), None, "only one probe at a time");
        assert!(breaker.on_success(probe), "the probe closes it");
        assert!(!breaker.is_open());
    }

    #[tokio::test(start_paused = true)]
    #[expect(
        clippy::float_cmp,
        reason = "gauges moved by whole numbers, held exactly as f64"
    )]
    async fn its_gauge_reads_1_while_it_is_open_and_0_once_it_closed() {
        let recorder = crate::test_support::Metrics::default();
        let open = || recorder.sum(crate::metrics::L2_BREAKER_OPEN, &[]);
        let outages = || recorder.sum(crate::metrics::L2_OUTAGES_TOTAL, &[]);
        let breaker =
            ::metrics::with_local_recorder(&recorder, || Breaker::new(3, Duration::from_secs(1)));
        assert_eq!(open(), 0.0);
        assert!(breaker.on_failure(&StoreError::Unavailable, breaker.ticket()));
        assert_eq!((open(), outages()), (1.0, 1.0));

        tokio::time::advance(Duration::from_millis(1_001)).await;
        breaker.allow().expect("a probe");
        assert!(!breaker.on_failure(&StoreError::Unavailable, breaker.ticket()));
        assert_eq!(
            (open(), outages()),
            (1.0, 1.0),
            "a failed probe: still open"
        );

        tokio::time::advance(Duration::from_millis(1_001)).await;
        let probe = breaker.allow().expect("a probe");
        assert!(breaker.on_success(probe));
        assert_eq!(open(), 0.0);

        assert!(breaker.on_failure(&StoreError::Unavailable, breaker.ticket()));
        assert_eq!((open(), outages()), (1.0, 2.0));
        drop(breaker);
        assert_eq!(open(), 0.0, "a breaker gone is open no more");
    }

    #[tokio::test(start_paused = true)]
    async fn a_server_that_is_gone_opens_it_at_once() {
        let breaker = Breaker::new(3, Duration::from_secs(1));
        let call = breaker.allow().expect("closed");
        let waiting = breaker.allow().expect("closed");
        tokio::time::advance(Duration::from_millis(150)).await;
        breaker.on_success(call);
        tokio::time::advance(Duration::from_millis(100)).await;
        assert!(
            !breaker.on_failure(&StoreError::Timeout, waiting),
            "a timeout while others were answered is not an outage"
        );
        assert!(
            breaker.on_failure(&StoreError::Unavailable, breaker.ticket()),
            "a refused connection is"
        );
        assert!(breaker.is_open());
        assert_eq!(breaker.allow(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_server_that_answered_nothing_for_a_whole_timeout_opens_it_at_once() {
        let breaker = Breaker::new(3, Duration::from_secs(1));
        let call = breaker.allow().expect("closed");
        breaker.on_success(call);
        let waiting = breaker.allow().expect("closed");
        // A millisecond more: the clock reads whole milliseconds.
        tokio::time::advance(Duration::from_millis(201)).await;
        assert!(
            breaker.on_failure(&StoreError::Timeout, waiting),
            "stuck: nothing answered"
        );
        assert_eq!(breaker.allow(), None);
    }
}
