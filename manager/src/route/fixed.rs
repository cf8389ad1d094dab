//! Policies that ignore load: round robin, static weights, random, and pull.

use std::collections::HashMap;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::{Candidate, Router};

/// Engines in turn.
#[derive(Debug, Default)]
pub struct RoundRobin {
    next: usize,
}

impl Router for RoundRobin {
    fn name(&self) -> &'static str {
        "round-robin"
    }

    fn choose(&mut self, c: &[Candidate]) -> Option<usize> {
        let i = self.next % c.len();
        self.next = self.next.wrapping_add(1);
        Some(i)
    }
}

/// Smooth weighted round robin (nginx's): each engine gets shards in proportion to its
/// configured weight, interleaved. Engines without a weight weigh 1.
#[derive(Debug, Default)]
pub struct WeightedRoundRobin {
    weights: HashMap<String, f64>,
    current: HashMap<String, f64>,
}

impl WeightedRoundRobin {
    /// With these weights (engine id → weight > 0).
    pub fn new(weights: HashMap<String, f64>) -> Self {
        WeightedRoundRobin {
            weights,
            current: HashMap::new(),
        }
    }

    fn weight(&self, id: &str) -> f64 {
        self.weights.get(id).copied().unwrap_or(1.0)
    }
}

impl Router for WeightedRoundRobin {
    fn name(&self) -> &'static str {
        "weighted-round-robin"
    }

    fn choose(&mut self, c: &[Candidate]) -> Option<usize> {
        let total: f64 = c.iter().map(|e| self.weight(&e.id)).sum();
        let mut best = 0;
        let mut best_value = f64::MIN;
        for (i, e) in c.iter().enumerate() {
            let w = self.weight(&e.id);
            let v = self.current.entry(e.id.clone()).or_insert(0.0);
            *v += w;
            if *v > best_value {
                best_value = *v;
                best = i;
            }
        }
        if let Some(v) = self.current.get_mut(&c[best].id) {
            *v -= total;
        }
        Some(best)
    }
}

/// A uniformly random engine.
#[derive(Debug)]
pub struct Random {
    rng: StdRng,
}

impl Default for Random {
    fn default() -> Self {
        Random {
            rng: StdRng::from_os_rng(),
        }
    }
}

impl Router for Random {
    fn name(&self) -> &'static str {
        "random"
    }

    fn choose(&mut self, c: &[Candidate]) -> Option<usize> {
        Some(self.rng.random_range(0..c.len()))
    }
}

/// Every shard to the shared queue: whichever worker has a free slot takes it.
#[derive(Debug, Default)]
pub struct Pull;

impl Router for Pull {
    fn name(&self) -> &'static str {
        "pull"
    }

    fn choose(&mut self, _: &[Candidate]) -> Option<usize> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::super::three;
    use super::*;

    /// Round robin visits every engine in turn.
    #[test]
    fn round_robin_cycles() {
        let mut r = RoundRobin::default();
        let c = three(1.0);
        let picks: Vec<_> = (0..6).map(|_| r.choose(&c).unwrap_or(9)).collect();
        assert_eq!(picks, vec![0, 1, 2, 0, 1, 2]);
    }

    /// Weights 1/1/0.25 give 4:4:1 shares, interleaved: every run of nine picks holds them,
    /// and no engine is picked twice in a row.
    #[test]
    fn weighted_round_robin_follows_weights() {
        let w = HashMap::from([("c".to_owned(), 0.25)]);
        let mut r = WeightedRoundRobin::new(w);
        let c = three(1.0);
        let picks: Vec<usize> = (0..90).map(|_| r.choose(&c).unwrap_or(9)).collect();
        for run in picks.chunks(9) {
            let mut counts = [0; 3];
            for &i in run {
                counts[i] += 1;
            }
            assert_eq!(counts, [4, 4, 1], "{picks:?}");
        }
        assert!(picks.windows(2).all(|w| w[0] != w[1]), "{picks:?}");
    }

    /// Random reaches every engine; pull never names one.
    #[test]
    fn random_spreads_and_pull_defers() {
        let c = three(1.0);
        let mut r = Random::default();
        let mut seen = [false; 3];
        for _ in 0..200 {
            seen[r.choose(&c).unwrap_or(0)] = true;
        }
        assert_eq!(seen, [true; 3]);
        assert_eq!(Pull.choose(&c), None);
    }
}
