//! The manager's view of live engines, refreshed from their Redis heartbeats.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use shardline::store::Store;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// How often the view is refreshed.
pub const REFRESH_EVERY: Duration = Duration::from_millis(500);

/// One live engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Engine {
    /// Engine id (its queue is `<ns>.engine.<id>`).
    pub id: String,
    /// Shards it runs at once, from its heartbeat (1 if it did not say).
    pub slots: u32,
}

impl Engine {
    /// Parse the heartbeat details `concurrency=<n> pid=<p>`.
    pub fn from_details(id: String, details: Option<&str>) -> Self {
        let slots = details
            .into_iter()
            .flat_map(str::split_whitespace)
            .find_map(|kv| kv.strip_prefix("concurrency="))
            .and_then(|n| n.parse().ok())
            .filter(|&n| n > 0)
            .unwrap_or(1);
        Engine { id, slots }
    }
}

/// Live engines, sorted by id. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Engines {
    live: Arc<RwLock<Vec<Engine>>>,
}

impl Engines {
    /// The current snapshot.
    pub fn snapshot(&self) -> Vec<Engine> {
        self.live
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn set(&self, engines: Vec<Engine>) {
        let mut g = self
            .live
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if *g != engines {
            info!(engines = ?engines.iter().map(|e| (&e.id, e.slots)).collect::<Vec<_>>(), "live engines changed");
            *g = engines;
        }
    }

    /// Refresh once from Redis.
    ///
    /// # Errors
    /// Redis failures.
    pub async fn refresh(&self, store: &Store, ttl: Duration) -> Result<(), shardline::Error> {
        let ids = store.live_engines(ttl).await?;
        let details = store.engine_details(&ids).await?;
        let engines = ids
            .into_iter()
            .zip(details)
            .map(|(id, d)| Engine::from_details(id, d.as_deref()))
            .collect();
        self.set(engines);
        Ok(())
    }

    /// Keep refreshing until cancelled; errors are logged and retried.
    pub async fn keep_fresh(self, store: Store, ttl: Duration, stop: CancellationToken) {
        let mut tick = tokio::time::interval(REFRESH_EVERY);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = tick.tick() => {
                    if let Err(error) = self.refresh(&store, ttl).await {
                        warn!(%error, "refreshing live engines failed");
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Slots come from the heartbeat details; anything unreadable means one slot.
    #[test]
    fn reads_slots_from_heartbeat_details() {
        let e = |d: Option<&str>| Engine::from_details("w".into(), d).slots;
        assert_eq!(e(Some("concurrency=4 pid=12")), 4);
        assert_eq!(e(Some("pid=12")), 1);
        assert_eq!(e(Some("concurrency=0")), 1);
        assert_eq!(e(Some("concurrency=x")), 1);
        assert_eq!(e(None), 1);
    }
}
