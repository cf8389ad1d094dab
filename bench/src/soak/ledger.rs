//! The ledger: every submitted id and every result delivery received for it.
//!
//! An id is recorded *before* its request is published, so a result can never arrive for an id
//! the ledger does not know yet. The first delivery of an id is checked against a local
//! computation ([`super::verify`]); later deliveries (duplicates) are compared with the first by
//! a fingerprint of their body.

use std::collections::HashMap;
use std::sync::Mutex;

use shardline::message::{FinalResult, Status};
use tokio::time::Instant;
use uuid::Uuid;

use super::mix::Class;
use super::verify;

/// One submitted request.
#[derive(Debug)]
pub(crate) struct Entry {
    pub(crate) class: Class,
    pub(crate) kind: &'static str,
    /// Scheduled send time (latency is measured from it).
    pub(crate) at: Instant,
    /// The payload, kept until the first result is checked.
    payload: Option<rmpv::Value>,
    /// Why publishing failed, if it did (the request may or may not have been accepted).
    pub(crate) publish_error: Option<String>,
    /// What the cancel call answered, for cancelled-class requests.
    pub(crate) cancel: Option<String>,
    pub(crate) deliveries: Vec<Delivery>,
}

/// One result delivery.
#[derive(Debug, Clone)]
pub(crate) struct Delivery {
    pub(crate) status: Status,
    pub(crate) at: Instant,
    /// The broker's redelivered flag (the soak consumer saw it before).
    pub(crate) redelivered: bool,
    /// Hash of the delivery body.
    pub(crate) fingerprint: u64,
    /// The publication attempt the result says it is (`x-shardline-attempt`).
    pub(crate) attempt: Option<u64>,
    pub(crate) error_code: Option<String>,
    pub(crate) error_message: Option<String>,
    /// Shards the request was cut into.
    pub(crate) shards: u32,
    /// Why the output is wrong (first deliveries only).
    pub(crate) wrong: Option<String>,
}

/// A result for an id nobody submitted.
#[derive(Debug, Clone)]
pub(crate) struct Stray {
    pub(crate) id: String,
    pub(crate) detail: String,
}

#[derive(Debug, Default)]
struct Inner {
    entries: HashMap<Uuid, Entry>,
    order: Vec<Uuid>,
    strays: Vec<Stray>,
    deliveries: usize,
}

/// Submissions and results, shared by the publisher, the reply consumer and the check.
#[derive(Debug, Default)]
pub(crate) struct Ledger {
    inner: Mutex<Inner>,
}

/// Counts for progress lines.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Counts {
    pub(crate) submitted: usize,
    pub(crate) answered: usize,
    pub(crate) outstanding: usize,
    pub(crate) deliveries: usize,
}

impl Ledger {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Record a request about to be published.
    pub(crate) fn submit(
        &self,
        id: Uuid,
        class: Class,
        kind: &'static str,
        at: Instant,
        payload: rmpv::Value,
    ) {
        let mut g = self.lock();
        g.order.push(id);
        g.entries.insert(
            id,
            Entry {
                class,
                kind,
                at,
                payload: Some(payload),
                publish_error: None,
                cancel: None,
                deliveries: Vec::new(),
            },
        );
    }

    /// The publish of `id` failed.
    pub(crate) fn publish_failed(&self, id: Uuid, why: String) {
        if let Some(e) = self.lock().entries.get_mut(&id) {
            e.publish_error = Some(why);
        }
    }

    /// What cancelling `id` answered.
    pub(crate) fn cancelled(&self, id: Uuid, answer: String) {
        if let Some(e) = self.lock().entries.get_mut(&id) {
            e.cancel = Some(answer);
        }
    }

    /// Record one decoded result delivery.
    pub(crate) fn result(
        &self,
        r: &FinalResult,
        redelivered: bool,
        fingerprint: u64,
        attempt: Option<u64>,
    ) {
        let at = Instant::now();
        // Take what the check needs, then check without holding the lock.
        let first = {
            let mut g = self.lock();
            g.deliveries += 1;
            match g.entries.get_mut(&r.request_id) {
                None => {
                    g.strays.push(Stray {
                        id: r.request_id.to_string(),
                        detail: format!("{} {}", r.kind, r.status.as_str()),
                    });
                    return;
                }
                Some(e) => e.payload.take().map(|p| (e.kind, p)),
            }
        };
        let wrong = first.and_then(|(kind, payload)| verify::check(kind, &payload, r).err());
        let d = Delivery {
            status: r.status,
            at,
            redelivered,
            fingerprint,
            attempt,
            error_code: r.error.as_ref().map(|e| e.code.clone()),
            error_message: r.error.as_ref().map(|e| e.message.clone()),
            shards: r.shards,
            wrong,
        };
        if let Some(e) = self.lock().entries.get_mut(&r.request_id) {
            e.deliveries.push(d);
        }
    }

    /// A delivery that could not be decoded at all.
    pub(crate) fn undecodable(&self, message_id: Option<String>, why: String) {
        let mut g = self.lock();
        g.deliveries += 1;
        g.strays.push(Stray {
            id: message_id.unwrap_or_else(|| "(no message_id)".into()),
            detail: format!("undecodable: {why}"),
        });
    }

    /// Counts so far.
    pub(crate) fn counts(&self) -> Counts {
        let g = self.lock();
        let answered = g
            .entries
            .values()
            .filter(|e| !e.deliveries.is_empty())
            .count();
        let outstanding = g
            .entries
            .values()
            .filter(|e| e.deliveries.is_empty() && e.publish_error.is_none())
            .count();
        Counts {
            submitted: g.entries.len(),
            answered,
            outstanding,
            deliveries: g.deliveries,
        }
    }

    /// Ids worth a look, in submission order, at most `limit`: without any result (publish
    /// failures excluded), with several, with a wrong output, or ending other than `completed`
    /// in a class that should complete.
    pub(crate) fn suspects(&self, limit: usize) -> Vec<Uuid> {
        let g = self.lock();
        let suspect = |e: &Entry| match e.deliveries.first() {
            None => e.publish_error.is_none(),
            Some(first) => {
                e.deliveries.len() > 1
                    || first.wrong.is_some()
                    || (e.class.expects_completion() && first.status != Status::Completed)
            }
        };
        g.order
            .iter()
            .filter(|id| g.entries.get(id).is_some_and(suspect))
            .take(limit)
            .copied()
            .collect()
    }

    /// Visit every entry in submission order, and the strays.
    pub(crate) fn visit(&self, mut f: impl FnMut(Uuid, &Entry), strays: &mut Vec<Stray>) {
        let g = self.lock();
        for id in &g.order {
            if let Some(e) = g.entries.get(id) {
                f(*id, e);
            }
        }
        strays.clone_from(&g.strays);
    }
}
