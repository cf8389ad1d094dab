//! The type-erased view of a kind, and the name → kind registry both binaries use.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::{Checksum, Kind, KindError, Sort, Stop, Synthetic, WordCount};

/// A kind behind MessagePack bytes, so the manager and worker can hold any kind by name.
/// Implemented for every [`Kind`]; you never implement it yourself.
pub trait DynKind: Send + Sync {
    /// The registry name.
    fn name(&self) -> &'static str;
    /// Decode the payload, ask `decide(size, shard_size_hint)` how many shards to cut, and
    /// return each shard encoded as MessagePack.
    ///
    /// # Errors
    /// [`KindError::InvalidPayload`] or [`KindError::Empty`] for bad input.
    fn split(
        &self,
        payload: rmpv::Value,
        decide: &mut dyn FnMut(u64, u64) -> usize,
    ) -> Result<Vec<Vec<u8>>, KindError>;
    /// See [`Kind::max_attempts`].
    fn max_attempts(&self) -> u32;
    /// See [`Kind::cost_follows_size`].
    fn cost_follows_size(&self) -> bool;
    /// Process one encoded shard into an encoded partial (see [`Kind::process_with`]).
    ///
    /// # Errors
    /// [`KindError::Corrupt`] for undecodable shards, [`KindError::Stopped`], or the kind's
    /// own failure.
    fn process(&self, shard: &[u8], stop: &Stop) -> Result<Vec<u8>, KindError>;
    /// Merge encoded partials, given in shard order, into the output value.
    ///
    /// # Errors
    /// [`KindError::Corrupt`] for undecodable partials, or the kind's own failure.
    fn merge(&self, parts: Vec<Vec<u8>>) -> Result<rmpv::Value, KindError>;
}

impl<K: Kind> DynKind for K {
    fn name(&self) -> &'static str {
        Kind::name(self)
    }

    fn split(
        &self,
        payload: rmpv::Value,
        decide: &mut dyn FnMut(u64, u64) -> usize,
    ) -> Result<Vec<Vec<u8>>, KindError> {
        let kind = Kind::name(self);
        let input: K::Input =
            rmpv::ext::from_value(payload).map_err(|e| KindError::InvalidPayload {
                kind,
                detail: e.to_string(),
            })?;
        let size = self.size(&input);
        if size == 0 {
            return Err(KindError::Empty(kind));
        }
        let want = decide(size, self.shard_size_hint().max(1))
            .clamp(1, usize::try_from(size).unwrap_or(usize::MAX));
        let shards = Kind::split(self, input, want);
        if shards.len() != want {
            return Err(KindError::BadSplit {
                kind,
                got: shards.len(),
                want,
            });
        }
        shards
            .iter()
            .map(|s| rmp_serde::to_vec_named(s).map_err(|e| KindError::Failed(e.to_string())))
            .collect()
    }

    fn max_attempts(&self) -> u32 {
        Kind::max_attempts(self).max(1)
    }

    fn cost_follows_size(&self) -> bool {
        Kind::cost_follows_size(self)
    }

    fn process(&self, shard: &[u8], stop: &Stop) -> Result<Vec<u8>, KindError> {
        let kind = Kind::name(self);
        let shard: K::Shard = rmp_serde::from_slice(shard).map_err(|e| KindError::Corrupt {
            kind,
            what: "shard",
            detail: e.to_string(),
        })?;
        let partial = Kind::process_with(self, shard, stop)?;
        rmp_serde::to_vec_named(&partial).map_err(|e| KindError::Failed(e.to_string()))
    }

    fn merge(&self, parts: Vec<Vec<u8>>) -> Result<rmpv::Value, KindError> {
        let kind = Kind::name(self);
        let parts = parts
            .iter()
            .map(|p| {
                rmp_serde::from_slice::<K::Partial>(p).map_err(|e| KindError::Corrupt {
                    kind,
                    what: "partial",
                    detail: e.to_string(),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let out = Kind::merge(self, parts)?;
        crate::message::to_named_value(&out).map_err(|e| KindError::Failed(e.to_string()))
    }
}

/// Kinds by name. Cheap to clone.
#[derive(Clone, Default)]
pub struct Registry {
    kinds: BTreeMap<&'static str, Arc<dyn DynKind>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.kinds.keys()).finish()
    }
}

impl Registry {
    /// A registry with no kinds.
    pub fn empty() -> Self {
        Registry::default()
    }

    /// The built-in kinds: `wordcount`, `sort`, `checksum`, `synthetic`.
    pub fn builtin() -> Self {
        Registry::empty()
            .with(WordCount)
            .with(Sort)
            .with(Checksum::default())
            .with(Synthetic::default())
    }

    /// Add (or replace) a kind.
    #[must_use]
    pub fn with<K: Kind>(mut self, kind: K) -> Self {
        self.kinds.insert(Kind::name(&kind), Arc::new(kind));
        self
    }

    /// Look a kind up by name.
    pub fn get(&self, name: &str) -> Option<Arc<dyn DynKind>> {
        self.kinds.get(name).cloned()
    }

    /// The registered names, sorted.
    pub fn names(&self) -> Vec<&'static str> {
        self.kinds.keys().copied().collect()
    }

    #[cfg(test)]
    pub(crate) fn get_any(&self) -> Option<Arc<dyn DynKind>> {
        self.kinds.values().next().cloned()
    }
}
