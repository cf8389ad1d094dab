//! Completion events from the resolver script, fed into the [`Ledger`].

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};
use uuid::Uuid;

use crate::ledger::{Ledger, STALE_AFTER};

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

/// Listen for completions until cancelled, reconnecting after errors.
pub async fn listen(
    client: redis::Client,
    channel: String,
    ledger: Arc<Ledger>,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            r = listen_once(&client, &channel, &ledger) => {
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
    ledger: &Ledger,
) -> Result<(), redis::RedisError> {
    let mut pubsub = client.get_async_pubsub().await?;
    pubsub.subscribe(channel).await?;
    let mut messages = pubsub.on_message();
    let mut last_expire = tokio::time::Instant::now();
    while let Some(msg) = messages.next().await {
        let payload: String = msg.get_payload()?;
        match Completion::parse(&payload) {
            Some(c) => ledger.finished(c.request, c.index),
            None => debug!(%payload, "ignoring malformed completion event"),
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
    }
}
