//! The connection to Redis: one node, or a Redis Cluster.
//!
//! `SHARDLINE_REDIS_URL` names one node, or, as a comma-separated list, seed nodes of a
//! cluster. Both kinds of connection are multiplexed handles that reconnect by themselves;
//! the cluster one routes each command by its key's slot, follows `MOVED` and `ASK`, and
//! reloads the slot map after a failover. The store's commands are written so that each
//! script and each pipeline touches keys of one slot (a request's keys share its hash tag),
//! so the same code runs on both.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use redis::{Cmd, Pipeline, RedisFuture, Value};
use tracing::warn;

use crate::{Error, now_ms};

/// How long connecting to Redis may take, and how long one command may wait for its answer.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a write waits for its replicas (`WAIT`) before going on without them.
pub const REPLICA_WAIT: Duration = Duration::from_millis(200);
/// After a `WAIT` came back short, writes stop waiting for this long: a replica that is down
/// (or being promoted) would otherwise cost every write the whole [`REPLICA_WAIT`].
const SHORT_BACKOFF: Duration = Duration::from_secs(5);

/// Where Redis is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Nodes {
    /// One server.
    Single(String),
    /// Seed nodes of a Redis Cluster (at least two; the rest are discovered).
    Cluster(Vec<String>),
}

impl Nodes {
    /// Parse `SHARDLINE_REDIS_URL`: one URL, or several separated by commas (a cluster).
    ///
    /// # Errors
    /// [`Error::Config`] for an empty entry or a URL the client cannot parse.
    pub fn parse(urls: &str) -> Result<Self, Error> {
        let list: Vec<String> = urls.split(',').map(|u| u.trim().to_owned()).collect();
        for url in &list {
            if url.is_empty() {
                return Err(Error::Config(format!(
                    "Redis URL list {urls:?} has an empty entry"
                )));
            }
            redis::Client::open(url.as_str())
                .map_err(|e| Error::Config(format!("Redis URL {url:?}: {e}")))?;
        }
        Ok(match <[String; 1]>::try_from(list) {
            Ok([one]) => Nodes::Single(one),
            Err(many) => Nodes::Cluster(many),
        })
    }

    /// Every URL given, in order.
    pub fn urls(&self) -> &[String] {
        match self {
            Nodes::Single(one) => std::slice::from_ref(one),
            Nodes::Cluster(many) => many,
        }
    }
}

/// A multiplexed connection to a node or a cluster (a cheap handle; clones share it).
#[derive(Clone)]
pub(crate) enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl Conn {
    /// Connect, bounded by [`CONNECT_TIMEOUT`].
    pub(crate) async fn open(nodes: &Nodes) -> Result<Self, Error> {
        let connecting = async {
            Ok::<_, Error>(match nodes {
                Nodes::Single(url) => {
                    let config = ConnectionManagerConfig::new()
                        .set_connection_timeout(Some(CONNECT_TIMEOUT))
                        .set_response_timeout(Some(RESPONSE_TIMEOUT));
                    let client = redis::Client::open(url.as_str())?;
                    Conn::Single(ConnectionManager::new_with_config(client, config).await?)
                }
                Nodes::Cluster(urls) => {
                    let client = ClusterClient::builder(urls.iter().map(String::as_str))
                        .connection_timeout(CONNECT_TIMEOUT)
                        .response_timeout(RESPONSE_TIMEOUT)
                        .build()?;
                    Conn::Cluster(client.get_async_connection().await?)
                }
            })
        };
        tokio::time::timeout(CONNECT_TIMEOUT, connecting)
            .await
            .map_err(|_| {
                Error::Redis(redis::RedisError::from((
                    redis::ErrorKind::Io,
                    "connecting to Redis timed out",
                )))
            })?
    }

    /// `WAIT replicas timeout` on the node that holds `key`: how many replicas have every
    /// write this connection made there so far.
    async fn wait(&mut self, key: &str, replicas: u32, timeout: Duration) -> Result<u32, Error> {
        let mut cmd = redis::cmd("WAIT");
        cmd.arg(replicas).arg(timeout.as_millis() as u64);
        let acked = match self {
            Conn::Single(c) => cmd.query_async(c).await?,
            Conn::Cluster(c) => {
                let node = Route::with_key(key, SlotAddr::Master);
                let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(node));
                redis::from_redis_value(c.route_command(cmd, routing).await?)
                    .map_err(redis::RedisError::from)?
            }
        };
        Ok(acked)
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(cmd, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// How many replicas an accounting write waits for before the step it belongs to goes on
/// (`--redis-wait-replicas`). Redis replicates asynchronously: a write the primary answered
/// can be lost when the primary dies before a replica has it and that replica is promoted.
/// Waiting narrows that window to writes made while no replica answers.
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

    /// Wait until the writes made on `conn` to `key`'s node reached the replicas asked for,
    /// at most [`REPLICA_WAIT`]. Short of them, log it and stop waiting for a while: the
    /// write stands on the primary alone, as without this setting.
    pub(crate) async fn settle(&self, conn: &mut Conn, key: &str) -> Result<Settled, Error> {
        if self.replicas == 0 {
            return Ok(Settled::NotAsked);
        }
        if now_ms() < self.short_until_ms.load(Ordering::Relaxed) {
            return Ok(Settled::Skipped);
        }
        let acked = conn.wait(key, self.replicas, REPLICA_WAIT).await?;
        if acked >= self.replicas {
            return Ok(Settled::Replicated(acked));
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
        Ok(Settled::Short(acked))
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

/// The primaries (host, port) that a `CLUSTER NODES` reply lists as not failed.
pub(crate) fn primaries(nodes: &str) -> Vec<(String, u16)> {
    nodes
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (addr, flags) = (fields.get(1)?, fields.get(2)?);
            let flags: Vec<&str> = flags.split(',').collect();
            if !flags.contains(&"master") || flags.iter().any(|f| f.starts_with("fail")) {
                return None;
            }
            // `host:port@cport[,hostname]`
            let addr = addr.split(['@', ',']).next()?;
            let (host, port) = addr.rsplit_once(':')?;
            Some((host.to_owned(), port.parse().ok()?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One URL is a single node, several are a cluster's seeds, and a bad entry is refused.
    #[test]
    fn parses_one_node_or_a_cluster() {
        assert_eq!(
            Nodes::parse("redis://127.0.0.1:6379").expect("one"),
            Nodes::Single("redis://127.0.0.1:6379".into())
        );
        assert_eq!(
            Nodes::parse("redis://a:7000, redis://b:7001").expect("two"),
            Nodes::Cluster(vec!["redis://a:7000".into(), "redis://b:7001".into()])
        );
        assert!(matches!(
            Nodes::parse("redis://a:7000,,redis://b:7001"),
            Err(Error::Config(_))
        ));
        assert!(matches!(Nodes::parse("http://nope"), Err(Error::Config(_))));
    }

    /// Primaries are read off `CLUSTER NODES`; replicas and failed primaries are left out.
    #[test]
    fn reads_primaries_off_cluster_nodes() {
        let reply = "\
a1 127.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-5460
b2 127.0.0.1:7003@17003 slave a1 0 1 4 connected
c3 127.0.0.1:7001@17001 master - 0 1 2 connected 5461-10922
d4 127.0.0.1:7002@17002 master,fail - 0 1 3 disconnected
e5 ::1:7004@17004,node-e master - 0 1 5 connected 10923-16383
";
        assert_eq!(
            primaries(reply),
            vec![
                ("127.0.0.1".to_owned(), 7000),
                ("127.0.0.1".to_owned(), 7001),
                ("::1".to_owned(), 7004),
            ]
        );
    }
}
