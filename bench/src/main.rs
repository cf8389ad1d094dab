//! `shardline-bench`: the side-by-side routing and shard-count benchmark.
//!
//! `--mode quick` (the default, under 3 minutes) runs the routing suite on W1, W2, W3, W4 and W8
//! with six policies on short traces, and the decision cost; `--suite sharding` (about two
//! minutes) compares shard counts; `--mode full` (about 75 minutes) runs every workload and
//! policy (W9, the locality workload, with its own three arms: see
//! [`suite::LOCALITY_POLICIES`]), three repetitions of 8 s traces, and the shard counts on two
//! repetitions of 15 s traces, for the record.
//! `--workloads w9` runs the locality workload alone.
//! Tables go to the terminal and to `--out` (Markdown, CSV, and a PNG of p99 by policy).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use shardline::config::ConnectArgs;
use shardline_bench::policy::Policy;
use shardline_bench::report;
use shardline_bench::scaling;
use shardline_bench::sharding::{self, Sharding, Size};
use shardline_bench::suite::{self, Routing};
use shardline_bench::throughput::{self, Throughput, deploy::Build};
use shardline_bench::workload::{self, Workload};
use shardline_manager::RouterKind;
use shardline_manager::plan::ShardCount;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Mode {
    /// Short traces, five workloads, six policies.
    Quick,
    /// Every workload, load level and policy.
    Full,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Suite {
    /// Policy × workload × load.
    Routing,
    /// Fixed shard counts against adaptive.
    Sharding,
    /// The cost of one routing decision.
    Decisions,
    /// Per-shard cost: real manager and worker processes against the broker's and Redis's
    /// own ceilings (about 4 minutes).
    Throughput,
    /// Whether the manager's desired-replica signal rises before the queue (about 6 minutes).
    Scaling,
    /// All five.
    All,
}

/// Side-by-side benchmark of routing policies and shard counts on real RabbitMQ and Redis.
#[derive(Debug, Parser)]
#[command(name = "shardline-bench", version)]
struct Args {
    /// Broker and Redis (the namespace is replaced by a fresh one per run).
    #[command(flatten)]
    connect: ConnectArgs,
    /// Preset of durations, workloads and policies.
    #[arg(long, value_enum, default_value_t = Mode::Quick)]
    mode: Mode,
    /// Which suite to run (default: routing and decisions in quick mode, under 3 minutes;
    /// all three in full mode).
    #[arg(long, value_enum)]
    suite: Option<Suite>,
    /// Seed of every trace.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Seconds of arrivals per run (default: 2.5 quick, 8 full; sharding 3 and 15).
    #[arg(long)]
    duration: Option<f64>,
    /// Period of the W4 antagonist and of W6's engine speed, in seconds (default: 2 quick, 4
    /// full).
    #[arg(long)]
    period: Option<f64>,
    /// Repetitions, interleaved (default: 1 quick; 3 full, 2 for shard counts).
    #[arg(long)]
    reps: Option<u32>,
    /// Cost of one unit of work (a light shard), µs.
    #[arg(long, default_value_t = 20_000)]
    unit_us: u64,
    /// Workloads (default depends on the mode).
    #[arg(long, value_enum, value_delimiter = ',')]
    workloads: Vec<Workload>,
    /// Policies, for every workload (default depends on the mode; W9 runs
    /// predictive-no-forecast, predictive-no-locality and pull).
    #[arg(long, value_enum, value_delimiter = ',')]
    policies: Vec<Policy>,
    /// Request sizes of the sharding suite (default: small, medium, large and the mixed trace).
    #[arg(long, value_enum, value_delimiter = ',')]
    sizes: Vec<Size>,
    /// Shard-count modes of the sharding suite (default: 1,4,16,64,adaptive).
    #[arg(long, value_delimiter = ',')]
    shard_counts: Vec<ShardCount>,
    /// The predictive policies' in-flight cap (the manager's `--in-flight-cap`).
    #[arg(long, default_value_t = shardline_manager::Config::DEFAULT_IN_FLIGHT_CAP)]
    in_flight_cap: f64,
    /// The predictive policies' hold limit in ms (the manager's `--hold-ms`; 0: no hold).
    #[arg(long, default_value_t = shardline_manager::Config::DEFAULT_HOLD_MS)]
    hold_ms: u64,
    /// The `predictive-hedged` arm's lateness quantile (the manager's `--hedge-quantile`).
    #[arg(long, default_value_t = shardline_manager::hedge::DEFAULT_QUANTILE)]
    hedge_quantile: f64,
    /// Throughput suite: directory of the `shardline-manager` and `shardline-worker` builds
    /// to measure (default: next to this executable).
    #[arg(long)]
    bins: Option<PathBuf>,
    /// Throughput suite: a second build to measure side by side, labelled `baseline`.
    #[arg(long)]
    baseline_bins: Option<PathBuf>,
    /// Throughput suite: measure the current build a second time with a dashboard open on it
    /// (its `shardline` binary, polled on the page's schedule), labelled `current+dashboard`.
    #[arg(long)]
    dashboard_open: bool,
    /// Throughput suite: measure the current build again on the Redis Cluster at these node
    /// URLs (comma-separated; `scripts/redis-cluster.sh start` prints them), twice: labelled
    /// `current@redis-cluster`, and `current@redis-cluster+wait1` with
    /// `--redis-wait-replicas 1`.
    #[arg(long)]
    redis_cluster_url: Option<String>,
    /// Throughput suite: measure the current build again on the RabbitMQ cluster at these
    /// AMQP URLs (comma-separated; `scripts/rabbitmq-cluster.sh start` prints them) with
    /// quorum queues, labelled `current@rabbitmq-cluster`.
    #[arg(long)]
    rabbitmq_cluster_url: Option<String>,
    /// Throughput suite: shards per request.
    #[arg(long, value_delimiter = ',', default_values_t = [1u32, 4, 16, 64, 256])]
    fan_outs: Vec<u32>,
    /// Throughput suite: shards one burst makes.
    #[arg(long, default_value_t = 3000)]
    burst_shards: usize,
    /// Throughput suite: requests of the sequential (latency) measurement per cell.
    #[arg(long, default_value_t = 30)]
    sequential: usize,
    /// Throughput suite: words in one shard.
    #[arg(long, default_value_t = 500)]
    words_per_shard: usize,
    /// Throughput suite: worker processes.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Directory for the tables and the plot.
    #[arg(long, default_value = "bench-results")]
    out: PathBuf,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let a = Args::parse();
    let full = a.mode == Mode::Full;
    let (routing, sharding, decisions, throughput, scaling) = match a.suite {
        Some(Suite::Routing) => (true, false, false, false, false),
        Some(Suite::Sharding) => (false, true, false, false, false),
        Some(Suite::Decisions) => (false, false, true, false, false),
        Some(Suite::Throughput) => (false, false, false, true, false),
        Some(Suite::Scaling) => (false, false, false, false, true),
        Some(Suite::All) => (true, true, true, true, true),
        None => (true, full, true, false, false),
    };
    let secs = |v: Option<f64>, quick: f64, full_v: f64| {
        Duration::from_secs_f64(v.unwrap_or(if full { full_v } else { quick }).max(0.5))
    };
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let mut summary = String::new();

    if decisions {
        let ((d50, d99), (b50, b99)) = suite::decisions();
        let text = format!(
            "## Routing decision cost\n\n| step | p50 | p99 |\n|---|---:|---:|\n| one predictive decision, 3 engines | {:.2} µs | {:.2} µs |\n| candidates for one request (ledger of 1,000 shards) | {:.2} µs | {:.2} µs |\n",
            d50 as f64 / 1e3,
            d99 as f64 / 1e3,
            b50 as f64 / 1e3,
            b99 as f64 / 1e3
        );
        println!("{text}");
        summary.push_str(&text);
    }
    if routing {
        let workloads = if a.workloads.is_empty() {
            let mut all = vec![
                Workload::W1,
                Workload::W2,
                Workload::W3,
                Workload::W4,
                Workload::W8,
            ];
            // W5, W6, W7, W8w and W9 stay out of quick mode to keep it short. W9 comes last so
            // that the others keep their trace seeds (the seed mixes in the workload's place).
            if full {
                all.extend([
                    Workload::W5,
                    Workload::W6,
                    Workload::W7,
                    Workload::W8w,
                    Workload::W9,
                ]);
            }
            all
        } else {
            a.workloads.clone()
        };
        let policies: Vec<Policy> = if a.policies.is_empty() {
            let kinds = if full {
                RouterKind::ALL.to_vec()
            } else {
                vec![
                    RouterKind::RoundRobin,
                    RouterKind::WeightedRoundRobin,
                    RouterKind::JsqDepth,
                    RouterKind::Predictive,
                    RouterKind::PredictiveNoForecast,
                    RouterKind::Pull,
                ]
            };
            kinds.into_iter().map(Policy::from).collect()
        } else {
            a.policies.clone()
        };
        let locality_policies = if a.policies.is_empty() {
            suite::LOCALITY_POLICIES.to_vec()
        } else {
            a.policies.clone()
        };
        let s = Routing {
            connect: a.connect.clone(),
            seed: a.seed,
            duration: secs(a.duration, 2.5, 8.0),
            period: secs(a.period, 2.0, 4.0),
            unit_us: a.unit_us,
            reps: a.reps.unwrap_or(if full { 3 } else { 1 }).max(1),
            workloads,
            policies,
            locality_policies,
            in_flight_cap: a.in_flight_cap,
            hold_ms: a.hold_ms,
            hedge_quantile: a.hedge_quantile,
        };
        let routed = suite::routing(&s).await?;
        let rows = routed.rows;
        let mut table = report::markdown(&rows);
        if !routed.placed.is_empty() {
            table.push_str(&format!(
                "\nLocality (engine i holds partition i; requests read p0/p1/p2 at {:?}; a shard of \
                 another partition costs {}× more):\n\n{}",
                workload::PARTITION_SHARE,
                workload::MISS,
                report::locality(&routed.placed)
            ));
        }
        let text = format!(
            "## Routing ({} s of arrivals per run, {} rep(s), unit {} µs, W4 and W6 period {} s, seed {})\n\n{table}",
            s.duration.as_secs_f64(),
            s.reps,
            s.unit_us,
            s.period.as_secs_f64(),
            s.seed
        );
        println!("{text}");
        summary.push_str(&text);
        std::fs::write(a.out.join("routing.csv"), report::csv(&rows))?;
        match report::plot(&rows, &a.out.join("routing.png")) {
            Ok(()) => eprintln!("plot: {}", a.out.join("routing.png").display()),
            Err(error) => eprintln!("no plot: {error}"),
        }
    }
    if sharding {
        let s = Sharding {
            connect: a.connect.clone(),
            seed: a.seed,
            duration: secs(a.duration, 3.0, 15.0),
            load: 0.5,
            sizes: if a.sizes.is_empty() {
                Size::ALL.to_vec()
            } else {
                a.sizes.clone()
            },
            modes: if a.shard_counts.is_empty() {
                sharding::SHARD_MODES.to_vec()
            } else {
                a.shard_counts.clone()
            },
            reps: a.reps.unwrap_or(if full { 2 } else { 1 }).max(1),
        };
        let rows = sharding::sharding(&s).await?;
        let mut table = String::new();
        if !rows.by_size.is_empty() {
            table = format!(
                "{}\nAcross sizes:\n\n{}\nAgainst the adaptive count:\n\n{}",
                report::markdown(&rows.by_size),
                report::across_sizes(&rows.by_size),
                report::against(&rows.by_size, "adaptive")
            );
        }
        if !rows.mixed.is_empty() {
            table.push_str(&format!(
                "\nOne trace of mixed sizes (80% small, 15% medium, 5% large by count), whole and by size:\n\n{}\nAgainst the adaptive count:\n\n{}",
                report::markdown(&rows.mixed),
                report::against(&rows.mixed, "adaptive")
            ));
        }
        let text = format!(
            "\n## Shard count ({} s of arrivals per run, {} rep(s), load {}, default routing)\n\n{table}",
            s.duration.as_secs_f64(),
            s.reps,
            s.load
        );
        println!("{text}");
        summary.push_str(&text);
        let all: Vec<_> = rows.by_size.into_iter().chain(rows.mixed).collect();
        std::fs::write(a.out.join("sharding.csv"), report::csv(&all))?;
    }
    if throughput {
        let text = throughput_suite(&a).await?;
        println!("{text}");
        summary.push_str(&text);
    }
    if scaling {
        let mut runs = Vec::new();
        for rep in 0..a.reps.unwrap_or(1).max(1) {
            for shape in scaling::Shape::ALL {
                let seed = a.seed + rep as u64;
                eprintln!("scaling: {} trace, repetition {}", shape.name(), rep + 1);
                runs.push((shape, scaling::run(&a.connect, shape, seed).await?));
            }
        }
        let text = scaling::report(&runs);
        println!("{text}");
        summary.push_str(&text);
        std::fs::write(a.out.join("scaling.csv"), scaling::csv(&runs))?;
        match scaling::plot(&runs, &a.out.join("scaling.png")) {
            Ok(()) => eprintln!("plot: {}", a.out.join("scaling.png").display()),
            Err(error) => eprintln!("no plot: {error}"),
        }
    }
    let path = a.out.join("report.md");
    std::fs::write(&path, summary)?;
    eprintln!("report: {}", path.display());
    Ok(())
}

async fn throughput_suite(a: &Args) -> anyhow::Result<String> {
    let here = std::env::current_exe()
        .context("finding this executable")?
        .parent()
        .map(std::path::Path::to_path_buf)
        .unwrap_or_default();
    let mut builds = vec![Build::locate(
        "current",
        a.bins.as_deref().unwrap_or(&here),
    )?];
    if let Some(dir) = &a.baseline_bins {
        builds.push(Build::locate("baseline", dir)?);
    }
    if a.dashboard_open {
        let watched = builds[0].watched()?;
        builds.insert(1, watched);
    }
    if let Some(urls) = &a.redis_cluster_url {
        let (plain, waiting) = (builds[0].on_cluster(urls, 0), builds[0].on_cluster(urls, 1));
        builds.extend([plain, waiting]);
    }
    if let Some(urls) = &a.rabbitmq_cluster_url {
        builds.push(builds[0].on_rabbitmq_cluster(urls));
    }
    let t = Throughput {
        connect: a.connect.clone(),
        builds,
        fan_outs: a.fan_outs.clone(),
        reps: a.reps.unwrap_or(3).max(1),
        burst_shards: a.burst_shards.max(1),
        sequential: a.sequential.max(1),
        words_per_shard: a.words_per_shard.max(1),
        workers: a.workers.max(1),
        adaptive: true,
        log_dir: a.out.join("throughput-logs"),
        seed: a.seed,
    };
    let measured = throughput::run(&t).await?;
    let mut out = format!(
        "\n## Throughput ({} words per shard, {} workers at default concurrency, bursts of ~{} shards, {} sequential requests, {} rep(s))\n\n{}",
        t.words_per_shard,
        t.workers,
        t.burst_shards,
        t.sequential,
        t.reps,
        throughput::table::markdown(&measured)
    );
    if let Some(urls) = &a.rabbitmq_cluster_url {
        out.push_str(&engine_queue_churn(&a.connect.amqp_url, urls).await?);
    }
    Ok(out)
}

/// Engine queues declared, bound and deleted one after another, classic and quorum, on the
/// suite's broker and on the cluster at `cluster_urls`.
async fn engine_queue_churn(one_node: &str, cluster_urls: &str) -> anyhow::Result<String> {
    use shardline::amqp::QueueType;
    const RUNS: usize = 50;
    let mut rows = Vec::new();
    for (broker, url) in [("one node", one_node), ("3-node cluster", cluster_urls)] {
        for queue_type in [QueueType::Classic, QueueType::Quorum] {
            let churn = throughput::churn::measure(broker, url, queue_type, RUNS).await?;
            eprintln!("engine queue churn: {broker}, {queue_type} done");
            rows.push(churn);
        }
    }
    Ok(format!(
        "\n### Engine queues coming and going ({RUNS} each, one after another)\n\n{}",
        throughput::churn::markdown(&rows)
    ))
}
