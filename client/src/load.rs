//! `shardline load`: send many generated requests at once, check every answer against the
//! unsharded computation, and report throughput and how shards spread over engines.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng, rngs::StdRng};
use shardline::Registry;
use shardline::message::{Options, Status, to_named_value};

use crate::{Client, Error};

/// What a load run measured.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Requests sent.
    pub requests: usize,
    /// Requests whose result was completed and equal to the unsharded answer.
    pub correct: usize,
    /// Shards over all requests.
    pub shards: u64,
    /// Wall time from the first send to the last result.
    pub elapsed: Duration,
    /// Shards routed to each engine.
    pub spread: BTreeMap<String, u64>,
}

impl Report {
    /// Requests per second.
    pub fn requests_per_sec(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Shards per second.
    pub fn shards_per_sec(&self) -> f64 {
        self.shards as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// A random payload of about `size` units for a built-in kind.
///
/// # Errors
/// [`Error::Input`] for kinds this generator does not know.
pub fn generate(kind: &str, size: usize, rng: &mut StdRng) -> Result<rmpv::Value, Error> {
    Ok(match kind {
        "sort" => rmpv::Value::Array((0..size).map(|_| rng.random::<i32>().into()).collect()),
        "wordcount" => (0..size)
            .map(|_| format!("w{} ", rng.random_range(0..size.max(2) / 2)))
            .collect::<String>()
            .into(),
        "checksum" => rmpv::Value::Binary((0..size).map(|_| rng.random()).collect()),
        "synthetic" => to_named_value(&shardline::kind::synthetic::Work {
            units: size as u64,
            unit_cost_us: 1_000,
            spin: false,
            noise_seed: None,
            partition: None,
        })
        .map_err(|e| Error::Input(e.to_string()))?,
        other => return Err(Error::Input(format!("no generator for kind {other:?}"))),
    })
}

/// The answer computed in this process without sharding.
fn reference(registry: &Registry, kind: &str, payload: rmpv::Value) -> Option<rmpv::Value> {
    let k = registry.get(kind)?;
    let shards = k.split(payload, &mut |_, _| 1).ok()?;
    let parts = shards
        .iter()
        .map(|s| k.process(s, &shardline::kind::Stop::new()))
        .collect::<Result<_, _>>()
        .ok()?;
    k.merge(parts).ok()
}

/// Send `requests` requests of `kind` (each about `size` units) at once and wait for all.
///
/// # Errors
/// Broker or Redis failures, or a result that does not arrive within `timeout`.
pub async fn run(
    client: &Client,
    kind: &str,
    requests: usize,
    size: usize,
    seed: u64,
    timeout: Duration,
) -> Result<Report, Error> {
    let mut rng = StdRng::seed_from_u64(seed);
    let registry = Registry::builtin();
    let payloads = (0..requests)
        .map(|_| generate(kind, size, &mut rng))
        .collect::<Result<Vec<_>, _>>()?;
    let started = Instant::now();
    let mut pending = Vec::with_capacity(requests);
    for p in &payloads {
        pending.push(client.send(kind, p.clone(), Options::default()).await?);
    }
    let results = futures::future::join_all(
        pending
            .into_iter()
            .map(|(id, rx)| client.wait(id, rx, timeout)),
    )
    .await;
    let elapsed = started.elapsed();
    let mut report = Report {
        requests,
        elapsed,
        ..Report::default()
    };
    for (result, payload) in results.into_iter().zip(payloads) {
        let result = result?;
        report.shards += u64::from(result.shards);
        if result.status == Status::Completed
            && result.output == reference(&registry, kind, payload)
        {
            report.correct += 1;
        }
        for engine in client.routes(result.request_id).await?.into_values() {
            *report.spread.entry(engine).or_default() += 1;
        }
    }
    Ok(report)
}
