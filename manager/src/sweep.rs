//! The sweeper: recovery work no single delivery triggers. Every manager runs one; each step
//! takes a short Redis lock or lease first, so several managers never do the same work twice.
//!
//! - **Dead engines.** An engine whose heartbeat is older than the engine TTL gets its queue
//!   drained into the shared queue (every worker consumes it) and deleted, and leaves the
//!   engine set. A worker killed with SIGKILL has its unacked shards put back in its queue by
//!   the broker, so they move too. A queue that still has a consumer is left alone (its worker
//!   may only be slow to beat), since deleting it would drop that consumer's unacked shards.
//! - **Stuck finalizers.** A request that is `finalizing` or `failing` with no lease holder (its
//!   finalizer crashed, or gave up and released the lease) is assembled and published here. The
//!   result keeps `message_id` = request id, so if the dead finalizer had already published
//!   before it could mark the request, consumers see the same message twice and can drop one.
//!   A `finalizing` request of a kind this manager was not built with needs the kind's merge:
//!   it is ordered from a worker of the kind instead ([`FinalizeOrder`] on the kind's shared
//!   queue), at most once per lease period.
//! - **Deadlines.** A running request whose deadline passed ends `timed_out` (workers skip
//!   shards past their deadline, so a lost shard cannot hold a request forever).
//! - **Cancelled requests** are marked `failing` by `shardline cancel`; the sweeper publishes
//!   their one `cancelled` result like any request without a finalizer.
//! - **Stale index entries.** Ids in the in-flight index whose record is published or gone are
//!   removed.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use lapin::BasicProperties;
use shardline::amqp::{self, Published};
use shardline::handoff::{By, handoff};
use shardline::kind::check_name;
use shardline::message::{ErrorInfo, FINALIZE_TYPE, FinalizeOrder, Status};
use shardline::metric::{self, SweepAction};
use shardline::resolve::Resolver;
use shardline::store::{Ended, EngineInfo, RequestState, Store};
use shardline::{Error, Names, Registry, now_ms};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

/// Time between sweeps.
pub const SWEEP_EVERY: Duration = Duration::from_secs(1);
/// In-flight requests examined per sweep.
const SCAN: usize = 1_000;
/// How long a dead engine's reaping lock holds.
const REAP_LOCK: Duration = Duration::from_secs(30);

/// Recovery work of one manager.
pub struct Sweeper {
    pub(crate) store: Store,
    pub(crate) names: Names,
    pub(crate) conn: Arc<lapin::Connection>,
    pub(crate) resolver: Resolver,
    /// The kinds built into this manager: a request of another kind is merged by a worker.
    pub(crate) registry: Registry,
    pub(crate) engine_ttl: Duration,
    pub(crate) lease: Duration,
    pub(crate) holder: String,
    /// Where the next pass over the in-flight index starts.
    pub(crate) cursor: AtomicUsize,
}

impl Sweeper {
    /// Sweep every [`SWEEP_EVERY`] until cancelled.
    pub async fn run(self, stop: CancellationToken) {
        let mut tick = tokio::time::interval(SWEEP_EVERY);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = tick.tick() => {
                    if let Err(error) = self.reap_dead_engines().await {
                        warn!(%error, "reaping dead engines failed");
                    }
                    if let Err(error) = self.time_out_overdue().await {
                        warn!(%error, "timing out overdue requests failed");
                    }
                    if let Err(error) = self.redrive().await {
                        warn!(%error, "re-driving stuck requests failed");
                    }
                }
            }
        }
    }

    /// Hand the queues of engines with an expired heartbeat to the shared queue.
    ///
    /// # Errors
    /// Redis or broker failures.
    pub async fn reap_dead_engines(&self) -> Result<usize, Error> {
        let mut reaped = 0;
        for engine in self.store.dead_engines(self.engine_ttl).await? {
            let lock = format!("reap:{engine}");
            if !self.store.try_lock(&lock, &self.holder, REAP_LOCK).await? {
                continue;
            }
            let (moved, gone) = handoff(&self.conn, &self.names, &engine, By::Reaper).await?;
            if gone {
                self.store.deregister(&engine).await?;
                info!(%engine, moved, "reaped a dead engine: its shards went to the shared queue");
                metric::swept(SweepAction::ReapedEngine);
                reaped += 1;
            } else {
                debug!(%engine, moved, "engine queue still consumed; not reaped yet");
            }
        }
        Ok(reaped)
    }

    /// End running requests whose deadline passed with a `timed_out` result.
    ///
    /// # Errors
    /// Redis or broker failures.
    pub async fn time_out_overdue(&self) -> Result<usize, Error> {
        let mut ended = 0;
        for id in self.store.overdue(now_ms(), SCAN).await? {
            let Some(meta) = self.store.meta(id).await? else {
                self.store.forget(id).await?;
                continue;
            };
            if meta.state != RequestState::Running {
                continue;
            }
            let info = ErrorInfo {
                code: "timed_out".into(),
                message: format!(
                    "deadline passed with {} of {} shards done",
                    meta.done, meta.total
                ),
            };
            let claimed = self
                .store
                .fail(
                    id,
                    None,
                    Some(&self.holder),
                    self.lease,
                    Status::TimedOut,
                    &info,
                )
                .await?;
            if claimed == Ended::Claimed {
                warn!(request.id = %id, done = meta.done, total = meta.total, "deadline passed; timing out");
                metric::swept(SweepAction::TimedOut);
                self.finish(id).await?;
                ended += 1;
            }
        }
        Ok(ended)
    }

    /// The request's kind, when this manager cannot merge it.
    async fn foreign_kind(&self, id: uuid::Uuid) -> Result<Option<String>, Error> {
        Ok(self
            .store
            .meta(id)
            .await?
            .map(|m| m.kind)
            .filter(|k| self.registry.get(k).is_none()))
    }

    /// Ask a worker of `kind` to finalize the request, unless no live engine serves the kind
    /// (orders would only pile up in its queue) or this or another manager ordered it within
    /// the lease period. True when the order went out.
    async fn order_finalize(&self, id: uuid::Uuid, kind: &str) -> Result<bool, Error> {
        if check_name(kind).is_err() || !self.someone_serves(kind).await? {
            debug!(request.id = %id, %kind, "no live engine serves the kind; the merge waits");
            return Ok(false);
        }
        let lock = format!("finalize:{id}");
        if !self.store.try_lock(&lock, &self.holder, self.lease).await? {
            return Ok(false);
        }
        let ch = amqp::confirm_channel(&self.conn).await?;
        amqp::declare_kind_queue(&ch, &self.names, kind).await?;
        let body = rmp_serde::to_vec_named(&FinalizeOrder { request_id: id })?;
        let props = BasicProperties::default()
            .with_message_id(format!("finalize:{id}").into())
            .with_type(FINALIZE_TYPE.into());
        let queue = self.names.kind_queue(kind);
        let published = amqp::publish(&ch, "", &queue, &body, props, true).await?;
        let _ = ch.close(200, "done".into()).await;
        if !matches!(published, Published::Stored) {
            return Err(Error::Nacked(queue));
        }
        warn!(request.id = %id, %kind, "no finalizer holds this request; ordered one from a worker of its kind");
        metric::swept(SweepAction::RedrivenFinalizer);
        Ok(true)
    }

    /// Whether a live engine serves `kind`.
    async fn someone_serves(&self, kind: &str) -> Result<bool, Error> {
        let live = self.store.live_engines(self.engine_ttl).await?;
        let details = self.store.engine_details(&live).await?;
        Ok(details
            .iter()
            .flatten()
            .any(|d| EngineInfo::parse(d).serves(kind)))
    }

    async fn finish(&self, id: uuid::Uuid) -> Result<(), Error> {
        if let Err(error) = self.resolver.finalize(id, &self.holder, self.lease).await {
            warn!(request.id = %id, %error, "publishing the terminal result failed; retrying later");
            self.store.release(id, &self.holder).await?;
        }
        Ok(())
    }

    /// Finalize requests whose finalizer is gone; drop finished ids from the index.
    ///
    /// # Errors
    /// Redis or broker failures.
    pub async fn redrive(&self) -> Result<usize, Error> {
        let mut redriven = 0;
        // Page through the whole index, SCAN ids a pass, so that a long index cannot starve
        // requests far from its head.
        let start = self.cursor.load(Ordering::Relaxed);
        let page = self.store.inflight_page(start, SCAN).await?;
        let next = if page.len() < SCAN {
            0
        } else {
            start + page.len()
        };
        self.cursor.store(next, Ordering::Relaxed);
        for (id, _) in page {
            let state = match self.store.state(id).await {
                Err(error @ Error::Corrupt { .. }) => {
                    // Nothing can finish it; leave the index rather than log it every pass.
                    error!(%error, "dropping a corrupt request from the in-flight index");
                    self.store.forget(id).await?;
                    continue;
                }
                state => state?,
            };
            match state {
                None | Some(RequestState::Published) => self.store.forget(id).await?,
                Some(state) if state.is_closing() => {
                    if !self.store.claim_lease(id, &self.holder, self.lease).await? {
                        continue;
                    }
                    if state == RequestState::Finalizing
                        && let Some(kind) = self.foreign_kind(id).await?
                    {
                        self.store.release(id, &self.holder).await?;
                        if self.order_finalize(id, &kind).await? {
                            redriven += 1;
                        }
                        continue;
                    }
                    // A cancel leaves its request for the sweeper to publish: not a fault.
                    let cancelled = self
                        .store
                        .meta(id)
                        .await?
                        .is_some_and(|m| m.outcome == Some(Status::Cancelled));
                    if cancelled {
                        info!(request.id = %id, "publishing the cancelled result");
                    } else {
                        warn!(request.id = %id, "no finalizer holds this request; finalizing here");
                        metric::swept(SweepAction::RedrivenFinalizer);
                    }
                    self.finish(id).await?;
                    redriven += 1;
                }
                Some(_) => {}
            }
        }
        Ok(redriven)
    }
}
