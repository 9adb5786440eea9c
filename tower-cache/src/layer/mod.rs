//! The layers, one folder per strategy.

#[cfg(feature = "http")]
pub mod cache_aside;
pub mod future;
pub mod read_through;
pub mod refresh_ahead;
pub mod write;
pub mod write_behind;
pub mod write_through;
