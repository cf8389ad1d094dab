//! The type-erased view of a kind, and the name → kind registry both binaries use.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::{Checksum, Kind, KindError, Sort, Splitter, Stop, Synthetic, WordCount};

/// A kind behind MessagePack bytes, so the manager and worker can hold any kind by name.
/// Implemented for every [`Kind`]; implement it yourself only for a kind whose types are
/// known at run time (the worker's command kinds are).
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
    /// Turn pieces a client cut itself into shards, one each: every piece is decoded as the
    /// kind's input and made one shard (`split(piece, 1)`). Returns the shards encoded as
    /// MessagePack and the request's size (the pieces' sizes added up).
    ///
    /// # Errors
    /// [`KindError::InvalidPayload`] naming the first piece that is not the kind's input, or
    /// [`KindError::Empty`] for an empty piece.
    fn split_pieces(&self, pieces: Vec<rmpv::Value>) -> Result<(Vec<Vec<u8>>, u64), KindError>;
    /// See [`Kind::max_attempts`].
    fn max_attempts(&self) -> u32;
    /// See [`Kind::shard_size_hint`].
    fn shard_size_hint(&self) -> u64;
    /// See [`Kind::splitter`].
    fn splitter(&self) -> Splitter;
    /// See [`Kind::cost_follows_size`].
    fn cost_follows_size(&self) -> bool;
    /// See [`Kind::hedge_safe`].
    fn hedge_safe(&self) -> bool;
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

    fn split_pieces(&self, pieces: Vec<rmpv::Value>) -> Result<(Vec<Vec<u8>>, u64), KindError> {
        let kind = Kind::name(self);
        let mut size = 0u64;
        let mut shards = Vec::with_capacity(pieces.len());
        for (i, piece) in pieces.into_iter().enumerate() {
            let input: K::Input =
                rmpv::ext::from_value(piece).map_err(|e| KindError::InvalidPayload {
                    kind,
                    detail: format!("shard {i}: {e}"),
                })?;
            let piece_size = self.size(&input);
            if piece_size == 0 {
                return Err(KindError::InvalidPayload {
                    kind,
                    detail: format!("shard {i} is empty"),
                });
            }
            size = size.saturating_add(piece_size);
            let one = Kind::split(self, input, 1);
            let [shard] = one.as_slice() else {
                return Err(KindError::BadSplit {
                    kind,
                    got: one.len(),
                    want: 1,
                });
            };
            shards.push(
                rmp_serde::to_vec_named(shard).map_err(|e| KindError::Failed(e.to_string()))?,
            );
        }
        if shards.is_empty() {
            return Err(KindError::Empty(kind));
        }
        Ok((shards, size))
    }

    fn max_attempts(&self) -> u32 {
        Kind::max_attempts(self).max(1)
    }

    fn shard_size_hint(&self) -> u64 {
        Kind::shard_size_hint(self).max(1)
    }

    fn splitter(&self) -> Splitter {
        Kind::splitter(self)
    }

    fn cost_follows_size(&self) -> bool {
        Kind::cost_follows_size(self)
    }

    fn hedge_safe(&self) -> bool {
        Kind::hedge_safe(self)
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

/// The names of the built-in kinds ([`Registry::builtin`]), sorted: what an engine that does
/// not say which kinds it serves (a worker from before kinds were advertised) is taken to
/// serve.
pub const BUILTIN_KINDS: [&str; 4] = ["checksum", "sort", "synthetic", "wordcount"];

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

    /// Add a kind already behind [`DynKind`] (one built at run time, such as a worker's
    /// command kind), unless a kind of that name is registered.
    ///
    /// # Errors
    /// The name is taken.
    pub fn try_with_dyn(mut self, kind: Arc<dyn DynKind>) -> Result<Self, String> {
        let name = kind.name();
        if self.kinds.contains_key(name) {
            return Err(format!("kind {name:?} is registered already"));
        }
        self.kinds.insert(name, kind);
        Ok(self)
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Each piece becomes exactly the shard the kind would cut from it alone, in order, and
    /// the request's size is the pieces' sizes added up.
    #[test]
    fn pieces_become_one_shard_each() {
        let sort = Registry::builtin().get("sort").expect("sort");
        let pieces = vec![
            rmpv::Value::Array(vec![3.into(), 1.into()]),
            rmpv::Value::Array(vec![2.into()]),
        ];
        let (shards, size) = sort.split_pieces(pieces.clone()).expect("pieces");
        assert_eq!(size, 3);
        let alone: Vec<Vec<u8>> = pieces
            .into_iter()
            .flat_map(|p| sort.split(p, &mut |_, _| 1).expect("split"))
            .collect();
        assert_eq!(shards, alone);
    }

    /// The list of built-in names is the built-in registry's.
    #[test]
    fn builtin_kinds_are_listed() {
        assert_eq!(Registry::builtin().names(), BUILTIN_KINDS);
    }

    /// A built-in kind that names a generic splitter gives the same answer when a manager
    /// without its code cuts it with that splitter, at every shard count.
    #[test]
    fn generic_splits_of_builtin_kinds_give_the_whole_answer() {
        let registry = Registry::builtin();
        let cases = [
            (
                "wordcount",
                rmpv::Value::from("the cat  the dog\na cat\tsat on the mat"),
            ),
            (
                "sort",
                rmpv::Value::Array([5, -3, 9, 1, 1, 7, 0].map(rmpv::Value::from).to_vec()),
            ),
        ];
        for (name, input) in cases {
            let kind = registry.get(name).expect("kind");
            let splitter = kind.splitter();
            assert!(splitter.is_generic(), "{name}");
            let run = |shards: Vec<Vec<u8>>| {
                let parts = shards
                    .iter()
                    .map(|s| kind.process(s, &Stop::new()).expect("process"))
                    .collect();
                kind.merge(parts).expect("merge")
            };
            let whole = run(kind.split(input.clone(), &mut |_, _| 1).expect("split"));
            for n in 1..=7 {
                let (shards, _) = splitter
                    .split(input.clone(), 1, &mut |_, _| n)
                    .expect("generic split");
                assert_eq!(run(shards), whole, "{name} cut {n} ways by {splitter}");
            }
        }
    }

    /// A piece of the wrong type or an empty one is named by its index; no pieces is empty.
    #[test]
    fn bad_pieces_are_named() {
        let sort = Registry::builtin().get("sort").expect("sort");
        let wrong = vec![rmpv::Value::Array(vec![1.into()]), "x".into()];
        let e = sort.split_pieces(wrong).expect_err("wrong type");
        assert!(
            matches!(&e, KindError::InvalidPayload { detail, .. } if detail.starts_with("shard 1:")),
            "{e}"
        );
        let empty = vec![rmpv::Value::Array(vec![])];
        let e = sort.split_pieces(empty).expect_err("empty piece");
        assert!(e.to_string().contains("shard 0 is empty"), "{e}");
        assert!(matches!(
            sort.split_pieces(Vec::new()),
            Err(KindError::Empty("sort"))
        ));
    }
}
