//! Kinds of work: how a request is split, how a shard is processed, how partials are merged.
//!
//! Implement [`Kind`] with your own serde types and register it in a [`Registry`]; the manager
//! and the worker look kinds up by name. The contract:
//!
//! - `split(input, n)` returns **exactly `n`** shards and is **deterministic**: a request that is
//!   re-driven after a crash is split again and must produce the same shards.
//! - `process` is a pure function of its shard (a redelivered shard may run twice; the first
//!   stored result wins).
//! - `merge` receives the partials **in shard order**.
//! - a long `process` should check a [`Stop`] (override [`Kind::process_with`]), so that a
//!   cancelled request frees its workers and a shard stops before the worker's time limit.
//! - `merge(split(x, n).map(process)) == merge([process(split(x, 1)[0])])` for every `n`: the
//!   shard count never changes the answer. Each built-in kind has a property test for this.
//!
//! ```
//! use serde::{Deserialize, Serialize};
//! use shardline::kind::{Kind, KindError, Registry};
//!
//! /// Sums a list of integers.
//! struct Sum;
//!
//! impl Kind for Sum {
//!     type Input = Vec<i64>;
//!     type Shard = Vec<i64>;
//!     type Partial = i64;
//!     type Output = i64;
//!
//!     fn name(&self) -> &'static str { "sum" }
//!     fn size(&self, input: &Vec<i64>) -> u64 { input.len() as u64 }
//!     fn split(&self, input: Vec<i64>, n: usize) -> Vec<Vec<i64>> {
//!         shardline::kind::even_chunks(&input, n).into_iter().map(<[i64]>::to_vec).collect()
//!     }
//!     fn process(&self, shard: Vec<i64>) -> Result<i64, KindError> {
//!         Ok(shard.iter().sum())
//!     }
//!     fn merge(&self, parts: Vec<i64>) -> Result<i64, KindError> {
//!         Ok(parts.iter().sum())
//!     }
//! }
//!
//! let registry = Registry::builtin().with(Sum);
//! assert!(registry.get("sum").is_some());
//! ```
//! A worker binary for such a registry is a few lines: see `worker/examples/custom_kind.rs`.

mod advert;
pub mod checksum;
mod registry;
pub mod sort;
pub mod splitter;
mod stop;
pub mod synthetic;
pub mod wordcount;

use serde::{Serialize, de::DeserializeOwned};

pub use advert::{Advert, check_name};
pub use checksum::Checksum;
pub use registry::{BUILTIN_KINDS, DynKind, Registry};
pub use sort::Sort;
pub use splitter::Splitter;
pub use stop::Stop;
pub use synthetic::Synthetic;
pub use wordcount::WordCount;

/// How many times a shard may be tried, unless its kind says otherwise.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;

/// A kind's failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KindError {
    /// The input does not fit the kind's input type.
    #[error("invalid payload for {kind}: {detail}")]
    InvalidPayload {
        /// The kind.
        kind: &'static str,
        /// What the decoder said.
        detail: String,
    },
    /// The input has nothing to work on.
    #[error("empty payload for {0}")]
    Empty(&'static str),
    /// A shard or partial could not be decoded (corrupt or from another version).
    #[error("corrupt {what} for {kind}: {detail}")]
    Corrupt {
        /// The kind.
        kind: &'static str,
        /// `shard` or `partial`.
        what: &'static str,
        /// What the decoder said.
        detail: String,
    },
    /// `split` broke its contract.
    #[error("{kind}: split returned {got} shards, {want} asked")]
    BadSplit {
        /// The kind.
        kind: &'static str,
        /// Shards returned.
        got: usize,
        /// Shards asked for.
        want: usize,
    },
    /// The work itself failed.
    #[error("{0}")]
    Failed(String),
    /// The shard stopped at a check because its [`Stop`] flag was raised.
    #[error("stopped before finishing")]
    Stopped,
}

/// A kind of work, in its own types. See the [module docs](self) for the contract.
pub trait Kind: Send + Sync + 'static {
    /// What a request's `payload` decodes into.
    type Input: DeserializeOwned;
    /// One shard's input.
    type Shard: Serialize + DeserializeOwned;
    /// One shard's result.
    type Partial: Serialize + DeserializeOwned;
    /// The merged result.
    type Output: Serialize;

    /// The registry name, e.g. `wordcount`.
    fn name(&self) -> &'static str;
    /// Size estimate in the kind's natural unit (bytes, items, cost units); 0 means empty.
    /// At most `size` shards are cut.
    fn size(&self, input: &Self::Input) -> u64;
    /// Preferred amount of work per shard, in the unit of [`Kind::size`]; the manager cuts
    /// about `size / shard_size_hint` shards (more when engines would otherwise idle).
    fn shard_size_hint(&self) -> u64 {
        1
    }
    /// How many times a shard may be tried before it counts as poison and its request fails.
    /// A try that returns an error, panics, or kills the worker counts; tries are spaced by an
    /// exponential backoff.
    fn max_attempts(&self) -> u32 {
        DEFAULT_MAX_ATTEMPTS
    }
    /// Whether a shard's processing time grows with its encoded size (true for most kinds).
    /// Workers then learn each kind's time per byte and run the shards they expect to take
    /// microseconds on the async runtime's own thread, saving the hand-off to a blocking
    /// thread and back. Return false when the time is set by something else (a cost field in
    /// the payload, an external call): every shard then runs on a blocking thread, where the
    /// worker can stop it and enforce its time limit.
    fn cost_follows_size(&self) -> bool {
        true
    }
    /// Whether a shard may run twice at once on two engines with no harm: `process` has no
    /// effect outside its own result (no writes elsewhere, no calls that must happen once).
    /// A manager with hedging on sends a late shard of such a kind a second time, to another
    /// engine; the first stored result wins and the other copy is stopped. False by default.
    fn hedge_safe(&self) -> bool {
        false
    }
    /// The generic splitter this kind's input is cut with, when one fits (see [`splitter`]):
    /// workers advertise it, so a manager built without this kind can still serve it. A kind
    /// that names one must accept that splitter's shards as its [`Kind::Shard`] and gives the
    /// same answer however they are cut. [`Splitter::Custom`] (the default) means only a
    /// manager built with this kind can cut its requests.
    fn splitter(&self) -> Splitter {
        Splitter::Custom
    }
    /// Cut the input into exactly `n` shards (1 ≤ n ≤ size), deterministically.
    fn split(&self, input: Self::Input, n: usize) -> Vec<Self::Shard>;
    /// Process one shard.
    ///
    /// # Errors
    /// When the work fails; the request then fails.
    fn process(&self, shard: Self::Shard) -> Result<Self::Partial, KindError>;
    /// Process one shard, returning [`KindError::Stopped`] soon after `stop` is raised (the
    /// worker raises it when the request ends or the shard outlives the worker's time limit).
    /// Override it in kinds whose shards run long; the default ignores `stop` and calls
    /// [`Kind::process`].
    ///
    /// # Errors
    /// When the work fails, or [`KindError::Stopped`].
    fn process_with(&self, shard: Self::Shard, stop: &Stop) -> Result<Self::Partial, KindError> {
        let _ = stop;
        self.process(shard)
    }
    /// Join the partials, given in shard order.
    ///
    /// # Errors
    /// When the partials cannot be joined.
    fn merge(&self, parts: Vec<Self::Partial>) -> Result<Self::Output, KindError>;
}

/// Split a slice into `n` contiguous chunks whose lengths differ by at most one.
/// Chunks may be empty when `n > items.len()`.
pub fn even_chunks<T>(items: &[T], n: usize) -> Vec<&[T]> {
    let n = n.max(1);
    let (q, r) = (items.len() / n, items.len() % n);
    let mut out = Vec::with_capacity(n);
    let mut start = 0;
    for i in 0..n {
        let len = q + usize::from(i < r);
        out.push(&items[start..start + len]);
        start += len;
    }
    out
}

#[cfg(test)]
pub(crate) mod testing {
    //! Helpers for the per-kind property tests.
    use super::*;

    /// Run a kind through split → process → merge with `n` shards, via MessagePack like the
    /// real pipeline, and return the merged output as a loose value.
    pub(crate) fn run_sharded<K: Kind>(kind: K, payload: rmpv::Value, n: usize) -> rmpv::Value {
        let registry = Registry::empty().with(kind);
        let dynk = registry.get_any().expect("one kind");
        let shards = dynk.split(payload, &mut |_, _| n).expect("split");
        assert_eq!(shards.len(), n);
        let parts = shards
            .iter()
            .map(|s| dynk.process(s, &Stop::new()).expect("process"))
            .collect();
        dynk.merge(parts).expect("merge")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quickcheck::quickcheck;

    quickcheck! {
        /// Even chunks cover the input in order with sizes within one of each other.
        fn even_chunks_cover_in_order(items: Vec<u8>, n: u8) -> bool {
            let n = usize::from(n).max(1);
            let chunks = even_chunks(&items, n);
            let joined: Vec<u8> = chunks.iter().flat_map(|c| c.iter().copied()).collect();
            let max = chunks.iter().map(|c| c.len()).max().unwrap_or(0);
            let min = chunks.iter().map(|c| c.len()).min().unwrap_or(0);
            chunks.len() == n && joined == items && max - min <= 1
        }
    }
}
