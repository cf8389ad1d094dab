//! What the shard-count model's predictions turned out to be: each request's measured time to
//! its last shard against the time the model predicted for the count it chose.
//!
//! The model ([`crate::plan::Model`]) sees its inputs, not every cost of a shard: on a small
//! machine the broker, Redis and the workers share the CPU, and a count that looks free by the
//! measured transport latency can saturate it. So the manager learns, per kind and size class,
//! how the overrun (measured minus predicted, µs) grows with the count: a regression of the
//! overrun on the count, whose slope is the cost per shard the model does not see. The slope is
//! shrunk toward zero by how well it is measured (as the cost line's intercept is), so the
//! noise of a few requests does not move the choice, and only a cost is learned, never a gain.
//! A constant overrun changes no choice and is ignored.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use uuid::Uuid;

/// Per-request decay of a class's regression at most (a window of at least 50 requests).
pub const DECAY: f64 = 0.98;
/// Time constant of a class's regression when more than 50 requests fill it: a busy kind
/// averages over this long (completion times are noisy, and 50 requests of a kind that comes
/// 200 times a second are a quarter of a second of them).
pub const WINDOW: Duration = Duration::from_secs(10);
/// Requests of a class before its slope is used.
pub const MIN_REQUESTS: u32 = 10;
/// Requests never seen finishing are forgotten after this long.
pub const FORGET: Duration = Duration::from_secs(600);

/// The class of a request size: half octaves.
pub fn size_class(size: f64) -> i32 {
    (size.max(1.0).log2() * 2.0).round() as i32
}

#[derive(Debug)]
struct Pending {
    key: (String, i32),
    n: u32,
    predicted_us: f64,
    at: Instant,
    finished: Vec<bool>,
    left: usize,
}

/// Exponentially weighted regression of the overrun on the count.
#[derive(Debug, Clone, Copy, Default)]
struct Overrun {
    w: f64,
    sx: f64,
    sy: f64,
    sxx: f64,
    sxy: f64,
    syy: f64,
    n: u32,
    last: Option<Instant>,
}

impl Overrun {
    fn observe(&mut self, count: f64, overrun_us: f64, now: Instant) {
        let dt = self
            .last
            .map_or(0.0, |t| now.saturating_duration_since(t).as_secs_f64());
        let d = DECAY.max((-dt / WINDOW.as_secs_f64()).exp());
        self.last = Some(now);
        self.w = self.w * d + 1.0;
        self.sx = self.sx * d + count;
        self.sy = self.sy * d + overrun_us;
        self.sxx = self.sxx * d + count * count;
        self.sxy = self.sxy * d + count * overrun_us;
        self.syy = self.syy * d + overrun_us * overrun_us;
        self.n = self.n.saturating_add(1);
    }

    /// The unseen cost per shard, µs: the slope, kept only where it is at least two standard
    /// errors above zero and shrunk by them (positive-part James–Stein).
    fn per_shard_us(&self) -> f64 {
        if self.n < MIN_REQUESTS || self.w <= 2.0 {
            return 0.0;
        }
        let (mx, my) = (self.sx / self.w, self.sy / self.w);
        let var = self.sxx / self.w - mx * mx;
        if var <= 1e-9 * (mx * mx).max(1.0) {
            return 0.0;
        }
        let cov = self.sxy / self.w - mx * my;
        let slope = cov / var;
        if slope <= 0.0 {
            return 0.0;
        }
        let residual = (self.syy / self.w - my * my - cov * cov / var).max(0.0);
        let se2 = residual / (self.w * var);
        slope * (1.0 - 4.0 * se2 / (slope * slope)).max(0.0)
    }
}

#[derive(Debug, Default)]
struct Inner {
    pending: HashMap<Uuid, Pending>,
    classes: HashMap<(String, i32), Overrun>,
    inserts: u64,
}

/// The unseen cost per shard of one kind, µs, by size class.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Corrections {
    per_shard_us: HashMap<i32, f64>,
}

impl Corrections {
    /// Time to add to the model's prediction for a request of `size` cut into `n`, µs.
    pub fn extra_us(&self, size: f64, n: u64) -> f64 {
        self.per_shard_us
            .get(&size_class(size))
            .map_or(0.0, |c| c * n as f64)
    }
}

/// Requests in flight and what those that finished taught.
#[derive(Debug, Default)]
pub struct Outcomes {
    inner: Mutex<Inner>,
}

impl Outcomes {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// `request` of `kind` and `size` was cut into `n` shards at `at`, predicted to take
    /// `predicted_us` to its last shard.
    pub fn expect(
        &self,
        request: Uuid,
        kind: &str,
        size: f64,
        n: u32,
        predicted_us: f64,
        at: Instant,
    ) {
        if !(predicted_us.is_finite() && predicted_us > 0.0) || n == 0 {
            return;
        }
        let mut g = self.lock();
        g.inserts += 1;
        if g.inserts.is_multiple_of(1024) {
            g.pending
                .retain(|_, p| at.saturating_duration_since(p.at) < FORGET);
        }
        g.pending.insert(
            request,
            Pending {
                key: (kind.to_owned(), size_class(size)),
                n,
                predicted_us,
                at,
                finished: vec![false; n as usize],
                left: n as usize,
            },
        );
    }

    /// Shard `index` of `request` finished at `now` (duplicates are ignored). The request's
    /// last shard teaches its overrun.
    pub fn finished(&self, request: Uuid, index: u32, now: Instant) {
        let mut g = self.lock();
        let Some(p) = g.pending.get_mut(&request) else {
            return;
        };
        match p.finished.get_mut(index as usize) {
            Some(done) if !*done => {
                *done = true;
                p.left -= 1;
            }
            _ => return,
        }
        if p.left > 0 {
            return;
        }
        let Some(p) = g.pending.remove(&request) else {
            return;
        };
        let actual = now.saturating_duration_since(p.at).as_secs_f64() * 1e6;
        g.classes
            .entry(p.key)
            .or_default()
            .observe(f64::from(p.n), actual - p.predicted_us, now);
    }

    /// What was learned for `kind`.
    pub fn corrections(&self, kind: &str) -> Corrections {
        let g = self.lock();
        Corrections {
            per_shard_us: g
                .classes
                .iter()
                .filter(|((k, _), _)| k == kind)
                .map(|((_, class), o)| (*class, o.per_shard_us()))
                .collect(),
        }
    }

    /// Requests awaiting their last shard.
    pub fn pending(&self) -> usize {
        self.lock().pending.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(o: &Outcomes, i: u128, n: u32, predicted_ms: u64, took_ms: u64, t0: Instant) {
        let id = Uuid::from_u128(i);
        o.expect(id, "k", 12.0, n, predicted_ms as f64 * 1e3, t0);
        for s in 0..n {
            o.finished(id, s, t0 + Duration::from_millis(took_ms));
        }
    }

    /// Overruns that grow with the count teach a cost per shard; other sizes and kinds are
    /// untouched.
    #[test]
    fn learns_the_unseen_cost_per_shard() {
        let o = Outcomes::default();
        let t0 = Instant::now();
        for i in 0..40u128 {
            // Predicted 20 ms whatever the count; each shard really costs 2 ms more.
            let n = [1, 4, 8, 12][i as usize % 4];
            run(&o, i, n, 20, 20 + 2 * u64::from(n), t0);
        }
        let c = o.corrections("k");
        let per = c.extra_us(12.0, 1);
        assert!((per - 2_000.0).abs() < 50.0, "{per}");
        assert_eq!(c.extra_us(600.0, 8), 0.0);
        assert_eq!(o.corrections("other").extra_us(12.0, 8), 0.0);
        assert_eq!(o.pending(), 0);
    }

    /// A constant overrun, or one that falls with the count, teaches nothing; nor does noise.
    #[test]
    fn only_a_measured_cost_counts() {
        let o = Outcomes::default();
        let t0 = Instant::now();
        for i in 0..40u128 {
            let n = [1, 4, 8, 12][i as usize % 4];
            run(&o, i, n, 20, 50, t0);
        }
        assert_eq!(o.corrections("k").extra_us(12.0, 12), 0.0);
        let o = Outcomes::default();
        for i in 0..40u128 {
            let n = [1, 4, 8, 12][i as usize % 4];
            run(&o, i, n, 20, 40 - u64::from(n), t0);
        }
        assert_eq!(o.corrections("k").extra_us(12.0, 12), 0.0);
        let o = Outcomes::default();
        for i in 0..40u128 {
            let n = [1, 4, 8, 12][i as usize % 4];
            let noise = [0, 60, 5, 30, 90, 10, 0, 45][i as usize % 8];
            run(&o, i, n, 20, 20 + noise, t0);
        }
        let noisy = o.corrections("k").extra_us(12.0, 1);
        assert!(noisy < 1_000.0, "{noisy}");
    }

    /// A request teaches only once all its shards finished, each counted once.
    #[test]
    fn waits_for_every_shard_once() {
        let o = Outcomes::default();
        let t0 = Instant::now();
        let id = Uuid::from_u128(1);
        o.expect(id, "k", 12.0, 3, 10_000.0, t0);
        let later = t0 + Duration::from_millis(30);
        o.finished(id, 0, later);
        o.finished(id, 0, later);
        o.finished(id, 1, later);
        o.finished(id, 7, later);
        assert_eq!(o.pending(), 1);
        o.finished(id, 2, later);
        assert_eq!(o.pending(), 0);
    }
}
