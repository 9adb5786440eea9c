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
    /// Durable mode: the log entries behind `write`, in order, each with
    /// its id and its own write.
    entries: Vec<(EntryId, Write<K, V>)>,
    /// Durable mode: every entry was appended by this process and has
    /// never been handed to a writer, so the entries may go out as one
    /// write. Writes read back from the log may have been applied already,
    /// alone or merged otherwise: each of them goes out as it is.
    fresh: bool,
}

/// Durable mode: a key's writes in a batch, as they go to the writer.
pub(super) enum Planned<K, V> {
    /// Fresh entries coalesced into one write that carries all their ids;
    /// it goes out as one write once the log holds it as one entry in
    /// their place, else as `parts`.
    Group {
        /// The coalesced write.
        write: Write<K, V>,
        /// The entries, each with its own write, in order.
        parts: Vec<(EntryId, Write<K, V>)>,
    },
    /// The entries one by one, in order, each with the ids its entry holds.
    Entries(Vec<(EntryId, Write<K, V>)>),
}

/// The writes taken off the queue since the last delivery: per key, the
/// last write (or, with a merge function, the merge of all of them), keys
/// in the order of their first write.
pub(super) struct Batch<K, V> {
    index: HashMap<String, usize>,
    writes: Vec<Coalesced<K, V>>,
    /// Writes added, before coalescing.
    items: usize,
}

impl<K, V> Default for Batch<K, V> {
    fn default() -> Self {
        Batch {
            index: HashMap::new(),
            writes: Vec::new(),
            items: 0,
        }
    }
}

impl<K, V> Batch<K, V> {
    /// Adds a write to `key` (the write's key in the cache's namespace):
    /// it replaces the key's earlier write, or with `merge` is merged into
    /// it. `live` when this process acknowledged it, not when it was read
    /// back from the durable log; durable mode: `entry`, its entry in the log.
    pub fn add(
        &mut self,
        key: String,
        write: Write<K, V>,
        merge: Option<&MergeFn<V>>,
        live: bool,
        entry: Option<EntryId>,
    ) where
        K: Clone,
        V: Clone,
    {
        let entry = entry.map(|id| (id, write.clone()));
        let fresh = live && entry.is_some();
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
            existing.fresh &= fresh;
            existing.entries.extend(entry);
        } else {
            self.index.insert(key.clone(), self.writes.len());
            self.writes.push(Coalesced {
                key,
                write: Write::new(write.key, write.value),
                live,
                entries: entry.into_iter().collect(),
                fresh,
            });
        }
    }

    /// Distinct keys.
    pub fn len(&self) -> usize {
        self.writes.len()
    }

    /// No write was added.
    pub fn is_empty(&self) -> bool {
        self.items == 0
    }

    /// Writes added, before coalescing.
    pub fn items(&self) -> usize {
        self.items
    }

    /// The coalesced writes, as the writer is given them.
    pub fn writes(&self) -> Vec<Write<K, V>>
    where
        K: Clone,
        V: Clone,
    {
        self.writes.iter().map(|c| c.write.clone()).collect()
    }

    /// Durable mode: per key, in order, what goes to the writer. A key's
    /// fresh entries coalesce into one write carrying all their ids; the
    /// entries of a key that holds a write read back from the log go out
    /// one by one, in order, each with the ids its entry holds.
    pub fn plan(&self) -> Vec<Planned<K, V>>
    where
        K: Clone,
        V: Clone,
    {
        self.writes
            .iter()
            .map(|c| {
                if c.fresh && c.entries.len() > 1 {
                    let ids = c
                        .entries
                        .iter()
                        .flat_map(|(_, w)| w.log_ids().iter().cloned())
                        .collect();
                    Planned::Group {
                        write: c.write.clone().with_log_ids(ids),
                        parts: c.entries.clone(),
                    }
                } else {
                    Planned::Entries(c.entries.clone())
                }
            })
            .collect()
    }

    /// The keys, in order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.writes.iter().map(|c| c.key.as_str())
    }

    /// Per key, how many of its writes this process acknowledged.
    pub fn live(&self) -> impl Iterator<Item = (&str, usize)> {
        self.writes.iter().map(|c| (c.key.as_str(), c.live))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn add(batch: &mut Batch<u64, i64>, key: u64, value: i64, merge: Option<&MergeFn<i64>>) {
        batch.add(
            format!("k:{key}"),
            Write::new(key, value),
            merge,
            true,
            None,
        );
    }

    /// Durable mode: a write of `value` to `key` in the log entry `id`,
    /// acknowledged here (`live`) or read back.
    fn add_entry(batch: &mut Batch<u64, i64>, key: u64, value: i64, id: &str, live: bool) {
        let merge: MergeFn<i64> = Arc::new(|a, b| a + b);
        let id = EntryId::new(id);
        let write = Write::new(key, value).with_log_ids(vec![id.clone()]);
        batch.add(format!("k:{key}"), write, Some(&merge), live, Some(id));
    }

    fn ids(write: &Write<u64, i64>) -> Vec<&str> {
        write.log_ids().iter().map(EntryId::as_str).collect()
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
        assert_eq!((batch.len(), batch.items()), (2, 3));
    }

    #[test]
    fn a_merge_function_folds_writes_in_order() {
        let merge: MergeFn<i64> = Arc::new(|a, b| a * 10 + b);
        let mut batch = Batch::default();
        for value in 1..=3 {
            add(&mut batch, 7, value, Some(&merge));
        }
        assert_eq!(batch.writes(), vec![Write::new(7, 123)]);
        assert_eq!(batch.items(), 3);
    }

    #[test]
    fn only_writes_acknowledged_here_count_as_live() {
        let mut batch = Batch::default();
        add_entry(&mut batch, 7, 1, "1-0", false);
        add_entry(&mut batch, 7, 1, "2-0", true);
        add_entry(&mut batch, 7, 1, "3-0", true);
        assert_eq!(batch.live().collect::<Vec<_>>(), vec![("k:7", 2)]);
        assert_eq!(batch.writes(), vec![Write::new(7, 3)]);
    }

    #[test]
    fn fresh_entries_of_a_key_coalesce_into_one_write_carrying_every_id() {
        let mut batch = Batch::default();
        add_entry(&mut batch, 7, 1, "1-0", true);
        add_entry(&mut batch, 8, 5, "2-0", true);
        add_entry(&mut batch, 7, 2, "3-0", true);
        let plan = batch.plan();
        let [Planned::Group { write, parts }, Planned::Entries(alone)] = plan.as_slice() else {
            panic!("one group for key 7, one entry for key 8");
        };
        assert_eq!((write.key, write.value), (7, 3));
        assert_eq!(ids(write), vec!["1-0", "3-0"]);
        let parts: Vec<_> = parts.iter().map(|(id, w)| (id.as_str(), w.value)).collect();
        assert_eq!(parts, vec![("1-0", 1), ("3-0", 2)]);
        let [(id, write)] = alone.as_slice() else {
            panic!("key 8 has one entry");
        };
        assert_eq!(
            (id.as_str(), ids(write), write.value),
            ("2-0", vec!["2-0"], 5)
        );
    }

    #[test]
    fn writes_read_back_from_the_log_go_out_one_by_one_in_order() {
        let mut batch = Batch::default();
        let merge: MergeFn<i64> = Arc::new(|a, b| a + b);
        // An entry that replaced two others carries their ids.
        let replaced =
            Write::new(7, 2).with_log_ids(vec![EntryId::new("1-0"), EntryId::new("2-0")]);
        batch.add(
            "k:7".into(),
            replaced,
            Some(&merge),
            false,
            Some(EntryId::new("5-0")),
        );
        add_entry(&mut batch, 7, 1, "6-0", false);
        let plan = batch.plan();
        let [Planned::Entries(entries)] = plan.as_slice() else {
            panic!("key 7's entries one by one");
        };
        let entries: Vec<_> = entries
            .iter()
            .map(|(id, w)| (id.as_str(), ids(w), w.value))
            .collect();
        assert_eq!(
            entries,
            vec![("5-0", vec!["1-0", "2-0"], 2), ("6-0", vec!["6-0"], 1)]
        );
    }
}
