//! mend-bench: benchmarks and the relay load generator.
//!
//! Timing claims live here, never in tests: `cargo bench -p mend-bench` runs the criterion
//! benches, and the binaries print percentiles.

pub mod journal;
