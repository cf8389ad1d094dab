//! `shardline-manager`: parse configuration, install logging, run until SIGINT/SIGTERM.

use clap::Parser;
use shardline::Registry;
use shardline_manager::{Config, Error, run};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    shardline::telemetry::init();
    let config = Config::parse();
    match run(config, Registry::builtin(), shardline::signal::shutdown()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(Error::Config(msg)) => {
            eprintln!("shardline-manager: invalid configuration: {msg}");
            std::process::ExitCode::from(64)
        }
        Err(e) => {
            eprintln!("shardline-manager: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
