//! The phases of a run: start, load with faults, make sure the workers are up, drain, settle,
//! look at what is left.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use shardline::config::ConnectArgs;
use shardline::store::Store;
use shardline::{Names, amqp};
use shardline_client::Client;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use uuid::Uuid;

use super::Config;
use super::faults::{self, Fault, FaultLog};
use super::fleet::Fleet;
use super::ledger::Ledger;
use super::load::{self, Target};
use super::mix::Mix;
use super::{probe, replies};

/// How often a progress line is printed.
const PROGRESS_EVERY: Duration = Duration::from_secs(30);
/// How long the deployment may take to come up.
const READY_WITHIN: Duration = Duration::from_secs(60);
/// Quiet time after the in-flight index is empty, for a last stray delivery.
const QUIET: Duration = Duration::from_secs(3);

/// What the run produced, for the check and the report.
pub(crate) struct Driven {
    pub(crate) ledger: Arc<Ledger>,
    pub(crate) faults: Vec<Fault>,
    /// Start of the load.
    pub(crate) t0: Instant,
    /// The same, on the wall clock (process logs are stamped in UTC).
    pub(crate) t0_wall: std::time::SystemTime,
    /// Length of the load phase.
    pub(crate) load: Duration,
    /// Ctrl-C ended the load early.
    pub(crate) interrupted: bool,
    /// From the end of the load to the last result (or the give-up time).
    pub(crate) drain: Duration,
    /// How long the drain was allowed.
    pub(crate) drain_bound: Duration,
    /// The in-flight index emptied within the settle time.
    pub(crate) settled: bool,
    /// Problems on the way (deployment slow to come back, ...).
    pub(crate) notes: Vec<String>,
    /// (queue, messages ready, consumers) at the end, before the deployment stops.
    pub(crate) queues: Vec<(String, u32, u32)>,
    /// What Redis says about suspect ids (lost, duplicated, wrong, unexpected status).
    pub(crate) redis: Vec<(Uuid, String)>,
}

/// Tasks aborted when dropped, so an early error stops them before the deployment is shut down.
struct Tasks(Vec<JoinHandle<()>>);

impl Drop for Tasks {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

/// Run the phases on the fleet (which the caller shuts down afterwards).
///
/// # Errors
/// Servers unreachable or a deployment that does not start.
pub(crate) async fn drive(
    cfg: &Config,
    connect: &ConnectArgs,
    names: &Names,
    fleet: &Arc<tokio::sync::Mutex<Fleet>>,
) -> anyhow::Result<Driven> {
    let store = Store::connect(&connect.redis_url, names.clone())
        .await
        .context("connecting to Redis")?;
    let conn = amqp::connect(&connect.amqp_url, "shardline-soak")
        .await
        .context("connecting to RabbitMQ")?;
    let channel = amqp::confirm_channel(&conn).await?;
    amqp::declare_topology(&channel, names).await?;
    let ledger = Arc::new(Ledger::default());
    let mut tasks = Tasks(vec![replies::start(&conn, names, ledger.clone()).await?]);
    let client = Arc::new(Client::connect(connect).await?);
    let mix = Mix::new(cfg.deadline_ms, cfg.seed);

    {
        let mut f = fleet.lock().await;
        for i in 0..cfg.managers {
            f.start_manager(&format!("m{i}"))?;
        }
        for _ in 0..cfg.workers {
            let id = f.fresh_worker_id();
            f.start_worker(&id)?;
        }
    }
    let workers = fleet.lock().await.worker_ids();
    probe::ready(&conn, &store, names, &workers, cfg.managers, READY_WITHIN).await?;
    eprintln!(
        "soak: {} managers and {} workers up; load starts",
        cfg.managers, cfg.workers
    );

    let (interrupt_tx, mut interrupt) = watch::channel(0u32);
    tasks.0.push(tokio::spawn(async move {
        while tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("soak: Ctrl-C: ending the load, or the wait for results");
            interrupt_tx.send_modify(|n| *n += 1);
        }
    }));
    let (phase_tx, phase) = watch::channel("load");
    let fault_log = FaultLog::default();
    let t0 = Instant::now();
    let t0_wall = std::time::SystemTime::now();
    tasks.0.push(tokio::spawn(supervise(fleet.clone())));
    tasks.0.push(tokio::spawn(progress(
        ledger.clone(),
        fault_log.clone(),
        fleet.clone(),
        phase,
        t0,
    )));
    let (stop_faults, stop_rx) = watch::channel(false);
    let injector = (cfg.fault_mean_s > 0.0).then(|| {
        tokio::spawn(faults::inject(
            fleet.clone(),
            fault_log.clone(),
            cfg.seed,
            Duration::from_secs_f64(cfg.fault_mean_s),
            cfg.broker_nodes.iter().skip(1).cloned().collect(),
            t0,
            stop_rx,
        ))
    });

    let target = Target {
        channel,
        client: client.clone(),
        exchange: names.requests_exchange(),
        reply_queue: replies::queue_name(names),
    };
    let (mut sends, interrupted) = load::run(
        &target,
        &ledger,
        &mix,
        (cfg.rate, cfg.seed),
        (t0, t0 + cfg.load()),
        &mut interrupt,
    )
    .await;
    let load_end = Instant::now();
    let _ = phase_tx.send("drain");
    let mut notes = Vec::new();

    // Stop faults (one under way finishes, restart included), then make sure all are up.
    let _ = stop_faults.send(true);
    if let Some(i) = injector {
        let _ = i.await;
    }
    let workers = {
        let mut f = fleet.lock().await;
        f.supervise();
        while f.workers.len() < cfg.workers {
            let id = f.fresh_worker_id();
            f.start_worker(&id)?;
        }
        for extra in cfg.managers..cfg.managers * 2 {
            if f.managers.len() >= cfg.managers {
                break;
            }
            f.start_manager(&format!("m{extra}"))?;
        }
        f.worker_ids()
    };
    if let Err(e) = probe::ready(&conn, &store, names, &workers, cfg.managers, READY_WITHIN).await {
        notes.push(format!("after the load: {e:#}"));
    }
    if tokio::time::timeout(Duration::from_secs(30), async {
        while sends.join_next().await.is_some() {}
    })
    .await
    .is_err()
    {
        notes.push("some publishes or cancels were still pending 30 s after the load".into());
    }

    // Drain: every id answered, or the longest deadline plus the margin has passed.
    let drain_bound = mix.longest_deadline() + Duration::from_secs(cfg.drain_margin_s);
    let interrupts = *interrupt.borrow();
    let drain_end = wait(
        "drain",
        load_end + drain_bound,
        &interrupt,
        interrupts,
        || {
            let ledger = ledger.clone();
            async move { ledger.counts().outstanding == 0 }
        },
    )
    .await;
    let drain = drain_end.saturating_duration_since(load_end);
    let counts = ledger.counts();
    eprintln!(
        "soak: drain ended after {:.0} s with {} of {} ids unanswered; settling",
        drain.as_secs_f64(),
        counts.outstanding,
        counts.submitted
    );

    // Settle: nothing in flight any more (a re-driven finalizer could still publish again).
    let _ = phase_tx.send("settle");
    let settle_until = Instant::now() + Duration::from_secs(cfg.settle_s);
    let settled_at = wait("settle", settle_until, &interrupt, interrupts, || {
        let store = store.clone();
        async move { store.inflight(1).await.is_ok_and(|v| v.is_empty()) }
    })
    .await;
    let settled = settled_at < settle_until;
    tokio::time::sleep(QUIET).await;

    let all_workers = fleet.lock().await.all_worker_ids();
    let queues = leftover_queues(&conn, names, &all_workers).await;
    let mut redis = Vec::new();
    for id in ledger.suspects(200) {
        redis.push((id, probe::describe(&store, id).await));
    }
    drop(tasks);
    if let Ok(c) = Arc::try_unwrap(client) {
        c.close().await;
    }
    let _ = conn.close(200, "soak done".into()).await;
    let faults = fault_log
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    Ok(Driven {
        ledger,
        faults,
        t0,
        t0_wall,
        load: load_end.saturating_duration_since(t0),
        interrupted,
        drain,
        drain_bound,
        settled,
        notes,
        queues,
        redis,
    })
}

/// Poll `done` every 250 ms until it holds, `until` passes or a new Ctrl-C arrives (beyond
/// `seen`); returns when it stopped waiting.
async fn wait<F, Fut>(
    what: &str,
    until: Instant,
    interrupt: &watch::Receiver<u32>,
    seen: u32,
    mut done: F,
) -> Instant
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    loop {
        if done().await {
            return Instant::now();
        }
        if Instant::now() >= until {
            eprintln!("soak: {what} gave up at its time limit");
            return Instant::now();
        }
        if *interrupt.borrow() > seen {
            eprintln!("soak: {what} cut short by Ctrl-C");
            return Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Restart processes that exit on their own, every second.
async fn supervise(fleet: Arc<tokio::sync::Mutex<Fleet>>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        for note in fleet.lock().await.supervise() {
            eprintln!("soak: {note}");
        }
    }
}

/// A progress line every [`PROGRESS_EVERY`].
async fn progress(
    ledger: Arc<Ledger>,
    faults: FaultLog,
    fleet: Arc<tokio::sync::Mutex<Fleet>>,
    phase: watch::Receiver<&'static str>,
    t0: Instant,
) {
    let mut tick = tokio::time::interval_at(t0 + PROGRESS_EVERY, PROGRESS_EVERY);
    loop {
        tick.tick().await;
        let c = ledger.counts();
        let by_kind = faults::counts(&faults)
            .iter()
            .map(|(k, n)| format!("{} {n}", k.short()))
            .collect::<Vec<_>>()
            .join(", ");
        let (w, m) = {
            let f = fleet.lock().await;
            (f.workers.len(), f.managers.len())
        };
        let s = t0.elapsed().as_secs();
        eprintln!(
            "soak: {:>3}:{:02} {:<6} submitted {} answered {} outstanding {} deliveries {} | \
             faults: {by_kind} | up: {w} workers, {m} managers",
            s / 60,
            s % 60,
            *phase.borrow(),
            c.submitted,
            c.answered,
            c.outstanding,
            c.deliveries
        );
    }
}

/// Depth and consumers of every queue of the namespace that still exists.
async fn leftover_queues(
    conn: &lapin::Connection,
    names: &Names,
    workers: &[String],
) -> Vec<(String, u32, u32)> {
    let mut all = vec![
        names.requests_queue(),
        names.dead_queue(),
        replies::queue_name(names),
    ];
    all.extend(
        shardline::Registry::builtin()
            .names()
            .into_iter()
            .map(|k| names.kind_queue(k)),
    );
    all.extend(workers.iter().map(|w| names.engine_queue(w)));
    let mut out = Vec::new();
    for q in all {
        if let Some((ready, consumers)) = probe::queue(conn, &q).await {
            out.push((q, ready, consumers));
        }
    }
    out
}
