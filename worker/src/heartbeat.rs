//! Engine registration: a heartbeat key with a TTL and the adverts of the kinds the worker
//! serves, refreshed until the worker stops.

use std::time::Duration;

use shardline::kind::Advert;
use shardline::store::Store;
use tokio_util::sync::CancellationToken;
use tracing::warn;

/// The heartbeat key lives this many periods, so one missed beat does not drop the engine.
pub const TTL_PERIODS: u32 = 3;

/// Beat every `period` until `stop` is cancelled. The first beat has already been sent by the
/// caller, so a failure to register at start is reported there.
pub async fn keep_alive(
    store: Store,
    engine: String,
    info: String,
    kinds: Vec<(String, Advert)>,
    period: Duration,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(period);
    tick.tick().await;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {
                if let Err(error) = store.heartbeat(&engine, &info, &kinds, period * TTL_PERIODS).await {
                    warn!(%error, "heartbeat failed");
                }
            }
        }
    }
}
