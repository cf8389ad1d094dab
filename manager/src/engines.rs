//! The manager's view of live engines, refreshed from their Redis heartbeats.

use std::collections::BTreeSet;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use shardline::kind::BUILTIN_KINDS;
use shardline::store::{EngineInfo, Store};
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
    /// The kinds it serves, from its heartbeat; `None` when it did not say (it is then
    /// taken to serve the built-in kinds).
    pub kinds: Option<BTreeSet<String>>,
    /// The locality keys it holds ([`shardline::locality`]).
    pub holds: Arc<BTreeSet<String>>,
}

impl Engine {
    /// An engine with `slots` slots serving `kinds` (for tests and benchmarks).
    pub fn new(id: impl Into<String>, slots: u32, kinds: &[&str]) -> Self {
        Engine {
            id: id.into(),
            slots,
            kinds: Some(kinds.iter().map(|k| (*k).to_owned()).collect()),
            holds: Arc::default(),
        }
    }

    /// The same engine holding the locality keys `keys`.
    #[must_use]
    pub fn holding(mut self, keys: &[&str]) -> Self {
        self.holds = Arc::new(keys.iter().map(|k| (*k).to_owned()).collect());
        self
    }

    /// Read the heartbeat details ([`EngineInfo`]).
    pub fn from_details(id: String, details: Option<&str>) -> Self {
        let info = details.map(EngineInfo::parse).unwrap_or_default();
        Engine {
            id,
            slots: info.concurrency.filter(|&n| n > 0).unwrap_or(1),
            kinds: info.kinds.map(|k| k.into_iter().collect()),
            holds: Arc::default(),
        }
    }

    /// Whether it holds the locality key `key`.
    pub fn holds(&self, key: &str) -> bool {
        self.holds.contains(key)
    }

    /// Whether it serves `kind` (see [`EngineInfo::serves`]).
    pub fn serves(&self, kind: &str) -> bool {
        match &self.kinds {
            Some(kinds) => kinds.contains(kind),
            None => BUILTIN_KINDS.contains(&kind),
        }
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

    /// The live engines that serve `kind`.
    pub fn serving(&self, kind: &str) -> Vec<Engine> {
        let mut engines = self.snapshot();
        engines.retain(|e| e.serves(kind));
        engines
    }

    fn set(&self, engines: Vec<Engine>) {
        let mut g = self
            .live
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if *g != engines {
            info!(engines = ?engines.iter().map(|e| (&e.id, e.slots, e.holds.len())).collect::<Vec<_>>(), "live engines changed (id, slots, locality keys)");
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
        let held = store.localities(&ids).await?;
        let engines = ids
            .into_iter()
            .zip(details)
            .zip(held)
            .map(|((id, d), keys)| Engine {
                holds: Arc::new(keys),
                ..Engine::from_details(id, d.as_deref())
            })
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

    /// The kinds an engine serves come from its heartbeat; one that does not say serves the
    /// built-in kinds.
    #[test]
    fn reads_kinds_from_heartbeat_details() {
        let e = Engine::from_details("w".into(), Some("concurrency=2 kinds=sort,grep pid=1"));
        assert!(e.serves("grep") && e.serves("sort") && !e.serves("wordcount"));
        let none = Engine::from_details("w".into(), Some("kinds= pid=1"));
        assert!(!none.serves("sort"));
        let unsaid = Engine::from_details("w".into(), Some("concurrency=2"));
        assert!(unsaid.serves("sort") && !unsaid.serves("grep"));
    }
}
