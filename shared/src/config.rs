//! Connection settings every Shardline process takes, from flags or the environment.

use crate::amqp::QueueType;
use crate::{Error, Names};

/// Default broker URL (the local RabbitMQ, guest/guest).
pub const DEFAULT_AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
/// Default Redis URL.
pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379";
/// Default of `--redis-wait-replicas`: writes do not wait for replicas (a single node has
/// none; on a cluster with replicas, 1 closes most of the failover window, see
/// `docs/clusters.md`).
pub const DEFAULT_REDIS_WAIT_REPLICAS: u32 = 0;
/// Default of `--lease-ms` (`SHARDLINE_LEASE_MS`), the finalizer lease: a worker's, and the
/// one the manager's sweeper takes when it re-drives a request.
pub const DEFAULT_LEASE_MS: u64 = 30_000;

/// Where the broker and Redis are, and which namespace of names to use.
#[derive(Debug, Clone, clap::Args)]
pub struct ConnectArgs {
    /// AMQP URL of RabbitMQ, or a RabbitMQ cluster's nodes as a comma-separated list of URLs.
    #[arg(long, env = "SHARDLINE_AMQP_URL", default_value = DEFAULT_AMQP_URL)]
    pub amqp_url: String,
    /// Type of the namespace's queues: `quorum` replicates them over a RabbitMQ cluster.
    /// Every process of a namespace must use the same (docs/clusters.md).
    #[arg(long, env = "SHARDLINE_QUEUE_TYPE", value_enum, default_value_t)]
    pub queue_type: QueueType,
    /// Redis URL, or a Redis Cluster's seed nodes as a comma-separated list of URLs.
    #[arg(long, env = "SHARDLINE_REDIS_URL", default_value = DEFAULT_REDIS_URL)]
    pub redis_url: String,
    /// Replicas each accounting write waits for (`WAIT`) before its step acks or publishes;
    /// a short answer makes writes go on without waiting for a while (docs/clusters.md).
    #[arg(long, env = "SHARDLINE_REDIS_WAIT_REPLICAS", default_value_t = DEFAULT_REDIS_WAIT_REPLICAS)]
    pub redis_wait_replicas: u32,
    /// Prefix of every exchange, queue and key; separate namespaces share nothing.
    #[arg(long, env = "SHARDLINE_NAMESPACE", default_value = crate::names::DEFAULT_NAMESPACE)]
    pub namespace: String,
}

impl ConnectArgs {
    /// Local servers, default namespace.
    pub fn local() -> Self {
        ConnectArgs {
            amqp_url: DEFAULT_AMQP_URL.into(),
            redis_url: DEFAULT_REDIS_URL.into(),
            redis_wait_replicas: DEFAULT_REDIS_WAIT_REPLICAS,
            queue_type: QueueType::default(),
            namespace: crate::names::DEFAULT_NAMESPACE.into(),
        }
    }

    /// The validated names of the namespace, with its queue type.
    ///
    /// # Errors
    /// [`Error::Config`] for a bad namespace.
    pub fn names(&self) -> Result<Names, Error> {
        Ok(Names::try_new(self.namespace.clone())?.with_queue_type(self.queue_type))
    }

    /// Connect to Redis as these settings say (nodes, namespace, replicas to wait for).
    ///
    /// # Errors
    /// A bad namespace or URL, or Redis unreachable.
    pub async fn store(&self) -> Result<crate::store::Store, Error> {
        let store = crate::store::Store::connect(&self.redis_url, self.names()?).await?;
        Ok(store.with_replicas(self.redis_wait_replicas))
    }
}
