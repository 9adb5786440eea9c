//! A tracing subscriber that records the events of the current thread.

use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

/// Events captured by a [`Capture`] subscriber: level, message and fields.
#[derive(Clone, Default)]
pub(super) struct Capture {
    events: Arc<Mutex<Vec<(tracing::Level, String)>>>,
}

struct Fields(String);

impl tracing::field::Visit for Fields {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        let _ = write!(self.0, "{}={value:?} ", field.name());
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
    pub(super) fn install(&self) -> tracing::subscriber::DefaultGuard {
        static GLOBAL: std::sync::Once = std::sync::Once::new();
        GLOBAL.call_once(|| {
            let _ = tracing::subscriber::set_global_default(Discard);
        });
        let guard = tracing::subscriber::set_default(self.clone());
        // Callsites cached before the global default existed learn of it.
        tracing::callsite::rebuild_interest_cache();
        guard
    }

    pub(super) fn at(&self, level: tracing::Level) -> Vec<String> {
        let events = self.events.lock().unwrap();
        events
            .iter()
            .filter(|(l, _)| *l == level)
            .map(|(_, e)| e.clone())
            .collect()
    }
}
