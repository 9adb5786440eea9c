//! What a store does to share an [`ExistenceFilter`](super::ExistenceFilter)
//! between instances.

use futures_util::future::BoxFuture;

use crate::store::StoreError;

/// What names one shared filter: instances share a filter when they give
/// it the same name and build it with the same size, hashes and seed
/// (the store keeps filters of different shapes apart).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterSpec {
    /// The filter's name (`"products"`).
    pub name: String,
    /// Bits in the filter.
    pub num_bits: u64,
    /// Bits set per key.
    pub num_hashes: u32,
    /// The hash seed.
    pub seed: u128,
}

/// How far a copy has read the shared filter: the snapshot it took in
/// (its epoch; `None` before the first read) and how many keys of the log
/// written since that snapshot it applied.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogPosition {
    /// The snapshot's epoch; it moves each time the snapshot changes.
    pub epoch: Option<u64>,
    /// Keys of the log applied.
    pub offset: u64,
}

/// What the store answered: the keys' source hashes to insert, the whole
/// snapshot when it changed, and the position they bring the copy to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FilterUpdate {
    /// Source hashes of keys inserted elsewhere.
    pub hashes: Vec<u64>,
    /// The snapshot's bits, little-endian 64-bit words, when the epoch
    /// moved (empty: there is no snapshot yet).
    pub snapshot: Option<Vec<u8>>,
    /// The position reached.
    pub at: LogPosition,
}

/// A store that keeps a filter shared by several instances: a snapshot of
/// its bits, the union of what the instances published, and a log of the
/// keys inserted since, appended to atomically. Implemented by
/// [`RedisStore`](crate::store::RedisStore); every error makes the filter
/// answer "present" (fail-open), never "absent".
pub trait FilterShare: Send + Sync + 'static {
    /// Appends the source hashes of inserted keys to the log; answers the
    /// log's length in keys after it. Once it answers, every
    /// [`since`](Self::since) returns them (or a snapshot holding them).
    fn append<'a>(
        &'a self,
        spec: &'a FilterSpec,
        hashes: &'a [u64],
    ) -> BoxFuture<'a, Result<u64, StoreError>>;

    /// What was appended since `at`; the whole snapshot and log when the
    /// snapshot's epoch is not `at`'s.
    fn since<'a>(
        &'a self,
        spec: &'a FilterSpec,
        at: LogPosition,
    ) -> BoxFuture<'a, Result<FilterUpdate, StoreError>>;

    /// ORs `bits` (the whole local copy, little-endian 64-bit words) into
    /// the snapshot and moves its epoch; with `compact`, the copy holds
    /// the log up to that position, whose keys then leave the log (when
    /// the epoch is still the one named). Answers the new snapshot and the
    /// whole log.
    fn publish<'a>(
        &'a self,
        spec: &'a FilterSpec,
        bits: Vec<u8>,
        compact: Option<LogPosition>,
    ) -> BoxFuture<'a, Result<FilterUpdate, StoreError>>;
}
