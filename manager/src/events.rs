//! Events from the workers, fed into the [`Ledger`] and the [`History`]:
//! - `<engine> <request> <index> <micros>` from the resolver script when a partial result is
//!   stored (the shard is finished; it took `micros` to process);
//! - `merged <kind> <parts> <micros>` from the finalizer after a merge;
//! - `ended <request>` when a running request starts failing (a failed shard, a lost quorum,
//!   a passed deadline, a cancel): its unfinished shards will be skipped or not counted, so no
//!   completion comes for them, and the ledger forgets them.

use std::time::Duration;

use futures::StreamExt;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};
use uuid::Uuid;

use crate::hedge::Lateness;
use crate::history::History;
use crate::ledger::Ledger;
use crate::locality::Fit;
use crate::predictor::Predictor;

/// One completion: `<engine> <request> <index> <micros>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    /// Engine that processed the shard.
    pub engine: String,
    /// Request id.
    pub request: Uuid,
    /// Shard index.
    pub index: u32,
    /// Processing time in microseconds.
    pub micros: u64,
}

impl Completion {
    /// Parse an event payload; `None` for anything malformed.
    pub fn parse(s: &str) -> Option<Self> {
        let mut it = s.split(' ');
        let c = Completion {
            engine: it.next()?.to_owned(),
            request: it.next()?.parse().ok()?,
            index: it.next()?.parse().ok()?,
            micros: it.next()?.parse().ok()?,
        };
        it.next().is_none().then_some(c)
    }
}

/// Any event on the channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A shard's result was stored.
    Completed(Completion),
    /// A request's partial results were merged.
    Merged {
        /// Kind name.
        kind: String,
        /// Partial results merged.
        parts: u32,
        /// Time the merge took, µs.
        micros: u64,
    },
    /// A request ended early; its unfinished shards will send no completion.
    Ended(Uuid),
}

impl Event {
    /// Parse an event payload; `None` for anything malformed.
    /// A completion is tried before the prefixed forms (its second word is a request id), so
    /// an engine named `ended` or `merged` is still read right.
    pub fn parse(s: &str) -> Option<Self> {
        if let Some(c) = Completion::parse(s) {
            return Some(Event::Completed(c));
        }
        if let Some(rest) = s.strip_prefix("ended ") {
            return rest.parse().ok().map(Event::Ended);
        }
        if let Some(rest) = s.strip_prefix("merged ") {
            let mut it = rest.split(' ');
            let e = Event::Merged {
                kind: it.next()?.to_owned(),
                parts: it.next()?.parse().ok()?,
                micros: it.next()?.parse().ok()?,
            };
            return it.next().is_none().then_some(e);
        }
        None
    }

    /// Apply the event to the ledger, the history and, while hedging is on, the lateness of
    /// results.
    pub fn apply(self, ledger: &Ledger, history: &History, lateness: Option<&Lateness>) {
        match self {
            Event::Completed(c) => {
                let Some(sent) = ledger.finished(c.request, c.index) else {
                    return;
                };
                let micros = c.micros as f64;
                // A hedge copy's result says nothing of how late the first engine was.
                if let Some(lateness) = lateness.filter(|_| sent.engine == c.engine) {
                    let took = sent.at.elapsed().as_secs_f64() * 1e6;
                    lateness.observe(&sent.kind, took, sent.due_us);
                }
                if sent.fit == Fit::Remote && sent.engine == c.engine {
                    history.observe_miss(&sent.kind, sent.size, &c.engine, micros);
                } else {
                    history.observe(&sent.kind, sent.size, &c.engine, micros);
                }
                if sent.idle && sent.engine == c.engine {
                    let total = sent.at.elapsed().as_secs_f64() * 1e6;
                    history.observe_transport(total - micros);
                }
            }
            Event::Merged {
                kind,
                parts,
                micros,
            } => history.observe_merge(&kind, parts, micros as f64),
            Event::Ended(request) => {
                let n = ledger.forget(request);
                if n > 0 {
                    debug!(request.id = %request, shards = n, "request ended early; its shards leave the ledger");
                }
            }
        }
    }

    /// Whether the event may free an engine's slot in the ledger.
    pub fn frees(&self) -> bool {
        matches!(self, Event::Completed(_) | Event::Ended(_))
    }
}

/// Listen for completions until cancelled, reconnecting after errors, to the next of
/// `clients` (a cluster's nodes: a subscriber on any of them hears every node's events).
pub async fn listen(
    clients: Vec<redis::Client>,
    channel: String,
    predictor: Predictor,
    stop: CancellationToken,
) {
    for client in clients.iter().cycle() {
        tokio::select! {
            () = stop.cancelled() => return,
            r = listen_once(client, &channel, &predictor) => {
                match r {
                    Err(error) => warn!(%error, "completion events interrupted; reconnecting"),
                    Ok(()) => warn!("completion events connection closed; reconnecting"),
                }
            }
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

async fn listen_once(
    client: &redis::Client,
    channel: &str,
    predictor: &Predictor,
) -> Result<(), redis::RedisError> {
    let (ledger, history) = (&*predictor.ledger, &*predictor.history);
    let lateness = predictor.lateness.as_deref();
    let mut pubsub = client.get_async_pubsub().await?;
    pubsub.subscribe(channel).await?;
    let mut messages = pubsub.on_message();
    while let Some(msg) = messages.next().await {
        let payload: String = msg.get_payload()?;
        match Event::parse(&payload) {
            Some(e) => {
                let frees = e.frees();
                e.apply(ledger, history, lateness);
                if frees {
                    predictor.freed.notify_one();
                }
            }
            None => debug!(%payload, "ignoring a malformed event"),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Well-formed events parse; anything else is ignored rather than trusted.
    #[test]
    fn parses_events_strictly() {
        let id = Uuid::new_v4();
        let c = Completion::parse(&format!("w1 {id} 7 1500")).expect("parses");
        assert_eq!(
            (c.engine.as_str(), c.request, c.index, c.micros),
            ("w1", id, 7, 1500)
        );
        assert!(Completion::parse("w1 nope 7 1").is_none());
        assert!(Completion::parse(&format!("w1 {id} 7")).is_none());
        assert!(Completion::parse(&format!("w1 {id} 7 1 extra")).is_none());
        assert_eq!(
            Event::parse("merged sort 12 900"),
            Some(Event::Merged {
                kind: "sort".into(),
                parts: 12,
                micros: 900
            })
        );
        assert!(Event::parse("merged sort 12").is_none());
        assert_eq!(Event::parse(&format!("ended {id}")), Some(Event::Ended(id)));
        assert!(Event::parse("ended nope").is_none());
        assert!(Event::parse(&format!("ended {id} 1")).is_none());
        // Engines may be named like an event word.
        for engine in ["ended", "merged"] {
            let e = Event::parse(&format!("{engine} {id} 3 100"));
            assert!(
                matches!(&e, Some(Event::Completed(c)) if c.engine == engine),
                "{e:?}"
            );
        }
    }

    /// A request that ends early leaves the ledger at once, with every unfinished shard of
    /// it, and no other request's shards.
    #[test]
    fn an_ended_request_leaves_the_ledger() {
        let (ledger, history) = (Ledger::default(), History::default());
        let (ended, other) = (Uuid::new_v4(), Uuid::new_v4());
        for i in 0..3 {
            ledger.sent(ended, i, crate::ledger::entry("w1", 1_000.0));
        }
        ledger.sent(other, 0, crate::ledger::entry("w1", 1_000.0));
        let e = Event::Ended(ended);
        assert!(e.frees());
        e.apply(&ledger, &history, None);
        assert_eq!(ledger.in_flight("w1"), 1);
        assert!(ledger.finished(other, 0).is_some());
    }

    /// A completion teaches the history only for shards this manager sent, once.
    #[test]
    fn completions_feed_the_history_once() {
        let (ledger, history) = (Ledger::default(), History::default());
        let id = Uuid::new_v4();
        for i in 0..12 {
            ledger.sent(id, i, crate::ledger::entry("w1", 1_000.0));
        }
        for i in 0..12 {
            Event::parse(&format!("w1 {id} {i} 2000"))
                .expect("parses")
                .apply(&ledger, &history, None);
            // A duplicate of the same completion, far off: it must not be learned.
            Event::parse(&format!("w1 {id} {i} 50000"))
                .expect("parses")
                .apply(&ledger, &history, None);
        }
        // A completion of a shard this manager never sent, far off too.
        let stranger = Uuid::new_v4();
        Event::parse(&format!("w1 {stranger} 0 50000"))
            .expect("parses")
            .apply(&ledger, &history, None);
        assert_eq!(ledger.in_flight("w1"), 0);
        let predicted = history.predict("k", 1.0).expect("learned");
        assert!((predicted - 2_000.0).abs() < 1e-6, "{predicted}");
    }

    /// A completion of a shard sent away from its data teaches the miss factor, not the
    /// kind's line: a remote read is not a slower kind.
    #[test]
    fn a_remote_completion_teaches_the_miss_factor() {
        let (ledger, history) = (Ledger::default(), History::default());
        let id = Uuid::new_v4();
        for i in 0..12 {
            ledger.sent(id, i, crate::ledger::entry("w1", 1_000.0));
            Event::parse(&format!("w1 {id} {i} 2000"))
                .expect("parses")
                .apply(&ledger, &history, None);
        }
        let remote = crate::ledger::Sent {
            fit: Fit::Remote,
            ..crate::ledger::entry("w1", 4_000.0)
        };
        ledger.sent(id, 12, remote);
        Event::parse(&format!("w1 {id} 12 6000"))
            .expect("parses")
            .apply(&ledger, &history, None);
        let predicted = history.predict("k", 1.0).expect("learned");
        assert!((predicted - 2_000.0).abs() < 1e-6, "{predicted}");
        assert!(
            (history.miss("k") - 3.0).abs() < 1e-6,
            "{}",
            history.miss("k")
        );
    }

    /// A result from the engine a shard was sent to teaches how late results come; one from
    /// its hedge copy's engine does not (it says nothing of the first engine's delay).
    #[test]
    fn only_first_engine_results_teach_lateness() {
        let (ledger, history, lateness) =
            (Ledger::default(), History::default(), Lateness::default());
        let id = Uuid::new_v4();
        let n = crate::hedge::MIN_SAMPLES as u32;
        for i in 0..2 * n {
            ledger.sent(id, i, crate::ledger::entry("w1", 1_000.0));
            let copy = crate::ledger::HedgeCopy {
                engine: "w2".into(),
                expected_us: 1_000.0,
            };
            assert!(ledger.hedged(id, i, copy));
        }
        for i in 0..n {
            Event::parse(&format!("w2 {id} {i} 1000"))
                .expect("parses")
                .apply(&ledger, &history, Some(&lateness));
        }
        assert!(
            lateness.quantiles(0.95).is_empty(),
            "copies taught lateness"
        );
        assert_eq!(
            ledger.in_flight("w2"),
            n as usize,
            "finished copies still counted"
        );
        for i in n..2 * n {
            Event::parse(&format!("w1 {id} {i} 1000"))
                .expect("parses")
                .apply(&ledger, &history, Some(&lateness));
        }
        assert!(lateness.quantiles(0.95).contains_key("k"));
        assert_eq!((ledger.in_flight("w1"), ledger.in_flight("w2")), (0, 0));
    }
}
