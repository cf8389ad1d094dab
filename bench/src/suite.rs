//! The three suites.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use shardline::config::ConnectArgs;
use shardline_manager::engines::Engine;
use shardline_manager::ledger::Sent;
use shardline_manager::locality::Fit;
use shardline_manager::plan::ShardCount;
use shardline_manager::predictor::Predictor;
use shardline_manager::{Config, RouterKind};

use crate::harness::{self, Measured, Setup, SpeedPlan};
use crate::policy::Policy;
use crate::report::{Placed, Row};
use crate::workload::{self, Arrival, SHARDS, Workload};

/// Share of each run discarded as warm-up.
pub const WARMUP: f64 = 0.1;

/// W9's arms unless `--policies` says otherwise: the default policy (locality routing on),
/// the same policy blind to locality keys, and pull.
pub const LOCALITY_POLICIES: [Policy; 3] = [
    Policy::Router(RouterKind::PredictiveNoForecast),
    Policy::NoLocality,
    Policy::Router(RouterKind::Pull),
];

/// Settings of the routing suite.
#[derive(Debug, Clone)]
pub struct Routing {
    /// Servers.
    pub connect: ConnectArgs,
    /// Trace seed.
    pub seed: u64,
    /// Arrivals per run.
    pub duration: Duration,
    /// Period of the W4 antagonist and of W6's speed (each also runs for two periods before
    /// the trace).
    pub period: Duration,
    /// Cost of one unit, µs (a light shard is one unit).
    pub unit_us: u64,
    /// Repetitions, interleaved.
    pub reps: u32,
    /// Workloads.
    pub workloads: Vec<Workload>,
    /// Policies of every workload but W9.
    pub policies: Vec<Policy>,
    /// Policies of W9, the locality workload (the others have no locality keys, so the
    /// ablation arm would repeat `predictive-no-forecast` there).
    pub locality_policies: Vec<Policy>,
    /// The predictive policies' in-flight cap.
    pub in_flight_cap: f64,
    /// The predictive policies' hold limit, ms.
    pub hold_ms: u64,
    /// The hedged arm's lateness quantile.
    pub hedge_quantile: f64,
}

/// Latencies (and batch makespans) of one cell, kept per repetition.
#[derive(Default)]
pub(crate) struct Pool {
    runs: Vec<Vec<Option<u64>>>,
    span_us: u64,
    makespans: Vec<f64>,
    /// Shard runs and shards of answered requests, over every repetition.
    executions: u64,
    shards: u64,
}

impl Pool {
    /// Add a run's latencies after its warm-up.
    pub(crate) fn add(&mut self, m: &Measured, ideal_us: Option<f64>) {
        self.add_only(m, ideal_us, |_| true);
    }

    /// Add the latencies after the warm-up of the requests whose trace index `keep` accepts.
    pub(crate) fn add_only(
        &mut self,
        m: &Measured,
        ideal_us: Option<f64>,
        keep: impl Fn(usize) -> bool,
    ) {
        let skip = (m.latencies.len() as f64 * WARMUP) as usize;
        self.runs.push(
            m.latencies
                .iter()
                .enumerate()
                .skip(skip)
                .filter(|&(i, _)| keep(i))
                .map(|(_, l)| *l)
                .collect(),
        );
        self.span_us += m.span_us;
        self.executions += m.executions;
        self.shards += m.shards.iter().map(|&s| u64::from(s)).sum::<u64>();
        if let Some(i) = ideal_us {
            self.makespans.push(m.span_us as f64 / i);
        }
    }

    /// Shard runs beyond one per shard, as a share of the shards, over every repetition.
    pub(crate) fn extra_runs(&self) -> Option<f64> {
        (self.shards > 0)
            .then(|| (self.executions as f64 - self.shards as f64) / self.shards as f64)
    }

    /// The pooled figures as a row.
    pub(crate) fn row(&self, workload: &str, load: f64, policy: &str) -> Row {
        let m = Measured {
            latencies: self.runs.concat(),
            wrong: 0,
            span_us: self.span_us,
            shards: Vec::new(),
            ran_on: Vec::new(),
            executions: 0,
        };
        let mut r = Row::new(workload, load, policy, &m, 0, None);
        r.runs.clone_from(&self.runs);
        r.makespans.clone_from(&self.makespans);
        r
    }
}

impl Routing {
    /// The policies run on `w`.
    pub fn policies_for(&self, w: Workload) -> &[Policy] {
        if w.miss().is_some() {
            &self.locality_policies
        } else {
            &self.policies
        }
    }
}

/// What the routing suite measured.
#[derive(Debug, Clone, Default)]
pub struct Routed {
    /// One row per workload, load and policy.
    pub rows: Vec<Row>,
    /// The locality figures of the keyed workloads' cells (W9), in the same order.
    pub placed: Vec<Placed>,
}

/// Run every policy on every workload and load level, interleaved, `reps` times.
///
/// # Errors
/// A cell could not start.
pub async fn routing(s: &Routing) -> anyhow::Result<Routed> {
    let mut pools: BTreeMap<(usize, usize, usize), Pool> = BTreeMap::new();
    let mut placed: BTreeMap<(usize, usize, usize), Placed> = BTreeMap::new();
    for rep in 0..s.reps {
        for (wi, w) in s.workloads.iter().copied().enumerate() {
            for (li, load) in w.loads().into_iter().enumerate() {
                let seed = s.seed ^ (u64::from(rep) << 32) ^ ((wi as u64) << 16) ^ li as u64;
                let trace = workload::trace(seed, w, load, s.duration, s.unit_us);
                let ideal = w.is_batch().then(|| ideal_us(&trace, w));
                for (pi, policy) in s.policies_for(w).iter().copied().enumerate() {
                    let setup = Setup {
                        policy,
                        shard_count: ShardCount::Fixed(SHARDS),
                        speeds: w.speeds(),
                        speed_plan: speed_plan(w, s.period),
                        antagonist: (w == Workload::W4).then_some(s.period),
                        warmup: if matches!(w, Workload::W4 | Workload::W6) {
                            s.period * 2
                        } else {
                            Duration::ZERO
                        },
                        managers: w.managers(),
                        stragglers: w.stragglers(),
                        miss: w.miss(),
                        unit_us: s.unit_us,
                        in_flight_cap: s.in_flight_cap,
                        hold_ms: s.hold_ms,
                        hedge_quantile: s.hedge_quantile,
                        // Round robin's batch takes about three times the ideal.
                        prime: w.prime(s.unit_us),
                        drain: if w.is_batch() {
                            Duration::from_secs(30)
                        } else {
                            s.duration.max(Duration::from_secs(5))
                        },
                    };
                    let started = Instant::now();
                    let m = harness::run(&s.connect, &setup, &trace).await?;
                    let pool = pools.entry((wi, li, pi)).or_default();
                    pool.add(&m, ideal);
                    let skip = (m.latencies.len() as f64 * WARMUP) as usize;
                    let row = Row::new(w.name(), load, policy.as_str(), &m, skip, ideal);
                    let mut local = String::new();
                    // W4's antagonist runs shards of its own.
                    if let (None, Some(extra)) = (setup.antagonist, m.extra_runs()) {
                        local = format!(" extra runs {:+.1}%", extra * 100.0);
                    }
                    if w.miss().is_some() {
                        let mut one = Placed::new(w.name(), policy.as_str());
                        one.add(&m, &trace, setup.drain, skip);
                        local = format!("{local} local={}", one.local_share());
                        placed
                            .entry((wi, li, pi))
                            .or_insert_with(|| Placed::new(w.name(), policy.as_str()))
                            .add(&m, &trace, setup.drain, skip);
                    }
                    eprintln!(
                        "rep {} {:<20} load {:.2} {:<24} n={:<5} lost={:<4} p50={:>8.1}ms p99={:>8.1}ms ({:.1}s){local}",
                        rep + 1,
                        w.name(),
                        load,
                        policy.as_str(),
                        row.requests,
                        row.lost,
                        row.p50,
                        row.p99,
                        started.elapsed().as_secs_f64()
                    );
                }
            }
        }
    }
    for (&(wi, li, pi), pool) in &pools {
        let w = s.workloads[wi];
        if let (false, Some(extra)) = (w == Workload::W4, pool.extra_runs()) {
            eprintln!(
                "extra shard runs, {} load {:.2} {}: {:+.2}%",
                w.name(),
                if w.is_batch() { 0.0 } else { w.loads()[li] },
                s.policies_for(w)[pi].as_str(),
                extra * 100.0
            );
        }
    }
    let rows = pools
        .iter()
        .map(|(&(wi, li, pi), pool)| {
            let w = s.workloads[wi];
            let load = if w.is_batch() { 0.0 } else { w.loads()[li] };
            pool.row(w.name(), load, s.policies_for(w)[pi].as_str())
        })
        .collect();
    Ok(Routed {
        rows,
        placed: placed.into_values().collect(),
    })
}

/// How engine 0's speed changes in workload `w`.
fn speed_plan(w: Workload, period: Duration) -> SpeedPlan {
    match w {
        Workload::W3 => SpeedPlan::Slowdown,
        Workload::W6 => SpeedPlan::Periodic {
            period,
            low: workload::PERIODIC_LOW,
        },
        _ => SpeedPlan::Steady,
    }
}

/// Total work over total true capacity, µs.
fn ideal_us(trace: &[Arrival], w: Workload) -> f64 {
    trace.iter().map(|a| a.cost_us(SHARDS)).sum::<f64>() / w.capacity()
}

/// Cost of routing, ns: (p50, p99) of one decision of the predictive policy over three
/// engines, and (p50, p99) of building the candidates for one request (reads of the ledger,
/// history, depth samples and forecasts) with 1,000 shards in the ledger.
pub fn decisions() -> ((u64, u64), (u64, u64)) {
    let predictor = Predictor::new(
        Duration::from_millis(Config::DEFAULT_DEPTH_SAMPLE_MS),
        Config::DEFAULT_DEPTH_WINDOW,
        Config::DEFAULT_SHARD_US,
    );
    let engines: Vec<Engine> = (0..3)
        .map(|i| Engine::new(format!("e{i}"), 4, &["synthetic"]))
        .collect();
    for i in 0..1_000u32 {
        let e = &engines[i as usize % 3].id;
        predictor.history.observe("synthetic", 1.0, e, 20_000.0);
        predictor.ledger.sent(
            uuid::Uuid::from_u128(u128::from(i)),
            i,
            Sent {
                engine: e.clone(),
                kind: "synthetic".into(),
                size: 1.0,
                expected_us: 20_000.0,
                idle: false,
                fit: Fit::Unkeyed,
                at: Instant::now(),
                due_us: 20_000.0,
                body: None,
                copy: None,
            },
        );
    }
    let mut router = Config::DEFAULT_ROUTER.build(
        &Default::default(),
        Config::DEFAULT_IN_FLIGHT_CAP,
        false,
        Config::DEFAULT_LATE_BINDING,
    );
    let mut decide = Histogram::<u64>::new(3).unwrap_or_else(|_| unreachable!());
    let mut build = Histogram::<u64>::new(3).unwrap_or_else(|_| unreachable!());
    for _ in 0..20_000 {
        let t = Instant::now();
        let mut c = predictor.candidates("synthetic", 1.0, &engines);
        let _ = build.record(t.elapsed().as_nanos() as u64);
        for _ in 0..8 {
            let t = Instant::now();
            let i = router.choose(&c);
            let _ = decide.record(t.elapsed().as_nanos() as u64);
            if let Some(i) = i {
                c[i].assign();
            }
        }
    }
    let q = |h: &Histogram<u64>| (h.value_at_quantile(0.5), h.value_at_quantile(0.99));
    (q(&decide), q(&build))
}
