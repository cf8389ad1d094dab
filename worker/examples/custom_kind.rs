//! A worker with a kind of your own: `histogram` buckets numbers by tens.
//!
//! The kind declares the generic `list` splitter, so a stock `shardline-manager` serves it as
//! soon as this worker registers: no manager rebuild.
//!
//! ```sh
//! cargo run -p shardline-worker --example custom_kind
//! ```

use std::collections::BTreeMap;

use clap::Parser;
use shardline::Registry;
use shardline::kind::{Kind, KindError, Splitter, even_chunks};

/// Counts numbers per bucket of ten: `{"0": 3, "10": 1, ...}`.
struct Histogram;

impl Kind for Histogram {
    type Input = Vec<i64>;
    type Shard = Vec<i64>;
    type Partial = BTreeMap<i64, u64>;
    type Output = BTreeMap<String, u64>;

    fn name(&self) -> &'static str {
        "histogram"
    }

    fn size(&self, input: &Vec<i64>) -> u64 {
        input.len() as u64
    }

    fn shard_size_hint(&self) -> u64 {
        10_000
    }

    // Cut like a list: a stock manager can then split `histogram` requests without this
    // code, as soon as this worker advertises the kind.
    fn splitter(&self) -> Splitter {
        Splitter::List
    }

    fn split(&self, input: Vec<i64>, n: usize) -> Vec<Vec<i64>> {
        even_chunks(&input, n)
            .into_iter()
            .map(<[i64]>::to_vec)
            .collect()
    }

    fn process(&self, shard: Vec<i64>) -> Result<BTreeMap<i64, u64>, KindError> {
        let mut buckets = BTreeMap::new();
        for x in shard {
            *buckets.entry(x.div_euclid(10) * 10).or_default() += 1;
        }
        Ok(buckets)
    }

    fn merge(&self, parts: Vec<BTreeMap<i64, u64>>) -> Result<BTreeMap<String, u64>, KindError> {
        let mut total: BTreeMap<i64, u64> = BTreeMap::new();
        for part in parts {
            for (bucket, n) in part {
                *total.entry(bucket).or_default() += n;
            }
        }
        Ok(total.into_iter().map(|(b, n)| (b.to_string(), n)).collect())
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    shardline::telemetry::init();
    let config = shardline_worker::Config::parse();
    let registry = Registry::builtin().with(Histogram);
    shardline_worker::run(config, registry, shardline::signal::shutdown()).await?;
    Ok(())
}
