//! The synchronisation primitives of the engine's concurrent core
//! (single flight, invalidation generations), named in one place so that
//! the loom model (`tests/loom.rs`) checks the same code over loom's.

pub(crate) use std::sync::{Arc, Mutex, PoisonError, atomic};
