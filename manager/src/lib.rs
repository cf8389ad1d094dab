//! # Shardline manager
//!
//! Consumes requests from `<ns>.requests`, validates them, decides how many shards to cut and
//! which engine each goes to, records the request in Redis, and publishes every shard with
//! publisher confirms. Several managers may consume the same queue (competing consumers).
//!
//! # Layout
//!
//! - [`config`] — flags and environment;
//! - [`intake`] — delivery → accepted request or typed rejection;
//! - [`plan`] — the shard count (adaptive by default);
//! - [`route`] — routing policies behind the [`route::Router`] trait;
//! - [`locality`] — keyed shards prefer the engines that hold their data, bounded by load;
//! - [`hedge`] — late shards get a second copy on another engine (`--hedge`);
//! - [`predictor`] — the Load Prediction Engine, combining:
//!   - [`ledger`] — unfinished shards per engine and their expected work, fed by [`events`];
//!   - [`history`] — learned per-kind costs, per-engine speeds and overheads, saved in Redis;
//!   - [`latency`] — shards' transport latency and the load on the shared path it reveals;
//!   - [`flow`] — request and shard rates;
//!   - [`depth`] — sampled broker depth per engine queue;
//!   - [`forecast`] — `augurs` forecasts of that depth;
//! - [`engines`] — the live-engine view from heartbeats;
//! - [`gauges`] — what the manager reports about engines and its hold (metrics, dashboard);
//! - [`dispatch`] — one request from split to confirmed publish;
//! - [`sweep`] — recovery: dead engines' queues, lost finalizers;
//! - [`scale`] — the scaling signal: worker replicas the coming minutes need.

#![warn(missing_docs)]

pub mod config;
pub mod depth;
pub mod dispatch;
pub mod engines;
pub mod events;
pub mod flow;
pub mod forecast;
pub mod gauges;
pub mod hedge;
pub mod history;
pub mod hold;
pub mod intake;
pub mod kinds;
pub mod latency;
pub mod ledger;
pub mod locality;
pub mod plan;
pub mod predictor;
pub mod route;
pub mod scale;
pub mod sweep;

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use lapin::options::{BasicCancelOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use shardline::exporter::Exporter;
use shardline::resolve::Resolver;
use shardline::store::Store;
use shardline::supervise::{Background, Started, supervise, until_shutdown};
use shardline::{Registry, amqp};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

pub use config::{Config, RouterKind};
use dispatch::{Dispatcher, Routing};
use engines::Engines;
use hold::Hold;
use kinds::Catalog;
use predictor::Predictor;
use scale::Scale;

/// How long the background tasks get to stop at shutdown.
const BACKGROUND_STOP: Duration = Duration::from_secs(5);

/// The manager's error type (shared with the other service).
pub use shardline::service::ServiceError as Error;

/// Run a manager until `shutdown` resolves.
///
/// Failing to reach the broker or Redis at start is an error. After a successful start, a lost
/// connection is retried (lapin's recovery first, then a fresh connection) until shutdown.
///
/// # Errors
/// Bad configuration, or the broker/Redis unreachable at start.
pub async fn run(
    config: Config,
    registry: Registry,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), Error> {
    config.validate().map_err(Error::Config)?;
    let scale = Scale::default();
    let _exporter = match config.metrics_addr.listen() {
        Some(addr) => Some(Exporter::start(addr, scale.routes()).await?),
        None => None,
    };
    let stop = CancellationToken::new();
    let work = supervise(&stop, Error::is_transient, |started| {
        serve(&config, &registry, &scale, &stop, started)
    });
    until_shutdown(stop.clone(), shutdown, work).await
}

async fn serve(
    config: &Config,
    registry: &Registry,
    scale: &Scale,
    stop: &CancellationToken,
    started: Started,
) -> Result<(), Error> {
    let names = config.connect.names()?;
    let store = config.connect.store().await?;
    let conn = Arc::new(
        amqp::connect(
            &config.connect.amqp_url,
            &format!("shardline-manager {}", names.namespace()),
        )
        .await?,
    );
    let setup = conn.create_channel().await?;
    amqp::declare_topology(&setup, &names).await?;
    for kind in registry.names() {
        amqp::declare_kind_queue(&setup, &names, kind).await?;
    }
    let channel = amqp::confirm_channel(&conn).await?;
    let consume = conn.create_channel().await?;
    consume
        .basic_qos(config.prefetch, BasicQosOptions::default())
        .await?;
    let mut consumer = consume
        .basic_consume(
            names.requests_queue().into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let tag = consumer.tag();
    started.set();

    let engines = Engines::default();
    engines.refresh(&store, config.engine_ttl()).await?;
    let catalog = Arc::new(Catalog::new(registry.clone()));
    catalog.refresh(&store).await?;
    let predictor = Predictor {
        locality: config.locality_routing,
        lateness: config.hedge.then(Arc::default),
        ..Predictor::new(
            config.depth_sample(),
            config.depth_window,
            config.default_shard_us,
        )
    };
    if let Err(error) = predictor.history.load(&store).await {
        warn!(%error, "loading the saved history failed; starting cold");
    }
    let mut background = Background::default();
    let token = background.token();
    background.spawn(
        "engines",
        engines
            .clone()
            .keep_fresh(store.clone(), config.engine_ttl(), token.clone()),
    );
    background.spawn(
        "kinds",
        catalog.clone().keep_fresh(store.clone(), token.clone()),
    );
    background.spawn(
        "ledger expiry",
        ledger::expire_until(
            predictor.ledger.clone(),
            ledger::EXPIRE_EVERY,
            ledger::STALE_AFTER,
            token.clone(),
        ),
    );
    background.spawn(
        "events",
        events::listen(
            Store::event_clients(&config.connect.redis_url)?,
            names.events_channel(),
            predictor.clone(),
            token.clone(),
        ),
    );
    let id = format!("manager-{}", uuid::Uuid::new_v4().simple());
    let sweeper = sweep::Sweeper {
        store: store.clone(),
        names: names.clone(),
        conn: conn.clone(),
        resolver: Resolver::new(
            store.clone(),
            amqp::confirm_channel(&conn).await?,
            registry.clone(),
        ),
        registry: registry.clone(),
        engine_ttl: config.engine_ttl(),
        lease: config.lease(),
        holder: id.clone(),
        cursor: Default::default(),
    };
    background.spawn("sweeper", sweeper.run(token.clone()));
    background.spawn(
        "depth sampler",
        depth::Sampler {
            conn: conn.clone(),
            names: names.clone(),
            engines: engines.clone(),
            ledger: predictor.ledger.clone(),
            depths: predictor.depths.clone(),
            every: config.depth_sample(),
        }
        .run(token.clone()),
    );
    if config.router.uses_forecast() {
        background.spawn(
            "forecast",
            forecast::run(
                predictor.depths.clone(),
                predictor.forecasts.clone(),
                forecast::Settings {
                    every: Duration::from_millis(config.forecast_ms),
                    horizon: 40,
                    period: (config.forecast_period > 0).then_some(config.forecast_period),
                },
                token.clone(),
            ),
        );
    }
    background.spawn(
        "activity",
        shardline::activity::keep_flushing(store.clone(), token.clone()),
    );
    background.spawn(
        "history saver",
        predictor
            .history
            .clone()
            .keep_saved(store.clone(), token.clone()),
    );
    let router = config.router.build(
        &config.weights,
        config.in_flight_cap,
        config.hold_ms > 0,
        config.binds_late(),
    );
    let holds = router.holds().is_some();
    info!(router = router.name(), shard_count = %config.shard_count, hedge = config.hedge, late_binding = config.binds_late(), "routing");
    let dispatcher = Arc::new(Dispatcher {
        id,
        config: config.clone(),
        names: names.clone(),
        store,
        channel,
        catalog,
        declared: Mutex::default(),
        engines,
        predictor,
        demand: scale.demand.clone(),
        activity: shardline::activity::Counters::of(names.namespace()),
        routing: Mutex::new(Routing {
            router,
            hold: Hold::new(config.hold()),
        }),
    });
    if holds {
        background.spawn(
            "hold release",
            dispatcher.clone().release_held_until(token.clone()),
        );
    }
    if let Some(lateness) = dispatcher.predictor.lateness.clone() {
        background.spawn(
            "hedging",
            hedge::run(
                dispatcher.clone(),
                lateness,
                config.hedging(),
                token.clone(),
            ),
        );
    }
    background.spawn(
        "engine reports",
        gauges::keep_set(dispatcher.clone(), token.clone()),
    );
    let scaler = scale::Scaler {
        demand: scale.demand.clone(),
        latest: scale.latest.clone(),
        ledger: dispatcher.predictor.ledger.clone(),
        history: dispatcher.predictor.history.clone(),
        engines: dispatcher.engines.clone(),
        settings: config.scale(),
        store: dispatcher.store.clone(),
        manager: dispatcher.id.clone(),
    };
    background.spawn("scaling signal", scaler.run(token.clone()));
    info!(manager.id = %dispatcher.id, namespace = names.namespace(), queue = %names.requests_queue(), "manager consuming requests");

    let tracker = TaskTracker::new();
    let outcome = loop {
        tokio::select! {
            () = stop.cancelled() => break Ok(()),
            ended = background.ended() => {
                error!(%ended, "restarting the manager");
                break Err(Error::TaskEnded(ended));
            }
            next = consumer.next() => match next {
                Some(Ok(delivery)) => {
                    let d = dispatcher.clone();
                    tracker.spawn(async move { d.handle(delivery).await });
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
    // Stop taking requests, then let the ones being dispatched finish (they ack themselves).
    if let Err(error) = consume
        .basic_cancel(tag, BasicCancelOptions::default())
        .await
    {
        warn!(%error, "cancelling the request consumer failed");
    }
    tracker.close();
    let flushed = dispatcher.flush_held();
    if flushed > 0 {
        info!(
            shards = flushed,
            "stopping: held shards go to the shared queue"
        );
    }
    let grace = Duration::from_millis(config.grace_ms);
    if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
        error!(
            ?grace,
            "requests still dispatching after the grace period; they will be redelivered"
        );
    }
    // What was learned since the last periodic save survives the restart.
    if let Err(error) = dispatcher.predictor.history.save(&dispatcher.store).await {
        warn!(%error, "saving the history at shutdown failed");
    }
    background.stop(BACKGROUND_STOP).await;
    if let Err(error) = conn.close(200, "manager stopping".into()).await {
        warn!(%error, "closing the broker connection failed");
    }
    outcome
}
