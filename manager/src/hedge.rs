//! Hedged shards: a shard still out well past the time it was expected to take gets a second
//! copy on another engine. The first stored result wins (the resolver script's rule for any
//! duplicate), and the worker running the other copy stops it at its next check
//! ([`shardline::store::Store::wanted`]); a copy still queued when the result is stored is
//! skipped when it is picked up.
//!
//! # When is a shard late?
//!
//! Each shard enters the ledger with the time the router expected until its result
//! ([`Sent::due_us`]: the wait on its engine plus its processing time there). [`Lateness`]
//! keeps, per kind, the recent ratios of the time results took to that expectation. A shard is
//! late once it has been out for the `quantile` (p95 by default) of those ratios times its own
//! due time, and at least [`MIN_DELAY_US`]; before [`MIN_SAMPLES`] results of a kind,
//! [`PRIOR_RATIO`] stands in for the ratio.
//!
//! Every [`TICK`], [`crate::ledger::Ledger::overdue`] reads only the hedge-safe shards past
//! their due time (the ledger indexes them by sent + due time; a threshold is never below
//! the due time), so a look costs what is late, not what is out.
//!
//! # How much extra work?
//!
//! A [`Budget`]: each shard sent earns `share` of a copy (5% by default), with at most
//! [`BURST`] saved up; a copy spends one. Only kinds whose shards may run twice are hedged
//! ([`shardline::kind::Kind::hedge_safe`], or the kind's advert), only shards routed to an
//! engine (not those sent to a shared queue), and each at most once. The copy goes to the
//! engine, other than the first, expected to finish it first, by the router's arithmetic.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use shardline::amqp::{self, Published};
use shardline::message::Shard;
use shardline::metric;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::dispatch::{Dispatcher, shard_properties};
use crate::ledger::{HedgeCopy, Overdue, Sent};
use crate::route::Candidate;

/// Results of a kind needed before its own lateness quantile is trusted.
pub const MIN_SAMPLES: usize = 50;
/// Recent results per kind the quantile is taken over.
pub const KEPT: usize = 1_000;
/// The lateness ratio assumed for a kind with fewer than [`MIN_SAMPLES`] results.
pub const PRIOR_RATIO: f64 = 3.0;
/// No shard is hedged sooner than this after it was sent, µs: below it a copy's own trip
/// through the broker is most of what it could save.
pub const MIN_DELAY_US: f64 = 2_000.0;
/// Copies the budget may save up.
pub const BURST: f64 = 5.0;
/// How often the ledger is scanned for late shards.
pub const TICK: Duration = Duration::from_millis(5);
/// Default share of shards that may be hedged.
pub const DEFAULT_SHARE: f64 = 0.05;
/// Default quantile of lateness past which a shard is hedged.
pub const DEFAULT_QUANTILE: f64 = 0.95;

/// How hedging is tuned (`--hedge-share`, `--hedge-quantile`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Settings {
    /// Copies allowed per shard sent, over time.
    pub share: f64,
    /// Quantile of the lateness ratio past which a shard is late.
    pub quantile: f64,
}

/// How late results come against their expected time, per kind.
#[derive(Debug, Default)]
pub struct Lateness {
    ratios: Mutex<HashMap<Arc<str>, VecDeque<f64>>>,
}

impl Lateness {
    /// Learn that a shard of `kind` expected to take `due_us` gave its result after `took_us`.
    pub fn observe(&self, kind: &Arc<str>, took_us: f64, due_us: f64) {
        let ratio = took_us / due_us;
        if !ratio.is_finite() || ratio < 0.0 {
            return;
        }
        let mut g = self.lock();
        let ring = g.entry(kind.clone()).or_default();
        if ring.len() == KEPT {
            ring.pop_front();
        }
        ring.push_back(ratio);
    }

    /// The `q` quantile of each kind's ratios, for the kinds with [`MIN_SAMPLES`] or more.
    pub fn quantiles(&self, q: f64) -> HashMap<Arc<str>, f64> {
        self.lock()
            .iter()
            .filter(|(_, ring)| ring.len() >= MIN_SAMPLES)
            .map(|(kind, ring)| (kind.clone(), quantile(ring.iter().copied().collect(), q)))
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, VecDeque<f64>>> {
        self.ratios
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The `q` quantile of a non-empty `v` (nearest rank).
fn quantile(mut v: Vec<f64>, q: f64) -> f64 {
    let k = ((v.len() - 1) as f64 * q.clamp(0.0, 1.0)).round() as usize;
    *v.select_nth_unstable_by(k, f64::total_cmp).1
}

/// How long after sending a shard is late, µs, given its kind's lateness `ratio` if known.
pub fn threshold_us(sent: &Sent, ratio: Option<f64>) -> f64 {
    (sent.due_us * ratio.unwrap_or(PRIOR_RATIO).max(1.0)).max(MIN_DELAY_US)
}

/// The copies hedging may send: `share` of the shards sent, at most [`BURST`] saved up.
#[derive(Debug, Clone, PartialEq)]
pub struct Budget {
    share: f64,
    tokens: f64,
    /// The ledger's sent total when last refilled.
    seen: u64,
    /// Copies sent since then (the ledger counts them as sent too; they earn nothing).
    copies: u64,
}

impl Budget {
    /// A full budget, counting from a ledger that has sent `sent_total` shards.
    pub fn new(share: f64, sent_total: u64) -> Self {
        Budget {
            share,
            tokens: BURST,
            seen: sent_total,
            copies: 0,
        }
    }

    /// Earn `share` for each shard sent since the last refill.
    pub fn refill(&mut self, sent_total: u64) {
        let sent = sent_total
            .saturating_sub(self.seen)
            .saturating_sub(self.copies);
        self.tokens = (self.tokens + self.share * sent as f64).min(BURST);
        self.seen = sent_total;
        self.copies = 0;
    }

    /// Whether a copy may be sent now.
    pub fn has_copy(&self) -> bool {
        self.tokens >= 1.0
    }

    /// Spend one copy, if there is one.
    pub fn take(&mut self) -> bool {
        if !self.has_copy() {
            return false;
        }
        self.tokens -= 1.0;
        self.copies += 1;
        true
    }

    /// Give back a copy that was not sent.
    pub fn give_back(&mut self) {
        self.tokens = (self.tokens + 1.0).min(BURST);
        self.copies = self.copies.saturating_sub(1);
    }
}

/// Among `candidates`, the one expected to finish a shard sent now first.
pub fn first_to_finish(candidates: &[Candidate]) -> Option<usize> {
    (0..candidates.len()).min_by(|&a, &b| {
        let finish = |c: &Candidate| c.expected_wait_us(false) + c.shard_us;
        finish(&candidates[a]).total_cmp(&finish(&candidates[b]))
    })
}

/// Hedge late shards every [`TICK`] until `stop`.
pub async fn run(
    d: Arc<Dispatcher>,
    lateness: Arc<Lateness>,
    settings: Settings,
    stop: CancellationToken,
) {
    let mut budget = Budget::new(settings.share, d.predictor.ledger.sent_total());
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => hedge_late(&d, &lateness, settings, &mut budget).await,
        }
    }
}

/// Send a copy of each late shard while the budget lasts, the latest first.
async fn hedge_late(d: &Dispatcher, lateness: &Lateness, settings: Settings, budget: &mut Budget) {
    let ledger = &d.predictor.ledger;
    budget.refill(ledger.sent_total());
    if !budget.has_copy() {
        return;
    }
    let ratios = lateness.quantiles(settings.quantile);
    let late = ledger.overdue(|s| threshold_us(s, ratios.get(&s.kind).copied()));
    for shard in late {
        if !budget.take() {
            break;
        }
        if !send_copy(d, &shard).await {
            budget.give_back();
        }
    }
}

/// Send a copy of `late` to the engine expected to finish it first, other than its own;
/// whether one went.
async fn send_copy(d: &Dispatcher, late: &Overdue) -> bool {
    let engines: Vec<_> = d
        .engines
        .serving(&late.kind)
        .into_iter()
        .filter(|e| e.id != late.engine)
        .collect();
    let candidates = d.predictor.candidates(&late.kind, late.size, &engines);
    let Some(to) = first_to_finish(&candidates).map(|i| &candidates[i]) else {
        return false;
    };
    let copy = HedgeCopy {
        engine: to.id.clone(),
        expected_us: to.shard_us,
    };
    let ledger = &d.predictor.ledger;
    if !ledger.hedged(late.request, late.index, copy) {
        return false;
    }
    let id = Shard::message_id_of(late.request, late.index);
    let props = amqp::hedge_properties(shard_properties(&id, &late.kind));
    match amqp::publish_to_engine(&d.channel, &d.names, &to.id, &late.body, props).await {
        Ok(published) if published.is_returned(&id) => {
            debug!(engine = %to.id, "the hedge copy's engine left routing; not hedging");
            ledger.unhedged(late.request, late.index);
            false
        }
        Ok(published) => {
            metric::shard_hedged(&late.kind);
            debug!(
                request.id = %late.request,
                shard.index = late.index,
                from = %late.engine,
                to = %to.id,
                late = late.late,
                "hedged a late shard"
            );
            if let Published::Returned(other) = published
                && let Err(error) = d.to_shared(vec![*other]).await
            {
                warn!(%error, "sending a returned shard to the shared queue failed");
            }
            true
        }
        Err(error) => {
            warn!(%error, "publishing a hedge copy failed");
            ledger.unhedged(late.request, late.index);
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::entry;

    /// A kind's quantile appears once it has enough results and follows the recent ones.
    #[test]
    fn lateness_quantile_needs_samples() {
        let l = Lateness::default();
        let k: Arc<str> = "k".into();
        for _ in 0..MIN_SAMPLES - 1 {
            l.observe(&k, 1.0, 1.0);
        }
        assert!(l.quantiles(0.95).is_empty());
        l.observe(&k, 1.0, 1.0);
        assert_eq!(l.quantiles(0.95).get(&k), Some(&1.0));
        for i in 0..100 {
            l.observe(&k, f64::from(i + 1), 1.0);
        }
        let q = l.quantiles(0.95)[&k];
        assert!((90.0..=100.0).contains(&q), "{q}");
        l.observe(&k, 1.0, 0.0);
        assert_eq!(l.quantiles(0.95)[&k], q, "a zero due time teaches nothing");
    }

    /// The threshold is the due time scaled by the lateness ratio (never below 1), the prior
    /// without one, and never below the floor.
    #[test]
    fn threshold_scales_the_due_time() {
        let s = Sent {
            due_us: 10_000.0,
            ..entry("a", 1.0)
        };
        assert_eq!(threshold_us(&s, Some(1.5)), 15_000.0);
        assert_eq!(threshold_us(&s, Some(0.5)), 10_000.0);
        assert_eq!(threshold_us(&s, None), 10_000.0 * PRIOR_RATIO);
        let tiny = Sent {
            due_us: 10.0,
            ..entry("a", 1.0)
        };
        assert_eq!(threshold_us(&tiny, Some(2.0)), MIN_DELAY_US);
    }

    /// The budget starts full, earns `share` per shard sent (copies earn nothing), saves at
    /// most the burst, and gets back a copy not sent.
    #[test]
    fn budget_caps_the_copies() {
        let mut b = Budget::new(0.05, 100);
        let mut copies = 0;
        while b.take() {
            copies += 1;
        }
        assert_eq!(copies, BURST as u32);
        // 100 shards and the 5 copies sent since.
        b.refill(100 + 5 + 100);
        assert!(b.take() && b.take() && b.take() && b.take() && b.take());
        assert!(!b.take(), "100 shards earn 5 copies");
        b.give_back();
        assert!(b.take());
        b.refill(1_000_000);
        let mut saved = 0;
        while b.take() {
            saved += 1;
        }
        assert_eq!(
            saved, BURST as u32,
            "a long run without copies saves only the burst"
        );
    }

    /// The copy goes where the shard would finish first: a free slot beats a faster engine
    /// with a queue.
    #[test]
    fn copies_go_where_they_finish_first() {
        let free = Candidate::idle("free", 2, 1_000.0);
        let busy = Candidate {
            in_flight: 4,
            work_us: 4_000.0,
            ..Candidate::idle("busy", 2, 500.0)
        };
        assert_eq!(first_to_finish(&[busy.clone(), free]), Some(1));
        assert_eq!(first_to_finish(&[]), None);
        assert_eq!(first_to_finish(&[busy]), Some(0));
    }
}
