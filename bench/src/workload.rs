//! Workloads (§9.2 of the load-balancing research) and their seeded arrival traces.

use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use shardline::kind::Kind;
use shardline::kind::synthetic::{Synthetic, Work};
use shardline::locality::LocalityKey;

/// Engines in every run.
pub const ENGINES: usize = 3;
/// Slots (concurrent shards, and prefetch) per engine.
pub const SLOTS: u16 = 4;
/// Shards per request in the routing workloads.
pub const SHARDS: u32 = 8;
/// Share of requests of the light type (1 unit a shard); the rest weigh 4 units a shard.
pub const LIGHT_SHARE: f64 = 0.7;
/// Units per shard of the heavy type.
pub const HEAVY_UNITS: u64 = 4;
/// Requests in the closed batch of W8.
pub const BATCH: usize = 60;
/// Requests run (and awaited, unmeasured) before the batch of W8w, so the manager has learned
/// the engines' speeds: about 15 measured shards per slot.
pub const PRIME: usize = 20;
/// Engine slots the W4 antagonist occupies while on.
pub const ANTAGONIST_SLOTS: f64 = 2.0;
/// Cost of one antagonist shard, in units.
pub const ANTAGONIST_UNITS: u64 = 5;
/// W6: engine 0's speed in the slow half of each period.
pub const PERIODIC_LOW: f64 = 0.25;
/// W7: share of shards that straggle, on every engine.
pub const STRAGGLER_SHARE: f64 = 0.01;
/// W7: how many times slower a straggler runs.
pub const STRAGGLER_FACTOR: f64 = 10.0;
/// W9: how many times more a shard costs on an engine that does not hold its partition (a
/// remote read, a cache miss).
pub const MISS: f64 = 4.0;
/// W9: share of the requests that read each partition (engine `i` holds partition `i`).
/// Skewed so that routing by locality alone would overload engine 0: at load 0.7 it would get
/// 0.5 × 3 × 0.7 = 1.05 of its capacity.
pub const PARTITION_SHARE: [f64; ENGINES] = [0.5, 0.3, 0.2];

/// A workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Workload {
    /// Homogeneous engines 1/1/1, Poisson arrivals.
    W1,
    /// Heterogeneous engines 1/1/0.25.
    W2,
    /// Engine 0 slows to 0.25× at T/3 and recovers at 2T/3.
    W3,
    /// A periodic antagonist publishes straight to engine 2's queue (square wave, 50% duty,
    /// two of its four slots).
    W4,
    /// Two managers share engines 1/1/0.25; each sees the other's shards only through the
    /// sampled queue depths.
    W5,
    /// Engine 0's speed follows a square wave, 1 in the first half of each period and
    /// [`PERIODIC_LOW`] in the second (a co-located batch job); it runs for two periods before
    /// the trace.
    W6,
    /// Random stragglers: [`STRAGGLER_SHARE`] of the shards on every engine run
    /// [`STRAGGLER_FACTOR`] times slower.
    W7,
    /// A closed batch of requests at t = 0, heterogeneous engines: makespan against ideal.
    /// The manager starts cold: it learns the speeds during the batch.
    W8,
    /// W8 after a priming batch, so the manager knows the speeds (as a running deployment
    /// does from its saved history).
    W8w,
    /// Data locality: engine `i` holds partition `i`, each request reads one partition drawn
    /// by [`PARTITION_SHARE`] (and names it as its locality key), and a shard costs [`MISS`]
    /// times more on an engine that does not hold its partition.
    W9,
}

impl Workload {
    /// Short name for tables.
    pub fn name(self) -> &'static str {
        match self {
            Workload::W1 => "W1 homogeneous",
            Workload::W2 => "W2 speeds 1/1/0.25",
            Workload::W3 => "W3 slowdown",
            Workload::W4 => "W4 antagonist",
            Workload::W5 => "W5 two managers",
            Workload::W6 => "W6 periodic speed",
            Workload::W7 => "W7 stragglers",
            Workload::W8 => "W8 batch 1/1/0.25",
            Workload::W8w => "W8w warm batch",
            Workload::W9 => "W9 locality",
        }
    }

    /// Nominal engine speeds.
    pub fn speeds(self) -> [f64; ENGINES] {
        match self {
            Workload::W2 | Workload::W5 | Workload::W8 | Workload::W8w => [1.0, 1.0, 0.25],
            _ => [1.0, 1.0, 1.0],
        }
    }

    /// Load levels to run: one per workload in either mode (full mode repeats and lengthens
    /// runs instead; three loads of W1 and W2 made it a seven-hour run on two cores).
    pub fn loads(self) -> Vec<f64> {
        match self {
            Workload::W3 | Workload::W4 | Workload::W6 | Workload::W7 | Workload::W9 => {
                vec![0.7]
            }
            Workload::W8 | Workload::W8w => vec![1.0],
            _ => vec![0.8],
        }
    }

    /// Managers sharing the engines.
    pub fn managers(self) -> usize {
        if self == Workload::W5 { 2 } else { 1 }
    }

    /// Stragglers on every engine, if any.
    pub fn stragglers(self) -> Option<(f64, f64)> {
        (self == Workload::W7).then_some((STRAGGLER_SHARE, STRAGGLER_FACTOR))
    }

    /// The miss factor when engine `i` holds partition `i` and requests read partitions (W9).
    pub fn miss(self) -> Option<f64> {
        (self == Workload::W9).then_some(MISS)
    }

    /// A closed batch, measured by makespan.
    pub fn is_batch(self) -> bool {
        matches!(self, Workload::W8 | Workload::W8w)
    }

    /// Requests run before the trace, unmeasured: for W8w, [`PRIME`] requests of [`SHARDS`]
    /// light shards each.
    pub fn prime(self, unit_us: u64) -> Vec<Work> {
        let light = Work {
            units: u64::from(SHARDS),
            unit_cost_us: unit_us,
            spin: false,
            noise_seed: None,
            partition: None,
        };
        if self == Workload::W8w {
            vec![light; PRIME]
        } else {
            Vec::new()
        }
    }

    /// Mean capacity in µs of work per µs, the antagonist's share removed. W9's is the nominal
    /// one: its load is measured at the cost of running every shard where its data is.
    pub fn capacity(self) -> f64 {
        let nominal: f64 = self.speeds().iter().map(|s| s * f64::from(SLOTS)).sum();
        match self {
            Workload::W4 => nominal - ANTAGONIST_SLOTS * 0.5,
            Workload::W6 => nominal - f64::from(SLOTS) * (1.0 - PERIODIC_LOW) * 0.5,
            Workload::W7 => nominal / (1.0 + STRAGGLER_SHARE * (STRAGGLER_FACTOR - 1.0)),
            _ => nominal,
        }
    }
}

/// One request of a trace.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Arrival {
    /// Scheduled send time from the start of the run.
    pub at: Duration,
    /// The request's input.
    pub work: Work,
}

impl Arrival {
    /// The request's true work at speed 1, µs (noise included), for `shards` shards.
    pub fn cost_us(&self, shards: u32) -> f64 {
        Synthetic::default()
            .split(self.work, shards as usize)
            .iter()
            .map(shardline::kind::synthetic::Span::cost_us)
            .sum()
    }
}

fn request(rng: &mut StdRng, units_per_shard: u64, shards: u32, unit_us: u64) -> Work {
    Work {
        units: units_per_shard * u64::from(shards),
        unit_cost_us: unit_us,
        spin: false,
        noise_seed: Some(rng.random()),
        partition: None,
    }
}

/// The locality key of partition `p`: `p0`, `p1`, …; engine `i` holds partition `i`.
///
/// # Errors
/// Never for these names; the message of [`LocalityKey::parse`] otherwise.
pub fn partition_key(p: u32) -> Result<LocalityKey, String> {
    LocalityKey::parse(format!("p{p}"))
}

/// A partition drawn by [`PARTITION_SHARE`].
fn partition(rng: &mut StdRng) -> u32 {
    let u: f64 = rng.random();
    let mut below = 0.0;
    for (p, share) in PARTITION_SHARE.iter().enumerate() {
        below += share;
        if u < below {
            return p as u32;
        }
    }
    // Rounding left `u` above the sum of the shares: the last partition.
    (PARTITION_SHARE.len() - 1) as u32
}

/// Open-loop Poisson arrivals at load `rho` for `duration` (or the closed batch of W8): 70%
/// light and 30% heavy requests of [`SHARDS`] shards, every shard's cost seeded; in W9 each
/// also reads one partition ([`PARTITION_SHARE`]).
pub fn trace(seed: u64, w: Workload, rho: f64, duration: Duration, unit_us: u64) -> Vec<Arrival> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mean_units = LIGHT_SHARE + (1.0 - LIGHT_SHARE) * HEAVY_UNITS as f64;
    let mean_work_us = f64::from(SHARDS) * mean_units * unit_us as f64;
    let pick = |rng: &mut StdRng| {
        if rng.random_bool(LIGHT_SHARE) {
            1
        } else {
            HEAVY_UNITS
        }
    };
    if w.is_batch() {
        return (0..BATCH)
            .map(|_| {
                let units = pick(&mut rng);
                Arrival {
                    at: Duration::ZERO,
                    work: request(&mut rng, units, SHARDS, unit_us),
                }
            })
            .collect();
    }
    let rate_per_us = rho * w.capacity() / mean_work_us;
    let keyed = w.miss().is_some();
    poisson(&mut rng, rate_per_us, duration, |rng| {
        let units = pick(rng);
        let mut work = request(rng, units, SHARDS, unit_us);
        // Drawn after the request, and only in W9, so that the other traces are unchanged.
        if keyed {
            work.partition = Some(partition(rng));
        }
        work
    })
}

/// Poisson arrivals at `rate_per_us` for `duration`, each request from `make`.
pub fn poisson(
    rng: &mut StdRng,
    rate_per_us: f64,
    duration: Duration,
    mut make: impl FnMut(&mut StdRng) -> Work,
) -> Vec<Arrival> {
    let mut out = Vec::new();
    let mut t_us = 0.0;
    let end = duration.as_secs_f64() * 1e6;
    loop {
        let u: f64 = rng.random_range(f64::MIN_POSITIVE..1.0);
        t_us += -u.ln() / rate_per_us.max(1e-12);
        if t_us >= end {
            return out;
        }
        out.push(Arrival {
            at: Duration::from_secs_f64(t_us / 1e6),
            work: make(rng),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The same seed gives the same trace; the arrival rate matches the load.
    #[test]
    fn traces_are_seeded_and_scaled() {
        let d = Duration::from_secs(200);
        let a = trace(7, Workload::W1, 0.8, d, 20_000);
        assert_eq!(a, trace(7, Workload::W1, 0.8, d, 20_000));
        let offered: f64 = a.iter().map(|r| r.cost_us(SHARDS)).sum::<f64>() / d.as_secs_f64() / 1e6;
        let rho = offered / Workload::W1.capacity();
        assert!((rho - 0.8).abs() < 0.08, "offered load {rho}");
        assert_eq!(trace(7, Workload::W8, 1.0, d, 20_000).len(), BATCH);
        assert!(a.iter().all(|r| r.work.partition.is_none()));
    }

    /// W9: every request reads a partition, drawn by the skew, at load 0.7 of the nominal
    /// capacity (local cost).
    #[test]
    fn locality_trace_is_skewed() {
        let d = Duration::from_secs(200);
        let a = trace(7, Workload::W9, 0.7, d, 20_000);
        let offered: f64 = a.iter().map(|r| r.cost_us(SHARDS)).sum::<f64>() / d.as_secs_f64() / 1e6;
        let rho = offered / Workload::W9.capacity();
        assert!((rho - 0.7).abs() < 0.07, "offered load {rho}");
        for (p, share) in PARTITION_SHARE.iter().enumerate() {
            let n = a
                .iter()
                .filter(|r| r.work.partition == Some(p as u32))
                .count();
            let seen = n as f64 / a.len() as f64;
            assert!((seen - share).abs() < 0.03, "partition {p}: {seen}");
        }
        assert_eq!(partition_key(2).map(|k| k.to_string()), Ok("p2".into()));
    }
}
