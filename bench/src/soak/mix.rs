//! The request mix: what each arrival asks for, drawn from a seeded generator.
//!
//! | class | share | what |
//! | --- | --- | --- |
//! | plain | 50.5% | `synthetic`, 20–300 units |
//! | kinds | 15% | `wordcount`, `sort` or `checksum` on random input |
//! | deadline | 10% | `synthetic`, 100–1500 units, with a 20–1000 ms deadline |
//! | cancel | 10% | `synthetic`, 2000–6000 units, cancelled 0–300 ms after it was sent |
//! | policy | 8% | plain work with `failure_policy` `partial` or `quorum` (1) |
//! | poison | 4% | two halves, one of which always fails, under each failure policy |
//! | wide | 2.5% | `synthetic`, 640–2560 units, `max_shards` a tenth of that (64–256) |
//!
//! Synthetic units cost [`UNIT_US`] each, without noise: shard times then follow the size
//! closely, the managers' adaptive shard count cuts larger requests in several shards, and the
//! finalizer paths of multi-shard requests are exercised. Every request but the short-deadline
//! ones carries the `--deadline-ms` deadline, so nothing can stay in flight longer than that.
//!
//! A poison request (`max_shards: 2`) has two halves of [`POISON_UNITS`]` / 2` units whose
//! nominal cost is the per-shard limit, with a noise seed chosen so that the first half costs
//! over the limit (its shard fails at once, on every try) and the second about what a plain
//! half would (so it does not mislead the managers' cost model). Cut in two shards it ends
//! `partial` under `partial` and `quorum: 1`, `failed` under `fail_fast`; cut in one shard it
//! fails whatever the policy.
//!
//! A wide request is there so that kills land inside wide fan-outs; see [`WIDE_SHARDS`] for
//! how many shards it gets under each shard-count mode, and why.

use std::ops::RangeInclusive;
use std::time::Duration;

use rand::Rng;
use rand::rngs::StdRng;
use shardline::kind::Kind;
use shardline::kind::synthetic::{MAX_SHARD_COST_US, Span, Synthetic, Work};
use shardline::message::{FailurePolicy, Options};

/// Which share of the mix a request belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Class {
    Plain,
    Kinds,
    Deadline,
    Cancel,
    Policy,
    Poison,
    /// Sized for 64–256 shards and capped there ([`WIDE_SHARDS`]).
    Wide,
}

impl Class {
    pub(crate) const ALL: [Class; 7] = [
        Class::Plain,
        Class::Kinds,
        Class::Deadline,
        Class::Cancel,
        Class::Policy,
        Class::Poison,
        Class::Wide,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Class::Plain => "plain",
            Class::Kinds => "kinds",
            Class::Deadline => "deadline",
            Class::Cancel => "cancel",
            Class::Policy => "policy",
            Class::Poison => "poison",
            Class::Wide => "wide",
        }
    }

    /// Whether anything but `completed` is unexpected for this class.
    pub(crate) fn expects_completion(self) -> bool {
        matches!(
            self,
            Class::Plain | Class::Kinds | Class::Policy | Class::Wide
        )
    }
}

/// How a cancel is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CancelVia {
    /// `Client::cancel` (Redis).
    Client,
    /// An AMQP message of type `cancel` on the request exchange.
    Message,
}

/// One request to send.
#[derive(Debug, Clone)]
pub(crate) struct Planned {
    pub(crate) class: Class,
    pub(crate) kind: &'static str,
    pub(crate) payload: rmpv::Value,
    pub(crate) options: Options,
    pub(crate) cancel: Option<(Duration, CancelVia)>,
}

/// Draws requests.
#[derive(Debug, Clone)]
pub(crate) struct Mix {
    deadline_ms: u64,
    poison_seeds: Vec<u64>,
}

/// Cost of one synthetic unit, µs.
const UNIT_US: u64 = 1_000;
/// Poison seeds to find (each is one noise pattern).
const POISON_SEEDS: usize = 4;
/// Units of a poison request.
const POISON_UNITS: u64 = 2_000;
/// Unit cost of a poison request: one half costs the shard limit before noise.
const POISON_UNIT_US: u64 = MAX_SHARD_COST_US / (POISON_UNITS / 2);
/// Range of the good half's cost, µs: around what a plain half of that size costs.
const POISON_GOOD_US: std::ops::Range<f64> = 600_000.0..1_500_000.0;
/// Longest short deadline, ms.
const SHORT_DEADLINE_MS: u64 = 1_000;
/// Shards of a wide request: its `max_shards`, drawn uniformly, and the size it carries in
/// units of [`UNIT_US`]: that many times the `synthetic` kind's preferred shard size
/// ([`synthetic_shard_units`], 10 units), so 640–2,560 units, 0.64–2.56 s of sleep in 10 ms
/// shards (mean 1.6 s; at 2.5% of 20 req/s about 5% of 4 workers × 4 slots). The shards sleep,
/// so a request costs the CPU only its per-shard overhead.
///
/// A request can only cap its shard count. A manager that cuts by size (the soak's odd
/// managers, see `fleet::shard_count_of`) cuts exactly the drawn count; the adaptive count
/// usually cuts fewer (it prices the load as if every `synthetic` request were this large),
/// and the report shows what each class got. The units cost what plain units cost, so the
/// shards sit on the kind's cost line instead of dragging it.
pub(crate) const WIDE_SHARDS: RangeInclusive<u32> = 64..=256;

impl Mix {
    /// A mix whose long deadline is `deadline_ms`; poison seeds are searched from `seed`.
    pub(crate) fn new(deadline_ms: u64, seed: u64) -> Self {
        Mix {
            deadline_ms,
            poison_seeds: poison_seeds(seed, POISON_SEEDS),
        }
    }

    /// The longest deadline any request gets.
    pub(crate) fn longest_deadline(&self) -> Duration {
        Duration::from_millis(self.deadline_ms.max(SHORT_DEADLINE_MS))
    }

    /// The next request.
    pub(crate) fn draw(&self, rng: &mut StdRng) -> Planned {
        let roll: f64 = rng.random();
        let long = Options {
            deadline_ms: Some(self.deadline_ms),
            ..Options::default()
        };
        if roll < 0.505 {
            synthetic(Class::Plain, plain_work(rng), long)
        } else if roll < 0.53 {
            wide(rng, long)
        } else if roll < 0.68 {
            other_kind(rng, long)
        } else if roll < 0.78 {
            let options = Options {
                deadline_ms: Some(rng.random_range(20..=SHORT_DEADLINE_MS)),
                ..Options::default()
            };
            synthetic(
                Class::Deadline,
                work(rng.random_range(100..=1_500)),
                options,
            )
        } else if roll < 0.88 {
            let mut p = synthetic(Class::Cancel, work(rng.random_range(2_000..=6_000)), long);
            let after = if rng.random_bool(0.2) {
                Duration::ZERO
            } else {
                Duration::from_millis(rng.random_range(1..=300))
            };
            let via = if rng.random_bool(0.5) {
                CancelVia::Client
            } else {
                CancelVia::Message
            };
            p.cancel = Some((after, via));
            p
        } else if roll < 0.96 {
            let options = Options {
                failure_policy: Some(if rng.random_bool(0.5) {
                    FailurePolicy::Partial
                } else {
                    FailurePolicy::Quorum
                }),
                ..long
            };
            let mut p = synthetic(Class::Policy, plain_work(rng), options);
            if p.options.failure_policy == Some(FailurePolicy::Quorum) {
                p.options.quorum = Some(1);
            }
            p
        } else {
            self.poison(rng, long)
        }
    }

    fn poison(&self, rng: &mut StdRng, long: Options) -> Planned {
        let seed = if self.poison_seeds.is_empty() {
            None
        } else {
            Some(self.poison_seeds[rng.random_range(0..self.poison_seeds.len())])
        };
        let work = Work {
            units: POISON_UNITS,
            unit_cost_us: POISON_UNIT_US,
            spin: false,
            noise_seed: seed,
            partition: None,
        };
        let (policy, quorum) = match rng.random_range(0..3) {
            0 => (FailurePolicy::FailFast, None),
            1 => (FailurePolicy::Partial, None),
            _ => (FailurePolicy::Quorum, Some(1)),
        };
        let options = Options {
            max_shards: Some(2),
            failure_policy: Some(policy),
            quorum,
            ..long
        };
        synthetic(Class::Poison, work, options)
    }
}

fn work(units: u64) -> Work {
    Work {
        units,
        unit_cost_us: UNIT_US,
        spin: false,
        noise_seed: None,
        partition: None,
    }
}

fn plain_work(rng: &mut StdRng) -> Work {
    work(rng.random_range(20..=300))
}

/// Units the `synthetic` kind prefers in a shard (its `shard_size_hint`).
fn synthetic_shard_units() -> u64 {
    Kind::shard_size_hint(&Synthetic::default()).max(1)
}

/// A wide request: a count drawn from [`WIDE_SHARDS`], that many preferred shard sizes of
/// plain units, capped at that count.
fn wide(rng: &mut StdRng, long: Options) -> Planned {
    let shards = rng.random_range(WIDE_SHARDS);
    let options = Options {
        max_shards: Some(shards),
        ..long
    };
    synthetic(
        Class::Wide,
        work(u64::from(shards) * synthetic_shard_units()),
        options,
    )
}

fn synthetic(class: Class, work: Work, options: Options) -> Planned {
    let payload = rmpv::Value::Map(vec![
        ("units".into(), work.units.into()),
        ("unit_cost_us".into(), work.unit_cost_us.into()),
        ("spin".into(), work.spin.into()),
        (
            "noise_seed".into(),
            work.noise_seed.map_or(rmpv::Value::Nil, Into::into),
        ),
    ]);
    Planned {
        class,
        kind: "synthetic",
        payload,
        options,
        cancel: None,
    }
}

const WORDS: [&str; 24] = [
    "shard", "Shard,", "line", "rabbit", "redis", "worker", "manager", "merge", "(split)", "queue",
    "lease", "sweep", "Deadline", "cancel.", "quorum", "partial!", "the", "a", "of", "to", "be",
    "or", "not", "é-t-é",
];

fn other_kind(rng: &mut StdRng, options: Options) -> Planned {
    let (kind, payload) = match rng.random_range(0..3) {
        0 => {
            let n = rng.random_range(200..=4_000);
            let mut text = String::new();
            for i in 0..n {
                if i > 0 {
                    text.push(if rng.random_bool(0.1) { '\n' } else { ' ' });
                }
                text.push_str(WORDS[rng.random_range(0..WORDS.len())]);
            }
            ("wordcount", rmpv::Value::from(text))
        }
        1 => {
            let n = rng.random_range(1_000..=50_000);
            let items = (0..n)
                .map(|_| rmpv::Value::from(rng.random_range(-1_000_000i64..=1_000_000)))
                .collect();
            ("sort", rmpv::Value::Array(items))
        }
        _ => {
            let n = rng.random_range(1_024..=256 * 1_024);
            let mut bytes = vec![0u8; n];
            rng.fill(&mut bytes[..]);
            ("checksum", rmpv::Value::Binary(bytes))
        }
    };
    Planned {
        class: Class::Kinds,
        kind,
        payload,
        options,
        cancel: None,
    }
}

/// Noise seeds for which the first half of a poison request costs over the shard limit (with
/// margin) and the second within [`POISON_GOOD_US`], searched upward from `from`. About one
/// seed in ten thousand fits; the search gives up after 100 million.
fn poison_seeds(from: u64, want: usize) -> Vec<u64> {
    let half = POISON_UNITS / 2;
    let span = |start, seed| Span {
        start,
        end: start + half,
        unit_cost_us: POISON_UNIT_US,
        spin: false,
        noise_seed: Some(seed),
        partition: None,
    };
    let limit = MAX_SHARD_COST_US as f64;
    let mut found = Vec::new();
    let mut seed = from;
    for _ in 0..100_000_000u64 {
        if span(0, seed).cost_us() > 1.5 * limit
            && POISON_GOOD_US.contains(&span(half, seed).cost_us())
        {
            found.push(seed);
            if found.len() == want {
                break;
            }
        }
        seed = seed.wrapping_add(1);
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    /// The poison seeds make exactly the first of two shards fail, and one shard fail.
    #[test]
    fn poison_seeds_fail_one_half() {
        let seeds = poison_seeds(1, 2);
        assert_eq!(seeds.len(), 2);
        for s in seeds {
            let w = Work {
                units: POISON_UNITS,
                unit_cost_us: POISON_UNIT_US,
                spin: false,
                noise_seed: Some(s),
                partition: None,
            };
            let v = shardline::message::to_named_value(&w).expect("value");
            let k = shardline::Registry::builtin()
                .get("synthetic")
                .expect("kind");
            let shards = k.split(v.clone(), &mut |_, _| 2).expect("split");
            let stop = shardline::kind::Stop::new();
            assert!(k.process(&shards[0], &stop).is_err(), "first half fails");
            let good: Span = rmp_serde::from_slice(&shards[1]).expect("a span");
            assert!(POISON_GOOD_US.contains(&good.cost_us()), "second half runs");
            let whole = k.split(v, &mut |_, _| 1).expect("split");
            assert!(k.process(&whole[0], &stop).is_err(), "one shard fails");
        }
    }

    /// The same seed draws the same mix, with every class present.
    #[test]
    fn mix_is_seeded_and_covers_every_class() {
        let mix = Mix {
            deadline_ms: 60_000,
            poison_seeds: vec![7],
        };
        let draw = |seed| {
            let mut rng = StdRng::seed_from_u64(seed);
            (0..2_000)
                .map(|_| mix.draw(&mut rng))
                .map(|p| (p.class, p.kind, p.options))
                .collect::<Vec<_>>()
        };
        let a = draw(3);
        assert_eq!(a, draw(3));
        for c in Class::ALL {
            assert!(a.iter().any(|(class, _, _)| *class == c), "{c:?}");
        }
        for (_, _, o) in &a {
            assert!(Options::from_value(o.to_value()).is_ok(), "{o:?}");
        }
    }

    /// Wide requests come from the seed, about 2.5% of arrivals, and the manager's size rule
    /// (also its rule before the kind's line is trusted) cuts each into its `max_shards`,
    /// 64 to 256; a fixed count is capped there.
    #[test]
    fn wide_requests_are_seeded_and_cut_64_to_256() {
        use shardline_manager::plan::{Plan, ShardCount};
        let mix = Mix {
            deadline_ms: 60_000,
            poison_seeds: vec![7],
        };
        let wide = |seed| {
            let mut rng = StdRng::seed_from_u64(seed);
            (0..10_000)
                .map(|_| mix.draw(&mut rng))
                .filter(|p| p.class == Class::Wide)
                .map(|p| (p.kind, p.payload, p.options))
                .collect::<Vec<_>>()
        };
        let a = wide(5);
        assert_eq!(a, wide(5));
        assert_ne!(a, wide(6));
        assert!((150..=350).contains(&a.len()), "{} of 10000", a.len());
        let kind = shardline::Registry::builtin()
            .get("synthetic")
            .expect("kind");
        let cut = |payload: &rmpv::Value, mode, max| {
            let plan = Plan {
                engines: 4,
                request_max: max,
                manager_max: 10_000,
                scale: 1.0,
                mode,
                model: None,
            };
            kind.split(payload.clone(), &mut |size, hint| plan.shards(size, hint))
                .expect("split")
                .len()
        };
        let mut counts = Vec::new();
        for (k, payload, options) in &a {
            assert_eq!(*k, "synthetic");
            let shards = options.max_shards.expect("a cap");
            assert!(WIDE_SHARDS.contains(&shards), "{shards}");
            assert_eq!(options.deadline_ms, Some(60_000));
            let w: Work = rmpv::ext::from_value(payload.clone()).expect("work");
            assert_eq!((w.unit_cost_us, w.noise_seed), (UNIT_US, None));
            let n = usize::try_from(shards).expect("usize");
            for mode in [ShardCount::BySize, ShardCount::Adaptive] {
                assert_eq!(cut(payload, mode, options.max_shards), n, "{mode}");
            }
            assert_eq!(
                cut(payload, ShardCount::Fixed(1_000), options.max_shards),
                n
            );
            assert_eq!(cut(payload, ShardCount::BySize, None), n, "uncapped");
            counts.push(shards);
        }
        let (lo, hi) = (counts.iter().min(), counts.iter().max());
        assert!(lo < Some(&80) && hi > Some(&240), "{lo:?}..{hi:?}");
    }
}
