//! What a shard of a command kind costs in each mode, measured side by side: a process per
//! shard (`spawn`) against a long-running child (`serve`), on the example kinds file's
//! `csv-sum` (Python) kinds, with `numsort` (`sort -n`, a process per shard) for reference.
//!
//! ```sh
//! cargo run --release -p shardline-worker --example command_modes -- --shards 40 --rounds 8
//! ```
//!
//! Each round runs every kind's shards one after another, in a rotating order; the table gives
//! the mean time per shard over the rounds with a 95% confidence interval, and the ratio of
//! each kind to `csv-sum-served` with the interval of the per-round ratios.

use std::path::Path;
use std::time::Instant;

use clap::Parser;
use shardline::kind::{DynKind, Stop};

#[derive(Parser)]
struct Args {
    /// Shards per kind per round.
    #[arg(long, default_value_t = 40)]
    shards: usize,
    /// Rounds.
    #[arg(long, default_value_t = 8)]
    rounds: usize,
}

/// Mean and the half-width of its 95% interval (normal approximation).
fn mean_ci(xs: &[f64]) -> (f64, f64) {
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n;
    let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
    (mean, 1.96 * (var / n).sqrt())
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/kinds/kinds.toml");
    let all = shardline_worker::kinds_file::load(&file)?;
    let names = ["csv-sum-served", "csv-sum", "numsort"];
    let kinds: Vec<_> = names
        .iter()
        .map(|n| all.iter().find(|k| k.name == *n).cloned())
        .collect::<Option<_>>()
        .ok_or_else(|| anyhow::anyhow!("the example kinds file lacks a kind"))?;
    let csv: String = (1..=50).map(|i| format!("{i},{}\n", i * 3)).collect();
    let numbers: String = (1..=50).map(|i| format!("{}\n", (i * 37) % 101)).collect();
    let shard = |text: &str| rmp_serde::to_vec(text).expect("encode");
    let inputs = [shard(&csv), shard(&csv), shard(&numbers)];
    // Warm up: start the served child, fill caches.
    for (k, input) in kinds.iter().zip(&inputs) {
        k.process(input, &Stop::new())?;
    }
    let mut per_shard_ms = vec![Vec::new(); kinds.len()];
    for round in 0..args.rounds {
        for j in 0..kinds.len() {
            let i = (round + j) % kinds.len();
            let started = Instant::now();
            for _ in 0..args.shards {
                kinds[i].process(&inputs[i], &Stop::new())?;
            }
            per_shard_ms[i].push(started.elapsed().as_secs_f64() * 1e3 / args.shards as f64);
        }
    }
    println!(
        "{} shards a kind a round, {} rounds; ms per shard (mean ± 95% CI), ratio to {}",
        args.shards, args.rounds, names[0]
    );
    println!("| kind | mode | ms per shard | ratio |\n|---|---|---:|---:|");
    for (i, k) in kinds.iter().enumerate() {
        let (m, ci) = mean_ci(&per_shard_ms[i]);
        let ratios: Vec<f64> = per_shard_ms[i]
            .iter()
            .zip(&per_shard_ms[0])
            .map(|(a, b)| a / b)
            .collect();
        let (r, rci) = mean_ci(&ratios);
        let mode = if k.server.is_some() { "serve" } else { "spawn" };
        println!(
            "| {} | {mode} | {m:.3} ± {ci:.3} | {r:.1} ± {rci:.1} |",
            k.name
        );
    }
    Ok(())
}
