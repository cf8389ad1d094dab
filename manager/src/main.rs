//! `shardline-manager`: parse configuration, install logging, run until SIGINT/SIGTERM.

use clap::Parser;
use shardline::Registry;
use shardline_manager::{Config, run};

/// mimalloc: the worker and manager allocate many small, short-lived buffers per message
/// (frames, keys, decoded shards), where it costs about half of what the system allocator
/// does (see `docs/bench/` for the throughput record).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    shardline::telemetry::init();
    let config = Config::parse();
    let outcome = run(config, Registry::builtin(), shardline::signal::shutdown()).await;
    shardline::service::exit_code("shardline-manager", outcome)
}
