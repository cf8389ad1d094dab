//! `synthetic`: a declared cost per unit of size, for load experiments.
//!
//! The input says how many units of work there are and what each costs in microseconds; a
//! shard sleeps (or spins the CPU, with `spin: true`) for its units' cost and returns a digest
//! of its unit numbers, so the merged output still proves every unit ran exactly once.
//!
//! Two knobs exist for benchmarks:
//! - `noise_seed` multiplies each shard's cost by an exponential factor (mean 1) derived from
//!   the seed and the shard's first unit, so every run of the same trace faces identical work
//!   (common random numbers);
//! - an engine's [`Speed`] divides the cost, and can change while the worker runs, to model a
//!   slower or slowing machine;
//! - an engine's [`Stragglers`] make a random share of the shards it runs several times slower,
//!   to model pauses and noisy neighbours: a property of the run, not of the shard, so another
//!   copy of the same shard is most likely not slow.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::{Kind, KindError, Stop};

/// Longest a single shard may be asked to run (10 minutes), to refuse absurd inputs.
pub const MAX_SHARD_COST_US: u64 = 600_000_000;

/// How often a sleeping shard checks its [`Stop`] flag.
const STOP_CHECK: Duration = Duration::from_millis(20);

/// Sleeps or spins for a declared cost.
#[derive(Debug, Clone, Default)]
pub struct Synthetic {
    speed: Speed,
    stragglers: Option<Stragglers>,
    remote: Option<Remote>,
    /// Shards started so far, by this value and its clones: the draw of the next straggler.
    runs: Arc<AtomicU64>,
}

impl Synthetic {
    /// A synthetic kind whose shards run at `speed` (shared: changing it later takes effect on
    /// the next shard).
    pub fn with_speed(speed: Speed) -> Self {
        Synthetic {
            speed,
            ..Synthetic::default()
        }
    }

    /// Make a random share of the shards this engine runs slower (see [`Stragglers`]).
    #[must_use]
    pub fn with_stragglers(mut self, stragglers: Stragglers) -> Self {
        self.stragglers = Some(stragglers);
        self
    }

    /// Make shards whose data this engine does not hold slower (see [`Remote`]).
    #[must_use]
    pub fn with_remote(mut self, remote: Remote) -> Self {
        self.remote = Some(remote);
        self
    }

    /// The factor a shard's cost is multiplied by for where its data lives.
    fn reach(&self, span: &Span) -> f64 {
        match (&self.remote, span.partition) {
            (Some(r), Some(p)) if !r.held.contains(&p) => r.factor,
            _ => 1.0,
        }
    }

    /// Shards started so far by this kind and its clones (those stopped early included): a
    /// benchmark's count of executions.
    pub fn runs(&self) -> u64 {
        self.runs.load(Ordering::Relaxed)
    }

    /// The factor the cost of the shard started as number `run` is multiplied by:
    /// [`Stragglers::factor`] for a straggler, else 1.
    fn straggle(&self, run: u64) -> f64 {
        let Some(s) = self.stragglers else {
            return 1.0;
        };
        let u = (mix(s.seed ^ mix(run)) >> 11) as f64 / (1u64 << 53) as f64;
        if u < s.share { s.factor } else { 1.0 }
    }
}

/// Random stragglers on one engine: each shard it runs is, with probability `share`, `factor`
/// times slower. Draws are seeded per engine and follow the order in which it runs shards.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stragglers {
    /// Share of shards that straggle (0.01 is 1%).
    pub share: f64,
    /// How many times slower a straggler runs.
    pub factor: f64,
    /// Seed of the draws.
    pub seed: u64,
}

/// Data locality on one engine: a shard whose [`Span::partition`] is not among `held` reads
/// its data remotely and costs `factor` times more (a cache miss), to model the data-locality
/// workload (where a request's locality key names the same partition). Shards without a
/// partition cost the same everywhere.
#[derive(Debug, Clone, PartialEq)]
pub struct Remote {
    /// The partitions this engine holds.
    pub held: std::collections::BTreeSet<u32>,
    /// How many times more a shard of a key it does not hold costs.
    pub factor: f64,
}

/// How fast an engine runs synthetic work: a shard's cost is divided by it. Cheap to clone;
/// clones share the value.
#[derive(Debug, Clone)]
pub struct Speed(Arc<AtomicU64>);

impl Default for Speed {
    fn default() -> Self {
        Speed::new(1.0)
    }
}

impl Speed {
    /// Slowest speed accepted; lower values are raised to it.
    pub const MIN: f64 = 0.001;

    /// A speed of `factor` (1.0 is nominal).
    pub fn new(factor: f64) -> Self {
        let s = Speed(Arc::new(AtomicU64::new(0)));
        s.set(factor);
        s
    }

    /// Change the speed; non-finite or tiny values become [`Speed::MIN`].
    pub fn set(&self, factor: f64) {
        let f = if factor.is_finite() {
            factor.max(Self::MIN)
        } else {
            Self::MIN
        };
        self.0.store(f.to_bits(), Ordering::Relaxed);
    }

    /// The current speed.
    pub fn get(&self) -> f64 {
        f64::from_bits(self.0.load(Ordering::Relaxed))
    }
}

/// Input of a synthetic request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Work {
    /// Units of work.
    pub units: u64,
    /// Microseconds per unit.
    #[serde(default = "default_unit_cost")]
    pub unit_cost_us: u64,
    /// Burn CPU instead of sleeping.
    #[serde(default)]
    pub spin: bool,
    /// Seed of a per-shard exponential cost factor (mean 1); none means exact costs.
    #[serde(default)]
    pub noise_seed: Option<u64>,
    /// The data partition the work reads: an engine that does not hold it runs it
    /// [`Remote::factor`] times slower (see [`Synthetic::with_remote`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<u32>,
}

fn default_unit_cost() -> u64 {
    1_000
}

/// One shard: units `start..end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Span {
    /// First unit.
    pub start: u64,
    /// One past the last unit.
    pub end: u64,
    /// Microseconds per unit.
    pub unit_cost_us: u64,
    /// Burn CPU instead of sleeping.
    pub spin: bool,
    /// Seed of the shard's cost factor.
    #[serde(default)]
    pub noise_seed: Option<u64>,
    /// The data partition it reads ([`Work::partition`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<u32>,
}

impl Span {
    /// The shard's nominal cost at speed 1, noise included.
    pub fn cost_us(&self) -> f64 {
        let units = self.end.saturating_sub(self.start);
        let base = units.saturating_mul(self.unit_cost_us) as f64;
        match self.noise_seed {
            Some(seed) => base * exponential(mix(seed ^ mix(self.start))),
            None => base,
        }
    }
}

/// An exponential variate with mean 1 from 64 random bits.
fn exponential(bits: u64) -> f64 {
    // 53 bits into (0, 1]: never 0, so the logarithm is finite (at most about 36.7).
    let u = ((bits >> 11) + 1) as f64 / (1u64 << 53) as f64;
    -u.ln()
}

/// Units done and their digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tally {
    /// Units processed.
    pub units: u64,
    /// Wrapping sum of a mix of every unit number: equal only if every unit ran once.
    pub digest: u64,
}

impl Kind for Synthetic {
    type Input = Work;
    type Shard = Span;
    type Partial = Tally;
    type Output = Tally;

    /// Pure: a shard's result depends on the shard alone.
    fn hedge_safe(&self) -> bool {
        true
    }
    fn name(&self) -> &'static str {
        "synthetic"
    }

    fn size(&self, input: &Work) -> u64 {
        input.units
    }

    fn shard_size_hint(&self) -> u64 {
        10
    }

    /// The cost is in the payload (`unit_cost_us`), not in its size.
    fn cost_follows_size(&self) -> bool {
        false
    }

    fn split(&self, input: Work, n: usize) -> Vec<Span> {
        let n = n.max(1) as u64;
        (0..n)
            .map(|i| Span {
                start: input.units * i / n,
                end: input.units * (i + 1) / n,
                unit_cost_us: input.unit_cost_us,
                spin: input.spin,
                noise_seed: input.noise_seed,
                partition: input.partition,
            })
            .collect()
    }

    fn process(&self, span: Span) -> Result<Tally, KindError> {
        self.process_with(span, &Stop::new())
    }

    fn process_with(&self, span: Span, stop: &Stop) -> Result<Tally, KindError> {
        let units = span.end.saturating_sub(span.start);
        let run = self.runs.fetch_add(1, Ordering::Relaxed);
        let cost = (span.cost_us() * self.straggle(run) * self.reach(&span) / self.speed.get())
            .round() as u64;
        if cost > MAX_SHARD_COST_US {
            return Err(KindError::Failed(format!(
                "synthetic shard would run {cost} µs, over the {MAX_SHARD_COST_US} µs limit"
            )));
        }
        let until = Instant::now() + Duration::from_micros(cost);
        loop {
            stop.check()?;
            let now = Instant::now();
            if now >= until {
                break;
            }
            if span.spin {
                std::hint::spin_loop();
            } else {
                std::thread::sleep((until - now).min(STOP_CHECK));
            }
        }
        let digest = (span.start..span.end).fold(0u64, |acc, u| acc.wrapping_add(mix(u)));
        Ok(Tally { units, digest })
    }

    fn merge(&self, parts: Vec<Tally>) -> Result<Tally, KindError> {
        Ok(parts.iter().fold(
            Tally {
                units: 0,
                digest: 0,
            },
            |acc, p| Tally {
                units: acc.units + p.units,
                digest: acc.digest.wrapping_add(p.digest),
            },
        ))
    }
}

/// splitmix64's finaliser: a cheap bijective scramble.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kind::testing::run_sharded;
    use quickcheck::quickcheck;

    quickcheck! {
        /// Any number of shards covers every unit exactly once.
        fn sharded_equals_unsharded(units: u16, n: u8) -> bool {
            if units == 0 { return true; }
            let work = Work { units: u64::from(units), unit_cost_us: 0, spin: false, noise_seed: Some(7), partition: None };
            let n = usize::from(n).clamp(1, usize::from(units));
            let v = crate::message::to_named_value(&work).expect("value");
            run_sharded(Synthetic::default(), v.clone(), n) == run_sharded(Synthetic::default(), v, 1)
        }
    }

    /// A shard whose declared cost is absurd fails instead of blocking a worker for hours.
    #[test]
    fn refuses_absurd_costs() {
        let span = Span {
            start: 0,
            end: 1_000_000,
            unit_cost_us: 1_000_000,
            spin: false,
            noise_seed: None,
            partition: None,
        };
        assert!(Synthetic::default().process(span).is_err());
    }

    /// A shard whose key the engine does not hold costs the remote factor; a held key, a
    /// shard without a key, or an engine without a locality model cost the same.
    #[test]
    fn remote_shards_cost_more() {
        let keyed = |partition| Span {
            start: 0,
            end: 1,
            unit_cost_us: 1,
            spin: false,
            noise_seed: None,
            partition,
        };
        let engine = Synthetic::default().with_remote(Remote {
            held: [0].into(),
            factor: 4.0,
        });
        assert_eq!(engine.reach(&keyed(Some(1))), 4.0);
        assert_eq!(engine.reach(&keyed(Some(0))), 1.0);
        assert_eq!(engine.reach(&keyed(None)), 1.0);
        assert_eq!(Synthetic::default().reach(&keyed(Some(1))), 1.0);
        let work = Work {
            units: 4,
            unit_cost_us: 1,
            spin: false,
            noise_seed: None,
            partition: Some(1),
        };
        assert!(engine.split(work, 2).iter().all(|s| s.partition == Some(1)));
    }

    /// Noise is a pure function of the seed and the shard, with mean close to 1.
    #[test]
    fn noise_is_reproducible_with_mean_one() {
        let span = |start| Span {
            start,
            end: start + 1,
            unit_cost_us: 1_000,
            spin: false,
            noise_seed: Some(42),
            partition: None,
        };
        assert_eq!(span(5).cost_us(), span(5).cost_us());
        let mean = (0..20_000).map(|i| span(i).cost_us()).sum::<f64>() / 20_000.0;
        assert!((mean - 1_000.0).abs() < 40.0, "mean {mean}");
    }

    /// A slower engine takes proportionally longer on the same shard.
    #[test]
    fn speed_divides_the_cost() {
        let speed = Speed::new(0.25);
        let kind = Synthetic::with_speed(speed.clone());
        let span = Span {
            start: 0,
            end: 2,
            unit_cost_us: 5_000,
            spin: false,
            noise_seed: None,
            partition: None,
        };
        let t = Instant::now();
        kind.process(span).expect("runs");
        assert!(
            t.elapsed() >= Duration::from_millis(40),
            "{:?}",
            t.elapsed()
        );
        speed.set(f64::NAN);
        assert_eq!(speed.get(), Speed::MIN);
    }

    /// Every shard started is counted, across clones, with or without stragglers.
    #[test]
    fn runs_count_every_shard_started() {
        let kind = Synthetic::default();
        let clone = kind.clone();
        let span = Span {
            start: 0,
            end: 1,
            unit_cost_us: 0,
            spin: false,
            noise_seed: None,
            partition: None,
        };
        kind.process(span).expect("runs");
        clone.process(span).expect("runs");
        assert_eq!(kind.runs(), 2);
    }

    /// About `share` of the shards an engine runs straggle, each `factor` times its cost.
    #[test]
    fn stragglers_slow_a_share_of_the_runs() {
        let kind = Synthetic::default().with_stragglers(Stragglers {
            share: 0.01,
            factor: 10.0,
            seed: 3,
        });
        let factors: Vec<f64> = (0..20_000).map(|run| kind.straggle(run)).collect();
        let slow = factors.iter().filter(|&&f| f == 10.0).count();
        assert!((150..=250).contains(&slow), "{slow} stragglers in 20,000");
        assert!(factors.iter().all(|&f| f == 1.0 || f == 10.0));
        assert!((0..1_000).all(|run| Synthetic::default().straggle(run) == 1.0));
    }

    /// A long shard returns soon after its stop flag is raised, sleeping or spinning.
    #[test]
    fn stops_at_the_next_check() {
        for spin in [false, true] {
            let span = Span {
                start: 0,
                end: 1,
                unit_cost_us: 60_000_000,
                spin,
                noise_seed: None,
                partition: None,
            };
            let stop = Stop::new();
            let raise = stop.clone();
            let t = Instant::now();
            let raiser = std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(50));
                raise.request();
            });
            assert_eq!(
                Synthetic::default().process_with(span, &stop),
                Err(KindError::Stopped)
            );
            assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
            raiser.join().expect("raiser");
        }
    }
}
