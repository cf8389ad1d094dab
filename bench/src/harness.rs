//! One benchmark cell: a fresh namespace, three in-process workers and a manager on the real
//! broker and Redis, one trace sent open loop, every result checked, everything removed after.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::StreamExt;
use shardline::config::ConnectArgs;
use shardline::exporter::MetricsAddr;
use shardline::kind::synthetic::{Remote, Speed, Stragglers, Synthetic, Tally, Work};
use shardline::locality::LocalityKey;
use shardline::message::{Options, Shard, Status};
use shardline::store::{NewRequest, Store};
use shardline::{Names, Registry, amqp, now_ms};
use shardline_client::Client;
use shardline_manager::plan::ShardCount;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::policy::Policy;
use crate::workload::{ANTAGONIST_SLOTS, ANTAGONIST_UNITS, Arrival, ENGINES, SLOTS, partition_key};

/// What varies between cells.
#[derive(Debug, Clone)]
pub struct Setup {
    /// Routing policy (and whether the manager routes by locality).
    pub policy: Policy,
    /// Shard-count mode.
    pub shard_count: ShardCount,
    /// Engine speeds at the start.
    pub speeds: [f64; ENGINES],
    /// How engine 0's speed changes during the run.
    pub speed_plan: SpeedPlan,
    /// Square-wave antagonist on engine 2, with this period (W4).
    pub antagonist: Option<Duration>,
    /// How long the antagonist or the speed plan runs before the trace starts.
    pub warmup: Duration,
    /// Managers sharing the engines (W5: 2).
    pub managers: usize,
    /// Share of shards that straggle on every engine, and how many times slower (W7).
    pub stragglers: Option<(f64, f64)>,
    /// Data locality (W9): engine `i` holds partition `i` (and declares its key,
    /// [`partition_key`]), and a shard of another partition costs this many times more there.
    /// Keyed requests are sent with their partition's key, and the run records which engine
    /// each shard ran on ([`Measured::ran_on`]).
    pub miss: Option<f64>,
    /// Cost of one unit of work, µs.
    pub unit_us: u64,
    /// The predictive policies' in-flight cap.
    pub in_flight_cap: f64,
    /// The predictive policies' hold limit, ms (0: overflow to the shared queue).
    pub hold_ms: u64,
    /// Lateness quantile past which a hedging arm copies a shard.
    pub hedge_quantile: f64,
    /// Requests sent one after another and awaited before the trace, unmeasured (they teach the
    /// manager the kind's costs and the engines' speeds).
    pub prime: Vec<Work>,
    /// How long to wait for the last results after the last arrival.
    pub drain: Duration,
}

/// How engine 0's speed changes during a run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SpeedPlan {
    /// It keeps its nominal speed.
    Steady,
    /// It runs at 0.25× between a third and two thirds of the trace (W3).
    Slowdown,
    /// From the start of the warm-up, nominal in the first half of every `period` and `low`
    /// times nominal in the second (W6).
    Periodic {
        /// Length of one cycle.
        period: Duration,
        /// Speed factor in the slow half.
        low: f64,
    },
}

/// What one cell measured.
#[derive(Debug, Clone, Default)]
pub struct Measured {
    /// Latency of each request from its scheduled send time, µs, in trace order; `None` for a
    /// request without a (correct) result within the drain time.
    pub latencies: Vec<Option<u64>>,
    /// Results whose output was wrong (units lost or repeated).
    pub wrong: usize,
    /// First scheduled send to last result, µs.
    pub span_us: u64,
    /// Shards each answered request was cut into, in trace order (0 when unanswered).
    pub shards: Vec<u32>,
    /// With [`Setup::miss`]: the settled shards of each request by the engine that ran them
    /// (index `i` is engine `i`), in trace order; all zero for a request that never got an id.
    /// Empty otherwise.
    pub ran_on: Vec<[u32; ENGINES]>,
    /// Shard runs the engines started from the first request of the trace to the end (the
    /// priming requests before it excluded, W4's antagonist included): a shard run twice (a
    /// hedge copy that started, a redelivery) counts twice.
    pub executions: u64,
}

impl Measured {
    /// Shard runs beyond one per shard of the answered requests, as a share of those shards
    /// (0.05: 5% extra executions); `None` without answered requests.
    pub fn extra_runs(&self) -> Option<f64> {
        let shards: u64 = self.shards.iter().map(|&s| u64::from(s)).sum();
        (shards > 0).then(|| (self.executions as f64 - shards as f64) / shards as f64)
    }

    /// Mean shard count of the answered requests after the first `skip`.
    pub fn mean_shards(&self, skip: usize) -> f64 {
        self.mean_shards_where(skip, |_| true)
    }

    /// [`Measured::mean_shards`] of the requests whose trace index `keep` accepts.
    pub fn mean_shards_where(&self, skip: usize, keep: impl Fn(usize) -> bool) -> f64 {
        let counted: Vec<f64> = self
            .shards
            .iter()
            .enumerate()
            .skip(skip)
            .filter(|&(i, &n)| n > 0 && keep(i))
            .map(|(_, &n)| f64::from(n))
            .collect();
        counted.iter().sum::<f64>() / counted.len().max(1) as f64
    }
}

pub(crate) struct Running {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl Running {
    pub(crate) async fn stop(self) {
        let _ = self.stop.send(());
        let _ = tokio::time::timeout(Duration::from_secs(10), self.task).await;
    }
}

/// Run `trace` under `setup` on the servers of `base` (its namespace is replaced by a fresh
/// one).
///
/// # Errors
/// The servers are unreachable or the deployment does not start.
pub async fn run(base: &ConnectArgs, setup: &Setup, trace: &[Arrival]) -> anyhow::Result<Measured> {
    let connect = ConnectArgs {
        namespace: format!("bench{}", &Uuid::new_v4().simple().to_string()[..10]),
        ..base.clone()
    };
    let names = connect.names()?;
    let store = Store::connect(&connect.redis_url, names.clone()).await?;
    let speeds: Vec<Speed> = setup.speeds.iter().map(|s| Speed::new(*s)).collect();
    let mut workers = Vec::new();
    let mut kinds = Vec::new();
    for (i, speed) in speeds.iter().enumerate() {
        let mut kind = Synthetic::with_speed(speed.clone());
        if let Some((share, factor)) = setup.stragglers {
            kind = kind.with_stragglers(Stragglers {
                share,
                factor,
                seed: i as u64,
            });
        }
        let mut holds = Vec::new();
        if let Some(factor) = setup.miss {
            let partition = i as u32;
            kind = kind.with_remote(Remote {
                held: BTreeSet::from([partition]),
                factor,
            });
            holds.push(partition_key(partition).map_err(anyhow::Error::msg)?);
        }
        kinds.push(kind.clone());
        workers.push(start_worker_holding(&connect, i, kind, holds));
    }
    let engines = (0..ENGINES).map(engine_id).collect::<Vec<_>>();
    wait_until("engines registered", Duration::from_secs(20), || async {
        let live = store.live_engines(Duration::from_secs(10)).await.ok()?;
        engines.iter().all(|e| live.contains(e)).then_some(())
    })
    .await?;
    let managers: Vec<Running> = (0..setup.managers.max(1))
        .map(|_| start_manager(&connect, setup))
        .collect();
    let client = Arc::new(Client::connect(&connect).await?);
    // Subscribed before the first request, so that no completion is missed.
    let placements = match setup.miss {
        Some(_) => Some(watch_placements(&connect.redis_url, &names).await?),
        None => None,
    };
    // The manager's engine view refreshes every 500 ms; let it see all three.
    tokio::time::sleep(Duration::from_millis(800)).await;

    // One after another, so each is cut with what the ones before it taught.
    let by = Instant::now() + Duration::from_secs(60);
    for (i, &work) in setup.prime.iter().enumerate() {
        let done = one_request(&client, Instant::now(), work, by).await;
        anyhow::ensure!(
            matches!(done.answer, Some(Answer { verdict: Ok(_), .. })),
            "priming request {} of {} did not complete",
            i + 1,
            setup.prime.len()
        );
    }
    let runs = || kinds.iter().map(Synthetic::runs).sum::<u64>();
    let runs_before = runs();
    let start = Instant::now();
    let t0 = start + setup.warmup;
    let length = trace.last().map_or(Duration::ZERO, |a| a.at);
    let mut side = Vec::new();
    if let Some(period) = setup.antagonist {
        let run = antagonist(
            connect.clone(),
            names.clone(),
            store.clone(),
            period,
            setup.unit_us,
            start,
            setup.warmup + length + setup.drain,
        );
        side.push(tokio::spawn(async move {
            if let Err(error) = run.await {
                eprintln!("antagonist stopped: {error:#}");
            }
        }));
    }
    let speed = speeds[0].clone();
    let nominal = setup.speeds[0];
    match setup.speed_plan {
        SpeedPlan::Steady => {}
        SpeedPlan::Slowdown => side.push(tokio::spawn(async move {
            tokio::time::sleep_until((t0 + length / 3).into()).await;
            speed.set(nominal * 0.25);
            tokio::time::sleep_until((t0 + length * 2 / 3).into()).await;
            speed.set(nominal);
        })),
        SpeedPlan::Periodic { period, low } => side.push(tokio::spawn(async move {
            let mut half = start;
            for slow in [false, true].into_iter().cycle() {
                speed.set(if slow { nominal * low } else { nominal });
                half += period / 2;
                tokio::time::sleep_until(half.into()).await;
            }
        })),
    }
    let sends = trace.iter().map(|a| {
        let client = client.clone();
        let (at, work) = (t0 + a.at, a.work);
        let deadline = t0 + length + setup.drain;
        tokio::spawn(async move { one_request(&client, at, work, deadline).await })
    });
    let outcomes = futures::future::join_all(sends.collect::<Vec<_>>()).await;
    let mut m = Measured::default();
    let mut last = t0;
    let mut ids = Vec::with_capacity(outcomes.len());
    for o in outcomes {
        let o = o.unwrap_or_default();
        ids.push(o.id);
        match o.answer {
            Some(Answer {
                verdict: Ok(us),
                done,
                shards,
            }) => {
                m.latencies.push(Some(us));
                m.shards.push(shards);
                last = last.max(done);
            }
            Some(Answer {
                verdict: Err(()),
                shards,
                ..
            }) => {
                m.wrong += 1;
                m.latencies.push(None);
                m.shards.push(shards);
            }
            None => {
                m.latencies.push(None);
                m.shards.push(0);
            }
        }
    }
    m.span_us = last.duration_since(t0).as_micros() as u64;
    if let Some((seen, task)) = placements {
        // A shard's completion is published before its request's result; give the last
        // events a moment to arrive.
        tokio::time::sleep(Duration::from_millis(300)).await;
        task.abort();
        let seen = seen.lock().map(|s| s.clone()).unwrap_or_default();
        m.ran_on = ids
            .iter()
            .map(|id| id.and_then(|id| seen.get(&id).copied()).unwrap_or_default())
            .collect();
    }

    for s in side {
        s.abort();
    }
    for m in managers {
        m.stop().await;
    }
    for w in workers {
        w.stop().await;
    }
    m.executions = runs() - runs_before;
    if let Ok(client) = Arc::try_unwrap(client) {
        client.close().await;
    }
    cleanup(&connect, &names).await;
    Ok(m)
}

/// What became of one request.
#[derive(Default)]
struct Outcome {
    /// Its id, once published (to find where its shards ran, answered or not).
    id: Option<Uuid>,
    /// Its result; `None` when nothing came back in time.
    answer: Option<Answer>,
}

/// The result of one request.
struct Answer {
    /// Latency from the scheduled send, µs; `Err` for a wrong or failed result.
    verdict: Result<u64, ()>,
    /// When the result came.
    done: Instant,
    /// Shards it was cut into.
    shards: u32,
}

/// Send one request at `at` (with its partition's locality key when it reads one) and wait
/// for its result until `deadline`.
async fn one_request(client: &Client, at: Instant, work: Work, deadline: Instant) -> Outcome {
    let Some((id, rx)) = send_one(client, at, work).await else {
        return Outcome::default();
    };
    Outcome {
        id: Some(id),
        answer: wait_one(client, at, work, deadline, id, rx).await,
    }
}

/// Publish one request at `at`: its id and the receiver of its result, `None` when it could
/// not be sent.
async fn send_one(
    client: &Client,
    at: Instant,
    work: Work,
) -> Option<(Uuid, oneshot::Receiver<shardline::message::FinalResult>)> {
    tokio::time::sleep_until(at.into()).await;
    let payload = shardline::message::to_named_value(&work).ok()?;
    let sent = match work.partition {
        Some(p) => {
            let key = partition_key(p).ok()?;
            client
                .send_at("synthetic", payload, &key, Options::default())
                .await
        }
        None => client.send("synthetic", payload, Options::default()).await,
    };
    sent.ok()
}

/// Wait for the result of request `id` (sent for `at`) until `deadline` and check it.
async fn wait_one(
    client: &Client,
    at: Instant,
    work: Work,
    deadline: Instant,
    id: Uuid,
    rx: oneshot::Receiver<shardline::message::FinalResult>,
) -> Option<Answer> {
    let left = deadline.saturating_duration_since(Instant::now());
    let result = client.wait(id, rx, left).await.ok()?;
    let done = Instant::now();
    let ok = result.status == Status::Completed
        && result
            .output
            .as_ref()
            .and_then(|v| rmpv::ext::from_value::<Tally>(v.clone()).ok())
            .is_some_and(|t| t.units == work.units);
    let latency = done.duration_since(at).as_micros() as u64;
    let verdict = if ok { Ok(latency) } else { Err(()) };
    Some(Answer {
        verdict,
        done,
        shards: result.shards,
    })
}

/// Settled shards by request and by engine (index `i` is engine `i`), as the events channel
/// announces them.
type Placements = Arc<Mutex<HashMap<Uuid, [u32; ENGINES]>>>;

/// Subscribe to the namespace's events channel and count, per request, the shards each engine
/// settled (lines `<engine> <request> <index> <µs>`; the `merged` and `ended` lines are
/// skipped). This sees where a shard actually ran, also when it went through the shared
/// queue, which the recorded routes (`(shared)`) do not say. Stop it by aborting the task.
///
/// # Errors
/// Redis is unreachable.
async fn watch_placements(
    redis_url: &str,
    names: &Names,
) -> anyhow::Result<(Placements, JoinHandle<()>)> {
    let client = Store::event_clients(redis_url)?
        .into_iter()
        .next()
        .context("no Redis URL")?;
    let mut pubsub = client
        .get_async_pubsub()
        .await
        .context("opening a pub/sub connection")?;
    pubsub
        .subscribe(names.events_channel())
        .await
        .context("subscribing to the events channel")?;
    let seen = Placements::default();
    let into = seen.clone();
    let engines: Vec<String> = (0..ENGINES).map(engine_id).collect();
    let task = tokio::spawn(async move {
        let mut messages = pubsub.into_on_message();
        while let Some(message) = messages.next().await {
            let Ok(line) = message.get_payload::<String>() else {
                continue;
            };
            let mut words = line.split(' ');
            let engine = words
                .next()
                .and_then(|w| engines.iter().position(|e| e == w));
            let id = words.next().and_then(|w| w.parse::<Uuid>().ok());
            if let (Some(engine), Some(id), Ok(mut seen)) = (engine, id, into.lock()) {
                seen.entry(id).or_default()[engine] += 1;
            }
        }
    });
    Ok((seen, task))
}

pub(crate) fn engine_id(i: usize) -> String {
    format!("e{i}")
}

pub(crate) fn start_worker(connect: &ConnectArgs, i: usize, synthetic: Synthetic) -> Running {
    start_worker_holding(connect, i, synthetic, Vec::new())
}

/// [`start_worker`] for an engine that declares the locality keys `holds`.
fn start_worker_holding(
    connect: &ConnectArgs,
    i: usize,
    synthetic: Synthetic,
    holds: Vec<LocalityKey>,
) -> Running {
    let mut cfg = shardline_worker::Config::new(connect.clone());
    cfg.id = Some(engine_id(i));
    cfg.concurrency = Some(SLOTS);
    cfg.locality = holds;
    cfg.grace_ms = 500;
    cfg.heartbeat_ms = 500;
    let registry = Registry::builtin().with(synthetic);
    let (stop, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let shutdown = async {
            let _ = rx.await;
        };
        if let Err(error) = shardline_worker::run(cfg, registry, shutdown).await {
            tracing::warn!(%error, "bench worker stopped with an error");
        }
    });
    Running { stop, task }
}

fn start_manager(connect: &ConnectArgs, setup: &Setup) -> Running {
    let mut cfg = shardline_manager::Config::new(connect.clone());
    // In-process managers share one process: none binds the default metrics port.
    cfg.metrics_addr = MetricsAddr::Off;
    cfg.router = setup.policy.router();
    cfg.locality_routing = setup.policy.locality_routing();
    cfg.hedge = setup.policy.hedge();
    cfg.late_binding = setup.policy.late_binding();
    cfg.shard_count = setup.shard_count;
    cfg.in_flight_cap = setup.in_flight_cap;
    cfg.hold_ms = setup.hold_ms;
    cfg.hedge_quantile = setup.hedge_quantile;
    cfg.grace_ms = 500;
    cfg.engine_ttl_ms = 3_000;
    // Static weights are the nominal speeds (what an operator would configure).
    cfg.weights = (0..ENGINES)
        .map(|i| (engine_id(i), setup.speeds[i]))
        .collect();
    spawn_manager(cfg)
}

/// Run a manager with `cfg` in this process until stopped.
pub(crate) fn spawn_manager(cfg: shardline_manager::Config) -> Running {
    let (stop, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let shutdown = async {
            let _ = rx.await;
        };
        if let Err(error) = shardline_manager::run(cfg, Registry::builtin(), shutdown).await {
            tracing::warn!(%error, "bench manager stopped with an error");
        }
    });
    Running { stop, task }
}

/// The W4 antagonist: during the first half of every period, shards of
/// [`ANTAGONIST_UNITS`] units published straight to engine 2's queue, bypassing the manager,
/// at the rate that keeps [`ANTAGONIST_SLOTS`] of its slots busy. Each is a real one-shard
/// request recorded in Redis, so the worker processes it.
async fn antagonist(
    connect: ConnectArgs,
    names: Names,
    store: Store,
    period: Duration,
    unit_us: u64,
    start: Instant,
    length: Duration,
) -> anyhow::Result<()> {
    let conn = amqp::connect(&connect.amqp_url, "shardline-bench antagonist").await?;
    let ch = amqp::confirm_channel(&conn).await?;
    let cost = Duration::from_micros(unit_us * ANTAGONIST_UNITS);
    let gap = cost.div_f64(ANTAGONIST_SLOTS);
    let engine = engine_id(2);
    let mut next = start;
    while next.duration_since(start) < length {
        let phase = next.duration_since(start).as_secs_f64() % period.as_secs_f64();
        if phase >= period.as_secs_f64() / 2.0 {
            next += period
                .div_f64(2.0)
                .saturating_sub(Duration::from_secs_f64(phase - period.as_secs_f64() / 2.0));
            continue;
        }
        tokio::time::sleep_until(next.into()).await;
        let id = Uuid::new_v4();
        let deadline = now_ms() + 600_000;
        let record = NewRequest {
            id,
            kind: "synthetic".into(),
            total: 1,
            created: now_ms(),
            deadline,
            reply_to: None,
            correlation_id: None,
            format: shardline::message::Format::MsgPack,
            policy: Default::default(),
            quorum: None,
            manager: "bench-antagonist".into(),
            cut: shardline::kind::Splitter::Custom,
        };
        store
            .create(&record)
            .await
            .context("recording an antagonist request")?;
        let span = shardline::kind::synthetic::Span {
            start: 0,
            end: ANTAGONIST_UNITS,
            unit_cost_us: unit_us,
            spin: false,
            noise_seed: None,
            partition: None,
        };
        let shard = Shard {
            request_id: id,
            index: 0,
            total: 1,
            kind: "synthetic".into(),
            attempt: 1,
            deadline,
            payload: rmp_serde::to_vec_named(&span)?,
        };
        let body = rmp_serde::to_vec_named(&shard)?;
        let props = lapin::BasicProperties::default().with_message_id(shard.message_id().into());
        let published = amqp::publish_to_engine(&ch, &names, &engine, &body, props).await?;
        anyhow::ensure!(
            matches!(published, amqp::Published::Stored),
            "the antagonist's engine {engine} has no queue"
        );
        next += gap;
    }
    Ok(())
}

pub(crate) async fn wait_until<F, Fut>(
    what: &str,
    limit: Duration,
    mut probe: F,
) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<()>>,
{
    let until = Instant::now() + limit;
    while Instant::now() < until {
        if probe().await.is_some() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::bail!("timed out waiting for {what}")
}

/// Remove the namespace's queues, exchanges and keys (best effort: a failure is logged).
pub async fn cleanup(connect: &ConnectArgs, names: &Names) {
    let engines: Vec<String> = (0..ENGINES)
        .map(|i| names.engine_queue(&engine_id(i)))
        .collect();
    let work = async {
        let conn = amqp::connect(&connect.amqp_url, "shardline-bench cleanup").await?;
        let store = Store::connect(&connect.redis_url, names.clone()).await?;
        shardline::teardown::remove_namespace(&conn, &store, &engines).await?;
        let _ = conn.close(200, "bench cell done".into()).await;
        Ok::<_, shardline::Error>(())
    };
    if let Err(error) = work.await {
        tracing::warn!(%error, namespace = names.namespace(), "cleaning up the namespace failed");
    }
}
