//! `shardline-worker`: parse configuration, install logging, run until SIGINT/SIGTERM.

use clap::Parser;
use shardline::Registry;
use shardline_worker::{Config, Error, run};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    shardline::telemetry::init();
    let config = Config::parse();
    match run(config, Registry::builtin(), shardline::signal::shutdown()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(Error::Config(msg)) => {
            eprintln!("shardline-worker: invalid configuration: {msg}");
            std::process::ExitCode::from(64)
        }
        Err(e) => {
            eprintln!("shardline-worker: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
