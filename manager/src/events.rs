//! Events from the workers, fed into the [`Ledger`] and the [`History`]:
//! - `<engine> <request> <index> <micros>` from the resolver script when a partial result is
//!   stored (the shard is finished; it took `micros` to process);
//! - `merged <kind> <parts> <micros>` from the finalizer after a merge.

use std::time::Duration;

use futures::StreamExt;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};
use uuid::Uuid;

use crate::history::History;
use crate::ledger::{Ledger, STALE_AFTER};
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
}

impl Event {
    /// Parse an event payload; `None` for anything malformed.
    pub fn parse(s: &str) -> Option<Self> {
        if let Some(rest) = s.strip_prefix("merged ") {
            let mut it = rest.split(' ');
            let e = Event::Merged {
                kind: it.next()?.to_owned(),
                parts: it.next()?.parse().ok()?,
                micros: it.next()?.parse().ok()?,
            };
            return it.next().is_none().then_some(e);
        }
        Completion::parse(s).map(Event::Completed)
    }

    /// Apply the event to the ledger and the history.
    pub fn apply(self, ledger: &Ledger, history: &History) {
        match self {
            Event::Completed(c) => {
                let Some(sent) = ledger.finished(c.request, c.index) else {
                    return;
                };
                let micros = c.micros as f64;
                history.observe(&sent.kind, sent.size, &c.engine, micros);
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
        }
    }
}

/// Listen for completions until cancelled, reconnecting after errors.
pub async fn listen(
    client: redis::Client,
    channel: String,
    predictor: Predictor,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            r = listen_once(&client, &channel, &predictor) => {
                if let Err(error) = r {
                    warn!(%error, "completion events interrupted; reconnecting");
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
    let mut pubsub = client.get_async_pubsub().await?;
    pubsub.subscribe(channel).await?;
    let mut messages = pubsub.on_message();
    let mut last_expire = tokio::time::Instant::now();
    while let Some(msg) = messages.next().await {
        let payload: String = msg.get_payload()?;
        match Event::parse(&payload) {
            Some(e) => {
                let completed = matches!(e, Event::Completed(_));
                e.apply(ledger, history);
                if completed {
                    predictor.freed.notify_one();
                }
            }
            None => debug!(%payload, "ignoring a malformed event"),
        }
        if last_expire.elapsed() > Duration::from_secs(30) {
            ledger.expire(STALE_AFTER);
            last_expire = tokio::time::Instant::now();
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
            let e = Event::parse(&format!("w1 {id} {i} 2000")).expect("parses");
            e.clone().apply(&ledger, &history);
            e.apply(&ledger, &history);
        }
        assert_eq!(ledger.in_flight("w1"), 0);
        let predicted = history.predict("k", 1.0).expect("learned");
        assert!((predicted - 2_000.0).abs() < 1e-6, "{predicted}");
    }
}
