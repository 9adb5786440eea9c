//! The errors of write-behind, each converting into [`tower::BoxError`].

use tower::BoxError;

/// The write-behind queue was shut down; the write was not taken.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the write-behind queue is shut down; the write was not taken")]
pub struct WriteBehindClosed;

/// The write could not be appended to the durable log (its backend down or
/// slow); it was not acknowledged and will not be delivered. The log's own
/// error is its [`source`](std::error::Error::source).
#[derive(Debug, thiserror::Error)]
#[error("write not acknowledged: the durable log is unavailable ({source})")]
pub struct DurableLogUnavailable {
    source: BoxError,
}

impl DurableLogUnavailable {
    pub(super) fn new(source: impl Into<BoxError>) -> Self {
        DurableLogUnavailable {
            source: source.into(),
        }
    }
}

/// The batch writer's error, as a [dead letter](super::DeadLetter) carries
/// it: it reads as the writer's own message, and the writer's error is its
/// [`source`](std::error::Error::source) (to downcast to the writer's type).
#[derive(Debug, thiserror::Error)]
#[error("{source}")]
pub struct WriterError {
    source: BoxError,
}

impl WriterError {
    pub(super) fn new(source: impl Into<BoxError>) -> Self {
        WriterError {
            source: source.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;

    #[test]
    fn errors_keep_their_cause_as_source_and_in_their_message() {
        let writer = WriterError::new(std::io::Error::other("disk full"));
        assert_eq!(writer.to_string(), "disk full");
        let cause = writer.source().expect("the writer's error");
        assert!(cause.downcast_ref::<std::io::Error>().is_some());

        let log = DurableLogUnavailable::new(std::io::Error::other("connection refused"));
        assert_eq!(
            log.to_string(),
            "write not acknowledged: the durable log is unavailable (connection refused)"
        );
        assert_eq!(log.source().unwrap().to_string(), "connection refused");
        let boxed: BoxError = log.into();
        assert!(boxed.downcast_ref::<DurableLogUnavailable>().is_some());
    }
}
