//! A manager and workers running in-process on a unique namespace, plus a client.

use std::time::Duration;

use lapin::options::{BasicAckOptions, BasicGetOptions};
use shardline::config::ConnectArgs;
use shardline::exporter::MetricsAddr;
use shardline::store::Store;
use shardline::{Names, Registry, amqp, teardown};
use shardline_client::Client;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::{Services, eventually};

type ManagerTweak = Box<dyn FnOnce(&mut shardline_manager::Config) + Send>;
type WorkerTweak = fn(&mut shardline_worker::Config);

struct Running {
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), String>>,
}

impl Running {
    async fn stop(self) -> Result<(), String> {
        let _ = self.stop.send(());
        self.task.await.map_err(|e| e.to_string())?
    }
}

/// Configures a [`Cluster`].
pub struct ClusterBuilder {
    amqp_url: Option<String>,
    services_amqp_url: Option<String>,
    queue_type: amqp::QueueType,
    redis_url: Option<String>,
    redis_wait_replicas: u32,
    workers: usize,
    manager: bool,
    engine_queues: bool,
    manager_tweak: ManagerTweak,
    worker_tweak: WorkerTweak,
    registry: Registry,
}

impl ClusterBuilder {
    /// How many in-process workers to start (default 3).
    #[must_use]
    pub fn workers(mut self, n: usize) -> Self {
        self.workers = n;
        self
    }

    /// Use this broker (a URL or a cluster's list) instead of the shared test broker.
    #[must_use]
    pub fn amqp_url(mut self, url: String) -> Self {
        self.amqp_url = Some(url);
        self
    }

    /// Let the manager and workers use this broker (a URL or a cluster's list) while the
    /// test's own connections use [`ClusterBuilder::amqp_url`]'s: a test can then stop a
    /// node the services use without losing its own.
    #[must_use]
    pub fn services_amqp_url(mut self, url: String) -> Self {
        self.services_amqp_url = Some(url);
        self
    }

    /// Declare the namespace's queues of this type (`--queue-type`).
    #[must_use]
    pub fn queue_type(mut self, t: amqp::QueueType) -> Self {
        self.queue_type = t;
        self
    }

    /// Use this Redis instead of the shared test Redis.
    #[must_use]
    pub fn redis_url(mut self, url: String) -> Self {
        self.redis_url = Some(url);
        self
    }

    /// Make accounting writes wait for this many Redis replicas (`--redis-wait-replicas`).
    #[must_use]
    pub fn redis_wait_replicas(mut self, n: u32) -> Self {
        self.redis_wait_replicas = n;
        self
    }

    /// Start without a manager (tests that publish shards themselves).
    #[must_use]
    pub fn without_manager(mut self) -> Self {
        self.manager = false;
        self
    }

    /// Managers send shards to engine queues even when the engines are alike (late binding
    /// off), for tests of what happens to shards waiting in an engine's own queue; it holds
    /// for managers started later with [`Cluster::start_manager`] too.
    #[must_use]
    pub fn engine_queues(mut self) -> Self {
        self.engine_queues = true;
        self
    }

    /// Adjust the manager's configuration.
    #[must_use]
    pub fn manager(
        mut self,
        f: impl FnOnce(&mut shardline_manager::Config) + Send + 'static,
    ) -> Self {
        self.manager_tweak = Box::new(f);
        self
    }

    /// Adjust every worker's configuration.
    #[must_use]
    pub fn worker(mut self, f: WorkerTweak) -> Self {
        self.worker_tweak = f;
        self
    }

    /// Use another registry of kinds.
    #[must_use]
    pub fn registry(mut self, r: Registry) -> Self {
        self.registry = r;
        self
    }

    /// Start everything and wait until the workers have registered.
    pub async fn start(self) -> Cluster {
        crate::trace_init();
        let services = Services::get().await;
        let namespace = format!("t{}", &Uuid::new_v4().simple().to_string()[..12]);
        let connect = ConnectArgs {
            amqp_url: self
                .amqp_url
                .clone()
                .unwrap_or_else(|| services.amqp_url.clone()),
            queue_type: self.queue_type,
            redis_url: self
                .redis_url
                .clone()
                .unwrap_or_else(|| services.redis_url.clone()),
            redis_wait_replicas: self.redis_wait_replicas,
            namespace,
        };
        let services_connect = ConnectArgs {
            amqp_url: self
                .services_amqp_url
                .clone()
                .unwrap_or_else(|| connect.amqp_url.clone()),
            ..connect.clone()
        };
        let names = connect.names().expect("namespace");
        let store = connect.store().await.expect("Redis reachable");
        let conn = amqp::connect(&connect.amqp_url, "shardline-tests")
            .await
            .expect("RabbitMQ reachable");
        let setup = conn.create_channel().await.expect("channel");
        amqp::declare_topology(&setup, &names)
            .await
            .expect("topology");
        // As the services do at start: a test may look into a kind's queue before they run.
        for kind in self.registry.names() {
            amqp::declare_kind_queue(&setup, &names, kind)
                .await
                .expect("kind queue");
        }
        let mut cluster = Cluster {
            connect,
            services_connect,
            names,
            store,
            conn,
            client: None,
            managers: Vec::new(),
            workers: Vec::new(),
            worker_tweak: self.worker_tweak,
            registry: self.registry,
            late_binding: !self.engine_queues,
            _services: services,
            cleaned: false,
        };
        if self.manager {
            let mut cfg = manager_config(&cluster.services_connect);
            cfg.late_binding = cluster.late_binding;
            (self.manager_tweak)(&mut cfg);
            cluster
                .managers
                .push(spawn_manager(cfg, cluster.registry.clone()));
        }
        for i in 0..self.workers {
            cluster.add_worker(&format!("w{i}")).await;
        }
        cluster.client = Some(Client::connect(&cluster.connect).await.expect("client"));
        cluster
    }
}

/// Manager defaults for an in-process manager: several share the test process, so none binds
/// the default metrics port.
pub fn manager_config(connect: &ConnectArgs) -> shardline_manager::Config {
    let mut cfg = shardline_manager::Config::new(connect.clone());
    cfg.metrics_addr = MetricsAddr::Off;
    cfg
}

fn spawn_manager(cfg: shardline_manager::Config, registry: Registry) -> Running {
    let (stop, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        shardline_manager::run(cfg, registry, async {
            let _ = rx.await;
        })
        .await
        .map_err(|e| e.to_string())
    });
    Running { stop, task }
}

/// A running deployment on its own namespace. Call [`Cluster::shutdown`] at the end.
pub struct Cluster {
    /// Connection settings of this namespace (the test's own connections use them).
    pub connect: ConnectArgs,
    /// The settings the manager and workers use: [`Cluster::connect`]'s, with
    /// [`ClusterBuilder::services_amqp_url`] when given.
    pub services_connect: ConnectArgs,
    /// Names of this namespace.
    pub names: Names,
    /// Direct Redis access.
    pub store: Store,
    /// A raw broker connection for tests that publish or inspect by hand.
    pub conn: lapin::Connection,
    client: Option<Client>,
    managers: Vec<Running>,
    workers: Vec<(String, Running)>,
    worker_tweak: WorkerTweak,
    registry: Registry,
    /// The managers' `late_binding` ([`ClusterBuilder::engine_queues`]).
    late_binding: bool,
    _services: Services,
    cleaned: bool,
}

impl Cluster {
    /// A builder with 3 workers and a manager.
    pub fn builder() -> ClusterBuilder {
        ClusterBuilder {
            amqp_url: None,
            services_amqp_url: None,
            queue_type: amqp::QueueType::default(),
            redis_url: None,
            redis_wait_replicas: shardline::config::DEFAULT_REDIS_WAIT_REPLICAS,
            workers: 3,
            manager: true,
            engine_queues: false,
            manager_tweak: Box::new(|_| {}),
            worker_tweak: |_| {},
            registry: Registry::builtin(),
        }
    }

    /// The client.
    pub fn client(&self) -> &Client {
        self.client.as_ref().expect("client is connected")
    }

    /// Worker configuration for this namespace with the given id.
    pub fn worker_config(&self, id: &str) -> shardline_worker::Config {
        let mut cfg = shardline_worker::Config::new(self.services_connect.clone());
        cfg.id = Some(id.to_owned());
        cfg.concurrency = Some(2);
        cfg.heartbeat_ms = 500;
        (self.worker_tweak)(&mut cfg);
        cfg
    }

    /// Start an in-process worker and wait until it is registered.
    pub async fn add_worker(&mut self, id: &str) {
        let cfg = self.worker_config(id);
        let registry = self.registry.clone();
        let (stop, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            shardline_worker::run(cfg, registry, async {
                let _ = rx.await;
            })
            .await
            .map_err(|e| e.to_string())
        });
        self.workers.push((id.to_owned(), Running { stop, task }));
        self.wait_registered(id).await;
    }

    /// Wait until an engine's heartbeat is visible.
    pub async fn wait_registered(&self, id: &str) {
        eventually(
            &format!("worker {id} registered"),
            Duration::from_secs(15),
            || async {
                let live = self
                    .store
                    .live_engines(Duration::from_secs(10))
                    .await
                    .ok()?;
                live.iter().any(|e| e == id).then_some(())
            },
        )
        .await;
    }

    /// Wait until some manager's view of the live engines holds every one of `ids` (managers
    /// refresh it every 500 ms and report it every second), with what they declared at start.
    pub async fn wait_seen(&self, ids: &[&str]) {
        self.wait_reported(&format!("a manager sees {ids:?}"), |engines| {
            ids.iter().all(|id| engines.contains_key(*id))
        })
        .await;
    }

    /// Wait until a manager reports `engine` holding `n` locality keys (the managers'
    /// view after a change at run time).
    pub async fn wait_keys(&self, engine: &str, n: u64) {
        self.wait_reported(
            &format!("a manager sees {engine} with {n} locality keys"),
            |engines| {
                engines
                    .get(engine)
                    .and_then(|doc| serde_json::from_str::<serde_json::Value>(doc).ok())
                    .is_some_and(|doc| doc["locality_keys"].as_u64() == Some(n))
            },
        )
        .await;
    }

    /// Wait until one manager's engine report (engine id → JSON reading) passes `check`.
    async fn wait_reported(
        &self,
        what: &str,
        check: impl Fn(&std::collections::HashMap<String, String>) -> bool,
    ) {
        eventually(what, Duration::from_secs(15), || async {
            let reports = self
                .store
                .engine_reports(Duration::from_secs(5))
                .await
                .ok()?;
            reports.iter().any(|(_, e)| check(e)).then_some(())
        })
        .await;
    }

    /// Stop one in-process worker gracefully and wait for it to finish.
    pub async fn stop_worker(&mut self, id: &str) {
        let at = self
            .workers
            .iter()
            .position(|(w, _)| w == id)
            .expect("known worker");
        let (_, running) = self.workers.remove(at);
        running.stop().await.expect("worker stopped cleanly");
    }

    /// Start one more manager (competing with any already running), adjusting its
    /// configuration.
    pub fn start_manager(&mut self, tweak: impl FnOnce(&mut shardline_manager::Config)) {
        let mut cfg = manager_config(&self.services_connect);
        cfg.late_binding = self.late_binding;
        tweak(&mut cfg);
        self.managers
            .push(spawn_manager(cfg, self.registry.clone()));
    }

    /// Stop every manager gracefully.
    pub async fn stop_manager(&mut self) {
        for m in std::mem::take(&mut self.managers) {
            m.stop().await.expect("manager stopped cleanly");
        }
    }

    /// A fresh channel on the raw connection.
    pub async fn channel(&self) -> lapin::Channel {
        amqp::confirm_channel(&self.conn).await.expect("channel")
    }

    /// Take every message currently in a queue (acking each).
    pub async fn drain(&self, queue: &str) -> Vec<lapin::message::Delivery> {
        let ch = self.channel().await;
        let mut out = Vec::new();
        while let Some(m) = ch
            .basic_get(queue.into(), BasicGetOptions { no_ack: false })
            .await
            .expect("basic.get")
        {
            m.delivery
                .ack(BasicAckOptions::default())
                .await
                .expect("ack");
            out.push(m.delivery);
        }
        out
    }

    /// Stop everything and delete every queue, exchange and key of the namespace.
    pub async fn shutdown(mut self) {
        if let Some(c) = self.client.take() {
            c.close().await;
        }
        for (id, w) in std::mem::take(&mut self.workers) {
            w.stop()
                .await
                .unwrap_or_else(|e| panic!("worker {id}: {e}"));
        }
        self.stop_manager().await;
        self.cleanup(&[]).await;
    }

    /// Delete the namespace's queues (plus `extra` queues), exchanges and Redis keys.
    pub async fn cleanup(&mut self, extra: &[String]) {
        if let Err(error) = teardown::remove_namespace(&self.conn, &self.store, extra).await {
            eprintln!("cleaning up namespace {}: {error}", self.names.namespace());
        }
        self.cleaned = true;
        let _ = self.conn.close(200, "test done".into()).await;
    }
}

impl Drop for Cluster {
    /// A test that panicked before [`Cluster::shutdown`] still removes its namespace, so the
    /// shared broker and Redis do not collect leftovers (on its own thread and runtime: the
    /// test's runtime is unwinding).
    fn drop(&mut self) {
        if self.cleaned {
            return;
        }
        // Stop the services at once (a graceful stop would hand queued shards off and could
        // declare queues again behind the cleanup).
        for (_, running) in self.workers.drain(..) {
            running.task.abort();
        }
        for running in self.managers.drain(..) {
            running.task.abort();
        }
        let (connect, names) = (self.connect.clone(), self.names.clone());
        let cleanup = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async {
                let work = async {
                    let conn = amqp::connect(&connect.amqp_url, "shardline-tests cleanup").await?;
                    let store = Store::connect(&connect.redis_url, names).await?;
                    teardown::remove_namespace(&conn, &store, &[]).await?;
                    let _ = conn.close(200, "test cleanup".into()).await;
                    Ok::<_, shardline::Error>(())
                };
                match tokio::time::timeout(Duration::from_secs(10), work).await {
                    Ok(Ok(())) => {}
                    Ok(Err(error)) => eprintln!("cleaning up after a failed test: {error}"),
                    Err(_) => eprintln!("cleaning up after a failed test timed out"),
                }
            });
        });
        let _ = cleanup.join();
    }
}
