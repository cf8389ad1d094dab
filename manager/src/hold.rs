//! Late binding in the manager: shards the predictive policy cannot place under its in-flight
//! cap wait here, rather than in the shared queue, until an engine may take them.
//!
//! # Why not the shared queue?
//!
//! Every worker consumes the shared queue, the slow ones too. At the end of a batch a slow
//! engine takes the last shards from it and finishes them long after the fast engines went
//! idle. Here, each time an engine may be below its cap again (a completion event, or a tick),
//! every held shard is planned in arrival order on the engine that would finish it first
//! *behind the held shards before it* ([`HoldRule::finish_us`] with [`Ahead`]), and the ones
//! planned on an engine below its cap go. In the middle of a batch the plan ahead is long and the
//! slow engine gets its share; at the end it is short and the last shards wait for the fast
//! engines.
//!
//! # When the shared queue is better
//!
//! Waiting pays only to avoid a slow engine. A request whose shards take about as long on every
//! engine ([`SAME_SPEED`]) holds nothing and, with late binding ([`HoldRule::late_binding`],
//! the default), is not pushed to any engine either: all its shards go to the shared queue at
//! once, where the first slot to free anywhere takes each. Pushing them instead, even only into
//! slots the ledger sees free, costs the tail: a shard queued on an engine waits for that
//! engine's slots alone, and the ledger cannot see the slots that shards from the shared queue
//! have taken. (Without late binding, alike engines take shards
//! up to the cap, and only the overflow goes to the shared queue.) A held shard goes once its engine has
//! a free slot or fewer than `cap × slots` unfinished shards ([`HoldRule::open`]): no time
//! term in the shard's own time, which would keep a short shard waiting for a long backlog to
//! drain. No request waits longer than the hold limit (`--hold-ms`) before the rest goes to
//! the shared queue: a held request also keeps one of the manager's request prefetch slots.
//!
//! # Nothing lost
//!
//! A request's delivery stays unacked until its held shards are published, so a manager that
//! dies leaves it to be redelivered ([`crate::dispatch`]). Every held shard of a manager that
//! stops goes to the shared queue ([`Hold::flush`]). While held, a shard's route in the request
//! record is `(held)`.

use std::borrow::Cow;
use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use shardline::locality::Locality;
use tokio::sync::mpsc;
use tracing::{debug, trace};
use uuid::Uuid;

use crate::engines::Engine;
use crate::ledger::Ledger;
use crate::predictor::Predictor;
use crate::route::{Ahead, Candidate, HoldRule, fastest_us, min_rotating};

/// Engines whose shard times for a request are within this factor of each other are as good
/// as one another for it: waiting for a particular one gains nothing over the shared queue.
/// Learned speeds are moving averages of noisy times (a 10× straggler moves one by almost
/// 2× for a while), so engines that are the same often look 1.5× apart; treating them as
/// different then costs the tail (`docs/routing.md`, "Late binding").
pub const SAME_SPEED: f64 = 2.0;

/// A locality key makes its holder worth waiting for when a remote read costs more than
/// this factor (the learned miss factor, [`crate::locality`]).
pub const REMOTE_COSTS: f64 = 1.5;

/// A held shard let go: to an engine (already entered in the ledger), or to the shared queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Release {
    /// Shard index.
    pub index: u32,
    /// Engine id, or `None` for the shared queue.
    pub engine: Option<String>,
}

/// One request's held shards.
#[derive(Debug)]
struct Waiting {
    request: Uuid,
    kind: Arc<str>,
    size: f64,
    locality: Arc<Locality>,
    indices: VecDeque<u32>,
    since: Instant,
    tx: mpsc::UnboundedSender<Release>,
}

impl Waiting {
    /// Send one release; `false` if the dispatch gave up (it will publish nothing more).
    fn send(&self, index: u32, engine: Option<String>) -> bool {
        self.tx.send(Release { index, engine }).is_ok()
    }

    /// Send every held shard to the shared queue; returns how many.
    fn spill_all(&mut self) -> usize {
        let n = self.indices.len();
        for index in self.indices.drain(..) {
            let _ = self.tx.send(Release {
                index,
                engine: None,
            });
        }
        n
    }
}

/// Held shards of every request this manager is dispatching, oldest request first.
#[derive(Debug)]
pub struct Hold {
    queue: VecDeque<Waiting>,
    limit: Duration,
    start: usize,
}

impl Hold {
    /// An empty hold whose shards go to the shared queue after `limit`.
    pub fn new(limit: Duration) -> Self {
        Hold {
            queue: VecDeque::new(),
            limit,
            start: 0,
        }
    }

    /// Hold `indices` of `request` (shards of `size` of `kind`, their data at `locality`);
    /// the dispatch receives their releases on the returned [`Holding`].
    pub fn push<'a>(
        &mut self,
        ledger: &'a Ledger,
        request: Uuid,
        kind: &str,
        size: f64,
        locality: Arc<Locality>,
        indices: impl IntoIterator<Item = u32>,
    ) -> Holding<'a> {
        let (tx, rx) = mpsc::unbounded_channel();
        let indices: VecDeque<u32> = indices.into_iter().collect();
        let pending = indices.iter().copied().collect();
        if !indices.is_empty() {
            self.queue.push_back(Waiting {
                request,
                kind: kind.into(),
                size,
                locality,
                indices,
                since: Instant::now(),
                tx,
            });
        }
        Holding {
            rx,
            ledger,
            request,
            pending,
        }
    }

    /// Shards held now.
    pub fn len(&self) -> usize {
        self.queue.iter().map(|w| w.indices.len()).sum()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Let go of what may go now (see the module docs); returns how many shards went.
    pub fn scan(&mut self, rule: HoldRule, predictor: &Predictor, engines: &[Engine]) -> usize {
        self.scan_at(Instant::now(), rule, predictor, engines)
    }

    /// [`Hold::scan`] as if it were `now`.
    fn scan_at(
        &mut self,
        now: Instant,
        rule: HoldRule,
        predictor: &Predictor,
        engines: &[Engine],
    ) -> usize {
        let mut released = 0;
        self.queue.retain_mut(|w| {
            if w.tx.is_closed() {
                return false;
            }
            if predictor.ledger.has_ended(w.request) {
                // Cancelled or failed meanwhile: workers skip its shards, and the ledger does
                // not take them; the shared queue is cheapest.
                debug!(request.id = %w.request, shards = w.indices.len(), "request ended; held shards go to the shared queue");
                released += w.spill_all();
                return false;
            }
            if !engines.iter().any(|e| e.serves(&w.kind)) {
                debug!(request.id = %w.request, shards = w.indices.len(), "no live engine serves the kind; held shards go to its shared queue");
                released += w.spill_all();
                return false;
            }
            true
        });
        let mut planned = vec![Ahead::default(); engines.len()];
        for w in &mut self.queue {
            // Only engines that serve the kind; `ahead` is this request's view of `planned`.
            let at: Vec<usize> = (0..engines.len())
                .filter(|&i| engines[i].serves(&w.kind))
                .collect();
            let serving: Cow<'_, [Engine]> = if at.len() == engines.len() {
                Cow::Borrowed(engines)
            } else {
                Cow::Owned(at.iter().map(|&i| engines[i].clone()).collect())
            };
            let mut ahead: Vec<Ahead> = at.iter().map(|&i| planned[i]).collect();
            let mut c = predictor.candidates(&w.kind, w.size, &serving);
            let local = predictor.localizer(&w.kind, &w.locality, &serving, &c);
            let fastest = fastest_us(&c);
            let slowest = c.iter().map(|e| e.shard_us).fold(0.0, f64::max);
            // Waiting pays only to avoid a slow engine, or a remote read.
            let remote_costs = local.as_ref().is_some_and(|l| l.miss() > REMOTE_COSTS);
            let alike = slowest <= SAME_SPEED * fastest && !remote_costs;
            let spill = alike || now.duration_since(w.since) >= self.limit;
            // Late binding: no engine takes a shard its engines would all run alike.
            let pull = alike && rule.late_binding;
            let may_take = |e: &Candidate| !pull && rule.open(e);
            let mut kept = VecDeque::with_capacity(w.indices.len());
            // Releases only close engines: once none is open, nothing more can go this time
            // (unless the rest spills to the shared queue).
            let mut open = c.iter().any(may_take);
            while (open || spill)
                && let Some(index) = w.indices.pop_front()
            {
                self.start = self.start.wrapping_add(1);
                if let Some(l) = &local {
                    l.apply(index, &mut c);
                }
                let best = min_rotating(c.len(), self.start, |i| rule.finish_us(&c[i], ahead[i]));
                let Some(i) = best.filter(|&i| may_take(&c[i])) else {
                    if spill {
                        trace!(request.id = %w.request, shard.index = index, "held shard goes to the shared queue");
                        released += 1;
                        if !w.send(index, None) {
                            break;
                        }
                    } else {
                        let i = best.unwrap_or_default();
                        ahead[i].shards += 1;
                        ahead[i].work_us += c[i].shard_us;
                        kept.push_back(index);
                    }
                    continue;
                };
                predictor.enter(w.request, index, &mut c[i], &w.kind, w.size);
                trace!(request.id = %w.request, shard.index = index, engine = %c[i].id, "held shard goes");
                if !w.send(index, Some(c[i].id.clone())) {
                    // The dispatch gave up: nothing of it will be published.
                    predictor.ledger.finished(w.request, index);
                    break;
                }
                released += 1;
                open = c.iter().any(may_take);
            }
            if w.tx.is_closed() {
                kept.clear();
                w.indices.clear();
            }
            kept.append(&mut w.indices);
            w.indices = kept;
            for (k, &i) in at.iter().enumerate() {
                planned[i] = ahead[k];
            }
            // With every engine closed nothing more can go this time; with only this kind's
            // engines closed, requests of other kinds behind it still may.
            if !open && !spill && at.len() == engines.len() {
                break;
            }
        }
        self.queue.retain(|w| !w.indices.is_empty());
        released
    }

    /// Send every held shard to the shared queue, and from now on every shard at the next
    /// scan (the manager is stopping).
    pub fn flush(&mut self) -> usize {
        self.limit = Duration::ZERO;
        self.queue.drain(..).map(|mut w| w.spill_all()).sum()
    }
}

/// One request's view of its held shards: their releases, in the order they go.
#[derive(Debug)]
#[must_use = "a holding dropped at once gives up its held shards"]
pub struct Holding<'a> {
    rx: mpsc::UnboundedReceiver<Release>,
    ledger: &'a Ledger,
    request: Uuid,
    pending: HashSet<u32>,
}

impl Holding<'_> {
    /// Whether shard `index` is still held.
    pub fn holds(&self, index: u32) -> bool {
        self.pending.contains(&index)
    }

    /// Shards still held.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// The releases available now, without waiting.
    pub fn ready(&mut self) -> Vec<Release> {
        let mut out = Vec::new();
        while let Ok(r) = self.rx.try_recv() {
            self.pending.remove(&r.index);
            out.push(r);
        }
        out
    }

    /// The next releases: waits for one, then takes every other one available. `None` once
    /// nothing is held, or if the hold was dropped (the manager is going away).
    pub async fn next(&mut self) -> Option<Vec<Release>> {
        if self.pending.is_empty() {
            return None;
        }
        let first = self.rx.recv().await?;
        self.pending.remove(&first.index);
        let mut out = vec![first];
        out.extend(self.ready());
        Some(out)
    }
}

impl Drop for Holding<'_> {
    fn drop(&mut self) {
        // Releases sent but never taken will not be published: take them out of the ledger.
        self.rx.close();
        while let Ok(r) = self.rx.try_recv() {
            if r.engine.is_some() {
                self.ledger.finished(self.request, r.index);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHARD_US: f64 = 10_000.0;

    fn engines() -> Vec<Engine> {
        ["fast-a", "fast-b", "slow"]
            .into_iter()
            .map(|id| Engine::new(id, 4, &["k"]))
            .collect()
    }

    /// A predictor that knows engines 1/1/0.25.
    fn predictor() -> Predictor {
        let p = Predictor::new(Duration::from_millis(250), 64, SHARD_US);
        for _ in 0..50 {
            p.history.observe("k", 1.0, "fast-a", SHARD_US);
            p.history.observe("k", 1.0, "fast-b", SHARD_US);
            p.history.observe("k", 1.0, "slow", 4.0 * SHARD_US);
        }
        p
    }

    fn rule() -> HoldRule {
        HoldRule {
            cap: 1.0,
            forecast: false,
            late_binding: true,
        }
    }

    /// [`rule`] without late binding, for tests of where held shards go when one engine
    /// serves their kind (one engine is alike to itself, so late binding would send them to
    /// the kind's shared queue, which only that engine consumes).
    fn placing() -> HoldRule {
        HoldRule {
            late_binding: false,
            ..rule()
        }
    }

    fn count(releases: &[Release], engine: Option<&str>) -> usize {
        releases
            .iter()
            .filter(|r| r.engine.as_deref() == engine)
            .count()
    }

    /// With a long plan ahead the slow engine takes shards too; the rest wait.
    #[test]
    fn a_long_hold_feeds_every_engine() {
        let p = predictor();
        let mut hold = Hold::new(Duration::from_secs(60));
        let mut h = hold.push(&p.ledger, Uuid::new_v4(), "k", 1.0, Arc::default(), 0..40);
        let went = hold.scan(rule(), &p, &engines());
        let r = h.ready();
        assert_eq!(went, r.len());
        assert_eq!(count(&r, Some("fast-a")), 4, "{r:?}");
        assert_eq!(count(&r, Some("fast-b")), 4, "{r:?}");
        assert!(count(&r, Some("slow")) >= 1, "{r:?}");
        assert_eq!(h.pending(), 40 - r.len());
        assert_eq!(hold.len(), h.pending());
    }

    /// With only a few shards left, they wait for the fast engines rather than run 4× slower
    /// on the idle slow one (the end of a batch).
    #[test]
    fn the_last_shards_wait_for_fast_engines() {
        let p = predictor();
        for (i, e) in ["fast-a", "fast-b"].iter().enumerate() {
            for k in 0..4 {
                p.ledger.sent(
                    Uuid::from_u128(i as u128),
                    k,
                    crate::ledger::entry(e, SHARD_US),
                );
            }
        }
        let mut hold = Hold::new(Duration::from_secs(60));
        let mut h = hold.push(&p.ledger, Uuid::new_v4(), "k", 1.0, Arc::default(), 0..4);
        assert_eq!(hold.scan(rule(), &p, &engines()), 0);
        assert!(h.ready().is_empty());
        // One fast slot frees: the oldest held shard takes it.
        p.ledger.finished(Uuid::from_u128(0), 0);
        assert_eq!(hold.scan(rule(), &p, &engines()), 1);
        assert_eq!(
            h.ready(),
            vec![Release {
                index: 0,
                engine: Some("fast-a".into())
            }]
        );
    }

    /// Fill every slot of `engines` with a shard of `shard_us`.
    fn fill(p: &Predictor, engines: &[&str], shard_us: f64) {
        for e in engines {
            let request = Uuid::new_v4();
            for k in 0..4 {
                p.ledger.sent(request, k, crate::ledger::entry(e, shard_us));
            }
        }
    }

    /// The three engines, each serving only the kinds given for it.
    fn serving(kinds: [&[&str]; 3]) -> Vec<Engine> {
        engines()
            .into_iter()
            .zip(kinds)
            .map(|(e, k)| Engine {
                kinds: Some(k.iter().map(|k| (*k).to_owned()).collect()),
                ..e
            })
            .collect()
    }

    /// Held shards go only to engines that serve their kind, even when others are faster.
    #[test]
    fn held_shards_go_only_to_engines_of_their_kind() {
        let p = predictor();
        let mut hold = Hold::new(Duration::from_secs(60));
        let mut h = hold.push(&p.ledger, Uuid::new_v4(), "k", 1.0, Arc::default(), 0..3);
        let engines = serving([&["other"], &["other"], &["k"]]);
        assert_eq!(hold.scan(placing(), &p, &engines), 3);
        assert_eq!(count(&h.ready(), Some("slow")), 3);
    }

    /// A request whose kind's engines are all at their cap does not hold back a request of
    /// another kind behind it whose engine is free.
    #[test]
    fn a_closed_kind_does_not_hold_back_another() {
        let p = predictor();
        fill(&p, &["fast-a"], SHARD_US);
        fill(&p, &["slow"], 4.0 * SHARD_US);
        let mut hold = Hold::new(Duration::from_secs(60));
        let mut first = hold.push(&p.ledger, Uuid::new_v4(), "k", 1.0, Arc::default(), 0..2);
        let mut second = hold.push(&p.ledger, Uuid::new_v4(), "x", 1.0, Arc::default(), 0..1);
        let engines = serving([&["k"], &["x"], &["k"]]);
        assert_eq!(hold.scan(placing(), &p, &engines), 1);
        assert!(
            first.ready().is_empty(),
            "the first request waits for its engines"
        );
        assert_eq!(count(&second.ready(), Some("fast-b")), 1);
    }

    /// A shard held past the limit goes to the shared queue.
    #[test]
    fn overdue_shards_go_to_the_shared_queue() {
        let p = predictor();
        fill(&p, &["fast-a", "fast-b"], SHARD_US);
        fill(&p, &["slow"], 4.0 * SHARD_US);
        let mut hold = Hold::new(Duration::ZERO);
        let mut h = hold.push(&p.ledger, Uuid::new_v4(), "k", 1.0, Arc::default(), 0..3);
        assert_eq!(hold.scan(rule(), &p, &engines()), 3);
        let r = h.ready();
        assert_eq!(count(&r, None), 3, "{r:?}");
        assert!(hold.is_empty());
        assert_eq!(p.ledger.in_flight("fast-a"), 4);
    }

    /// On engines of one speed nothing is worth waiting for: shards that find every engine at
    /// its cap go to the shared queue at once, where the first free slot takes them.
    #[test]
    fn engines_of_one_speed_hold_nothing() {
        let p = Predictor::new(Duration::from_millis(250), 64, SHARD_US);
        for e in ["fast-a", "fast-b", "slow"] {
            for _ in 0..50 {
                p.history.observe("k", 1.0, e, SHARD_US);
            }
        }
        fill(&p, &["fast-a", "fast-b", "slow"], SHARD_US);
        let mut hold = Hold::new(Duration::from_secs(60));
        let mut h = hold.push(&p.ledger, Uuid::new_v4(), "k", 1.0, Arc::default(), 0..5);
        assert_eq!(hold.scan(rule(), &p, &engines()), 5);
        assert_eq!(count(&h.ready(), None), 5);
        assert!(hold.is_empty());
    }

    /// On engines of one speed, late binding sends every shard to the shared queue, though
    /// the cap would let each engine take eight per slot; the ablation sends them all to the
    /// engines.
    #[test]
    fn alike_engines_bind_late() {
        let p = Predictor::new(Duration::from_millis(250), 64, SHARD_US);
        for e in ["fast-a", "fast-b", "slow"] {
            for _ in 0..50 {
                p.history.observe("k", 1.0, e, SHARD_US);
            }
        }
        let place = |late_binding: bool| {
            let mut hold = Hold::new(Duration::from_secs(60));
            let mut h = hold.push(&p.ledger, Uuid::new_v4(), "k", 1.0, Arc::default(), 0..20);
            let rule = HoldRule {
                cap: 8.0,
                forecast: false,
                late_binding,
            };
            assert_eq!(hold.scan(rule, &p, &engines()), 20);
            let shared = count(&h.ready(), None);
            p.ledger.forget(h.request);
            shared
        };
        assert_eq!(place(true), 20);
        assert_eq!(place(false), 0);
    }

    /// On engines of one speed, shards whose data one engine holds wait for it rather than
    /// go to the shared queue, where any engine would take them and read remotely; the
    /// holder's first free slot takes the oldest.
    #[test]
    fn keyed_shards_wait_for_their_holder() {
        let p = Predictor::new(Duration::from_millis(250), 64, SHARD_US);
        for e in ["fast-a", "fast-b", "slow"] {
            for _ in 0..50 {
                p.history.observe("k", 1.0, e, SHARD_US);
            }
        }
        for _ in 0..20 {
            p.history.observe_miss("k", 1.0, "fast-b", 4.0 * SHARD_US);
        }
        fill(&p, &["fast-a", "fast-b"], SHARD_US);
        let holder = Uuid::from_u128(9);
        for k in 0..4 {
            p.ledger
                .sent(holder, k, crate::ledger::entry("slow", SHARD_US));
        }
        let engines: Vec<Engine> = engines()
            .into_iter()
            .map(|e| {
                if e.id == "slow" {
                    e.holding(&["p2"])
                } else {
                    e
                }
            })
            .collect();
        let keyed = Arc::new(Locality::Request(
            shardline::locality::LocalityKey::parse("p2").unwrap(),
        ));
        let mut hold = Hold::new(Duration::from_secs(60));
        let mut h = hold.push(&p.ledger, Uuid::new_v4(), "k", 1.0, keyed, 0..3);
        assert_eq!(hold.scan(rule(), &p, &engines), 0);
        assert!(h.ready().is_empty());
        // One of the holder's slots frees.
        p.ledger.finished(holder, 0);
        assert_eq!(hold.scan(rule(), &p, &engines), 1);
        assert_eq!(
            h.ready(),
            vec![Release {
                index: 0,
                engine: Some("slow".into())
            }]
        );
    }

    /// A short shard is not kept waiting by long work queued on an engine with room under its
    /// cap: it goes at once, as it would from the shared queue to the first free slot.
    #[test]
    fn short_shards_are_not_kept_out_by_long_backlogs() {
        let p = predictor();
        fill(&p, &["fast-a", "fast-b"], 100.0 * SHARD_US);
        fill(&p, &["slow"], 400.0 * SHARD_US);
        let mut hold = Hold::new(Duration::from_secs(60));
        let mut h = hold.push(&p.ledger, Uuid::new_v4(), "k", 1.0, Arc::default(), 0..2);
        let rule = HoldRule {
            cap: 2.0,
            forecast: false,
            late_binding: true,
        };
        assert_eq!(hold.scan(rule, &p, &engines()), 2);
        assert_eq!(count(&h.ready(), None), 0);
    }

    /// A dispatch that gives up leaves nothing in the ledger, whether its shards went before
    /// or after it dropped its holding.
    #[test]
    fn an_abandoned_holding_frees_its_engines() {
        let p = predictor();
        let mut hold = Hold::new(Duration::from_secs(60));
        let in_flight = || -> usize {
            ["fast-a", "fast-b", "slow"]
                .iter()
                .map(|e| p.ledger.in_flight(e))
                .sum()
        };
        let h = hold.push(&p.ledger, Uuid::new_v4(), "k", 1.0, Arc::default(), 0..4);
        // Every shard went to an engine (and into the ledger) before the holding was dropped.
        assert_eq!(hold.scan(rule(), &p, &engines()), 4);
        assert_eq!(in_flight(), 4);
        drop(h);
        let h = hold.push(&p.ledger, Uuid::new_v4(), "k", 1.0, Arc::default(), 0..4);
        drop(h);
        assert_eq!(hold.scan(rule(), &p, &engines()), 0);
        assert_eq!(in_flight(), 0);
        assert!(hold.is_empty());
    }

    /// A request that ended while its shards were held lets them go to the shared queue, and
    /// the ledger takes no shard of it: none would ever be reported finished.
    #[test]
    fn an_ended_request_spills_and_stays_out_of_the_ledger() {
        let p = predictor();
        fill(&p, &["fast-a", "fast-b"], SHARD_US);
        fill(&p, &["slow"], 4.0 * SHARD_US);
        let id = Uuid::new_v4();
        let mut hold = Hold::new(Duration::from_secs(60));
        let mut h = hold.push(&p.ledger, id, "k", 1.0, Arc::default(), 0..3);
        assert_eq!(hold.scan(rule(), &p, &engines()), 0);
        p.ledger.forget(id);
        assert_eq!(hold.scan(rule(), &p, &engines()), 3);
        assert_eq!(count(&h.ready(), None), 3);
        p.ledger
            .sent(id, 0, crate::ledger::entry("fast-a", SHARD_US));
        assert_eq!(p.ledger.in_flight("fast-a"), 4);
    }

    /// Stopping sends every held shard to the shared queue.
    #[tokio::test]
    async fn flush_lets_everything_go() {
        let p = predictor();
        let mut hold = Hold::new(Duration::from_secs(60));
        let mut h = hold.push(&p.ledger, Uuid::new_v4(), "k", 1.0, Arc::default(), 0..5);
        assert_eq!(hold.flush(), 5);
        let r = h.next().await.expect("released");
        assert_eq!(count(&r, None), 5);
        assert!(h.next().await.is_none());
    }
}
