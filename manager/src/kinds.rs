//! The kinds this manager serves: those built into it (cut with their own code) and those
//! live workers advertise (cut with the generic splitter the advert names, see
//! [`shardline::kind::splitter`]). A stock manager thus serves a kind it was never built with
//! as soon as a worker that has it registers.
//!
//! A kind no worker has advertised for [`GRACE`] is unknown (unless it is built in): its
//! requests are rejected with `unknown_kind`. Within the grace its shards wait in the kind's
//! shared queue for a worker, so a rolling restart of a kind's workers loses nothing.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use shardline::kind::{Advert, DynKind, KindError, Splitter, check_name};
use shardline::message::Input;
use shardline::store::Store;
use shardline::{Error, Registry, now_ms};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::engines::REFRESH_EVERY;

/// How long after its last advert a kind is still served.
pub const GRACE: Duration = Duration::from_secs(60);
/// A kind looked up and not found re-reads the adverts at most this often.
const MISS_REFRESH: Duration = Duration::from_millis(100);

/// How a kind's requests are cut.
#[derive(Clone)]
pub enum Cutter {
    /// With the kind's own code, built into this manager.
    Code(Arc<dyn DynKind>),
    /// With the generic splitter a worker advertised.
    Generic {
        /// The splitter.
        splitter: Splitter,
        /// Preferred work per shard, in the splitter's unit.
        shard_size: u64,
    },
}

impl std::fmt::Debug for Cutter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Cutter::Code(kind) => write!(f, "Code({})", kind.name()),
            Cutter::Generic {
                splitter,
                shard_size,
            } => write!(f, "Generic({splitter}, {shard_size})"),
        }
    }
}

impl Cutter {
    /// The cut as a request's record names it: [`Splitter::Custom`] for the kind's own code.
    pub fn splitter(&self) -> Splitter {
        match self {
            Cutter::Code(_) => Splitter::Custom,
            Cutter::Generic { splitter, .. } => *splitter,
        }
    }

    /// Cut `input`: a payload into as many shards as `decide(size, shard_size)` says, pieces a
    /// client cut into one shard each. Returns the shards and the request's size (0 when the
    /// input is refused).
    pub fn split(
        &self,
        input: Input,
        decide: &mut dyn FnMut(u64, u64) -> usize,
    ) -> (Result<Vec<Vec<u8>>, KindError>, u64) {
        let split = match (self, input) {
            (Cutter::Code(kind), Input::Payload(payload)) => {
                let mut size = 0;
                let shards = kind.split(payload, &mut |s, hint| {
                    size = s;
                    decide(s, hint)
                });
                return (shards, size);
            }
            (Cutter::Code(kind), Input::Shards(pieces)) => kind.split_pieces(pieces),
            (
                Cutter::Generic {
                    splitter,
                    shard_size,
                },
                Input::Payload(payload),
            ) => splitter.split(payload, *shard_size, decide),
            (Cutter::Generic { splitter, .. }, Input::Shards(pieces)) => {
                splitter.split_pieces(pieces)
            }
        };
        match split {
            Ok((shards, size)) => (Ok(shards), size),
            Err(e) => (Err(e), 0),
        }
    }
}

/// Why a kind cannot be served here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unserved {
    /// The name could not name a kind.
    BadName(String),
    /// Not built in, and no worker advertised it within [`GRACE`].
    Unknown,
    /// Advertised with a custom splitter, which needs the kind's code.
    NeedsCode,
}

/// The kinds built in and advertised. Cheap to share.
pub struct Catalog {
    compiled: Registry,
    adverts: RwLock<BTreeMap<String, Advert>>,
    last_refresh: Mutex<Option<Instant>>,
}

impl Catalog {
    /// A catalog of the `compiled` kinds, with no adverts read yet.
    pub fn new(compiled: Registry) -> Self {
        Catalog {
            compiled,
            adverts: RwLock::default(),
            last_refresh: Mutex::new(None),
        }
    }

    /// How to cut `name`, from what is known now (epoch ms `now`).
    ///
    /// # Errors
    /// Why the kind is not served.
    pub fn lookup(&self, name: &str, now: u64) -> Result<Cutter, Unserved> {
        check_name(name).map_err(Unserved::BadName)?;
        if let Some(kind) = self.compiled.get(name) {
            return Ok(Cutter::Code(kind));
        }
        let adverts = self.adverts.read().unwrap_or_else(|e| e.into_inner());
        match adverts.get(name) {
            Some(ad) if is_fresh(ad, now) && ad.splitter.is_generic() => Ok(Cutter::Generic {
                splitter: ad.splitter,
                shard_size: ad.shard_size.max(1),
            }),
            Some(ad) if is_fresh(ad, now) => Err(Unserved::NeedsCode),
            _ => Err(Unserved::Unknown),
        }
    }

    /// Whether shards of `name` may be hedged: the kind built in says so
    /// ([`shardline::kind::Kind::hedge_safe`]), or its advert does.
    pub fn hedge_safe(&self, name: &str) -> bool {
        if let Some(kind) = self.compiled.get(name) {
            return kind.hedge_safe();
        }
        let adverts = self.adverts.read().unwrap_or_else(|e| e.into_inner());
        adverts.get(name).is_some_and(|ad| ad.hedge)
    }

    /// How to cut again a request recorded as cut by `recorded`: that splitter, or the kind's
    /// code when it was cut by code (`None` when this manager was not built with the kind).
    /// The shard count is the recorded one, so the splitter's shard size does not matter.
    pub fn recut(&self, name: &str, recorded: Splitter) -> Option<Cutter> {
        if recorded.is_generic() {
            return Some(Cutter::Generic {
                splitter: recorded,
                shard_size: 1,
            });
        }
        self.compiled.get(name).map(Cutter::Code)
    }

    /// [`Catalog::lookup`], reading the adverts again first when the kind is not known (a
    /// worker may have registered since the last refresh).
    ///
    /// # Errors
    /// Why the kind is not served; Redis failures while re-reading.
    pub async fn resolve(
        &self,
        store: &Store,
        name: &str,
    ) -> Result<Result<Cutter, Unserved>, Error> {
        match self.lookup(name, now_ms()) {
            Err(Unserved::Unknown) if self.may_refresh() => {
                self.refresh(store).await?;
                Ok(self.lookup(name, now_ms()))
            }
            found => Ok(found),
        }
    }

    /// The kinds served now, sorted: built in, or advertised within [`GRACE`].
    pub fn served(&self) -> Vec<String> {
        let now = now_ms();
        let adverts = self.adverts.read().unwrap_or_else(|e| e.into_inner());
        let mut names: Vec<String> = self
            .compiled
            .names()
            .into_iter()
            .map(str::to_owned)
            .chain(
                adverts
                    .iter()
                    .filter(|(_, ad)| is_fresh(ad, now))
                    .map(|(name, _)| name.clone()),
            )
            .collect();
        names.sort();
        names.dedup();
        names
    }

    /// The message a request of an unserved kind is rejected with.
    pub fn rejection(&self, name: &str, why: &Unserved) -> String {
        let served = self.served().join(", ");
        match why {
            Unserved::BadName(e) => e.clone(),
            Unserved::Unknown => format!(
                "unknown kind {name:?}: no worker has served it in the last {}s; served: {served}",
                GRACE.as_secs()
            ),
            Unserved::NeedsCode => format!(
                "kind {name:?} splits with its own code (a custom splitter), and this manager \
                 was not built with it; run a manager built with the kind, or have the kind \
                 name a generic splitter"
            ),
        }
    }

    /// Whether a lookup miss may re-read the adverts now (at most every [`MISS_REFRESH`]).
    fn may_refresh(&self) -> bool {
        let g = self.last_refresh.lock().unwrap_or_else(|e| e.into_inner());
        g.is_none_or(|at| at.elapsed() >= MISS_REFRESH)
    }

    /// Read the adverts from Redis, logging kinds that appear or change.
    ///
    /// # Errors
    /// Redis failures.
    pub async fn refresh(&self, store: &Store) -> Result<(), Error> {
        *self.last_refresh.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
        let fresh = store.adverts().await?;
        let mut adverts = self.adverts.write().unwrap_or_else(|e| e.into_inner());
        for (name, ad) in &fresh {
            match adverts.get(name) {
                None => {
                    info!(kind = %name, splitter = %ad.splitter, built_in = self.compiled.get(name).is_some(), "a worker advertises a kind")
                }
                Some(old) if !old.same_kind(ad) => {
                    warn!(kind = %name, old = ?old, new = ?ad, "a kind's advert changed (workers disagree, or a new version rolled out)");
                }
                Some(_) => {}
            }
        }
        *adverts = fresh;
        Ok(())
    }

    /// Keep the adverts fresh until cancelled; errors are logged and retried.
    pub async fn keep_fresh(self: Arc<Self>, store: Store, stop: CancellationToken) {
        let mut tick = tokio::time::interval(REFRESH_EVERY);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = tick.tick() => {
                    if let Err(error) = self.refresh(&store).await {
                        warn!(%error, "reading the kinds' adverts failed");
                    }
                }
            }
        }
    }

    #[cfg(test)]
    fn with_adverts(self, adverts: BTreeMap<String, Advert>) -> Self {
        *self.adverts.write().unwrap_or_else(|e| e.into_inner()) = adverts;
        self
    }
}

/// Whether `ad` was advertised within [`GRACE`] of `now`.
fn is_fresh(ad: &Advert, now: u64) -> bool {
    now.saturating_sub(ad.seen) <= GRACE.as_millis() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ad(splitter: Splitter, seen: u64) -> Advert {
        Advert {
            splitter,
            shard_size: 100,
            max_attempts: 3,
            cost_follows_size: true,
            hedge: false,
            seen,
        }
    }

    fn catalog(now: u64) -> Catalog {
        let adverts = [
            ("lines-kind".to_owned(), ad(Splitter::Lines, now - 1_000)),
            (
                "stale".to_owned(),
                ad(Splitter::List, now - GRACE.as_millis() as u64 - 1),
            ),
            ("own-code".to_owned(), ad(Splitter::Custom, now)),
        ];
        Catalog::new(Registry::builtin()).with_adverts(adverts.into_iter().collect())
    }

    /// A built-in kind is cut with its own code; an advertised one with its splitter.
    #[test]
    fn built_in_kinds_use_code_and_advertised_ones_their_splitter() {
        let now = now_ms();
        let c = catalog(now);
        assert!(matches!(c.lookup("sort", now), Ok(Cutter::Code(_))));
        assert!(matches!(
            c.lookup("lines-kind", now),
            Ok(Cutter::Generic {
                splitter: Splitter::Lines,
                shard_size: 100
            })
        ));
    }

    /// Built-in kinds are hedged by their code's word, advertised ones by their advert's, and
    /// an unknown kind never.
    #[test]
    fn hedge_safety_follows_the_code_or_the_advert() {
        let now = now_ms();
        let safe = Advert {
            hedge: true,
            ..ad(Splitter::Lines, now)
        };
        let c = catalog(now).with_adverts([("pure".to_owned(), safe)].into_iter().collect());
        assert!(c.hedge_safe("wordcount"));
        assert!(c.hedge_safe("pure"));
        let c = catalog(now);
        assert!(!c.hedge_safe("lines-kind"));
        assert!(!c.hedge_safe("nobody-serves-this"));
    }

    /// A recorded request is cut again as it was recorded: by that splitter even for a kind
    /// built in, and by code only where the code is.
    #[test]
    fn a_recorded_cut_is_repeated() {
        let c = catalog(now_ms());
        let recut = |kind: &str, sp: Splitter| c.recut(kind, sp).map(|k| k.splitter());
        assert_eq!(recut("sort", Splitter::Words), Some(Splitter::Words));
        assert_eq!(recut("sort", Splitter::Custom), Some(Splitter::Custom));
        assert_eq!(recut("lines-kind", Splitter::Custom), None);
    }

    /// A kind unknown, advertised too long ago, needing its own code, or with a name that
    /// cannot be a kind's is not served, each for its own reason.
    #[test]
    fn unserved_kinds_say_why() {
        let now = now_ms();
        let c = catalog(now);
        assert_eq!(c.lookup("nope", now).err(), Some(Unserved::Unknown));
        assert_eq!(c.lookup("stale", now).err(), Some(Unserved::Unknown));
        assert_eq!(c.lookup("own-code", now).err(), Some(Unserved::NeedsCode));
        assert!(matches!(
            c.lookup("Bad Name", now),
            Err(Unserved::BadName(_))
        ));
        let msg = c.rejection("nope", &Unserved::Unknown);
        assert!(
            msg.contains("lines-kind") && msg.contains("wordcount"),
            "{msg}"
        );
        assert!(!msg.contains("stale"), "{msg}");
    }
}
