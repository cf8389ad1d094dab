//! `shardline-soak`: mixed load on real manager and worker processes with random kills and
//! restarts, then a ledger check that every request got exactly one terminal result.
//!
//! Prints a Markdown report and writes it to `--out`; exits 0 only when no result was lost,
//! none duplicated and no output wrong. See [`shardline_bench::soak`].

use anyhow::Context;
use clap::Parser;
use shardline_bench::soak::{self, Config};

#[tokio::main]
async fn main() -> anyhow::Result<std::process::ExitCode> {
    // lapin logs a closed channel as an error; the end-of-run probes of queues that the
    // managers already deleted close theirs on purpose.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,lapin::channel=off"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let cfg = Config::parse();
    let outcome = soak::run(&cfg).await?;
    println!("{}", outcome.markdown);
    if let Some(dir) = outcome.out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(&outcome.out, &outcome.markdown)
        .with_context(|| format!("writing {}", outcome.out.display()))?;
    eprintln!(
        "soak: {} requests, {} lost, {} duplicated ({} re-driven copies deduplicated), {} wrong: \
         {}; report {}, logs {}",
        outcome.submitted,
        outcome.lost,
        outcome.duplicates,
        outcome.redriven,
        outcome.wrong,
        if outcome.passed() { "PASS" } else { "FAIL" },
        outcome.out.display(),
        outcome.log_dir.display()
    );
    Ok(if outcome.passed() {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    })
}
