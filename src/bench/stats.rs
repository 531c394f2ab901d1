//! Latency samples and their summary (percentiles by rank over the sorted samples).

use serde::Serialize;

/// A summary of latency samples, in milliseconds.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Summary {
    pub count: usize,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

/// The sample at quantile `q` (nearest rank) of sorted samples.
fn rank(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

/// Summarise samples given in nanoseconds.
pub fn summarize(mut nanos: Vec<u64>) -> Summary {
    nanos.sort_unstable();
    let ms = |n: u64| n as f64 / 1e6;
    let count = nanos.len();
    let mean = if count == 0 {
        0.0
    } else {
        nanos.iter().map(|&n| n as f64).sum::<f64>() / count as f64 / 1e6
    };
    Summary {
        count,
        mean_ms: mean,
        p50_ms: ms(rank(&nanos, 0.5)),
        p99_ms: ms(rank(&nanos, 0.99)),
        p999_ms: ms(rank(&nanos, 0.999)),
        max_ms: ms(nanos.last().copied().unwrap_or(0)),
    }
}

/// Ratio a/b, 0 when b is 0.
pub fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 {
        a / b
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_by_rank() {
        let s = summarize((1..=1000).map(|i| i * 1_000_000).collect());
        assert_eq!(s.count, 1000);
        assert_eq!(s.p50_ms, 500.0);
        assert_eq!(s.p99_ms, 990.0);
        assert_eq!(s.p999_ms, 999.0);
        assert_eq!(s.max_ms, 1000.0);
        assert_eq!(summarize(vec![]).p99_ms, 0.0);
    }
}
