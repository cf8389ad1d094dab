//! Manager settings, from flags or the environment.

use std::collections::HashMap;
use std::time::Duration;

use shardline::config::{ConnectArgs, DEFAULT_LEASE_MS};
use shardline::exporter::MetricsAddr;

use crate::plan::ShardCount;
use crate::route::{self, Router};

/// Which routing policy places shards on engines (see [`crate::route`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RouterKind {
    /// Engines in turn.
    RoundRobin,
    /// Engines in proportion to static weights (`--weights`).
    WeightedRoundRobin,
    /// A uniformly random engine.
    Random,
    /// Join the shortest queue by sampled broker depth.
    JsqDepth,
    /// Sampled broker depth plus the shards sent since the sample.
    JsqDepthLedger,
    /// Power of two choices on the ledger's in-flight count.
    P2c,
    /// Least expected delay: ledger × learned speed × per-kind cost.
    LeastExpectedDelay,
    /// Least expected delay plus the depth forecast and an in-flight cap.
    Predictive,
    /// The predictive policy without the forecast: the default, because the forecast did not
    /// measure better (see `docs/routing.md`).
    PredictiveNoForecast,
    /// The predictive policy with its overflow in the shared queue, not held in the manager
    /// (the ablation of the hold).
    PredictiveShared,
    /// Every shard to the shared queue: late binding.
    Pull,
}

impl RouterKind {
    /// Every policy, in the order reports list them.
    pub const ALL: [RouterKind; 11] = [
        RouterKind::RoundRobin,
        RouterKind::WeightedRoundRobin,
        RouterKind::Random,
        RouterKind::JsqDepth,
        RouterKind::JsqDepthLedger,
        RouterKind::P2c,
        RouterKind::LeastExpectedDelay,
        RouterKind::Predictive,
        RouterKind::PredictiveNoForecast,
        RouterKind::PredictiveShared,
        RouterKind::Pull,
    ];

    /// A fresh router of this kind; the predictive policies hold their overflow in the
    /// manager when `hold` is set (see [`crate::hold`]), binding late on alike engines with
    /// `late_binding`.
    pub fn build(
        self,
        weights: &HashMap<String, f64>,
        cap: f64,
        hold: bool,
        late_binding: bool,
    ) -> Box<dyn Router> {
        match self {
            RouterKind::RoundRobin => Box::new(route::RoundRobin::default()),
            RouterKind::WeightedRoundRobin => {
                Box::new(route::WeightedRoundRobin::new(weights.clone()))
            }
            RouterKind::Random => Box::new(route::Random::default()),
            RouterKind::JsqDepth => Box::new(route::JoinShortestDepth::new(false)),
            RouterKind::JsqDepthLedger => Box::new(route::JoinShortestDepth::new(true)),
            RouterKind::P2c => Box::new(route::PowerOfTwo::default()),
            RouterKind::LeastExpectedDelay => Box::new(route::LeastExpectedDelay::plain()),
            RouterKind::Predictive => Box::new(
                route::LeastExpectedDelay::predictive(cap, true).holding(hold, late_binding),
            ),
            RouterKind::PredictiveNoForecast => Box::new(
                route::LeastExpectedDelay::predictive(cap, false).holding(hold, late_binding),
            ),
            RouterKind::PredictiveShared => {
                Box::new(route::LeastExpectedDelay::predictive(cap, true))
            }
            RouterKind::Pull => Box::new(route::Pull),
        }
    }

    /// Whether the policy reads the depth forecasts: the manager fits them only then.
    pub fn uses_forecast(self) -> bool {
        matches!(self, RouterKind::Predictive | RouterKind::PredictiveShared)
    }

    /// The flag value (`round-robin`, `predictive`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            RouterKind::RoundRobin => "round-robin",
            RouterKind::WeightedRoundRobin => "weighted-round-robin",
            RouterKind::Random => "random",
            RouterKind::JsqDepth => "jsq-depth",
            RouterKind::JsqDepthLedger => "jsq-depth-ledger",
            RouterKind::P2c => "p2c",
            RouterKind::LeastExpectedDelay => "least-expected-delay",
            RouterKind::Predictive => "predictive",
            RouterKind::PredictiveNoForecast => "predictive-no-forecast",
            RouterKind::PredictiveShared => "predictive-shared",
            RouterKind::Pull => "pull",
        }
    }
}

/// Parse `id=weight,id=weight`.
///
/// # Errors
/// A message naming the bad entry.
pub fn parse_weights(s: &str) -> Result<HashMap<String, f64>, String> {
    s.split(',')
        .filter(|p| !p.trim().is_empty())
        .map(|p| {
            let (id, w) = p
                .split_once('=')
                .ok_or_else(|| format!("weight {p:?} is not id=weight"))?;
            let w: f64 = w
                .trim()
                .parse()
                .map_err(|_| format!("weight {p:?} is not a number"))?;
            if !(w.is_finite() && w > 0.0) {
                return Err(format!("weight {p:?} must be positive"));
            }
            Ok((id.trim().to_owned(), w))
        })
        .collect()
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
    #[arg(long, env = "SHARDLINE_MANAGER_PREFETCH", default_value_t = Config::DEFAULT_PREFETCH)]
    pub prefetch: u16,
    /// Upper bound on shards per request, whatever the request asks.
    #[arg(long, env = "SHARDLINE_MAX_SHARDS", default_value_t = Config::DEFAULT_MAX_SHARDS)]
    pub max_shards: u32,
    /// Multiplies each kind's preferred shard size: below 1 cuts more, smaller shards.
    #[arg(long, env = "SHARDLINE_SHARD_SIZE_SCALE", default_value_t = Config::DEFAULT_SHARD_SIZE_SCALE)]
    pub shard_size_scale: f64,
    /// Largest request body accepted, in bytes.
    #[arg(long, env = "SHARDLINE_MAX_PAYLOAD_BYTES", default_value_t = Config::DEFAULT_MAX_PAYLOAD_BYTES)]
    pub max_payload_bytes: usize,
    /// Deadline of requests that do not set one, in milliseconds.
    #[arg(
        long,
        env = "SHARDLINE_DEFAULT_DEADLINE_MS",
        default_value_t = Config::DEFAULT_DEADLINE_MS
    )]
    pub default_deadline_ms: u64,
    /// An engine whose last heartbeat is older than this is not routed to, in milliseconds.
    #[arg(long, env = "SHARDLINE_ENGINE_TTL_MS", default_value_t = Config::DEFAULT_ENGINE_TTL_MS)]
    pub engine_ttl_ms: u64,
    /// Routing policy.
    #[arg(long, env = "SHARDLINE_ROUTER", value_enum, default_value_t = Config::DEFAULT_ROUTER)]
    pub router: RouterKind,
    /// Static weights for weighted round robin: `id=weight,id=weight` (others weigh 1).
    #[arg(
        long,
        env = "SHARDLINE_ROUTER_WEIGHTS",
        value_parser = parse_weights,
        default_value = Config::DEFAULT_WEIGHTS
    )]
    pub weights: HashMap<String, f64>,
    /// Predictive policy: unfinished shards allowed per engine slot, and backlog per slot in
    /// shard times of the fastest engine, before the engine is skipped (every engine full:
    /// the shared queue).
    #[arg(long, env = "SHARDLINE_IN_FLIGHT_CAP", default_value_t = Config::DEFAULT_IN_FLIGHT_CAP)]
    pub in_flight_cap: f64,
    /// Predictive policy: how long a shard that finds every engine at its cap may wait in the
    /// manager for one (late binding that knows engine speeds), in milliseconds; after that it
    /// goes to the shared queue. 0 sends the overflow to the shared queue at once.
    #[arg(long, env = "SHARDLINE_HOLD_MS", default_value_t = Config::DEFAULT_HOLD_MS)]
    pub hold_ms: u64,
    /// Predictive policies: the shards of a request that would take about as long on every
    /// engine serving it (within 2×) go to the shared queue, where the first slot to free
    /// takes each (`false`: to the engines up to the in-flight cap, the benchmark's ablation).
    /// Off while `--hedge` is on: a hedge copy needs to know where its shard runs. See
    /// `docs/routing.md`, "Late binding".
    #[arg(
        long,
        env = "SHARDLINE_LATE_BINDING",
        default_value_t = Config::DEFAULT_LATE_BINDING,
        action = clap::ArgAction::Set
    )]
    pub late_binding: bool,
    /// Shard count: `adaptive`, `target` (shards of a few per-shard overheads of work), `size`
    /// (the kind's preferred size) or a fixed number.
    #[arg(long, env = "SHARDLINE_SHARD_COUNT", default_value_t = Config::DEFAULT_SHARD_COUNT)]
    pub shard_count: ShardCount,
    /// Expected shard time before anything is learned, in microseconds.
    #[arg(long, env = "SHARDLINE_DEFAULT_SHARD_US", default_value_t = Config::DEFAULT_SHARD_US)]
    pub default_shard_us: f64,
    /// Broker depth sampling period, in milliseconds.
    #[arg(long, env = "SHARDLINE_DEPTH_SAMPLE_MS", default_value_t = Config::DEFAULT_DEPTH_SAMPLE_MS)]
    pub depth_sample_ms: u64,
    /// Depth samples kept per engine (the forecast's window).
    #[arg(long, env = "SHARDLINE_DEPTH_WINDOW", default_value_t = Config::DEFAULT_DEPTH_WINDOW)]
    pub depth_window: usize,
    /// Time between forecast fits, in milliseconds.
    #[arg(long, env = "SHARDLINE_FORECAST_MS", default_value_t = Config::DEFAULT_FORECAST_MS)]
    pub forecast_ms: u64,
    /// Seasonal period of the depth series, in samples; 0 detects it with a periodogram.
    #[arg(long, env = "SHARDLINE_FORECAST_PERIOD", default_value_t = Config::DEFAULT_FORECAST_PERIOD)]
    pub forecast_period: usize,
    /// Finalizer lease the sweeper takes when it re-drives a request, in milliseconds.
    #[arg(long, env = "SHARDLINE_LEASE_MS", default_value_t = DEFAULT_LEASE_MS)]
    pub lease_ms: u64,
    /// How long shutdown waits for requests being dispatched, in milliseconds.
    #[arg(long, env = "SHARDLINE_GRACE_MS", default_value_t = Config::DEFAULT_GRACE_MS)]
    pub grace_ms: u64,
    /// Serve Prometheus metrics at `http://<addr>/metrics`: `ip:port`, `0` for any free
    /// loopback port, or `off`.
    #[arg(long, env = "SHARDLINE_METRICS_ADDR", default_value_t = Config::DEFAULT_METRICS_ADDR)]
    pub metrics_addr: MetricsAddr,
    /// Scaling signal: how far ahead arriving work is forecast, in seconds (a worker
    /// replica's start-up time).
    #[arg(long, env = "SHARDLINE_SCALE_HORIZON_S", default_value_t = Config::DEFAULT_SCALE_HORIZON_S)]
    pub scale_horizon_s: u64,
    /// Scaling signal: multiplier on the work, for spare capacity (at least 1).
    #[arg(long, env = "SHARDLINE_SCALE_HEADROOM", default_value_t = Config::DEFAULT_SCALE_HEADROOM)]
    pub scale_headroom: f64,
    /// Scaling signal: forecast arriving work (`false`: the recent rate alone).
    #[arg(
        long,
        env = "SHARDLINE_SCALE_FORECAST",
        default_value_t = Config::DEFAULT_SCALE_FORECAST,
        action = clap::ArgAction::Set
    )]
    pub scale_forecast: bool,
    /// Prefer engines that hold a shard's locality key, bounded by load (`false`: ignore the
    /// keys, the benchmark's ablation). Applies to the expected-delay policies.
    #[arg(
        long,
        env = "SHARDLINE_LOCALITY_ROUTING",
        default_value_t = Config::DEFAULT_LOCALITY_ROUTING,
        action = clap::ArgAction::Set
    )]
    pub locality_routing: bool,
    /// Send a second copy of a late shard to another engine; the first result wins (see
    /// [`crate::hedge`]). Only kinds that say their shards may run twice are hedged, and only
    /// shards routed to an engine.
    #[arg(
        long,
        env = "SHARDLINE_HEDGE",
        default_value_t = Config::DEFAULT_HEDGE,
        action = clap::ArgAction::Set
    )]
    pub hedge: bool,
    /// With `--hedge`: copies allowed per shard sent (0.05: one copy per 20 shards), over time.
    #[arg(long, env = "SHARDLINE_HEDGE_SHARE", default_value_t = crate::hedge::DEFAULT_SHARE)]
    pub hedge_share: f64,
    /// With `--hedge`: a shard is late once it has been out for this quantile of its kind's
    /// recent results' lateness (time taken over time expected) times its own expected time.
    #[arg(long, env = "SHARDLINE_HEDGE_QUANTILE", default_value_t = crate::hedge::DEFAULT_QUANTILE)]
    pub hedge_quantile: f64,
}

impl Config {
    /// Default of `--prefetch`.
    pub const DEFAULT_PREFETCH: u16 = 16;
    /// Default of `--max-shards`.
    pub const DEFAULT_MAX_SHARDS: u32 = 10_000;
    /// Default of `--shard-size-scale`.
    pub const DEFAULT_SHARD_SIZE_SCALE: f64 = 1.0;
    /// Default of `--max-payload-bytes` (16 MiB).
    pub const DEFAULT_MAX_PAYLOAD_BYTES: usize = 16 * 1024 * 1024;
    /// Default of `--default-deadline-ms` (one hour).
    pub const DEFAULT_DEADLINE_MS: u64 = 3_600_000;
    /// Default of `--engine-ttl-ms`.
    pub const DEFAULT_ENGINE_TTL_MS: u64 = 6_000;
    /// Default of `--router`.
    pub const DEFAULT_ROUTER: RouterKind = RouterKind::PredictiveNoForecast;
    /// Default of `--weights`: none, every engine weighs 1.
    pub const DEFAULT_WEIGHTS: &str = "";
    /// Default of `--in-flight-cap`.
    pub const DEFAULT_IN_FLIGHT_CAP: f64 = 8.0;
    /// Default of `--hold-ms`.
    pub const DEFAULT_HOLD_MS: u64 = 5_000;
    /// Default of `--late-binding`.
    pub const DEFAULT_LATE_BINDING: bool = true;
    /// Default of `--shard-count`.
    pub const DEFAULT_SHARD_COUNT: ShardCount = ShardCount::Adaptive;
    /// Default of `--default-shard-us`.
    pub const DEFAULT_SHARD_US: f64 = 10_000.0;
    /// Default of `--depth-sample-ms`.
    pub const DEFAULT_DEPTH_SAMPLE_MS: u64 = 250;
    /// Default of `--depth-window`.
    pub const DEFAULT_DEPTH_WINDOW: usize = 600;
    /// Default of `--forecast-ms`.
    pub const DEFAULT_FORECAST_MS: u64 = 300;
    /// Default of `--forecast-period` (0: detected).
    pub const DEFAULT_FORECAST_PERIOD: usize = 0;
    /// Default of `--grace-ms`.
    pub const DEFAULT_GRACE_MS: u64 = 10_000;
    /// Default of `--scale-horizon-s`.
    pub const DEFAULT_SCALE_HORIZON_S: u64 = 60;
    /// Default of `--scale-headroom`.
    pub const DEFAULT_SCALE_HEADROOM: f64 = 1.25;
    /// Default of `--scale-forecast`.
    pub const DEFAULT_SCALE_FORECAST: bool = true;
    /// Default of `--locality-routing`.
    pub const DEFAULT_LOCALITY_ROUTING: bool = true;
    /// Default of `--hedge`: off, because copies of moderately late shards raise the median
    /// 10–20% on the plain workloads (see `docs/routing.md`, "Hedged shards").
    pub const DEFAULT_HEDGE: bool = false;
    /// Default of `--metrics-addr`: the loopback interface, port 9464 (the port the
    /// OpenTelemetry Prometheus exporter uses by convention).
    pub const DEFAULT_METRICS_ADDR: MetricsAddr = MetricsAddr::On(std::net::SocketAddr::new(
        std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
        9464,
    ));

    /// Defaults with the given connection settings (for tests and embedding).
    pub fn new(connect: ConnectArgs) -> Self {
        Config {
            connect,
            prefetch: Config::DEFAULT_PREFETCH,
            max_shards: Config::DEFAULT_MAX_SHARDS,
            shard_size_scale: Config::DEFAULT_SHARD_SIZE_SCALE,
            max_payload_bytes: Config::DEFAULT_MAX_PAYLOAD_BYTES,
            default_deadline_ms: Config::DEFAULT_DEADLINE_MS,
            engine_ttl_ms: Config::DEFAULT_ENGINE_TTL_MS,
            router: Config::DEFAULT_ROUTER,
            weights: parse_weights(Config::DEFAULT_WEIGHTS)
                .expect("the default of --weights parses"),
            in_flight_cap: Config::DEFAULT_IN_FLIGHT_CAP,
            hold_ms: Config::DEFAULT_HOLD_MS,
            late_binding: Config::DEFAULT_LATE_BINDING,
            shard_count: Config::DEFAULT_SHARD_COUNT,
            default_shard_us: Config::DEFAULT_SHARD_US,
            depth_sample_ms: Config::DEFAULT_DEPTH_SAMPLE_MS,
            depth_window: Config::DEFAULT_DEPTH_WINDOW,
            forecast_ms: Config::DEFAULT_FORECAST_MS,
            forecast_period: Config::DEFAULT_FORECAST_PERIOD,
            lease_ms: DEFAULT_LEASE_MS,
            grace_ms: Config::DEFAULT_GRACE_MS,
            metrics_addr: Config::DEFAULT_METRICS_ADDR,
            scale_horizon_s: Config::DEFAULT_SCALE_HORIZON_S,
            scale_headroom: Config::DEFAULT_SCALE_HEADROOM,
            scale_forecast: Config::DEFAULT_SCALE_FORECAST,
            locality_routing: Config::DEFAULT_LOCALITY_ROUTING,
            hedge: Config::DEFAULT_HEDGE,
            hedge_share: crate::hedge::DEFAULT_SHARE,
            hedge_quantile: crate::hedge::DEFAULT_QUANTILE,
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
        if !(self.in_flight_cap.is_finite() && self.in_flight_cap > 0.0) {
            return Err("in-flight cap must be a positive number".into());
        }
        if !(self.default_shard_us.is_finite() && self.default_shard_us > 0.0) {
            return Err("default shard time must be a positive number".into());
        }
        if self.depth_sample_ms == 0 || self.forecast_ms == 0 || self.depth_window < 2 {
            return Err("depth sampling and forecast periods must be positive".into());
        }
        if self.scale_horizon_s == 0 {
            return Err("scale horizon must be at least 1 second".into());
        }
        if !(self.scale_headroom.is_finite() && self.scale_headroom >= 1.0) {
            return Err("scale headroom must be a number of at least 1".into());
        }
        if !(self.hedge_share.is_finite() && (0.0..=1.0).contains(&self.hedge_share)) {
            return Err("hedge share must be a number from 0 to 1".into());
        }
        if !(self.hedge_quantile.is_finite()
            && self.hedge_quantile > 0.0
            && self.hedge_quantile < 1.0)
        {
            return Err("hedge quantile must be a number between 0 and 1".into());
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

    /// The hold limit; see `--hold-ms`.
    pub fn hold(&self) -> Duration {
        Duration::from_millis(self.hold_ms)
    }

    pub(crate) fn engine_ttl(&self) -> Duration {
        Duration::from_millis(self.engine_ttl_ms)
    }

    /// The scaling signal's settings.
    pub fn scale(&self) -> crate::scale::Settings {
        crate::scale::Settings {
            horizon: Duration::from_secs(self.scale_horizon_s),
            headroom: self.scale_headroom,
            forecast: self.scale_forecast,
        }
    }

    /// Whether the predictive policies bind late on alike engines (`--late-binding`): not
    /// while hedging, which copies only shards routed to an engine.
    pub fn binds_late(&self) -> bool {
        self.late_binding && !self.hedge
    }

    /// Hedging's settings.
    pub fn hedging(&self) -> crate::hedge::Settings {
        crate::hedge::Settings {
            share: self.hedge_share,
            quantile: self.hedge_quantile,
        }
    }

    pub(crate) fn depth_sample(&self) -> Duration {
        Duration::from_millis(self.depth_sample_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::ValueEnum;

    /// Every policy's name is its flag value and builds a router of that name.
    #[test]
    fn policy_names_match_flags_and_routers() {
        for k in RouterKind::ALL {
            let flag = k.to_possible_value().map(|v| v.get_name().to_owned());
            assert_eq!(flag.as_deref(), Some(k.as_str()));
            let name = k.build(&HashMap::new(), 4.0, true, true).name();
            assert_eq!(name, k.as_str());
        }
    }

    /// Hedging turns late binding off: its copies need shards routed to an engine.
    #[test]
    fn hedging_turns_late_binding_off() {
        let mut c = Config::new(ConnectArgs::local());
        assert!(c.binds_late());
        c.hedge = true;
        assert!(!c.binds_late());
    }

    /// Hedging's share and quantile must be in range.
    #[test]
    fn hedge_settings_are_checked() {
        let base = Config::new(ConnectArgs::local());
        assert_eq!(base.validate(), Ok(()));
        for (share, quantile) in [
            (-0.1, 0.95),
            (1.5, 0.95),
            (0.05, 1.0),
            (0.05, 0.0),
            (f64::NAN, 0.9),
        ] {
            let c = Config {
                hedge_share: share,
                hedge_quantile: quantile,
                ..base.clone()
            };
            assert!(c.validate().is_err(), "{share} {quantile}");
        }
    }

    /// Weights parse from `id=w` lists and refuse nonsense.
    #[test]
    fn parses_weights() {
        let w = parse_weights("a=1, b=0.25").expect("parses");
        assert_eq!(w.get("b"), Some(&0.25));
        assert!(parse_weights("").expect("empty is fine").is_empty());
        assert!(parse_weights("a").is_err());
        assert!(parse_weights("a=0").is_err());
        assert!(parse_weights("a=x").is_err());
    }
}
