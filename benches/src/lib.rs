//! Benchmarks for tower-cache live in `benches/`; this crate has no code.
