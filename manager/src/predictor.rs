//! The Load Prediction Engine: the ledger, the history, the sampled depths and their
//! forecasts, combined into what the shard-count decision ([`crate::plan`]) and the routers
//! ([`crate::route`]) read.

use std::sync::Arc;
use std::time::{Duration, Instant};

use shardline::locality::Locality;
use tokio::sync::Notify;
use uuid::Uuid;

use crate::depth::Depths;
use crate::engines::Engine;
use crate::flow::Flow;
use crate::forecast::Forecasts;
use crate::hedge::Lateness;
use crate::history::History;
use crate::ledger::{Ledger, Reservation, Sent};
use crate::locality::{Fit, Localizer};
use crate::plan::{Capacity, Model};
use crate::route::{Candidate, Router};

/// One request's shards, as placement sees them.
#[derive(Debug, Clone, Copy)]
pub struct Shards<'a> {
    /// The request.
    pub request: Uuid,
    /// Its kind.
    pub kind: &'a str,
    /// The size of one shard, in the kind's units.
    pub size: f64,
    /// How many shards.
    pub total: u32,
    /// Where their data lives.
    pub locality: &'a Locality,
}

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
    /// Woken on each completion event: a slot may have freed for a held shard.
    pub freed: Arc<Notify>,
    /// Whether shards are placed with their locality (`--locality-routing`).
    pub locality: bool,
    /// How late results come against their expected time: kept only while hedging is on
    /// (`--hedge`), so that a completion costs nothing more without it.
    pub lateness: Option<Arc<Lateness>>,
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
            freed: Arc::default(),
            locality: true,
            lateness: None,
        }
    }

    /// The shard-count model for `kind` on `engines`, once the kind's cost line is trusted.
    pub fn model(&self, kind: &str, engines: &[Engine]) -> Option<Model> {
        let (a_us, b_us) = self.history.line(kind)?;
        let ids: Vec<&str> = engines.iter().map(|e| e.id.as_str()).collect();
        let speeds = self.history.speeds(&ids);
        let overheads = self.history.overheads(kind);
        // Shards on the shared queue will run on whichever slots free first: spread their
        // work over the engines by capacity, as if each had taken its share.
        let shared_us = self.ledger.load(crate::ledger::SHARED).work_us;
        let capacity: f64 = engines
            .iter()
            .zip(&speeds)
            .map(|(e, s)| f64::from(e.slots) * s)
            .sum();
        Some(Model {
            a_us,
            b_us,
            engines: engines
                .iter()
                .zip(speeds)
                .map(|(e, speed)| Capacity {
                    slots: e.slots,
                    speed,
                    backlog_us: self.ledger.load(&e.id).work_us
                        + shared_us * f64::from(e.slots) * speed / capacity.max(f64::MIN_POSITIVE),
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
                // The forecast series is already net of this manager's own shards.
                if let Some(hidden) = self.forecasts.hidden_in(&e.id, ahead, self.step) {
                    c.hidden = hidden.max(0.0);
                    let per = self.history.mean_shard_us(&e.id).unwrap_or(c.shard_us);
                    c.hidden_us = c.hidden * per;
                }
                c
            })
            .collect()
    }

    /// The per-shard locality adjustment for shards of `kind` keyed by `locality` on
    /// `engines` (see [`crate::locality`]); `None` when nothing is keyed or locality routing is
    /// off.
    pub fn localizer<'a>(
        &self,
        kind: &str,
        locality: &'a Locality,
        engines: &'a [Engine],
        candidates: &[Candidate],
    ) -> Option<Localizer<'a>> {
        if !self.locality {
            return None;
        }
        Localizer::new(locality, engines, candidates, self.history.miss(kind))
    }

    /// Route every shard of `shards` with `router` and enter each one routed to an engine in
    /// the ledger at once; `None` is the shared queue. Keyed shards are placed with their
    /// locality ([`Predictor::localizer`]).
    ///
    /// Call it while holding the router, so that the next request's candidates see these
    /// shards before they are published (see [`crate::ledger`]). The reservation takes them out
    /// of the ledger again unless the caller goes on to publish them.
    pub fn place(
        &self,
        router: &mut dyn Router,
        shards: &Shards<'_>,
        engines: &[Engine],
    ) -> (Vec<Option<String>>, Reservation<'_>) {
        let Shards {
            request,
            kind,
            size,
            total,
            locality,
        } = *shards;
        let mut candidates = self.candidates(kind, size, engines);
        let local = self.localizer(kind, locality, engines, &candidates);
        let kind: Arc<str> = kind.into();
        let mut placed = Vec::new();
        let routes = (0..total)
            .map(|index| {
                if let Some(l) = &local {
                    l.apply(index, &mut candidates);
                }
                let i = router.choose(&candidates)?;
                self.enter(request, index, &mut candidates[i], &kind, size);
                placed.push(index);
                Some(candidates[i].id.clone())
            })
            .collect();
        (routes, self.ledger.reservation(request, placed))
    }

    /// Enter shards `indices` of `request` in the ledger as sent to the shared queue
    /// ([`crate::ledger::SHARED`]), each expected to take the kind's predicted time (the
    /// default shard time while the kind has none).
    pub fn enter_shared(
        &self,
        request: Uuid,
        indices: impl IntoIterator<Item = u32>,
        kind: &Arc<str>,
        size: f64,
    ) {
        let expected_us = self
            .history
            .predict(kind, size)
            .unwrap_or(self.default_shard_us);
        let at = Instant::now();
        for index in indices {
            let sent = Sent {
                engine: crate::ledger::SHARED.to_owned(),
                kind: kind.clone(),
                size,
                expected_us,
                idle: false,
                fit: Fit::Unkeyed,
                at,
                due_us: expected_us,
                body: None,
                copy: None,
            };
            self.ledger.sent(request, index, sent);
        }
    }

    /// Enter shard `index` of `request` in the ledger as sent to `c`, and count it on `c`.
    pub fn enter(&self, request: Uuid, index: u32, c: &mut Candidate, kind: &Arc<str>, size: f64) {
        let sent = Sent {
            engine: c.id.clone(),
            kind: kind.clone(),
            size,
            expected_us: c.shard_us,
            idle: c.in_flight < c.slots as usize,
            fit: c.fit,
            at: Instant::now(),
            due_us: c.expected_wait_us(false) + c.shard_us,
            body: None,
            copy: None,
        };
        c.assign();
        self.ledger.sent(request, index, sent);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::LeastExpectedDelay;

    fn engines() -> Vec<Engine> {
        ["a", "b", "c"]
            .into_iter()
            .map(|id| Engine::new(id, 4, &["k"]))
            .collect()
    }

    fn shards(total: u32, locality: &Locality) -> Shards<'_> {
        Shards {
            request: Uuid::new_v4(),
            kind: "k",
            size: 1.0,
            total,
            locality,
        }
    }

    fn routed(routes: &[Option<String>]) -> usize {
        routes.iter().filter(|r| r.is_some()).count()
    }

    /// Two requests placed back to back, neither published yet, share the in-flight cap: the
    /// second sees the first's shards (otherwise each request of a burst sees the same empty
    /// engines).
    #[test]
    fn placements_see_earlier_unpublished_placements() {
        let p = Predictor::new(Duration::from_millis(250), 64, 10_000.0);
        let mut router = LeastExpectedDelay::predictive(1.0, false);
        let (first, _a) = p.place(&mut router, &shards(8, &Locality::Anywhere), &engines());
        let (second, _b) = p.place(&mut router, &shards(8, &Locality::Anywhere), &engines());
        assert_eq!(routed(&first), 8);
        assert_eq!(routed(&second), 4, "{second:?}");
    }

    /// Shards keyed to one engine's data go there while its queue is shorter than a remote
    /// read (the miss factor), then spread: locality is bounded by load. Without locality
    /// routing the same shards spread evenly.
    #[test]
    fn keyed_shards_prefer_their_holder_within_a_remote_read() {
        let engines: Vec<Engine> = engines()
            .into_iter()
            .map(|e| if e.id == "a" { e.holding(&["p0"]) } else { e })
            .collect();
        let keyed = Locality::Request(shardline::locality::LocalityKey::parse("p0").unwrap());
        let count = |p: &Predictor| {
            let mut router = LeastExpectedDelay::plain();
            let (routes, _r) = p.place(&mut router, &shards(12, &keyed), &engines);
            let n =
                ["a", "b", "c"].map(|e| routes.iter().filter(|r| r.as_deref() == Some(e)).count());
            // Remote shards enter the ledger with the miss in their expected time.
            let work_b = p.ledger.load("b").work_us;
            assert!(
                (work_b - 2.0 * 10_000.0 * n[1] as f64).abs() < 1e-6 || !p.locality,
                "{work_b}"
            );
            n
        };
        let p = Predictor::new(Duration::from_millis(250), 64, 10_000.0);
        let [a, b, c] = count(&p);
        assert!(a >= 5 && a > b.max(c) && b >= 2 && c >= 2, "{a} {b} {c}");
        assert_eq!(a + b + c, 12);
        let off = Predictor {
            locality: false,
            ..Predictor::new(Duration::from_millis(250), 64, 10_000.0)
        };
        assert_eq!(count(&off), [4, 4, 4]);
    }

    /// A placement whose request stops before publishing leaves nothing in the ledger.
    #[test]
    fn an_abandoned_placement_frees_its_engines() {
        let p = Predictor::new(Duration::from_millis(250), 64, 10_000.0);
        let mut router = LeastExpectedDelay::predictive(1.0, false);
        drop(p.place(&mut router, &shards(8, &Locality::Anywhere), &engines()));
        let (again, kept) = p.place(&mut router, &shards(12, &Locality::Anywhere), &engines());
        assert_eq!(routed(&again), 12);
        kept.keep();
        let total: usize = ["a", "b", "c"].iter().map(|e| p.ledger.in_flight(e)).sum();
        assert_eq!(total, 12);
    }

    /// A shard sent to the shared queue is in the ledger under the shared name, and its
    /// completion teaches the history the speed of the engine that ran it, as a routed
    /// shard's does.
    #[test]
    fn shared_shards_teach_the_engine_that_ran_them() {
        let p = Predictor::new(Duration::from_millis(250), 64, 1_000.0);
        let kind: Arc<str> = Arc::from("k");
        let request = Uuid::new_v4();
        p.enter_shared(request, 0..20, &kind, 1.0);
        assert_eq!(p.ledger.in_flight(crate::ledger::SHARED), 20);
        for i in 0..20 {
            crate::events::Event::parse(&format!("a {request} {i} 4000"))
                .expect("parses")
                .apply(&p.ledger, &p.history, None);
        }
        assert_eq!(p.ledger.in_flight(crate::ledger::SHARED), 0);
        assert_eq!(p.history.mean_shard_us("a"), Some(4_000.0));
        assert!(
            p.history.line("k").is_some(),
            "the kind's cost line is learned"
        );
    }

    /// The shard-count model counts the shared queue's shards as backlog, spread over the
    /// engines by capacity (they run wherever slots free first).
    #[test]
    fn the_model_sees_the_shared_backlog() {
        let p = Predictor::new(Duration::from_millis(250), 64, 1_000.0);
        for _ in 0..50 {
            for e in ["a", "b", "c"] {
                p.history.observe("k", 1.0, e, 1_000.0);
                p.history.observe("k", 3.0, e, 3_000.0);
            }
        }
        let idle = p.model("k", &engines()).expect("a trusted line");
        assert!(idle.engines.iter().all(|e| e.backlog_us == 0.0));
        let kind: Arc<str> = Arc::from("k");
        let request = Uuid::new_v4();
        p.enter_shared(request, 0..12, &kind, 1.0);
        let busy = p.model("k", &engines()).expect("a trusted line");
        let per_shard = p.history.predict("k", 1.0).expect("predicts");
        for e in &busy.engines {
            assert!((e.backlog_us - 4.0 * per_shard).abs() < 1e-6, "{busy:?}");
        }
    }
}
