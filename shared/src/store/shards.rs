//! Per-shard accounting: a shard's result or failure (first writer wins, completion by set
//! membership), its tries, and the stored parts.

use std::collections::{BTreeMap, HashMap};
use std::sync::LazyLock;
use std::time::Duration;

use redis::{AsyncCommands, Script};
use uuid::Uuid;

use super::{BATCH, RequestState, Store};
use crate::Error;

static RECORD: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../../lua/record.lua")));
static BEGIN: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("../../lua/begin.lua")));

/// What [`Store::record`] did with a partial result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// This write completed the set (or re-claimed an expired lease): the caller finalizes.
    Claimed {
        /// Shards done.
        done: u32,
        /// Shards in all.
        total: u32,
    },
    /// Stored; more shards to go.
    Accepted {
        /// Shards done.
        done: u32,
        /// Shards in all.
        total: u32,
    },
    /// A result for this shard index was already stored; nothing changed.
    Duplicate,
    /// No such request (never created, or expired).
    Unknown,
    /// The request already ended or is failing; the result is not needed.
    Closed,
    /// The shard index is outside `0..total`.
    BadIndex,
    /// (Failures only.) This failure makes the quorum unreachable: the request is now failing
    /// and the caller holds the lease to publish that.
    QuorumLost,
    /// (Failures only.) The request's policy is fail-fast: nothing was recorded; fail the
    /// request with [`Store::fail`].
    FailFast,
}

/// What [`Store::begin`] found before a shard's retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Begun {
    /// The request runs: this is try number `n` at the shard, the uncounted first one
    /// included.
    Attempt(u32),
    /// A result or a failure of this shard is stored already: skip it.
    Settled,
    /// The request is not running any more: skip the shard.
    NotRunning(RequestState),
    /// No record: never created, or expired.
    Gone,
}

/// What a running shard's periodic check finds ([`Store::wanted`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wanted {
    /// The request runs and no result of this shard is stored: go on.
    Yes,
    /// Another copy's result is stored (a hedge copy, or the original it hedged): stop.
    Stored,
    /// The request is not running any more: stop.
    Ended(RequestState),
    /// No record: never created, or expired.
    Gone,
}

/// Where one shard settles (arguments of the resolver script).
struct Settle<'a> {
    id: Uuid,
    index: u32,
    deadline: u64,
    holder: &'a str,
    lease: Duration,
    engine: &'a str,
    elapsed: Duration,
}

impl Store {
    /// Store a shard's partial result (first writer wins) and learn whether it completed the set.
    ///
    /// # Errors
    /// Redis failures.
    #[allow(clippy::too_many_arguments)]
    pub async fn record(
        &self,
        id: Uuid,
        index: u32,
        partial: &[u8],
        deadline: u64,
        holder: &str,
        lease: Duration,
        engine: &str,
        elapsed: Duration,
    ) -> Result<Recorded, Error> {
        let settle = Settle {
            id,
            index,
            deadline,
            holder,
            lease,
            engine,
            elapsed,
        };
        self.settle(&settle, partial, "ok").await
    }

    /// Record that a shard failed for good, when the request's failure policy tolerates it
    /// (`partial`, `quorum`); with `fail_fast` nothing is recorded ([`Recorded::FailFast`]).
    ///
    /// # Errors
    /// Redis failures.
    #[allow(clippy::too_many_arguments)]
    pub async fn record_failure(
        &self,
        id: Uuid,
        index: u32,
        reason: &str,
        deadline: u64,
        holder: &str,
        lease: Duration,
        engine: &str,
    ) -> Result<Recorded, Error> {
        let settle = Settle {
            id,
            index,
            deadline,
            holder,
            lease,
            engine,
            elapsed: Duration::ZERO,
        };
        self.settle(&settle, reason.as_bytes(), "failed").await
    }

    async fn settle(&self, s: &Settle<'_>, value: &[u8], mode: &str) -> Result<Recorded, Error> {
        let (id, n) = (s.id, &self.names);
        let keys = [
            n.meta_key(id),
            n.parts_key(id),
            n.lease_key(id),
            n.failures_key(id),
        ];
        let mut eval = Self::evalsha(&RECORD, &keys);
        eval.arg(s.index)
            .arg(value)
            .arg(self.live_ttl_ms(s.deadline))
            .arg(s.lease.as_millis() as u64)
            .arg(s.holder)
            .arg(s.engine)
            .arg(s.elapsed.as_micros() as u64)
            .arg(n.events_channel())
            .arg(id.to_string())
            .arg(mode);
        // With the WAIT in the same round trip, before the caller acks the shard: a result
        // that only the primary holds would be lost with it, and the acked shard would never
        // be redelivered.
        let (code, done, total): (i64, u32, u32) =
            self.eval_replicated("record", &RECORD, eval).await?;
        Ok(match code {
            1 => Recorded::Claimed { done, total },
            0 => Recorded::Accepted { done, total },
            2 => Recorded::Duplicate,
            4 => Recorded::QuorumLost,
            5 => Recorded::FailFast,
            -1 => Recorded::Unknown,
            -2 => Recorded::Closed,
            -3 => Recorded::BadIndex,
            other => {
                return Err(Error::Script {
                    script: "record",
                    reply: format!("{{{other}, {done}, {total}}}"),
                });
            }
        })
    }

    /// Before processing a shard that was delivered before ([`crate::amqp::tried_before`]):
    /// count this try, unless the shard is settled or its request is not running. A first
    /// delivery does not call this, so its try is counted by the first call, which returns
    /// attempt 2.
    ///
    /// # Errors
    /// Redis failures, or a reply the script never gives ([`Error::Script`]).
    pub async fn begin(&self, id: Uuid, index: u32) -> Result<Begun, Error> {
        let mut c = self.conn();
        let (state, attempt): (String, u32) = BEGIN
            .key(self.names.meta_key(id))
            .key(self.names.parts_key(id))
            .key(self.names.failures_key(id))
            .arg(index)
            .invoke_async(&mut c)
            .await?;
        match state.as_str() {
            "" => return Ok(Begun::Gone),
            "settled" => return Ok(Begun::Settled),
            _ => {}
        }
        match state.parse() {
            Ok(RequestState::Running) if attempt > 0 => Ok(Begun::Attempt(attempt)),
            Ok(state) if state != RequestState::Running => Ok(Begun::NotRunning(state)),
            _ => Err(Error::Script {
                script: "begin",
                reply: format!("{{{state:?}, {attempt}}}"),
            }),
        }
    }

    /// Whether a running shard is still wanted: its request runs and no copy of it has stored
    /// a result. One round trip.
    ///
    /// # Errors
    /// Redis failures, or a state that does not parse ([`Error::Corrupt`]).
    pub async fn wanted(&self, id: Uuid, index: u32) -> Result<Wanted, Error> {
        let mut c = self.conn();
        let (state, stored): (Option<String>, bool) = redis::pipe()
            .hget(self.names.meta_key(id), "state")
            .hexists(self.names.parts_key(id), index)
            .query_async(&mut c)
            .await?;
        let Some(state) = super::requests::parse_state(id, state)? else {
            return Ok(Wanted::Gone);
        };
        Ok(match (state, stored) {
            (RequestState::Running, false) => Wanted::Yes,
            (RequestState::Running, true) => Wanted::Stored,
            (state, _) => Wanted::Ended(state),
        })
    }

    /// Shard indices that are settled: a result is stored, or (under a tolerant failure
    /// policy) a failure is recorded. Neither will run again.
    ///
    /// # Errors
    /// Redis failures.
    pub async fn settled(&self, id: Uuid) -> Result<Vec<u32>, Error> {
        let mut c = self.conn();
        let (parts, failed): (Vec<String>, Vec<String>) = redis::pipe()
            .hkeys(self.names.parts_key(id))
            .hkeys(self.names.failures_key(id))
            .query_async(&mut c)
            .await?;
        Ok(parts
            .iter()
            .chain(&failed)
            .filter_map(|k| k.parse().ok())
            .collect())
    }

    /// Failed shards (index → reason) of a request whose policy tolerates failures.
    ///
    /// # Errors
    /// Redis failures.
    pub async fn failures(&self, id: Uuid) -> Result<BTreeMap<u32, String>, Error> {
        let mut c = self.conn();
        let raw: HashMap<String, String> = c.hgetall(self.names.failures_key(id)).await?;
        Ok(raw
            .into_iter()
            .filter_map(|(k, v)| Some((k.parse().ok()?, v)))
            .collect())
    }

    /// Read all partial results in shard order.
    ///
    /// # Errors
    /// Redis failures, or a missing part ([`Error::Corrupt`]).
    pub async fn parts(&self, id: Uuid, total: u32) -> Result<Vec<Vec<u8>>, Error> {
        let indices: Vec<u32> = (0..total).collect();
        self.parts_of(id, &indices).await
    }

    /// Read the partial results of `indices`, in that order.
    ///
    /// # Errors
    /// Redis failures, or a missing part ([`Error::Corrupt`]).
    pub async fn parts_of(&self, id: Uuid, indices: &[u32]) -> Result<Vec<Vec<u8>>, Error> {
        let key = self.names.parts_key(id);
        let mut c = self.conn();
        let mut out = Vec::with_capacity(indices.len());
        for chunk in indices.chunks(BATCH) {
            let got: Vec<Option<Vec<u8>>> = redis::cmd("HMGET")
                .arg(&key)
                .arg(chunk)
                .query_async(&mut c)
                .await?;
            for (i, part) in chunk.iter().zip(got) {
                out.push(part.ok_or_else(|| Error::Corrupt {
                    id,
                    detail: format!("partial result of shard {i} is missing"),
                })?);
            }
        }
        Ok(out)
    }
}
