//! Latency summaries (nearest-rank percentiles).

use std::time::Duration;

/// Percentiles of a sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Summary {
    /// Number of samples.
    pub count: usize,
    /// Median.
    pub p50: Duration,
    /// 99th percentile.
    pub p99: Duration,
    /// 99.9th percentile.
    pub p999: Duration,
    /// Largest sample.
    pub max: Duration,
}

/// The nearest-rank `p` percentile (0 < p <= 1) of sorted samples.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    let idx = rank.clamp(1, sorted.len()) - 1;
    sorted.get(idx).copied().unwrap_or_default()
}

impl Summary {
    /// Sorts `samples` and summarizes them.
    pub fn of(samples: &mut [Duration]) -> Self {
        samples.sort_unstable();
        Self {
            count: samples.len(),
            p50: percentile(samples, 0.50),
            p99: percentile(samples, 0.99),
            p999: percentile(samples, 0.999),
            max: samples.last().copied().unwrap_or_default(),
        }
    }
}

/// `1.23ms` / `456µs`.
pub fn fmt(d: Duration) -> String {
    if d >= Duration::from_millis(1) {
        format!("{:.2}ms", d.as_secs_f64() * 1000.0)
    } else {
        format!("{}µs", d.as_micros())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let mut v: Vec<Duration> = (1..=1000).rev().map(Duration::from_micros).collect();
        let s = Summary::of(&mut v);
        assert_eq!(s.count, 1000);
        assert_eq!(s.p50, Duration::from_micros(500));
        assert_eq!(s.p99, Duration::from_micros(990));
        assert_eq!(s.p999, Duration::from_micros(999));
        assert_eq!(s.max, Duration::from_micros(1000));
        assert_eq!(Summary::of(&mut []), Summary::default());
        assert_eq!(
            percentile(&[Duration::from_secs(1)], 0.999),
            Duration::from_secs(1)
        );
        assert_eq!(fmt(Duration::from_micros(1500)), "1.50ms");
        assert_eq!(fmt(Duration::from_micros(15)), "15µs");
    }
}
