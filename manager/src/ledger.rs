//! The manager's ledger: shards it sent that have not finished yet, per engine, with the work
//! they are expected to take there.
//!
//! # When does a shard count as finished?
//!
//! When a worker's partial result is stored: the resolver script publishes a completion event
//! (`<engine> <request> <index> <micros>`) on the namespace's events channel in the same atomic
//! step, and [`crate::events`] feeds it here. Pub/sub can drop an event (for example while the
//! manager reconnects), so entries older than [`STALE_AFTER`] are forgotten rather than kept
//! forever.
//!
//! # When does a shard count as sent?
//!
//! When it is routed, not when it is published: the dispatcher enters each shard here while it
//! still holds the router, so a request routed a moment later sees it even though the first
//! request is still writing its record to Redis. (Entered only at publish time, sixteen
//! requests of a burst would each see the same empty engines, and the in-flight cap would let
//! all of them through.) A [`Reservation`] takes the entries out again if the dispatch stops
//! before publishing.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::locality::Fit;

/// The ledger's name for the shared queues. Shards sent there are entered under it, so that
/// their completions teach the history like any other shard's (which engine ran one is known
/// only from its completion event), and its load is this manager's shared backlog. No engine
/// can be named so (engine ids are `[A-Za-z0-9._-]`).
pub const SHARED: &str = "(shared)";

/// Entries older than this are dropped from the ledger.
pub const STALE_AFTER: Duration = Duration::from_secs(600);
/// How often stale entries are looked for.
pub const EXPIRE_EVERY: Duration = Duration::from_secs(30);

/// One shard sent and not finished.
#[derive(Debug, Clone)]
pub struct Sent {
    /// Engine it was sent to.
    pub engine: String,
    /// Kind of the request.
    pub kind: Arc<str>,
    /// Shard size in the kind's units.
    pub size: f64,
    /// Expected processing time on that engine, µs.
    pub expected_us: f64,
    /// Whether the engine had a free slot when the shard was sent (no queueing expected).
    pub idle: bool,
    /// How the shard's data sat with the engine.
    pub fit: Fit,
    /// When it was sent.
    pub at: Instant,
    /// Expected time from sending to its result, µs: the wait the router expected on the
    /// engine plus `expected_us`. Hedging ([`crate::hedge`]) measures lateness against it.
    pub due_us: f64,
    /// The published message, kept while hedging may send it again ([`Ledger::keep_body`]).
    pub body: Option<Arc<[u8]>>,
    /// A hedge copy sent to a second engine, if one was.
    pub copy: Option<HedgeCopy>,
}

/// A hedge copy of a shard: where it went, and what it is expected to take there.
#[derive(Debug, Clone, PartialEq)]
pub struct HedgeCopy {
    /// Engine it was sent to.
    pub engine: String,
    /// Expected processing time there, µs.
    pub expected_us: f64,
}

/// A shard past its hedging threshold, from [`Ledger::overdue`].
#[derive(Debug, Clone)]
pub struct Overdue {
    /// Its request.
    pub request: Uuid,
    /// Its index.
    pub index: u32,
    /// Engine it runs (or waits) on.
    pub engine: String,
    /// Its kind.
    pub kind: Arc<str>,
    /// Its size in the kind's units.
    pub size: f64,
    /// The published message.
    pub body: Arc<[u8]>,
    /// How far past its threshold it is, as a multiple of the threshold.
    pub late: f64,
}

/// Per-engine totals.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Load {
    /// Unfinished shards.
    pub in_flight: usize,
    /// Their expected processing time, µs.
    pub work_us: f64,
    /// Shards ever sent (a counter, for "sent since the last depth sample").
    pub sent_total: u64,
}

#[derive(Debug, Default)]
struct Inner {
    sent: HashMap<(Uuid, u32), Sent>,
    per_engine: HashMap<String, Load>,
    /// Requests that ended early, and when: shards of theirs sent later are not entered.
    ended: HashMap<Uuid, Instant>,
    /// Shards with a kept message, by the earliest moment they can be overdue (sent + due
    /// time, see [`Ledger::overdue`]), so that a look for late shards reads only those whose
    /// moment has come. Keys are dropped when a look finds their shard finished, copied or
    /// sent again.
    hedgeable: BTreeSet<(Instant, Uuid, u32)>,
}

/// The earliest moment `s` can be overdue: sent + its due time (a due time that is not a
/// usable duration counts as the stale age, after which the entry is gone anyway).
fn due_at(s: &Sent) -> Instant {
    s.at + Duration::try_from_secs_f64(s.due_us / 1e6).unwrap_or(STALE_AFTER)
}

/// Unfinished shards per engine. Shared by the dispatcher and the event listener.
#[derive(Debug, Default)]
pub struct Ledger {
    inner: Mutex<Inner>,
}

impl Ledger {
    /// Record that a shard was sent to `entry.engine`.
    pub fn sent(&self, request: Uuid, index: u32, entry: Sent) {
        let mut g = self.lock();
        if g.ended.contains_key(&request) {
            // Its shards are skipped or not counted: no completion will take this out again.
            return;
        }
        charge(&mut g.per_engine, &entry.engine, entry.expected_us);
        if let Some(old) = g.sent.insert((request, index), entry) {
            release(&mut g.per_engine, &old);
        }
    }

    /// Keep the message of a published shard, so that it can be sent again as a hedge copy;
    /// nothing happens if the shard already finished.
    pub fn keep_body(&self, request: Uuid, index: u32, body: Arc<[u8]>) {
        let mut g = self.lock();
        let Inner {
            sent, hedgeable, ..
        } = &mut *g;
        if let Some(s) = sent.get_mut(&(request, index)) {
            s.body = Some(body);
            hedgeable.insert((due_at(s), request, index));
        }
    }

    /// Shards with a kept message and no copy yet that have been out longer than
    /// `threshold_us(shard)`, the latest first. The threshold must be at least the shard's due
    /// time (as [`crate::hedge::threshold_us`] is): only shards past it are looked at.
    pub fn overdue(&self, threshold_us: impl Fn(&Sent) -> f64) -> Vec<Overdue> {
        let mut g = self.lock();
        let Inner {
            sent, hedgeable, ..
        } = &mut *g;
        let come: Vec<(Instant, Uuid, u32)> = hedgeable
            .range(..=(Instant::now(), Uuid::max(), u32::MAX))
            .copied()
            .collect();
        let mut late = Vec::new();
        for key @ (at, request, index) in come {
            let Some(s) = sent
                .get(&(request, index))
                .filter(|s| s.copy.is_none() && due_at(s) == at)
            else {
                hedgeable.remove(&key);
                continue;
            };
            let Some(body) = s.body.clone() else {
                hedgeable.remove(&key);
                continue;
            };
            let ratio = s.at.elapsed().as_secs_f64() * 1e6 / threshold_us(s).max(1.0);
            if ratio > 1.0 {
                late.push(Overdue {
                    request,
                    index,
                    engine: s.engine.clone(),
                    kind: s.kind.clone(),
                    size: s.size,
                    body,
                    late: ratio,
                });
            }
        }
        late.sort_by(|a, b| b.late.total_cmp(&a.late));
        late
    }

    /// Record a hedge copy of a shard sent to `copy.engine`, counted on that engine until the
    /// shard finishes; false (and nothing recorded) when the shard already finished or has a
    /// copy.
    pub fn hedged(&self, request: Uuid, index: u32, copy: HedgeCopy) -> bool {
        let mut g = self.lock();
        let Inner {
            sent, per_engine, ..
        } = &mut *g;
        let Some(s) = sent.get_mut(&(request, index)) else {
            return false;
        };
        if s.copy.is_some() {
            return false;
        }
        charge(per_engine, &copy.engine, copy.expected_us);
        s.copy = Some(copy);
        true
    }

    /// Take back a hedge copy that was not delivered (its engine queue was gone).
    pub fn unhedged(&self, request: Uuid, index: u32) {
        let mut g = self.lock();
        let Inner {
            sent, per_engine, ..
        } = &mut *g;
        if let Some(copy) = sent.get_mut(&(request, index)).and_then(|s| s.copy.take()) {
            release_one(per_engine, &copy.engine, copy.expected_us);
        }
    }

    /// Shards ever sent, over every engine.
    pub fn sent_total(&self) -> u64 {
        self.lock().per_engine.values().map(|l| l.sent_total).sum()
    }

    /// Record that a shard finished (wherever it ran); returns what was recorded when it was
    /// sent, the first time only.
    pub fn finished(&self, request: Uuid, index: u32) -> Option<Sent> {
        let mut g = self.lock();
        let old = g.sent.remove(&(request, index))?;
        release(&mut g.per_engine, &old);
        Some(old)
    }

    /// Take responsibility for entries already made with [`Ledger::sent`] for `indices` of
    /// `request`: they are released when the reservation drops, unless [`Reservation::keep`]
    /// is called first.
    pub fn reservation(&self, request: Uuid, indices: Vec<u32>) -> Reservation<'_> {
        Reservation {
            ledger: self,
            request,
            indices,
        }
    }

    /// Unfinished shards sent to `engine`.
    pub fn in_flight(&self, engine: &str) -> usize {
        self.load(engine).in_flight
    }

    /// Totals of `engine`.
    pub fn load(&self, engine: &str) -> Load {
        self.lock()
            .per_engine
            .get(engine)
            .copied()
            .unwrap_or_default()
    }

    /// Forget every entry of `request` (it ended early: no completion will come for its
    /// unfinished shards); returns how many there were.
    pub fn forget(&self, request: Uuid) -> usize {
        let mut g = self.lock();
        g.ended.insert(request, Instant::now());
        let Inner {
            sent, per_engine, ..
        } = &mut *g;
        let before = sent.len();
        sent.retain(|(r, _), s| {
            let keep = *r != request;
            if !keep {
                release(per_engine, s);
            }
            keep
        });
        before - sent.len()
    }

    /// Whether `request` ended early (see [`Ledger::forget`]).
    pub fn has_ended(&self, request: Uuid) -> bool {
        self.lock().ended.contains_key(&request)
    }

    /// Forget entries older than `age`, and the hedging index's keys of finished shards.
    pub fn expire(&self, age: Duration) {
        let mut g = self.lock();
        g.ended.retain(|_, at| at.elapsed() < age);
        let Inner {
            sent,
            per_engine,
            hedgeable,
            ..
        } = &mut *g;
        sent.retain(|_, s| {
            let keep = s.at.elapsed() < age;
            if !keep {
                release(per_engine, s);
            }
            keep
        });
        // Shards that finished before their due time, if no look for late shards came since.
        hedgeable.retain(|(_, r, i)| sent.contains_key(&(*r, *i)));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves counts that are still consistent enough to route.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Forget entries older than `age` every `every`, until `stop`. On its own timer: the lost
/// events this exists for are exactly when no event arrives to trigger it.
pub async fn expire_until(
    ledger: Arc<Ledger>,
    every: Duration,
    age: Duration,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => ledger.expire(age),
        }
    }
}

/// Ledger entries of shards routed but not yet published; see [`Ledger::reservation`].
#[derive(Debug)]
#[must_use = "a reservation dropped at once releases its entries"]
pub struct Reservation<'a> {
    ledger: &'a Ledger,
    request: Uuid,
    indices: Vec<u32>,
}

impl Reservation<'_> {
    /// Release the shards in `done` now (they will not be published: their results are
    /// already stored).
    pub fn release(&mut self, done: &HashSet<u32>) {
        let (ledger, request) = (self.ledger, self.request);
        self.indices.retain(|i| {
            let keep = !done.contains(i);
            if !keep {
                ledger.finished(request, *i);
            }
            keep
        });
    }

    /// The shards are being published: their entries stay until their completions arrive.
    pub fn keep(mut self) {
        self.indices.clear();
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        for &index in &self.indices {
            self.ledger.finished(self.request, index);
        }
    }
}

fn charge(per_engine: &mut HashMap<String, Load>, engine: &str, expected_us: f64) {
    let load = per_engine.entry(engine.to_owned()).or_default();
    load.in_flight += 1;
    load.work_us += expected_us;
    load.sent_total += 1;
}

/// Take a finished shard, and its hedge copy if it has one, off their engines.
fn release(per_engine: &mut HashMap<String, Load>, s: &Sent) {
    release_one(per_engine, &s.engine, s.expected_us);
    if let Some(copy) = &s.copy {
        release_one(per_engine, &copy.engine, copy.expected_us);
    }
}

fn release_one(per_engine: &mut HashMap<String, Load>, engine: &str, expected_us: f64) {
    if let Some(load) = per_engine.get_mut(engine) {
        load.in_flight = load.in_flight.saturating_sub(1);
        load.work_us = if load.in_flight == 0 {
            0.0
        } else {
            (load.work_us - expected_us).max(0.0)
        };
    }
}

#[cfg(test)]
pub(crate) fn entry(engine: &str, expected_us: f64) -> Sent {
    Sent {
        engine: engine.into(),
        kind: "k".into(),
        size: 1.0,
        expected_us,
        idle: false,
        fit: Fit::Unkeyed,
        at: Instant::now(),
        due_us: expected_us,
        body: None,
        copy: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sending counts against the engine; finishing (from any engine) releases it once.
    #[test]
    fn counts_sent_and_finished() {
        let l = Ledger::default();
        let r = Uuid::new_v4();
        l.sent(r, 0, entry("a", 10.0));
        l.sent(r, 1, entry("a", 20.0));
        l.sent(r, 2, entry("b", 5.0));
        assert_eq!((l.in_flight("a"), l.in_flight("b")), (2, 1));
        assert_eq!(l.load("a").work_us, 30.0);
        assert!(l.finished(r, 0).is_some());
        assert!(l.finished(r, 0).is_none());
        assert_eq!((l.in_flight("a"), l.load("a").work_us), (1, 20.0));
        l.sent(r, 1, entry("b", 5.0)); // re-routed
        assert_eq!((l.in_flight("a"), l.in_flight("b")), (0, 2));
        assert_eq!(l.load("b").sent_total, 2);
    }

    /// A reservation dropped before publishing takes its entries out; one kept leaves them;
    /// a released index goes at once.
    #[test]
    fn reservation_releases_unless_kept() {
        let l = Ledger::default();
        let r = Uuid::new_v4();
        for i in 0..3 {
            l.sent(r, i, entry("a", 10.0));
        }
        drop(l.reservation(r, vec![0, 1]));
        assert_eq!(l.in_flight("a"), 1);
        l.sent(r, 0, entry("a", 10.0));
        l.sent(r, 1, entry("a", 10.0));
        let mut kept = l.reservation(r, vec![0, 1, 2]);
        kept.release(&HashSet::from([1]));
        assert_eq!(l.in_flight("a"), 2);
        kept.keep();
        assert_eq!((l.in_flight("a"), l.load("a").work_us), (2, 20.0));
    }

    /// A hedge copy counts on its engine until the shard finishes, wherever it finished; one
    /// not delivered is taken back; a shard gets one copy at most.
    #[test]
    fn hedge_copies_count_until_the_shard_finishes() {
        let l = Ledger::default();
        let r = Uuid::new_v4();
        l.sent(r, 0, entry("a", 10.0));
        let copy = |e: &str| HedgeCopy {
            engine: e.into(),
            expected_us: 7.0,
        };
        assert!(l.hedged(r, 0, copy("b")));
        assert!(!l.hedged(r, 0, copy("c")), "a second copy");
        assert_eq!((l.in_flight("a"), l.in_flight("b")), (1, 1));
        assert_eq!(l.load("b").work_us, 7.0);
        l.unhedged(r, 0);
        assert_eq!(l.in_flight("b"), 0);
        assert!(l.hedged(r, 0, copy("b")));
        assert!(l.finished(r, 0).is_some());
        assert_eq!((l.in_flight("a"), l.in_flight("b")), (0, 0));
        assert!(!l.hedged(r, 0, copy("b")), "a finished shard");
    }

    /// Only shards whose message is kept, with no copy, past their threshold are overdue,
    /// the latest first.
    #[test]
    fn overdue_shards_are_the_late_kept_ones() {
        let l = Ledger::default();
        let r = Uuid::new_v4();
        let body: Arc<[u8]> = Arc::from(&b"shard"[..]);
        for (i, due) in [(0, 1.0), (1, 2.0), (2, 1e12), (3, 1.0)] {
            l.sent(
                r,
                i,
                Sent {
                    due_us: due,
                    ..entry("a", 1.0)
                },
            );
        }
        for i in 0..3 {
            l.keep_body(r, i, body.clone());
        }
        std::thread::sleep(Duration::from_millis(2));
        let late: Vec<u32> = l.overdue(|s| s.due_us).iter().map(|o| o.index).collect();
        assert_eq!(late, vec![0, 1], "3 has no body, 2 is not late");
        l.hedged(
            r,
            0,
            HedgeCopy {
                engine: "b".into(),
                expected_us: 1.0,
            },
        );
        let late: Vec<u32> = l.overdue(|s| s.due_us).iter().map(|o| o.index).collect();
        assert_eq!(late, vec![1], "0 has its copy");
    }

    /// A look for late shards reads only the shards past their due time, however many are
    /// out, and forgets the finished ones it finds.
    #[test]
    fn overdue_looks_only_at_shards_past_their_due_time() {
        let l = Ledger::default();
        let r = Uuid::new_v4();
        let body: Arc<[u8]> = Arc::from(&b"shard"[..]);
        for i in 0..1_000 {
            let due_us = if i < 3 { 1.0 } else { 3.6e9 };
            l.sent(
                r,
                i,
                Sent {
                    due_us,
                    ..entry("a", 1.0)
                },
            );
            l.keep_body(r, i, body.clone());
        }
        l.finished(r, 2);
        std::thread::sleep(Duration::from_millis(2));
        let looked = std::cell::Cell::new(0);
        let late = l.overdue(|s| {
            looked.set(looked.get() + 1);
            s.due_us
        });
        assert_eq!(late.len(), 2);
        assert_eq!(
            looked.get(),
            2,
            "only the shards past due, not the 997 others"
        );
        assert_eq!(
            l.lock().hedgeable.len(),
            999,
            "the finished one is forgotten"
        );
    }

    /// Old entries are forgotten so lost events cannot pin an engine as busy forever.
    #[test]
    fn expires_stale_entries() {
        let l = Ledger::default();
        l.sent(Uuid::new_v4(), 0, entry("a", 1.0));
        l.expire(Duration::ZERO);
        assert_eq!(l.in_flight("a"), 0);
    }

    /// Stale entries expire on a timer, with no event arriving at all (a silent events
    /// channel is the lost-event case the expiry exists for).
    #[tokio::test]
    async fn stale_entries_expire_without_events() {
        let l = Arc::new(Ledger::default());
        l.sent(Uuid::new_v4(), 0, entry("a", 1.0));
        let stop = CancellationToken::new();
        let every = Duration::from_millis(10);
        let task = tokio::spawn(expire_until(l.clone(), every, Duration::ZERO, stop.clone()));
        let gone = tokio::time::timeout(Duration::from_secs(5), async {
            while l.in_flight("a") > 0 {
                tokio::time::sleep(every).await;
            }
        })
        .await;
        stop.cancel();
        task.await.expect("expiry task");
        assert!(gone.is_ok(), "the stale entry stayed");
    }
}
