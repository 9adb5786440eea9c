//! Helpers shared by the unit tests.

use std::sync::{Arc, Mutex};

/// One value emitted through the `metrics` facade.
type Seen = Arc<Mutex<Vec<(String, Vec<(String, String)>, f64)>>>;

/// A metrics recorder keeping every emission with its name and labels.
#[derive(Clone, Default)]
pub(crate) struct Metrics {
    seen: Seen,
}

struct Emission {
    name: String,
    labels: Vec<(String, String)>,
    seen: Seen,
}

impl Emission {
    fn push(&self, value: f64) {
        self.seen
            .lock()
            .unwrap()
            .push((self.name.clone(), self.labels.clone(), value));
    }
}

impl metrics::CounterFn for Emission {
    fn increment(&self, value: u64) {
        self.push(value as f64);
    }
    fn absolute(&self, value: u64) {
        self.push(value as f64);
    }
}

impl metrics::GaugeFn for Emission {
    fn increment(&self, value: f64) {
        self.push(value);
    }
    fn decrement(&self, value: f64) {
        self.push(-value);
    }
    fn set(&self, value: f64) {
        self.push(value);
    }
}

impl metrics::HistogramFn for Emission {
    fn record(&self, value: f64) {
        self.push(value);
    }
}

impl Metrics {
    fn emission(&self, key: &metrics::Key) -> Arc<Emission> {
        Arc::new(Emission {
            name: key.name().to_owned(),
            labels: key
                .labels()
                .map(|l| (l.key().to_owned(), l.value().to_owned()))
                .collect(),
            seen: self.seen.clone(),
        })
    }

    /// Values emitted under `name` whose labels include all of `labels`,
    /// in the order they were emitted.
    pub(crate) fn values(&self, name: &str, labels: &[(&str, &str)]) -> Vec<f64> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|(n, have, _)| {
                n == name
                    && labels
                        .iter()
                        .all(|(k, v)| have.iter().any(|(hk, hv)| hk == k && hv == v))
            })
            .map(|(_, _, v)| *v)
            .collect()
    }

    /// The sum of [`Metrics::values`].
    pub(crate) fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.values(name, labels).iter().sum()
    }
}

impl metrics::Recorder for Metrics {
    fn describe_counter(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn describe_gauge(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn describe_histogram(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn register_counter(&self, key: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Counter {
        metrics::Counter::from_arc(self.emission(key))
    }
    fn register_gauge(&self, key: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Gauge {
        metrics::Gauge::from_arc(self.emission(key))
    }
    fn register_histogram(
        &self,
        key: &metrics::Key,
        _: &metrics::Metadata<'_>,
    ) -> metrics::Histogram {
        metrics::Histogram::from_arc(self.emission(key))
    }
}

/// The head of a request with `method`, `uri` and `headers`.
#[cfg(feature = "http")]
pub(crate) fn request_parts(
    method: http::Method,
    uri: &str,
    headers: &[(&str, &str)],
) -> http::request::Parts {
    let mut b = http::Request::builder().method(method).uri(uri);
    for (n, v) in headers {
        b = b.header(*n, *v);
    }
    b.body(()).unwrap().into_parts().0
}

/// The head of a response with `status` and `headers`.
#[cfg(feature = "http")]
pub(crate) fn response_parts(status: u16, headers: &[(&str, &str)]) -> http::response::Parts {
    let mut b = http::Response::builder().status(status);
    for (n, v) in headers {
        b = b.header(*n, *v);
    }
    b.body(()).unwrap().into_parts().0
}
