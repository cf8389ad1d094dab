//! Routing policies: which engine a shard goes to. Policies are swappable behind [`Router`].

use tracing::trace;

use crate::ledger::Ledger;

/// Picks an engine for each shard.
pub trait Router: Send {
    /// Index into `engines` (never empty) of the engine for the next shard.
    fn choose(&mut self, engines: &[String], ledger: &Ledger) -> usize;
}

/// Engines in turn.
#[derive(Debug, Default)]
pub struct RoundRobin {
    next: usize,
}

impl Router for RoundRobin {
    fn choose(&mut self, engines: &[String], _: &Ledger) -> usize {
        let i = self.next % engines.len();
        self.next = self.next.wrapping_add(1);
        i
    }
}

/// The engine with the fewest unfinished shards in the ledger; among equals, the scan starts
/// one further each time so ties spread evenly.
#[derive(Debug, Default)]
pub struct LeastInFlight {
    start: usize,
}

impl Router for LeastInFlight {
    fn choose(&mut self, engines: &[String], ledger: &Ledger) -> usize {
        let n = engines.len();
        let start = self.start % n;
        self.start = self.start.wrapping_add(1);
        let chosen = (0..n)
            .map(|k| (start + k) % n)
            .min_by_key(|&i| ledger.in_flight(&engines[i]))
            .unwrap_or(0);
        trace!(engine = %engines[chosen], load = ledger.in_flight(&engines[chosen]), "routed");
        chosen
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn engines() -> Vec<String> {
        vec!["a".into(), "b".into(), "c".into()]
    }

    /// Round robin visits every engine in turn.
    #[test]
    fn round_robin_cycles() {
        let mut r = RoundRobin::default();
        let l = Ledger::default();
        let picks: Vec<usize> = (0..6).map(|_| r.choose(&engines(), &l)).collect();
        assert_eq!(picks, vec![0, 1, 2, 0, 1, 2]);
    }

    /// Least-in-flight avoids the loaded engine and spreads ties.
    #[test]
    fn least_in_flight_prefers_idle_engines() {
        let mut r = LeastInFlight::default();
        let l = Ledger::default();
        let e = engines();
        for i in 0..5 {
            l.sent(Uuid::new_v4(), i, "a");
        }
        let mut counts = [0; 3];
        for i in 0..10 {
            let c = r.choose(&e, &l);
            counts[c] += 1;
            l.sent(Uuid::nil(), i, &e[c]);
        }
        // b and c absorb the first shards until they catch up with a's five.
        assert!(counts[1] >= 4 && counts[2] >= 4, "{counts:?}");
        assert_eq!(counts.iter().sum::<i32>(), 10);
    }
}
