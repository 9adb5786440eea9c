//! The request type of the typed write layers.

use super::write_behind::EntryId;

/// A write of `value` under `key`: the request of
/// [`WriteThrough`](crate::WriteThrough) and
/// [`WriteBehind`](crate::WriteBehind), and what their writers receive.
///
/// In write-behind's [durable mode](crate::WriteBehindLayer::durable), a
/// write handed to the writer also carries the [log ids](Write::log_ids)
/// of the acknowledged writes it stands for, with which the writer applies
/// it exactly once.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Write<K, V> {
    /// What is written.
    pub key: K,
    /// The new value (or, with a merge function, the change).
    pub value: V,
    #[serde(skip)]
    log_ids: Vec<EntryId>,
}

impl<K, V> Write<K, V> {
    /// A write of `value` under `key`.
    pub fn new(key: K, value: V) -> Self {
        Write {
            key,
            value,
            log_ids: Vec::new(),
        }
    }

    /// Durable mode: the ids under which the durable log took the
    /// acknowledged writes this one stands for: one, or several when
    /// writes to the key were coalesced into it. They are stable: a write
    /// delivered again (after a failed batch, a restart, or a claim by
    /// another process) carries the ids it had. A writer that records them
    /// with the write's effect, in one transaction, and skips a write one
    /// of whose ids it has recorded already, applies every acknowledged
    /// write exactly once; see
    /// [`WriteBehindLayer::durable`](crate::WriteBehindLayer::durable).
    /// Empty outside durable mode.
    #[must_use]
    pub fn log_ids(&self) -> &[EntryId] {
        &self.log_ids
    }

    /// The write, standing for the log entries `ids`.
    pub(crate) fn with_log_ids(mut self, ids: Vec<EntryId>) -> Self {
        self.log_ids = ids;
        self
    }
}
