//! The store's key layout, the same on a single node and on a Redis Cluster: entries spread over every slot, the namespace's invalidation keys together in one.
//!
//! For the prefix `P` (default `tc:`):
//!
//! | key | what | slot |
//! |---|---|---|
//! | `P` `e:{K}` | the entry of key `K` | hashed on `K` |
//! | `P` `x:{K}` | key `K`'s tombstone (its latest remove's version) | hashed on `K` |
//! | `P` `l:{K}` | key `K`'s load lease | hashed on `K` |
//! | `{P}v` | the namespace's invalidation counter | hashed on `P` |
//! | `{P}all` | the namespace-wide invalidation version | hashed on `P` |
//! | `{P}t:TAG` | tag `TAG`'s invalidation version | hashed on `P` |
//! | `P` `f:{F}:…` | existence filter `F`'s snapshot, log and epoch (see `filter.rs`) | hashed on `F` |
//! | `{P#N}r:K` | replica `N` (from 1) of hot key `K`'s entry (see `replicas.rs`) | hashed on `P#N` |
//! | `{P#N}q:K` | replica `N`'s tombstone | hashed on `P#N` |
//! | `{P#N}v` | copy `N` of the namespace's invalidation counter, beside replica `N` of every key | hashed on `P#N` |
//!
//! An entry's hash tag is its key (Redis hashes what stands between the
//! first `{` and the next `}`), so entries spread over every slot and
//! every master, and the keys kept per entry (its tombstone and its lease)
//! share its slot, so one script can touch all three. The namespace's keys share one slot, so the scripts that
//! invalidate or read versions touch one node. A prefix holds no `{` nor
//! `}`, so nothing in it changes which part of a key is hashed.

use crate::store::StoreError;

/// What closes a namespace prefix; a prefix may not contain it elsewhere.
const PREFIX_SEPARATOR: char = ':';

/// The keys of one namespace, the fixed ones made once.
#[derive(Debug, Clone)]
pub(super) struct Keys {
    prefix: String,
    /// `{P}v`.
    version: String,
    /// `{P}all`.
    all: String,
    /// `{P}t:`.
    tag_prefix: String,
}

impl Keys {
    /// The layout for `prefix` (given with or without its closing `:`),
    /// or why it cannot be one.
    pub(super) fn new(prefix: &str) -> Result<Self, StoreError> {
        let prefix = closed_prefix(prefix)?;
        Ok(Keys {
            version: format!("{{{prefix}}}v"),
            all: format!("{{{prefix}}}all"),
            tag_prefix: format!("{{{prefix}}}t:"),
            prefix,
        })
    }

    /// The namespace prefix, closed by `:`.
    pub(super) fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `P` `e:{K}`.
    pub(super) fn entry(&self, key: &str) -> String {
        self.family(b'e', key)
    }

    /// `P` `x:{K}`.
    pub(super) fn tombstone(&self, key: &str) -> String {
        self.family(b'x', key)
    }

    /// `P` `l:{K}`.
    pub(super) fn lease(&self, key: &str) -> String {
        self.family(b'l', key)
    }

    /// The keys of replica `n` (from 1) of `key`'s entry: the entry, its
    /// tombstone and a lease key the write and remove scripts look at
    /// (replicas are filled, never leased), all in the slot of counter
    /// copy `n` (`{P#n}`), so that a read of both is one `MGET`.
    pub(super) fn replica(&self, key: &str, n: usize) -> Family {
        let at = |kind: &str| format!("{{{}#{n}}}{kind}:{key}", self.prefix);
        Family {
            entry: at("r"),
            tombstone: at("q"),
            lease: at("m"),
        }
    }

    /// The keys of `key`'s own entry.
    pub(super) fn primary(&self, key: &str) -> Family {
        Family {
            entry: self.entry(key),
            tombstone: self.tombstone(key),
            lease: self.lease(key),
        }
    }

    /// `{P#n}v`: copy `n` (from 1) of the namespace's counter, in a slot of
    /// its own, beside replica `n` of every key. A namespace's own keys hash on a tag that ends with its
    /// closing `:`, these on one that ends with `#n`: no namespace's keys
    /// are these.
    pub(super) fn version_copy(&self, n: usize) -> String {
        format!("{{{}#{n}}}v", self.prefix)
    }

    /// `P` `kind:{K}`: a key of `K`'s own, hashed on `K`.
    fn family(&self, kind: u8, key: &str) -> String {
        let mut k = String::with_capacity(self.prefix.len() + 4 + key.len());
        k.push_str(&self.prefix);
        k.push(char::from(kind));
        k.push_str(":{");
        k.push_str(key);
        k.push('}');
        k
    }

    /// `{P}t:TAG`.
    pub(super) fn tag(&self, tag: &str) -> String {
        let mut k = String::with_capacity(self.tag_prefix.len() + tag.len());
        k.push_str(&self.tag_prefix);
        k.push_str(tag);
        k
    }

    /// `{P}all`.
    pub(super) fn all(&self) -> &str {
        &self.all
    }

    /// `{P}v`.
    pub(super) fn version(&self) -> &str {
        &self.version
    }
}

/// The keys kept for one entry, in one slot: what the write and remove
/// scripts touch.
#[derive(Debug, Clone)]
pub(super) struct Family {
    pub(super) entry: String,
    pub(super) tombstone: String,
    pub(super) lease: String,
}

/// `prefix` closed by the separator, or why it cannot be one.
fn closed_prefix(prefix: &str) -> Result<String, StoreError> {
    let name = prefix.strip_suffix(PREFIX_SEPARATOR).unwrap_or(prefix);
    if name.is_empty() || name.contains(PREFIX_SEPARATOR) {
        return Err(StoreError::Config(format!(
            "Redis key prefix {prefix:?} must be a non-empty name without \
             {PREFIX_SEPARATOR:?} (optionally ending with one), so that no \
             prefix is the start of another's keys"
        )));
    }
    if name.contains(['{', '}']) {
        return Err(StoreError::Config(format!(
            "Redis key prefix {prefix:?} may not contain '{{' or '}}': the \
             store puts hash tags of its own in its keys, so that a Redis \
             Cluster keeps each entry's keys and the namespace's keys \
             together"
        )));
    }
    Ok(format!("{name}{PREFIX_SEPARATOR}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_layout_of_the_default_prefix() {
        let keys = Keys::new("tc:").unwrap();
        assert_eq!(keys.entry("products/1"), "tc:e:{products/1}");
        assert_eq!(keys.tombstone("products/1"), "tc:x:{products/1}");
        assert_eq!(keys.lease("products/1"), "tc:l:{products/1}");
        assert_eq!(keys.version(), "{tc:}v");
        assert_eq!(keys.all(), "{tc:}all");
        assert_eq!(keys.tag("product:1"), "{tc:}t:product:1");
        assert_eq!(Keys::new("tc").unwrap().prefix(), "tc:");
    }

    #[test]
    fn prefixes_that_would_move_hash_tags_are_refused() {
        for bad in ["{tc}", "t{c", "tc}:", "", ":", "a:b"] {
            assert!(
                matches!(Keys::new(bad), Err(StoreError::Config(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn namespace_keys_share_a_slot_and_entries_do_not() {
        let keys = Keys::new("shop").unwrap();
        let slot = |k: &str| redis::cluster_routing::Slot::for_key(k);
        let ns = slot(keys.version());
        assert_eq!(slot(keys.all()), ns);
        assert_eq!(slot(&keys.tag("a")), ns);
        assert_eq!(slot(&keys.tag("zz")), ns);
        let slots: std::collections::HashSet<_> = (0..100)
            .map(|i| slot(&keys.entry(&format!("k{i}"))))
            .collect();
        assert!(slots.len() > 90, "{}", slots.len());
        let entry = slot(&keys.entry("k1"));
        assert_eq!(slot(&keys.tombstone("k1")), entry);
        assert_eq!(slot(&keys.lease("k1")), entry);
    }
}
