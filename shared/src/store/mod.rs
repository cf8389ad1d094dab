//! Redis state of requests and engines. Every Redis command Shardline sends is in this module
//! (plus the Lua scripts in `shared/lua/`), so the layout in [`crate::names`] is the whole truth.
//!
//! - [`requests`]: a request's record: create, read, route, end early, the in-flight index;
//! - [`shards`]: per-shard accounting: results and failures, tries, parts;
//! - [`finalize`]: closing a request: the finalizer lease, what it reads, publication, finish;
//! - [`activity`]: the per-bucket activity counts behind the dashboard's charts;
//! - [`dead`]: a record of recent dead letters (the queue itself cannot be read in place);
//! - [`engines`]: registration and liveness of worker engines;
//! - [`rejections`]: short records of requests refused at intake;
//! - [`reports`]: what managers report for the dashboard: engines now and over the last hour,
//!   scaling signals;
//! - [`state`]: the request states stored in `meta.state`;
//! - [`conn`]: the connection, to one node or a Redis Cluster;
//! - [`replication`]: waiting for replicas after an accounting write.
//!
//! This file holds the store and what spans the namespace (locks, events, the learned
//! history, deleting it all).

mod activity;
mod conn;
mod dead;
mod engines;
mod finalize;
mod rejections;
mod replication;
mod reports;
mod requests;
mod shards;
mod state;

use std::sync::Arc;
use std::time::Duration;

use redis::AsyncCommands;

use crate::{Error, Names, now_ms};
use conn::Conn;
use replication::Replication;

pub use conn::Nodes;
pub use dead::{DEAD_BODY_MAX, DEAD_KEPT, DeadKind, DeadLetter};
pub use engines::EngineInfo;
pub use finalize::Closing;
pub use rejections::Rejected;
pub use replication::{REPLICA_WAIT, Settled};
pub use reports::{EnginePoint, SERIES_KEEP, SERIES_STEP, SeriesEntry};
pub use requests::{CANCEL_TOMBSTONE_TTL, Created, Ended, Meta, NewRequest};
pub use shards::{Begun, Recorded, Wanted};
pub use state::RequestState;

/// The inclusive Redis ranks of `count` items from `start` (`LRANGE`/`ZRANGE` arguments),
/// saturating far past the end (an empty page); `None` when `count` is 0.
fn ranks(start: usize, count: usize) -> Option<(isize, isize)> {
    let first = isize::try_from(start).unwrap_or(isize::MAX);
    let count = isize::try_from(count).unwrap_or(isize::MAX);
    (count > 0).then(|| (first, first.saturating_add(count - 1)))
}

/// Entries of the stream `key` from `since_ms` (epoch ms) on, oldest first, at most `count`.
async fn stream_since(
    store: &Store,
    key: String,
    since_ms: u64,
    count: usize,
) -> Result<Vec<redis::streams::StreamId>, Error> {
    let reply: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg(key)
        .arg(since_ms)
        .arg("+")
        .arg("COUNT")
        .arg(count)
        .query_async(&mut store.conn())
        .await?;
    Ok(reply.ids)
}

/// How many fields one `HMGET`/`HSET` carries when a request has many shards.
const BATCH: usize = 1024;

/// Redis access for one namespace.
///
/// Every command goes over one multiplexed connection (commands from concurrent tasks are
/// pipelined on it; on a cluster, one per node), which reconnects by itself after an error.
/// A pool of connections would check each connection out with a round trip of its own
/// (deadpool-redis sends `PING` on every checkout), as many round trips as the commands
/// themselves.
#[derive(Clone)]
pub struct Store {
    conn: Conn,
    names: Names,
    grace: Duration,
    replication: Arc<Replication>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("names", &self.names).finish()
    }
}

impl Store {
    /// How long keys outlive a request's deadline, and a published request's metadata lives.
    pub const DEFAULT_GRACE: Duration = Duration::from_secs(600);

    /// Connect to `urls` (one node, or a cluster's seed nodes separated by commas, see
    /// [`Nodes::parse`]) and check the server answers.
    ///
    /// # Errors
    /// A bad URL, or Redis unreachable.
    pub async fn connect(urls: &str, names: Names) -> Result<Self, Error> {
        let nodes = Nodes::parse(urls)?;
        let store = Store {
            conn: Conn::open(&nodes).await?,
            names,
            grace: Self::DEFAULT_GRACE,
            replication: Arc::new(Replication::new(0)),
        };
        let mut c = store.conn();
        let _: String = redis::cmd("PING").query_async(&mut c).await?;
        Ok(store)
    }

    /// Change how long keys outlive a deadline and a published request.
    #[must_use]
    pub fn with_grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// Make each accounting write wait for `replicas` replicas (`WAIT`, at most
    /// [`REPLICA_WAIT`]) before the step it belongs to goes on; 0 does not wait.
    #[must_use]
    pub fn with_replicas(mut self, replicas: u32) -> Self {
        self.replication = Arc::new(Replication::new(replicas));
        self
    }

    /// Run `pipes` at once, each a pipeline whose keys share one Redis Cluster slot (the
    /// cluster client refuses a pipeline that spans slots); on one node the multiplexed
    /// connection still sends them together. Their replies are ignored.
    async fn run_apart(&self, pipes: &[redis::Pipeline]) -> Result<(), Error> {
        let runs = pipes
            .iter()
            .filter(|p| p.cmd_iter().next().is_some())
            .map(|p| {
                let mut c = self.conn();
                async move { p.query_async::<()>(&mut c).await }
            });
        futures::future::try_join_all(runs).await?;
        Ok(())
    }

    /// `GET` each of `keys`, asked at once, in order. The keys live in different Redis
    /// Cluster slots, and the cluster client's own split of such an `MGET` fails (redis-rs
    /// 1.8: "Mismatch in the number of multi-slot results").
    async fn get_each(&self, keys: Vec<String>) -> Result<Vec<Option<String>>, Error> {
        let gets = keys.into_iter().map(|k| {
            let mut c = self.conn();
            async move { c.get::<_, Option<String>>(k).await }
        });
        Ok(futures::future::try_join_all(gets).await?)
    }

    /// Let the writes made so far to `key`'s node reach the replicas asked for (see
    /// [`Store::with_replicas`]); every accounting write calls this before its step goes on.
    ///
    /// # Errors
    /// Redis failures.
    pub async fn settle_replicas(&self, key: &str) -> Result<Settled, Error> {
        self.replication.settle(&mut self.conn(), key).await
    }

    async fn replicated(&self, key: &str) -> Result<(), Error> {
        self.settle_replicas(key).await.map(|_| ())
    }

    /// `EVALSHA` of `script` on `keys`, for [`Store::eval_replicated`]; its arguments follow.
    fn evalsha(script: &redis::Script, keys: &[String]) -> redis::Cmd {
        let mut eval = redis::cmd("EVALSHA");
        eval.arg(script.get_hash()).arg(keys.len()).arg(keys);
        eval
    }

    /// Run `eval` (an `EVALSHA` of `script`, called `name` in errors) and, when replicas
    /// are asked for, its `WAIT` in the same pipeline: one round trip, on the connection and
    /// node that made the write. A node that does not have the script yet (`NOSCRIPT`: a new
    /// node, or a promoted replica) gets it loaded, and the pipeline is sent again.
    async fn eval_replicated<T: redis::FromRedisValue>(
        &self,
        name: &'static str,
        script: &redis::Script,
        eval: redis::Cmd,
    ) -> Result<T, Error> {
        let mut c = self.conn();
        let asks = self.replication.asks();
        let mut pipe = redis::pipe();
        pipe.add_command(eval);
        if let Some(replicas) = asks {
            pipe.cmd("WAIT")
                .arg(replicas)
                .arg(REPLICA_WAIT.as_millis() as u64);
        }
        let sent: Result<Vec<redis::Value>, redis::RedisError> = pipe.query_async(&mut c).await;
        let replies = match sent {
            Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
                let _: String = script.load_async(&mut c).await?;
                pipe.query_async(&mut c).await?
            }
            other => other?,
        };
        let mut replies = replies.into_iter();
        let missing = || Error::Script {
            script: name,
            reply: "(no reply)".into(),
        };
        let value = replies.next().ok_or_else(missing)?;
        if asks.is_some() {
            let acked = replies.next().ok_or_else(missing)?;
            let acked: u32 = redis::from_redis_value(acked).map_err(redis::RedisError::from)?;
            self.replication.answered(acked);
        }
        Ok(redis::from_redis_value(value).map_err(redis::RedisError::from)?)
    }

    /// The names this store builds keys from.
    pub fn names(&self) -> &Names {
        &self.names
    }

    /// The shared connection (a cheap handle; commands on clones are multiplexed).
    fn conn(&self) -> Conn {
        self.conn.clone()
    }

    /// TTL for a live request's keys: until its deadline plus the grace period.
    fn live_ttl_ms(&self, deadline: u64) -> u64 {
        deadline.saturating_sub(now_ms()) + self.grace.as_millis() as u64
    }

    /// Take a namespace-wide lock for `ttl` (so that one manager of several does a sweep step).
    ///
    /// # Errors
    /// Redis failures.
    pub async fn try_lock(&self, name: &str, holder: &str, ttl: Duration) -> Result<bool, Error> {
        self.set_nx_px(&self.names.lock_key(name), holder, ttl)
            .await
    }

    /// `SET key holder NX PX ttl`: true when the key was free and is now ours.
    async fn set_nx_px(&self, key: &str, holder: &str, ttl: Duration) -> Result<bool, Error> {
        let mut c = self.conn();
        let taken: Option<String> = redis::cmd("SET")
            .arg(key)
            .arg(holder)
            .arg("NX")
            .arg("PX")
            .arg(ttl.as_millis() as u64)
            .query_async(&mut c)
            .await?;
        Ok(taken.is_some())
    }

    /// Publish a line on the namespace's events channel (see [`Names::events_channel`]).
    ///
    /// # Errors
    /// Redis failures.
    pub async fn publish_event(&self, line: &str) -> Result<(), Error> {
        let mut c = self.conn();
        let _: i64 = c.publish(self.names.events_channel(), line).await?;
        Ok(())
    }

    /// The stored history blob, if any.
    ///
    /// # Errors
    /// Redis failures.
    pub async fn load_history(&self) -> Result<Option<Vec<u8>>, Error> {
        let mut c = self.conn();
        Ok(c.get(self.names.history_key()).await?)
    }

    /// Replace the stored history blob; it expires after `ttl` without a save.
    ///
    /// # Errors
    /// Redis failures.
    pub async fn save_history(&self, blob: &[u8], ttl: Duration) -> Result<(), Error> {
        let mut c = self.conn();
        let _: () = c
            .pset_ex(self.names.history_key(), blob, ttl.as_millis() as u64)
            .await?;
        Ok(())
    }

    /// Delete every key of the namespace (`SCAN` and `UNLINK` in pages, so a large namespace
    /// does not block Redis; on a cluster, on each primary). Only for a namespace nothing runs
    /// on.
    ///
    /// # Errors
    /// Redis failures.
    pub async fn delete_namespace(&self) -> Result<(), Error> {
        let pattern = format!("{}:*", self.names.namespace());
        match &self.conn {
            Conn::Single(_) => self.delete_matching(&pattern, None).await,
            Conn::Cluster(_) => {
                for node in self.primaries().await? {
                    self.delete_matching(&pattern, Some(node)).await?;
                }
                Ok(())
            }
        }
    }

    /// `SCAN` one node (`node`, or the only one) for `pattern` and unlink what it finds.
    async fn delete_matching(
        &self,
        pattern: &str,
        node: Option<conn::NodeAddr>,
    ) -> Result<(), Error> {
        let mut c = self.conn();
        let mut cursor = String::from("0");
        loop {
            let mut scan = redis::cmd("SCAN");
            scan.arg(&cursor)
                .arg("MATCH")
                .arg(pattern)
                .arg("COUNT")
                .arg(BATCH);
            let (next, keys): (String, Vec<String>) = c.query_on(scan, node.as_ref()).await?;
            // One key per command, so that each goes to its own slot's primary.
            let unlinks = keys.iter().map(|k| {
                let mut c = self.conn();
                async move { redis::cmd("UNLINK").arg(k).query_async::<i64>(&mut c).await }
            });
            futures::future::try_join_all(unlinks).await?;
            if next == "0" {
                return Ok(());
            }
            cursor = next;
        }
    }

    /// The addresses of a cluster's primaries that hold keys (see [`conn::primaries`]).
    async fn primaries(&self) -> Result<Vec<conn::NodeAddr>, Error> {
        let text: String = redis::cmd("CLUSTER")
            .arg("NODES")
            .query_async(&mut self.conn())
            .await?;
        Ok(conn::primaries(&text))
    }

    /// Clients for the completion events' pub/sub connection (see [`Names::events_channel`]),
    /// one per URL of `urls`: a subscriber on any node of a cluster hears what is published on
    /// every node, so a listener moves to the next when its node goes away.
    ///
    /// # Errors
    /// A bad URL.
    pub fn event_clients(urls: &str) -> Result<Vec<redis::Client>, Error> {
        Nodes::parse(urls)?
            .urls()
            .iter()
            .map(|u| Ok(redis::Client::open(u.as_str())?))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    /// Ranks cover `count` items from `start`, saturate far past the end, and an empty page
    /// asks nothing.
    #[test]
    fn ranks_saturate_and_skip_empty_pages() {
        assert_eq!(super::ranks(0, 50), Some((0, 49)));
        assert_eq!(super::ranks(100, 1), Some((100, 100)));
        assert_eq!(super::ranks(usize::MAX, 50), Some((isize::MAX, isize::MAX)));
        assert_eq!(super::ranks(5, 0), None);
    }
}
