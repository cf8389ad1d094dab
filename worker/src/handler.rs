//! One shard delivery, from bytes to ack: decode, count the try if the shard was delivered
//! before, process (inline or on a blocking thread), record the partial result, finalize when
//! this write completed the set, and only then ack.

use std::sync::Arc;
use std::time::{Duration, Instant};

use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicNackOptions};
use shardline::amqp::Published;
use shardline::kind::{DynKind, KindError, Stop, check_name};
use shardline::message::{ErrorInfo, FINALIZE_TYPE, FinalizeOrder, Shard, Status};
use shardline::metric::{self, ShardOutcome};
use shardline::resolve::Resolver;
use shardline::store::{Begun, DeadKind, DeadLetter, Ended, Recorded, Store, Wanted};
use shardline::{Names, Registry, amqp, now_ms};
use tokio::task::JoinError;
use tracing::{Instrument, debug, error, info, info_span, warn};

use crate::prefetch::Prefetch;
use shardline::inline::Inline;

/// Pause before a shard that hit a transient error is put back on its queue.
const RETRY_PAUSE: Duration = Duration::from_secs(1);

/// How long a worker keeps retrying to record a finished shard's result (or failure) while
/// Redis is unreachable before it gives the shard back. Retrying in place keeps the work
/// done; a requeue would redo it and count another attempt against the shard.
const STORE_PATIENCE: Duration = Duration::from_secs(30);

/// Run a Redis step, retrying transient failures with backoff (100 ms doubling, at most 2 s)
/// for up to [`STORE_PATIENCE`]. The steps retried this way are idempotent scripts.
async fn patiently<T, F, Fut>(what: &str, mut step: F) -> Result<T, shardline::Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, shardline::Error>>,
{
    let give_up = Instant::now() + STORE_PATIENCE;
    let mut pause = Duration::from_millis(100);
    loop {
        match step().await {
            Err(e) if e.is_transient() && Instant::now() + pause < give_up => {
                warn!(error = %e, ?pause, "{what} failed; retrying");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(2));
            }
            done => return done,
        }
    }
}

/// Pause before retry `attempt` + 1 of a failed shard: 100 ms doubling, at most 5 s.
pub fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(100u64.saturating_mul(1 << attempt.saturating_sub(1).min(6)))
        .min(Duration::from_secs(5))
}

/// What to do with a delivery once handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settle {
    /// Its effect is durable: ack.
    Ack,
    /// A transient failure: put it back for another try.
    Requeue,
}

/// Shard handling shared by all deliveries of one worker.
#[derive(Debug, Clone)]
pub struct Handler {
    pub(crate) engine: String,
    pub(crate) names: Names,
    pub(crate) store: Store,
    pub(crate) channel: lapin::Channel,
    pub(crate) resolver: Resolver,
    pub(crate) registry: Registry,
    pub(crate) lease: Duration,
    /// Longest a shard may run (from its delivery) before it is stopped.
    pub(crate) time_limit: Duration,
    /// How often a running shard checks that it is still wanted.
    pub(crate) stop_check: Duration,
    /// Which shards run inline.
    pub(crate) inline: Arc<Inline>,
    /// The prefetch, which follows whether shards run inline.
    pub(crate) prefetch: Arc<Prefetch>,
}

/// What processing a shard gave: the kind's own outcome, or the panic that ended it.
type Outcome = Result<Result<Vec<u8>, KindError>, String>;

/// The message of a blocking task that did not finish.
fn join_message(e: &JoinError) -> String {
    if e.is_panic() {
        e.to_string()
    } else {
        format!("the blocking task was cancelled: {e}")
    }
}

/// Why a running shard was asked to stop.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Why {
    /// Its request is no longer running (the state it is in, or why it counts as over).
    Ended(String),
    /// Another copy of it (a hedge copy, or the original it hedged) stored its result.
    Stored,
    /// It ran past the worker's time limit.
    TimeLimit,
}

impl Handler {
    /// Handle and settle one delivery, received at `received` (the shard time limit counts
    /// from then, as the broker's consumer timeout does).
    pub async fn handle(&self, delivery: Delivery, received: Instant) {
        let is_order =
            delivery.properties.kind().as_ref().map(|k| k.as_str()) == Some(FINALIZE_TYPE);
        let settle = if is_order {
            self.handle_order(&delivery).await
        } else {
            self.handle_delivery(&delivery, received).await
        };
        Self::settle(&delivery, settle).await;
    }

    /// Decode and handle a shard; a message that is not one is dead-lettered.
    async fn handle_delivery(&self, delivery: &Delivery, received: Instant) -> Settle {
        match rmp_serde::from_slice::<Shard>(&delivery.data) {
            Ok(shard) => {
                let span = info_span!(
                    "shard",
                    request.id = %shard.request_id,
                    shard.index = shard.index,
                    shard.total = shard.total,
                    attempt = shard.attempt,
                    worker.id = %self.engine,
                );
                self.handle_shard(shard, delivery, received)
                    .instrument(span)
                    .await
            }
            Err(e) => {
                self.dead_letter(delivery, "malformed_shard", &e.to_string())
                    .await
            }
        }
    }

    /// A shard of a kind this worker does not serve (its engine queue got it from a manager
    /// with a stale view of the engines): pass it, untouched and with its delivery mark, to its
    /// kind's shared queue, where a worker that serves the kind takes it. A shard whose kind
    /// name is not one fails its request.
    async fn pass_on(&self, shard: &Shard, delivery: &Delivery) -> Settle {
        if check_name(&shard.kind).is_err() {
            let msg = format!("{:?} is not a kind name", shard.kind);
            return self.fail(shard, delivery, "unknown_kind", &msg).await;
        }
        warn!(kind = %shard.kind, "this worker does not serve the shard's kind; passing it to the kind's queue");
        let queue = self.names.kind_queue(&shard.kind);
        let moved = async {
            amqp::declare_kind_queue(&self.channel, &self.names, &shard.kind).await?;
            let props = amqp::moved_properties(delivery);
            amqp::publish(&self.channel, "", &queue, &delivery.data, props, true).await
        };
        match moved.await {
            Ok(Published::Stored) => Settle::Ack,
            Ok(Published::Returned(_)) => {
                warn!(%queue, "the kind's queue refused the shard; retrying");
                Settle::Requeue
            }
            Err(error) => {
                warn!(%error, "passing the shard on failed; retrying");
                Settle::Requeue
            }
        }
    }

    /// Finalize the request a manager's [`FinalizeOrder`] names, if no finalizer holds it.
    async fn handle_order(&self, delivery: &Delivery) -> Settle {
        let order = match rmp_serde::from_slice::<FinalizeOrder>(&delivery.data) {
            Ok(order) => order,
            Err(e) => {
                return self
                    .dead_letter(delivery, "malformed_order", &e.to_string())
                    .await;
            }
        };
        let id = order.request_id;
        match self.store.claim_lease(id, &self.engine, self.lease).await {
            Ok(true) => {}
            // Finalizing, published, or gone: nothing to do here.
            Ok(false) => return Settle::Ack,
            Err(error) => {
                warn!(request.id = %id, %error, "claiming a finalize order failed");
                return Settle::Requeue;
            }
        }
        match self.resolver.finalize(id, &self.engine, self.lease).await {
            Ok(result) => {
                info!(request.id = %id, published = result.is_some(), "finalized on a manager's order");
            }
            Err(error) => {
                // The sweeper orders it again once its lock expires.
                warn!(request.id = %id, %error, "finalizing on order failed; releasing the lease");
                if let Err(error) = self.store.release(id, &self.engine).await {
                    warn!(%error, "releasing the lease failed; it will expire");
                }
            }
        }
        Settle::Ack
    }

    /// Settle a delivery as its handling said.
    async fn settle(delivery: &Delivery, settle: Settle) {
        let settled = match settle {
            Settle::Ack => delivery.ack(BasicAckOptions::default()).await,
            Settle::Requeue => {
                tokio::time::sleep(RETRY_PAUSE).await;
                delivery
                    .nack(BasicNackOptions {
                        requeue: true,
                        multiple: false,
                    })
                    .await
            }
        };
        if let Err(error) = settled {
            warn!(%error, "settling a shard failed; the broker will redeliver it");
        }
    }

    async fn handle_shard(&self, shard: Shard, delivery: &Delivery, received: Instant) -> Settle {
        // Skip work nobody will use: a shard whose deadline passed (the manager's sweeper
        // times its request out).
        if now_ms() > shard.deadline {
            debug!("deadline passed; skipping the shard");
            self.count(&shard, ShardOutcome::Skipped);
            return Settle::Ack;
        }
        let Some(kind) = self.registry.get(&shard.kind) else {
            return self.pass_on(&shard, delivery).await;
        };
        // A first delivery goes straight to work: no earlier try can have crashed, and the
        // result script refuses what an ended request no longer needs. Only a shard that was
        // delivered before asks Redis first, to count its tries and skip a stored result.
        let tried_before = amqp::tried_before(delivery);
        let hedge = amqp::is_hedge(&delivery.properties);
        let attempt = if tried_before {
            metric::shard_redelivered(self.kind_label(&shard));
            match self.store.begin(shard.request_id, shard.index).await {
                Ok(Begun::Attempt(attempt)) => attempt,
                Ok(begun) => {
                    debug!(?begun, "shard settled or request not running; skipping");
                    self.count(&shard, ShardOutcome::Skipped);
                    return Settle::Ack;
                }
                Err(e) => {
                    warn!(error = %e, "reading the request state failed");
                    self.count(&shard, ShardOutcome::Retried);
                    return Settle::Requeue;
                }
            }
        } else {
            if hedge && !self.hedge_wanted(&shard).await {
                self.count(&shard, ShardOutcome::Skipped);
                return Settle::Ack;
            }
            1
        };
        let limit = kind.max_attempts();
        if attempt > limit {
            let msg = format!("started {attempt} times without finishing (limit {limit})");
            return self.fail(&shard, delivery, "poison_shard", &msg).await;
        }
        let started = Instant::now();
        // Redis was read just now for a retry or a hedge copy; a first delivery reads it at once.
        let checked = tried_before || hedge;
        let (outcome, why) = self.process(&shard, kind, received, !checked).await;
        let elapsed = started.elapsed();
        let (code, msg) = match (outcome, why) {
            (Ok(Ok(partial)), _) => {
                return self
                    .store_partial(&shard, delivery, &partial, elapsed)
                    .await;
            }
            (Ok(Err(_)), Some(Why::Ended(state))) => {
                debug!(%state, "request over; the shard stopped without a result");
                self.count(&shard, ShardOutcome::Skipped);
                return Settle::Ack;
            }
            (Ok(Err(_)), Some(Why::Stored)) => {
                debug!("another copy of the shard stored its result; this one stopped");
                self.count(&shard, ShardOutcome::Skipped);
                return Settle::Ack;
            }
            (Ok(Err(KindError::Stopped)), Some(Why::TimeLimit)) => (
                "time_limit",
                format!(
                    "ran longer than the worker's shard time limit ({} ms)",
                    self.time_limit.as_millis()
                ),
            ),
            (Ok(Err(e)), _) => ("shard_failed", e.to_string()),
            (Err(panic), _) => ("shard_panicked", format!("processing panicked: {panic}")),
        };
        let last_delivery = amqp::queue_type::last_delivery(&delivery.properties);
        if attempt < limit && !last_delivery {
            let pause = backoff(attempt);
            warn!(code, error = %msg, attempt, limit, ?pause, "shard failed; retrying after a pause");
            self.count(&shard, ShardOutcome::Retried);
            tokio::time::sleep(pause).await;
            return Settle::Requeue;
        }
        let msg = if attempt < limit {
            format!(
                "{msg} (attempt {attempt} of {limit}, but the queue's last delivery: it was put \
                 back {} times)",
                amqp::queue_type::DELIVERY_LIMIT
            )
        } else {
            format!("{msg} (attempt {attempt} of {limit})")
        };
        self.fail(&shard, delivery, code, &msg).await
    }

    /// Process the shard inline when it is expected to take microseconds ([`Inline`]),
    /// otherwise on a blocking thread, watched. `check_now`: the request's state has not been
    /// read for this try, so the watch reads it at once rather than after the first period.
    async fn process(
        &self,
        shard: &Shard,
        kind: Arc<dyn DynKind>,
        received: Instant,
        check_now: bool,
    ) -> (Outcome, Option<Why>) {
        let bytes = shard.payload.len();
        let name = kind.name();
        let inline = self.inline.admits(name, kind.cost_follows_size(), bytes);
        self.prefetch.observe(inline);
        let (outcome, why, took) = if inline {
            let started = Instant::now();
            let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                kind.process(&shard.payload, &Stop::new())
            }));
            let ran = ran.map_err(|panic| shardline::panic_message(&*panic));
            (ran, None, started.elapsed())
        } else {
            self.process_watched(shard, kind, received, check_now).await
        };
        if matches!(outcome, Ok(Ok(_))) {
            self.inline.observe(name, bytes, took);
        }
        (outcome, why)
    }

    /// Process the shard off the async runtime while checking, every `stop_check` (the first
    /// time at once with `check_now`), that it is still wanted and within its time limit;
    /// raise its [`Stop`] flag when it is not. Returns the outcome, why the flag was raised
    /// (if it was) and how long the work took on its thread.
    async fn process_watched(
        &self,
        shard: &Shard,
        kind: Arc<dyn DynKind>,
        received: Instant,
        check_now: bool,
    ) -> (Outcome, Option<Why>, Duration) {
        let stop = Stop::new();
        let flag = stop.clone();
        let payload = shard.payload.clone();
        let work = tokio::task::spawn_blocking(move || {
            let started = Instant::now();
            let outcome = kind.process(&payload, &flag);
            (outcome, started.elapsed())
        });
        tokio::pin!(work);
        let first = if check_now {
            Duration::ZERO
        } else {
            self.stop_check
        };
        let started = tokio::time::Instant::now();
        let mut tick = tokio::time::interval_at(started + first, self.stop_check);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut why = None;
        loop {
            tokio::select! {
                done = &mut work => {
                    return match done {
                        Ok((outcome, took)) => (Ok(outcome), why, took),
                        Err(e) => (Err(join_message(&e)), why, Duration::ZERO),
                    };
                }
                _ = tick.tick(), if why.is_none() => {
                    why = self.unwanted(shard, received).await;
                    if let Some(reason) = &why {
                        // At the first check this is the shard of a request that ended
                        // before it started (a cancel's queued shards): routine, not news.
                        if *reason == Why::Stored {
                            debug!("another copy of the shard stored its result; stopping it");
                        } else if started.elapsed() < self.stop_check {
                            debug!(?reason, "the request ended before the shard started; stopping it");
                        } else {
                            info!(?reason, "asking the running shard to stop");
                        }
                        stop.request();
                    }
                }
            }
        }
    }

    /// Whether a hedge copy should run: its original has not stored a result and the request
    /// runs. When Redis cannot tell, it runs (the result script refuses what is not needed).
    async fn hedge_wanted(&self, shard: &Shard) -> bool {
        match self.store.wanted(shard.request_id, shard.index).await {
            Ok(Wanted::Yes) => true,
            Ok(wanted) => {
                debug!(?wanted, "hedge copy not needed; skipping it");
                false
            }
            Err(error) => {
                debug!(%error, "checking a hedge copy failed; running it");
                true
            }
        }
    }

    /// Why a running shard should stop now, if it should.
    async fn unwanted(&self, shard: &Shard, received: Instant) -> Option<Why> {
        if received.elapsed() >= self.time_limit {
            return Some(Why::TimeLimit);
        }
        if now_ms() > shard.deadline {
            return Some(Why::Ended("deadline passed".into()));
        }
        match self.store.wanted(shard.request_id, shard.index).await {
            Ok(Wanted::Yes) => None,
            Ok(Wanted::Stored) => Some(Why::Stored),
            Ok(Wanted::Ended(state)) => Some(Why::Ended(state.to_string())),
            Ok(Wanted::Gone) => Some(Why::Ended("gone".into())),
            Err(error) => {
                debug!(%error, "checking the request state failed; the shard goes on");
                None
            }
        }
    }

    async fn store_partial(
        &self,
        shard: &Shard,
        delivery: &Delivery,
        partial: &[u8],
        elapsed: Duration,
    ) -> Settle {
        let recorded = patiently("storing the partial result", || {
            self.store.record(
                shard.request_id,
                shard.index,
                partial,
                shard.deadline,
                &self.engine,
                self.lease,
                &self.engine,
                elapsed,
            )
        })
        .await;
        let outcome = match &recorded {
            Ok(Recorded::Claimed { .. } | Recorded::Accepted { .. }) => ShardOutcome::Stored,
            Ok(Recorded::Duplicate) => ShardOutcome::Duplicate,
            Ok(Recorded::BadIndex) => ShardOutcome::Failed,
            Ok(_) => ShardOutcome::Skipped,
            Err(_) => ShardOutcome::Retried,
        };
        self.count(shard, outcome);
        if outcome == ShardOutcome::Stored {
            metric::shard_processed(&shard.kind, elapsed.as_secs_f64());
        }
        match recorded {
            Ok(Recorded::Claimed { total, .. }) => {
                info!(total, "last shard in: finalizing");
                self.finalize(shard).await
            }
            Ok(Recorded::Accepted { done, total }) => {
                debug!(
                    done,
                    total,
                    elapsed_us = elapsed.as_micros() as u64,
                    "partial stored"
                );
                Settle::Ack
            }
            Ok(Recorded::Duplicate) => {
                info!("duplicate delivery; the first stored result stands");
                Settle::Ack
            }
            Ok(Recorded::Closed) => {
                debug!("request already ended; result not needed");
                Settle::Ack
            }
            Ok(Recorded::Unknown) => {
                warn!("no record of this request (expired or never created); dropping the shard");
                Settle::Ack
            }
            Ok(Recorded::QuorumLost | Recorded::FailFast) => Settle::Ack, // failures only
            Ok(Recorded::BadIndex) => {
                self.dead_letter(delivery, "bad_index", "shard index outside 0..total")
                    .await
            }
            Err(e) => {
                warn!(error = %e, "storing the partial result failed");
                Settle::Requeue
            }
        }
    }

    /// The work failed for good. Under a tolerant failure policy the failure settles the shard
    /// like a result would; under fail-fast the request fails now and, if this worker wins the
    /// lease, it publishes the failed result. The shard is dead-lettered with the reason.
    async fn fail(&self, shard: &Shard, delivery: &Delivery, code: &str, message: &str) -> Settle {
        error!(code, message, "shard failed");
        let settle = self.fail_for_good(shard, delivery, code, message).await;
        let outcome = match settle {
            Settle::Ack => ShardOutcome::Failed,
            Settle::Requeue => ShardOutcome::Retried,
        };
        self.count(shard, outcome);
        settle
    }

    async fn fail_for_good(
        &self,
        shard: &Shard,
        delivery: &Delivery,
        code: &str,
        message: &str,
    ) -> Settle {
        let reason = format!("{code}: {message}");
        let settled = patiently("recording the failure", || {
            self.store.record_failure(
                shard.request_id,
                shard.index,
                &reason,
                shard.deadline,
                &self.engine,
                self.lease,
                &self.engine,
            )
        })
        .await;
        match settled {
            Ok(Recorded::FailFast) => {}
            Ok(Recorded::Claimed { .. } | Recorded::QuorumLost) => {
                self.finalize(shard).await;
                return self.dead_letter(delivery, code, message).await;
            }
            Ok(_) => return self.dead_letter(delivery, code, message).await,
            Err(e) => {
                warn!(error = %e, "recording the failure failed");
                return Settle::Requeue;
            }
        }
        let info = ErrorInfo {
            code: code.to_owned(),
            message: format!("shard {}: {message}", shard.index),
        };
        match self
            .store
            .fail(
                shard.request_id,
                Some(shard.index),
                Some(&self.engine),
                self.lease,
                Status::Failed,
                &info,
            )
            .await
        {
            Ok(Ended::Claimed) => {
                if self.finalize(shard).await == Settle::Requeue {
                    return Settle::Requeue;
                }
            }
            Ok(Ended::Marked | Ended::NotRunning | Ended::Remembered) => {}
            Err(e) => {
                warn!(error = %e, "recording the failure failed");
                return Settle::Requeue;
            }
        }
        self.dead_letter(delivery, code, message).await
    }

    /// Count one settled delivery of `shard`.
    fn count(&self, shard: &Shard, outcome: ShardOutcome) {
        metric::shard_settled(self.kind_label(shard), &self.engine, outcome);
    }

    /// The shard's kind as a metric label: a kind from the wire that this worker does not
    /// have is `unknown`, so that bad input cannot grow the label set.
    fn kind_label<'a>(&self, shard: &'a Shard) -> &'a str {
        if self.registry.get(&shard.kind).is_some() {
            &shard.kind
        } else {
            "unknown"
        }
    }

    async fn finalize(&self, shard: &Shard) -> Settle {
        match self
            .resolver
            .finalize_claimed(shard.request_id, &self.engine, self.lease, shard.total)
            .await
        {
            Ok(Some(result)) => {
                info!(status = result.status.as_str(), "final result published");
                Settle::Ack
            }
            Ok(None) => Settle::Ack,
            Err(e) => {
                // This shard's result is stored; give the lease back so that the manager's
                // sweeper finalizes the request on its next pass.
                warn!(error = %e, "finalizing failed; releasing the lease for the sweeper");
                if let Err(error) = self.store.release(shard.request_id, &self.engine).await {
                    warn!(%error, "releasing the lease failed; it will expire");
                }
                Settle::Ack
            }
        }
    }

    async fn dead_letter(&self, delivery: &Delivery, reason: &str, detail: &str) -> Settle {
        warn!(reason, detail, "dead-lettering shard");
        match amqp::dead_letter(
            &self.channel,
            &self.names,
            &delivery.data,
            &delivery.properties,
            reason,
            detail,
            None,
        )
        .await
        {
            Ok(()) => {
                self.remember_dead_letter(delivery, reason, detail).await;
                Settle::Ack
            }
            Err(e) if e.is_transient() => Settle::Requeue,
            Err(e) => {
                error!(error = %e, "dead-lettering failed; dropping the shard");
                Settle::Ack
            }
        }
    }

    /// Leave a record of the dead letter for the dashboard (best effort).
    async fn remember_dead_letter(&self, delivery: &Delivery, reason: &str, detail: &str) {
        let request = delivery
            .properties
            .message_id()
            .as_ref()
            .and_then(|id| Shard::parse_message_id(id.as_str()))
            .map(|(request, _)| request);
        let entry = DeadLetter::new(
            DeadKind::Shard,
            &delivery.data,
            &delivery.properties,
            reason,
            detail,
            request,
        );
        if let Err(error) = self.store.remember_dead_letter(&entry).await {
            warn!(%error, "recording the dead letter for the dashboard failed");
        }
    }
}
