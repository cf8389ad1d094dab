//! How long a shard spends outside its kind's code, and how much that grows with load.
//!
//! Every shard pays a *transport* latency on top of its processing: the publish, the broker,
//! the worker's delivery, the result write in Redis and the completion event. The manager
//! measures it on shards sent to an engine with a free slot (send to completion minus the
//! worker's processing time) and keeps two robust numbers:
//!
//! - **typical**: a streaming median, which a burst of outliers (a shard that queued behind
//!   another one after all) moves by at most [`STEP`] per sample, smoothed by an average of
//!   weight [`SMOOTHING`] so that its own jitter is not read as load;
//! - **base**: the lowest typical value seen lately, drifting up towards the typical one with
//!   time constant [`BASE_DRIFT`]: the latency of the shared path when it is not busy.
//!
//! Their ratio reads as the utilisation of that shared path, as in an M/M/1 queue whose
//! latency is `base / (1 - ρ)`: [`Latency::load`] is `1 - base / typical`. The shard-count
//! model uses it to predict how much slower the path gets if requests are cut into more
//! shards ([`crate::plan::Model`]).

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// Relative step of the streaming median per sample.
pub const STEP: f64 = 0.02;
/// Weight of the newest median in its smoothed value. With [`STEP`], a steady latency reads
/// as a load of about 0.02 to 0.08 (simulated at 100 and 1,000 samples a second).
pub const SMOOTHING: f64 = 0.02;
/// Time constant with which the base latency rises towards the typical one.
pub const BASE_DRIFT: Duration = Duration::from_secs(20);
/// Highest utilisation the load estimate reports.
pub const MAX_LOAD: f64 = 0.95;
/// Samples before the estimate is used.
pub const MIN_SAMPLES: u32 = 10;

/// Transport latency of shards, µs: its median and its unloaded base.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
pub struct Latency {
    median: f64,
    typical: f64,
    base: f64,
    seen: u32,
    #[serde(skip)]
    updated: Option<Instant>,
}

impl Latency {
    /// Learn one shard's transport latency, µs, measured at `now`.
    pub fn observe(&mut self, micros: f64, now: Instant) {
        if !micros.is_finite() {
            return;
        }
        let x = micros.max(1.0);
        if self.seen == 0 {
            self.median = x;
            self.typical = x;
            self.base = x;
        } else {
            self.median *= if x < self.median {
                1.0 - STEP
            } else {
                1.0 + STEP
            };
            self.typical += SMOOTHING * (self.median - self.typical);
            let dt = self
                .updated
                .map_or(0.0, |t| now.saturating_duration_since(t).as_secs_f64());
            let drifted = self.base * (dt / BASE_DRIFT.as_secs_f64()).exp();
            self.base = drifted.min(self.typical);
        }
        self.updated = Some(now);
        self.seen = self.seen.saturating_add(1);
    }

    /// The unloaded latency, µs, once enough samples were seen.
    pub fn base(&self) -> Option<f64> {
        (self.seen >= MIN_SAMPLES).then_some(self.base)
    }

    /// The (smoothed) median latency, µs, once enough samples were seen.
    pub fn typical(&self) -> Option<f64> {
        (self.seen >= MIN_SAMPLES).then_some(self.typical)
    }

    /// Estimated utilisation of the shared path, in `0..=MAX_LOAD` (0 before enough samples).
    pub fn load(&self) -> f64 {
        match (self.base(), self.typical()) {
            (Some(b), Some(t)) if t > 0.0 => (1.0 - b / t).clamp(0.0, MAX_LOAD),
            _ => 0.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fed(samples: impl IntoIterator<Item = f64>, start: Instant, every: Duration) -> Latency {
        let mut l = Latency::default();
        for (i, x) in samples.into_iter().enumerate() {
            l.observe(x, start + every * i as u32);
        }
        l
    }

    /// A steady latency reads as an idle path; nothing is reported before enough samples.
    #[test]
    fn steady_latency_is_no_load() {
        let t0 = Instant::now();
        assert_eq!(fed([2_000.0; 5], t0, Duration::from_millis(1)).base(), None);
        let l = fed([2_000.0; 200], t0, Duration::from_millis(1));
        assert!((l.typical().unwrap_or(0.0) - 2_000.0).abs() < 150.0);
        assert!(l.load() < 0.1, "{}", l.load());
    }

    /// A noisy but steady latency reads as a lightly loaded path: the median's own jitter is
    /// smoothed away before the lowest value is taken as the base.
    #[test]
    fn noisy_steady_latency_is_little_load() {
        let t0 = Instant::now();
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let samples = (0..5_000).map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let u = (x >> 11) as f64 / (1u64 << 53) as f64;
            2_000.0 * (u - 0.5).exp()
        });
        let l = fed(samples, t0, Duration::from_millis(1));
        assert!(l.load() < 0.15, "{}", l.load());
    }

    /// Latency that doubles after a quiet period reads as a path about half busy.
    #[test]
    fn rising_latency_reads_as_load() {
        let t0 = Instant::now();
        let l = fed(
            std::iter::repeat_n(2_000.0, 200).chain(std::iter::repeat_n(4_000.0, 200)),
            t0,
            Duration::from_millis(1),
        );
        assert!((0.4..0.6).contains(&l.load()), "{}", l.load());
    }

    /// Rare outliers barely move the median (a mean would follow them).
    #[test]
    fn outliers_do_not_move_the_median() {
        let t0 = Instant::now();
        let samples = (0..500).map(|i| if i % 10 == 0 { 150_000.0 } else { 2_000.0 });
        let l = fed(samples, t0, Duration::from_millis(1));
        let typical = l.typical().unwrap_or(0.0);
        assert!(typical < 2_500.0, "{typical}");
    }

    /// The base forgets an old low point: after long enough, a higher steady latency is the
    /// new normal.
    #[test]
    fn base_drifts_up_to_a_lasting_level() {
        let t0 = Instant::now();
        let l = fed(
            std::iter::repeat_n(2_000.0, 100).chain(std::iter::repeat_n(4_000.0, 400)),
            t0,
            BASE_DRIFT / 20,
        );
        assert!(l.load() < 0.1, "{}", l.load());
    }

    /// Garbage is ignored.
    #[test]
    fn ignores_non_finite_samples() {
        let mut l = Latency::default();
        l.observe(f64::NAN, Instant::now());
        assert_eq!(l, Latency::default());
    }
}
