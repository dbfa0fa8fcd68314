//! mend-bench: benchmarks and the relay load generator.
//!
//! Timing claims live here, never in tests: `cargo bench -p mend-bench` runs the criterion
//! benches, and the binaries print percentiles.

pub mod journal;

/// The next command-line argument parsed, or `default` when there is none.
pub fn arg<T: std::str::FromStr>(
    args: &mut impl Iterator<Item = String>,
    default: T,
) -> anyhow::Result<T>
where
    T::Err: std::error::Error + Send + Sync + 'static,
{
    Ok(args
        .next()
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(default))
}
