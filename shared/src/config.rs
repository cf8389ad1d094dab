//! Connection settings every Shardline process takes, from flags or the environment.

use crate::{Error, Names};

/// Default broker URL (the local RabbitMQ, guest/guest).
pub const DEFAULT_AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
/// Default Redis URL.
pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379";
/// Default of `--lease-ms` (`SHARDLINE_LEASE_MS`), the finalizer lease: a worker's, and the
/// one the manager's sweeper takes when it re-drives a request.
pub const DEFAULT_LEASE_MS: u64 = 30_000;

/// Where the broker and Redis are, and which namespace of names to use.
#[derive(Debug, Clone, clap::Args)]
pub struct ConnectArgs {
    /// AMQP URL of RabbitMQ.
    #[arg(long, env = "SHARDLINE_AMQP_URL", default_value = DEFAULT_AMQP_URL)]
    pub amqp_url: String,
    /// Redis URL.
    #[arg(long, env = "SHARDLINE_REDIS_URL", default_value = DEFAULT_REDIS_URL)]
    pub redis_url: String,
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
            namespace: crate::names::DEFAULT_NAMESPACE.into(),
        }
    }

    /// The validated names of the namespace.
    ///
    /// # Errors
    /// [`Error::Config`] for a bad namespace.
    pub fn names(&self) -> Result<Names, Error> {
        Names::try_new(self.namespace.clone())
    }
}
