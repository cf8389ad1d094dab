//! How fast requests and shards leave this manager: time-decayed rates, per kind and in all.
//!
//! The shard-count model reads them to predict the shard rate if this kind's requests were
//! cut into a different number of shards ([`crate::plan::Traffic`]).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::plan::Traffic;

/// Time constant of the rates.
pub const WINDOW: Duration = Duration::from_secs(2);

/// Events per second, decayed exponentially with time constant [`WINDOW`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Rate {
    /// Decayed count, in events per `WINDOW`.
    level: f64,
    at: Option<Instant>,
    first: Option<Instant>,
}

impl Rate {
    fn decayed(&self, now: Instant) -> f64 {
        let dt = self
            .at
            .map_or(0.0, |t| now.saturating_duration_since(t).as_secs_f64());
        self.level * (-dt / WINDOW.as_secs_f64()).exp()
    }

    /// Count `n` events at `now`.
    pub fn add(&mut self, n: f64, now: Instant) {
        self.level = self.decayed(now) + n;
        self.at = Some(now);
        self.first.get_or_insert(now);
    }

    /// Events per second at `now`. In the first moments the decayed count has not filled its
    /// window yet; dividing by the part of the window seen keeps a new stream from reading
    /// as a slow one (never by less than a tenth of it, so one event is not a flood).
    pub fn per_sec(&self, now: Instant) -> f64 {
        let tau = WINDOW.as_secs_f64();
        let seen = self
            .first
            .map_or(0.0, |t| now.saturating_duration_since(t).as_secs_f64());
        let filled = (1.0 - (-seen / tau).exp()).max(0.1);
        self.decayed(now) / tau / filled
    }
}

#[derive(Debug, Default)]
struct Rates {
    shards: Rate,
    kinds: HashMap<String, (Rate, Rate)>,
}

/// Request and shard rates of this manager.
#[derive(Debug, Default)]
pub struct Flow {
    inner: Mutex<Rates>,
}

impl Flow {
    fn lock(&self) -> std::sync::MutexGuard<'_, Rates> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A request of `kind` was cut into `shards` and sent.
    pub fn dispatched(&self, kind: &str, shards: u32) {
        let now = Instant::now();
        let n = f64::from(shards);
        let mut g = self.lock();
        g.shards.add(n, now);
        let (requests, kind_shards) = g.kinds.entry(kind.to_owned()).or_default();
        requests.add(1.0, now);
        kind_shards.add(n, now);
    }

    /// The rates seen by a new request of `kind`.
    pub fn traffic(&self, kind: &str) -> Traffic {
        let now = Instant::now();
        let g = self.lock();
        let (requests, shards) = g
            .kinds
            .get(kind)
            .map_or((0.0, 0.0), |(r, s)| (r.per_sec(now), s.per_sec(now)));
        Traffic {
            shard_rate: g.shards.per_sec(now),
            request_rate: requests,
            mean_shards: if requests > 0.0 {
                shards / requests
            } else {
                1.0
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A new stream reads at its rate from its first half-second.
    #[test]
    fn new_streams_read_at_their_rate() {
        let t0 = Instant::now();
        let mut r = Rate::default();
        for i in 0..50u32 {
            r.add(1.0, t0 + Duration::from_millis(10) * i);
        }
        let now = r.per_sec(t0 + Duration::from_millis(500));
        assert!((now - 100.0).abs() < 15.0, "{now}");
    }

    /// A steady stream reads at its rate; a stopped one decays away.
    #[test]
    fn rates_follow_the_stream() {
        let t0 = Instant::now();
        let mut r = Rate::default();
        for i in 0..2_000u32 {
            r.add(1.0, t0 + Duration::from_millis(10) * i);
        }
        let end = t0 + Duration::from_millis(10) * 2_000;
        let now = r.per_sec(end);
        assert!((now - 100.0).abs() < 5.0, "{now}");
        assert!(r.per_sec(end + WINDOW * 5) < 1.0);
    }

    /// Per-kind traffic carries the kind's request rate and mean shard count; the shard rate
    /// counts every kind.
    #[test]
    fn traffic_per_kind() {
        let f = Flow::default();
        for _ in 0..10 {
            f.dispatched("a", 8);
            f.dispatched("b", 2);
        }
        let a = f.traffic("a");
        assert!((a.mean_shards - 8.0).abs() < 0.01, "{a:?}");
        assert!(a.shard_rate > a.request_rate * 8.0, "{a:?}");
        let unknown = f.traffic("c");
        assert_eq!(unknown.request_rate, 0.0);
        assert_eq!(unknown.mean_shards, 1.0);
    }
}
