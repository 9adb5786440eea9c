//! The request type of the typed write layers.

/// A write of `value` under `key`: the request of
/// [`WriteThrough`](crate::WriteThrough) and
/// [`WriteBehind`](crate::WriteBehind), and what their writers receive.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Write<K, V> {
    /// What is written.
    pub key: K,
    /// The new value (or, with a merge function, the change).
    pub value: V,
}

impl<K, V> Write<K, V> {
    /// A write of `value` under `key`.
    pub fn new(key: K, value: V) -> Self {
        Write { key, value }
    }
}
