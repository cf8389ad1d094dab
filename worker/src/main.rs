//! `shardline-worker`: parse configuration, install logging, run until SIGINT/SIGTERM.

use clap::Parser;
use shardline::Registry;
use shardline::kind::synthetic::{Speed, Synthetic};
use shardline_worker::{Config, run};

/// mimalloc: a worker allocates many small, short-lived buffers per shard (frames, decoded
/// shards and partials), where it costs about half of what the system allocator does. The
/// manager keeps the system allocator: mimalloc raises its one-shard request p99 from 6.3 to
/// 9.3 ms (`docs/bench/2026-12-01-throughput.md`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    shardline::telemetry::init();
    let config = Config::parse();
    let speed = Speed::new(config.synthetic_speed);
    let registry = Registry::builtin().with(Synthetic::with_speed(speed));
    let outcome = run(config, registry, shardline::signal::shutdown()).await;
    shardline::service::exit_code("shardline-worker", outcome)
}
