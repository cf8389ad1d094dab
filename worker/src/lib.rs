//! # Shardline worker
//!
//! A worker engine registers itself (a heartbeat key with a TTL, advertising the kinds it
//! serves), declares its own durable queue `<ns>.engine.<id>` (bound to the exchange
//! `<ns>.engines` under its id), and consumes it and the shared queue `<ns>.shards.<kind>` of
//! each of its kinds. Each shard is processed on a blocking thread, or
//! inline when it takes microseconds ([`shardline::inline`]), its partial result is recorded with the
//! resolver script, and the worker whose write completes the set assembles and publishes the
//! final result. A shard is acked only after its result is stored (and, for the last one,
//! published).
//!
//! On the happy path a shard costs one delivery, one Redis script and one ack: a first
//! delivery does not ask Redis before it runs (its try is counted if it ever comes back, see
//! [`shardline::amqp::tried_before`]).
//!
//! Build your own worker with your own kinds by calling [`run`] with your [`Registry`]; see
//! `examples/custom_kind.rs`.
//!
//! # Shutdown
//!
//! On SIGTERM/SIGINT the worker stops taking deliveries, puts back those it had prefetched but
//! not started, finishes and acks the running shards (bounded by the grace period), leaves
//! routing, unbinds its queue from the engines exchange, moves whatever is left in it to the
//! kinds' shared queues, and deletes it (see [`shardline::handoff`]).
//!
//! # Layout
//!
//! - [`config`] — flags and environment;
//! - [`heartbeat`] — registration;
//! - [`handler`] — one shard from bytes to ack (queue hand-off on shutdown is
//!   [`shardline::handoff`]);
//! - [`prefetch`] — how many shards the worker takes ahead of its slots;
//! - [`kinds_file`] and [`command`] — kinds whose work is done by commands in any language.

#![warn(missing_docs)]

pub mod command;
pub mod config;
pub mod handler;
pub mod heartbeat;
pub mod kinds_file;
pub mod prefetch;
pub mod serve;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use lapin::message::Delivery;
use lapin::options::{BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions};
use lapin::types::FieldTable;
use shardline::exporter::{Exporter, Router};
use shardline::inline::Inline;
use shardline::kind::{Advert, check_name};
use shardline::locality::LocalityKey;
use shardline::resolve::Resolver;
use shardline::store::EngineInfo;
use shardline::supervise::{Background, Started, supervise, until_shutdown};
use shardline::{Registry, amqp};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, error, info, warn};

pub use config::Config;
use handler::Handler;

/// How long the background tasks get to stop at shutdown.
const BACKGROUND_STOP: Duration = Duration::from_secs(5);

/// The worker's error type (shared with the other service).
pub use shardline::service::ServiceError as Error;

/// Run a worker until `shutdown` resolves, then shut down gracefully.
///
/// # Errors
/// Bad configuration, or the broker/Redis unreachable at start.
pub async fn run(
    config: Config,
    registry: Registry,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), Error> {
    config.validate().map_err(Error::Config)?;
    let registry = with_kinds_file(registry, config.kinds_file.as_deref())?;
    let engine = config.engine_id();
    let exporter = match config.metrics_addr.listen() {
        Some(addr) => Some(Exporter::start(addr, Router::new()).await?),
        None => None,
    };
    let metrics = exporter.as_ref().map(Exporter::addr);
    let stop = CancellationToken::new();
    let work = supervise(&stop, Error::is_transient, |started| {
        serve(&config, &engine, metrics, &registry, &stop, started)
    });
    until_shutdown(stop.clone(), shutdown, work).await
}

async fn serve(
    config: &Config,
    engine: &str,
    metrics: Option<SocketAddr>,
    registry: &Registry,
    stop: &CancellationToken,
    started: Started,
) -> Result<(), Error> {
    let names = config.connect.names()?;
    let kinds = adverts(registry)?;
    let concurrency = config.concurrency();
    let store = config.connect.store().await?;
    let conn = amqp::connect(
        &config.connect.amqp_url,
        &format!("shardline-worker {} {engine}", names.namespace()),
    )
    .await?;
    let setup = conn.create_channel().await?;
    amqp::declare_topology(&setup, &names).await?;
    amqp::declare_engine_queue(&setup, &names, engine).await?;
    for (kind, _) in &kinds {
        amqp::declare_kind_queue(&setup, &names, kind).await?;
    }
    let publish = amqp::confirm_channel(&conn).await?;
    let consume = conn.create_channel().await?;
    // One prefetch window for all consumers (global QoS is per channel in RabbitMQ), one
    // shard per slot unless the shards take microseconds (see `prefetch`). Quorum queues
    // refuse a global window: each consumer gets one per slot instead.
    let global = names.queue_type().global_qos();
    let (prefetch, mut prefetch_changes) = if global {
        prefetch::Prefetch::new(concurrency)
    } else {
        prefetch::Prefetch::fixed(concurrency)
    };
    consume
        .basic_qos(prefetch.initial(), BasicQosOptions { global })
        .await?;
    let mut consumers = Vec::new();
    let queues = std::iter::once(names.engine_queue(engine))
        .chain(kinds.iter().map(|(kind, _)| names.kind_queue(kind)));
    for queue in queues {
        consumers.push(
            consume
                .basic_consume(
                    queue.into(),
                    "".into(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await?,
        );
    }
    let tags: Vec<_> = consumers.iter().map(lapin::Consumer::tag).collect();
    let info = EngineInfo {
        concurrency: Some(u32::from(concurrency)),
        pid: Some(std::process::id()),
        kinds: Some(kinds.iter().map(|(kind, _)| kind.clone()).collect()),
        metrics: metrics.map(|addr| addr.to_string()),
    }
    .to_string();
    let ttl = config.heartbeat() * heartbeat::TTL_PERIODS;
    // Before the first heartbeat, so no manager sees the engine without its keys.
    store.set_locality(engine, &config.locality).await?;
    store.heartbeat(engine, &info, &kinds, ttl).await?;
    started.set();

    let mut background = Background::default();
    background.spawn(
        "heartbeat",
        heartbeat::keep_alive(
            store.clone(),
            engine.to_owned(),
            info,
            kinds,
            config.heartbeat(),
            background.token(),
        ),
    );
    background.spawn(
        "activity",
        shardline::activity::keep_flushing(store.clone(), background.token()),
    );
    let handler = Arc::new(Handler {
        engine: engine.to_owned(),
        names: names.clone(),
        store: store.clone(),
        channel: publish.clone(),
        resolver: Resolver::new(store.clone(), publish, registry.clone())
            .with_inline_merges(config.inline_limit()),
        registry: registry.clone(),
        lease: config.lease(),
        time_limit: config.shard_time_limit(),
        stop_check: config.stop_check(),
        inline: Arc::new(Inline::new(config.inline_limit())),
        prefetch: Arc::new(prefetch),
    });
    info!(worker.id = engine, concurrency, locality = ?config.locality.iter().map(LocalityKey::as_str).collect::<Vec<_>>(), "worker consuming shards");

    let permits = Arc::new(Semaphore::new(usize::from(concurrency)));
    let tracker = TaskTracker::new();
    let mut deliveries = futures::stream::select_all(consumers);
    let outcome = loop {
        tokio::select! {
            () = stop.cancelled() => break Ok(()),
            ended = background.ended() => {
                error!(%ended, "restarting the worker");
                break Err(Error::TaskEnded(ended));
            }
            Ok(()) = prefetch_changes.changed() => {
                let n = *prefetch_changes.borrow_and_update();
                match consume.basic_qos(n, BasicQosOptions { global }).await {
                    Ok(()) => debug!(prefetch = n, "prefetch changed"),
                    Err(error) => warn!(%error, prefetch = n, "changing the prefetch failed"),
                }
            }
            next = deliveries.next() => match next {
                Some(Ok(delivery)) => {
                    tracker.spawn(run_one(handler.clone(), permits.clone(), stop.clone(), delivery));
                }
                Some(Err(e)) => {
                    if let Err(e) = consume.wait_for_recovery(e).await {
                        break Err(Error::from(e));
                    }
                    info!("broker connection recovered");
                }
                None => break Err(Error::ConsumerClosed),
            }
        }
    };

    for tag in tags {
        if let Err(error) = consume
            .basic_cancel(tag, BasicCancelOptions::default())
            .await
        {
            warn!(%error, "cancelling a shard consumer failed");
        }
    }
    tracker.close();
    let grace = Duration::from_millis(config.grace_ms);
    if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
        error!(
            ?grace,
            "shards still running after the grace period; they will be redelivered"
        );
    }
    // Closing the consuming channel puts every delivery it still holds (prefetched, returned
    // on shutdown, or still running past the grace period) back in its queue as ready, where
    // the hand-off below can see it: a queue delete does not wait for unacked messages.
    if let Err(error) = consume.close(200, "worker stopping".into()).await {
        warn!(%error, "closing the consuming channel failed");
    }
    if outcome.is_ok() {
        // Graceful stop: leave routing at once (no heartbeat may re-register the engine), then
        // hand queued shards to the others. If the hand-off cannot finish, the engine stays
        // known as dead and the sweeper finishes it.
        background.stop(BACKGROUND_STOP).await;
        if let Err(error) = store.retire(engine).await {
            warn!(%error, "retiring failed; the heartbeat will expire");
        }
        match shardline::handoff::handoff(&conn, &names, engine, shardline::handoff::By::Engine)
            .await
        {
            Ok((_, true)) => {
                if let Err(error) = store.deregister(engine).await {
                    warn!(%error, "deregistering failed");
                }
            }
            Ok((_, false)) => warn!("engine queue left for the manager's sweeper"),
            Err(error) => warn!(%error, "handing off queued shards failed; the sweeper will"),
        }
    }
    if let Err(error) = conn.close(200, "worker stopping".into()).await {
        warn!(%error, "closing the broker connection failed");
    }
    outcome
}

/// `registry` plus the command kinds of the kinds file, if one is given.
fn with_kinds_file(registry: Registry, path: Option<&std::path::Path>) -> Result<Registry, Error> {
    let Some(path) = path else {
        return Ok(registry);
    };
    let kinds = kinds_file::load(path).map_err(|e| Error::Config(e.to_string()))?;
    let mut registry = registry;
    for kind in kinds {
        info!(kind = %kind.name, splitter = %kind.splitter, program = %kind.process.program.display(), "command kind loaded");
        registry = registry
            .try_with_dyn(Arc::new(kind))
            .map_err(|e| Error::Config(format!("{}: {e}", path.display())))?;
    }
    Ok(registry)
}

/// The advert of every kind in `registry`, checking that each name may name a queue.
fn adverts(registry: &Registry) -> Result<Vec<(String, Advert)>, Error> {
    let now = shardline::now_ms();
    registry
        .names()
        .into_iter()
        .map(|name| {
            check_name(name).map_err(Error::Config)?;
            let kind = registry
                .get(name)
                .ok_or_else(|| Error::Config(format!("kind {name} vanished")))?;
            Ok((name.to_owned(), Advert::of(kind.as_ref(), now)))
        })
        .collect()
}

/// Wait for a processing slot, then handle the delivery; on shutdown before a slot frees up,
/// put the delivery back untouched.
async fn run_one(
    handler: Arc<Handler>,
    permits: Arc<Semaphore>,
    stop: CancellationToken,
    delivery: Delivery,
) {
    let received = std::time::Instant::now();
    let permit = tokio::select! {
        biased;
        () = stop.cancelled() => None,
        p = permits.acquire_owned() => p.ok(),
    };
    match permit {
        Some(_permit) => handler.handle(delivery, received).await,
        None => {
            let requeue = BasicNackOptions {
                requeue: true,
                multiple: false,
            };
            if let Err(error) = delivery.nack(requeue).await {
                warn!(%error, "returning an unstarted shard failed; the broker will redeliver it");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shardline::kind::{Kind, KindError};

    /// A kind whose name could not name a queue.
    struct Shouting;

    impl Kind for Shouting {
        type Input = String;
        type Shard = String;
        type Partial = String;
        type Output = String;
        fn name(&self) -> &'static str {
            "Shout Out"
        }
        fn size(&self, input: &String) -> u64 {
            input.len() as u64
        }
        fn split(&self, input: String, _: usize) -> Vec<String> {
            vec![input]
        }
        fn process(&self, shard: String) -> Result<String, KindError> {
            Ok(shard.to_uppercase())
        }
        fn merge(&self, parts: Vec<String>) -> Result<String, KindError> {
            Ok(parts.concat())
        }
    }

    /// The built-in kinds are advertised with their splitters; a kind whose name could not
    /// name a queue stops the worker at start with a clear error.
    #[test]
    fn adverts_check_kind_names() {
        let ads = adverts(&Registry::builtin()).expect("built-in kinds");
        let names: Vec<&str> = ads.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["checksum", "sort", "synthetic", "wordcount"]);
        let err = adverts(&Registry::builtin().with(Shouting)).expect_err("a bad name");
        assert!(err.to_string().contains("Shout Out"), "{err}");
    }
}
