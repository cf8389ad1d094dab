//! The sharding suite: fixed shard counts against the adaptive count, on one request size at a
//! time and on a mixed trace where one fixed count must serve every size at once.

use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use shardline::config::ConnectArgs;
use shardline::kind::synthetic::Work;
use shardline_manager::plan::ShardCount;

use crate::harness::{self, Setup, SpeedPlan};
use crate::policy::Policy;
use crate::report::Row;
use crate::suite::{Pool, WARMUP};
use crate::workload::{self, Workload};

/// Cost of one unit of work, µs.
const UNIT_US: u64 = 2_000;
/// Fewest requests of its rarest size a cell's trace is stretched to hold.
const MIN_REQUESTS: f64 = 40.0;
/// Requests run before each cell's trace, per size in the trace.
const PRIME_REQUESTS: u64 = 6;

/// Settings of the sharding suite.
#[derive(Debug, Clone)]
pub struct Sharding {
    /// Servers.
    pub connect: ConnectArgs,
    /// Trace seed.
    pub seed: u64,
    /// Arrivals per run.
    pub duration: Duration,
    /// Load level.
    pub load: f64,
    /// Request sizes.
    pub sizes: Vec<Size>,
    /// Shard-count modes compared.
    pub modes: Vec<ShardCount>,
    /// Repetitions, interleaved, each on its own trace.
    pub reps: u32,
}

/// Shard-count modes compared by default.
pub const SHARD_MODES: [ShardCount; 5] = [
    ShardCount::Fixed(1),
    ShardCount::Fixed(4),
    ShardCount::Fixed(16),
    ShardCount::Fixed(64),
    ShardCount::Adaptive,
];

/// Request sizes of the sharding suite.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Size {
    /// 24 ms of work.
    Small,
    /// 120 ms of work.
    Medium,
    /// 1.2 s of work.
    Large,
    /// One trace of 80% small, 15% medium and 5% large requests (by count; large requests
    /// carry 62% of the work): a fixed count has to serve all three.
    Mixed,
}

impl Size {
    /// Every size, the mixed trace last.
    pub const ALL: [Size; 4] = [Size::Small, Size::Medium, Size::Large, Size::Mixed];

    fn label(self) -> &'static str {
        match self {
            Size::Small => "small (24 ms of work)",
            Size::Medium => "medium (120 ms of work)",
            Size::Large => "large (1.2 s of work)",
            Size::Mixed => "mixed sizes",
        }
    }

    /// Units of 2 ms (of a single size).
    fn units(self) -> u64 {
        match self {
            Size::Small => 12,
            Size::Medium => 60,
            Size::Large | Size::Mixed => 600,
        }
    }

    /// The single sizes a trace of this size draws from, with their shares by count.
    fn mix(self) -> &'static [(Size, f64)] {
        match self {
            Size::Small => &[(Size::Small, 1.0)],
            Size::Medium => &[(Size::Medium, 1.0)],
            Size::Large => &[(Size::Large, 1.0)],
            Size::Mixed => &[
                (Size::Small, 0.8),
                (Size::Medium, 0.15),
                (Size::Large, 0.05),
            ],
        }
    }

    /// Mean units of a request.
    fn mean_units(self) -> f64 {
        self.mix().iter().map(|&(s, p)| s.units() as f64 * p).sum()
    }

    /// One single size drawn from the mix (a single size draws nothing from `rng`, so its
    /// trace's arrivals from a seed are the ones the Poisson draw alone gives).
    fn draw(self, rng: &mut StdRng) -> Size {
        if let [(one, _)] = self.mix() {
            return *one;
        }
        let mut u: f64 = rng.random();
        for &(s, p) in self.mix() {
            if u < p {
                return s;
            }
            u -= p;
        }
        self.mix().last().map_or(self, |&(s, _)| s)
    }
}

/// The rows of the sharding suite.
#[derive(Debug, Default)]
pub struct Rows {
    /// Every mode on each single size.
    pub by_size: Vec<Row>,
    /// Every mode on the mixed trace: the whole trace, then each size of request in it.
    pub mixed: Vec<Row>,
}

/// Requests of each size on homogeneous engines under the predictive policy, with each
/// shard-count mode on the same traces, interleaved, `reps` times.
///
/// # Errors
/// A cell could not start.
pub async fn sharding(s: &Sharding) -> anyhow::Result<Rows> {
    let capacity = Workload::W1.capacity();
    let mut rows = Rows::default();
    for size in s.sizes.iter().copied() {
        let label = size.label();
        // Requests per µs.
        let rate = s.load * capacity / (size.mean_units() * UNIT_US as f64);
        let rarest = size.mix().iter().map(|&(_, p)| p).fold(1.0, f64::min);
        let duration = s.duration.max(Duration::from_micros(
            (MIN_REQUESTS / (rate * rarest)) as u64,
        ));
        let parts: Vec<Size> = size.mix().iter().map(|&(s, _)| s).collect();
        let mixed = parts.len() > 1;
        // Per mode: the whole trace, then each single size in it (for a mixed trace).
        let mut pools: Vec<(Pool, Vec<Pool>, Vec<f64>)> = s
            .modes
            .iter()
            .map(|_| {
                (
                    Pool::default(),
                    parts.iter().map(|_| Pool::default()).collect(),
                    Vec::new(),
                )
            })
            .collect();
        for rep in 0..s.reps {
            let salt = if size == Size::Mixed { 1 << 16 } else { 0 };
            let seed = s.seed ^ (u64::from(rep) << 32) ^ size.units() ^ salt;
            let (trace, sizes) = trace(seed, size, rate, duration);
            // A few requests of each size, so every mode starts on a manager that knows the
            // kind (as one that loaded its history from Redis would).
            let prime: Vec<Work> = parts
                .iter()
                .flat_map(|p| (0..PRIME_REQUESTS).map(move |i| work(p.units(), !(seed ^ i))))
                .collect();
            // Each repetition starts at the next mode, so that no mode always runs after the
            // same one or at the same point of the run (on this machine the same cell varies
            // by up to 2x from one repetition to the next).
            let k = s.modes.len();
            for i in (0..k).map(|i| (i + rep as usize) % k) {
                let (mode, (pool, per_size, shards)) = (s.modes[i], &mut pools[i]);
                let setup = Setup {
                    policy: Policy::Router(shardline_manager::Config::DEFAULT_ROUTER),
                    shard_count: mode,
                    speeds: [1.0; 3],
                    speed_plan: SpeedPlan::Steady,
                    antagonist: None,
                    warmup: Duration::ZERO,
                    managers: 1,
                    stragglers: None,
                    miss: None,
                    unit_us: UNIT_US,
                    in_flight_cap: shardline_manager::Config::DEFAULT_IN_FLIGHT_CAP,
                    hold_ms: shardline_manager::Config::DEFAULT_HOLD_MS,
                    hedge_quantile: shardline_manager::hedge::DEFAULT_QUANTILE,
                    prime: prime.clone(),
                    drain: duration.max(Duration::from_secs(5)),
                };
                let m = harness::run(&s.connect, &setup, &trace).await?;
                let skip = (m.latencies.len() as f64 * WARMUP) as usize;
                let (name, mean_shards) = (mode_name(mode), m.mean_shards(skip));
                pool.add(&m, None);
                if mixed {
                    for (part, p) in parts.iter().zip(per_size.iter_mut()) {
                        p.add_only(&m, None, |i| sizes[i] == *part);
                        eprintln!(
                            "  {:<24} mean shards {:.1}",
                            part.label(),
                            m.mean_shards_where(skip, |i| sizes[i] == *part)
                        );
                    }
                }
                shards.push(mean_shards);
                let row = Row::new(label, s.load, &name, &m, skip, None);
                eprintln!(
                    "rep {} {label:<24} {name:<10} n={:<5} lost={:<3} mean={:>8.1}ms p50={:>8.1}ms p99={:>8.1}ms shards={mean_shards:.1}",
                    rep + 1,
                    row.requests,
                    row.lost,
                    row.mean,
                    row.p50,
                    row.p99,
                );
            }
        }
        for (mode, (pool, per_size, shards)) in s.modes.iter().copied().zip(&pools) {
            let mean = shards.iter().sum::<f64>() / shards.len().max(1) as f64;
            let name = match mode {
                ShardCount::Adaptive | ShardCount::Target => {
                    format!("{mode} (mean {mean:.1} shards)")
                }
                other => mode_name(other),
            };
            if mixed {
                rows.mixed.push(pool.row(label, s.load, &name));
                for (part, p) in parts.iter().zip(per_size) {
                    let within = format!("{label}: {}", part.label());
                    rows.mixed.push(p.row(&within, s.load, &name));
                }
            } else {
                rows.by_size.push(pool.row(label, s.load, &name));
            }
        }
    }
    Ok(rows)
}

/// Poisson arrivals of `size` at `rate` per µs for `duration`, and the single size of each.
fn trace(
    seed: u64,
    size: Size,
    rate: f64,
    duration: Duration,
) -> (Vec<workload::Arrival>, Vec<Size>) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut sizes = Vec::new();
    let trace = workload::poisson(&mut rng, rate, duration, |rng| {
        let one = size.draw(rng);
        sizes.push(one);
        work(one.units(), seed ^ sizes.len() as u64)
    });
    (trace, sizes)
}

fn work(units: u64, noise_seed: u64) -> Work {
    Work {
        units,
        unit_cost_us: UNIT_US,
        spin: false,
        noise_seed: Some(noise_seed),
        partition: None,
    }
}

fn mode_name(mode: ShardCount) -> String {
    match mode {
        ShardCount::Fixed(n) => format!("fixed {n}"),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A mixed trace draws its sizes in their shares, and its arrival rate carries the load.
    #[test]
    fn mixed_trace_draws_sizes_in_their_shares() {
        let per_s = 60.0;
        let (trace, sizes) = trace(3, Size::Mixed, per_s / 1e6, Duration::from_secs(200));
        assert_eq!(trace.len(), sizes.len());
        assert!(
            (trace.len() as f64 / 200.0 / per_s - 1.0).abs() < 0.05,
            "{}",
            trace.len()
        );
        let share = |s: Size| sizes.iter().filter(|&&x| x == s).count() as f64 / sizes.len() as f64;
        assert!((share(Size::Small) - 0.8).abs() < 0.02);
        assert!((share(Size::Large) - 0.05).abs() < 0.01);
        for (a, s) in trace.iter().zip(&sizes) {
            assert_eq!(a.work.units, s.units());
        }
    }

    /// A single-size trace holds only that size.
    #[test]
    fn single_size_trace_is_uniform() {
        let (_, sizes) = trace(3, Size::Medium, 50e-6, Duration::from_secs(5));
        assert!(!sizes.is_empty() && sizes.iter().all(|&s| s == Size::Medium));
        assert!((Size::Mixed.mean_units() - 48.6).abs() < 1e-9);
    }
}
