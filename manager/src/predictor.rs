//! The Load Prediction Engine: the ledger, the history, the sampled depths and their
//! forecasts, combined into what the shard-count decision ([`crate::plan`]) and the routers
//! ([`crate::route`]) read.

use std::sync::Arc;
use std::time::Duration;

use crate::depth::Depths;
use crate::engines::Engine;
use crate::flow::Flow;
use crate::forecast::Forecasts;
use crate::history::History;
use crate::ledger::Ledger;
use crate::plan::{Capacity, Model};
use crate::route::Candidate;

/// Shared handles to everything the manager knows about load.
#[derive(Debug, Clone)]
pub struct Predictor {
    /// Unfinished shards per engine.
    pub ledger: Arc<Ledger>,
    /// Learned costs and speeds.
    pub history: Arc<History>,
    /// Request and shard rates.
    pub flow: Arc<Flow>,
    /// Sampled broker depths.
    pub depths: Arc<Depths>,
    /// Their forecasts.
    pub forecasts: Arc<Forecasts>,
    /// Depth sampling period (one forecast step).
    pub step: Duration,
    /// Expected shard time before anything is learned, µs.
    pub default_shard_us: f64,
}

impl Predictor {
    /// Empty state with the given settings.
    pub fn new(step: Duration, window: usize, default_shard_us: f64) -> Self {
        Predictor {
            ledger: Arc::default(),
            history: Arc::default(),
            flow: Arc::default(),
            depths: Arc::new(Depths::new(window)),
            forecasts: Arc::default(),
            step,
            default_shard_us,
        }
    }

    /// The shard-count model for `kind` on `engines`, once the kind's cost line is trusted.
    pub fn model(&self, kind: &str, engines: &[Engine]) -> Option<Model> {
        let (a_us, b_us) = self.history.line(kind)?;
        let ids: Vec<&str> = engines.iter().map(|e| e.id.as_str()).collect();
        let speeds = self.history.speeds(&ids);
        let overheads = self.history.overheads(kind);
        Some(Model {
            a_us,
            b_us,
            engines: engines
                .iter()
                .zip(speeds)
                .map(|(e, speed)| Capacity {
                    slots: e.slots,
                    speed,
                    backlog_us: self.ledger.load(&e.id).work_us,
                })
                .collect(),
            publish_us: overheads.publish_us,
            merge_us: overheads.merge_us,
            latency_us: overheads.latency_us,
            hold_us: overheads.hold_us,
            path_us: overheads.path_us,
            load: overheads.load,
            traffic: self.flow.traffic(kind),
            cv: self.history.cv(kind),
        })
    }

    /// One candidate per engine for shards of `size` of `kind`.
    pub fn candidates(&self, kind: &str, size: f64, engines: &[Engine]) -> Vec<Candidate> {
        let ids: Vec<&str> = engines.iter().map(|e| e.id.as_str()).collect();
        let speeds = self.history.speeds(&ids);
        let base = self
            .history
            .predict(kind, size)
            .unwrap_or(self.default_shard_us);
        engines
            .iter()
            .zip(speeds)
            .map(|(e, speed)| {
                let load = self.ledger.load(&e.id);
                let mut c = Candidate {
                    in_flight: load.in_flight,
                    work_us: load.work_us,
                    ..Candidate::idle(e.id.clone(), e.slots, base / speed.max(1e-3))
                };
                if let Some(sample) = self.depths.latest(&e.id) {
                    c.depth = Some(sample.ready);
                    c.sent_since_sample = load.sent_total.saturating_sub(sample.sent_total);
                }
                let ahead = Duration::from_secs_f64(c.expected_wait_us(false) / 1e6);
                if let Some(ready) = self.forecasts.ready_in(&e.id, ahead, self.step) {
                    // Ready messages the ledger accounts for: its shards beyond the slots.
                    let own = c.in_flight.saturating_sub(e.slots as usize) as f64;
                    c.hidden = (ready - own).max(0.0);
                    let per = self.history.mean_shard_us(&e.id).unwrap_or(c.shard_us);
                    c.hidden_us = c.hidden * per;
                }
                c
            })
            .collect()
    }
}
