//! The scaling signal: how many worker replicas the next minutes need, for an autoscaler
//! (KEDA's metrics-api or Prometheus scaler, or a person).
//!
//! The manager keeps a per-second series of the work it accepts: each request's expected
//! shard-seconds at speed 1, from the learned cost of its kind. Every few seconds it forecasts
//! that series `horizon` ahead with augurs ([`crate::forecast::forecast`]: AutoETS, or MSTL
//! when the periodogram finds a period), where the horizon is the time a replica takes to start:
//! work arriving then is what a replica started now can take. Then
//!
//! ```text
//! arriving = max(forecast at the horizon, mean of the last RECENT seconds)
//! desired  = ceil(headroom × (arriving + backlog / horizon) / capacity of one replica)
//! ```
//!
//! where the backlog is the work this manager sent that has not finished (its ledger), to be
//! drained within the horizon, and one replica's capacity is the mean over live engines of
//! slots × learned speed (shard-seconds per second). The recent mean is a floor: the signal
//! never asks for less than what arrives now (the autoscaler's own scale-down window smooths
//! the way down).
//!
//! Each manager sees the requests it consumes, so with several managers the deployment's
//! signal adds up their needs before dividing by a replica's capacity
//! ([`shardline::scaling::combine`]). Every manager records its signal in Redis each step, and
//! the dashboard serves the combined one at its own `/api/scale`; from Prometheus,
//! `sum(shardline_desired_replicas)` is the same up to one replica per manager (each rounds up).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use axum::http::header::CONTENT_TYPE;
use axum::routing::get;
use shardline::exporter::Router;
use shardline::metric;
pub use shardline::scaling::Signal;
use shardline::scaling::{need, replicas_for};
use shardline::store::Store;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use crate::engines::Engines;
use crate::forecast;
use crate::gauges::REPORT_TTL;
use crate::history::History;
use crate::ledger::Ledger;

/// Length of one point of the arrival series.
pub const STEP: Duration = Duration::from_secs(1);
/// Points kept (ten minutes).
pub const WINDOW: usize = 600;
/// Seconds averaged for the recent arrival rate.
pub const RECENT: usize = 10;
/// Points between two forecast fits.
pub const REFIT_EVERY: u32 = 5;
/// Points between two period detections.
const DETECT_EVERY: u32 = 60;

/// Work accepted per [`STEP`], in shard-seconds at speed 1.
#[derive(Debug, Default)]
pub struct Demand {
    inner: Mutex<Series>,
}

#[derive(Debug, Default)]
struct Series {
    /// Work accepted since the last roll.
    current: f64,
    /// Finished points, oldest first.
    points: VecDeque<f64>,
}

impl Demand {
    /// A request was accepted with `shard_seconds` of expected work.
    pub fn accepted(&self, shard_seconds: f64) {
        if shard_seconds.is_finite() && shard_seconds > 0.0 {
            self.lock().current += shard_seconds;
        }
    }

    /// Close the current point and return the series (shard-seconds per second).
    fn roll(&self) -> Vec<f64> {
        let mut g = self.lock();
        let point = std::mem::take(&mut g.current) / STEP.as_secs_f64();
        if g.points.len() == WINDOW {
            g.points.pop_front();
        }
        g.points.push_back(point);
        g.points.iter().copied().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Series> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// What outlives a manager's reconnects: the arrival series and the latest signal.
#[derive(Debug, Clone, Default)]
pub struct Scale {
    /// The arrival series, fed by the dispatcher.
    pub demand: Arc<Demand>,
    /// The latest signal.
    pub latest: Arc<RwLock<Signal>>,
}

impl Scale {
    /// `GET /api/scale`: the latest signal as JSON, in the shape KEDA's metrics-api scaler
    /// reads (`valueLocation: shardline.desired_replicas`).
    pub fn routes(&self) -> Router {
        let latest = self.latest.clone();
        Router::new().route(
            "/api/scale",
            get(move || {
                let signal = *latest
                    .read()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                async move {
                    let body = serde_json::json!({ "shardline": signal }).to_string();
                    ([(CONTENT_TYPE, "application/json")], body)
                }
            }),
        )
    }
}

/// Settings of the scaling signal.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Settings {
    /// How far ahead the arrivals are forecast: a replica's start-up time.
    pub horizon: Duration,
    /// Multiplier on the work, for spare capacity.
    pub headroom: f64,
    /// Whether the forecast is used (false: the recent rate alone, the ablation).
    pub forecast: bool,
}

/// Computes the signal every [`STEP`].
#[derive(Debug, Clone)]
pub struct Scaler {
    pub(crate) demand: Arc<Demand>,
    pub(crate) latest: Arc<RwLock<Signal>>,
    pub(crate) ledger: Arc<Ledger>,
    pub(crate) history: Arc<History>,
    pub(crate) engines: Engines,
    pub(crate) settings: Settings,
    /// Where the signal is recorded for the dashboard, under this manager's id.
    pub(crate) store: Store,
    pub(crate) manager: String,
}

impl Scaler {
    /// Roll the series, refit the forecast every [`REFIT_EVERY`] points (off the runtime),
    /// and publish the signal, until cancelled.
    pub async fn run(self, stop: CancellationToken) {
        let mut tick = tokio::time::interval(STEP);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut round = 0u32;
        let mut period = None;
        let mut forecast = None;
        let mut last_desired = None;
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            let series = self.demand.roll();
            if self.settings.forecast && round.is_multiple_of(REFIT_EVERY) {
                let detect = round.is_multiple_of(DETECT_EVERY);
                let horizon = self.horizon_steps();
                let known = period;
                let fit = tokio::task::spawn_blocking(move || {
                    let p = if detect {
                        forecast::detect_period(&series)
                    } else {
                        known
                    };
                    let at = forecast::forecast(&series, p, horizon)
                        .and_then(|p| p.points.last().copied());
                    (p, at)
                })
                .await;
                if let Ok((p, at)) = fit {
                    period = p;
                    forecast = at;
                }
            }
            round = round.wrapping_add(1);
            let signal = self.compute(forecast);
            self.publish(signal).await;
            if last_desired != Some(signal.desired_replicas) {
                info!(
                    desired = signal.desired_replicas,
                    arriving = signal.arriving,
                    forecast = ?signal.forecast,
                    backlog = signal.backlog,
                    capacity = signal.capacity_per_replica,
                    "desired replicas changed"
                );
                last_desired = Some(signal.desired_replicas);
            }
        }
    }

    fn horizon_steps(&self) -> usize {
        (self.settings.horizon.as_secs_f64() / STEP.as_secs_f64())
            .ceil()
            .max(1.0) as usize
    }

    /// The signal from the series so far and the latest forecast.
    fn compute(&self, forecast: Option<f64>) -> Signal {
        let arriving = {
            let g = self.demand.lock();
            let recent: Vec<f64> = g.points.iter().rev().take(RECENT).copied().collect();
            recent.iter().sum::<f64>() / recent.len().max(1) as f64
        };
        let engines = self.engines.snapshot();
        let ids: Vec<&str> = engines.iter().map(|e| e.id.as_str()).collect();
        let speeds = self.history.speeds(&ids);
        // With no engine to measure a replica by, 0: `desired` counts one slot at speed 1.
        let capacity = if engines.is_empty() {
            0.0
        } else {
            engines
                .iter()
                .zip(&speeds)
                .map(|(e, s)| f64::from(e.slots) * s)
                .sum::<f64>()
                / engines.len() as f64
        };
        // Shards waiting on the shared queues are backlog too (late binding sends every shard
        // of a fleet of alike engines there).
        let backlog = engines
            .iter()
            .map(|e| self.ledger.load(&e.id).work_us)
            .chain([self.ledger.load(crate::ledger::SHARED).work_us])
            .sum::<f64>()
            / 1e6;
        let horizon_s = self.settings.horizon.as_secs_f64();
        let ahead = forecast.map_or(arriving, |f| f.max(arriving));
        let need = need(ahead, backlog, horizon_s, self.settings.headroom);
        Signal {
            desired_replicas: replicas_for(need, capacity),
            need,
            arriving,
            forecast,
            backlog,
            capacity_per_replica: capacity,
            replicas: engines.len(),
            horizon_s,
        }
    }

    /// Set the gauges and the endpoint's answer, and record the signal in Redis (a failure is
    /// logged: the next step records it again).
    async fn publish(&self, signal: Signal) {
        debug!(?signal, "scaling signal");
        metric::scaling(
            signal.desired_replicas,
            signal.arriving,
            signal.forecast,
            signal.capacity_per_replica,
        );
        *self
            .latest
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = signal;
        if let Err(error) = self
            .store
            .report_scale(&self.manager, &signal, REPORT_TTL)
            .await
        {
            debug!(%error, "recording the scaling signal failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The series holds one point per roll, in work per second, at most [`WINDOW`] of them.
    #[test]
    fn demand_rolls_into_a_bounded_series() {
        let d = Demand::default();
        d.accepted(1.5);
        d.accepted(0.5);
        d.accepted(f64::NAN);
        assert_eq!(d.roll(), vec![2.0]);
        assert_eq!(d.roll(), vec![2.0, 0.0]);
        for _ in 0..WINDOW {
            d.roll();
        }
        assert_eq!(d.roll().len(), WINDOW);
    }
}
