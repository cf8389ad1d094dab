//! Handling one request: split, route, record in Redis, publish every shard with confirms.
//!
//! Order matters for "nothing lost": the request is recorded in Redis *before* any shard is
//! published, and the request message is acked only after every shard is confirmed. A manager
//! that dies in between leaves the request unacked; the broker redelivers it, the record is
//! found, the request is split again with the recorded shard count (splits are
//! deterministic), and only shards without a stored result are published again.

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use lapin::BasicProperties;
use lapin::message::{BasicReturnMessage, Delivery};
use lapin::options::{BasicAckOptions, BasicNackOptions};
use shardline::amqp::{self, Published};
use shardline::kind::KindError;
use shardline::message::{FinalResult, Shard};
use shardline::store::{Created, NewRequest, Store};
use shardline::{Error, Names, Registry, RejectReason, now_ms};
use tracing::{Instrument, debug, error, info, info_span, warn};

use crate::config::Config;
use crate::engines::{Engine, Engines};
use crate::intake::{self, Accepted, Rejection};
use crate::ledger::Reservation;
use crate::plan::Plan;
use crate::predictor::Predictor;
use crate::route::Router;

/// Shard publishes in flight at once for one request.
const PUBLISH_CONCURRENCY: usize = 256;
/// Fan-outs at least this large measure the per-shard publish cost.
const MEASURE_FROM: usize = 16;
/// Pause before a request that hit a transient error is put back on the queue.
const RETRY_PAUSE: Duration = Duration::from_secs(1);
/// AMQP `type` of a message on the request exchange that cancels the request named by its
/// `message_id`.
pub const CANCEL_TYPE: &str = "cancel";
/// Route recorded for shards sent to the shared queue.
pub const SHARED_ROUTE: &str = "(shared)";

/// Everything a request handler needs.
pub struct Dispatcher {
    pub(crate) config: Config,
    pub(crate) names: Names,
    pub(crate) store: Store,
    pub(crate) channel: lapin::Channel,
    pub(crate) registry: Registry,
    pub(crate) engines: Engines,
    pub(crate) predictor: Predictor,
    pub(crate) router: Mutex<Box<dyn Router>>,
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

    async fn dispatch(&self, id: uuid::Uuid, delivery: &Delivery) -> Result<(), Error> {
        if delivery.properties.kind().as_ref().map(|k| k.as_str()) == Some(CANCEL_TYPE) {
            let ended = self
                .store
                .cancel(id, "cancelled by an AMQP message")
                .await?;
            info!(?ended, "cancel requested");
            return Ok(());
        }
        let accepted = match intake::accept(
            id,
            &delivery.data,
            &delivery.properties,
            self.config.max_payload_bytes,
            &self.registry,
        ) {
            Ok(a) => a,
            Err(rej) => return self.reject(delivery, *rej).await,
        };
        let existing = self.store.meta(id).await?;
        if let Some(meta) = &existing
            && meta.state == "published"
        {
            info!("request already finished; dropping the duplicate");
            return Ok(());
        }
        let fixed = existing.as_ref().map(|m| m.total as usize);
        let created = now_ms();
        let deadline = existing.as_ref().map_or_else(
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
        let engines = self.engines.snapshot();
        let plan = Plan {
            engines: engines.len(),
            request_max: accepted.options.max_shards,
            manager_max: self.config.max_shards,
            scale: self.config.shard_size_scale,
            mode: self.config.shard_count,
            model: self.predictor.model(&accepted.kind, &engines),
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
        let Accepted {
            kind: kind_name,
            payload,
            reply,
            options,
            ..
        } = accepted;
        let kind = self
            .registry
            .get(&kind_name)
            .ok_or_else(|| Error::Config(format!("kind {kind_name} vanished")))?;
        let (split, size) = tokio::task::spawn_blocking(move || {
            let mut request_size = 0;
            let split = kind.split(payload, &mut |size, hint| {
                request_size = size;
                fixed.unwrap_or_else(|| plan.shards(size, hint))
            });
            (split, request_size)
        })
        .await?;
        let payloads = match split {
            Ok(p) => p,
            Err(e) => {
                let reason = match e {
                    KindError::Empty(_) => RejectReason::EmptyPayload,
                    _ => RejectReason::InvalidPayload,
                };
                let rej = Rejection {
                    id,
                    kind: kind_name,
                    reason,
                    message: e.to_string(),
                    reply,
                };
                return self.reject(delivery, rej).await;
            }
        };
        let total =
            u32::try_from(payloads.len()).map_err(|_| Error::Config("too many shards".into()))?;
        if let Some(q) = options.quorum
            && q > total
        {
            let rej = Rejection {
                id,
                kind: kind_name,
                reason: RejectReason::BadOptions,
                message: format!(
                    "quorum {q} is more than the {total} shards the request was cut into"
                ),
                reply,
            };
            return self.reject(delivery, rej).await;
        }
        let (routes, mut reserved) = self.route(
            id,
            &kind_name,
            size as f64 / f64::from(total.max(1)),
            total,
            &engines,
        );

        let record = NewRequest {
            id,
            kind: kind_name.clone(),
            total,
            created,
            deadline,
            reply_to: reply.reply_to.clone(),
            correlation_id: reply.correlation_id.clone(),
            format: reply.format,
            policy: options.failure_policy.unwrap_or_default(),
            quorum: options.quorum,
        };
        let skip: HashSet<u32> = match self.store.create(&record).await? {
            Created::New => HashSet::new(),
            Created::Existing { state, total: t } => {
                if t != total {
                    // Another copy of this request (same message_id) is being dispatched
                    // concurrently with another shard count; that copy owns it. Publishing any
                    // result here could contradict its result, so drop this copy quietly.
                    info!(
                        recorded = t,
                        split = total,
                        "another copy owns this request; dropping this one"
                    );
                    return Ok(());
                }
                if state != "running" {
                    info!(%state, "request is already closing; nothing to publish");
                    return Ok(());
                }
                self.store.recorded(id).await?.into_iter().collect()
            }
        };
        reserved.release(&skip);
        let pairs: Vec<(u32, &str)> = routes
            .iter()
            .enumerate()
            .map(|(i, r)| (i as u32, r.as_deref().unwrap_or(SHARED_ROUTE)))
            .collect();
        self.store.set_routes(id, &pairs).await?;

        // From here on the shards are published; a failure part-way leaves their entries until
        // the redelivered request routes them again (same keys) or they expire.
        reserved.keep();
        let attempt = if existing.is_some() { 2 } else { 1 };
        let started = Instant::now();
        let prepare_us = started.duration_since(begun).as_secs_f64() * 1e6;
        let publishes = payloads
            .into_iter()
            .zip(routes)
            .enumerate()
            .filter(|(i, _)| !skip.contains(&(*i as u32)))
            .map(|(i, (payload, engine))| {
                let shard = Shard {
                    request_id: id,
                    index: i as u32,
                    total,
                    kind: kind_name.clone(),
                    attempt,
                    deadline,
                    payload,
                };
                self.publish_shard(shard, engine)
            });
        let sent = futures::stream::iter(publishes)
            .buffer_unordered(PUBLISH_CONCURRENCY)
            .try_fold(0usize, |n, ()| async move { Ok(n + 1) })
            .await?;
        // Publishing is pipelined: only a large fan-out shows the marginal cost of a shard (a
        // small one mostly measures one confirm round trip).
        if sent >= MEASURE_FROM {
            let per_shard = started.elapsed().as_secs_f64() * 1e6 / sent as f64;
            self.predictor.history.observe_publish(per_shard);
        }
        self.predictor
            .flow
            .dispatched(&kind_name, u32::try_from(sent).unwrap_or(u32::MAX));
        self.predictor.history.observe_dispatch(
            prepare_us,
            begun.elapsed().as_secs_f64() * 1e6,
            sent,
        );
        info!(kind = %kind_name, total, sent, "request dispatched");
        Ok(())
    }

    /// Place every shard on an engine (entered in the ledger at once) or `None` for the
    /// shared queue, holding the router so that concurrent requests see each other's shards.
    fn route(
        &self,
        id: uuid::Uuid,
        kind: &str,
        size: f64,
        total: u32,
        engines: &[Engine],
    ) -> (Vec<Option<String>>, Reservation<'_>) {
        if engines.is_empty() {
            warn!("no live engines; shards go to the shared queue");
            return (
                vec![None; total as usize],
                self.predictor.ledger.reservation(id, Vec::new()),
            );
        }
        let mut router = self
            .router
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        self.predictor
            .place(router.as_mut(), id, kind, size, total, engines)
    }

    async fn publish_shard(&self, shard: Shard, engine: Option<String>) -> Result<(), Error> {
        let body = rmp_serde::to_vec_named(&shard)?;
        let id = shard.message_id();
        let props = BasicProperties::default()
            .with_message_id(id.as_str().into())
            .with_content_type(shardline::message::CONTENT_TYPE_MSGPACK.into())
            .with_type(shard.kind.clone().into());
        if let Some(engine) = engine {
            let queue = self.names.engine_queue(&engine);
            let published =
                amqp::publish(&self.channel, "", &queue, &body, props.clone(), true).await?;
            if !published.is_returned(&id) {
                // Stored, or another shard came back with this confirm (AMQP returns carry no
                // delivery tag): send that one on.
                if let Published::Returned(other) = published {
                    self.to_shared(vec![*other]).await?;
                }
                return Ok(());
            }
            debug!(%engine, shard.index = shard.index, "engine queue is gone; using the shared queue");
            self.predictor
                .ledger
                .finished(shard.request_id, shard.index);
        }
        let queue = self.names.shared_queue();
        match amqp::publish(&self.channel, "", &queue, &body, props, true).await? {
            Published::Stored => Ok(()),
            p if p.is_returned(&id) => Err(Error::Nacked(queue)),
            Published::Returned(other) => self.to_shared(vec![*other]).await,
        }
    }

    /// Send shards the broker returned as unroutable (their engine queue was gone) to the
    /// shared queue, whichever publish their return came with; a return that comes with one of
    /// these publishes is sent on too.
    async fn to_shared(&self, mut returned: Vec<BasicReturnMessage>) -> Result<(), Error> {
        let queue = self.names.shared_queue();
        while let Some(message) = returned.pop() {
            let id = message
                .properties
                .message_id()
                .as_ref()
                .map(|s| s.to_string())
                .unwrap_or_default();
            if let Some((request, index)) = Shard::parse_message_id(&id) {
                debug!(request.id = %request, shard.index = index, "returned shard; using the shared queue");
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
        .await
    }
}
