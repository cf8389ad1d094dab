//! What the manager reports about engines every [`EVERY`]: what it knows of each live engine
//! (slots, unfinished shards, sampled depth, forecast, learned speed, heartbeat age) and of its
//! hold, as gauges for the metrics endpoint and, for the dashboard, in Redis.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use shardline::metric::{self, EngineReading};
use shardline::now_ms;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::dispatch::Dispatcher;

/// Time between two reports.
pub const EVERY: Duration = Duration::from_secs(1);
/// How long one report stays in Redis.
pub const REPORT_TTL: Duration = Duration::from_secs(10);

/// Report every [`EVERY`] until cancelled; a failed round is logged and skipped.
pub async fn keep_set(dispatcher: Arc<Dispatcher>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(EVERY);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {
                if let Err(error) = set(&dispatcher).await {
                    debug!(%error, "reporting the engines failed");
                }
            }
        }
    }
}

/// Report once.
///
/// # Errors
/// Redis failures.
pub async fn set(d: &Dispatcher) -> Result<(), shardline::Error> {
    let beats: HashMap<String, u64> = d.store.engine_beats().await?.into_iter().collect();
    let engines = d.engines.snapshot();
    let ids: Vec<&str> = engines.iter().map(|e| e.id.as_str()).collect();
    let speeds = d.predictor.history.speeds(&ids);
    let now = now_ms();
    let readings: Vec<EngineReading<'_>> = engines
        .iter()
        .zip(speeds)
        .map(|(e, speed)| EngineReading {
            id: &e.id,
            slots: e.slots,
            unfinished: d.predictor.ledger.in_flight(&e.id),
            depth: d.predictor.depths.latest(&e.id).map(|s| s.ready),
            forecast_hidden: d.predictor.forecasts.next(&e.id),
            speed,
            heartbeat_age: beats
                .get(&e.id)
                .map(|&at| now.saturating_sub(at) as f64 / 1_000.0),
        })
        .collect();
    metric::engines(&readings);
    metric::held_shards(d.held());
    let documents: Vec<(String, String)> = readings
        .iter()
        .filter_map(|r| Some((r.id.to_owned(), serde_json::to_string(r).ok()?)))
        .collect();
    d.store.report_engines(&d.id, &documents, REPORT_TTL).await
}
