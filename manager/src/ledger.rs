//! The manager's ledger: shards it sent and that have not finished yet, per engine.
//!
//! # When does a shard count as finished?
//!
//! When a worker's partial result is stored: the resolver script publishes a completion event
//! (`<engine> <request> <index> <micros>`) on the namespace's events channel in the same atomic
//! step, and [`crate::events`] feeds it here. Pub/sub can drop an event (for example while the
//! manager reconnects), so entries older than [`STALE_AFTER`] are forgotten rather than kept
//! forever.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use uuid::Uuid;

/// Entries older than this are dropped from the ledger.
pub const STALE_AFTER: Duration = Duration::from_secs(600);

#[derive(Debug, Default)]
struct Inner {
    /// (request, shard) → engine it was sent to and when.
    sent: HashMap<(Uuid, u32), (String, Instant)>,
    /// engine → number of entries in `sent` for it.
    per_engine: HashMap<String, usize>,
}

/// Unfinished shards per engine. Shared by the dispatcher and the event listener.
#[derive(Debug, Default)]
pub struct Ledger {
    inner: Mutex<Inner>,
}

impl Ledger {
    /// Record that a shard was sent to an engine.
    pub fn sent(&self, request: Uuid, index: u32, engine: &str) {
        let mut g = self.lock();
        if let Some((old, _)) = g
            .sent
            .insert((request, index), (engine.to_owned(), Instant::now()))
        {
            decrement(&mut g.per_engine, &old);
        }
        *g.per_engine.entry(engine.to_owned()).or_default() += 1;
    }

    /// Record that a shard finished (wherever it ran).
    pub fn finished(&self, request: Uuid, index: u32) {
        let mut g = self.lock();
        if let Some((engine, _)) = g.sent.remove(&(request, index)) {
            decrement(&mut g.per_engine, &engine);
        }
    }

    /// Unfinished shards sent to `engine`.
    pub fn in_flight(&self, engine: &str) -> usize {
        self.lock().per_engine.get(engine).copied().unwrap_or(0)
    }

    /// Forget entries older than `age`.
    pub fn expire(&self, age: Duration) {
        let mut g = self.lock();
        let Inner { sent, per_engine } = &mut *g;
        sent.retain(|_, (engine, at)| {
            let keep = at.elapsed() < age;
            if !keep {
                decrement(per_engine, engine);
            }
            keep
        });
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves counts that are still consistent enough to route.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn decrement(per_engine: &mut HashMap<String, usize>, engine: &str) {
    if let Some(n) = per_engine.get_mut(engine) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            per_engine.remove(engine);
        }
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
        l.sent(r, 0, "a");
        l.sent(r, 1, "a");
        l.sent(r, 2, "b");
        assert_eq!((l.in_flight("a"), l.in_flight("b")), (2, 1));
        l.finished(r, 0);
        l.finished(r, 0);
        assert_eq!(l.in_flight("a"), 1);
        l.sent(r, 1, "b"); // re-routed
        assert_eq!((l.in_flight("a"), l.in_flight("b")), (0, 2));
    }

    /// Old entries are forgotten so lost events cannot pin an engine as busy forever.
    #[test]
    fn expires_stale_entries() {
        let l = Ledger::default();
        l.sent(Uuid::new_v4(), 0, "a");
        l.expire(Duration::ZERO);
        assert_eq!(l.in_flight("a"), 0);
    }
}
