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

/// Level of the prediction intervals: 80%, the band a person reads as "likely".
pub const LEVEL: f64 = 0.8;

/// What a model predicts for a series: `points[i]` is the value expected `i + 1` steps after
/// its end, inside `[lower[i], upper[i]]` with probability [`LEVEL`]; all clamped at 0.
#[derive(Debug, Clone, PartialEq)]
pub struct Prediction {
    /// Point forecasts.
    pub points: Vec<f64>,
    /// Lower bounds of the intervals.
    pub lower: Vec<f64>,
    /// Upper bounds of the intervals.
    pub upper: Vec<f64>,
    /// Model used, for logs: `ets` or `mstl`.
    pub model: &'static str,
}

/// The forecast of one step: a point and its interval.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Step {
    /// Point forecast.
    pub point: f64,
    /// Lower bound of the [`LEVEL`] interval.
    pub lower: f64,
    /// Upper bound of the [`LEVEL`] interval.
    pub upper: f64,
}

/// One engine's forecast of its hidden load, fitted on the series that ended at `at`.
#[derive(Debug, Clone, PartialEq)]
pub struct Forecast {
    /// What the model predicts.
    pub prediction: Prediction,
    /// When the series it was fitted on ended.
    pub at: Instant,
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
        let points = &f.prediction.points;
        if f.at.elapsed() > STALE_AFTER || points.is_empty() {
            return None;
        }
        let steps = ((f.at.elapsed() + ahead).as_secs_f64() / step.as_secs_f64().max(1e-3)).ceil();
        let i = (steps as usize).clamp(1, points.len()) - 1;
        Some(points[i])
    }

    /// The hidden load expected on `engine` one sample period after its latest sample, with
    /// its interval, if a fresh forecast exists.
    pub fn next(&self, engine: &str) -> Option<Step> {
        let g = self
            .inner
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let f = g.get(engine)?;
        if f.at.elapsed() > STALE_AFTER {
            return None;
        }
        let p = &f.prediction;
        Some(Step {
            point: *p.points.first()?,
            lower: *p.lower.first()?,
            upper: *p.upper.first()?,
        })
    }

    fn replace(&self, all: HashMap<String, Forecast>) {
        *self
            .inner
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = all;
    }
}

/// Forecast of `horizon` steps for `series`, with [`LEVEL`] intervals; `None` when the series
/// is too short, holds a non-finite value, or no model fits. A model that gives no interval
/// gets the point as both bounds.
pub fn forecast(series: &[f64], period: Option<usize>, horizon: usize) -> Option<Prediction> {
    if series.len() < MIN_POINTS || horizon == 0 || series.iter().any(|v| !v.is_finite()) {
        return None;
    }
    let (fc, model) = match period.filter(|&p| p >= 2 && series.len() >= 2 * p) {
        Some(p) => {
            let mstl = MSTLModel::new(vec![p], AutoETS::non_seasonal().into_trend_model());
            (mstl.fit(series).ok()?.predict(horizon, LEVEL).ok()?, "mstl")
        }
        None => (
            AutoETS::non_seasonal()
                .fit(series)
                .ok()?
                .predict(horizon, LEVEL)
                .ok()?,
            "ets",
        ),
    };
    let points = fc.point;
    let (lower, upper) = match fc.intervals {
        Some(i) if i.lower.len() == points.len() && i.upper.len() == points.len() => {
            (i.lower, i.upper)
        }
        _ => (points.clone(), points.clone()),
    };
    let all = || points.iter().chain(&lower).chain(&upper);
    if all().any(|v| !v.is_finite()) {
        return None;
    }
    let clamp = |v: Vec<f64>| v.into_iter().map(|x| x.max(0.0)).collect();
    Some(Prediction {
        points: clamp(points),
        lower: clamp(lower),
        upper: clamp(upper),
        model,
    })
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
                if let Some(prediction) = forecast(&s, period, settings.horizon) {
                    trace!(%engine, model = prediction.model, next = prediction.points[0], "forecast");
                    out.insert(
                        engine,
                        Forecast {
                            prediction,
                            at: Instant::now(),
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
        let flat = forecast(&[0.0; 40], None, 4).expect("fits");
        assert_eq!(flat.model, "ets");
        assert!(flat.points.iter().all(|v| *v == 0.0), "{flat:?}");
        // Falling by 2 a step to 2: the trend goes below zero within the horizon.
        let s: Vec<f64> = (0..40).map(|i| 80.0 - 2.0 * f64::from(i)).collect();
        let raw = AutoETS::non_seasonal()
            .fit(&s)
            .expect("fits")
            .predict(8, None)
            .expect("predicts")
            .point;
        assert!(raw.iter().any(|v| *v < 0.0), "unclamped {raw:?}");
        let p = forecast(&s, None, 8).expect("fits").points;
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
        let Prediction { points, model, .. } = forecast(&s, Some(20), 20).expect("fits");
        assert_eq!(model, "mstl");
        // The series ends at the end of a low half: the next ten points should be high.
        assert!(points[4] > 15.0 && points[15] < 15.0, "{points:?}");
    }

    /// A noisy series gets an interval around each point that widens with the horizon; the
    /// bounds are clamped at 0 like the points.
    #[test]
    fn intervals_surround_the_points_and_widen() {
        let s: Vec<f64> = (0..60).map(|i| 5.0 + f64::from(i % 7) - 3.0).collect();
        let p = forecast(&s, None, 10).expect("fits");
        for i in 0..10 {
            assert!(
                p.lower[i] <= p.points[i] && p.points[i] <= p.upper[i],
                "{p:?}"
            );
            assert!(p.lower[i] >= 0.0, "{p:?}");
        }
        assert!(
            p.upper[0] - p.lower[0] > 0.5,
            "a noisy series has a real interval: {p:?}"
        );
        assert!(p.upper[9] - p.lower[9] >= p.upper[0] - p.lower[0], "{p:?}");
    }
}
