//! # Soak mode
//!
//! A long run of mixed load against real manager and worker *processes* while workers and
//! managers are killed and restarted, followed by a ledger check: every submitted request id
//! must have exactly one terminal result.
//!
//! One run:
//! 1. a fresh namespace; two managers and four workers started from the release binaries, their
//!    stderr in a log directory next to the report;
//! 2. open-loop Poisson arrivals (`load`) of a seeded request mix (`mix`) for `--minutes`,
//!    every result sent to one reply queue owned by the soak tool (`replies`) and recorded in
//!    a ledger (`ledger`);
//! 3. meanwhile, at exponential intervals, one fault (`faults`): SIGKILL a worker and start a
//!    replacement under a new id, SIGTERM a worker and restart it, or SIGKILL a manager and
//!    restart it; a supervisor restarts any process that exits on its own (`fleet`);
//! 4. faults stop, every worker is made sure to be up, and the tool waits (at most the longest
//!    deadline plus a margin) for the last results, then until nothing is in flight;
//! 5. the ledger check (`check`): lost ids, duplicate deliveries, outputs that differ from a
//!    local recomputation (`verify`), statuses and shards per class, faults that struck
//!    during wide fan-outs, latency; the Markdown report (`report`) goes to stdout and
//!    `--out`; the namespace is deleted.
//!
//! The run passes when no result is lost, none is duplicated and no output is wrong.

mod check;
mod drive;
mod faults;
mod fleet;
mod ledger;
mod load;
mod logs;
mod mix;
mod probe;
mod replies;
mod report;
mod verify;

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use shardline::config::ConnectArgs;
use uuid::Uuid;

/// Soak settings (the `shardline-soak` flags).
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "shardline-soak",
    version,
    about = "Mixed load with random worker and manager kills, then a check that every request \
             got exactly one terminal result"
)]
pub struct Config {
    /// Broker and Redis (the namespace is replaced by a fresh one per run).
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// Minutes of load (faults are injected during the load only). Ctrl-C ends the load early
    /// and still checks what was sent; a second Ctrl-C skips the waits for the last results.
    #[arg(long, default_value_t = 30.0)]
    pub minutes: f64,
    /// Mean arrival rate, requests per second (open loop, Poisson).
    #[arg(long, default_value_t = 20.0)]
    pub rate: f64,
    /// Seed of the arrivals, the request mix and the faults.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Mean time between faults, seconds (exponential); 0 disables faults.
    #[arg(long, default_value_t = 20.0)]
    pub fault_mean_s: f64,
    /// Worker processes.
    #[arg(long, default_value_t = 4)]
    pub workers: usize,
    /// Shards each worker runs at once.
    #[arg(long, default_value_t = 4)]
    pub concurrency: u16,
    /// Manager processes.
    #[arg(long, default_value_t = 2)]
    pub managers: usize,
    /// Deadline of every request outside the short-deadline share, milliseconds.
    #[arg(long, default_value_t = 120_000)]
    pub deadline_ms: u64,
    /// After the load, how long beyond the longest deadline to wait for results, seconds.
    #[arg(long, default_value_t = 60)]
    pub drain_margin_s: u64,
    /// After the last result, how long to wait for the in-flight index to empty (late
    /// duplicates from re-driven finalizers would arrive then), seconds.
    #[arg(long, default_value_t = 45)]
    pub settle_s: u64,
    /// The manager binary (default: `shardline-manager` next to this executable).
    #[arg(long)]
    pub manager_bin: Option<PathBuf>,
    /// The worker binary (default: `shardline-worker` next to this executable).
    #[arg(long)]
    pub worker_bin: Option<PathBuf>,
    /// `RUST_LOG` of the managers and workers.
    #[arg(long, default_value = "warn")]
    pub process_log: String,
    /// RabbitMQ node names (for `rabbitmqctl -n`), one per URL of `--amqp-url`, in its order
    /// (`scripts/rabbitmq-cluster.sh node N` prints them): adds stop-broker-node faults on
    /// every node but the first, which the soak's own connections use.
    #[arg(long, value_delimiter = ',')]
    pub broker_nodes: Vec<String>,
    /// Markdown report (default `bench-results/soak-<UTC timestamp>.md`); the process logs go
    /// to the directory of the same name ending in `.logs`.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// What a run found.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The Markdown report.
    pub markdown: String,
    /// Where the report belongs.
    pub out: PathBuf,
    /// Directory of the process logs.
    pub log_dir: PathBuf,
    /// Requests submitted.
    pub submitted: usize,
    /// Ids without any terminal result.
    pub lost: usize,
    /// Ids with more than one result a consumer would accept.
    pub duplicates: usize,
    /// Ids with extra copies marked re-driven and identical, which consumers deduplicate.
    pub redriven: usize,
    /// Results whose output differs from the local computation.
    pub wrong: usize,
}

impl Outcome {
    /// No loss, no duplicate, no wrong output.
    pub fn passed(&self) -> bool {
        self.lost == 0 && self.duplicates == 0 && self.wrong == 0
    }
}

impl Config {
    fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.minutes.is_finite() && self.minutes > 0.0,
            "--minutes must be positive"
        );
        anyhow::ensure!(
            self.rate.is_finite() && self.rate > 0.0,
            "--rate must be positive"
        );
        anyhow::ensure!(
            self.fault_mean_s.is_finite() && self.fault_mean_s >= 0.0,
            "--fault-mean-s must be 0 (off) or positive"
        );
        anyhow::ensure!(self.workers >= 1, "--workers must be at least 1");
        if !self.broker_nodes.is_empty() {
            let urls = shardline::amqp::Brokers::parse(&self.connect.amqp_url)?;
            anyhow::ensure!(
                urls.urls().len() == self.broker_nodes.len() && self.broker_nodes.len() >= 2,
                "--broker-nodes names one node per URL of --amqp-url, at least 2"
            );
        }
        anyhow::ensure!(self.managers >= 1, "--managers must be at least 1");
        anyhow::ensure!(self.concurrency >= 1, "--concurrency must be at least 1");
        anyhow::ensure!(
            (1_000..=shardline::message::MAX_DEADLINE_MS).contains(&self.deadline_ms),
            "--deadline-ms must be between 1000 and 7 days"
        );
        Ok(())
    }

    fn load(&self) -> Duration {
        Duration::from_secs_f64(self.minutes * 60.0)
    }
}

/// Run a soak: start the deployment, load it while injecting faults, check the ledger, stop
/// everything and delete the namespace.
///
/// # Errors
/// Bad settings, binaries not found, servers unreachable, or a deployment that does not start.
/// A failed ledger check is not an error: see [`Outcome::passed`].
pub async fn run(cfg: &Config) -> anyhow::Result<Outcome> {
    cfg.validate()?;
    let bins = fleet::Bins::locate(cfg.manager_bin.clone(), cfg.worker_bin.clone())?;
    let started = SystemTime::now();
    let out = cfg.out.clone().unwrap_or_else(|| {
        PathBuf::from(format!(
            "bench-results/soak-{}.md",
            report::timestamp(started)
        ))
    });
    let log_dir = out.with_extension("logs");
    std::fs::create_dir_all(&log_dir)
        .with_context(|| format!("creating the log directory {}", log_dir.display()))?;
    let connect = ConnectArgs {
        namespace: format!("soak{}", &Uuid::new_v4().simple().to_string()[..10]),
        ..cfg.connect.clone()
    };
    let names = connect.names()?;
    eprintln!(
        "soak: namespace {}, {} min at {} req/s, seed {}, logs in {}",
        names.namespace(),
        cfg.minutes,
        cfg.rate,
        cfg.seed,
        log_dir.display()
    );
    let fleet = fleet::Fleet::new(fleet::Setup {
        bins,
        connect: connect.clone(),
        log_dir: log_dir.clone(),
        concurrency: cfg.concurrency,
        rust_log: cfg.process_log.clone(),
    });
    let fleet = std::sync::Arc::new(tokio::sync::Mutex::new(fleet));

    // With broker node faults the soak's own connections keep to the first node, which the
    // faults never stop; the fleet uses them all.
    let own = match cfg.broker_nodes.first() {
        Some(_) => ConnectArgs {
            amqp_url: shardline::amqp::Brokers::parse(&connect.amqp_url)?.urls()[0].clone(),
            ..connect.clone()
        },
        None => connect.clone(),
    };
    let driven = drive::drive(cfg, &own, &names, &fleet).await;

    eprintln!("soak: stopping the deployment and deleting the namespace");
    let (engines, exits) = {
        let mut f = fleet.lock().await;
        f.shutdown().await;
        (f.all_worker_ids(), f.notes())
    };
    probe::cleanup(&connect, &names, &engines).await;
    let driven = driven?;

    let check = check::Check::of(&driven.ledger, driven.t0);
    let logs = logs::scan(&log_dir);
    let markdown = report::render(&report::Input {
        cfg,
        namespace: names.namespace(),
        started,
        driven: &driven,
        check: &check,
        exits: &exits,
        logs: &logs,
        log_dir: &log_dir,
    });
    Ok(Outcome {
        markdown,
        out,
        log_dir,
        submitted: check.submitted,
        lost: check.lost.len(),
        duplicates: check.duplicates.len(),
        redriven: check.redriven.len(),
        wrong: check.wrong.len(),
    })
}
