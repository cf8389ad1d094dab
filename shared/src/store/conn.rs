//! The connection to Redis: one node, or a Redis Cluster.
//!
//! `SHARDLINE_REDIS_URL` names one node, or, as a comma-separated list, seed nodes of a
//! cluster. Both kinds of connection are multiplexed handles that reconnect by themselves;
//! the cluster one routes each command by its key's slot, follows `MOVED` and `ASK`, and
//! reloads the slot map after a failover. The store's commands are written so that each
//! script and each pipeline touches keys of one slot (a request's keys share its hash tag),
//! so the same code runs on both. Waiting for replicas is in [`super::replication`].

use std::time::Duration;

use crate::Error;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use redis::{Cmd, Pipeline, RedisFuture, Value};

/// How long connecting to Redis may take, and how long one command may wait for its answer.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);

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

    /// Run `cmd` on `node` of a cluster (a command about the node itself, such as `SCAN`),
    /// or as usual without one or on a single server.
    pub(crate) async fn query_on<T: redis::FromRedisValue>(
        &mut self,
        cmd: Cmd,
        node: Option<&NodeAddr>,
    ) -> Result<T, Error> {
        Ok(match (self, node) {
            (Conn::Cluster(c), Some(node)) => {
                let at = SingleNodeRoutingInfo::ByAddress {
                    host: node.host.clone(),
                    port: node.port,
                };
                let reply = c.route_command(cmd, RoutingInfo::SingleNode(at)).await?;
                redis::from_redis_value(reply).map_err(redis::RedisError::from)?
            }
            (conn, _) => cmd.query_async(conn).await?,
        })
    }

    /// `WAIT replicas timeout` on the node that holds `key`: how many replicas have every
    /// write this connection made there so far.
    pub(crate) async fn wait(
        &mut self,
        key: &str,
        replicas: u32,
        timeout: Duration,
    ) -> Result<u32, Error> {
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

/// A node's address as the cluster announces it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NodeAddr {
    pub(crate) host: String,
    pub(crate) port: u16,
}

/// The primaries that a `CLUSTER NODES` reply lists as serving slots, addressable and not
/// failed: the nodes that hold keys.
pub(crate) fn primaries(nodes: &str) -> Vec<NodeAddr> {
    nodes
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (addr, flags) = (fields.get(1)?, fields.get(2)?);
            let flags: Vec<&str> = flags.split(',').collect();
            let down = flags
                .iter()
                .any(|f| f.starts_with("fail") || *f == "noaddr" || *f == "handshake");
            if !flags.contains(&"master") || down || fields.len() <= 8 {
                return None;
            }
            // `host:port@cport[,hostname]`
            let addr = addr.split(['@', ',']).next()?;
            let (host, port) = addr.rsplit_once(':')?;
            Some(NodeAddr {
                host: host.to_owned(),
                port: port.parse().ok()?,
            })
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

    /// Primaries are read off `CLUSTER NODES`; replicas, failed primaries and primaries that
    /// serve no slot are left out.
    #[test]
    fn reads_primaries_off_cluster_nodes() {
        let reply = "\
a1 127.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-5460
b2 127.0.0.1:7003@17003 slave a1 0 1 4 connected
c3 127.0.0.1:7001@17001 master - 0 1 2 connected 5461-10922
d4 127.0.0.1:7002@17002 master,fail - 0 1 3 disconnected
e5 ::1:7004@17004,node-e master - 0 1 5 connected 10923-16383
f6 127.0.0.1:7005@17005 master - 0 1 6 connected
";
        let addr = |host: &str, port| NodeAddr {
            host: host.to_owned(),
            port,
        };
        assert_eq!(
            primaries(reply),
            vec![
                addr("127.0.0.1", 7000),
                addr("127.0.0.1", 7001),
                addr("::1", 7004)
            ]
        );
    }
}
