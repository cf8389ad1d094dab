//! How many shards to cut.
//!
//! Three modes ([`ShardCount`]):
//! - **adaptive** (the default): the count that minimises the request's predicted completion
//!   time, from the kind's learned cost line, each engine's learned speed, slots and current
//!   backlog, and the measured per-shard overheads ([`Model::best`]). Until the kind has a
//!   trusted cost line it falls back to the size rule;
//! - **target**: cut so that a shard's predicted work is [`TARGET_OVERHEADS`] times its
//!   measured per-shard overhead, at most [`TARGET_ROUNDS`] shards per slot
//!   ([`Model::target`]); the size rule until the kind has a trusted cost line;
//! - **size**: about `size / (shard_size_hint × scale)` shards, at least one per live engine;
//! - **fixed** `N`: always `N` (for benchmarks and special deployments).
//!
//! Every mode honours the request's `max_shards`, the manager's cap and the size itself.

use std::str::FromStr;

use crate::latency::MAX_LOAD;

/// How the shard count is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShardCount {
    /// Minimise predicted completion time.
    Adaptive,
    /// Shards of a target size, a multiple of the per-shard overhead.
    Target,
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
            "target" => Ok(ShardCount::Target),
            "size" => Ok(ShardCount::BySize),
            n => match n.parse::<u32>() {
                Ok(n) if n > 0 => Ok(ShardCount::Fixed(n)),
                _ => Err(format!(
                    "shard count must be `adaptive`, `target`, `size` or a positive number, not {s:?}"
                )),
            },
        }
    }
}

impl std::fmt::Display for ShardCount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ShardCount::Adaptive => f.write_str("adaptive"),
            ShardCount::Target => f.write_str("target"),
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

/// This manager's traffic, as the shard-count model sees it ([`crate::flow::Flow`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Traffic {
    /// Shards sent per second, every kind.
    pub shard_rate: f64,
    /// Requests of this kind per second.
    pub request_rate: f64,
    /// Mean shards per request of this kind lately.
    pub mean_shards: f64,
}

impl Default for Traffic {
    fn default() -> Self {
        Traffic {
            shard_rate: 0.0,
            request_rate: 0.0,
            mean_shards: 1.0,
        }
    }
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
    /// The manager's publish of one shard, µs: shard `i` cannot start before `i + 1` of them.
    pub publish_us: f64,
    /// The merge of one partial result, µs, paid one after another at the end.
    pub merge_us: f64,
    /// Transport latency of a shard on an idle path (delivery, Redis writes, completion
    /// event), µs. A request pays it once, in `path_us`: its shards' transports overlap.
    pub latency_us: f64,
    /// How long a shard holds its slot besides its work, µs: the worker's result write and
    /// ack, and the broker's next delivery. Paid once per round of shards on a slot.
    pub hold_us: f64,
    /// Once per request on an idle path: dispatch and the result's way back, µs.
    pub path_us: f64,
    /// Utilisation of that shared path now ([`crate::latency::Latency::load`]): its latency
    /// is `latency_us / (1 - load)`, and it grows with the shard rate.
    pub load: f64,
    /// The traffic that load comes from.
    pub traffic: Traffic,
    /// Coefficient of variation of shard times: the request waits for the slowest of its
    /// shards, which grows with the count as about `cv × √(2 ln n)` shard times.
    pub cv: f64,
}

/// Largest count the model simulates shard by shard; beyond it, counts follow the size rule.
pub const MAX_SIMULATED: u64 = 4096;

/// The target rule's shard size: this many times the per-shard overhead.
pub const TARGET_OVERHEADS: f64 = 4.0;
/// The target rule's most shards per slot.
pub const TARGET_ROUNDS: u64 = 4;

impl Model {
    /// Slots over every engine (an engine reporting none counts as one).
    fn total_slots(&self) -> u64 {
        self.engines.iter().map(|e| u64::from(e.slots.max(1))).sum()
    }

    /// Predicted utilisation of the shared path if every request of this kind were cut into
    /// `n` shards: the present load scaled by the shard rate that would give.
    pub fn load_with(&self, n: u64) -> f64 {
        let t = &self.traffic;
        if self.load <= 0.0 || t.shard_rate <= 0.0 {
            return self.load.max(0.0);
        }
        let rate = t.shard_rate + t.request_rate * (n as f64 - t.mean_shards);
        self.load * rate.max(0.0) / t.shard_rate
    }

    /// Predicted utilisation of the engines' slots by this kind if its requests (of about
    /// `size`) were cut into `n` shards: every shard is charged its fixed cost and its whole
    /// transport latency besides its share of the work. That is more than the slot hold
    /// (`hold_us`) on purpose: on a shared machine each shard's transport also takes CPU from
    /// everything else, which the path load under-reads. Charging only the hold lets frequent
    /// small requests swing to 4 shards at twice the p50 of one shard; charging half the
    /// latency, to 8–12.
    pub fn slot_load_with(&self, size: f64, n: u64) -> f64 {
        let capacity: f64 = self
            .engines
            .iter()
            .map(|e| f64::from(e.slots.max(1)) * e.speed.max(1e-3))
            .sum();
        if capacity <= 0.0 {
            return 0.0;
        }
        let per_request = self.b_us * size + n as f64 * (self.a_us + self.latency_us);
        self.traffic.request_rate * per_request * 1e-6 / capacity
    }

    /// Predicted completion time, µs, of a request of `size` cut into `n` shards placed
    /// greedily where each finishes first. The request's own path and each shard's transport
    /// are slowed by the load `n` shards per request would put on the shared path or the slots
    /// ([`slowdown`]).
    ///
    /// A shard holds its slot for its work and `hold_us`. On idle slots with even shard
    /// times, shards run in lockstep rounds; with uneven times (`cv`) or behind a backlog of
    /// other requests' shards, slots free at scattered times and shards trickle in, so the
    /// `k`-th shard on an engine of `s` slots starts after about `(k + 1 - s) / s` holds. The
    /// request then waits for the slowest of the shards still running at the end, at most one
    /// per slot: `cv × (H(m) - 1)` shard times past the mean for `m` of them, exact for
    /// exponential times (`H` is the harmonic number). Charging `cv × √(2 ln n)` over every
    /// shard instead would overstate it and hold large requests to fewer shards than fixed 64.
    pub fn completion_us(&self, size: f64, n: u64) -> f64 {
        let load = self.load_with(n).max(self.slot_load_with(size, n));
        let slow = slowdown(load);
        let shard_us = self.a_us + self.b_us * size / n as f64;
        let slot_us = shard_us + self.hold_us * slow;
        let scattered = self.cv.clamp(0.0, 1.0);
        let mut placed = vec![0u64; self.engines.len()];
        let mut last: f64 = 0.0;
        for sent in 1..=n {
            let published = sent as f64 * self.publish_us;
            let finish = |(e, k): (&Capacity, u64)| {
                let slots = f64::from(e.slots.max(1));
                let speed = e.speed.max(1e-3);
                let hold = slot_us / speed;
                let lockstep = (k as f64 / slots).floor() * hold;
                let trickle = ((k + 1) as f64 - slots).max(0.0) / slots * hold;
                let deep = (e.backlog_us / (slots * hold).max(1.0)).min(1.0);
                let w = deep.max(scattered);
                let free = e.backlog_us / slots + lockstep + w * (trickle - lockstep);
                free.max(published) + hold
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
        let running = n.min(self.total_slots().max(1));
        let straggler = shard_us * self.cv * (harmonic(running) - 1.0);
        last + straggler + self.path_us * slow + n as f64 * self.merge_us
    }

    /// The target rule: the most shards whose predicted work each is at least
    /// [`TARGET_OVERHEADS`] times the per-shard overhead (its transport latency, its publish
    /// and its part of the merge), up to `cap` and [`TARGET_ROUNDS`] per slot. Free slots do
    /// not cap it: that cut a large request arriving at a busy moment into one long shard per
    /// slot, which kept the slots busy for the next one (large requests' p99 went from 0.5 to
    /// 4 s). A kind whose fixed cost alone reaches the target is not cut.
    pub fn target(&self, size: f64, cap: u64) -> u64 {
        let overhead = self.latency_us + self.publish_us + self.merge_us;
        let room = TARGET_OVERHEADS * overhead - self.a_us;
        let n = if room > 0.0 {
            (self.b_us * size / room).floor()
        } else {
            1.0
        };
        let most = (TARGET_ROUNDS * self.total_slots()).min(cap).max(1);
        (n as u64).clamp(1, most)
    }

    /// The count in `1..=cap` with the least predicted completion time (the smaller on a tie
    /// within 1%), among powers of two, their 1.5 multiples and multiples of the total slots.
    pub fn best(&self, size: f64, cap: u64) -> u64 {
        let cap = cap.clamp(1, MAX_SIMULATED);
        let slots = self.total_slots();
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

/// `1 + 1/2 + … + 1/m`: the expected slowest of `m` exponential times, in means.
fn harmonic(m: u64) -> f64 {
    (1..=m).map(|k| 1.0 / k as f64).sum()
}

/// How much a queue at utilisation `load` slows what passes through it: `1 / (1 - load)`,
/// continued linearly past [`MAX_LOAD`] so that a count that overloads more is always worse.
///
/// It is not infinite at saturation on purpose. Rare large requests whose work alone fills
/// the slots (a burst of them, or a noisy rate) would see every count as infinite and fall
/// back to one shard, the worst answer for them; measured: one-shard cuts of 1.2 s requests
/// in the middle of a 1 s p50 run.
pub fn slowdown(load: f64) -> f64 {
    let load = load.max(0.0);
    if load < MAX_LOAD {
        1.0 / (1.0 - load)
    } else {
        load / MAX_LOAD / (1.0 - MAX_LOAD)
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
            (ShardCount::Target, Some(model)) if !model.engines.is_empty() => {
                model.target(size as f64, cap)
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

    fn model(merge_us: f64, backlog_us: f64) -> Model {
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
            publish_us: 0.0,
            merge_us,
            latency_us: 1_000.0,
            hold_us: 1_000.0,
            path_us: 2_000.0,
            load: 0.0,
            traffic: Traffic::default(),
            cv: 0.0,
        }
    }

    fn traffic(shard_rate: f64, request_rate: f64, mean_shards: f64) -> Traffic {
        Traffic {
            shard_rate,
            request_rate,
            mean_shards,
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

    /// A request's shards leave one after another, but the last ones wait for slots anyway:
    /// a publish far shorter than a shard's work costs a spread request about one publish,
    /// where the same cost paid per shard at the end (as a merge) costs all of them.
    #[test]
    fn publishes_overlap_earlier_shards_work() {
        let base = model(0.0, 0.0);
        let publishing = Model {
            publish_us: 100.0,
            ..base.clone()
        };
        let (none, published, merged) = (
            base.completion_us(1_200.0, 48),
            publishing.completion_us(1_200.0, 48),
            model(100.0, 0.0).completion_us(1_200.0, 48),
        );
        assert!(published - none < 500.0, "{none} {published}");
        assert!((merged - none - 4_800.0).abs() < 1.0, "{none} {merged}");
        // A publish slower than the slots free up does delay the last shards.
        let slow = Model {
            publish_us: 20_000.0,
            ..base.clone()
        };
        assert!(slow.completion_us(1_200.0, 48) > none + 500_000.0);
    }

    /// Per-shard serial overhead pushes the count down.
    #[test]
    fn overhead_lowers_the_count() {
        let cheap = model(10.0, 0.0).best(500.0, 1_000);
        let dear = model(20_000.0, 0.0).best(500.0, 1_000);
        assert!(dear < cheap, "{dear} vs {cheap}");
    }

    /// A backlog on an engine delays the request's shards.
    #[test]
    fn prediction_accounts_for_backlog() {
        let idle = model(0.0, 0.0).completion_us(100.0, 12);
        let busy = model(0.0, 1_000_000.0).completion_us(100.0, 12);
        assert!(busy > idle, "busy {busy}, idle {idle}");
    }

    /// Spreading work over idle slots beats running it as one shard.
    #[test]
    fn prediction_favours_spreading_over_idle_slots() {
        let m = model(0.0, 0.0);
        assert!(m.completion_us(100.0, 1) > m.completion_us(100.0, 12));
    }

    /// The quarter-speed engine would finish a shard in four holds, later than a second round
    /// on the fast ones: 12 shards all go to the two fast engines (two rounds), as if the slow
    /// one were not there, instead of one round over all 12 slots.
    #[test]
    fn slow_engine_gets_fewer_shards_than_its_slots() {
        let three = model(0.0, 0.0);
        let fast_only = Model {
            engines: three.engines[..2].to_vec(),
            ..three.clone()
        };
        let all_fast = Model {
            engines: vec![three.engines[0]; 3],
            ..three.clone()
        };
        let (with_slow, without) = (
            three.completion_us(100.0, 12),
            fast_only.completion_us(100.0, 12),
        );
        assert!((with_slow - without).abs() < 1.0, "{with_slow} {without}");
        // One more round: a shard's work (a + b × 100 / 12) and its hold.
        let round = 200.0 + 1_000.0 * 100.0 / 12.0 + 1_000.0;
        let fast = all_fast.completion_us(100.0, 12);
        assert!((with_slow - fast - round).abs() < 1.0, "{with_slow} {fast}");
    }

    /// The target rule cuts shards of about four overheads of work each, never more than four
    /// per slot or the cap, and does not cut a kind whose fixed cost alone reaches the target.
    #[test]
    fn target_cuts_shards_of_a_few_overheads() {
        let mut m = model(0.0, 0.0);
        m.latency_us = 1_000.0;
        m.publish_us = 0.0;
        // a = 200 µs, b = 1,000 µs per unit: 3,800 µs of room, so 3.8 units a shard.
        assert_eq!(m.target(38.0, 1_000), 10);
        assert_eq!(m.target(3.0, 1_000), 1);
        assert_eq!(m.target(100_000.0, 1_000), TARGET_ROUNDS * 12);
        assert_eq!(m.target(100_000.0, 7), 7);
        m.a_us = 5_000.0;
        assert_eq!(m.target(100_000.0, 1_000), 1);
    }

    /// On a busy shared path, a kind whose requests come often is cut into fewer shards: more
    /// would saturate the path for everyone.
    #[test]
    fn frequent_requests_on_a_busy_path_get_fewer_shards() {
        let idle = Model {
            cv: 1.0,
            ..model(50.0, 0.0)
        };
        let busy = Model {
            load: 0.5,
            traffic: traffic(1_000.0, 250.0, 4.0),
            ..idle.clone()
        };
        let (calm, loaded) = (idle.best(24.0, 1_000), busy.best(24.0, 1_000));
        assert!(loaded < calm, "busy {loaded}, idle {calm}");
        assert!(busy.load_with(loaded) < MAX_LOAD);
        assert!(busy.completion_us(24.0, 12) > 3.0 * busy.completion_us(24.0, loaded));
    }

    /// When a kind's work alone fills the slots, a large request is still spread rather than
    /// cut into one shard (each round's transport is slowed twentyfold, so fewer rounds win).
    #[test]
    fn saturated_slots_still_spread_a_large_request() {
        let m = Model {
            traffic: traffic(800.0, 16.0, 50.0),
            ..model(0.0, 0.0)
        };
        assert!(m.slot_load_with(600.0, 1) > MAX_LOAD);
        assert!(m.best(600.0, 1_000) >= 8, "{}", m.best(600.0, 1_000));
    }

    /// The slowdown grows with the load without bound and without a jump at saturation.
    #[test]
    fn slowdown_is_continuous_and_increasing() {
        assert_eq!(slowdown(0.0), 1.0);
        assert!((slowdown(0.5) - 2.0).abs() < 1e-12);
        let (below, above) = (slowdown(MAX_LOAD - 1e-9), slowdown(MAX_LOAD));
        assert!((above - below).abs() < 1e-3, "{below} {above}");
        assert!(slowdown(2.0) > slowdown(1.0));
    }

    /// A rare request is barely slowed by the load its own shards add, so a busy path does not
    /// stop a large one from spreading.
    #[test]
    fn rare_large_requests_still_spread() {
        let busy = Model {
            cv: 1.0,
            load: 0.3,
            traffic: traffic(1_000.0, 0.5, 32.0),
            ..model(50.0, 0.0)
        };
        assert!(
            busy.best(2_000.0, 1_000) >= 48,
            "{}",
            busy.best(2_000.0, 1_000)
        );
    }

    /// Each shard holds a slot for its transport too, so cutting a frequent kind finer fills
    /// the slots.
    #[test]
    fn finer_cuts_fill_the_slots() {
        let m = Model {
            traffic: traffic(240.0, 240.0, 1.0),
            ..model(0.0, 0.0)
        };
        // 240 requests/s of 12 ms work on 9 slot-equivalents: about a third busy.
        let one = m.slot_load_with(12.0, 1);
        assert!((0.3..0.4).contains(&one), "{one}");
        assert!(m.slot_load_with(12.0, 12) > one + 0.15);
    }

    /// With nothing measured the load is taken as it is, whatever the count.
    #[test]
    fn load_without_traffic_is_flat() {
        let m = Model {
            load: 0.2,
            ..model(0.0, 0.0)
        };
        assert_eq!(m.load_with(1), 0.2);
        assert_eq!(m.load_with(500), 0.2);
    }

    /// Makespan, µs, of `n` shards with exponential times of mean `mean_us`, dealt round
    /// robin to three engines whose four slots each take the next shard of their own queue as
    /// they free: the system as the workers run it, averaged over `trials`.
    fn simulated_us(n: usize, mean_us: f64, trials: usize) -> f64 {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut total = 0.0;
        for _ in 0..trials {
            let mut makespan: f64 = 0.0;
            for engine in 0..3 {
                let mut slots = [0.0f64; 4];
                for _ in (engine..n).step_by(3) {
                    let free = slots
                        .iter_mut()
                        .min_by(|a, b| a.total_cmp(b))
                        .unwrap_or_else(|| unreachable!());
                    *free += -mean_us * (1.0 - rng.random::<f64>()).ln();
                    makespan = makespan.max(*free);
                }
            }
            total += makespan;
        }
        total / trials as f64
    }

    /// With exponential shard times on idle engines and nothing else to pay, the predicted
    /// completion is within 8% of a simulation for every count from 1 shard to 8 rounds (it
    /// is within 5%; a model of lockstep rounds and `cv × √(2 ln n)` over every shard is 46%
    /// high at 2 shards, 28% at 4 and 14% at 64).
    #[test]
    fn completion_matches_a_simulation_of_uneven_shards() {
        let m = Model {
            a_us: 0.0,
            b_us: 1_000.0,
            engines: vec![
                Capacity {
                    slots: 4,
                    speed: 1.0,
                    backlog_us: 0.0,
                };
                3
            ],
            publish_us: 0.0,
            merge_us: 0.0,
            latency_us: 0.0,
            hold_us: 0.0,
            path_us: 0.0,
            load: 0.0,
            traffic: Traffic::default(),
            cv: 1.0,
        };
        for n in [1u64, 2, 4, 12, 24, 48, 64, 96] {
            let predicted = m.completion_us(960.0, n);
            let simulated = simulated_us(n as usize, 960_000.0 / n as f64, 4_000);
            let error = predicted / simulated - 1.0;
            assert!(
                error.abs() < 0.08,
                "n {n}: predicted {predicted:.0}, simulated {simulated:.0}"
            );
        }
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
