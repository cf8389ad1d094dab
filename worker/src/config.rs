//! Worker settings, from flags or the environment.

use std::time::Duration;

use shardline::config::{ConnectArgs, DEFAULT_LEASE_MS};
use shardline::exporter::MetricsAddr;
use shardline::locality::LocalityKey;

/// Default of `--heartbeat-ms`.
pub const DEFAULT_HEARTBEAT_MS: u64 = 2_000;
/// Default of `--grace-ms`.
pub const DEFAULT_GRACE_MS: u64 = 30_000;
/// Default of `--shard-time-limit-ms` (25 minutes, below the broker's 30-minute
/// `consumer_timeout`).
pub const DEFAULT_SHARD_TIME_LIMIT_MS: u64 = 25 * 60 * 1_000;
/// Default of `--stop-check-ms`.
pub const DEFAULT_STOP_CHECK_MS: u64 = 500;
/// Default of `--inline-us`.
pub const DEFAULT_INLINE_US: u64 = 200;
/// Default of `--synthetic-speed`.
pub const DEFAULT_SYNTHETIC_SPEED: f64 = 1.0;
/// Default of `--metrics-addr`: off (a host runs many workers; each picks its own port).
pub const DEFAULT_METRICS_ADDR: MetricsAddr = MetricsAddr::Off;

/// Worker configuration.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "shardline-worker",
    version,
    about = "Shardline worker engine: processes shards and resolves requests"
)]
pub struct Config {
    /// Broker, Redis and namespace.
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// Engine id; its queue is `<namespace>.engine.<id>`. Default: hostname plus a random suffix.
    #[arg(long, env = "SHARDLINE_WORKER_ID")]
    pub id: Option<String>,
    /// Shards processed at once (and the AMQP prefetch). Default: the number of CPUs.
    #[arg(long, env = "SHARDLINE_CONCURRENCY")]
    pub concurrency: Option<u16>,
    /// Heartbeat period in milliseconds; the heartbeat key lives three periods.
    #[arg(long, env = "SHARDLINE_HEARTBEAT_MS", default_value_t = DEFAULT_HEARTBEAT_MS)]
    pub heartbeat_ms: u64,
    /// Finalizer lease in milliseconds: how long assembly may take before another worker may
    /// take it over.
    #[arg(long, env = "SHARDLINE_LEASE_MS", default_value_t = DEFAULT_LEASE_MS)]
    pub lease_ms: u64,
    /// How long shutdown waits for running shards, in milliseconds.
    #[arg(long, env = "SHARDLINE_GRACE_MS", default_value_t = DEFAULT_GRACE_MS)]
    pub grace_ms: u64,
    /// Longest a shard may run, in milliseconds, before it is stopped and counted as a failed
    /// attempt. Keep it below the broker's `consumer_timeout` (30 minutes by default), or the
    /// broker closes the channel and redelivers every shard it held.
    #[arg(long, env = "SHARDLINE_SHARD_TIME_LIMIT_MS", default_value_t = DEFAULT_SHARD_TIME_LIMIT_MS)]
    pub shard_time_limit_ms: u64,
    /// How often a running shard checks that its request still wants it, in milliseconds
    /// (a cancelled or ended request stops its running shards at their next check).
    #[arg(long, env = "SHARDLINE_STOP_CHECK_MS", default_value_t = DEFAULT_STOP_CHECK_MS)]
    pub stop_check_ms: u64,
    /// Shards and merges expected to take less than this many µs (from the kind's learned
    /// time per byte) run on the async runtime's thread instead of a blocking thread, saving
    /// two thread hand-offs each; 0 runs all of them on a blocking thread. See
    /// [`shardline::inline`].
    #[arg(long, env = "SHARDLINE_INLINE_US", default_value_t = DEFAULT_INLINE_US)]
    pub inline_us: u64,
    /// Speed of the `synthetic` kind on this engine (0.25 = four times slower), for load
    /// experiments.
    #[arg(long, env = "SHARDLINE_SYNTHETIC_SPEED", default_value_t = DEFAULT_SYNTHETIC_SPEED)]
    pub synthetic_speed: f64,
    /// A TOML file of command kinds to serve besides the built-in ones (see
    /// `shardline_worker::kinds_file`).
    #[arg(long, env = "SHARDLINE_KINDS_FILE")]
    pub kinds_file: Option<std::path::PathBuf>,
    /// Locality keys this engine holds (data partitions, files, zones), comma-separated: the
    /// manager prefers it for shards that carry one of them. Replaces what the engine held
    /// before; `shardline locality add|remove` changes the set at run time.
    #[arg(long, env = "SHARDLINE_LOCALITY", value_delimiter = ',')]
    pub locality: Vec<LocalityKey>,
    /// Serve Prometheus metrics at `http://<addr>/metrics`: `ip:port`, `0` for any free
    /// loopback port, or `off`. The address is recorded in the worker's registration.
    #[arg(long, env = "SHARDLINE_METRICS_ADDR", default_value_t = DEFAULT_METRICS_ADDR)]
    pub metrics_addr: MetricsAddr,
}

impl Config {
    /// Defaults with the given connection settings (for tests and embedding).
    pub fn new(connect: ConnectArgs) -> Self {
        Config {
            connect,
            id: None,
            concurrency: None,
            heartbeat_ms: DEFAULT_HEARTBEAT_MS,
            lease_ms: DEFAULT_LEASE_MS,
            grace_ms: DEFAULT_GRACE_MS,
            shard_time_limit_ms: DEFAULT_SHARD_TIME_LIMIT_MS,
            stop_check_ms: DEFAULT_STOP_CHECK_MS,
            inline_us: DEFAULT_INLINE_US,
            synthetic_speed: DEFAULT_SYNTHETIC_SPEED,
            kinds_file: None,
            locality: Vec::new(),
            metrics_addr: DEFAULT_METRICS_ADDR,
        }
    }

    /// The engine id, generating the default when unset.
    pub fn engine_id(&self) -> String {
        self.id.clone().unwrap_or_else(default_id)
    }

    /// Shards processed at once.
    pub fn concurrency(&self) -> u16 {
        self.concurrency.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map_or(2, |n| u16::try_from(n.get()).unwrap_or(u16::MAX))
        })
    }

    /// Validate ranges that clap cannot express.
    ///
    /// # Errors
    /// A message naming the bad setting.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(id) = &self.id {
            let ok = !id.is_empty()
                && id.len() <= 128
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
            if !ok {
                return Err(format!(
                    "worker id {id:?} must be 1-128 characters of [A-Za-z0-9._-]"
                ));
            }
        }
        if self.concurrency == Some(0) {
            return Err("concurrency must be at least 1".into());
        }
        if !(self.synthetic_speed.is_finite() && self.synthetic_speed > 0.0) {
            return Err("synthetic speed must be a positive number".into());
        }
        if self.heartbeat_ms == 0
            || self.lease_ms == 0
            || self.shard_time_limit_ms == 0
            || self.stop_check_ms == 0
        {
            return Err(
                "heartbeat, lease, shard time limit and stop check must be at least 1 ms".into(),
            );
        }
        self.connect.names().map_err(|e| e.to_string())?;
        Ok(())
    }

    pub(crate) fn heartbeat(&self) -> Duration {
        Duration::from_millis(self.heartbeat_ms)
    }

    pub(crate) fn lease(&self) -> Duration {
        Duration::from_millis(self.lease_ms)
    }

    pub(crate) fn shard_time_limit(&self) -> Duration {
        Duration::from_millis(self.shard_time_limit_ms)
    }

    pub(crate) fn stop_check(&self) -> Duration {
        Duration::from_millis(self.stop_check_ms)
    }

    pub(crate) fn inline_limit(&self) -> Duration {
        Duration::from_micros(self.inline_us)
    }
}

fn default_id() -> String {
    use rand::Rng;
    let host: String = gethostname::gethostname()
        .to_string_lossy()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .take(48)
        .collect();
    let suffix: String = rand::rng()
        .sample_iter(rand::distr::Alphanumeric)
        .take(6)
        .map(|b| char::from(b).to_ascii_lowercase())
        .collect();
    format!("{host}-{suffix}")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Default ids are unique per process start and valid queue-name material.
    #[test]
    fn default_ids_are_unique_and_valid() {
        let c = Config::new(ConnectArgs::local());
        let (a, b) = (c.engine_id(), c.engine_id());
        assert_ne!(a, b);
        let c = Config { id: Some(a), ..c };
        assert!(c.validate().is_ok());
    }

    /// `--locality` takes comma-separated keys; a key with a space or an empty one stops
    /// the worker at start with clap's message.
    #[test]
    fn locality_keys_parse_strictly() {
        use clap::Parser;
        let c = Config::try_parse_from(["w", "--locality", "p1,p2"]).expect("parses");
        let keys: Vec<&str> = c.locality.iter().map(LocalityKey::as_str).collect();
        assert_eq!(keys, ["p1", "p2"]);
        assert!(
            Config::try_parse_from(["w"])
                .expect("parses")
                .locality
                .is_empty()
        );
        for bad in ["p 1", "p1,,p2", ""] {
            let e = Config::try_parse_from(["w", "--locality", bad]).expect_err(bad);
            assert!(e.to_string().contains("locality"), "{e}");
        }
    }

    /// Ids that would break queue names are refused.
    #[test]
    fn rejects_bad_ids() {
        let c = Config {
            id: Some("a b".into()),
            ..Config::new(ConnectArgs::local())
        };
        assert!(c.validate().is_err());
    }
}
