//! Handling one request: split, route, record in Redis, publish every shard with confirms.
//!
//! Order matters for "nothing lost": the request is recorded in Redis *before* any shard is
//! published, and the request message is acked only after every shard is confirmed. A manager
//! that dies in between leaves the request unacked; the broker redelivers it, the record is
//! found, the request is split again with the recorded shard count (splits are
//! deterministic), and only shards without a stored result are published again.
//!
//! Shards the router holds ([`crate::hold`]) are published as the hold lets them go; the request
//! is acked after the last of them.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use lapin::BasicProperties;
use lapin::message::{BasicReturnMessage, Delivery};
use lapin::options::{BasicAckOptions, BasicNackOptions};
use shardline::activity::{Counters, Event};
use shardline::amqp::{self, Published, ReplyTo};
use shardline::kind::KindError;
use shardline::locality::Locality;
use shardline::message::{FinalResult, Input, Options, Shard};
use shardline::metric;
use shardline::store::{
    Created, DeadKind, DeadLetter, Meta, NewRequest, Rejected, RequestState, Store,
};
use shardline::{Error, Names, RejectReason, now_ms};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, error, info, info_span, warn};
use uuid::Uuid;

use crate::config::Config;
use crate::engines::{Engine, Engines};
use crate::hold::{Hold, Holding, Release};
use crate::intake::{self, Accepted, Rejection};
use crate::kinds::{Catalog, Cutter};
use crate::ledger::Reservation;
use crate::plan::Plan;
use crate::predictor::{Predictor, Shards};
use crate::route::Router;
use crate::scale::Demand;

/// Shard publishes in flight at once for one request.
const PUBLISH_CONCURRENCY: usize = 256;
/// Fan-outs at least this large measure the per-shard publish cost.
const MEASURE_FROM: usize = 16;
/// Longest time between two looks at the hold without a completion event.
pub const HOLD_TICK: Duration = Duration::from_millis(50);
/// Pause before a request that hit a transient error is put back on the queue.
const RETRY_PAUSE: Duration = Duration::from_secs(1);
/// AMQP `type` of a message on the request exchange that cancels the request named by its
/// `message_id`.
pub const CANCEL_TYPE: &str = "cancel";
/// Route recorded for shards sent to the shared queue.
pub const SHARED_ROUTE: &str = crate::ledger::SHARED;
/// Route recorded for shards the manager holds until an engine may take them.
pub const HELD_ROUTE: &str = "(held)";
/// Up to this many shards, a new request's routes are written with its record in one Redis
/// step; a wider request writes them apart, in batches.
const ROUTES_WITH_RECORD: usize = 1024;

/// The router and the shards it holds, behind one lock so that a placement and a release never
/// miss each other's ledger entries.
pub struct Routing {
    /// The policy.
    pub router: Box<dyn Router>,
    /// Shards waiting in the manager (empty unless the router [`Router::holds`]).
    pub hold: Hold,
}

/// Where one request's shards go: engines or the shared queue now, or later from the hold.
struct Placement<'a> {
    routes: Vec<Option<String>>,
    reserved: Reservation<'a>,
    holding: Option<Holding<'a>>,
}

/// What the store holds of a request before this delivery.
enum Prior {
    /// Finished already: this delivery is a duplicate, dropped.
    Finished,
    /// Not finished: its record, if an earlier delivery left one.
    Open(Option<Meta>),
}

/// A kind's split: the shard payloads, by index.
type Split = Result<Vec<Vec<u8>>, KindError>;

/// One request cut into shards, with what its record, its shards and the predictor need.
struct Cut {
    /// Request id.
    id: Uuid,
    /// Kind name.
    kind: String,
    /// Shard payloads, by index (taken out when the shards are published).
    payloads: Vec<Vec<u8>>,
    /// The request's size, as its kind measures it.
    size: u64,
    /// Shard count.
    total: u32,
    /// How it was cut.
    cutter: Cutter,
    /// Where the result goes.
    reply: ReplyTo,
    /// The request's options.
    options: Options,
    /// Where its shards' data lives.
    locality: Arc<Locality>,
    /// Epoch ms this dispatch began.
    created: u64,
    /// Epoch ms deadline (the recorded one, for a request recorded before).
    deadline: u64,
    /// Attempt number the shards carry: 2 when the request was recorded before.
    attempt: u32,
    /// The live engines the shard count was planned for, and the shards are placed on.
    engines: Vec<Engine>,
    /// When planning began: the dispatch timings the predictor learns from start here.
    begun: Instant,
}

impl Cut {
    /// The mean shard size, which placement weighs shards by.
    fn shard_size(&self) -> f64 {
        self.size as f64 / f64::from(self.total.max(1))
    }

    /// Shard `index` of this request, carrying `payload`.
    fn shard(&self, index: u32, payload: Vec<u8>) -> Shard {
        Shard {
            request_id: self.id,
            index,
            total: self.total,
            kind: self.kind.clone(),
            attempt: self.attempt,
            deadline: self.deadline,
            payload,
        }
    }

    /// The request's record, as manager `manager` writes it.
    fn record(&self, manager: &str) -> NewRequest {
        NewRequest {
            id: self.id,
            kind: self.kind.clone(),
            total: self.total,
            created: self.created,
            deadline: self.deadline,
            reply_to: self.reply.reply_to.clone(),
            correlation_id: self.reply.correlation_id.clone(),
            format: self.reply.format,
            policy: self.options.failure_policy.unwrap_or_default(),
            quorum: self.options.quorum,
            manager: manager.to_owned(),
            cut: self.cutter.splitter(),
        }
    }
}

/// The properties a shard is published with: its message id (`<request>:<index>`), the
/// content type, and its kind's name as the type.
pub(crate) fn shard_properties(message_id: &str, kind: &str) -> BasicProperties {
    BasicProperties::default()
        .with_message_id(message_id.into())
        .with_content_type(shardline::message::CONTENT_TYPE_MSGPACK.into())
        .with_type(kind.into())
}

/// Whether the delivery is a cancel message rather than a request.
fn is_cancel(delivery: &Delivery) -> bool {
    delivery.properties.kind().as_ref().map(|k| k.as_str()) == Some(CANCEL_TYPE)
}

/// Whether shard `index` is in the hold.
fn is_held(holding: Option<&Holding<'_>>, index: u32) -> bool {
    holding.is_some_and(|h| h.holds(index))
}

/// Everything a request handler needs.
pub struct Dispatcher {
    /// This manager's id (`manager-<uuid>`), written into each request it records.
    pub(crate) id: String,
    pub(crate) config: Config,
    pub(crate) names: Names,
    pub(crate) store: Store,
    pub(crate) channel: lapin::Channel,
    /// The kinds served, and how each is cut.
    pub(crate) catalog: Arc<Catalog>,
    /// Kinds whose shared queue this manager has declared.
    pub(crate) declared: Mutex<HashSet<String>>,
    pub(crate) engines: Engines,
    pub(crate) predictor: Predictor,
    /// The scaling signal's arrival series.
    pub(crate) demand: Arc<Demand>,
    /// This namespace's activity counts (the dashboard's charts).
    pub(crate) activity: Arc<Counters>,
    pub(crate) routing: Mutex<Routing>,
}

impl Dispatcher {
    /// Handle one delivery from the request queue: ack it once its effect is durable, or put
    /// it back after a transient failure.
    pub async fn handle(&self, delivery: Delivery) {
        let id = intake::request_id(&delivery.properties);
        let span = info_span!("request", request.id = %id, redelivered = delivery.redelivered);
        async {
            match self.dispatch(id, &delivery).await {
                Ok(()) => {
                    if let Err(error) = delivery.ack(BasicAckOptions::default()).await {
                        warn!(%error, "ack failed; the request will be redelivered and deduplicated");
                    }
                }
                Err(e) if e.is_transient() => {
                    warn!(error = %e, "transient failure; requeueing the request");
                    tokio::time::sleep(RETRY_PAUSE).await;
                    let requeue = BasicNackOptions { requeue: true, multiple: false };
                    if let Err(error) = delivery.nack(requeue).await {
                        warn!(%error, "nack failed; the broker will redeliver on reconnect");
                    }
                }
                Err(e) => {
                    error!(error = %e, "request cannot be handled; dead-lettering it");
                    let rej = Rejection {
                        id,
                        kind: String::new(),
                        reason: RejectReason::Internal,
                        message: e.to_string(),
                        reply: intake::reply_to(&delivery.properties),
                    };
                    let settled = match self.reject(&delivery, rej).await {
                        Ok(()) => delivery.ack(BasicAckOptions::default()).await,
                        Err(_) => delivery.nack(BasicNackOptions::default()).await,
                    };
                    if let Err(error) = settled {
                        warn!(%error, "settling a failed request failed");
                    }
                }
            }
        }
        .instrument(span)
        .await;
    }

    /// Handle one request, step by step; a step that rejects the request, or finds nothing
    /// (more) to publish, ends it there.
    async fn dispatch(&self, id: Uuid, delivery: &Delivery) -> Result<(), Error> {
        if is_cancel(delivery) {
            return self.cancel(id).await;
        }
        let accepted = match self.accept(id, delivery) {
            Ok(a) => a,
            Err(rej) => return self.reject(delivery, *rej).await,
        };
        let Prior::Open(existing) = self.prior_record(id, delivery.redelivered).await? else {
            return Ok(());
        };
        let cutter = match self.cutter(id, &accepted, existing.as_ref()).await? {
            Ok(c) => c,
            Err(rej) => return self.reject(delivery, *rej).await,
        };
        let mut cut = match self.cut(id, accepted, cutter, existing.as_ref()).await? {
            Ok(cut) => cut,
            Err(rej) => return self.reject(delivery, *rej).await,
        };
        if existing.is_none() {
            metric::request_accepted(&cut.kind, cut.payloads.len());
            self.activity.count(Event::Accepted);
            self.count_demand(&cut);
        }
        let Placement {
            routes,
            mut reserved,
            holding,
        } = self.route(&cut);
        let Some(skip) = self
            .record(&cut, &routes, holding.as_ref(), &mut reserved)
            .await?
        else {
            return Ok(());
        };
        // From here on the shards are published; a failure part-way leaves their entries until
        // the redelivered request routes them again (same keys) or they expire.
        reserved.keep();
        let started = Instant::now();
        let (sent, payloads) = self
            .publish_now(&mut cut, routes, &skip, holding.as_ref())
            .await?;
        self.learn(&cut, started, sent, holding.as_ref());
        self.await_held(&cut, holding, &skip, payloads, sent).await
    }

    /// Cancel the request a cancel message names, in the store; the message carries no
    /// request of its own.
    async fn cancel(&self, id: Uuid) -> Result<(), Error> {
        let ended = self
            .store
            .cancel(id, "cancelled by an AMQP message")
            .await?;
        info!(?ended, "cancel requested");
        Ok(())
    }

    /// Validate the delivery as a request within the payload limit.
    fn accept(&self, id: Uuid, delivery: &Delivery) -> Result<Accepted, Box<Rejection>> {
        intake::accept(
            id,
            &delivery.data,
            &delivery.properties,
            self.config.max_payload_bytes,
        )
    }

    /// How to cut the request's kind (see [`crate::kinds`]), after making sure the kind's
    /// shared queue exists. A new request of a kind not served is rejected; a recorded one
    /// (shards of it may be out, or its result published) waits for its kind instead, so that
    /// one request never gets two contradicting answers.
    async fn cutter(
        &self,
        id: Uuid,
        accepted: &Accepted,
        existing: Option<&Meta>,
    ) -> Result<Result<Cutter, Box<Rejection>>, Error> {
        let kind = &accepted.kind;
        if let Some(recorded) = existing.and_then(|m| m.cut) {
            return match self.catalog.recut(kind, recorded) {
                Some(cutter) => {
                    self.declare_kind_queue(kind).await?;
                    Ok(Ok(cutter))
                }
                None => Err(Error::Unavailable(format!(
                    "the request was cut by the code of kind {kind:?}, which this manager was \
                     not built with; a manager built with it must cut it again"
                ))),
            };
        }
        let why = match self.catalog.resolve(&self.store, kind).await? {
            Ok(cutter) => {
                self.declare_kind_queue(kind).await?;
                return Ok(Ok(cutter));
            }
            Err(why) => why,
        };
        // A copy that was not redelivered may still find a record: a client's republish.
        let recorded = existing.is_some() || self.store.meta(id).await?.is_some();
        if recorded {
            return Err(Error::Unavailable(format!(
                "the request is recorded but its kind is not served now: {}",
                self.catalog.rejection(kind, &why)
            )));
        }
        Ok(Err(Box::new(Rejection {
            id,
            message: self.catalog.rejection(kind, &why),
            kind: kind.clone(),
            reason: RejectReason::UnknownKind,
            reply: accepted.reply.clone(),
        })))
    }

    /// Declare `kind`'s shared queue, once per kind for the life of this manager (a kind's
    /// queue is never deleted while the namespace runs).
    async fn declare_kind_queue(&self, kind: &str) -> Result<(), Error> {
        let known = |d: &Mutex<HashSet<String>>| {
            d.lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .contains(kind)
        };
        if known(&self.declared) {
            return Ok(());
        }
        amqp::declare_kind_queue(&self.channel, &self.names, kind).await?;
        self.declared
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(kind.to_owned());
        Ok(())
    }

    /// Read the record an earlier delivery of this request left, so that a redelivered request
    /// is cut the same way and a finished one is not run again.
    async fn prior_record(&self, id: Uuid, redelivered: bool) -> Result<Prior, Error> {
        // Only a request delivered before can have a record already (a client that
        // republishes a request under the same id gets the recorded copy's answer: the create
        // step in `record` finds the record and this copy stands down).
        let existing = if redelivered {
            self.store.meta(id).await?
        } else {
            None
        };
        if let Some(meta) = &existing
            && meta.state == RequestState::Published
        {
            info!("request already finished; dropping the duplicate");
            return Ok(Prior::Finished);
        }
        Ok(Prior::Open(existing))
    }

    /// Plan the shard count and split the payload. A request recorded before is cut into its
    /// recorded count (splits are deterministic, so each index names the same shard) and keeps
    /// its recorded deadline. A payload the kind cannot split, or a quorum above the shard
    /// count, is a rejection.
    async fn cut(
        &self,
        id: Uuid,
        accepted: Accepted,
        cutter: Cutter,
        existing: Option<&Meta>,
    ) -> Result<Result<Cut, Box<Rejection>>, Error> {
        let fixed = existing.map(|m| m.total as usize);
        let created = now_ms();
        let deadline = existing.map_or_else(
            || {
                created.saturating_add(
                    accepted
                        .options
                        .deadline_ms
                        .unwrap_or(self.config.default_deadline_ms),
                )
            },
            |m| m.deadline,
        );
        let begun = Instant::now();
        let engines = self.engines.serving(&accepted.kind);
        // Only a new payload needs a shard count: a recorded request keeps its count, and
        // pieces a client cut are one shard each.
        let plan = (fixed.is_none() && matches!(accepted.input, Input::Payload(_)))
            .then(|| self.plan(&accepted, &engines));
        let Accepted {
            kind,
            input,
            reply,
            options,
            locality,
            ..
        } = accepted;
        if let Input::Shards(pieces) = &input
            && pieces.len() > self.config.max_shards as usize
        {
            return Ok(Err(Box::new(Rejection {
                id,
                kind,
                reason: RejectReason::Oversized,
                message: format!(
                    "the request carries {} shards; this manager runs at most {} a request \
                     (--max-shards)",
                    pieces.len(),
                    self.config.max_shards
                ),
                reply,
            })));
        }
        let (split, size) = self.split(cutter.clone(), input, fixed, plan).await?;
        let payloads = match split {
            Ok(p) => p,
            Err(e) => {
                let reason = match e {
                    KindError::Empty(_) => RejectReason::EmptyPayload,
                    _ => RejectReason::InvalidPayload,
                };
                let message = e.to_string();
                return Ok(Err(Box::new(Rejection {
                    id,
                    kind,
                    reason,
                    message,
                    reply,
                })));
            }
        };
        let total =
            u32::try_from(payloads.len()).map_err(|_| Error::Config("too many shards".into()))?;
        if let Some(q) = options.quorum
            && q > total
        {
            return Ok(Err(Box::new(Rejection {
                id,
                kind,
                reason: RejectReason::BadOptions,
                message: format!(
                    "quorum {q} is more than the {total} shards the request was cut into"
                ),
                reply,
            })));
        }
        Ok(Ok(Cut {
            id,
            kind,
            payloads,
            size,
            total,
            cutter,
            reply,
            options,
            locality: Arc::new(locality),
            created,
            deadline,
            attempt: if existing.is_some() { 2 } else { 1 },
            engines,
            begun,
        }))
    }

    /// The inputs of the shard-count decision for `accepted` on `engines`. The learned model,
    /// when there is one, is logged at debug: it explains the count chosen.
    fn plan(&self, accepted: &Accepted, engines: &[Engine]) -> Plan {
        let plan = Plan {
            engines: engines.len(),
            request_max: accepted.options.max_shards,
            manager_max: self.config.max_shards,
            scale: self.config.shard_size_scale,
            mode: self.config.shard_count,
            model: self.predictor.model(&accepted.kind, engines),
        };
        if let Some(m) = &plan.model {
            debug!(
                a_us = m.a_us,
                b_us = m.b_us,
                publish_us = m.publish_us,
                merge_us = m.merge_us,
                latency_us = m.latency_us,
                path_us = m.path_us,
                load = m.load,
                shard_rate = m.traffic.shard_rate,
                request_rate = m.traffic.request_rate,
                mean_shards = m.traffic.mean_shards,
                cv = m.cv,
                backlog_us = ?m.engines.iter().map(|e| e.backlog_us.round()).collect::<Vec<_>>(),
                "shard-count model"
            );
        }
        plan
    }

    /// Split the input with its kind on the blocking pool (splitting is CPU work). A payload
    /// is cut into `fixed` shards when set, else as many as `plan` gives for the size the kind
    /// measures; pieces the client cut become one shard each (their count is what a redelivery
    /// recorded, since the same message carries the same pieces). Returns the split and the
    /// request's size.
    async fn split(
        &self,
        cutter: Cutter,
        input: Input,
        fixed: Option<usize>,
        plan: Option<Plan>,
    ) -> Result<(Split, u64), Error> {
        let split = tokio::task::spawn_blocking(move || {
            cutter.split(input, &mut |size, hint| {
                fixed
                    .or_else(|| plan.as_ref().map(|p| p.shards(size, hint)))
                    .unwrap_or(1)
            })
        })
        .await?;
        Ok(split)
    }

    /// Record the request and its shards' routes in Redis, before any shard is published (the
    /// record is what a redelivery resumes from). Settled shards of a request recorded before
    /// leave the ledger and keep their recorded routes. Returns those settled shards, or `None`
    /// when this copy must stand down.
    async fn record(
        &self,
        cut: &Cut,
        routes: &[Option<String>],
        holding: Option<&Holding<'_>>,
        reserved: &mut Reservation<'_>,
    ) -> Result<Option<HashSet<u32>>, Error> {
        let all: Vec<(u32, &str)> = routes
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let i = i as u32;
                let route = if is_held(holding, i) {
                    HELD_ROUTE
                } else {
                    r.as_deref().unwrap_or(SHARED_ROUTE)
                };
                (i, route)
            })
            .collect();
        // The routes go with the record in one step, unless there are too many for one call.
        let with_record = all.len() <= ROUTES_WITH_RECORD;
        let created = self
            .store
            .create_routed(&cut.record(&self.id), if with_record { &all } else { &[] })
            .await?;
        let Some(skip) = self.settled(cut, &created).await? else {
            return Ok(None);
        };
        reserved.release(&skip);
        if !(created == Created::New && with_record) {
            // A settled shard (stored or failed) keeps the route it ran on (a redelivered request).
            let pairs: Vec<(u32, &str)> = all
                .iter()
                .filter(|(i, _)| !skip.contains(i))
                .copied()
                .collect();
            self.store.set_routes(cut.id, &pairs).await?;
        }
        Ok(Some(skip))
    }

    /// The shards of a request found `created` that are settled (stored or failed) and must
    /// not be published again, or `None` when the recorded request is not this copy's to run.
    async fn settled(&self, cut: &Cut, created: &Created) -> Result<Option<HashSet<u32>>, Error> {
        match created {
            Created::New => Ok(Some(HashSet::new())),
            Created::Existing { state, total: t } => {
                if *t != cut.total {
                    // Another copy of this request (same message_id) is being dispatched
                    // concurrently with another shard count; that copy owns it. Publishing any
                    // result here could contradict its result, so drop this copy quietly.
                    info!(
                        recorded = t,
                        split = cut.total,
                        "another copy owns this request; dropping this one"
                    );
                    return Ok(None);
                }
                if *state != RequestState::Running {
                    info!(%state, "request is already closing; nothing to publish");
                    return Ok(None);
                }
                Ok(Some(
                    self.store.settled(cut.id).await?.into_iter().collect(),
                ))
            }
        }
    }

    /// Publish the shards that go now: those neither settled (`skip`) nor held. Returns how
    /// many went, and the payloads left for the held shards.
    async fn publish_now(
        &self,
        cut: &mut Cut,
        routes: Vec<Option<String>>,
        skip: &HashSet<u32>,
        holding: Option<&Holding<'_>>,
    ) -> Result<(usize, Vec<Option<Vec<u8>>>), Error> {
        let mut payloads: Vec<Option<_>> = std::mem::take(&mut cut.payloads)
            .into_iter()
            .map(Some)
            .collect();
        let cut = &*cut;
        let now: Vec<_> = routes
            .into_iter()
            .enumerate()
            .map(|(i, engine)| (i as u32, engine))
            .filter(|&(i, _)| !skip.contains(&i) && !is_held(holding, i))
            .filter_map(|(i, engine)| Some((cut.shard(i, payloads[i as usize].take()?), engine)))
            .collect();
        self.enter_shared(cut, &now);
        let sent = self.publish_all(now).await?;
        Ok((sent, payloads))
    }

    /// Feed the predictor what this dispatch showed: the publish cost per shard, the request
    /// and shard flow of the kind, and the time to prepare and to dispatch.
    fn learn(&self, cut: &Cut, started: Instant, sent: usize, holding: Option<&Holding<'_>>) {
        // Publishing is pipelined: only a large fan-out shows the marginal cost of a shard (a
        // small one mostly measures one confirm round trip).
        if sent >= MEASURE_FROM {
            let per_shard = started.elapsed().as_secs_f64() * 1e6 / sent as f64;
            self.predictor.history.observe_publish(per_shard);
        }
        // Held shards count as sent here: the flow is the rate requests and shards arrive.
        let waiting = holding.map_or(0, Holding::pending);
        self.predictor
            .flow
            .dispatched(&cut.kind, u32::try_from(sent + waiting).unwrap_or(u32::MAX));
        let prepare_us = started.duration_since(cut.begun).as_secs_f64() * 1e6;
        self.predictor.history.observe_dispatch(
            prepare_us,
            cut.begun.elapsed().as_secs_f64() * 1e6,
            sent,
        );
    }

    /// Publish the held shards as the hold lets them go, so that the request is acked only
    /// after the last of them; if the hold goes away first, the rest go to the shared queue.
    async fn await_held(
        &self,
        cut: &Cut,
        holding: Option<Holding<'_>>,
        skip: &HashSet<u32>,
        mut payloads: Vec<Option<Vec<u8>>>,
        sent: usize,
    ) -> Result<(), Error> {
        let (kind, total) = (&cut.kind, cut.total);
        let Some(mut holding) = holding.filter(|h| h.pending() > 0) else {
            info!(kind = %kind, total, sent, "request dispatched");
            return Ok(());
        };
        info!(kind = %kind, total, sent, held = holding.pending(), "request dispatched; the rest is held");
        let mut late = 0;
        while let Some(batch) = holding.next().await {
            late += self
                .publish_released(cut, batch, skip, &mut payloads)
                .await?;
        }
        if holding.pending() > 0 {
            // The hold went away (the manager is stopping): the shared queue takes the rest.
            warn!(
                shards = holding.pending(),
                "hold dropped; using the shared queue"
            );
            let rest = (0..total)
                .filter(|&i| holding.holds(i))
                .map(|index| Release {
                    index,
                    engine: None,
                })
                .collect();
            late += self
                .publish_released(cut, rest, skip, &mut payloads)
                .await?;
        }
        info!(kind = %kind, total, sent = late, "held shards dispatched");
        Ok(())
    }

    /// Publish `shards`, each to its engine or (`None`) to the shared queue; returns how many.
    async fn publish_all(&self, shards: Vec<(Shard, Option<String>)>) -> Result<usize, Error> {
        let publishes = shards
            .into_iter()
            .map(|(shard, engine)| self.publish_shard(shard, engine));
        futures::stream::iter(publishes)
            .buffer_unordered(PUBLISH_CONCURRENCY)
            .try_fold(0usize, |n, ()| async move { Ok(n + 1) })
            .await
    }

    /// Record the routes of shards the hold let go, and publish them; returns how many.
    async fn publish_released(
        &self,
        cut: &Cut,
        batch: Vec<Release>,
        skip: &HashSet<u32>,
        payloads: &mut [Option<Vec<u8>>],
    ) -> Result<usize, Error> {
        let id = cut.id;
        let mut go = Vec::with_capacity(batch.len());
        for Release { index, engine } in batch {
            let payload = payloads.get_mut(index as usize).and_then(Option::take);
            match payload {
                Some(p) if !skip.contains(&index) => go.push((cut.shard(index, p), engine)),
                _ => {
                    // Already settled (a redelivered request): it goes nowhere, and the slot
                    // the hold gave it is free for another held shard.
                    if engine.is_some() {
                        self.predictor.ledger.finished(id, index);
                        self.predictor.freed.notify_one();
                    }
                }
            }
        }
        let pairs: Vec<(u32, &str)> = go
            .iter()
            .map(|(s, e)| (s.index, e.as_deref().unwrap_or(SHARED_ROUTE)))
            .collect();
        self.store.set_routes(id, &pairs).await?;
        debug!(shards = go.len(), "held shards go");
        self.enter_shared(cut, &go);
        self.publish_all(go).await
    }

    /// Enter the shards of `cut` about to go to the shared queue in the ledger (shards routed
    /// to an engine are in it already): their completions then teach the history which
    /// engine ran them and how fast, as a routed shard's do.
    fn enter_shared(&self, cut: &Cut, shards: &[(Shard, Option<String>)]) {
        let shared: Vec<u32> = shards
            .iter()
            .filter(|(_, engine)| engine.is_none())
            .map(|(shard, _)| shard.index)
            .collect();
        if shared.is_empty() {
            return;
        }
        let kind: Arc<str> = Arc::from(cut.kind.as_str());
        self.predictor
            .enter_shared(cut.id, shared, &kind, cut.shard_size());
    }

    /// Place every shard on an engine (entered in the ledger at once), on the shared queue, or
    /// in the hold, holding the router so that concurrent requests see each other's shards.
    fn route(&self, cut: &Cut) -> Placement<'_> {
        let (id, kind, total, engines) = (cut.id, cut.kind.as_str(), cut.total, &cut.engines);
        let size = cut.shard_size();
        let ledger = &self.predictor.ledger;
        if engines.is_empty() {
            warn!(
                kind,
                "no live engine serves the kind; shards go to its shared queue"
            );
            return Placement {
                routes: vec![None; total as usize],
                reserved: ledger.reservation(id, Vec::new()),
                holding: None,
            };
        }
        let mut g = self.lock_routing();
        let Routing { router, hold } = &mut *g;
        let Some(rule) = router.holds() else {
            let shards = Shards {
                request: id,
                kind,
                size,
                total,
                locality: &cut.locality,
            };
            let (routes, reserved) = self.predictor.place(router.as_mut(), &shards, engines);
            return Placement {
                routes,
                reserved,
                holding: None,
            };
        };
        // Behind every shard held already: the hold plans in arrival order.
        let mut holding = hold.push(ledger, id, kind, size, cut.locality.clone(), 0..total);
        hold.scan(rule, &self.predictor, engines);
        drop(g);
        let mut routes = vec![None; total as usize];
        let mut placed = Vec::new();
        for r in holding.ready() {
            if r.engine.is_some() {
                placed.push(r.index);
            }
            routes[r.index as usize] = r.engine;
        }
        Placement {
            routes,
            reserved: ledger.reservation(id, placed),
            holding: Some(holding),
        }
    }

    /// Let held shards go if they may (see [`crate::hold`]); returns how many went.
    pub fn release_held(&self) -> usize {
        let engines = self.engines.snapshot();
        let mut g = self.lock_routing();
        let Routing { router, hold } = &mut *g;
        match router.holds() {
            Some(rule) if !hold.is_empty() => hold.scan(rule, &self.predictor, &engines),
            _ => 0,
        }
    }

    /// Let held shards go on every completion event, and at least every [`HOLD_TICK`] (for
    /// the hold limit and engines that join), until cancelled.
    pub async fn release_held_until(self: Arc<Self>, stop: CancellationToken) {
        let freed = self.predictor.freed.clone();
        let mut tick = tokio::time::interval(HOLD_TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                () = freed.notified() => {}
                _ = tick.tick() => {}
            }
            self.release_held();
        }
    }

    /// Send every held shard to the shared queue (the manager is stopping).
    pub fn flush_held(&self) -> usize {
        self.lock_routing().hold.flush()
    }

    /// Add a new request's expected work to the scaling signal's arrivals.
    fn count_demand(&self, cut: &Cut) {
        let shard_us = self
            .predictor
            .history
            .predict(&cut.kind, cut.shard_size())
            .unwrap_or(self.config.default_shard_us);
        self.demand.accepted(shard_us * f64::from(cut.total) / 1e6);
    }

    /// Shards held now.
    pub fn held(&self) -> usize {
        self.lock_routing().hold.len()
    }

    fn lock_routing(&self) -> std::sync::MutexGuard<'_, Routing> {
        self.routing
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    async fn publish_shard(&self, shard: Shard, engine: Option<String>) -> Result<(), Error> {
        let body = rmp_serde::to_vec_named(&shard)?;
        let id = shard.message_id();
        let props = shard_properties(&id, &shard.kind);
        if let Some(engine) = engine {
            let published =
                amqp::publish_to_engine(&self.channel, &self.names, &engine, &body, props.clone())
                    .await?;
            if !published.is_returned(&id) {
                if self.config.hedge && self.catalog.hedge_safe(&shard.kind) {
                    let ledger = &self.predictor.ledger;
                    ledger.keep_body(shard.request_id, shard.index, body.into());
                }
                // Stored, or another shard came back with this confirm (AMQP returns carry no
                // delivery tag): send that one on.
                if let Published::Returned(other) = published {
                    self.to_shared(vec![*other]).await?;
                }
                return Ok(());
            }
            debug!(
                %engine,
                shard.index = shard.index,
                "the broker returned the shard (its engine left routing); sending it to the shared queue"
            );
            self.predictor
                .ledger
                .finished(shard.request_id, shard.index);
        }
        let queue = self.names.kind_queue(&shard.kind);
        match amqp::publish(&self.channel, "", &queue, &body, props, true).await? {
            Published::Stored => Ok(()),
            p if p.is_returned(&id) => Err(Error::Nacked(queue)),
            Published::Returned(other) => self.to_shared(vec![*other]).await,
        }
    }

    /// Send shards the broker returned as unroutable (their engine queue was gone) to their
    /// kinds' shared queues, whichever publish their return came with; a return that comes
    /// with one of these publishes is sent on too.
    pub(crate) async fn to_shared(
        &self,
        mut returned: Vec<BasicReturnMessage>,
    ) -> Result<(), Error> {
        while let Some(message) = returned.pop() {
            // Only shards are published mandatory on this channel, each with its kind's name.
            let Some(kind) = amqp::shard_kind(&message.properties) else {
                error!(properties = ?message.properties, "the broker returned a message that is not a shard; dropping it");
                continue;
            };
            let queue = self.names.kind_queue(kind);
            let id = message
                .properties
                .message_id()
                .as_ref()
                .map(|s| s.to_string())
                .unwrap_or_default();
            if let Some((request, index)) = Shard::parse_message_id(&id) {
                debug!(
                    request.id = %request,
                    shard.index = index,
                    "the broker returned a shard as unroutable; sending it to the shared queue"
                );
                self.predictor.ledger.finished(request, index);
            }
            let Delivery {
                data, properties, ..
            } = message.delivery;
            match amqp::publish(&self.channel, "", &queue, &data, properties, true).await? {
                Published::Stored => {}
                p if p.is_returned(&id) => return Err(Error::Nacked(queue)),
                Published::Returned(other) => returned.push(*other),
            }
        }
        Ok(())
    }

    /// Answer a rejected request with an error result and dead-letter it with the reason.
    async fn reject(&self, delivery: &Delivery, rej: Rejection) -> Result<(), Error> {
        warn!(reason = %rej.reason, message = %rej.message, "request rejected");
        metric::request_rejected(rej.reason);
        self.activity.count(Event::Rejected);
        let record = Rejected {
            kind: rej.kind.clone(),
            reason: rej.reason,
            message: rej.message.clone(),
            at: now_ms(),
        };
        // Best effort: the answer and the dead letter are what count.
        if let Err(error) = self.store.remember_rejection(rej.id, &record).await {
            warn!(%error, "recording the rejection for `status` failed");
        }
        let result = FinalResult::rejected(rej.id, &rej.kind, rej.reason, &rej.message);
        amqp::publish_result(&self.channel, &self.names, &rej.reply, &result, None).await?;
        amqp::dead_letter(
            &self.channel,
            &self.names,
            &delivery.data,
            &delivery.properties,
            rej.reason.code(),
            &rej.message,
            Some(rej.id),
        )
        .await?;
        let entry = DeadLetter::new(
            DeadKind::Request,
            &delivery.data,
            &delivery.properties,
            rej.reason.code(),
            &rej.message,
            Some(rej.id),
        );
        if let Err(error) = self.store.remember_dead_letter(&entry).await {
            warn!(%error, "recording the dead letter for the dashboard failed");
        }
        Ok(())
    }
}
