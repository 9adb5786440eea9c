//! A batch: the writes of each key coalesced into one, keys in order.

use std::collections::HashMap;
use std::sync::Arc;

use super::EntryId;
use crate::layer::write::Write;

/// Combines an earlier and a later value of one key.
pub(super) type MergeFn<V> = Arc<dyn Fn(&V, &V) -> V + Send + Sync>;

/// One key's writes in a batch, coalesced.
struct Coalesced<K, V> {
    key: String,
    write: Write<K, V>,
    /// How many of its writes this process acknowledged (and counts as
    /// pending); writes read back from the durable log are not.
    live: usize,
}

/// The writes taken off the queue since the last delivery: per key, the
/// last write (or, with a merge function, the merge of all of them), keys
/// in the order of their first write.
pub(super) struct Batch<K, V> {
    index: HashMap<String, usize>,
    writes: Vec<Coalesced<K, V>>,
    /// Writes added, before coalescing.
    items: usize,
    /// Durable mode: the log entries the batch holds.
    logged: Vec<EntryId>,
}

impl<K, V> Default for Batch<K, V> {
    fn default() -> Self {
        Batch {
            index: HashMap::new(),
            writes: Vec::new(),
            items: 0,
            logged: Vec::new(),
        }
    }
}

impl<K, V> Batch<K, V> {
    /// Adds a write to `key` (the write's key in the cache's namespace):
    /// it replaces the key's earlier write, or with `merge` is merged into
    /// it. `live` when this process acknowledged it, not when it was read
    /// back from the durable log.
    pub fn add(&mut self, key: String, write: Write<K, V>, merge: Option<&MergeFn<V>>, live: bool) {
        let live = usize::from(live);
        self.items += 1;
        if let Some(&i) = self.index.get(&key) {
            let existing = &mut self.writes[i];
            existing.write.value = match merge {
                Some(merge) => merge(&existing.write.value, &write.value),
                None => write.value,
            };
            existing.write.key = write.key;
            existing.live += live;
        } else {
            self.index.insert(key.clone(), self.writes.len());
            self.writes.push(Coalesced { key, write, live });
        }
    }

    /// Durable mode: records that the batch holds the log entry `id`.
    pub fn log(&mut self, id: EntryId) {
        self.logged.push(id);
    }

    /// Distinct keys.
    pub fn len(&self) -> usize {
        self.writes.len()
    }

    /// No write was added.
    pub fn is_empty(&self) -> bool {
        self.items == 0
    }

    /// Writes folded into an earlier write to the same key.
    pub fn coalesced(&self) -> usize {
        self.items - self.writes.len()
    }

    /// The coalesced writes, as the writer is given them.
    pub fn writes(&self) -> Vec<Write<K, V>>
    where
        K: Clone,
        V: Clone,
    {
        self.writes.iter().map(|c| c.write.clone()).collect()
    }

    /// The keys, in order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.writes.iter().map(|c| c.key.as_str())
    }

    /// Per key, how many of its writes this process acknowledged.
    pub fn live(&self) -> impl Iterator<Item = (&str, usize)> {
        self.writes.iter().map(|c| (c.key.as_str(), c.live))
    }

    /// Durable mode: the log entries the batch holds.
    pub fn logged(&self) -> &[EntryId] {
        &self.logged
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn add(batch: &mut Batch<u64, i64>, key: u64, value: i64, merge: Option<&MergeFn<i64>>) {
        batch.add(format!("k:{key}"), Write::new(key, value), merge, true);
    }

    #[test]
    fn the_last_write_to_a_key_wins_and_keys_keep_their_first_position() {
        let mut batch = Batch::default();
        assert!(batch.is_empty());
        add(&mut batch, 1, 10, None);
        add(&mut batch, 2, 20, None);
        add(&mut batch, 1, 11, None);
        assert_eq!(batch.writes(), vec![Write::new(1, 11), Write::new(2, 20)]);
        assert_eq!(batch.keys().collect::<Vec<_>>(), vec!["k:1", "k:2"]);
        assert_eq!((batch.len(), batch.coalesced()), (2, 1));
    }

    #[test]
    fn a_merge_function_folds_writes_in_order() {
        let merge: MergeFn<i64> = Arc::new(|a, b| a * 10 + b);
        let mut batch = Batch::default();
        for value in 1..=3 {
            add(&mut batch, 7, value, Some(&merge));
        }
        assert_eq!(batch.writes(), vec![Write::new(7, 123)]);
        assert_eq!(batch.coalesced(), 2);
    }

    #[test]
    fn only_writes_acknowledged_here_count_as_live() {
        let merge: MergeFn<i64> = Arc::new(|a, b| a + b);
        let mut batch = Batch::default();
        batch.add("k:7".into(), Write::new(7, 1), Some(&merge), false);
        batch.log(EntryId::new("1-0"));
        add(&mut batch, 7, 1, Some(&merge));
        add(&mut batch, 7, 1, Some(&merge));
        assert_eq!(batch.live().collect::<Vec<_>>(), vec![("k:7", 2)]);
        assert_eq!(batch.writes(), vec![Write::new(7, 3)]);
        assert_eq!(batch.logged(), &[EntryId::new("1-0")]);
    }
}
