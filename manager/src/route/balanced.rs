//! Policies that read load: sampled depth, in-flight counts, expected delay.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tracing::trace;

use super::{Candidate, HoldRule, Router, fastest_us, min_rotating, within_cap};

/// Join the shortest queue by *sampled* broker depth (ready messages). With `with_ledger`, the
/// shards this manager sent since the sample are added (the stale-information fix).
#[derive(Debug, Default)]
pub struct JoinShortestDepth {
    with_ledger: bool,
    start: usize,
}

impl JoinShortestDepth {
    /// JSQ on the sample alone, or on the sample plus the ledger's sends since.
    pub fn new(with_ledger: bool) -> Self {
        JoinShortestDepth {
            with_ledger,
            start: 0,
        }
    }
}

impl Router for JoinShortestDepth {
    fn name(&self) -> &'static str {
        if self.with_ledger {
            "jsq-depth-ledger"
        } else {
            "jsq-depth"
        }
    }

    fn choose(&mut self, c: &[Candidate]) -> Option<usize> {
        self.start = self.start.wrapping_add(1);
        let with_ledger = self.with_ledger;
        let key = |i: usize| {
            let e = &c[i];
            let extra = if with_ledger { e.sent_since_sample } else { 0 };
            f64::from(e.depth.unwrap_or(0)) + extra as f64
        };
        let i = min_rotating(c.len(), self.start, key)?;
        trace!(policy = self.name(), engine = %c[i].id, depth = ?c[i].depth, since = c[i].sent_since_sample, "routed");
        Some(i)
    }
}

/// Power of two choices on the ledger's in-flight count (tower's and Envoy's default).
#[derive(Debug)]
pub struct PowerOfTwo {
    rng: StdRng,
}

impl Default for PowerOfTwo {
    fn default() -> Self {
        PowerOfTwo {
            rng: StdRng::from_os_rng(),
        }
    }
}

impl Router for PowerOfTwo {
    fn name(&self) -> &'static str {
        "p2c"
    }

    fn choose(&mut self, c: &[Candidate]) -> Option<usize> {
        if c.len() == 1 {
            return Some(0);
        }
        let a = self.rng.random_range(0..c.len());
        let b = (a + self.rng.random_range(1..c.len())) % c.len();
        let i = if c[b].in_flight < c[a].in_flight {
            b
        } else {
            a
        };
        trace!(policy = "p2c", engine = %c[i].id, in_flight = c[i].in_flight, other = %c[a + b - i].id, "routed");
        Some(i)
    }
}

/// Least expected delay: the engine where the shard is expected to *finish* first, from the
/// ledger's expected work, the learned speed and the kind's cost
/// (`wait + shard time on that engine`, see [`Candidate::expected_wait_us`]).
///
/// The predictive variant adds two things: the forecast of queued load the ledger cannot see
/// (shards other managers or other producers put on the queue), and a cap per engine that
/// takes it out of the choice; with every engine at its cap, the shard goes to the shared
/// queue. The cap is `cap × slots` unfinished shards, and also a backlog of at most `cap`
/// shard times of the *fastest* engine per slot: a slow engine closes after proportionally
/// fewer shards, so a burst does not park a long backlog on it while faster engines could
/// take the surplus from the shared queue.
///
/// With [`LeastExpectedDelay::holding`], shards that find every engine at its cap wait in the
/// manager instead ([`crate::hold`]).
#[derive(Debug, Default)]
pub struct LeastExpectedDelay {
    cap: Option<f64>,
    forecast: bool,
    hold: bool,
    late_binding: bool,
    start: usize,
}

impl LeastExpectedDelay {
    /// Plain least expected delay (no cap, no forecast).
    pub fn plain() -> Self {
        LeastExpectedDelay::default()
    }

    /// The predictive policy: a cap of `cap × slots` unfinished shards per engine, and the
    /// forecast when `forecast` is set.
    pub fn predictive(cap: f64, forecast: bool) -> Self {
        LeastExpectedDelay {
            cap: Some(cap),
            forecast,
            hold: false,
            late_binding: false,
            start: 0,
        }
    }

    /// With a cap, hold the overflow in the manager rather than send it to the shared queue;
    /// with `late_binding`, the hold sends a shard whose engines are alike only to a free
    /// slot ([`HoldRule::may_take`]).
    pub fn holding(mut self, hold: bool, late_binding: bool) -> Self {
        self.hold = hold && self.cap.is_some();
        self.late_binding = late_binding;
        self
    }
}

impl Router for LeastExpectedDelay {
    fn name(&self) -> &'static str {
        match (self.cap, self.forecast, self.hold) {
            (None, _, _) => "least-expected-delay",
            (Some(_), true, true) => "predictive",
            (Some(_), true, false) => "predictive-shared",
            (Some(_), false, _) => "predictive-no-forecast",
        }
    }

    fn choose(&mut self, c: &[Candidate]) -> Option<usize> {
        self.start = self.start.wrapping_add(1);
        let forecast = self.forecast;
        let cap = self.cap;
        let fastest = fastest_us(c);
        let open = |e: &Candidate| cap.is_none_or(|k| within_cap(e, k, fastest, forecast));
        let finish = |i: usize| {
            let e = &c[i];
            if open(e) {
                e.expected_wait_us(forecast) + e.shard_us
            } else {
                f64::INFINITY
            }
        };
        let i = min_rotating(c.len(), self.start, finish)?;
        if !finish(i).is_finite() {
            trace!(
                policy = self.name(),
                hold = self.hold,
                "every engine at its cap; shared queue unless held"
            );
            return None;
        }
        trace!(
            policy = self.name(),
            engine = %c[i].id,
            finish_us = finish(i),
            in_flight = c[i].in_flight,
            work_us = c[i].work_us,
            shard_us = c[i].shard_us,
            hidden = c[i].hidden,
            "routed"
        );
        Some(i)
    }

    fn holds(&self) -> Option<HoldRule> {
        let cap = self.cap?;
        self.hold.then_some(HoldRule {
            cap,
            forecast: self.forecast,
            late_binding: self.late_binding,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::three;
    use super::*;

    fn place(r: &mut dyn Router, c: &mut [Candidate], n: usize) -> Vec<usize> {
        let mut counts = vec![0; c.len() + 1];
        for _ in 0..n {
            match r.choose(c) {
                Some(i) => {
                    c[i].assign();
                    counts[i] += 1;
                }
                None => counts[c.len()] += 1,
            }
        }
        counts
    }

    /// Sampled depth alone piles onto the engine that looked emptiest; adding the ledger's
    /// sends since the sample spreads the same shards.
    #[test]
    fn stale_depth_herds_unless_corrected() {
        let mut c = three(1.0);
        c[0].depth = Some(0);
        c[1].depth = Some(2);
        c[2].depth = Some(2);
        let stale = place(&mut JoinShortestDepth::new(false), &mut c.clone(), 12);
        assert_eq!(stale[0], 12);
        let fixed = place(&mut JoinShortestDepth::new(true), &mut c, 12);
        assert!(fixed[1] >= 3 && fixed[2] >= 3, "{fixed:?}");
    }

    /// P2C never picks the busier of the two it samples: with one engine far busier, it gets
    /// nothing.
    #[test]
    fn p2c_avoids_the_busy_engine() {
        let mut c = three(1.0);
        c[2].in_flight = 1_000;
        let counts = place(&mut PowerOfTwo::default(), &mut c, 100);
        assert_eq!(counts[2], 0, "{counts:?}");
    }

    /// On engines 1/1/0.25, expected delay gives the slow engine a small share, not a third.
    #[test]
    fn expected_delay_is_speed_aware() {
        let mut c = three(10_000.0);
        c[2].shard_us = 40_000.0;
        let counts = place(&mut LeastExpectedDelay::plain(), &mut c, 90);
        assert!(counts[2] < 15 && counts[2] > 0, "{counts:?}");
        assert_eq!(counts[..3].iter().sum::<usize>(), 90);
    }

    /// The predictive policy sees forecast hidden load; without the forecast it does not.
    #[test]
    fn forecast_moves_shards_off_hidden_load() {
        let mut c = three(10_000.0);
        c[0].hidden = 40.0;
        c[0].hidden_us = 400_000.0;
        let with = place(
            &mut LeastExpectedDelay::predictive(8.0, true),
            &mut c.clone(),
            30,
        );
        let without = place(&mut LeastExpectedDelay::predictive(8.0, false), &mut c, 30);
        assert_eq!(with[0], 0, "{with:?}");
        assert!(without[0] >= 8, "{without:?}");
    }

    /// A slow engine reaches its cap after fewer shards: it fills its free slots, but queues
    /// nothing behind them (its backlog is past `cap` fastest-shard times per slot), while the
    /// fast engines queue a shard per slot; the surplus goes to the shared queue.
    #[test]
    fn slow_engine_caps_after_fewer_shards() {
        let mut c = three(10_000.0);
        c[2].shard_us = 40_000.0;
        let counts = place(&mut LeastExpectedDelay::predictive(2.0, false), &mut c, 30);
        assert_eq!(counts, vec![8, 8, 4, 10]);
    }

    /// An engine with a free slot takes a short shard even when the long shards running on its
    /// other slots put its backlog past the cap: the shard starts at once.
    #[test]
    fn a_free_slot_is_never_capped() {
        let mut c = three(10_000.0);
        for e in &mut c {
            e.in_flight = 3;
            e.work_us = 3.0 * 80_000.0;
        }
        let counts = place(&mut LeastExpectedDelay::predictive(2.0, false), &mut c, 4);
        assert_eq!(counts, vec![1, 1, 1, 1]);
    }

    /// With every engine at its cap, shards go to the shared queue.
    #[test]
    fn cap_overflows_to_the_shared_queue() {
        let mut c = three(1.0);
        let counts = place(&mut LeastExpectedDelay::predictive(1.0, false), &mut c, 15);
        assert_eq!(counts, vec![4, 4, 4, 3]);
    }
}
