//! Routing policies: which engine each shard goes to, all behind one [`Router`] trait and
//! selected by [`crate::config::RouterKind`].
//!
//! The dispatcher builds one [`Candidate`] per live engine for each request, from the ledger,
//! the history, the depth samples and the forecasts, then asks the router once per shard and
//! [`Candidate::assign`]s the shard to the chosen engine, so later shards of the same request
//! see the earlier ones. A router answering `None` sends the shard to the shared queue that
//! every worker consumes (late binding), unless the router [`Router::holds`] its overflow: then
//! the shard waits in the manager until an engine may take it ([`crate::hold`]).
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

use crate::locality::Fit;

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
    /// How the shard being placed sits with this engine's data ([`crate::locality`]); its
    /// `shard_us` already counts a remote read.
    pub fit: Fit,
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
            fit: Fit::Unkeyed,
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
        self.wait_behind_us(forecast, Ahead::default())
    }

    /// [`Candidate::expected_wait_us`] with `ahead` more shards planned here first.
    pub fn wait_behind_us(&self, forecast: bool, ahead: Ahead) -> f64 {
        let hidden = if forecast { self.hidden } else { 0.0 };
        if ((self.in_flight + ahead.shards) as f64 + hidden) < f64::from(self.slots) {
            0.0
        } else {
            (self.backlog_us(forecast) + ahead.work_us) / f64::from(self.slots)
        }
    }
}

/// Shards planned on an engine ahead of the one being placed, not yet sent.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Ahead {
    /// How many.
    pub shards: usize,
    /// Their expected processing time there, µs.
    pub work_us: f64,
}

/// Picks an engine for each shard.
pub trait Router: Send {
    /// Policy name, for logs and reports.
    fn name(&self) -> &'static str;

    /// Index into `candidates` (never empty) of the engine for the next shard, or `None` for
    /// the shared queue (or, when the router [`Router::holds`], for the manager's hold).
    fn choose(&mut self, candidates: &[Candidate]) -> Option<usize>;

    /// How shards this router cannot place now wait in the manager for an engine, if they do;
    /// `None` sends them to the shared queue.
    fn holds(&self) -> Option<HoldRule> {
        None
    }
}

/// How a router that holds its overflow decides when a held shard may go, and where
/// ([`crate::hold`]): to the engine that would finish it first behind everything already
/// held, once that engine is below its cap.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HoldRule {
    /// In-flight cap, as in [`LeastExpectedDelay::predictive`].
    pub cap: f64,
    /// Whether forecast hidden load counts.
    pub forecast: bool,
    /// Whether a shard whose engines are alike ([`crate::hold::SAME_SPEED`]) goes to the
    /// shared queue rather than to an engine: late binding (see [`crate::hold`]).
    pub late_binding: bool,
}

impl HoldRule {
    /// Whether `e` may take a held shard now: a free slot, or fewer than `cap × slots`
    /// unfinished shards. There is no time term here (as in [`LeastExpectedDelay::predictive`]):
    /// it is measured in this shard's own time, so a short shard would wait in the manager
    /// for a long backlog to drain almost to nothing, while the shared queue it would go to
    /// without the hold lets the first free slot take it. Which engine a held shard goes to
    /// is the plan's choice ([`HoldRule::finish_us`]), so a slow engine that is open takes one
    /// only when it would finish it first.
    pub fn open(&self, e: &Candidate) -> bool {
        e.expected_wait_us(self.forecast) == 0.0
            || (e.in_flight as f64) < self.cap * f64::from(e.slots)
    }

    /// When a shard sent to `e` now, behind `ahead`, is expected to finish, µs from now.
    pub fn finish_us(&self, e: &Candidate, ahead: Ahead) -> f64 {
        e.wait_behind_us(self.forecast, ahead) + e.shard_us
    }
}

/// See [`HoldRule::open`]. An engine with a free slot is always open: a shard sent there
/// starts at once. (The time term counts running work too, so without this a slow engine busy
/// with long shards stayed closed to short ones while a slot sat idle.)
fn within_cap(e: &Candidate, cap: f64, fastest_us: f64, forecast: bool) -> bool {
    let slots = f64::from(e.slots);
    e.expected_wait_us(forecast) == 0.0
        || ((e.in_flight as f64) < cap * slots && e.backlog_us(forecast) / slots < cap * fastest_us)
}

/// The smallest expected shard time among `c`, µs.
pub(crate) fn fastest_us(c: &[Candidate]) -> f64 {
    c.iter().map(|e| e.shard_us).fold(f64::INFINITY, f64::min)
}

/// Index of the smallest key, scanning from `start` so that ties rotate.
pub(crate) fn min_rotating(n: usize, start: usize, key: impl Fn(usize) -> f64) -> Option<usize> {
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
