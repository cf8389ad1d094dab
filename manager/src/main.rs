//! `shardline-manager`: parse configuration, install logging, run until SIGINT/SIGTERM.

use clap::Parser;
use shardline::Registry;
use shardline_manager::{Config, run};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    shardline::telemetry::init();
    let config = Config::parse();
    let outcome = run(config, Registry::builtin(), shardline::signal::shutdown()).await;
    shardline::service::exit_code("shardline-manager", outcome)
}
