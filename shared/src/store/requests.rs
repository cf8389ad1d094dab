//! A request's record (`meta` hash): create it, read it, record routes, end it early, and
//! the in-flight index.

use std::collections::{BTreeMap, HashMap};
use std::sync::LazyLock;
use std::time::Duration;

use redis::{AsyncCommands, Script};
use uuid::Uuid;

use super::{BATCH, RequestState, Store};
use crate::Error;
use crate::kind::Splitter;
use crate::message::{ErrorInfo, FailurePolicy, Format, Status};

static CREATE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../../lua/create.lua")));
static FAIL: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("../../lua/fail.lua")));

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
    "cut",
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
    /// How it was cut: a generic splitter, or [`Splitter::Custom`] for the kind's own code. A
    /// redelivered request is cut again the same way, whichever manager takes it.
    pub cut: Splitter,
}

/// What [`Store::create`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Created {
    /// The record was written now.
    New,
    /// A record already existed (the request was redelivered): its state and shard count.
    Existing {
        /// Where the existing request is.
        state: RequestState,
        /// The shard count chosen the first time.
        total: u32,
    },
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

/// A request's metadata, as stored in its `meta` hash.
#[derive(Debug, Clone, PartialEq)]
pub struct Meta {
    /// Request id.
    pub id: Uuid,
    /// Kind name.
    pub kind: String,
    /// Where it is in its life.
    pub state: RequestState,
    /// The status of the published result, once published.
    pub status: Option<Status>,
    /// How a `failing` request ends: failed, timed out or cancelled.
    pub outcome: Option<Status>,
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
    /// How it was cut (`None` in a record written before the cut was recorded).
    pub cut: Option<Splitter>,
}

impl Meta {
    /// Read the fields of a `meta` hash strictly: a missing required field or a value that is
    /// not one the scripts write is [`Error::Corrupt`].
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
        let quorum = f
            .get("quorum")
            .map(|q| q.parse::<u32>())
            .transpose()
            .map_err(|e| corrupt(format!("field quorum: {e}")))?;
        let field = |k: &str| f.get(k).map(String::as_str);
        let state = field("state")
            .ok_or_else(|| corrupt("missing field state".into()))?
            .parse::<RequestState>()
            .map_err(|e| corrupt(e.to_string()))?;
        let status_of = |k: &str| {
            field(k)
                .map(|s| Status::parse(s).ok_or_else(|| corrupt(format!("field {k}: {s:?}"))))
                .transpose()
        };
        let (status, outcome) = (status_of("status")?, status_of("outcome")?);
        let format = field("format")
            .and_then(Format::parse)
            .ok_or_else(|| corrupt(format!("field format: {:?}", field("format"))))?;
        let policy = field("policy")
            .and_then(FailurePolicy::parse)
            .ok_or_else(|| corrupt(format!("field policy: {:?}", field("policy"))))?;
        let cut = field("cut")
            .map(|c| {
                c.parse::<Splitter>()
                    .map_err(|e| corrupt(format!("field cut: {e}")))
            })
            .transpose()?;
        let error = f.get("error_code").map(|code| ErrorInfo {
            code: code.clone(),
            message: f.get("error").cloned().unwrap_or_default(),
        });
        Ok(Meta {
            id,
            kind: f.remove("kind").unwrap_or_default(),
            state,
            status,
            outcome,
            total,
            done,
            created,
            deadline,
            reply_to: f.remove("reply_to").filter(|s| !s.is_empty()),
            correlation_id: f.remove("correlation_id").filter(|s| !s.is_empty()),
            format,
            error,
            policy,
            quorum,
            cut,
        })
    }
}

impl Store {
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
            .arg(&req.manager)
            .arg("cut")
            .arg(req.cut.as_str());
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
        // Before the caller sends the shards and acks the request (two slots, two nodes).
        let meta = n.meta_key(req.id);
        let index = n.inflight_key();
        tokio::try_join!(self.replicated(&meta), self.replicated(&index))?;
        match created {
            1 => Ok(Created::New),
            0 => {
                let state = state.parse().map_err(|_| Error::Script {
                    script: "create",
                    reply: format!("{{0, {state:?}, {total}}}"),
                })?;
                Ok(Created::Existing { state, total })
            }
            other => Err(Error::Script {
                script: "create",
                reply: format!("{{{other}, {state:?}, {total}}}"),
            }),
        }
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

    /// Read a request's metadata, or `None` when it does not exist (any more).
    ///
    /// # Errors
    /// Redis failures, or a record without the required fields.
    pub async fn meta(&self, id: Uuid) -> Result<Option<Meta>, Error> {
        // Only the request's own fields: the hash also holds fields per shard (route, tries,
        // processing time), which for a large fan-out would cost megabytes to read.
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

    /// A request's `state` alone (cheap), or `None` when it does not exist.
    ///
    /// # Errors
    /// Redis failures, or a state the scripts never write ([`Error::Corrupt`]).
    pub async fn state(&self, id: Uuid) -> Result<Option<RequestState>, Error> {
        let mut c = self.conn();
        let state: Option<String> = c.hget(self.names.meta_key(id), "state").await?;
        parse_state(id, state)
    }

    /// The engine each shard of a request was routed to (index → engine id; `(shared)` for the
    /// shared queue), read in pages so that a large fan-out is never read in one reply.
    ///
    /// # Errors
    /// Redis failures.
    pub async fn routes(&self, id: Uuid) -> Result<BTreeMap<u32, String>, Error> {
        self.per_shard(id, "shard.").await
    }

    /// How many times each shard of a request was started, for the shards delivered more than
    /// once (index → tries, the first included); read in pages like [`Store::routes`].
    ///
    /// # Errors
    /// Redis failures.
    pub async fn attempts(&self, id: Uuid) -> Result<BTreeMap<u32, u32>, Error> {
        Ok(self
            .per_shard(id, "attempts.")
            .await?
            .into_iter()
            .filter_map(|(i, n)| Some((i, n.parse().ok()?)))
            .collect())
    }

    /// How long each settled shard of a request took to process (index → time), read in pages
    /// like [`Store::routes`]. Failed shards have none.
    ///
    /// # Errors
    /// Redis failures.
    pub async fn timings(&self, id: Uuid) -> Result<BTreeMap<u32, Duration>, Error> {
        Ok(self
            .per_shard(id, "took.")
            .await?
            .into_iter()
            .filter_map(|(i, us)| Some((i, Duration::from_micros(us.parse().ok()?))))
            .collect())
    }

    /// The metadata fields `<prefix><index>` of a request, by index, read in pages.
    async fn per_shard(&self, id: Uuid, prefix: &str) -> Result<BTreeMap<u32, String>, Error> {
        let key = self.names.meta_key(id);
        let mut c = self.conn();
        let mut found = BTreeMap::new();
        let mut cursor = String::from("0");
        loop {
            let (next, flat): (String, Vec<String>) = redis::cmd("HSCAN")
                .arg(&key)
                .arg(&cursor)
                .arg("MATCH")
                .arg(format!("{prefix}*"))
                .arg("COUNT")
                .arg(BATCH)
                .query_async(&mut c)
                .await?;
            for pair in flat.chunks_exact(2) {
                if let Some(i) = pair[0].strip_prefix(prefix).and_then(|i| i.parse().ok()) {
                    found.insert(i, pair[1].clone());
                }
            }
            if next == "0" {
                return Ok(found);
            }
            cursor = next;
        }
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
        let mut eval = Self::evalsha(&FAIL, &[n.meta_key(id), n.lease_key(id)]);
        eval.arg(holder.unwrap_or(""))
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
            .arg(id.to_string());
        let code: i64 = self.eval_replicated("fail", &FAIL, eval).await?;
        match code {
            0 => Ok(Ended::NotRunning),
            1 => Ok(Ended::Claimed),
            2 => Ok(Ended::Marked),
            3 => Ok(Ended::Remembered),
            other => Err(Error::Script {
                script: "fail",
                reply: other.to_string(),
            }),
        }
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
        let Some((first, stop)) = super::ranks(start, limit) else {
            return Ok(Vec::new());
        };
        let mut c = self.conn();
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
}

/// A request's `state` field as read from its meta hash (`None`: no record); a value that
/// does not parse is [`Error::Corrupt`].
pub(super) fn parse_state(id: Uuid, state: Option<String>) -> Result<Option<RequestState>, Error> {
    state
        .map(|s| s.parse::<RequestState>())
        .transpose()
        .map_err(|e| Error::Corrupt {
            id,
            detail: e.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    const GOOD: &[(&str, &str)] = &[
        ("kind", "sort"),
        ("state", "running"),
        ("total", "3"),
        ("done", "1"),
        ("created", "10"),
        ("deadline", "20"),
        ("format", "json"),
        ("policy", "partial"),
    ];

    /// A record as the scripts write it reads back typed.
    #[test]
    fn a_record_parses() {
        let id = Uuid::new_v4();
        let m = Meta::parse(id, fields(GOOD)).expect("parses");
        assert_eq!(
            (m.state, m.format, m.policy, m.total, m.done),
            (
                RequestState::Running,
                Format::Json,
                FailurePolicy::Partial,
                3,
                1
            )
        );
    }

    /// A value the scripts never write is corrupt state, never read as some default.
    #[test]
    fn unknown_values_are_corrupt() {
        let id = Uuid::new_v4();
        for (field, bad) in [
            ("state", "done"),
            ("format", "xml"),
            ("policy", "lenient"),
            ("status", "ok"),
            ("outcome", ""),
            ("quorum", "two"),
        ] {
            let mut f = fields(GOOD);
            f.insert(field.into(), bad.into());
            let parsed = Meta::parse(id, f);
            assert!(
                matches!(parsed, Err(Error::Corrupt { .. })),
                "{field}={bad:?} gave {parsed:?}"
            );
        }
        let mut f = fields(GOOD);
        f.remove("format");
        assert!(matches!(Meta::parse(id, f), Err(Error::Corrupt { .. })));
    }
}
