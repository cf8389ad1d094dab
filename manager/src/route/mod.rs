//! Routing policies: which engine each shard goes to, all behind one [`Router`] trait and
//! selected by [`crate::config::RouterKind`].
//!
//! The dispatcher builds one [`Candidate`] per live engine for each request, from the ledger,
//! the history, the depth samples and the forecasts, then asks the router once per shard and
//! [`Candidate::assign`]s the shard to the chosen engine, so later shards of the same request
//! see the earlier ones. A router answering `None` sends the shard to the shared queue that
//! every worker consumes (late binding).
//!
//! | policy | signal |
//! |---|---|
//! | [`RoundRobin`] | none |
//! | [`WeightedRoundRobin`] | configured weights |
//! | [`Random`] | none |
//! | [`JoinShortestDepth`] | sampled broker depth (optionally plus shards sent since the sample) |
//! | [`PowerOfTwo`] | the ledger's in-flight count, two random engines |
//! | [`LeastExpectedDelay`] | ledger × learned speed × per-kind cost; optionally an in-flight cap and the forecast |
//! | [`Pull`] | none: everything to the shared queue |

mod balanced;
mod fixed;

pub use balanced::{JoinShortestDepth, LeastExpectedDelay, PowerOfTwo};
pub use fixed::{Pull, Random, RoundRobin, WeightedRoundRobin};

/// One engine as a router sees it while placing one request's shards.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    /// Engine id.
    pub id: String,
    /// Shards it runs at once.
    pub slots: u32,
    /// Unfinished shards the ledger has on it.
    pub in_flight: usize,
    /// Their expected processing time on this engine, µs.
    pub work_us: f64,
    /// Expected processing time of one of this request's shards on this engine, µs.
    pub shard_us: f64,
    /// Latest sampled ready depth of its queue.
    pub depth: Option<u32>,
    /// Shards sent to it since that sample.
    pub sent_since_sample: u64,
    /// Forecast ready messages the ledger cannot account for (0 without a forecast).
    pub hidden: f64,
    /// Their expected processing time, µs.
    pub hidden_us: f64,
}

impl Candidate {
    /// A candidate with no load and no measurements (for tests and cold starts).
    pub fn idle(id: impl Into<String>, slots: u32, shard_us: f64) -> Self {
        Candidate {
            id: id.into(),
            slots: slots.max(1),
            in_flight: 0,
            work_us: 0.0,
            shard_us,
            depth: None,
            sent_since_sample: 0,
            hidden: 0.0,
            hidden_us: 0.0,
        }
    }

    /// Account for one more shard of this request sent here.
    pub fn assign(&mut self) {
        self.in_flight += 1;
        self.work_us += self.shard_us;
        self.sent_since_sample += 1;
    }

    /// Expected work queued or running here, µs; with `forecast`, hidden load counts too.
    pub fn backlog_us(&self, forecast: bool) -> f64 {
        self.work_us + if forecast { self.hidden_us } else { 0.0 }
    }

    /// Expected time before a new shard starts here, µs: 0 while a slot is free, otherwise the
    /// queued work spread over the slots. With `forecast`, hidden load counts too.
    pub fn expected_wait_us(&self, forecast: bool) -> f64 {
        let hidden = if forecast { self.hidden } else { 0.0 };
        if (self.in_flight as f64 + hidden) < f64::from(self.slots) {
            0.0
        } else {
            self.backlog_us(forecast) / f64::from(self.slots)
        }
    }
}

/// Picks an engine for each shard.
pub trait Router: Send {
    /// Policy name, for logs and reports.
    fn name(&self) -> &'static str;

    /// Index into `candidates` (never empty) of the engine for the next shard, or `None` for
    /// the shared queue.
    fn choose(&mut self, candidates: &[Candidate]) -> Option<usize>;
}

/// Index of the smallest key, scanning from `start` so that ties rotate.
fn min_rotating(n: usize, start: usize, key: impl Fn(usize) -> f64) -> Option<usize> {
    (0..n)
        .map(|k| (start + k) % n)
        .min_by(|&a, &b| key(a).total_cmp(&key(b)))
}

#[cfg(test)]
pub(crate) fn three(shard_us: f64) -> Vec<Candidate> {
    ["a", "b", "c"]
        .into_iter()
        .map(|id| Candidate::idle(id, 4, shard_us))
        .collect()
}
