//! Latency histograms and how they are printed.

use std::time::Duration;

use hdrhistogram::Histogram;

/// A latency histogram in microseconds, 1 µs to 60 s, 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("constant histogram bounds are valid")
}

/// Records a duration (clamped into range).
pub fn record(histogram: &mut Histogram<u64>, elapsed: Duration) {
    let micros = (elapsed.as_micros() as u64).clamp(1, 60_000_000);
    let _ = histogram.record(micros);
}

/// `p50 … p99 … max` in milliseconds.
pub fn summary(histogram: &Histogram<u64>) -> String {
    let ms = |q: f64| histogram.value_at_quantile(q) as f64 / 1000.0;
    format!(
        "n={} p50={:.3}ms p90={:.3}ms p99={:.3}ms p99.9={:.3}ms max={:.3}ms",
        histogram.len(),
        ms(0.50),
        ms(0.90),
        ms(0.99),
        ms(0.999),
        histogram.max() as f64 / 1000.0
    )
}
