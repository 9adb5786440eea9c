//! Every interleaving, explored with loom, of the engine's concurrent core:
//! the single-flight map (`src/engine/flight.rs`) and the invalidation
//! generations that keep a load from storing over a remove
//! (`src/engine/invalidation.rs`). The modules are the library's own,
//! compiled here over loom's primitives; the few types they name from the
//! rest of the crate are stood in for below.

use loom::future::block_on;
use loom::sync::Mutex;
use loom::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use loom::thread;

/// What the modules take from `crate::sync`: loom's primitives.
mod sync {
    pub(crate) use loom::sync::{Arc, Mutex, atomic};
    pub(crate) use std::sync::PoisonError;
}

/// Stands in for the entry a load publishes.
mod entry {
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub(crate) struct Entry(pub(crate) u8);
}

/// Stands in for a failed load's error, as waiters see it.
#[derive(Clone, Debug)]
struct JoinedError;

#[allow(dead_code, reason = "the model uses part of the module")]
#[path = "../src/engine/flight.rs"]
mod flight;

#[allow(dead_code, reason = "the model uses part of the module")]
#[path = "../src/engine/invalidation.rs"]
mod invalidation;

use entry::Entry;
use flight::{FlightMap, Role, Shared};
use invalidation::Invalidations;
use sync::Arc;

const OLD: u8 = 1;
const NEW: u8 = 2;

fn stored(outcome: &Shared) -> Option<&Entry> {
    match outcome {
        Shared::Stored(entry) => Some(entry),
        _ => None,
    }
}

/// Two callers of one key: never two loads at once, and a caller that
/// waits gets the leader's value.
#[test]
fn one_load_at_a_time_and_waiters_get_its_value() {
    loom::model(|| {
        let map = Arc::new(FlightMap::default());
        let loading = Arc::new(AtomicUsize::new(0));
        let callers: Vec<_> = (0..2)
            .map(|_| {
                let (map, loading) = (map.clone(), loading.clone());
                thread::spawn(move || match FlightMap::join_or_lead(&map, "k") {
                    Role::Leader(mut guard) => {
                        assert_eq!(
                            loading.fetch_add(1, Ordering::SeqCst),
                            0,
                            "two loads at once"
                        );
                        loading.fetch_sub(1, Ordering::SeqCst);
                        guard.finish(Shared::Stored(Entry(NEW)));
                    }
                    Role::Waiter(flight) => {
                        let outcome = block_on(flight.wait());
                        assert_eq!(stored(&outcome), Some(&Entry(NEW)));
                    }
                })
            })
            .collect();
        for caller in callers {
            caller.join().expect("caller");
        }
        // The key is free again: the next caller leads.
        assert!(matches!(
            FlightMap::join_or_lead(&map, "k"),
            Role::Leader(_)
        ));
    });
}

/// A leader that stops without an outcome (its task was dropped) wakes
/// its waiter, which is not left waiting, and frees the key.
#[test]
fn a_dropped_leader_wakes_its_waiter_and_frees_the_key() {
    loom::model(|| {
        let map = Arc::new(FlightMap::default());
        let Role::Leader(guard) = FlightMap::join_or_lead(&map, "k") else {
            panic!("the first caller leads");
        };
        let waiter = {
            let map = map.clone();
            thread::spawn(move || match FlightMap::join_or_lead(&map, "k") {
                Role::Waiter(flight) => {
                    assert!(matches!(block_on(flight.wait()), Shared::Aborted));
                }
                Role::Leader(mut guard) => guard.finish(Shared::Pass),
            })
        };
        let leader = thread::spawn(move || drop(guard));
        leader.join().expect("leader");
        waiter.join().expect("waiter");
        assert!(matches!(
            FlightMap::join_or_lead(&map, "k"),
            Role::Leader(_)
        ));
    });
}

/// A remove forgets the load in flight; the caller after it leads a new
/// load, and the old leader finishing does not free the new load's key.
#[test]
fn a_forgotten_load_does_not_free_its_successor() {
    loom::model(|| {
        let map = Arc::new(FlightMap::default());
        let Role::Leader(mut first) = FlightMap::join_or_lead(&map, "k") else {
            panic!("the first caller leads");
        };
        let old = thread::spawn(move || first.finish(Shared::Stored(Entry(OLD))));
        let next = {
            let map = map.clone();
            thread::spawn(move || {
                map.forget("k");
                match FlightMap::join_or_lead(&map, "k") {
                    Role::Leader(guard) => guard,
                    Role::Waiter(_) => {
                        panic!("a caller after a remove waited for the load before it")
                    }
                }
            })
        };
        old.join().expect("old leader");
        let mut second = next.join().expect("new leader");
        // While the new load runs, callers wait for it.
        match FlightMap::join_or_lead(&map, "k") {
            Role::Waiter(flight) => {
                second.finish(Shared::Stored(Entry(NEW)));
                assert_eq!(stored(&block_on(flight.wait())), Some(&Entry(NEW)));
            }
            Role::Leader(_) => panic!("the old leader freed the new load's key"),
        }
    });
}

/// A load that read the origin before a write, racing with that write's
/// remove (or tag invalidation): whatever the order, the store does not
/// keep the old value.
fn a_load_never_stores_over(invalidate: fn(&Invalidations)) {
    loom::model(move || {
        // One slot, so that every run is the same (the slot a name takes
        // depends on a random hasher): the key and the tag share it, as two
        // names may in the library's table of 1,024.
        let inv = Arc::new(Invalidations::with_stripes(1));
        let origin = Arc::new(AtomicU8::new(OLD));
        let store: Arc<Mutex<Option<u8>>> = Arc::new(Mutex::new(None));
        let tags = vec!["t".to_owned()];
        let load = {
            let (inv, origin, store) = (inv.clone(), origin.clone(), store.clone());
            thread::spawn(move || {
                let generation = inv.snapshot();
                let value = origin.load(Ordering::SeqCst);
                block_on(inv.store_unless_invalidated(
                    generation,
                    "k",
                    &tags,
                    || async {
                        *store.lock().expect("store") = Some(value);
                        Ok::<(), ()>(())
                    },
                    || async {
                        *store.lock().expect("store") = None;
                        Ok(())
                    },
                ))
            })
        };
        let write = {
            let (inv, store) = (inv.clone(), store.clone());
            thread::spawn(move || {
                origin.store(NEW, Ordering::SeqCst);
                invalidate(&inv);
                *store.lock().expect("store") = None;
            })
        };
        write.join().expect("writer");
        let guarded = load.join().expect("loader");
        let kept = *store.lock().expect("store");
        assert_ne!(
            kept,
            Some(OLD),
            "the old value survived its remove ({guarded:?})"
        );
    });
}

#[test]
fn a_load_never_stores_over_a_key_remove() {
    a_load_never_stores_over(|inv| inv.key("k"));
}

#[test]
fn a_load_never_stores_over_a_tag_invalidation() {
    a_load_never_stores_over(|inv| inv.tag("t"));
}
