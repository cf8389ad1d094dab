//! Redis state of requests and engines. Every Redis command Shardline sends is in this module
//! (plus the Lua scripts in `shared/lua/`), so the layout in [`crate::names`] is the whole truth.

use std::collections::{BTreeMap, HashMap};
use std::sync::LazyLock;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, Script};
use uuid::Uuid;

use crate::message::{ErrorInfo, FailurePolicy, Format, Status};
use crate::{Error, Names, now_ms};

static CREATE: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("../lua/create.lua")));
static RECORD: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("../lua/record.lua")));
static BEGIN: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("../lua/begin.lua")));
static FAIL: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("../lua/fail.lua")));
static RELEASE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../lua/release.lua")));
static FINISH: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("../lua/finish.lua")));
static RENEW: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("../lua/renew.lua")));
static PUBLICATION: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../lua/publication.lua")));

/// How many fields one `HMGET`/`HSET` carries when a request has many shards.
const BATCH: usize = 1024;

/// The fields of a request's `meta` hash that [`Meta`] is made of (the per-shard fields
/// `shard.<i>` and `attempts.<i>` are read separately), and the cancel tombstone.
const META_FIELDS: &[&str] = &[
    "kind",
    "state",
    "status",
    "outcome",
    "total",
    "done",
    "created",
    "deadline",
    "reply_to",
    "correlation_id",
    "format",
    "error_code",
    "error",
    "policy",
    "quorum",
    "tombstone",
];

/// A new request's record, written before any shard is published.
#[derive(Debug, Clone)]
pub struct NewRequest {
    /// Request id.
    pub id: Uuid,
    /// Kind name.
    pub kind: String,
    /// Number of shards.
    pub total: u32,
    /// Epoch ms of acceptance.
    pub created: u64,
    /// Epoch ms by which it should have ended.
    pub deadline: u64,
    /// Where the result goes (AMQP `reply_to`), if anywhere special.
    pub reply_to: Option<String>,
    /// AMQP `correlation_id` to copy onto the result.
    pub correlation_id: Option<String>,
    /// Encoding of the result.
    pub format: Format,
    /// What a failed shard does to the request.
    pub policy: FailurePolicy,
    /// Shards that must succeed, with [`FailurePolicy::Quorum`].
    pub quorum: Option<u32>,
    /// Id of the manager that recorded it (the `manager` field, for inspection).
    pub manager: String,
}

/// What [`Store::create`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Created {
    /// The record was written now.
    New,
    /// A record already existed (the request was redelivered): its state and shard count.
    Existing {
        /// `running`, `finalizing`, `failing` or `published`.
        state: String,
        /// The shard count chosen the first time.
        total: u32,
    },
}

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

/// What [`Store::fail`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// The caller holds the finalizer lease: it must publish the terminal result.
    Claimed,
    /// Marked as ending; the sweeper publishes the terminal result.
    Marked,
    /// The request is not running (finished, or already ending).
    NotRunning,
    /// The request is not known (yet): a tombstone remembers the cancel for
    /// [`CANCEL_TOMBSTONE_TTL`] and applies it if the request arrives.
    Remembered,
}

/// How long a cancel for a request not seen yet is remembered.
pub const CANCEL_TOMBSTONE_TTL: Duration = Duration::from_secs(3600);

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

/// What [`Store::closing`] read.
#[derive(Debug, Clone)]
pub struct Closing {
    /// The metadata, `None` when the request is gone.
    pub meta: Option<Meta>,
    /// Failed shards (index → reason).
    pub failures: BTreeMap<u32, String>,
    /// Every part in shard order, when they were read with the rest.
    pub parts: Option<Vec<Option<Vec<u8>>>>,
}

/// A request's metadata, as stored in its `meta` hash.
#[derive(Debug, Clone, PartialEq)]
pub struct Meta {
    /// Request id.
    pub id: Uuid,
    /// Kind name.
    pub kind: String,
    /// `running`, `finalizing`, `failing` or `published`.
    pub state: String,
    /// `completed`, `failed`, `timed_out` or `cancelled` once published.
    pub status: Option<String>,
    /// How a `failing` request ends: `failed`, `timed_out` or `cancelled`.
    pub outcome: Option<String>,
    /// Number of shards.
    pub total: u32,
    /// Shards with a stored result.
    pub done: u32,
    /// Epoch ms of acceptance.
    pub created: u64,
    /// Epoch ms deadline.
    pub deadline: u64,
    /// AMQP `reply_to` of the request.
    pub reply_to: Option<String>,
    /// AMQP `correlation_id` of the request.
    pub correlation_id: Option<String>,
    /// Result encoding.
    pub format: Format,
    /// Why the request failed, when it did.
    pub error: Option<ErrorInfo>,
    /// What a failed shard does to the request.
    pub policy: FailurePolicy,
    /// Shards that must succeed, with [`FailurePolicy::Quorum`].
    pub quorum: Option<u32>,
}

impl Meta {
    fn parse(id: Uuid, mut f: HashMap<String, String>) -> Result<Self, Error> {
        let corrupt = |detail: String| Error::Corrupt { id, detail };
        let num = |k: &str| -> Result<u64, Error> {
            f.get(k)
                .ok_or_else(|| corrupt(format!("missing field {k}")))?
                .parse::<u64>()
                .map_err(|e| corrupt(format!("field {k}: {e}")))
        };
        let total = u32::try_from(num("total")?).map_err(|e| corrupt(e.to_string()))?;
        let done = u32::try_from(num("done")?).map_err(|e| corrupt(e.to_string()))?;
        let created = num("created")?;
        let deadline = num("deadline")?;
        let error = f.get("error_code").map(|code| ErrorInfo {
            code: code.clone(),
            message: f.get("error").cloned().unwrap_or_default(),
        });
        Ok(Meta {
            id,
            kind: f.remove("kind").unwrap_or_default(),
            state: f.remove("state").unwrap_or_default(),
            status: f.remove("status"),
            outcome: f.remove("outcome"),
            total,
            done,
            created,
            deadline,
            reply_to: f.remove("reply_to").filter(|s| !s.is_empty()),
            correlation_id: f.remove("correlation_id").filter(|s| !s.is_empty()),
            format: Format::parse(f.get("format").map_or("", String::as_str)),
            error,
            policy: FailurePolicy::parse(f.get("policy").map_or("", String::as_str)),
            quorum: f.get("quorum").and_then(|q| q.parse().ok()),
        })
    }
}

/// How long connecting to Redis may take, and how long one command may wait for its answer.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);

/// Redis access for one namespace.
///
/// Every command goes over one multiplexed connection (commands from concurrent tasks are
/// pipelined on it), which reconnects by itself after an error. A pool of connections would
/// check each connection out with a round trip of its own (deadpool-redis sends `PING` on
/// every checkout), as many round trips as the commands themselves.
#[derive(Clone)]
pub struct Store {
    conn: ConnectionManager,
    names: Names,
    grace: Duration,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("names", &self.names).finish()
    }
}

impl Store {
    /// How long keys outlive a request's deadline, and a published request's metadata lives.
    pub const DEFAULT_GRACE: Duration = Duration::from_secs(600);

    /// Connect and check the server answers.
    ///
    /// # Errors
    /// A bad URL, or Redis unreachable.
    pub async fn connect(url: &str, names: Names) -> Result<Self, Error> {
        let client = redis::Client::open(url)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT));
        let conn = tokio::time::timeout(
            CONNECT_TIMEOUT,
            ConnectionManager::new_with_config(client, config),
        )
        .await
        .map_err(|_| {
            Error::Redis(redis::RedisError::from((
                redis::ErrorKind::Io,
                "connecting to Redis timed out",
            )))
        })??;
        let store = Store {
            conn,
            names,
            grace: Self::DEFAULT_GRACE,
        };
        let mut c = store.conn();
        let _: String = redis::cmd("PING").query_async(&mut c).await?;
        Ok(store)
    }

    /// Change how long keys outlive a deadline and a published request.
    #[must_use]
    pub fn with_grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// The names this store builds keys from.
    pub fn names(&self) -> &Names {
        &self.names
    }

    /// The shared connection (a cheap handle; commands on clones are multiplexed).
    fn conn(&self) -> ConnectionManager {
        self.conn.clone()
    }

    /// TTL for a live request's keys: until its deadline plus the grace period.
    fn live_ttl_ms(&self, deadline: u64) -> u64 {
        deadline.saturating_sub(now_ms()) + self.grace.as_millis() as u64
    }

    // === requests ===

    /// Write a new request's record and index it, unless it already exists.
    ///
    /// # Errors
    /// Redis failures.
    pub async fn create(&self, req: &NewRequest) -> Result<Created, Error> {
        self.create_routed(req, &[]).await
    }

    /// [`Store::create`], writing the engine each shard was routed to (`shard.<i>` fields) in
    /// the same step when the record is new. An existing record keeps its routes.
    ///
    /// # Errors
    /// Redis failures.
    pub async fn create_routed(
        &self,
        req: &NewRequest,
        routes: &[(u32, &str)],
    ) -> Result<Created, Error> {
        let n = &self.names;
        let mut c = self.conn();
        let mut inv = CREATE.key(n.meta_key(req.id));
        inv.arg(self.live_ttl_ms(req.deadline))
            .arg("id")
            .arg(req.id.to_string())
            .arg("kind")
            .arg(&req.kind)
            .arg("total")
            .arg(req.total)
            .arg("created")
            .arg(req.created)
            .arg("deadline")
            .arg(req.deadline)
            .arg("format")
            .arg(req.format.as_str())
            .arg("policy")
            .arg(req.policy.as_str())
            .arg("manager")
            .arg(&req.manager);
        if let Some(q) = req.quorum {
            inv.arg("quorum").arg(q);
        }
        if let Some(r) = &req.reply_to {
            inv.arg("reply_to").arg(r);
        }
        if let Some(c) = &req.correlation_id {
            inv.arg("correlation_id").arg(c);
        }
        for (i, engine) in routes {
            inv.arg(format!("shard.{i}")).arg(*engine);
        }
        // The index lives in another Cluster slot, so it is written outside the script, on
        // the same connection at the same time (one round trip for both). ZADD is idempotent,
        // and readers of the index check each id's meta, so an entry whose record was not
        // written (an error) is harmless.
        let mut index = c.clone();
        let created = inv.invoke_async::<(i64, String, u32)>(&mut c);
        let indexed = index.zadd::<_, _, _, ()>(n.inflight_key(), req.id.to_string(), req.deadline);
        let ((created, state, total), ()) = tokio::try_join!(created, indexed)?;
        Ok(if created == 1 {
            Created::New
        } else {
            Created::Existing { state, total }
        })
    }

    /// Record which engine each shard was routed to (`shard.<i>` fields of the meta hash).
    ///
    /// # Errors
    /// Redis failures.
    pub async fn set_routes(&self, id: Uuid, routes: &[(u32, &str)]) -> Result<(), Error> {
        let key = self.names.meta_key(id);
        let mut c = self.conn();
        for chunk in routes.chunks(BATCH) {
            let items: Vec<(String, &str)> = chunk
                .iter()
                .map(|(i, e)| (format!("shard.{i}"), *e))
                .collect();
            let _: () = c.hset_multiple(&key, &items).await?;
        }
        Ok(())
    }

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
        let mut c = self.conn();
        let (code, done, total): (i64, u32, u32) = RECORD
            .key(n.meta_key(id))
            .key(n.parts_key(id))
            .key(n.lease_key(id))
            .key(n.failures_key(id))
            .arg(s.index)
            .arg(value)
            .arg(self.live_ttl_ms(s.deadline))
            .arg(s.lease.as_millis() as u64)
            .arg(s.holder)
            .arg(s.engine)
            .arg(s.elapsed.as_micros() as u64)
            .arg(n.events_channel())
            .arg(id.to_string())
            .arg(mode)
            .invoke_async(&mut c)
            .await?;
        Ok(match code {
            1 => Recorded::Claimed { done, total },
            0 => Recorded::Accepted { done, total },
            2 => Recorded::Duplicate,
            4 => Recorded::QuorumLost,
            5 => Recorded::FailFast,
            -1 => Recorded::Unknown,
            -2 => Recorded::Closed,
            _ => Recorded::BadIndex,
        })
    }

    /// End a running request early with `outcome` (a failed shard, a passed deadline, a
    /// cancel). With a `holder`, try to take the finalizer lease too.
    ///
    /// # Errors
    /// Redis failures.
    pub async fn fail(
        &self,
        id: Uuid,
        shard: Option<u32>,
        holder: Option<&str>,
        lease: Duration,
        outcome: Status,
        error: &ErrorInfo,
    ) -> Result<Ended, Error> {
        self.end(id, shard, holder, lease, outcome, error, None)
            .await
    }

    #[allow(clippy::too_many_arguments)]
    async fn end(
        &self,
        id: Uuid,
        shard: Option<u32>,
        holder: Option<&str>,
        lease: Duration,
        outcome: Status,
        error: &ErrorInfo,
        tombstone: Option<Duration>,
    ) -> Result<Ended, Error> {
        let n = &self.names;
        let mut c = self.conn();
        let code: i64 = FAIL
            .key(n.meta_key(id))
            .key(n.lease_key(id))
            .arg(holder.unwrap_or(""))
            .arg(lease.as_millis() as u64)
            .arg(&error.code)
            .arg(&error.message)
            .arg(shard.map(|i| i.to_string()).unwrap_or_default())
            .arg(outcome.as_str())
            .arg(
                tombstone
                    .map(|t| t.as_millis().to_string())
                    .unwrap_or_default(),
            )
            .arg(n.events_channel())
            .arg(id.to_string())
            .invoke_async(&mut c)
            .await?;
        Ok(match code {
            1 => Ended::Claimed,
            2 => Ended::Marked,
            3 => Ended::Remembered,
            _ => Ended::NotRunning,
        })
    }

    /// Cancel a running request: it is marked, and the sweeper publishes one `cancelled`
    /// result. Shards not yet started are skipped; running ones finish but are not counted.
    /// A request not known yet gets a tombstone: if it arrives within
    /// [`CANCEL_TOMBSTONE_TTL`], it is recorded as cancelled, no shard is published, and the
    /// sweeper publishes its `cancelled` result.
    ///
    /// # Errors
    /// Redis failures.
    pub async fn cancel(&self, id: Uuid, reason: &str) -> Result<Ended, Error> {
        let info = ErrorInfo {
            code: "cancelled".into(),
            message: reason.to_owned(),
        };
        self.end(
            id,
            None,
            None,
            Duration::ZERO,
            Status::Cancelled,
            &info,
            Some(CANCEL_TOMBSTONE_TTL),
        )
        .await
    }

    /// In-flight ids whose deadline is at or before `now` (epoch ms).
    ///
    /// # Errors
    /// Redis failures.
    pub async fn overdue(&self, now: u64, limit: usize) -> Result<Vec<Uuid>, Error> {
        let mut c = self.conn();
        let ids: Vec<String> = c
            .zrangebyscore_limit(self.names.inflight_key(), "-inf", now, 0, limit as isize)
            .await?;
        Ok(ids.iter().filter_map(|s| s.parse().ok()).collect())
    }

    /// Give back a finalizer lease this holder could not complete, so that the next delivery of
    /// one of the request's shards re-claims it at once instead of after the lease expires.
    ///
    /// # Errors
    /// Redis failures.
    pub async fn release(&self, id: Uuid, holder: &str) -> Result<bool, Error> {
        let mut c = self.conn();
        let released: i64 = RELEASE
            .key(self.names.lease_key(id))
            .arg(holder)
            .invoke_async(&mut c)
            .await?;
        Ok(released == 1)
    }

    /// Extend the finalizer lease `holder` holds to `lease` from now; false when it is not
    /// held by `holder` any more.
    ///
    /// # Errors
    /// Redis failures.
    pub async fn renew(&self, id: Uuid, holder: &str, lease: Duration) -> Result<bool, Error> {
        let mut c = self.conn();
        let renewed: i64 = RENEW
            .key(self.names.lease_key(id))
            .arg(holder)
            .arg(lease.as_millis().max(1) as u64)
            .invoke_async(&mut c)
            .await?;
        Ok(renewed == 1)
    }

    /// Before processing a shard that was delivered before ([`crate::amqp::tried_before`]):
    /// the request's state (`None` when unknown or expired; `stored` when this shard's result
    /// is already stored) and, when it is running, the number of this attempt at the shard.
    /// A first delivery does not call this, so its try is counted by the first call: the
    /// first call returns 2.
    ///
    /// # Errors
    /// Redis failures.
    pub async fn begin(&self, id: Uuid, index: u32) -> Result<(Option<String>, u32), Error> {
        let mut c = self.conn();
        let (state, attempt): (String, u32) = BEGIN
            .key(self.names.meta_key(id))
            .key(self.names.parts_key(id))
            .key(self.names.failures_key(id))
            .arg(index)
            .invoke_async(&mut c)
            .await?;
        Ok(((!state.is_empty()).then_some(state), attempt))
    }

    /// A request's `state` alone (cheap), or `None` when it does not exist.
    ///
    /// # Errors
    /// Redis failures.
    pub async fn state(&self, id: Uuid) -> Result<Option<String>, Error> {
        let mut c = self.conn();
        Ok(c.hget(self.names.meta_key(id), "state").await?)
    }

    /// Take the finalizer lease of a request that is closing (`finalizing` or `failing`) and
    /// whose lease is free: its finalizer died or gave up. True when taken.
    ///
    /// # Errors
    /// Redis failures.
    pub async fn claim_lease(
        &self,
        id: Uuid,
        holder: &str,
        lease: Duration,
    ) -> Result<bool, Error> {
        self.set_nx_px(&self.names.lease_key(id), holder, lease)
            .await
    }

    /// Take a namespace-wide lock for `ttl` (so that one manager of several does a sweep step).
    ///
    /// # Errors
    /// Redis failures.
    pub async fn try_lock(&self, name: &str, holder: &str, ttl: Duration) -> Result<bool, Error> {
        self.set_nx_px(&self.names.lock_key(name), holder, ttl)
            .await
    }

    /// `SET key holder NX PX ttl`: true when the key was free and is now ours.
    async fn set_nx_px(&self, key: &str, holder: &str, ttl: Duration) -> Result<bool, Error> {
        let mut c = self.conn();
        let taken: Option<String> = redis::cmd("SET")
            .arg(key)
            .arg(holder)
            .arg("NX")
            .arg("PX")
            .arg(ttl.as_millis() as u64)
            .query_async(&mut c)
            .await?;
        Ok(taken.is_some())
    }

    /// Read a request's metadata, or `None` when it does not exist (any more).
    ///
    /// # Errors
    /// Redis failures, or a record without the required fields.
    pub async fn meta(&self, id: Uuid) -> Result<Option<Meta>, Error> {
        // Only the request's own fields: the hash also holds two fields per shard (route and
        // attempts), which for a large fan-out would cost megabytes to read.
        let mut c = self.conn();
        let values: Vec<Option<String>> = redis::cmd("HMGET")
            .arg(self.names.meta_key(id))
            .arg(META_FIELDS)
            .query_async(&mut c)
            .await?;
        let fields: HashMap<String, String> = META_FIELDS
            .iter()
            .zip(values)
            .filter_map(|(k, v)| Some(((*k).to_owned(), v?)))
            .collect();
        // A tombstone (a cancel waiting for its request) is not a request yet.
        if fields.is_empty() || fields.contains_key("tombstone") {
            return Ok(None);
        }
        Meta::parse(id, fields).map(Some)
    }

    /// The engine each shard of a request was routed to (index → engine id; `(shared)` for the
    /// shared queue), read in pages so that a large fan-out is never read in one reply.
    ///
    /// # Errors
    /// Redis failures.
    pub async fn routes(&self, id: Uuid) -> Result<BTreeMap<u32, String>, Error> {
        let key = self.names.meta_key(id);
        let mut c = self.conn();
        let mut routes = BTreeMap::new();
        let mut cursor = String::from("0");
        loop {
            let (next, flat): (String, Vec<String>) = redis::cmd("HSCAN")
                .arg(&key)
                .arg(&cursor)
                .arg("MATCH")
                .arg("shard.*")
                .arg("COUNT")
                .arg(BATCH)
                .query_async(&mut c)
                .await?;
            for pair in flat.chunks_exact(2) {
                if let Some(i) = pair[0].strip_prefix("shard.").and_then(|i| i.parse().ok()) {
                    routes.insert(i, pair[1].clone());
                }
            }
            if next == "0" {
                return Ok(routes);
            }
            cursor = next;
        }
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
    pub async fn failures(
        &self,
        id: Uuid,
    ) -> Result<std::collections::BTreeMap<u32, String>, Error> {
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

    /// What a finalizer reads, in one round trip: the request's metadata, its failed shards,
    /// and, when the caller knows the shard count (`total`, as the claim reported it) and it
    /// is at most one batch, every part in shard order (`None` for a part not stored).
    ///
    /// # Errors
    /// Redis failures.
    pub async fn closing(&self, id: Uuid, total: Option<u32>) -> Result<Closing, Error> {
        let parts = async {
            let Some(total) = total.filter(|t| (1..=BATCH as u32).contains(t)) else {
                return Ok(None);
            };
            let mut c = self.conn();
            let got: Vec<Option<Vec<u8>>> = redis::cmd("HMGET")
                .arg(self.names.parts_key(id))
                .arg((0..total).collect::<Vec<u32>>())
                .query_async(&mut c)
                .await?;
            Ok::<_, Error>(Some(got))
        };
        let (meta, failures, parts) = tokio::try_join!(self.meta(id), self.failures(id), parts)?;
        Ok(Closing {
            meta,
            failures,
            parts,
        })
    }

    /// Count a publication of a request's final result, before it is sent: `Some(1)` for
    /// the first one ever, `Some(n)` for a re-driven one that may repeat an earlier copy, `None`
    /// when the request is gone or already published (send nothing).
    ///
    /// # Errors
    /// Redis failures.
    pub async fn publication(&self, id: Uuid) -> Result<Option<u64>, Error> {
        let mut c = self.conn();
        let n: u64 = PUBLICATION
            .key(self.names.meta_key(id))
            .invoke_async(&mut c)
            .await?;
        Ok((n > 0).then_some(n))
    }

    /// Mark a request published (its result is confirmed by the broker), drop its partials and
    /// lease, keep its metadata for the grace period, and remove it from the in-flight index
    /// (in the background, after this returns).
    ///
    /// # Errors
    /// Redis failures.
    pub async fn finish(&self, id: Uuid, status: &str) -> Result<(), Error> {
        let n = &self.names;
        let mut c = self.conn();
        let _: i64 = FINISH
            .key(n.meta_key(id))
            .key(n.parts_key(id))
            .key(n.lease_key(id))
            .key(n.failures_key(id))
            .arg(status)
            .arg(now_ms())
            .arg(self.grace.as_millis() as u64)
            .invoke_async(&mut c)
            .await?;
        // Off the finalizer's path, and only once the record says published: an entry left
        // behind (Redis failed just then) is removed by the manager's sweeper, which drops
        // index entries whose record is published or gone.
        let (key, member) = (n.inflight_key(), id.to_string());
        tokio::spawn(async move {
            if let Err(error) = c.zrem::<_, _, ()>(key, member).await {
                tracing::debug!(%error, "removing a published request from the index failed");
            }
        });
        Ok(())
    }

    /// In-flight request ids with their deadlines (epoch ms), earliest deadline first.
    ///
    /// # Errors
    /// Redis failures.
    pub async fn inflight(&self, limit: usize) -> Result<Vec<(Uuid, u64)>, Error> {
        self.inflight_page(0, limit).await
    }

    /// Like [`Store::inflight`], from rank `start` on (for paging through a large index).
    ///
    /// # Errors
    /// Redis failures.
    pub async fn inflight_page(
        &self,
        start: usize,
        limit: usize,
    ) -> Result<Vec<(Uuid, u64)>, Error> {
        let mut c = self.conn();
        let first = isize::try_from(start).unwrap_or(isize::MAX);
        let stop = first
            .saturating_add(isize::try_from(limit).unwrap_or(isize::MAX))
            .saturating_sub(1);
        let rows: Vec<(String, f64)> = c
            .zrange_withscores(self.names.inflight_key(), first, stop)
            .await?;
        Ok(rows
            .into_iter()
            .filter_map(|(id, score)| Some((id.parse().ok()?, score as u64)))
            .collect())
    }

    /// Drop an id from the in-flight index (its record expired or ended elsewhere).
    ///
    /// # Errors
    /// Redis failures.
    pub async fn forget(&self, id: Uuid) -> Result<(), Error> {
        let mut c = self.conn();
        let _: () = c.zrem(self.names.inflight_key(), id.to_string()).await?;
        Ok(())
    }

    // === engines ===

    /// Announce an engine as alive for `ttl`.
    ///
    /// # Errors
    /// Redis failures.
    pub async fn heartbeat(&self, engine: &str, info: &str, ttl: Duration) -> Result<(), Error> {
        let n = &self.names;
        let mut c = self.conn();
        // Not MULTI: the two keys live in different Redis Cluster slots.
        let _: () = redis::pipe()
            .pset_ex(n.engine_key(engine), info, ttl.as_millis() as u64)
            .ignore()
            .zadd(n.engines_key(), engine, now_ms())
            .ignore()
            .query_async(&mut c)
            .await?;
        Ok(())
    }

    /// Take an engine out of routing at once, but keep it known as dead, so that if it cannot
    /// finish handing off its queue the manager's sweeper does it.
    ///
    /// # Errors
    /// Redis failures.
    pub async fn retire(&self, engine: &str) -> Result<(), Error> {
        let n = &self.names;
        let mut c = self.conn();
        // Two slots in a Redis Cluster: two plain commands, not one MULTI.
        let _: () = c.zadd(n.engines_key(), engine, 0).await?;
        let _: () = c.del(n.engine_key(engine)).await?;
        Ok(())
    }

    /// Remove an engine (graceful shutdown).
    ///
    /// # Errors
    /// Redis failures.
    pub async fn deregister(&self, engine: &str) -> Result<(), Error> {
        let n = &self.names;
        let mut c = self.conn();
        let _: () = redis::pipe()
            .del(n.engine_key(engine))
            .ignore()
            .zrem(n.engines_key(), engine)
            .ignore()
            .query_async(&mut c)
            .await?;
        Ok(())
    }

    /// Every engine registered in the namespace, live or not, sorted by id.
    ///
    /// # Errors
    /// Redis failures.
    pub async fn known_engines(&self) -> Result<Vec<String>, Error> {
        let mut c = self.conn();
        let mut ids: Vec<String> = c.zrange(self.names.engines_key(), 0, -1).await?;
        ids.sort();
        Ok(ids)
    }

    /// Delete every key of the namespace (`SCAN` and `UNLINK` in pages, so a large namespace
    /// does not block Redis). Only for a namespace nothing runs on.
    ///
    /// # Errors
    /// Redis failures.
    pub async fn delete_namespace(&self) -> Result<(), Error> {
        let mut c = self.conn();
        let pattern = format!("{}:*", self.names.namespace());
        let mut cursor = String::from("0");
        loop {
            let (next, keys): (String, Vec<String>) = redis::cmd("SCAN")
                .arg(&cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(BATCH)
                .query_async(&mut c)
                .await?;
            if !keys.is_empty() {
                let _: i64 = redis::cmd("UNLINK").arg(keys).query_async(&mut c).await?;
            }
            if next == "0" {
                return Ok(());
            }
            cursor = next;
        }
    }

    /// Engines whose heartbeat is younger than `ttl`, sorted by id.
    ///
    /// # Errors
    /// Redis failures.
    pub async fn live_engines(&self, ttl: Duration) -> Result<Vec<String>, Error> {
        let mut c = self.conn();
        let since = now_ms().saturating_sub(ttl.as_millis() as u64);
        let mut ids: Vec<String> = c
            .zrangebyscore(self.names.engines_key(), since, "+inf")
            .await?;
        ids.sort();
        Ok(ids)
    }

    /// The heartbeat details (`concurrency=<n> pid=<p>`) of each engine, `None` for an engine
    /// whose heartbeat key expired.
    ///
    /// # Errors
    /// Redis failures.
    pub async fn engine_details(&self, engines: &[String]) -> Result<Vec<Option<String>>, Error> {
        if engines.is_empty() {
            return Ok(Vec::new());
        }
        let mut c = self.conn();
        let keys: Vec<String> = engines.iter().map(|e| self.names.engine_key(e)).collect();
        Ok(redis::cmd("MGET").arg(keys).query_async(&mut c).await?)
    }

    /// Publish a line on the namespace's events channel (see [`Names::events_channel`]).
    ///
    /// # Errors
    /// Redis failures.
    pub async fn publish_event(&self, line: &str) -> Result<(), Error> {
        let mut c = self.conn();
        let _: i64 = c.publish(self.names.events_channel(), line).await?;
        Ok(())
    }

    /// The stored history blob, if any.
    ///
    /// # Errors
    /// Redis failures.
    pub async fn load_history(&self) -> Result<Option<Vec<u8>>, Error> {
        let mut c = self.conn();
        Ok(c.get(self.names.history_key()).await?)
    }

    /// Replace the stored history blob; it expires after `ttl` without a save.
    ///
    /// # Errors
    /// Redis failures.
    pub async fn save_history(&self, blob: &[u8], ttl: Duration) -> Result<(), Error> {
        let mut c = self.conn();
        let _: () = c
            .pset_ex(self.names.history_key(), blob, ttl.as_millis() as u64)
            .await?;
        Ok(())
    }

    /// Engines whose last heartbeat is older than `ttl`: dead, or cut off.
    ///
    /// # Errors
    /// Redis failures.
    pub async fn dead_engines(&self, ttl: Duration) -> Result<Vec<String>, Error> {
        let mut c = self.conn();
        let before = now_ms().saturating_sub(ttl.as_millis() as u64);
        Ok(
            c.zrangebyscore(self.names.engines_key(), "-inf", format!("({before}"))
                .await?,
        )
    }

    /// A fresh pub/sub connection for completion events (see [`Names::events_channel`]).
    ///
    /// # Errors
    /// Redis failures.
    pub async fn raw_client(url: &str) -> Result<redis::Client, Error> {
        Ok(redis::Client::open(url)?)
    }
}
