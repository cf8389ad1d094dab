//! The metrics Shardline processes record: every name, help text, unit and label set in one
//! place, behind typed helpers, so that each call site labels a metric the same way.
//!
//! Recording goes through the `metrics` facade: in a process without an installed recorder
//! (no `--metrics-addr`) every helper is a cheap no-op. [`crate::exporter`] installs the
//! Prometheus recorder and serves `/metrics`.
//!
//! Labels are bounded: kinds are registered names, engines are live engine ids, reasons and
//! outcomes are fixed codes. A request id is never a label.

use ::metrics::{Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge};

use crate::RejectReason;
use crate::message::Status;

/// Requests a manager accepted, by `kind`.
pub const REQUESTS_ACCEPTED: &str = "shardline_requests_accepted_total";
/// Requests a manager refused before cutting a shard, by `reason`.
pub const REQUESTS_REJECTED: &str = "shardline_requests_rejected_total";
/// Final results published, by `kind` and `status` (counted by the process that published).
pub const REQUESTS_ENDED: &str = "shardline_requests_total";
/// From acceptance to the published result, by `kind`.
pub const REQUEST_SECONDS: &str = "shardline_request_duration_seconds";
/// Shards a manager cut per request, by `kind`.
pub const REQUEST_SHARDS: &str = "shardline_request_shards";
/// Final results published again by a process that took over a crashed finalizer, by `kind`.
pub const REDRIVEN_PUBLICATIONS: &str = "shardline_redriven_publications_total";
/// Shard deliveries a worker settled, by `kind`, `engine` and `outcome`.
pub const SHARDS: &str = "shardline_shards_total";
/// Processing time of a shard that produced a result, by `kind`.
pub const SHARD_SECONDS: &str = "shardline_shard_duration_seconds";
/// Shard deliveries marked redelivered by the broker, by `kind`.
pub const SHARD_REDELIVERIES: &str = "shardline_shard_redeliveries_total";
/// Hedge copies of late shards a manager sent to a second engine, by `kind`.
pub const SHARD_HEDGES: &str = "shardline_shard_hedges_total";
/// Redis writes whose `WAIT` came back with fewer replicas than `--redis-wait-replicas`.
pub const REDIS_UNREPLICATED: &str = "shardline_redis_unreplicated_writes_total";
/// Messages sent to the dead-letter queue, by `reason`.
pub const DEAD_LETTERS: &str = "shardline_dead_letters_total";
/// Recovery work a manager's sweeper did, by `action`.
pub const SWEEPER_ACTIONS: &str = "shardline_sweeper_actions_total";
/// Shards held in a manager, waiting for an engine under its cap.
pub const HELD_SHARDS: &str = "shardline_held_shards";
/// Shards a manager sent to the shared queues that have not finished.
pub const SHARED_UNFINISHED: &str = "shardline_shared_unfinished_shards";
/// Engines a manager routes to.
pub const ENGINES_LIVE: &str = "shardline_engines_live";
/// Slots (shards run at once) of each live engine, by `engine`.
pub const ENGINE_SLOTS: &str = "shardline_engine_slots";
/// Shards a manager sent to an engine that have not finished, by `engine`.
pub const ENGINE_UNFINISHED: &str = "shardline_engine_unfinished_shards";
/// Latest sampled ready messages in an engine's queue, by `engine`.
pub const ENGINE_QUEUE_DEPTH: &str = "shardline_engine_queue_depth";
/// Forecast ready messages in an engine's queue that the manager did not send, one sample
/// period ahead, by `engine` (only under the forecasting routers).
pub const ENGINE_FORECAST_HIDDEN: &str = "shardline_engine_forecast_hidden_messages";
/// Lower bound of that forecast's 80% prediction interval, by `engine`.
pub const ENGINE_FORECAST_HIDDEN_LOWER: &str = "shardline_engine_forecast_hidden_lower_messages";
/// Upper bound of that forecast's 80% prediction interval, by `engine`.
pub const ENGINE_FORECAST_HIDDEN_UPPER: &str = "shardline_engine_forecast_hidden_upper_messages";
/// Learned speed of an engine (1 = the fleet's usual), by `engine`.
pub const ENGINE_SPEED: &str = "shardline_engine_speed_ratio";
/// Locality keys an engine holds, as the manager sees them, by `engine`.
pub const ENGINE_LOCALITY_KEYS: &str = "shardline_engine_locality_keys";
/// Time since an engine's last heartbeat, by `engine`.
pub const ENGINE_HEARTBEAT_AGE: &str = "shardline_engine_heartbeat_age_seconds";

/// Worker replicas the manager's scaling signal asks for.
pub const DESIRED_REPLICAS: &str = "shardline_desired_replicas";
/// Work arriving now, shard-seconds per second (mean of the last seconds).
pub const WORK_ARRIVING: &str = "shardline_work_arriving_ratio";
/// Forecast work arriving at the scaling horizon, shard-seconds per second.
pub const WORK_FORECAST: &str = "shardline_work_forecast_ratio";
/// Shard-seconds per second one replica does (mean over live engines).
pub const REPLICA_CAPACITY: &str = "shardline_replica_capacity_ratio";

/// Histogram buckets of the `_seconds` metrics: 1 ms to 10 minutes.
pub const SECONDS_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    120.0, 300.0, 600.0,
];
/// Histogram buckets of [`REQUEST_SHARDS`].
pub const SHARD_COUNT_BUCKETS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 4096.0, 10000.0,
];

/// What became of one delivery of a shard on a worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShardOutcome {
    /// Its result was stored (the first for its index).
    Stored,
    /// A result for its index was already stored; this one was dropped.
    Duplicate,
    /// It failed for good (its failure is recorded and it is dead-lettered).
    Failed,
    /// It failed and goes back to the queue for another try.
    Retried,
    /// It was not run or its result was not needed: the request had ended or was gone.
    Skipped,
}

impl ShardOutcome {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            ShardOutcome::Stored => "stored",
            ShardOutcome::Duplicate => "duplicate",
            ShardOutcome::Failed => "failed",
            ShardOutcome::Retried => "retried",
            ShardOutcome::Skipped => "skipped",
        }
    }
}

/// Recovery work of a manager's sweeper.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SweepAction {
    /// A dead engine's queue was handed to the shared queue.
    ReapedEngine,
    /// A request without a live finalizer was finalized by the sweeper.
    RedrivenFinalizer,
    /// A request passed its deadline and was ended `timed_out`.
    TimedOut,
}

impl SweepAction {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            SweepAction::ReapedEngine => "reaped_engine",
            SweepAction::RedrivenFinalizer => "redriven_finalizer",
            SweepAction::TimedOut => "timed_out",
        }
    }
}

/// Register every metric's help text and unit with the installed recorder.
pub fn describe() {
    let counters = [
        (REQUESTS_ACCEPTED, "Requests a manager accepted, by kind."),
        (
            REQUESTS_REJECTED,
            "Requests a manager refused before cutting a shard, by reason.",
        ),
        (
            REQUESTS_ENDED,
            "Final results published by this process, by kind and status.",
        ),
        (
            REDRIVEN_PUBLICATIONS,
            "Final results published again after a finalizer crashed, by kind.",
        ),
        (
            SHARDS,
            "Shard deliveries settled by a worker, by kind, engine and outcome.",
        ),
        (
            SHARD_REDELIVERIES,
            "Shard deliveries the broker marked redelivered, by kind.",
        ),
        (
            SHARD_HEDGES,
            "Hedge copies of late shards sent to a second engine, by kind.",
        ),
        (
            REDIS_UNREPLICATED,
            "Redis writes that reached fewer replicas than --redis-wait-replicas asks.",
        ),
        (DEAD_LETTERS, "Messages dead-lettered, by reason."),
        (
            SWEEPER_ACTIONS,
            "Recovery work done by a manager's sweeper, by action.",
        ),
    ];
    for (name, help) in counters {
        describe_counter!(name, Unit::Count, help);
    }
    describe_histogram!(
        REQUEST_SECONDS,
        Unit::Seconds,
        "Time from acceptance to the published result, by kind."
    );
    describe_histogram!(
        SHARD_SECONDS,
        Unit::Seconds,
        "Processing time of shards that produced a result, by kind."
    );
    describe_histogram!(
        REQUEST_SHARDS,
        Unit::Count,
        "Shards cut per accepted request, by kind."
    );
    let gauges = [
        (HELD_SHARDS, "Shards held in the manager for an engine."),
        (
            SHARED_UNFINISHED,
            "Shards the manager sent to the shared queues that have not finished.",
        ),
        (ENGINES_LIVE, "Live engines the manager routes to."),
        (ENGINE_SLOTS, "Shards an engine runs at once."),
        (
            ENGINE_UNFINISHED,
            "Shards this manager sent to an engine that have not finished.",
        ),
        (
            ENGINE_QUEUE_DEPTH,
            "Latest sampled ready messages in an engine's queue.",
        ),
        (
            ENGINE_FORECAST_HIDDEN,
            "Forecast ready messages in an engine's queue not sent by this manager.",
        ),
        (
            ENGINE_FORECAST_HIDDEN_LOWER,
            "Lower bound of the 80% prediction interval of that forecast.",
        ),
        (
            ENGINE_FORECAST_HIDDEN_UPPER,
            "Upper bound of the 80% prediction interval of that forecast.",
        ),
        (
            ENGINE_SPEED,
            "Learned speed of an engine; 1 is the fleet's usual.",
        ),
        (
            ENGINE_LOCALITY_KEYS,
            "Locality keys an engine holds, as the manager sees them.",
        ),
        (
            ENGINE_HEARTBEAT_AGE,
            "Seconds since an engine's last heartbeat.",
        ),
        (
            DESIRED_REPLICAS,
            "Worker replicas the scaling signal asks for (sum over managers).",
        ),
        (
            WORK_ARRIVING,
            "Work arriving now, in shard-seconds per second.",
        ),
        (
            WORK_FORECAST,
            "Forecast work arriving at the scaling horizon, in shard-seconds per second.",
        ),
        (
            REPLICA_CAPACITY,
            "Shard-seconds per second one replica does.",
        ),
    ];
    for (name, help) in gauges {
        describe_gauge!(name, help);
    }
}

/// A manager accepted a request of `kind`.
pub fn request_accepted(kind: &str, shards: usize) {
    counter!(REQUESTS_ACCEPTED, "kind" => kind.to_owned()).increment(1);
    ::metrics::histogram!(REQUEST_SHARDS, "kind" => kind.to_owned()).record(shards as f64);
}

/// A manager refused a request.
pub fn request_rejected(reason: RejectReason) {
    counter!(REQUESTS_REJECTED, "reason" => reason.code()).increment(1);
}

/// A final result was published, `created_ms` being when its request was accepted and
/// `attempt` the publication's attempt (above 1 when a finalizer's work was re-driven).
pub fn request_ended(kind: &str, status: Status, created_ms: u64, attempt: u64) {
    counter!(REQUESTS_ENDED, "kind" => kind.to_owned(), "status" => status.as_str()).increment(1);
    let seconds = crate::now_ms().saturating_sub(created_ms) as f64 / 1_000.0;
    ::metrics::histogram!(REQUEST_SECONDS, "kind" => kind.to_owned()).record(seconds);
    if attempt > 1 {
        counter!(REDRIVEN_PUBLICATIONS, "kind" => kind.to_owned()).increment(1);
    }
}

/// A worker settled a delivery of a shard of `kind`.
pub fn shard_settled(kind: &str, engine: &str, outcome: ShardOutcome) {
    counter!(
        SHARDS,
        "kind" => kind.to_owned(),
        "engine" => engine.to_owned(),
        "outcome" => outcome.as_str()
    )
    .increment(1);
}

/// A shard of `kind` produced a result after `seconds` of processing.
pub fn shard_processed(kind: &str, seconds: f64) {
    ::metrics::histogram!(SHARD_SECONDS, "kind" => kind.to_owned()).record(seconds);
}

/// The broker delivered a shard of `kind` again.
pub fn shard_redelivered(kind: &str) {
    counter!(SHARD_REDELIVERIES, "kind" => kind.to_owned()).increment(1);
}

/// A manager sent a hedge copy of a late shard of `kind`.
pub fn shard_hedged(kind: &str) {
    counter!(SHARD_HEDGES, "kind" => kind.to_owned()).increment(1);
}

/// A Redis write reached fewer replicas than asked.
pub fn redis_unreplicated() {
    counter!(REDIS_UNREPLICATED).increment(1);
}

/// A message went to the dead-letter queue; `reason` is one of the fixed codes.
pub fn dead_lettered(reason: &str) {
    counter!(DEAD_LETTERS, "reason" => reason.to_owned()).increment(1);
}

/// The sweeper did `action`.
pub fn swept(action: SweepAction) {
    counter!(SWEEPER_ACTIONS, "action" => action.as_str()).increment(1);
}

/// Shards held in the manager now.
pub fn held_shards(n: usize) {
    gauge!(HELD_SHARDS).set(n as f64);
}

/// Shards this manager sent to the shared queues that have not finished, now.
pub fn shared_unfinished(n: usize) {
    gauge!(SHARED_UNFINISHED).set(n as f64);
}

/// The scaling signal's gauges.
pub fn scaling(desired: u32, arriving: f64, forecast: Option<f64>, capacity: f64) {
    gauge!(DESIRED_REPLICAS).set(f64::from(desired));
    gauge!(WORK_ARRIVING).set(arriving);
    if let Some(f) = forecast {
        gauge!(WORK_FORECAST).set(f);
    }
    gauge!(REPLICA_CAPACITY).set(capacity);
}

/// What a manager knows of one live engine, for its gauges (and, as JSON, for the dashboard).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct EngineReading<'a> {
    /// Engine id.
    pub id: &'a str,
    /// Shards it runs at once.
    pub slots: u32,
    /// Unfinished shards this manager sent it.
    pub unfinished: usize,
    /// Latest sampled ready depth of its queue.
    pub depth: Option<u32>,
    /// Forecast hidden ready messages, one sample period ahead.
    pub forecast_hidden: Option<f64>,
    /// Lower bound of that forecast's 80% prediction interval.
    pub forecast_lower: Option<f64>,
    /// Upper bound of that forecast's 80% prediction interval.
    pub forecast_upper: Option<f64>,
    /// Learned speed.
    pub speed: f64,
    /// Locality keys it holds, as this manager sees them.
    pub locality_keys: usize,
    /// Seconds since its last heartbeat.
    pub heartbeat_age: Option<f64>,
}

/// Set the per-engine gauges from `engines`, the manager's live engines now. Gauges of engines
/// that left stop being set and drop out of the scrape after the exporter's idle timeout.
pub fn engines(engines: &[EngineReading<'_>]) {
    gauge!(ENGINES_LIVE).set(engines.len() as f64);
    for e in engines {
        let id = e.id.to_owned();
        gauge!(ENGINE_SLOTS, "engine" => id.clone()).set(f64::from(e.slots));
        gauge!(ENGINE_UNFINISHED, "engine" => id.clone()).set(e.unfinished as f64);
        gauge!(ENGINE_SPEED, "engine" => id.clone()).set(e.speed);
        gauge!(ENGINE_LOCALITY_KEYS, "engine" => id.clone()).set(e.locality_keys as f64);
        if let Some(depth) = e.depth {
            gauge!(ENGINE_QUEUE_DEPTH, "engine" => id.clone()).set(f64::from(depth));
        }
        for (name, value) in [
            (ENGINE_FORECAST_HIDDEN, e.forecast_hidden),
            (ENGINE_FORECAST_HIDDEN_LOWER, e.forecast_lower),
            (ENGINE_FORECAST_HIDDEN_UPPER, e.forecast_upper),
        ] {
            if let Some(v) = value {
                gauge!(name, "engine" => id.clone()).set(v);
            }
        }
        if let Some(age) = e.heartbeat_age {
            gauge!(ENGINE_HEARTBEAT_AGE, "engine" => id).set(age);
        }
    }
}
