//! Waiting for replicas after an accounting write (`--redis-wait-replicas`).
//!
//! Redis replicates asynchronously: a write the primary answered can be lost when the primary
//! dies before a replica has it and that replica is promoted. `WAIT` on the same connection,
//! right after the write, narrows that window to writes made while no replica answers. It is
//! best effort: a short answer is logged and counted, and writes stop waiting for a while, so
//! a cluster that has lost a replica keeps running rather than stalling.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tracing::warn;

use super::conn::Conn;
use crate::{Error, now_ms};

/// How long a write waits for its replicas (`WAIT`) before going on without them.
pub const REPLICA_WAIT: Duration = Duration::from_millis(200);
/// After a `WAIT` came back short, writes stop waiting for this long: a replica that is down
/// (or being promoted) would otherwise cost every write the whole [`REPLICA_WAIT`].
const SHORT_BACKOFF: Duration = Duration::from_secs(5);

/// How many replicas an accounting write waits for before the step it belongs to goes on.
#[derive(Debug)]
pub(crate) struct Replication {
    replicas: u32,
    /// Until when (epoch ms) writes do not wait, after a short `WAIT`.
    short_until_ms: AtomicU64,
}

impl Replication {
    pub(crate) fn new(replicas: u32) -> Self {
        Replication {
            replicas,
            short_until_ms: AtomicU64::new(0),
        }
    }

    /// How many replicas a write made now should wait for: `None` when none are asked for,
    /// or while writes do not wait after a short answer.
    pub(crate) fn asks(&self) -> Option<u32> {
        let skipping = now_ms() < self.short_until_ms.load(Ordering::Relaxed);
        (self.replicas > 0 && !skipping).then_some(self.replicas)
    }

    /// Wait until the writes made on `conn` to `key`'s node reached the replicas asked for,
    /// at most [`REPLICA_WAIT`]. Short of them, log it and stop waiting for a while: the
    /// write stands on the primary alone, as without this setting.
    pub(crate) async fn settle(&self, conn: &mut Conn, key: &str) -> Result<Settled, Error> {
        if self.replicas == 0 {
            return Ok(Settled::NotAsked);
        }
        let Some(replicas) = self.asks() else {
            return Ok(Settled::Skipped);
        };
        let acked = conn.wait(key, replicas, REPLICA_WAIT).await?;
        Ok(self.answered(acked))
    }

    /// What a `WAIT` for [`Replication::asks`] replicas answered: short of them, log and
    /// count it and stop waiting for [`SHORT_BACKOFF`].
    pub(crate) fn answered(&self, acked: u32) -> Settled {
        if acked >= self.replicas {
            return Settled::Replicated(acked);
        }
        self.short_until_ms.store(
            now_ms() + SHORT_BACKOFF.as_millis() as u64,
            Ordering::Relaxed,
        );
        crate::metric::redis_unreplicated();
        warn!(
            acked,
            wanted = self.replicas,
            "a Redis write reached fewer replicas than --redis-wait-replicas asks; writes stop waiting for {}s",
            SHORT_BACKOFF.as_secs()
        );
        Settled::Short(acked)
    }
}

/// How a write's wait for replicas ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    /// No replicas are asked for (`--redis-wait-replicas 0`).
    NotAsked,
    /// This many replicas have the write (at least those asked for).
    Replicated(u32),
    /// Only this many replicas answered in time; writes stop waiting for a while.
    Short(u32),
    /// Not waited for: an earlier wait came back short a moment ago.
    Skipped,
}
