//! What the manager reports about engines every [`EVERY`]: what it knows of each live engine
//! (slots, unfinished shards, sampled depth, forecast with its interval, learned speed,
//! heartbeat age) and of its hold, as gauges for the metrics endpoint and, for the dashboard,
//! in Redis: the readings now, and every [`SERIES_STEP`] a point of the engine series the
//! dashboard charts (kept for an hour, [`shardline::store::SERIES_KEEP`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use shardline::metric::{self, EngineReading};
use shardline::now_ms;
use shardline::store::{EnginePoint, SERIES_STEP};
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
    let series_every = (SERIES_STEP.as_millis() / EVERY.as_millis()).max(1);
    let mut round = 0u128;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {
                let series = round.is_multiple_of(series_every);
                round = round.wrapping_add(1);
                if let Err(error) = set(&dispatcher, series).await {
                    debug!(%error, "reporting the engines failed");
                }
            }
        }
    }
}

/// Report once, and add a point to the engine series when `series`.
///
/// # Errors
/// Redis failures.
pub async fn set(d: &Dispatcher, series: bool) -> Result<(), shardline::Error> {
    let beats: HashMap<String, u64> = d.store.engine_beats().await?.into_iter().collect();
    let engines = d.engines.snapshot();
    let ids: Vec<&str> = engines.iter().map(|e| e.id.as_str()).collect();
    let speeds = d.predictor.history.speeds(&ids);
    let now = now_ms();
    let readings: Vec<EngineReading<'_>> = engines
        .iter()
        .zip(speeds)
        .map(|(e, speed)| {
            let next = d.predictor.forecasts.next(&e.id);
            EngineReading {
                id: &e.id,
                slots: e.slots,
                unfinished: d.predictor.ledger.in_flight(&e.id),
                depth: d.predictor.depths.latest(&e.id).map(|s| s.ready),
                forecast_hidden: next.map(|n| n.point),
                forecast_lower: next.map(|n| n.lower),
                forecast_upper: next.map(|n| n.upper),
                speed,
                locality_keys: e.holds.len(),
                heartbeat_age: beats
                    .get(&e.id)
                    .map(|&at| now.saturating_sub(at) as f64 / 1_000.0),
            }
        })
        .collect();
    metric::engines(&readings);
    metric::held_shards(d.held());
    metric::shared_unfinished(d.predictor.ledger.in_flight(crate::ledger::SHARED));
    let documents: Vec<(String, String)> = readings
        .iter()
        .filter_map(|r| Some((r.id.to_owned(), serde_json::to_string(r).ok()?)))
        .collect();
    d.store
        .report_engines(&d.id, &documents, REPORT_TTL)
        .await?;
    if series && !readings.is_empty() {
        let points: Vec<(&str, EnginePoint)> = readings.iter().map(|r| (r.id, point(r))).collect();
        d.store.append_engine_series(&d.id, &points).await?;
    }
    Ok(())
}

/// A reading as a point of the engine series.
fn point(r: &EngineReading<'_>) -> EnginePoint {
    EnginePoint {
        depth: r.depth,
        unfinished: r.unfinished as u64,
        forecast: r.forecast_hidden,
        lower: r.forecast_lower,
        upper: r.forecast_upper,
    }
}
