//! The layers, one folder per strategy.

pub mod read_through;
