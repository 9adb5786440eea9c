//! Why a fetch produced no value: [`LoadError`] and the [`JoinedError`] waiters share.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;

/// Why a fetch produced no value.
#[derive(Debug)]
pub enum LoadError<E> {
    /// This caller's loader failed with its own error.
    Origin(E),
    /// The load this caller waited for failed; the message (and, for
    /// [`Loaded::Failed`](super::Loaded::Failed), the loader's bytes) are shared with every waiter.
    Joined(JoinedError),
    /// The load exceeded [`Policy::load_timeout`](super::Policy::load_timeout).
    Timeout,
    /// The load panicked or was cancelled.
    Aborted,
}

/// The shared failure of a load that several callers waited on.
#[derive(Debug, Clone)]
pub struct JoinedError {
    pub(crate) message: Arc<str>,
    pub(crate) payload: Option<Bytes>,
}

impl JoinedError {
    /// The loader's error message (the loader's error itself stays with
    /// the caller whose loader ran).
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Bytes a [`Loaded::Failed`](super::Loaded::Failed) result carried,
    /// for the layer to decode.
    pub fn payload(&self) -> Option<&Bytes> {
        self.payload.as_ref()
    }
}

impl fmt::Display for JoinedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the shared load failed: {}", self.message)
    }
}

impl std::error::Error for JoinedError {}

impl<E: fmt::Display> fmt::Display for LoadError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadError::Origin(e) => write!(f, "load failed: {e}"),
            LoadError::Joined(e) => e.fmt(f),
            LoadError::Timeout => f.write_str("load timed out"),
            LoadError::Aborted => f.write_str("load panicked or was cancelled"),
        }
    }
}

impl<E: fmt::Debug + fmt::Display> std::error::Error for LoadError<E> {}

impl<E> LoadError<E> {
    /// Converts into a [`tower::BoxError`], keeping the origin's own error
    /// as it was.
    pub fn into_box_error(self) -> tower::BoxError
    where
        E: Into<tower::BoxError>,
    {
        match self {
            LoadError::Origin(e) => e.into(),
            LoadError::Joined(e) => Box::new(e),
            LoadError::Timeout => Box::new(LoadError::<std::convert::Infallible>::Timeout),
            LoadError::Aborted => Box::new(LoadError::<std::convert::Infallible>::Aborted),
        }
    }
}
