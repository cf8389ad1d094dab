//! The scaling signal's shape, shared by the manager that computes it and the dashboard that
//! adds up every manager's: how many worker replicas the next minutes need.
//!
//! A manager computes `need`, the work to cover in shard-seconds per second (forecast arrivals
//! plus its backlog spread over the horizon, times the headroom), and divides it by one
//! replica's capacity. Each manager sees only the requests it consumes, so the deployment's
//! signal divides the sum of the managers' needs by one replica's capacity ([`combine`]).

use serde::{Deserialize, Serialize};

/// One manager's signal, or several managers' combined; served as `{"shardline": …}` JSON.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Signal {
    /// Worker replicas wanted.
    pub desired_replicas: u32,
    /// Work to cover, shard-seconds per second: headroom × (arrivals ahead + backlog / horizon).
    #[serde(default)]
    pub need: f64,
    /// Work arriving now: shard-seconds per second, mean of the last few seconds.
    pub arriving: f64,
    /// Forecast work arriving at the horizon (shard-seconds per second), when a model fits.
    pub forecast: Option<f64>,
    /// Unfinished work sent to engines, shard-seconds.
    pub backlog: f64,
    /// Shard-seconds per second one replica does (mean over live engines; 0 with none).
    pub capacity_per_replica: f64,
    /// Live engines now.
    pub replicas: usize,
    /// The horizon, seconds.
    pub horizon_s: f64,
}

/// Work to cover: `arriving` shard-seconds per second plus `backlog` shard-seconds drained
/// within `horizon_s`, with `headroom` (≥ 1). Negative or non-finite inputs count as 0.
pub fn need(arriving: f64, backlog: f64, horizon_s: f64, headroom: f64) -> f64 {
    let finite = |v: f64| if v.is_finite() { v.max(0.0) } else { 0.0 };
    headroom * (finite(arriving) + finite(backlog) / horizon_s.max(1.0))
}

/// Replicas for `need` shard-seconds per second at `capacity` each (a capacity that is not
/// positive counts as one slot at speed 1), rounded up.
pub fn replicas_for(need: f64, capacity: f64) -> u32 {
    let capacity = if capacity > 0.0 { capacity } else { 1.0 };
    let replicas = (need / capacity).ceil();
    if replicas.is_finite() {
        replicas.clamp(0.0, f64::from(u32::MAX)) as u32
    } else {
        0
    }
}

/// The deployment's signal from each manager's: needs, arrivals, forecasts and backlogs add up
/// (each manager counts its own requests); capacity is the mean of the managers that measured
/// one (they see the same engines), and replicas and horizon the largest reported.
pub fn combine(signals: &[Signal]) -> Signal {
    let measured: Vec<f64> = signals
        .iter()
        .map(|s| s.capacity_per_replica)
        .filter(|c| *c > 0.0 && c.is_finite())
        .collect();
    let capacity = if measured.is_empty() {
        0.0
    } else {
        measured.iter().sum::<f64>() / measured.len() as f64
    };
    let need: f64 = signals.iter().map(|s| s.need).sum();
    let forecasts: Vec<f64> = signals.iter().filter_map(|s| s.forecast).collect();
    Signal {
        desired_replicas: replicas_for(need, capacity),
        need,
        arriving: signals.iter().map(|s| s.arriving).sum(),
        forecast: (!forecasts.is_empty()).then(|| forecasts.iter().sum()),
        backlog: signals.iter().map(|s| s.backlog).sum(),
        capacity_per_replica: capacity,
        replicas: signals.iter().map(|s| s.replicas).max().unwrap_or(0),
        horizon_s: signals.iter().map(|s| s.horizon_s).fold(0.0, f64::max),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Work per second over one replica's capacity, with headroom, rounded up; the backlog is
    /// spread over the horizon.
    #[test]
    fn replicas_cover_arrivals_and_backlog() {
        let desired = |a, b, h, c, r| replicas_for(need(a, b, h, r), c);
        assert_eq!(desired(0.0, 0.0, 60.0, 4.0, 1.25), 0);
        assert_eq!(desired(8.0, 0.0, 60.0, 4.0, 1.0), 2);
        assert_eq!(desired(8.0, 0.0, 60.0, 4.0, 1.25), 3);
        assert_eq!(desired(8.0, 240.0, 60.0, 4.0, 1.0), 3);
        assert_eq!(desired(-1.0, f64::NAN, 60.0, 4.0, 1.0), 0);
        assert_eq!(desired(1.5, 0.0, 60.0, 0.0, 1.0), 2);
    }

    /// Two managers' needs add up before rounding: 1.2 + 1.2 at capacity 1 asks for 3
    /// replicas, where adding each manager's rounded count would ask for 4; a manager that has
    /// not measured a replica does not drag the capacity down.
    #[test]
    fn combined_needs_add_up_before_rounding() {
        let one = |need: f64, capacity: f64| Signal {
            desired_replicas: replicas_for(need, capacity),
            need,
            arriving: need,
            forecast: Some(need),
            backlog: 1.0,
            capacity_per_replica: capacity,
            replicas: 3,
            horizon_s: 60.0,
        };
        let both = combine(&[one(1.2, 1.0), one(1.2, 1.0)]);
        assert_eq!(both.desired_replicas, 3);
        assert_eq!(one(1.2, 1.0).desired_replicas * 2, 4);
        assert!((both.need - 2.4).abs() < 1e-9);
        assert_eq!(both.backlog, 2.0);
        assert_eq!(both.forecast, Some(2.4));
        assert_eq!(both.replicas, 3);
        let unmeasured = combine(&[one(1.2, 0.0), one(0.6, 2.0)]);
        assert_eq!(unmeasured.capacity_per_replica, 2.0);
        assert_eq!(unmeasured.desired_replicas, 1);
        assert_eq!(combine(&[]), Signal::default());
    }
}
