//! One deployment under test: a manager and workers started as real processes from a
//! directory of binaries, on a namespace of their own, their stderr in a log file each; for a
//! watched build, a dashboard with its page's polling too ([`super::watch`]).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context;
use shardline::config::ConnectArgs;
use shardline::store::Store;
use tokio::process::{Child, Command};
use tokio::time::Instant;

use super::watch::{self, Watch};

/// How long a process may take to exit after SIGTERM before it is killed.
const TERM_WAIT: Duration = Duration::from_secs(20);
/// How long the workers may take to register.
const START_WAIT: Duration = Duration::from_secs(30);

/// A set of binaries to measure, with the label the tables give it.
#[derive(Debug, Clone)]
pub struct Build {
    /// `current`, `baseline`, …
    pub label: String,
    /// Directory holding `shardline-manager` and `shardline-worker` (and `shardline`, for a
    /// watched build).
    pub dir: PathBuf,
    /// Whether a dashboard is kept open on the deployment.
    pub watched: bool,
    /// Another Redis for this build's deployments (a cluster's node URLs), instead of the
    /// suite's.
    pub redis_url: Option<String>,
    /// `--redis-wait-replicas` of this build's deployments.
    pub redis_wait_replicas: u32,
    /// Another broker for this build's deployments (a cluster's node URLs), instead of the
    /// suite's.
    pub amqp_url: Option<String>,
    /// `--queue-type` of this build's deployments.
    pub queue_type: shardline::amqp::QueueType,
}

impl Build {
    /// The build in `dir`, checked to hold both binaries.
    ///
    /// # Errors
    /// A binary is missing.
    pub fn locate(label: &str, dir: &Path) -> anyhow::Result<Self> {
        for bin in ["shardline-manager", "shardline-worker"] {
            anyhow::ensure!(
                dir.join(bin).is_file(),
                "{} not found: build it (cargo build --release -p shardline-manager -p \
                 shardline-worker) or point --bins/--baseline-bins at the right directory",
                dir.join(bin).display()
            );
        }
        Ok(Build {
            label: label.to_owned(),
            dir: dir.to_path_buf(),
            watched: false,
            redis_url: None,
            redis_wait_replicas: shardline::config::DEFAULT_REDIS_WAIT_REPLICAS,
            amqp_url: None,
            queue_type: shardline::amqp::QueueType::default(),
        })
    }

    /// The same binaries with a dashboard kept open, labelled `<label>+dashboard`.
    ///
    /// # Errors
    /// The build has no `shardline` binary.
    pub fn watched(&self) -> anyhow::Result<Self> {
        let bin = watch::binary(&self.dir);
        anyhow::ensure!(
            bin.is_file(),
            "{} not found: build it (cargo build --release -p shardline-client)",
            bin.display()
        );
        Ok(Build {
            label: format!("{}+dashboard", self.label),
            dir: self.dir.clone(),
            watched: true,
            ..self.clone()
        })
    }

    /// The same binaries on the Redis Cluster at `urls`, their writes waiting for
    /// `wait_replicas` replicas, labelled `<label>@redis-cluster` (`+wait<n>` when they wait).
    pub fn on_cluster(&self, urls: &str, wait_replicas: u32) -> Self {
        let wait = if wait_replicas > 0 {
            format!("+wait{wait_replicas}")
        } else {
            String::new()
        };
        Build {
            label: format!("{}@redis-cluster{wait}", self.label),
            redis_url: Some(urls.to_owned()),
            redis_wait_replicas: wait_replicas,
            ..self.clone()
        }
    }

    /// The same binaries on the RabbitMQ cluster at `urls` with quorum queues, labelled
    /// `<label>@rabbitmq-cluster`.
    pub fn on_rabbitmq_cluster(&self, urls: &str) -> Self {
        Build {
            label: format!("{}@rabbitmq-cluster", self.label),
            amqp_url: Some(urls.to_owned()),
            queue_type: shardline::amqp::QueueType::Quorum,
            ..self.clone()
        }
    }
}

/// A running manager and its workers.
#[derive(Debug)]
pub struct Deployment {
    procs: Vec<(String, Child)>,
    watch: Option<Watch>,
}

impl Deployment {
    /// Start one manager (with `shard_count`, e.g. `64` or `adaptive`) and `workers` workers,
    /// and wait until every worker has registered.
    ///
    /// # Errors
    /// A binary cannot start, or the workers do not register in time.
    pub async fn start(
        build: &Build,
        connect: &ConnectArgs,
        shard_count: &str,
        workers: usize,
        log_dir: &Path,
    ) -> anyhow::Result<Self> {
        let mut procs = Vec::new();
        let mut manager = Command::new(build.dir.join("shardline-manager"));
        manager.env("SHARDLINE_SHARD_COUNT", shard_count);
        // Metrics on in every process (a port each), so that their cost is in the figures.
        manager.env("SHARDLINE_METRICS_ADDR", "0");
        procs.push((
            "manager".to_owned(),
            spawn(manager, connect, log_dir, "manager")?,
        ));
        for i in 0..workers {
            let id = format!("w{i}");
            let mut worker = Command::new(build.dir.join("shardline-worker"));
            worker
                .env("SHARDLINE_WORKER_ID", &id)
                .env("SHARDLINE_METRICS_ADDR", "0");
            procs.push((id.clone(), spawn(worker, connect, log_dir, &id)?));
        }
        let mut deployment = Deployment { procs, watch: None };
        let store = Store::connect(&connect.redis_url, connect.names()?).await?;
        let until = Instant::now() + START_WAIT;
        while store.live_engines(START_WAIT).await?.len() < workers {
            anyhow::ensure!(
                Instant::now() < until,
                "the workers did not register within {START_WAIT:?} (logs in {})",
                log_dir.display()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if build.watched {
            let mut cmd = Command::new(watch::binary(&build.dir));
            environment(&mut cmd, connect);
            let log = log_file(connect, log_dir, "dashboard")?;
            deployment.watch = Some(Watch::open(cmd, log).await?);
        }
        Ok(deployment)
    }

    /// Each process's name and pid.
    pub fn pids(&self) -> Vec<(String, u32)> {
        let dashboard = self.watch.as_ref().map(|w| ("dashboard", &w.child));
        self.procs
            .iter()
            .map(|(name, child)| (name.as_str(), child))
            .chain(dashboard)
            .filter_map(|(name, child)| Some((name.to_owned(), child.id()?)))
            .collect()
    }

    /// SIGTERM every process and wait for it; kill one that takes longer than [`TERM_WAIT`].
    /// A watched deployment's poller stops first, and says how many answers it got.
    pub async fn stop(mut self) {
        if let Some(w) = self.watch.take() {
            let (answered, failed) = w.close();
            eprintln!("    dashboard: {answered} answers, {failed} failed polls");
            self.procs.push(("dashboard".to_owned(), w.child));
        }
        let stops = self.procs.into_iter().map(|(_, mut child)| async move {
            if let Some(pid) = child.id() {
                let _ = Command::new("kill")
                    .args(["-TERM", &pid.to_string()])
                    .status()
                    .await;
            }
            if tokio::time::timeout(TERM_WAIT, child.wait()).await.is_err() {
                let _ = child.kill().await;
            }
        });
        futures::future::join_all(stops).await;
    }
}

fn spawn(
    mut cmd: Command,
    connect: &ConnectArgs,
    log_dir: &Path,
    name: &str,
) -> anyhow::Result<Child> {
    let log = log_file(connect, log_dir, name)?;
    environment(&mut cmd, connect);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .kill_on_drop(true);
    cmd.spawn().with_context(|| format!("starting {name}"))
}

/// The deployment's broker, Redis and namespace, and nothing inherited that would change it.
fn environment(cmd: &mut Command, connect: &ConnectArgs) {
    cmd.env("SHARDLINE_AMQP_URL", &connect.amqp_url)
        .env("SHARDLINE_REDIS_URL", &connect.redis_url)
        .env(
            "SHARDLINE_REDIS_WAIT_REPLICAS",
            connect.redis_wait_replicas.to_string(),
        )
        .env("SHARDLINE_QUEUE_TYPE", connect.queue_type.as_str())
        .env("SHARDLINE_NAMESPACE", &connect.namespace)
        .env_remove("SHARDLINE_CONCURRENCY")
        .env_remove("SHARDLINE_LOG_FORMAT")
        .env_remove("SHARDLINE_DASHBOARD_TOKEN");
}

/// A new log file for process `name` of the deployment.
fn log_file(connect: &ConnectArgs, log_dir: &Path, name: &str) -> anyhow::Result<std::fs::File> {
    let path = log_dir.join(format!("{}-{name}.log", connect.namespace));
    std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))
}

/// Remove the namespace's queues, exchanges and keys (best effort: a failure is logged).
pub async fn remove(connect: &ConnectArgs) {
    let work = async {
        let conn = shardline::amqp::connect(&connect.amqp_url, "shardline-bench cleanup").await?;
        let store = Store::connect(&connect.redis_url, connect.names()?).await?;
        shardline::teardown::remove_namespace(&conn, &store, &[]).await?;
        let _ = conn.close(200, "throughput cell done".into()).await;
        Ok::<_, shardline::Error>(())
    };
    if let Err(error) = work.await {
        tracing::warn!(%error, namespace = %connect.namespace, "cleaning up the namespace failed");
    }
}
