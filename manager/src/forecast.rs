//! Forecasts of each engine queue's hidden load, with `augurs`.
//!
//! A few times a second, off the async runtime, each engine's hidden-load series (from
//! [`crate::depth`]: ready messages beyond what the ledger explains) is fitted and forecast a
//! few seconds ahead:
//! - non-seasonal AutoETS by default;
//! - MSTL (seasonal decomposition with an AutoETS trend) when a period is configured, or when
//!   the periodogram finds one, and the series holds at least two periods of it.
//!
//! Guards: fewer than [`MIN_POINTS`] points, any NaN, or a fit error mean "no forecast", and
//! the predictive policy then falls back to the ledger. Forecasts are clamped at 0 and expire
//! after [`STALE_AFTER`].

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use augurs::ets::AutoETS;
use augurs::mstl::MSTLModel;
use augurs::prelude::*;
use augurs::seasons::{Detector, PeriodogramDetector};
use tokio_util::sync::CancellationToken;
use tracing::{debug, trace};

use crate::depth::Depths;

/// Fewer points than this: no forecast.
pub const MIN_POINTS: usize = 10;
/// A forecast older than this is not used.
pub const STALE_AFTER: Duration = Duration::from_secs(2);
/// How often (in fitting rounds) the periodogram looks for a period when none is configured.
const DETECT_EVERY: u32 = 20;

/// One engine's forecast: `points[i]` is the hidden load expected `i + 1` sample periods after
/// `at`.
#[derive(Debug, Clone, PartialEq)]
pub struct Forecast {
    /// Point forecasts, clamped at 0.
    pub points: Vec<f64>,
    /// When the series it was fitted on ended.
    pub at: Instant,
    /// Model used, for logs: `ets` or `mstl`.
    pub model: &'static str,
}

/// Latest forecast per engine.
#[derive(Debug, Default)]
pub struct Forecasts {
    inner: RwLock<HashMap<String, Forecast>>,
}

impl Forecasts {
    /// The hidden load (ready messages) expected on `engine` after `ahead`, if a fresh
    /// forecast exists.
    pub fn hidden_in(&self, engine: &str, ahead: Duration, step: Duration) -> Option<f64> {
        let g = self
            .inner
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let f = g.get(engine)?;
        if f.at.elapsed() > STALE_AFTER || f.points.is_empty() {
            return None;
        }
        let steps = ((f.at.elapsed() + ahead).as_secs_f64() / step.as_secs_f64().max(1e-3)).ceil();
        let i = (steps as usize).clamp(1, f.points.len()) - 1;
        Some(f.points[i])
    }

    /// The hidden load expected on `engine` one sample period after its latest sample, if a
    /// fresh forecast exists.
    pub fn next(&self, engine: &str) -> Option<f64> {
        let g = self
            .inner
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let f = g.get(engine)?;
        (f.at.elapsed() <= STALE_AFTER)
            .then(|| f.points.first().copied())
            .flatten()
    }

    fn replace(&self, all: HashMap<String, Forecast>) {
        *self
            .inner
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = all;
    }
}

/// Point forecast of `horizon` steps for `series`, with the model's name; `None` when the
/// series is too short, holds a non-finite value, or no model fits.
pub fn forecast(
    series: &[f64],
    period: Option<usize>,
    horizon: usize,
) -> Option<(Vec<f64>, &'static str)> {
    if series.len() < MIN_POINTS || horizon == 0 || series.iter().any(|v| !v.is_finite()) {
        return None;
    }
    let (points, model) = match period.filter(|&p| p >= 2 && series.len() >= 2 * p) {
        Some(p) => {
            let mstl = MSTLModel::new(vec![p], AutoETS::non_seasonal().into_trend_model());
            let fc = mstl.fit(series).ok()?.predict(horizon, None).ok()?;
            (fc.point, "mstl")
        }
        None => {
            let fc = AutoETS::non_seasonal()
                .fit(series)
                .ok()?
                .predict(horizon, None)
                .ok()?;
            (fc.point, "ets")
        }
    };
    if points.iter().any(|v| !v.is_finite()) {
        return None;
    }
    Some((points.into_iter().map(|v| v.max(0.0)).collect(), model))
}

/// The strongest period the periodogram finds in `series`, if the series holds two of it.
pub fn detect_period(series: &[f64]) -> Option<usize> {
    if series.len() < 4 * MIN_POINTS || series.iter().any(|v| !v.is_finite()) {
        return None;
    }
    let spread = series.iter().fold(0.0f64, |m, v| m.max(*v))
        - series.iter().fold(f64::MAX, |m, v| m.min(*v));
    if spread < 1.0 {
        return None;
    }
    PeriodogramDetector::builder()
        .min_period(4)
        .build()
        .detect(series)
        .into_iter()
        .map(|p| p as usize)
        .find(|&p| series.len() >= 2 * p)
}

/// Settings of the forecasting loop.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Time between fits.
    pub every: Duration,
    /// Steps forecast ahead.
    pub horizon: usize,
    /// Seasonal period in samples; `None` detects one.
    pub period: Option<usize>,
}

/// Fit and forecast every engine's series every `settings.every` until cancelled.
pub async fn run(
    depths: Arc<Depths>,
    forecasts: Arc<Forecasts>,
    settings: Settings,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(settings.every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut detected: HashMap<String, Option<usize>> = HashMap::new();
    let mut round = 0u32;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let series = depths.series();
        let detect = settings.period.is_none() && round.is_multiple_of(DETECT_EVERY);
        round = round.wrapping_add(1);
        let known = detected.clone();
        let work = tokio::task::spawn_blocking(move || {
            let started = Instant::now();
            let mut out = HashMap::new();
            let mut periods = HashMap::new();
            for (engine, s) in series {
                let period = match settings.period {
                    Some(p) => Some(p),
                    None if detect => detect_period(&s),
                    None => known.get(&engine).copied().flatten(),
                };
                periods.insert(engine.clone(), period);
                if let Some((points, model)) = forecast(&s, period, settings.horizon) {
                    trace!(%engine, model, next = points[0], "forecast");
                    out.insert(
                        engine,
                        Forecast {
                            points,
                            at: Instant::now(),
                            model,
                        },
                    );
                }
            }
            (out, periods, started.elapsed())
        });
        match work.await {
            Ok((out, periods, took)) => {
                trace!(engines = out.len(), ?took, "forecast round");
                forecasts.replace(out);
                detected = periods;
            }
            Err(error) => debug!(%error, "a forecast round panicked; skipping it"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Too few points or a NaN give no forecast instead of an error or a NaN.
    #[test]
    fn guards_short_and_non_finite_series() {
        assert!(forecast(&[1.0; 5], None, 4).is_none());
        let mut s = vec![3.0; 30];
        s[7] = f64::NAN;
        assert!(forecast(&s, None, 4).is_none());
        assert!(forecast(&[0.0; 30], None, 0).is_none());
    }

    /// A flat idle queue forecasts zero; a draining queue whose trend runs below zero is
    /// forecast at zero, not below.
    #[test]
    fn forecasts_are_clamped_at_zero() {
        let (p, model) = forecast(&[0.0; 40], None, 4).expect("fits");
        assert_eq!(model, "ets");
        assert!(p.iter().all(|v| *v == 0.0), "{p:?}");
        // Falling by 2 a step to 2: the trend goes below zero within the horizon.
        let s: Vec<f64> = (0..40).map(|i| 80.0 - 2.0 * f64::from(i)).collect();
        let raw = AutoETS::non_seasonal()
            .fit(&s)
            .expect("fits")
            .predict(8, None)
            .expect("predicts")
            .point;
        assert!(raw.iter().any(|v| *v < 0.0), "unclamped {raw:?}");
        let (p, _) = forecast(&s, None, 8).expect("fits");
        assert!(p.iter().all(|v| *v >= 0.0), "{p:?}");
        for (clamped, raw) in p.iter().zip(&raw) {
            assert_eq!(*clamped, raw.max(0.0), "{p:?} from {raw:?}");
        }
    }

    /// A square wave's period is found, and MSTL then predicts the next rise.
    #[test]
    fn seasonal_series_uses_its_period() {
        let s: Vec<f64> = (0..160)
            .map(|i| if i % 20 < 10 { 30.0 } else { 0.0 })
            .collect();
        let p = detect_period(&s).expect("a period");
        assert!((19..=21).contains(&p), "period {p}");
        let (points, model) = forecast(&s, Some(20), 20).expect("fits");
        assert_eq!(model, "mstl");
        // The series ends at the end of a low half: the next ten points should be high.
        assert!(points[4] > 15.0 && points[15] < 15.0, "{points:?}");
    }
}
