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
/// Largest weight of one request in a kind's averages: a kind too rare to fill [`WINDOW`]
/// with requests is averaged over about `2 / MAX_WEIGHT` of them instead (a 2 s window of a
/// 5 per second kind holds 10, and read its rate 50% high in a measured burst).
pub const MAX_WEIGHT: f64 = 1.0 / 16.0;
/// Weight of one gap in a kind's recent mean gap, which lets a kind that speeds up read fast
/// at once ([`Arrivals::per_sec`]).
pub const RECENT_WEIGHT: f64 = 1.0 / 8.0;
/// How far below the mean gap the recent one must fall to be read instead: far enough that a
/// steady Poisson stream is seldom read fast (its recent mean has a spread of a quarter; at
/// 1.25, a 5 per second kind of large requests read fast often enough to cost it shards).
pub const PEAK: f64 = 1.5;

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

/// One kind's requests: the mean gap between them and their mean shard count, averaged over
/// [`WINDOW`] or, for a rare kind, over about 30 requests.
#[derive(Debug, Clone, Copy, Default)]
pub struct Arrivals {
    last: Option<Instant>,
    /// Mean gap, s (`None` until a second request).
    gap: Option<f64>,
    /// Mean of the last few gaps, s.
    recent: Option<f64>,
    shards: Option<f64>,
    /// Requests seen (saturating).
    seen: u32,
}

impl Arrivals {
    /// A request of `shards` at `now`.
    pub fn add(&mut self, shards: f64, now: Instant) {
        if let Some(last) = self.last {
            let gap = now.saturating_duration_since(last).as_secs_f64();
            let mean = self.gap.unwrap_or(gap);
            let w = self.weight(mean);
            self.gap = Some(mean + w * (gap - mean));
            let recent = self.recent.unwrap_or(gap);
            self.recent = Some(recent + RECENT_WEIGHT * (gap - recent));
            self.shards = self.shards.map(|m| m + w * (shards - m));
        } else {
            self.shards = Some(shards);
        }
        self.last = Some(now);
        self.seen = self.seen.saturating_add(1);
    }

    /// Requests per second at `now` (0 until two were seen). The time since the last request,
    /// if longer than the mean gap, counts as a gap ending now (a kind that stops slows down
    /// gradually, and a manager's own stall of a few gaps barely moves a busy kind); a new kind
    /// reads at most its count per fiftieth of [`WINDOW`] (a first pair is not a flood).
    ///
    /// A kind that speeds up reads fast within a few requests, not a [`WINDOW`]: when the mean
    /// of its last gaps falls below the mean gap by more than [`PEAK`], the rate is read from
    /// it. Reading a kind slow costs more than reading it fast: with the rate read from the
    /// mean alone, the first requests of a 250 per second burst are cut into 4 to 12 shards
    /// while the mean still reads the pace of the 6 requests before it (and a cap of a tenth
    /// of the window holds it under 200 per second for 40 requests), and the backlog they
    /// leave doubles the p50 (measured).
    pub fn per_sec(&self, now: Instant) -> f64 {
        let (Some(mean), Some(last)) = (self.gap, self.last) else {
            return 0.0;
        };
        let quiet = now.saturating_duration_since(last).as_secs_f64();
        let stretched = |gap: f64, w: f64| {
            if quiet > gap {
                gap + w * (quiet - gap)
            } else {
                gap
            }
        };
        let mut gap = stretched(mean, self.weight(mean));
        if let Some(recent) = self.recent {
            gap = gap.min(PEAK * stretched(recent, RECENT_WEIGHT));
        }
        let most = f64::from(self.seen) / (0.02 * WINDOW.as_secs_f64());
        if gap > 0.0 {
            (1.0 / gap).min(most)
        } else {
            most
        }
    }

    /// Weight of one gap in the averages, given the mean gap: a [`WINDOW`] of requests, at
    /// least the last `1 / MAX_WEIGHT`, and every one alike until that many were seen. The
    /// weight follows the mean gap, not each gap: weighting a gap by its own length would
    /// average the long ones in twice (and read a Poisson stream at half its rate).
    fn weight(&self, mean: f64) -> f64 {
        (mean / WINDOW.as_secs_f64())
            .min(MAX_WEIGHT)
            .max(1.0 / f64::from(self.seen.max(1)))
    }

    /// Mean shards per request lately (1 before any).
    pub fn mean_shards(&self) -> f64 {
        self.shards.unwrap_or(1.0)
    }
}

#[derive(Debug, Default)]
struct Rates {
    shards: Rate,
    kinds: HashMap<String, Arrivals>,
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
        if let Some(a) = g.kinds.get_mut(kind) {
            a.add(n, now);
        } else {
            g.kinds.entry(kind.to_owned()).or_default().add(n, now);
        }
    }

    /// The rates seen by a new request of `kind`.
    pub fn traffic(&self, kind: &str) -> Traffic {
        let now = Instant::now();
        let g = self.lock();
        let (request_rate, mean_shards) = g
            .kinds
            .get(kind)
            .map_or((0.0, 1.0), |a| (a.per_sec(now), a.mean_shards()));
        Traffic {
            shard_rate: g.shards.per_sec(now),
            request_rate,
            mean_shards,
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

    /// A rare kind's rate is averaged over enough requests to be steady, and a kind that
    /// stopped reads slower as it stays quiet, while a short stall does not.
    #[test]
    fn rare_kinds_average_over_requests() {
        let t0 = Instant::now();
        let mut a = Arrivals::default();
        assert_eq!(a.per_sec(t0), 0.0);
        // Five a second, alternating gaps of 100 and 300 ms: a 2 s window would swing by
        // about a third from one request to the next.
        let mut at = t0;
        let mut readings = Vec::new();
        for i in 0..200u32 {
            at += Duration::from_millis(if i % 2 == 0 { 100 } else { 300 });
            a.add(4.0, at);
            if i > 100 {
                readings.push(a.per_sec(at));
            }
        }
        let (lo, hi) = readings
            .iter()
            .fold((f64::MAX, 0.0f64), |(lo, hi), &r| (lo.min(r), hi.max(r)));
        assert!(lo > 4.5 && hi < 5.5, "{lo} {hi}");
        assert_eq!(a.mean_shards(), 4.0);
        assert!(a.per_sec(at + Duration::from_secs(60)) < 0.5);
        // A stall of a few gaps in a busy stream barely moves it.
        assert!(a.per_sec(at + Duration::from_millis(600)) > 4.0);
    }

    /// A Poisson stream reads at its rate, after a slow start is forgotten.
    #[test]
    fn poisson_stream_reads_at_its_rate() {
        let t0 = Instant::now();
        let mut a = Arrivals::default();
        let mut at = t0;
        for _ in 0..6 {
            at += Duration::from_millis(40);
            a.add(1.0, at);
        }
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for _ in 0..2_000 {
            let u: f64 = rng.random();
            at += Duration::from_secs_f64(-(1.0 - u).ln() / 240.0);
            a.add(1.0, at);
        }
        let r = a.per_sec(at);
        assert!((200.0..280.0).contains(&r), "{r}");
    }

    /// A kind that speeds up ninefold after a few requests reads at least half its new rate
    /// within 24 requests (the mean alone, with a cap of a tenth of the window, reads 107 per
    /// second of 250).
    #[test]
    fn a_kind_that_speeds_up_reads_fast_soon() {
        let t0 = Instant::now();
        let mut a = Arrivals::default();
        let mut at = t0;
        for _ in 0..6 {
            at += Duration::from_millis(35);
            a.add(1.0, at);
        }
        for _ in 0..24 {
            at += Duration::from_millis(4);
            a.add(1.0, at);
        }
        let r = a.per_sec(at);
        assert!(r > 125.0, "{r}");
        assert!(a.per_sec(at + Duration::from_secs(60)) < 1.0);
    }

    /// Per-kind traffic carries the kind's request rate and mean shard count; the shard rate
    /// counts every kind.
    #[test]
    fn traffic_per_kind() {
        let (f, alone) = (Flow::default(), Flow::default());
        for _ in 0..10 {
            f.dispatched("a", 8);
            f.dispatched("b", 2);
            alone.dispatched("a", 8);
        }
        let a = f.traffic("a");
        assert!((a.mean_shards - 8.0).abs() < 0.01, "{a:?}");
        assert!(a.request_rate > 0.0, "{a:?}");
        assert!(a.shard_rate > alone.traffic("a").shard_rate * 1.1, "{a:?}");
        let unknown = f.traffic("c");
        assert_eq!(unknown.request_rate, 0.0);
        assert_eq!(unknown.mean_shards, 1.0);
    }
}
