//! Which work runs inline, on the async runtime's own thread, instead of on a blocking thread.
//!
//! Handing work to the blocking pool and back costs two thread wake-ups, more than the work of
//! a small shard (a 500-word count takes tens of µs) or a small merge. Workers keep one
//! [`Inline`] for shards and one for merges. Work runs inline when:
//!
//! - its kind's time follows its size ([`DynKind::cost_follows_size`]);
//! - this process has timed at least [`MIN_SAMPLES`] of the kind's work on the blocking pool;
//! - [`MARGIN`] times the kind's average time per byte, times this work's bytes, is under the
//!   limit (the worker's `--inline-us`), and the work is at most [`MAX_INLINE_BYTES`].
//!
//! The average is exponentially weighted (1/[`WEIGHT`] per observation) over times measured
//! where the work runs (without the hand-off to a blocking thread). It shrugs off the odd shard
//! that the OS preempted on a busy machine, while one shard many times slower than the rest
//! moves it far enough to keep its kind on the blocking pool for a while. Inline work cannot be
//! stopped midway and blocks its runtime thread (a finalizer's lease renewal included), which
//! is why nothing runs inline before it has been timed. A panic inline is caught like one on
//! the pool.
//!
//! [`DynKind::cost_follows_size`]: crate::kind::DynKind::cost_follows_size

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

/// Pieces of a kind's work timed on the blocking pool before any of it may run inline.
pub const MIN_SAMPLES: u32 = 8;
/// Larger work (a shard's payload, a merge's parts) always goes to the blocking pool.
pub const MAX_INLINE_BYTES: usize = 256 * 1024;
/// Weight of the newest observation in the average rate is 1/`WEIGHT`.
const WEIGHT: f64 = 16.0;
/// Work runs inline only if this many times its predicted time is under the limit.
pub const MARGIN: f64 = 2.0;
/// Bytes below which work counts as this many when its rate is learned: tiny work's time
/// is mostly fixed cost, which would read as a high rate per byte.
const MIN_RATE_BYTES: usize = 64;

/// What a process has learned of each kind's time per byte, for one sort of work.
#[derive(Debug)]
pub struct Inline {
    limit: Duration,
    kinds: Mutex<HashMap<&'static str, Rate>>,
}

#[derive(Debug, Clone, Copy, Default)]
struct Rate {
    samples: u32,
    /// Exponentially weighted average of ns per byte.
    average: f64,
}

impl Inline {
    /// Run work expected to take under `limit` inline; `Duration::ZERO` never does.
    pub fn new(limit: Duration) -> Self {
        Inline {
            limit,
            kinds: Mutex::default(),
        }
    }

    /// Whether work of `kind` on `bytes` of input should run inline.
    pub fn admits(&self, kind: &str, cost_follows_size: bool, bytes: usize) -> bool {
        if !cost_follows_size || self.limit.is_zero() || bytes > MAX_INLINE_BYTES {
            return false;
        }
        let kinds = self.kinds.lock().unwrap_or_else(|e| e.into_inner());
        kinds.get(kind).is_some_and(|r| {
            r.samples >= MIN_SAMPLES
                && MARGIN * r.average * bytes.max(MIN_RATE_BYTES) as f64
                    <= self.limit.as_nanos() as f64
        })
    }

    /// Learn from work of `kind` on `bytes` of input that took `took`.
    pub fn observe(&self, kind: &'static str, bytes: usize, took: Duration) {
        let rate = took.as_nanos() as f64 / bytes.max(MIN_RATE_BYTES) as f64;
        let mut kinds = self.kinds.lock().unwrap_or_else(|e| e.into_inner());
        let r = kinds.entry(kind).or_default();
        r.average = if r.samples == 0 {
            rate
        } else {
            r.average + (rate - r.average) / WEIGHT
        };
        r.samples = r.samples.saturating_add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn learned(limit_us: u64, ns_per_byte: u64) -> Inline {
        let i = Inline::new(Duration::from_micros(limit_us));
        for _ in 0..MIN_SAMPLES {
            i.observe("k", 1000, Duration::from_nanos(1000 * ns_per_byte));
        }
        i
    }

    /// Nothing runs inline before the kind has been timed often enough.
    #[test]
    fn unknown_kinds_go_to_the_pool() {
        let i = Inline::new(Duration::from_micros(200));
        for _ in 1..MIN_SAMPLES {
            i.observe("k", 1000, Duration::from_micros(1));
        }
        assert!(!i.admits("k", true, 1000));
        i.observe("k", 1000, Duration::from_micros(1));
        assert!(i.admits("k", true, 1000));
        assert!(!i.admits("other", true, 1000));
    }

    /// A shard predicted over the limit, too large, of a kind whose cost is not in its size,
    /// or with inlining off, goes to the pool.
    #[test]
    fn only_small_predictable_shards_run_inline() {
        let i = learned(200, 10); // 10 ns per byte, twice: 10,000 bytes reach the limit
        assert!(i.admits("k", true, 10_000));
        assert!(!i.admits("k", true, 10_001));
        assert!(!i.admits("k", false, 100));
        assert!(!learned(0, 10).admits("k", true, 100));
        let fast = learned(1_000_000, 0);
        assert!(!fast.admits("k", true, MAX_INLINE_BYTES + 1));
    }

    /// One shard far slower than the rest sends its kind to the pool at once and is forgotten
    /// only gradually; one merely slowed down (preempted) does not.
    #[test]
    fn a_slow_shard_is_remembered_a_preempted_one_is_not() {
        let i = learned(200, 10);
        i.observe("k", 1000, Duration::from_micros(40)); // 4x: preempted
        assert!(i.admits("k", true, 1000));
        i.observe("k", 1000, Duration::from_millis(5)); // 500x
        assert!(!i.admits("k", true, 1000));
        for _ in 0..16 {
            i.observe("k", 1000, Duration::from_micros(10));
        }
        assert!(!i.admits("k", true, 1000), "forgotten too soon");
        for _ in 0..200 {
            i.observe("k", 1000, Duration::from_micros(10));
        }
        assert!(i.admits("k", true, 1000));
    }
}
