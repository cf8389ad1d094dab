//! The manager's view of live engines, refreshed from their Redis heartbeats.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use shardline::store::Store;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// How often the view is refreshed.
pub const REFRESH_EVERY: Duration = Duration::from_millis(500);

/// Live engine ids, sorted. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Engines {
    live: Arc<RwLock<Vec<String>>>,
}

impl Engines {
    /// The current snapshot.
    pub fn snapshot(&self) -> Vec<String> {
        self.live
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn set(&self, ids: Vec<String>) {
        let mut g = self
            .live
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if *g != ids {
            info!(engines = ?ids, "live engines changed");
            *g = ids;
        }
    }

    /// Refresh once from Redis.
    ///
    /// # Errors
    /// Redis failures.
    pub async fn refresh(&self, store: &Store, ttl: Duration) -> Result<(), shardline::Error> {
        self.set(store.live_engines(ttl).await?);
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
