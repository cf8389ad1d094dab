//! How many shards to cut.
//!
//! Three modes ([`ShardCount`]):
//! - **adaptive** (the default): the count that minimises the request's predicted completion
//!   time, from the kind's learned cost line, each engine's learned speed, slots and current
//!   backlog, and the measured per-shard overheads ([`Model::best`]). Until the kind has a
//!   trusted cost line it falls back to the size rule;
//! - **size**: about `size / (shard_size_hint × scale)` shards, at least one per live engine;
//! - **fixed** `N`: always `N` (for benchmarks and special deployments).
//!
//! Every mode honours the request's `max_shards`, the manager's cap and the size itself.

use std::str::FromStr;

/// How the shard count is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShardCount {
    /// Minimise predicted completion time.
    Adaptive,
    /// Follow the kind's preferred shard size.
    BySize,
    /// Always this many.
    Fixed(u32),
}

impl FromStr for ShardCount {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "adaptive" => Ok(ShardCount::Adaptive),
            "size" => Ok(ShardCount::BySize),
            n => match n.parse::<u32>() {
                Ok(n) if n > 0 => Ok(ShardCount::Fixed(n)),
                _ => Err(format!(
                    "shard count must be `adaptive`, `size` or a positive number, not {s:?}"
                )),
            },
        }
    }
}

impl std::fmt::Display for ShardCount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ShardCount::Adaptive => f.write_str("adaptive"),
            ShardCount::BySize => f.write_str("size"),
            ShardCount::Fixed(n) => write!(f, "{n}"),
        }
    }
}

/// One engine as the shard-count model sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Capacity {
    /// Shards it runs at once.
    pub slots: u32,
    /// Learned speed (1 = the kind's line).
    pub speed: f64,
    /// Expected work already queued or running on it, µs.
    pub backlog_us: f64,
}

/// What the adaptive count is computed from.
#[derive(Debug, Clone, PartialEq)]
pub struct Model {
    /// Fixed part of a shard's processing time at speed 1, µs.
    pub a_us: f64,
    /// Processing time per unit of size at speed 1, µs.
    pub b_us: f64,
    /// Live engines.
    pub engines: Vec<Capacity>,
    /// Per-shard cost paid one after another (publish, merge), µs.
    pub serial_us: f64,
    /// Per-shard cost paid on the engine (delivery, Redis writes), µs.
    pub parallel_us: f64,
    /// Coefficient of variation of shard times: the request waits for the slowest of its
    /// shards, which grows with the count as about `cv × √(2 ln n)` shard times.
    pub cv: f64,
}

/// Largest count the model simulates shard by shard; beyond it, counts follow the size rule.
pub const MAX_SIMULATED: u64 = 4096;

impl Model {
    /// Predicted completion time, µs, of a request of `size` cut into `n` shards placed
    /// greedily where each finishes first.
    pub fn completion_us(&self, size: f64, n: u64) -> f64 {
        let shard_us = self.a_us + self.b_us * size / n as f64;
        let mut placed = vec![0u64; self.engines.len()];
        let mut last: f64 = 0.0;
        for _ in 0..n {
            let finish = |(e, k): (&Capacity, u64)| {
                let slots = f64::from(e.slots.max(1));
                let rounds = ((k + 1) as f64 / slots).ceil();
                e.backlog_us / slots + rounds * (shard_us / e.speed.max(1e-3) + self.parallel_us)
            };
            let Some((i, t)) = self
                .engines
                .iter()
                .zip(placed.iter().copied())
                .map(finish)
                .enumerate()
                .min_by(|x, y| x.1.total_cmp(&y.1))
            else {
                return f64::INFINITY;
            };
            placed[i] += 1;
            last = last.max(t);
        }
        let straggler = shard_us * self.cv * (2.0 * (n as f64).ln()).max(0.0).sqrt();
        last + straggler + n as f64 * self.serial_us
    }

    /// The count in `1..=cap` with the least predicted completion time (the smaller on a tie
    /// within 1%), among powers of two, their 1.5 multiples and multiples of the total slots.
    pub fn best(&self, size: f64, cap: u64) -> u64 {
        let cap = cap.clamp(1, MAX_SIMULATED);
        let slots: u64 = self.engines.iter().map(|e| u64::from(e.slots.max(1))).sum();
        let mut candidates: Vec<u64> = (0..13)
            .flat_map(|p| [1u64 << p, 3u64 << p >> 1])
            .chain((1..=8).map(|k| k * slots.max(1)))
            .filter(|&n| (1..=cap).contains(&n))
            .chain([cap])
            .collect();
        candidates.sort_unstable();
        candidates.dedup();
        let mut best = (1, f64::INFINITY);
        for n in candidates {
            let t = self.completion_us(size, n);
            if t < best.1 * 0.99 {
                best = (n, t);
            }
        }
        best.0
    }
}

/// Inputs of the shard-count decision.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Live engines (0 is treated as 1: shards then wait in the shared queue).
    pub engines: usize,
    /// The request's own cap, if any.
    pub request_max: Option<u32>,
    /// The manager's cap.
    pub manager_max: u32,
    /// Multiplier of the kind's preferred shard size.
    pub scale: f64,
    /// The mode.
    pub mode: ShardCount,
    /// The learned model, when the kind has one (adaptive mode only).
    pub model: Option<Model>,
}

impl Plan {
    /// Number of shards for a request of `size` units whose kind prefers `hint` units a shard.
    pub fn shards(&self, size: u64, hint: u64) -> usize {
        let cap = u64::from(self.request_max.unwrap_or(u32::MAX).min(self.manager_max))
            .min(size)
            .max(1);
        let want = match (self.mode, &self.model) {
            (ShardCount::Fixed(n), _) => u64::from(n),
            (ShardCount::Adaptive, Some(model)) if !model.engines.is_empty() => {
                model.best(size as f64, cap)
            }
            _ => self.by_size(size, hint),
        };
        usize::try_from(want.clamp(1, cap)).unwrap_or(usize::MAX)
    }

    fn by_size(&self, size: u64, hint: u64) -> u64 {
        let per_shard = (hint.max(1) as f64 * self.scale).max(1.0);
        let by_size = (size as f64 / per_shard).ceil() as u64;
        by_size.max(self.engines.max(1) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(engines: usize, request_max: Option<u32>) -> Plan {
        Plan {
            engines,
            request_max,
            manager_max: 1000,
            scale: 1.0,
            mode: ShardCount::BySize,
            model: None,
        }
    }

    fn model(serial_us: f64, backlog_us: f64) -> Model {
        Model {
            a_us: 200.0,
            b_us: 1_000.0,
            engines: vec![
                Capacity {
                    slots: 4,
                    speed: 1.0,
                    backlog_us,
                },
                Capacity {
                    slots: 4,
                    speed: 1.0,
                    backlog_us: 0.0,
                },
                Capacity {
                    slots: 4,
                    speed: 0.25,
                    backlog_us: 0.0,
                },
            ],
            serial_us,
            parallel_us: 1_000.0,
            cv: 0.0,
        }
    }

    /// Large inputs are cut by size; small ones still use every engine.
    #[test]
    fn follows_size_with_one_shard_per_engine_at_least() {
        assert_eq!(plan(3, None).shards(1000, 100), 10);
        assert_eq!(plan(3, None).shards(50, 100), 3);
        assert_eq!(plan(0, None).shards(50, 100), 1);
    }

    /// Caps apply in order: the request's, the manager's, and the size itself.
    #[test]
    fn respects_every_cap() {
        assert_eq!(plan(3, Some(2)).shards(1000, 1), 2);
        assert_eq!(plan(3, None).shards(1_000_000, 1), 1000);
        assert_eq!(plan(8, None).shards(5, 1), 5);
        assert_eq!(plan(3, Some(1)).shards(1, 1), 1);
        let fixed = Plan {
            mode: ShardCount::Fixed(64),
            ..plan(3, Some(16))
        };
        assert_eq!(fixed.shards(1000, 1), 16);
    }

    /// Tiny work is not worth many shards; large work is spread over every slot.
    #[test]
    fn adaptive_grows_with_work() {
        let m = model(300.0, 0.0);
        let small = m.best(2.0, 1_000);
        let large = m.best(2_000.0, 1_000);
        assert!(small <= 3, "small request cut into {small}");
        assert!(large >= 12, "large request cut into {large}");
        // The choice is no worse than any fixed count the benchmark compares against.
        for size in [2.0, 50.0, 2_000.0] {
            let best = m.completion_us(size, m.best(size, 1_000));
            for n in [1, 4, 16, 64] {
                assert!(
                    best <= m.completion_us(size, n) * 1.0001,
                    "size {size}, n {n}"
                );
            }
        }
    }

    /// Noisy shard times favour more, smaller shards: the slowest of them is shorter.
    #[test]
    fn spread_raises_the_count() {
        let exact = model(300.0, 0.0);
        let noisy = Model {
            cv: 1.0,
            ..exact.clone()
        };
        assert!(noisy.best(2_000.0, 1_000) > exact.best(2_000.0, 1_000));
    }

    /// Per-shard serial overhead pushes the count down.
    #[test]
    fn overhead_lowers_the_count() {
        let cheap = model(10.0, 0.0).best(500.0, 1_000);
        let dear = model(20_000.0, 0.0).best(500.0, 1_000);
        assert!(dear < cheap, "{dear} vs {cheap}");
    }

    /// The slow engine finishes last, so it gets fewer shards than its slot share.
    #[test]
    fn prediction_accounts_for_speed_and_backlog() {
        let idle = model(0.0, 0.0).completion_us(100.0, 12);
        let busy = model(0.0, 1_000_000.0).completion_us(100.0, 12);
        assert!(busy > idle);
        assert!(model(0.0, 0.0).completion_us(100.0, 1) > idle);
    }

    /// Modes parse from flags.
    #[test]
    fn parses_modes() {
        assert_eq!("adaptive".parse(), Ok(ShardCount::Adaptive));
        assert_eq!("size".parse(), Ok(ShardCount::BySize));
        assert_eq!("16".parse(), Ok(ShardCount::Fixed(16)));
        assert!("0".parse::<ShardCount>().is_err());
        assert!("many".parse::<ShardCount>().is_err());
    }
}
