//! `synthetic`: a declared cost per unit of size, for load experiments.
//!
//! The input says how many units of work there are and what each costs in microseconds; a
//! shard sleeps (or spins the CPU, with `spin: true`) for its units' cost and returns a digest
//! of its unit numbers, so the merged output still proves every unit ran exactly once.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::{Kind, KindError};

/// Longest a single shard may be asked to run (10 minutes), to refuse absurd inputs.
pub const MAX_SHARD_COST_US: u64 = 600_000_000;

/// Sleeps or spins for a declared cost.
#[derive(Debug, Clone, Copy, Default)]
pub struct Synthetic;

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

    fn name(&self) -> &'static str {
        "synthetic"
    }

    fn size(&self, input: &Work) -> u64 {
        input.units
    }

    fn shard_size_hint(&self) -> u64 {
        10
    }

    fn split(&self, input: Work, n: usize) -> Vec<Span> {
        let n = n.max(1) as u64;
        (0..n)
            .map(|i| Span {
                start: input.units * i / n,
                end: input.units * (i + 1) / n,
                unit_cost_us: input.unit_cost_us,
                spin: input.spin,
            })
            .collect()
    }

    fn process(&self, span: Span) -> Result<Tally, KindError> {
        let units = span.end.saturating_sub(span.start);
        let cost = units.saturating_mul(span.unit_cost_us);
        if cost > MAX_SHARD_COST_US {
            return Err(KindError::Failed(format!(
                "synthetic shard would run {cost} µs, over the {MAX_SHARD_COST_US} µs limit"
            )));
        }
        let cost = Duration::from_micros(cost);
        if span.spin {
            let until = Instant::now() + cost;
            while Instant::now() < until {
                std::hint::spin_loop();
            }
        } else if !cost.is_zero() {
            std::thread::sleep(cost);
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
            let work = Work { units: u64::from(units), unit_cost_us: 0, spin: false };
            let n = usize::from(n).clamp(1, usize::from(units));
            let v = crate::message::to_named_value(&work).expect("value");
            run_sharded(Synthetic, v.clone(), n) == run_sharded(Synthetic, v, 1)
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
        };
        assert!(Synthetic.process(span).is_err());
    }
}
