//! `shardline-worker`: parse configuration, install logging, run until SIGINT/SIGTERM.

use clap::Parser;
use shardline::Registry;
use shardline::kind::synthetic::{Speed, Synthetic};
use shardline_worker::{Config, run};

/// mimalloc: the worker and manager allocate many small, short-lived buffers per message
/// (frames, keys, decoded shards), where it costs about half of what the system allocator
/// does (see `docs/bench/` for the throughput record).
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
