//! The resolver's last step: assemble a request's partial results in shard order, merge them,
//! publish the one final result, then mark the request published.
//!
//! Only the holder of the finalizer lease (handed out by [`Store::record`], [`Store::fail`] or
//! [`Store::claim_lease`]) calls [`Resolver::finalize`]. The result is published with confirms
//! *before* the request is marked `published`; a finalizer that dies in between, or fails on a
//! transient error and releases its lease, leaves the request `finalizing`/`failing` with no
//! lease holder, and the manager's sweeper finalizes it again (same `message_id`, so downstream
//! consumers can deduplicate; its `x-shardline-attempt` header is then above 1, so only such
//! copies need checking). Failures that would repeat forever (a panicking merge, an output
//! the request's encoding cannot carry) become a `failed` result instead.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{debug, warn};
use uuid::Uuid;

use crate::activity::{Counters, Event};
use crate::amqp::{ReplyTo, publish_result};
use crate::inline::Inline;
use crate::kind::{DynKind, KindError};
use crate::message::{ErrorInfo, FailurePolicy, FinalResult, Status};
use crate::store::{Closing, Meta, RequestState, Store};
use crate::{Error, Registry, metric};

/// Assembles and publishes final results.
#[derive(Clone)]
pub struct Resolver {
    store: Store,
    channel: lapin::Channel,
    registry: Registry,
    merges: Arc<Inline>,
    activity: Arc<Counters>,
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolver")
            .field("store", &self.store)
            .field("registry", &self.registry)
            .finish()
    }
}

impl Resolver {
    /// A resolver publishing on `channel`, which must be in confirm mode. Every merge runs on
    /// a blocking thread; see [`Resolver::with_inline_merges`].
    pub fn new(store: Store, channel: lapin::Channel, registry: Registry) -> Self {
        let activity = Counters::of(store.names().namespace());
        Resolver {
            store,
            channel,
            registry,
            merges: Arc::new(Inline::new(Duration::ZERO)),
            activity,
        }
    }

    /// Run merges that this resolver has learned take under `limit` on the async runtime's
    /// thread (see [`crate::inline`]); a slow merge keeps running on a blocking thread, where
    /// it cannot hold up the renewal of its finalizer lease.
    #[must_use]
    pub fn with_inline_merges(mut self, limit: Duration) -> Self {
        self.merges = Arc::new(Inline::new(limit));
        self
    }

    /// Assemble, publish and mark published, as `holder` of the request's finalizer lease,
    /// renewing the lease (to `lease` from now, every third of it) while the work runs so that
    /// a long merge is not taken over. Returns the result, or `None` when the request is gone
    /// or was already published.
    ///
    /// # Errors
    /// Redis or broker failures; the lease then expires and the work is re-driven.
    pub async fn finalize(
        &self,
        id: Uuid,
        holder: &str,
        lease: Duration,
    ) -> Result<Option<FinalResult>, Error> {
        self.finalize_known(id, holder, lease, None).await
    }

    /// [`Resolver::finalize`] for the holder whose write completed the set of `total` shards:
    /// the parts are read together with the metadata, in one round trip.
    ///
    /// # Errors
    /// As [`Resolver::finalize`].
    pub async fn finalize_claimed(
        &self,
        id: Uuid,
        holder: &str,
        lease: Duration,
        total: u32,
    ) -> Result<Option<FinalResult>, Error> {
        self.finalize_known(id, holder, lease, Some(total)).await
    }

    async fn finalize_known(
        &self,
        id: Uuid,
        holder: &str,
        lease: Duration,
        total: Option<u32>,
    ) -> Result<Option<FinalResult>, Error> {
        let work = self.finalize_held(id, total);
        tokio::pin!(work);
        let mut tick = tokio::time::interval((lease / 3).max(Duration::from_millis(10)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tokio::select! {
                r = &mut work => return r,
                _ = tick.tick() => match self.store.renew(id, holder, lease).await {
                    Ok(true) => debug!(request.id = %id, "finalizer lease renewed"),
                    Ok(false) => warn!(request.id = %id, "finalizer lease lost during assembly; another finalizer may publish the same result"),
                    Err(error) => debug!(request.id = %id, %error, "renewing the finalizer lease failed"),
                },
            }
        }
    }

    async fn finalize_held(
        &self,
        id: Uuid,
        total: Option<u32>,
    ) -> Result<Option<FinalResult>, Error> {
        // The publication is counted with the first read, before anything is sent: a
        // finalizer that dies after this point makes the next publication say that it may
        // repeat this one (even if this one never got out: a spare lookup for consumers, in
        // exchange for a round trip less on every request).
        let (closing, publication) =
            tokio::try_join!(self.store.closing(id, total), self.store.publication(id))?;
        let Some(meta) = &closing.meta else {
            warn!(request.id = %id, "request vanished before it was finalized");
            return Ok(None);
        };
        if meta.state == RequestState::Published {
            return Ok(None);
        }
        let (result, merged) = if meta.state == RequestState::Failing {
            let mut r = failed(meta, meta.error.clone());
            r.status = meta.outcome.unwrap_or(Status::Failed);
            (r, None)
        } else {
            self.assemble(meta, &closing).await?
        };
        let to = ReplyTo {
            reply_to: meta.reply_to.clone(),
            correlation_id: meta.correlation_id.clone(),
            format: meta.format,
        };
        let Some(attempt) = publication else {
            return Ok(None);
        };
        if let Some(line) = merged {
            // The merge cost, for the managers' shard-count decision: best effort, off the
            // path to the result.
            let store = self.store.clone();
            tokio::spawn(async move {
                if let Err(error) = store.publish_event(&line).await {
                    debug!(%error, "publishing the merge cost failed");
                }
            });
        }
        if attempt > 1 {
            warn!(request.id = %id, attempt, "publishing a re-driven final result; it may repeat an earlier copy (same message_id)");
        }
        let published = attempt;
        let attempt = Some(attempt);
        let result = match publish_result(&self.channel, self.store.names(), &to, &result, attempt)
            .await
        {
            Ok(()) => result,
            Err(e @ (Error::Json(_) | Error::Encode(_))) => {
                let info = ErrorInfo {
                    code: "unencodable_result".into(),
                    message: format!("the output cannot be sent as {}: {e}", to.format.as_str()),
                };
                let failed = failed(meta, Some(info));
                publish_result(&self.channel, self.store.names(), &to, &failed, attempt).await?;
                failed
            }
            Err(e) => return Err(e),
        };
        metric::request_ended(&meta.kind, result.status, meta.created, published);
        self.activity.count(Event::of(result.status));
        self.activity.finished(id);
        self.store.finish(id, result.status).await?;
        debug!(request.id = %id, status = result.status.as_str(), "final result published");
        Ok(Some(result))
    }

    /// Merge the parts of a request whose shards are all settled. Returns the result and the
    /// merge-cost event line to announce, when a merge ran.
    async fn assemble(
        &self,
        meta: &Meta,
        closing: &Closing,
    ) -> Result<(FinalResult, Option<String>), Error> {
        let Some(kind) = self.registry.get(&meta.kind) else {
            let error = ErrorInfo {
                code: "unknown_kind".into(),
                message: format!("this worker has no kind {:?} to merge with", meta.kind),
            };
            return Ok((failed(meta, Some(error)), None));
        };
        let failures = &closing.failures;
        let ok: Vec<u32> = (0..meta.total)
            .filter(|i| !failures.contains_key(i))
            .collect();
        let needed = match meta.policy {
            FailurePolicy::Quorum => meta.quorum.unwrap_or(meta.total).max(1),
            _ => 1,
        };
        if !failures.is_empty() && (ok.len() as u32) < needed {
            let mut r = failed(meta, Some(failures_error(failures, meta.total)));
            r.failed_shards = failures.keys().copied().collect();
            return Ok((r, None));
        }
        let parts = match prefetched(closing, &ok) {
            Some(parts) => parts,
            None => self.store.parts_of(meta.id, &ok).await?,
        };
        let started = Instant::now();
        let merged = merge(kind, parts, &self.merges).await;
        let line = merged_event(&meta.kind, ok.len(), started.elapsed());
        let result = match merged {
            Ok(Ok(output)) if failures.is_empty() => FinalResult {
                request_id: meta.id,
                kind: meta.kind.clone(),
                status: Status::Completed,
                shards: meta.total,
                output: Some(output),
                error: None,
                failed_shards: Vec::new(),
            },
            Ok(Ok(output)) => FinalResult {
                request_id: meta.id,
                kind: meta.kind.clone(),
                status: Status::Partial,
                shards: meta.total,
                output: Some(output),
                error: Some(failures_error(failures, meta.total)),
                failed_shards: failures.keys().copied().collect(),
            },
            Ok(Err(e)) => failed(
                meta,
                Some(ErrorInfo {
                    code: "merge_failed".into(),
                    message: e.to_string(),
                }),
            ),
            Err(panic) => failed(
                meta,
                Some(ErrorInfo {
                    code: "merge_panicked".into(),
                    message: panic,
                }),
            ),
        };
        Ok((result, Some(line)))
    }
}

/// The parts of `ok` from what [`Store::closing`] read with the metadata, when it read them
/// all and every one of them is there.
fn prefetched(closing: &Closing, ok: &[u32]) -> Option<Vec<Vec<u8>>> {
    let all = closing.parts.as_ref()?;
    ok.iter()
        .map(|&i| all.get(i as usize).cloned().flatten())
        .collect()
}

/// Merge the parts, inline when `merges` has learned that the kind's merges of this size take
/// microseconds, else on a blocking thread (timed there, to learn from); a panic is caught
/// either way and returned as its message.
async fn merge(
    kind: Arc<dyn DynKind>,
    parts: Vec<Vec<u8>>,
    merges: &Arc<Inline>,
) -> Result<Result<rmpv::Value, KindError>, String> {
    let bytes: usize = parts.iter().map(Vec::len).sum();
    if merges.admits(kind.name(), kind.cost_follows_size(), bytes) {
        return std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| kind.merge(parts)))
            .map_err(|panic| crate::panic_message(&*panic));
    }
    let merges = Arc::clone(merges);
    tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let merged = kind.merge(parts);
        merges.observe(kind.name(), bytes, started.elapsed());
        merged
    })
    .await
    .map_err(|e| e.to_string())
}

fn failures_error(failures: &std::collections::BTreeMap<u32, String>, total: u32) -> ErrorInfo {
    let first = failures
        .iter()
        .next()
        .map(|(i, why)| format!("; shard {i}: {why}"))
        .unwrap_or_default();
    ErrorInfo {
        code: "shards_failed".into(),
        message: format!("{} of {total} shards failed{first}", failures.len()),
    }
}

fn failed(meta: &Meta, error: Option<ErrorInfo>) -> FinalResult {
    FinalResult {
        request_id: meta.id,
        kind: meta.kind.clone(),
        status: Status::Failed,
        shards: meta.total,
        output: None,
        failed_shards: Vec::new(),
        error: Some(error.unwrap_or_else(|| ErrorInfo {
            code: "failed".into(),
            message: "the request failed".into(),
        })),
    }
}

/// The event line telling managers how long merging `parts` partial results took:
/// `merged <kind> <parts> <micros>`.
pub fn merged_event(kind: &str, parts: usize, took: std::time::Duration) -> String {
    format!("merged {kind} {parts} {}", took.as_micros())
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;
    use crate::kind::Kind;

    /// Counts its parts after blocking its thread for 100 ms; it is only ever merged here.
    struct Slow;

    impl Kind for Slow {
        type Input = ();
        type Shard = ();
        type Partial = ();
        type Output = usize;
        fn name(&self) -> &'static str {
            "slow"
        }
        fn size(&self, (): &()) -> u64 {
            1
        }
        fn split(&self, (): (), n: usize) -> Vec<()> {
            vec![(); n]
        }
        fn process(&self, (): ()) -> Result<(), KindError> {
            Ok(())
        }
        fn merge(&self, parts: Vec<()>) -> Result<usize, KindError> {
            std::thread::sleep(Duration::from_millis(100));
            Ok(parts.len())
        }
    }

    /// How often a 5 ms ticker on the same single-threaded runtime ran during one merge of
    /// small parts: zero when the merge blocked the runtime's only thread.
    async fn ticks_during_merge(merges: &Arc<Inline>) -> u32 {
        let ticks = Arc::new(AtomicU32::new(0));
        let ticker = tokio::spawn({
            let ticks = Arc::clone(&ticks);
            async move {
                loop {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    ticks.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        let parts = vec![rmp_serde::to_vec(&()).expect("encodes"); 4];
        let merged = merge(Arc::new(Slow), parts, merges).await;
        ticker.abort();
        assert_eq!(merged.ok().and_then(Result::ok), Some(rmpv::Value::from(4)));
        ticks.load(Ordering::Relaxed)
    }

    /// A merge whose kind has not been timed runs on a blocking thread, so the runtime (and a
    /// finalizer's lease renewal on it) keeps going while it runs; one learned to be slow stays
    /// there.
    #[tokio::test(flavor = "current_thread")]
    async fn an_untimed_or_slow_merge_does_not_block_the_runtime() {
        let merges = Arc::new(Inline::new(Duration::from_millis(1)));
        for _ in 0..crate::inline::MIN_SAMPLES + 1 {
            assert!(ticks_during_merge(&merges).await >= 5);
        }
    }

    /// A merge learned to take microseconds runs inline.
    #[tokio::test(flavor = "current_thread")]
    async fn a_merge_learned_to_be_fast_runs_inline() {
        let merges = Arc::new(Inline::new(Duration::from_secs(10)));
        for _ in 0..crate::inline::MIN_SAMPLES {
            merges.observe("slow", 32, Duration::from_micros(1));
        }
        assert_eq!(ticks_during_merge(&merges).await, 0);
    }
}
