//! Manager settings, from flags or the environment.

use std::time::Duration;

use shardline::config::ConnectArgs;

/// Which routing policy places shards on engines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RouterKind {
    /// Engine with the fewest unfinished shards in the manager's ledger (ties rotate).
    LeastInFlight,
    /// Engines in turn.
    RoundRobin,
}

/// Manager configuration.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "shardline-manager",
    version,
    about = "Shardline manager: splits requests into shards and routes them to engines"
)]
pub struct Config {
    /// Broker, Redis and namespace.
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// Requests handled at once by this manager (AMQP prefetch on the request queue).
    #[arg(long, env = "SHARDLINE_MANAGER_PREFETCH", default_value_t = 16)]
    pub prefetch: u16,
    /// Upper bound on shards per request, whatever the request asks.
    #[arg(long, env = "SHARDLINE_MAX_SHARDS", default_value_t = 10_000)]
    pub max_shards: u32,
    /// Multiplies each kind's preferred shard size: below 1 cuts more, smaller shards.
    #[arg(long, env = "SHARDLINE_SHARD_SIZE_SCALE", default_value_t = 1.0)]
    pub shard_size_scale: f64,
    /// Largest request body accepted, in bytes.
    #[arg(long, env = "SHARDLINE_MAX_PAYLOAD_BYTES", default_value_t = 16 * 1024 * 1024)]
    pub max_payload_bytes: usize,
    /// Deadline of requests that do not set one, in milliseconds.
    #[arg(
        long,
        env = "SHARDLINE_DEFAULT_DEADLINE_MS",
        default_value_t = 3_600_000
    )]
    pub default_deadline_ms: u64,
    /// An engine whose last heartbeat is older than this is not routed to, in milliseconds.
    #[arg(long, env = "SHARDLINE_ENGINE_TTL_MS", default_value_t = 6_000)]
    pub engine_ttl_ms: u64,
    /// Routing policy.
    #[arg(long, env = "SHARDLINE_ROUTER", value_enum, default_value_t = RouterKind::LeastInFlight)]
    pub router: RouterKind,
    /// Finalizer lease the sweeper takes when it re-drives a request, in milliseconds.
    #[arg(long, env = "SHARDLINE_LEASE_MS", default_value_t = 30_000)]
    pub lease_ms: u64,
    /// How long shutdown waits for requests being dispatched, in milliseconds.
    #[arg(long, env = "SHARDLINE_GRACE_MS", default_value_t = 10_000)]
    pub grace_ms: u64,
}

impl Config {
    /// Defaults with the given connection settings (for tests and embedding).
    pub fn new(connect: ConnectArgs) -> Self {
        Config {
            connect,
            prefetch: 16,
            max_shards: 10_000,
            shard_size_scale: 1.0,
            max_payload_bytes: 16 * 1024 * 1024,
            default_deadline_ms: 3_600_000,
            engine_ttl_ms: 6_000,
            router: RouterKind::LeastInFlight,
            lease_ms: 30_000,
            grace_ms: 10_000,
        }
    }

    /// Validate ranges that clap cannot express.
    ///
    /// # Errors
    /// A message naming the bad setting.
    pub fn validate(&self) -> Result<(), String> {
        if self.prefetch == 0 {
            return Err("prefetch must be at least 1".into());
        }
        if self.max_shards == 0 {
            return Err("max shards must be at least 1".into());
        }
        if !(self.shard_size_scale.is_finite() && self.shard_size_scale > 0.0) {
            return Err("shard size scale must be a positive number".into());
        }
        if self.max_payload_bytes == 0 {
            return Err("max payload bytes must be at least 1".into());
        }
        self.connect.names().map_err(|e| e.to_string())?;
        Ok(())
    }

    pub(crate) fn lease(&self) -> Duration {
        Duration::from_millis(self.lease_ms.max(1))
    }

    pub(crate) fn engine_ttl(&self) -> Duration {
        Duration::from_millis(self.engine_ttl_ms)
    }
}
