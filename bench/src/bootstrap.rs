//! Paired bootstrap confidence intervals for the ratio of two policies' tail latencies (or
//! batch makespans) measured on the same traces.
//!
//! Both policies ran the same trace in each repetition, so the resampling is paired: a
//! resample draws repetitions with replacement, then, within each drawn repetition, request
//! positions with replacement, and takes the *same* draws for both policies. The interval
//! therefore carries the run-to-run variation (a busy machine, a slow broker) as well as the
//! sampling of the tail within a run, and cancels what the two share (the trace itself).

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Resamples per interval.
pub const RESAMPLES: usize = 1_000;
/// Two-sided coverage of the interval.
pub const COVERAGE: f64 = 0.95;

/// A ratio's 95% confidence interval.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Interval {
    /// Lower bound.
    pub low: f64,
    /// Upper bound.
    pub high: f64,
}

impl Interval {
    /// Whether the whole interval lies above 1 (the first policy is slower beyond noise).
    pub fn above_one(&self) -> bool {
        self.low > 1.0
    }

    /// Whether the whole interval lies below 1.
    pub fn below_one(&self) -> bool {
        self.high < 1.0
    }
}

/// Interval of `quantile(a) / quantile(b)`, where `a[r]` and `b[r]` are the latencies of
/// repetition `r` in trace order. `None` without data, or when the repetitions do not pair
/// (different counts, or a repetition of different lengths).
pub fn quantile_ratio(a: &[Vec<u64>], b: &[Vec<u64>], q: f64, seed: u64) -> Option<Interval> {
    paired_ratio(a, b, seed, |xs| quantile(xs, q) as f64)
}

/// Interval of `stat(a) / stat(b)` over paired resamples of the repetitions' latencies (see
/// [`quantile_ratio`] for the pairing).
pub fn paired_ratio(
    a: &[Vec<u64>],
    b: &[Vec<u64>],
    seed: u64,
    stat: impl Fn(&mut [u64]) -> f64,
) -> Option<Interval> {
    let paired = a.len() == b.len()
        && !a.is_empty()
        && a.iter()
            .zip(b)
            .all(|(x, y)| x.len() == y.len() && !x.is_empty());
    if !paired {
        return None;
    }
    let mut rng = StdRng::seed_from_u64(seed);
    let mut ratios = Vec::with_capacity(RESAMPLES);
    let (mut xa, mut xb) = (Vec::new(), Vec::new());
    for _ in 0..RESAMPLES {
        xa.clear();
        xb.clear();
        for _ in 0..a.len() {
            let r = rng.random_range(0..a.len());
            for _ in 0..a[r].len() {
                let i = rng.random_range(0..a[r].len());
                xa.push(a[r][i]);
                xb.push(b[r][i]);
            }
        }
        let below = stat(&mut xb);
        if below > 0.0 {
            ratios.push(stat(&mut xa) / below);
        }
    }
    interval(ratios)
}

/// The mean of `xs`; 0 when empty.
pub fn mean(xs: &mut [u64]) -> f64 {
    xs.iter().map(|&x| x as f64).sum::<f64>() / xs.len().max(1) as f64
}

/// Interval of `mean(a) / mean(b)` over repetitions paired by index (batch makespans).
pub fn mean_ratio(a: &[f64], b: &[f64], seed: u64) -> Option<Interval> {
    if a.len() != b.len() || a.is_empty() {
        return None;
    }
    let mut rng = StdRng::seed_from_u64(seed);
    let ratios = (0..RESAMPLES)
        .filter_map(|_| {
            let (mut sa, mut sb) = (0.0, 0.0);
            for _ in 0..a.len() {
                let r = rng.random_range(0..a.len());
                sa += a[r];
                sb += b[r];
            }
            (sb > 0.0).then(|| sa / sb)
        })
        .collect();
    interval(ratios)
}

/// The nearest-rank `q` quantile (sorts `xs`); 0 when empty.
pub fn quantile(xs: &mut [u64], q: f64) -> u64 {
    if xs.is_empty() {
        return 0;
    }
    xs.sort_unstable();
    let rank = (q * xs.len() as f64).ceil() as usize;
    xs[rank.clamp(1, xs.len()) - 1]
}

fn interval(mut ratios: Vec<f64>) -> Option<Interval> {
    if ratios.len() < RESAMPLES / 2 {
        return None;
    }
    ratios.sort_by(f64::total_cmp);
    let tail = (1.0 - COVERAGE) / 2.0;
    let at = |p: f64| ratios[((p * ratios.len() as f64) as usize).min(ratios.len() - 1)];
    Some(Interval {
        low: at(tail),
        high: at(1.0 - tail),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runs(reps: usize, n: u64, scale: u64, jitter: u64) -> Vec<Vec<u64>> {
        (0..reps as u64)
            .map(|r| {
                (0..n)
                    .map(|i| (100 + (i * 7919 + r * 104_729) % 1_000 + r * jitter) * scale)
                    .collect()
            })
            .collect()
    }

    /// A policy twice as slow on every request gets an interval around 2 that excludes 1;
    /// identical policies get an interval that contains 1.
    #[test]
    fn separates_a_real_difference_from_none() {
        let base = runs(3, 400, 1, 50);
        let slow = runs(3, 400, 2, 50);
        let i = quantile_ratio(&slow, &base, 0.99, 1).expect("paired");
        assert!(i.low > 1.9 && i.high < 2.1, "{i:?}");
        assert!(i.above_one());
        let same = quantile_ratio(&base, &base, 0.99, 1).expect("paired");
        assert!(same.low <= 1.0 && same.high >= 1.0, "{same:?}");
    }

    /// Repetitions that vary a lot from one to the next widen the interval.
    #[test]
    fn run_to_run_variation_widens_the_interval() {
        let calm = quantile_ratio(&runs(5, 300, 1, 0), &runs(5, 300, 1, 0), 0.5, 2);
        let noisy_a = runs(5, 300, 1, 0);
        let mut noisy_b = runs(5, 300, 1, 0);
        for (r, run) in noisy_b.iter_mut().enumerate() {
            for x in run.iter_mut() {
                *x = *x * (2 + r as u64) / 4;
            }
        }
        let noisy = quantile_ratio(&noisy_a, &noisy_b, 0.5, 2);
        let width = |i: Option<Interval>| i.map(|i| i.high - i.low).expect("paired");
        assert!(width(noisy) > 3.0 * width(calm).max(0.01));
    }

    /// Unpaired repetitions have no interval.
    #[test]
    fn unpaired_runs_have_none() {
        assert!(quantile_ratio(&runs(2, 10, 1, 0), &runs(3, 10, 1, 0), 0.99, 0).is_none());
        assert!(quantile_ratio(&runs(2, 10, 1, 0), &runs(2, 11, 1, 0), 0.99, 0).is_none());
        assert!(mean_ratio(&[1.0], &[], 0).is_none());
    }

    /// Makespans: a batch consistently 10% slower gets an interval around 1.1.
    #[test]
    fn makespan_ratio_is_paired_by_repetition() {
        let b = [1.0, 1.4, 0.9, 1.2];
        let a: Vec<f64> = b.iter().map(|x| x * 1.1).collect();
        let i = mean_ratio(&a, &b, 3).expect("paired");
        assert!(
            (i.low - 1.1).abs() < 1e-9 && (i.high - 1.1).abs() < 1e-9,
            "{i:?}"
        );
    }

    /// Nearest rank: the 0.5 quantile of 1..=4 is 2, the 0.99 quantile is the largest.
    #[test]
    fn nearest_rank_quantile() {
        assert_eq!(quantile(&mut [4, 1, 3, 2], 0.5), 2);
        assert_eq!(quantile(&mut [4, 1, 3, 2], 0.99), 4);
        assert_eq!(quantile(&mut [], 0.5), 0);
    }
}
