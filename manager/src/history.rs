//! What the manager has learned about how long work takes.
//!
//! - **Per kind**, shard service time as a function of shard size: an exponentially weighted
//!   least-squares line `time = a + b × size` over the shards of that kind, whichever engine
//!   ran them.
//! - **Per engine**, a learned speed: the ratio of averages EWMA(predicted time) / EWMA(measured
//!   time), so 0.25 means "takes four times what the kind's line predicts". An engine that
//!   stops getting shards drifts back towards the fleet's mean speed (time constant
//!   [`SPEED_DECAY`]), so an engine that was slow is tried again after it recovers.
//! - **Per-shard overhead**: the manager's publish cost, the merge cost per partial result, and
//!   the transport latency seen on idle engines (time from send to completion minus
//!   processing, [`crate::latency`]), with the load it reveals. These feed the shard-count
//!   decision in [`crate::plan`].
//!
//! The whole history is saved in Redis ([`shardline::Names::history_key`]) every few seconds
//! and loaded at start, so a restarted manager, or a second one, starts warm. Several managers
//! overwrite each other's saves; each keeps learning from its own shards, so the stored copy is
//! always a recent one.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use shardline::store::Store;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::latency::Latency;
use crate::locality::MISS_PRIOR;

/// Weight of the newest observation in the per-engine and overhead averages.
pub const ALPHA: f64 = 0.1;
/// Per-observation decay of the per-kind regression (an effective window of 100 shards).
pub const REGRESSION_DECAY: f64 = 0.99;
/// Observations of a kind before its line is trusted.
pub const MIN_OBSERVATIONS: u32 = 10;
/// Time constant with which an engine without news drifts back to the fleet's mean speed.
pub const SPEED_DECAY: Duration = Duration::from_secs(5);
/// Smallest merge whose cost is learned per part.
pub const MIN_MERGE_PARTS: u32 = 8;
/// Most shards of a request whose dispatch time reads as a load sample: up to this many,
/// the publishes overlap and the time does not grow with the count.
pub const FEW_SHARDS: usize = 16;
/// Share of a shard's transport latency during which it holds its worker slot: the result
/// write and the ack, and the broker's next delivery, out of a path that also holds the
/// publish and its confirm, the routing and the completion event. On the sharding bench, large
/// requests' p50 less the simulated work grew by 1.2 ± 1.1 ms per round of shards from 32 to
/// 128 shards, against a transport latency of 3.2 ms.
pub const HOLD_SHARE: f64 = 0.25;
/// How often the history is saved to Redis.
pub const SAVE_EVERY: Duration = Duration::from_secs(2);
/// A stored history nobody saved for this long expires.
pub const KEEP_FOR: Duration = Duration::from_secs(7 * 24 * 3600);

/// An exponentially weighted moving average that knows whether it has seen anything.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
pub struct Ewma {
    value: f64,
    seen: u32,
}

impl Ewma {
    /// Blend in `x` with weight [`ALPHA`] (the first observation is taken as is).
    pub fn observe(&mut self, x: f64) {
        if !x.is_finite() {
            return;
        }
        self.value = if self.seen == 0 {
            x
        } else {
            ALPHA * x + (1.0 - ALPHA) * self.value
        };
        self.seen = self.seen.saturating_add(1);
    }

    /// The average, if anything was observed.
    pub fn get(&self) -> Option<f64> {
        (self.seen > 0).then_some(self.value)
    }
}

/// Exponentially weighted least squares of time (µs) on size.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
pub struct CostLine {
    w: f64,
    sx: f64,
    sy: f64,
    sxx: f64,
    sxy: f64,
    /// Weighted sum of squared times (a saved history without this field starts it at 0,
    /// which reads as noise-free until it has filled).
    #[serde(default)]
    syy: f64,
    n: u32,
}

impl CostLine {
    /// Add one observation.
    pub fn observe(&mut self, size: f64, micros: f64) {
        if !(size.is_finite() && micros.is_finite() && size >= 0.0 && micros >= 0.0) {
            return;
        }
        let d = REGRESSION_DECAY;
        self.w = self.w * d + 1.0;
        self.sx = self.sx * d + size;
        self.sy = self.sy * d + micros;
        self.sxx = self.sxx * d + size * size;
        self.sxy = self.sxy * d + size * micros;
        self.syy = self.syy * d + micros * micros;
        self.n = self.n.saturating_add(1);
    }

    /// `(a, b)` of `time = a + b × size`, once [`MIN_OBSERVATIONS`] were seen.
    ///
    /// The line always goes through the mean point, which is well measured. Its intercept is
    /// not when the sizes seen are close together (as they are once the adaptive count
    /// settles) and shard times are noisy: a least-squares intercept of 7 ms was seen on work
    /// with none. So the intercept is shrunk toward zero by how well it is measured (positive
    /// part James–Stein: `a × (1 - (2 se(a) / a)²)`, zero below two standard errors), and
    /// when sizes barely vary the line is proportional to size.
    pub fn coefficients(&self) -> Option<(f64, f64)> {
        if self.n < MIN_OBSERVATIONS || self.w <= 0.0 {
            return None;
        }
        let (mx, my) = (self.sx / self.w, self.sy / self.w);
        if mx <= 0.0 {
            return Some((my.max(0.0), 0.0));
        }
        let var = self.sxx / self.w - mx * mx;
        let cov = self.sxy / self.w - mx * my;
        let a = if var > 1e-9 * (mx * mx).max(1e-9) {
            let b = (cov / var).max(0.0);
            let a = (my - b * mx).max(0.0);
            // Residual variance of the fit, and the intercept's squared standard error over
            // an effective sample of `w` points.
            let residual = (self.syy / self.w - my * my - cov * cov / var).max(0.0);
            let se2 = residual / self.w * (1.0 + mx * mx / var);
            if a > 0.0 {
                a * (1.0 - 4.0 * se2 / (a * a)).max(0.0)
            } else {
                0.0
            }
        } else {
            0.0
        };
        let a = a.min(my.max(0.0));
        Some((a, (my - a) / mx))
    }

    /// Predicted time of a shard of `size`, in µs.
    pub fn predict(&self, size: f64) -> Option<f64> {
        self.coefficients().map(|(a, b)| a + b * size)
    }
}

/// One engine's learned speed.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct EngineSpeed {
    predicted: Ewma,
    measured: Ewma,
    /// Mean processing time of any shard on this engine, in µs.
    shard: Ewma,
    #[serde(skip)]
    updated: Option<Instant>,
}

impl EngineSpeed {
    fn raw(&self) -> Option<f64> {
        let (p, m) = (self.predicted.get()?, self.measured.get()?);
        (p > 0.0 && m > 0.0).then(|| (p / m).clamp(0.001, 1000.0))
    }
}

/// Spread of measured times around the kind's line: averages of `measured / predicted` and of
/// its square.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct Spread {
    m1: Ewma,
    m2: Ewma,
}

impl Spread {
    fn observe(&mut self, ratio: f64) {
        if ratio.is_finite() && ratio >= 0.0 {
            self.m1.observe(ratio);
            self.m2.observe(ratio * ratio);
        }
    }

    /// Coefficient of variation of shard times, once measured.
    pub fn cv(&self) -> Option<f64> {
        let (m1, m2) = (self.m1.get()?, self.m2.get()?);
        (m1 > 0.0).then(|| (m2 - m1 * m1).max(0.0).sqrt() / m1)
    }
}

/// Everything learned, as saved in Redis.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Learned {
    kinds: HashMap<String, CostLine>,
    #[serde(default)]
    spread: HashMap<String, Spread>,
    engines: HashMap<String, EngineSpeed>,
    /// Manager-side publish cost per shard, µs.
    publish: Ewma,
    /// Send-to-completion minus processing, on engines that had a free slot, µs.
    #[serde(default)]
    latency: Latency,
    /// The manager's time from taking a request to publishing its first shard (split, plan,
    /// records), µs. It stops at the first publish, not the last confirm: the shard-count
    /// model charges the publishes separately, so a large fan-out's would count twice.
    #[serde(default)]
    dispatch: Ewma,
    /// The same, for requests of few shards (whose publishes overlap), as a second reading of
    /// the load on the broker and Redis.
    #[serde(default)]
    dispatch_latency: Latency,
    /// Merge cost per partial result, per kind, µs.
    merge: HashMap<String, Ewma>,
    /// Per kind, how many times its line a shard took on an engine that did not hold its
    /// locality key ([`crate::locality`]).
    #[serde(default)]
    miss: HashMap<String, Ewma>,
}

/// The shared, thread-safe history.
#[derive(Debug, Default)]
pub struct History {
    inner: Mutex<(Learned, bool)>,
}

/// Per-shard costs that do not scale with shard size, in µs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Overheads {
    /// The manager's publish of one shard, µs: a request's shards leave one after another.
    pub publish_us: f64,
    /// The finalizer's merge of one partial result, µs, paid one after another at the end.
    pub merge_us: f64,
    /// Transport latency on an idle path, paid by each shard in parallel (delivery, Redis
    /// writes).
    pub latency_us: f64,
    /// The part of it during which a shard holds its slot ([`HOLD_SHARE`]).
    pub hold_us: f64,
    /// Paid once per request on an idle path: its dispatch, and the way back of its result.
    pub path_us: f64,
    /// Utilisation of that path now, from how far its latency (or the manager's dispatch
    /// time) rose above the idle one.
    pub load: f64,
}

impl History {
    fn lock(&self) -> std::sync::MutexGuard<'_, (Learned, bool)> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Predicted processing time of a shard of `size` of `kind` at speed 1, in µs.
    pub fn predict(&self, kind: &str, size: f64) -> Option<f64> {
        self.lock().0.kinds.get(kind)?.predict(size)
    }

    /// `(a, b)` of the kind's line, when trusted.
    pub fn line(&self, kind: &str) -> Option<(f64, f64)> {
        self.lock().0.kinds.get(kind)?.coefficients()
    }

    /// Coefficient of variation of `kind`'s shard times around its line (0 until measured).
    pub fn cv(&self, kind: &str) -> f64 {
        self.lock()
            .0
            .spread
            .get(kind)
            .and_then(Spread::cv)
            .unwrap_or(0.0)
    }

    /// Learned speeds of `engines` (1.0 when unknown), each decayed towards the fleet mean
    /// by the time since its last observation.
    pub fn speeds(&self, engines: &[&str]) -> Vec<f64> {
        let g = self.lock();
        let known: Vec<f64> = g.0.engines.values().filter_map(EngineSpeed::raw).collect();
        let mean = if known.is_empty() {
            1.0
        } else {
            known.iter().sum::<f64>() / known.len() as f64
        };
        engines
            .iter()
            .map(|e| match g.0.engines.get(*e) {
                Some(s) => match s.raw() {
                    Some(raw) => {
                        let age = s.updated.map_or(0.0, |t| t.elapsed().as_secs_f64());
                        let keep = (-age / SPEED_DECAY.as_secs_f64()).exp();
                        keep * raw + (1.0 - keep) * mean
                    }
                    None => mean,
                },
                None => mean,
            })
            .collect()
    }

    /// Mean processing time of a shard on `engine` (any kind), µs.
    pub fn mean_shard_us(&self, engine: &str) -> Option<f64> {
        self.lock().0.engines.get(engine)?.shard.get()
    }

    /// Learn from one finished shard: `micros` measured on `engine`.
    pub fn observe(&self, kind: &str, size: f64, engine: &str, micros: f64) {
        let mut g = self.lock();
        let line = g.0.kinds.entry(kind.to_owned()).or_default();
        let predicted = line.predict(size);
        line.observe(size, micros);
        let speed = g.0.engines.entry(engine.to_owned()).or_default();
        speed.shard.observe(micros);
        if let Some(p) = predicted {
            speed.predicted.observe(p);
            speed.measured.observe(micros);
        }
        speed.updated = Some(Instant::now());
        // Measured against the kind's line (not per engine): slower engines are a source of
        // stragglers too.
        if let Some(p) = predicted.filter(|p| *p > 0.0) {
            let ratio = micros / p;
            g.0.spread
                .entry(kind.to_owned())
                .or_default()
                .observe(ratio);
        }
        g.1 = true;
    }

    /// Learn from one finished shard that ran on an engine without its locality key:
    /// `micros` against the kind's line at that engine's speed. It teaches only the miss
    /// factor (the line and the speed would read a remote read as a slow engine), and nothing
    /// before the kind's line is trusted.
    pub fn observe_miss(&self, kind: &str, size: f64, engine: &str, micros: f64) {
        let mut g = self.lock();
        let Some(line) = g.0.kinds.get(kind).and_then(|l| l.predict(size)) else {
            return;
        };
        let speed =
            g.0.engines
                .get(engine)
                .and_then(EngineSpeed::raw)
                .unwrap_or(1.0);
        let expected = line / speed;
        if expected > 0.0 {
            g.0.miss
                .entry(kind.to_owned())
                .or_default()
                .observe(micros / expected);
            g.1 = true;
        }
    }

    /// How many times longer a shard of `kind` takes on an engine without its locality key
    /// ([`MISS_PRIOR`] until measured, at least 1).
    pub fn miss(&self, kind: &str) -> f64 {
        self.lock()
            .0
            .miss
            .get(kind)
            .and_then(Ewma::get)
            .unwrap_or(MISS_PRIOR)
            .max(1.0)
    }

    /// Learn the manager's publish cost per shard.
    pub fn observe_publish(&self, micros_per_shard: f64) {
        let mut g = self.lock();
        g.0.publish.observe(micros_per_shard);
        g.1 = true;
    }

    /// Learn how long dispatching one request of `shards` shards took, µs: `prepare` until
    /// its first shard was published, `total` until its last was confirmed.
    pub fn observe_dispatch(&self, prepare: f64, total: f64, shards: usize) {
        let mut g = self.lock();
        g.0.dispatch.observe(prepare);
        if shards <= FEW_SHARDS {
            g.0.dispatch_latency.observe(total, Instant::now());
        }
        g.1 = true;
    }

    /// Learn the transport latency of one shard that found a free slot.
    pub fn observe_transport(&self, micros: f64) {
        let mut g = self.lock();
        g.0.latency.observe(micros, Instant::now());
        g.1 = true;
    }

    /// Learn a merge of `parts` partial results of `kind` that took `micros`. Merges of fewer
    /// than [`MIN_MERGE_PARTS`] parts are ignored: their fixed cost would be taken for a
    /// per-part cost and push shard counts down for good.
    pub fn observe_merge(&self, kind: &str, parts: u32, micros: f64) {
        if parts < MIN_MERGE_PARTS {
            return;
        }
        let mut g = self.lock();
        g.0.merge
            .entry(kind.to_owned())
            .or_default()
            .observe(micros / f64::from(parts));
        g.1 = true;
    }

    /// Per-shard overheads of `kind`; an unmeasured latency defaults to 1 ms.
    pub fn overheads(&self, kind: &str) -> Overheads {
        let g = self.lock();
        let merge = g.0.merge.get(kind).and_then(Ewma::get).unwrap_or(0.0);
        let latency_us = g.0.latency.base().unwrap_or(1_000.0);
        let load = g.0.latency.load().max(g.0.dispatch_latency.load());
        Overheads {
            publish_us: g.0.publish.get().unwrap_or(0.0),
            merge_us: merge,
            latency_us,
            hold_us: latency_us * HOLD_SHARE,
            // The dispatch was measured on the path as loaded now; its idle cost is smaller.
            path_us: g.0.dispatch.get().unwrap_or(0.0) * (1.0 - load) + latency_us,
            load,
        }
    }

    /// A copy of everything learned.
    pub fn learned(&self) -> Learned {
        self.lock().0.clone()
    }

    /// Replace what is known with a saved copy (at start).
    pub fn restore(&self, learned: Learned) {
        let mut g = self.lock();
        g.0 = learned;
        let now = Instant::now();
        for s in g.0.engines.values_mut() {
            s.updated = Some(now);
        }
    }

    /// Load the saved history from Redis, if there is one.
    ///
    /// # Errors
    /// Redis failures. A blob that does not parse is ignored with a warning.
    pub async fn load(&self, store: &Store) -> Result<bool, shardline::Error> {
        let Some(blob) = store.load_history().await? else {
            return Ok(false);
        };
        match serde_json::from_slice::<Learned>(&blob) {
            Ok(learned) => {
                info!(
                    kinds = learned.kinds.len(),
                    engines = learned.engines.len(),
                    "loaded the saved history"
                );
                self.restore(learned);
                Ok(true)
            }
            Err(error) => {
                warn!(%error, "ignoring a saved history that does not parse");
                Ok(false)
            }
        }
    }

    /// Save to Redis if anything changed since the last save.
    ///
    /// # Errors
    /// Redis or encoding failures.
    pub async fn save(&self, store: &Store) -> Result<(), shardline::Error> {
        let learned = {
            let mut g = self.lock();
            if !g.1 {
                return Ok(());
            }
            g.1 = false;
            g.0.clone()
        };
        let blob = serde_json::to_vec(&learned)?;
        store.save_history(&blob, KEEP_FOR).await
    }

    /// Save every [`SAVE_EVERY`] until cancelled, and once more at the end.
    pub async fn keep_saved(self: std::sync::Arc<Self>, store: Store, stop: CancellationToken) {
        let mut tick = tokio::time::interval(SAVE_EVERY);
        loop {
            let last = tokio::select! {
                () = stop.cancelled() => true,
                _ = tick.tick() => false,
            };
            if let Err(error) = self.save(&store).await {
                debug!(%error, "saving the history failed; will retry");
            }
            if last {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Shards that ran away from their data teach the miss factor, at the engine's speed,
    /// and leave the line and the speeds alone; before the line is trusted they teach nothing.
    #[test]
    fn remote_shards_teach_only_the_miss_factor() {
        let h = History::default();
        h.observe_miss("k", 1.0, "b", 40_000.0);
        assert_eq!(h.miss("k"), MISS_PRIOR, "nothing learned before the line");
        for _ in 0..20 {
            h.observe("k", 1.0, "a", 10_000.0);
            h.observe("k", 1.0, "b", 20_000.0);
        }
        let line = h.predict("k", 1.0).expect("line");
        let speeds = h.speeds(&["a", "b"]);
        for _ in 0..50 {
            h.observe_miss("k", 1.0, "b", 4.0 * 20_000.0);
        }
        let miss = h.miss("k");
        assert!((miss - 4.0).abs() < 0.5, "miss {miss}");
        assert_eq!(h.predict("k", 1.0), Some(line));
        for (now, before) in h.speeds(&["a", "b"]).iter().zip(&speeds) {
            assert!((now - before).abs() < 1e-3, "{now} {before}");
        }
        assert_eq!(h.miss("other"), MISS_PRIOR);
        h.observe_miss("j", 1.0, "a", 1.0);
        assert!(h.miss("k") >= 1.0);
    }

    /// The regression recovers a line with an intercept from exact points.
    #[test]
    fn cost_line_fits_intercept_and_slope() {
        let mut l = CostLine::default();
        for i in 0..50 {
            let size = f64::from(i % 5 + 1);
            l.observe(size, 500.0 + 2_000.0 * size);
        }
        let (a, b) = l.coefficients().expect("enough points");
        assert!(
            (a - 500.0).abs() < 1.0 && (b - 2_000.0).abs() < 1.0,
            "{a} {b}"
        );
        assert!(CostLine::default().coefficients().is_none());
    }

    /// A spurious intercept from noisy times over close sizes is shrunk away: with no fixed
    /// cost and exponential noise (as the synthetic kind has), sizes 4 to 8 do not produce a
    /// large fixed cost.
    #[test]
    fn cost_line_shrinks_a_poorly_measured_intercept() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut l = CostLine::default();
        let mut worst: f64 = 0.0;
        for i in 0..2_000u32 {
            let noise = -(1.0 - rng.random::<f64>()).ln();
            let size = f64::from(4 + i % 5);
            l.observe(size, 2_000.0 * size * noise);
            if let Some((a, _)) = l.coefficients().filter(|_| i > 200) {
                worst = worst.max(a);
            }
        }
        // An unshrunk fit swings by several ms here; a fixed cost of a few hundred µs, against
        // 12 ms shards, changes no decision.
        assert!(worst < 3_000.0, "intercept reached {worst} µs");
        let (a, b) = l.coefficients().expect("trusted");
        assert!((a + 6.0 * b - 12_000.0).abs() < 3_000.0, "{a} {b}");
    }

    /// A real fixed cost, measured over a spread of sizes with modest noise, survives the
    /// shrinking.
    #[test]
    fn cost_line_keeps_a_well_measured_intercept() {
        let mut l = CostLine::default();
        for i in 0..500u32 {
            let size = f64::from(1 + i % 20);
            let wobble = if i % 2 == 0 { 1.2 } else { 0.8 };
            l.observe(size, (5_000.0 + 1_000.0 * size) * wobble);
        }
        let (a, b) = l.coefficients().expect("trusted");
        assert!((4_000.0..6_000.0).contains(&a), "{a} {b}");
    }

    /// With one size only, time is taken as proportional to size.
    #[test]
    fn cost_line_with_one_size_is_proportional() {
        let mut l = CostLine::default();
        for _ in 0..20 {
            l.observe(4.0, 8_000.0);
        }
        let p = l.predict(2.0).expect("trusted");
        assert!((p - 4_000.0).abs() < 1e-6, "{p}");
    }

    /// An engine four times slower than its peers is learned as about 0.25 of the others.
    #[test]
    fn learns_relative_engine_speed() {
        let h = History::default();
        for i in 0..400 {
            let size = f64::from(i % 4 + 1);
            let (engine, speed) = match i % 3 {
                0 => ("slow", 0.25),
                1 => ("a", 1.0),
                _ => ("b", 1.0),
            };
            h.observe("k", size, engine, 1_000.0 * size / speed);
        }
        let s = h.speeds(&["a", "b", "slow", "new"]);
        let ratio = s[2] / s[0];
        assert!((ratio - 0.25).abs() < 0.05, "{s:?}");
        assert!(
            s[3] > s[2] && s[3] < s[0],
            "unknown engines get the fleet mean: {s:?}"
        );
    }

    /// The saved form round-trips through JSON, so a second manager starts warm.
    #[test]
    fn history_round_trips() {
        let h = History::default();
        for i in 0..20 {
            h.observe("k", f64::from(i + 1), "a", 100.0 * f64::from(i + 1));
        }
        h.observe_merge("k", 10, 1_000.0);
        let blob = serde_json::to_vec(&h.learned()).expect("encodes");
        let back: Learned = serde_json::from_slice(&blob).expect("decodes");
        let warm = History::default();
        warm.restore(back);
        let (a, b) = (warm.predict("k", 3.0), h.predict("k", 3.0));
        assert!(
            a.zip(b).is_some_and(|(a, b)| (a - b).abs() < 1e-6),
            "{a:?} {b:?}"
        );
        assert_eq!(warm.overheads("k").merge_us, 100.0);
    }

    /// Exponential shard times have a coefficient of variation near 1; exact ones near 0.
    #[test]
    fn learns_the_spread_of_shard_times() {
        let h = History::default();
        let mut x = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..3_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let u = ((x >> 11) + 1) as f64 / (1u64 << 53) as f64;
            h.observe("noisy", 1.0, "a", -u.ln() * 10_000.0);
            h.observe("exact", 1.0, "b", 10_000.0);
        }
        let cv = h.cv("noisy");
        assert!((0.6..1.4).contains(&cv), "cv {cv}");
        assert!(h.cv("exact") < 0.05);
        assert_eq!(h.cv("unknown"), 0.0);
    }

    /// Garbage observations are ignored instead of poisoning the averages.
    #[test]
    fn ignores_non_finite_observations() {
        let mut e = Ewma::default();
        e.observe(f64::NAN);
        assert_eq!(e.get(), None);
        let mut l = CostLine::default();
        l.observe(f64::INFINITY, 1.0);
        l.observe(1.0, -5.0);
        assert_eq!(l, CostLine::default());
    }
}
