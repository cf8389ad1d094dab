//! Locality-aware placement: a shard whose data lives at a key some engine holds is expected
//! to take longer anywhere else.
//!
//! The routers compare engines by when a shard would finish there
//! ([`crate::route::Candidate::shard_us`] behind its expected wait). Before each keyed shard is
//! placed, [`Localizer::apply`] multiplies that shard time by the kind's learned **miss
//! factor** on every engine that does not hold the key ([`crate::history::History::miss`]:
//! measured time of such shards against the kind's line, [`MISS_PRIOR`] until measured). So
//! the holder wins while its queue is short, and a shard goes elsewhere once waiting behind
//! the holder's backlog would cost more than reading the data remotely: locality never makes a
//! hot spot worse than one remote read, and the in-flight cap bounds the holder as it bounds
//! every engine.
//!
//! A key that no candidate holds changes nothing (every engine would read it remotely), and
//! neither does any key under policies that do not read shard times (round robin, depth,
//! p2c, pull) or with `--locality-routing false`.

use shardline::locality::Locality;

use crate::engines::Engine;
use crate::route::Candidate;

/// Miss factor assumed until a kind's remote shards are measured: a remote read is taken to
/// double a shard's time, so a holder is preferred until about one shard time of queue.
pub const MISS_PRIOR: f64 = 2.0;
/// Largest miss factor the routers use, however slow remote shards were measured.
pub const MAX_MISS: f64 = 100.0;

/// How one shard's data sits with one engine.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Fit {
    /// The shard has no key, or no candidate holds it: every engine is alike.
    #[default]
    Unkeyed,
    /// The engine holds the shard's key.
    Local,
    /// Another engine holds the key; this one would read the data remotely.
    Remote,
}

/// The per-shard adjustment of one request's candidates.
#[derive(Debug)]
pub struct Localizer<'a> {
    locality: &'a Locality,
    engines: &'a [Engine],
    /// Each candidate's shard time without locality, µs.
    base_us: Vec<f64>,
    miss: f64,
}

impl<'a> Localizer<'a> {
    /// The localizer of a request whose shards' keys are `locality`, placed on `engines`
    /// (in the order of `candidates`) with miss factor `miss`; `None` when no shard has a key.
    pub fn new(
        locality: &'a Locality,
        engines: &'a [Engine],
        candidates: &[Candidate],
        miss: f64,
    ) -> Option<Self> {
        if locality.is_anywhere() || engines.iter().all(|e| e.holds.is_empty()) {
            return None;
        }
        Some(Localizer {
            locality,
            engines,
            base_us: candidates.iter().map(|c| c.shard_us).collect(),
            miss: miss.clamp(1.0, MAX_MISS),
        })
    }

    /// The miss factor in use.
    pub fn miss(&self) -> f64 {
        self.miss
    }

    /// Set every candidate's shard time and fit for shard `index`.
    pub fn apply(&self, index: u32, candidates: &mut [Candidate]) {
        let key = self.locality.key(index).map(|k| k.as_str());
        let held = key.filter(|k| self.engines.iter().any(|e| e.holds(k)));
        for ((c, e), base) in candidates.iter_mut().zip(self.engines).zip(&self.base_us) {
            c.fit = match held {
                None => Fit::Unkeyed,
                Some(k) if e.holds(k) => Fit::Local,
                Some(_) => Fit::Remote,
            };
            c.shard_us = if c.fit == Fit::Remote {
                base * self.miss
            } else {
                *base
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shardline::locality::LocalityKey;

    fn key(k: &str) -> Option<LocalityKey> {
        Some(LocalityKey::parse(k).unwrap())
    }

    /// A keyed shard costs the miss factor more on engines without its key; a key nobody
    /// holds and a shard without one leave every engine alike.
    #[test]
    fn remote_engines_cost_the_miss_factor() {
        let engines = vec![
            Engine::new("a", 2, &["k"]).holding(&["p0"]),
            Engine::new("b", 2, &["k"]).holding(&["p1"]),
        ];
        let mut c = vec![Candidate::idle("a", 2, 10.0), Candidate::idle("b", 2, 20.0)];
        let locality = Locality::Shards(vec![key("p0"), key("zz"), None]);
        let l = Localizer::new(&locality, &engines, &c, 3.0).expect("keyed");
        l.apply(0, &mut c);
        assert_eq!((c[0].fit, c[0].shard_us), (Fit::Local, 10.0));
        assert_eq!((c[1].fit, c[1].shard_us), (Fit::Remote, 60.0));
        for index in [1, 2] {
            l.apply(index, &mut c);
            assert_eq!((c[0].fit, c[0].shard_us), (Fit::Unkeyed, 10.0));
            assert_eq!((c[1].fit, c[1].shard_us), (Fit::Unkeyed, 20.0));
        }
    }

    /// Nothing to adjust: no keys, or no engine holds any.
    #[test]
    fn no_keys_no_localizer() {
        let holding = vec![Engine::new("a", 2, &["k"]).holding(&["p0"])];
        let bare = vec![Engine::new("a", 2, &["k"])];
        let c = vec![Candidate::idle("a", 2, 10.0)];
        assert!(Localizer::new(&Locality::Anywhere, &holding, &c, 2.0).is_none());
        let keyed = Locality::Request(LocalityKey::parse("p0").unwrap());
        assert!(Localizer::new(&keyed, &bare, &c, 2.0).is_none());
        let l = Localizer::new(&keyed, &holding, &c, 1e9).expect("keyed");
        assert_eq!(l.miss(), MAX_MISS);
    }
}
