//! Broker depth: each live engine queue's ready count, sampled with a passive declare.
//!
//! A passive declare answers with the *ready* messages only (not the unacked ones a worker
//! holds), and a passive declare of a missing queue closes its channel. So the sampler uses a
//! dedicated channel, rebuilds it after any error, and keeps the latest sample per engine with
//! the ledger's "sent" counter at that moment (for "sampled depth plus what I sent since").
//!
//! The bounded series per engine that [`crate::forecast`] fits is not the depth itself but the
//! part of it the ledger cannot explain: ready messages beyond this manager's own unfinished
//! shards that do not fit in the engine's slots, taken at the same moment. Fitting the raw
//! depth made the forecast lag this manager's own traffic: after its own queue drained, the
//! smoothed forecast still showed it, and the difference read as load from elsewhere.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use shardline::Names;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::engines::Engines;
use crate::ledger::Ledger;

/// One sample of one engine queue.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// Ready messages.
    pub ready: u32,
    /// When it was taken.
    pub at: Instant,
    /// The ledger's `sent_total` for the engine at that moment.
    pub sent_total: u64,
    /// The ledger's unfinished shards on the engine beyond its slots at that moment: at most
    /// this many of the ready messages are this manager's own.
    pub own_ready: u32,
}

impl Sample {
    /// Ready messages the ledger cannot account for (sent by other managers or producers, or
    /// standing in for their messages that hold the engine's slots).
    pub fn hidden(&self) -> f64 {
        f64::from(self.ready.saturating_sub(self.own_ready))
    }
}

#[derive(Debug, Default)]
struct Series {
    values: VecDeque<f64>,
    last: Option<Sample>,
}

/// The latest depth sample and a bounded hidden-load series per engine. Shared by the sampler, the forecaster and the routers.
#[derive(Debug)]
pub struct Depths {
    capacity: usize,
    inner: RwLock<HashMap<String, Series>>,
}

impl Depths {
    /// Keep at most `capacity` points per engine.
    pub fn new(capacity: usize) -> Self {
        Depths {
            capacity: capacity.max(1),
            inner: RwLock::default(),
        }
    }

    /// Add a sample.
    pub fn record(&self, engine: &str, sample: Sample) {
        let mut g = self.write();
        let s = g.entry(engine.to_owned()).or_default();
        if s.values.len() == self.capacity {
            s.values.pop_front();
        }
        s.values.push_back(sample.hidden());
        s.last = Some(sample);
    }

    /// The latest sample of `engine`.
    pub fn latest(&self, engine: &str) -> Option<Sample> {
        self.read().get(engine)?.last
    }

    /// The hidden-load series ([`Sample::hidden`]) of every engine, oldest point first.
    pub fn series(&self) -> Vec<(String, Vec<f64>)> {
        self.read()
            .iter()
            .map(|(e, s)| (e.clone(), s.values.iter().copied().collect()))
            .collect()
    }

    /// Drop the series of engines not in `live`.
    pub fn retain(&self, live: &[&str]) {
        self.write().retain(|e, _| live.contains(&e.as_str()));
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Series>> {
        self.inner
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Series>> {
        self.inner
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Everything the sampler needs.
pub struct Sampler {
    /// Broker connection (the sampler opens its own channel on it).
    pub conn: Arc<lapin::Connection>,
    /// Queue names.
    pub names: Names,
    /// Live engines to sample.
    pub engines: Engines,
    /// Source of the "sent" counters.
    pub ledger: Arc<Ledger>,
    /// Where samples go.
    pub depths: Arc<Depths>,
    /// Sampling period.
    pub every: Duration,
}

impl Sampler {
    /// Sample every period until cancelled.
    pub async fn run(self, stop: CancellationToken) {
        let mut tick = tokio::time::interval(self.every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut channel: Option<lapin::Channel> = None;
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            let engines = self.engines.snapshot();
            let live: Vec<&str> = engines.iter().map(|e| e.id.as_str()).collect();
            self.depths.retain(&live);
            for e in &engines {
                let engine = e.id.as_str();
                let ch = match &channel {
                    Some(ch) if ch.status().connected() => ch.clone(),
                    _ => match self.conn.create_channel().await {
                        Ok(ch) => {
                            channel = Some(ch.clone());
                            ch
                        }
                        Err(error) => {
                            debug!(%error, "opening the depth probe channel failed; retrying");
                            break;
                        }
                    },
                };
                let load = self.ledger.load(engine);
                let own_ready = load.in_flight.saturating_sub(e.slots as usize);
                let passive = QueueDeclareOptions {
                    passive: true,
                    ..QueueDeclareOptions::default()
                };
                let queue = self.names.engine_queue(engine);
                match ch
                    .queue_declare(queue.as_str().into(), passive, FieldTable::default())
                    .await
                {
                    Ok(q) => self.depths.record(
                        engine,
                        Sample {
                            ready: q.message_count(),
                            at: Instant::now(),
                            sent_total: load.sent_total,
                            own_ready: u32::try_from(own_ready).unwrap_or(u32::MAX),
                        },
                    ),
                    Err(error) => {
                        // That closed the channel; the next engine gets a new one.
                        debug!(%engine, %error, "depth probe failed; rebuilding its channel");
                        channel = None;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(ready: u32) -> Sample {
        Sample {
            ready,
            at: Instant::now(),
            sent_total: 0,
            own_ready: 0,
        }
    }

    /// The series holds what the ledger cannot explain: ready messages beyond this manager's
    /// own queued shards, never below zero; the latest sample keeps the raw depth.
    #[test]
    fn series_holds_the_depth_the_ledger_cannot_explain() {
        let d = Depths::new(8);
        for (ready, own_ready) in [(10, 6), (3, 5), (4, 0)] {
            d.record(
                "a",
                Sample {
                    own_ready,
                    ..sample(ready)
                },
            );
        }
        assert_eq!(d.series()[0].1, vec![4.0, 0.0, 4.0]);
        assert_eq!(d.latest("a").map(|s| s.ready), Some(4));
    }

    /// Series are bounded, oldest points dropped first; dead engines are forgotten.
    #[test]
    fn keeps_a_bounded_series() {
        let d = Depths::new(3);
        for i in 0..5 {
            d.record("a", sample(i));
        }
        d.record("b", sample(9));
        let mut s = d.series();
        s.sort_by(|x, y| x.0.cmp(&y.0));
        assert_eq!(s[0].1, vec![2.0, 3.0, 4.0]);
        assert_eq!(d.latest("a").map(|s| s.ready), Some(4));
        d.retain(&["b"]);
        assert!(d.latest("a").is_none() && d.latest("b").is_some());
    }
}
