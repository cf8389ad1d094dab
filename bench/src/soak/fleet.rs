//! The deployment as child processes: managers and workers started from the release binaries,
//! stopped by signal, restarted, and supervised (a process that exits on its own is noted and
//! restarted).
//!
//! Each process writes its stderr (`RUST_LOG`, plain format) to `<log dir>/<id>.log`; a
//! restarted process appends to the same file after a marker line.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use anyhow::Context;
use rand::Rng;
use rand::rngs::StdRng;
use shardline::config::ConnectArgs;
use tokio::process::{Child, Command};
use tokio::time::Instant;

/// Worker heartbeat period, ms.
const HEARTBEAT_MS: &str = "500";
/// Managers stop routing to an engine silent this long, and reap its queue, ms.
const ENGINE_TTL_MS: &str = "3000";
/// How long a worker's shutdown waits for its running shards, ms.
const WORKER_GRACE_MS: &str = "10000";
/// How long a process may take to exit after SIGTERM before it is killed.
pub(crate) const TERM_WAIT: Duration = Duration::from_secs(40);

/// The shard-count mode of manager `id`: the odd-numbered managers (`m1`, `m3`, …) cut by
/// the kind's preferred size, the others adaptively. The soak then covers both planners, and
/// a wide request (see `mix::WIDE_SHARDS`) taken by a size-mode manager gets its whole fan-out
/// of 64–256 shards (the adaptive count, which a request can only cap, usually cuts fewer).
fn shard_count_of(id: &str) -> &'static str {
    let odd = id
        .strip_prefix('m')
        .and_then(|n| n.parse::<u32>().ok())
        .is_some_and(|n| n % 2 == 1);
    if odd { "size" } else { "adaptive" }
}

/// Where the binaries are.
#[derive(Debug, Clone)]
pub(crate) struct Bins {
    manager: PathBuf,
    worker: PathBuf,
}

impl Bins {
    /// The given paths, else the binaries next to this executable.
    ///
    /// # Errors
    /// A binary does not exist.
    pub(crate) fn locate(
        manager: Option<PathBuf>,
        worker: Option<PathBuf>,
    ) -> anyhow::Result<Self> {
        let here = std::env::current_exe()
            .context("finding this executable")?
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let manager = manager.unwrap_or_else(|| here.join("shardline-manager"));
        let worker = worker.unwrap_or_else(|| here.join("shardline-worker"));
        for b in [&manager, &worker] {
            anyhow::ensure!(
                b.is_file(),
                "{} not found: build it (cargo build --release -p shardline-manager -p \
                 shardline-worker) or pass --manager-bin/--worker-bin",
                b.display()
            );
        }
        Ok(Bins { manager, worker })
    }
}

/// What every process gets.
#[derive(Debug, Clone)]
pub(crate) struct Setup {
    pub(crate) bins: Bins,
    pub(crate) connect: ConnectArgs,
    pub(crate) log_dir: PathBuf,
    pub(crate) concurrency: u16,
    pub(crate) rust_log: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    Manager,
    Worker,
}

/// One running process.
#[derive(Debug)]
pub(crate) struct Proc {
    pub(crate) id: String,
    pub(crate) role: Role,
    child: Child,
    pid: u32,
}

impl Proc {
    /// SIGKILL and reap.
    pub(crate) async fn kill(mut self) -> Option<ExitStatus> {
        let _ = self.child.start_kill();
        self.child.wait().await.ok()
    }

    /// SIGTERM and wait up to `within`; a process still running then is killed. Returns the
    /// exit status and whether it had to be killed.
    pub(crate) async fn term(mut self, within: Duration) -> (Option<ExitStatus>, bool) {
        let sent = Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status()
            .await
            .is_ok_and(|s| s.success());
        if sent && let Ok(status) = tokio::time::timeout(within, self.child.wait()).await {
            return (status.ok(), false);
        }
        (self.kill().await, true)
    }
}

/// The running deployment.
#[derive(Debug)]
pub(crate) struct Fleet {
    setup: Setup,
    started: Instant,
    pub(crate) workers: Vec<Proc>,
    pub(crate) managers: Vec<Proc>,
    next_worker: usize,
    all_workers: Vec<String>,
    notes: Vec<String>,
}

impl Fleet {
    pub(crate) fn new(setup: Setup) -> Self {
        Fleet {
            setup,
            started: Instant::now(),
            workers: Vec::new(),
            managers: Vec::new(),
            next_worker: 0,
            all_workers: Vec::new(),
            notes: Vec::new(),
        }
    }

    /// A worker id never used in this run.
    pub(crate) fn fresh_worker_id(&mut self) -> String {
        let id = format!("w{}", self.next_worker);
        self.next_worker += 1;
        id
    }

    /// Start a worker with this id.
    ///
    /// # Errors
    /// The binary cannot be started.
    pub(crate) fn start_worker(&mut self, id: &str) -> anyhow::Result<()> {
        let mut cmd = Command::new(&self.setup.bins.worker);
        cmd.env("SHARDLINE_WORKER_ID", id)
            .env("SHARDLINE_CONCURRENCY", self.setup.concurrency.to_string())
            .env("SHARDLINE_HEARTBEAT_MS", HEARTBEAT_MS)
            .env("SHARDLINE_GRACE_MS", WORKER_GRACE_MS);
        let p = self.spawn(cmd, id, Role::Worker)?;
        if !self.all_workers.iter().any(|w| w == id) {
            self.all_workers.push(id.to_owned());
        }
        self.workers.push(p);
        Ok(())
    }

    /// Start a manager with this id (the id only names its log).
    ///
    /// # Errors
    /// The binary cannot be started.
    pub(crate) fn start_manager(&mut self, id: &str) -> anyhow::Result<()> {
        let mut cmd = Command::new(&self.setup.bins.manager);
        // Several managers share the host: each serves its metrics on a port of its own.
        cmd.env("SHARDLINE_METRICS_ADDR", "0");
        cmd.env("SHARDLINE_ENGINE_TTL_MS", ENGINE_TTL_MS)
            .env("SHARDLINE_SHARD_COUNT", shard_count_of(id));
        let p = self.spawn(cmd, id, Role::Manager)?;
        self.managers.push(p);
        Ok(())
    }

    fn spawn(&self, mut cmd: Command, id: &str, role: Role) -> anyhow::Result<Proc> {
        let path = self.setup.log_dir.join(format!("{id}.log"));
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        writeln!(
            log,
            "--- soak: {id} starting at +{:.1}s ---",
            self.started.elapsed().as_secs_f64()
        )?;
        let c = &self.setup.connect;
        cmd.env("SHARDLINE_AMQP_URL", &c.amqp_url)
            .env("SHARDLINE_REDIS_URL", &c.redis_url)
            .env(
                "SHARDLINE_REDIS_WAIT_REPLICAS",
                c.redis_wait_replicas.to_string(),
            )
            .env("SHARDLINE_QUEUE_TYPE", c.queue_type.as_str())
            .env("SHARDLINE_NAMESPACE", &c.namespace)
            .env("RUST_LOG", &self.setup.rust_log)
            .env_remove("SHARDLINE_LOG_FORMAT")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .kill_on_drop(true);
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {id} ({role:?})"))?;
        let pid = child.id().with_context(|| format!("{id} exited at once"))?;
        Ok(Proc {
            id: id.to_owned(),
            role,
            child,
            pid,
        })
    }

    /// Take a random process of `role` out of the fleet (to stop it).
    pub(crate) fn take(&mut self, role: Role, rng: &mut StdRng) -> Option<Proc> {
        let list = match role {
            Role::Manager => &mut self.managers,
            Role::Worker => &mut self.workers,
        };
        if list.is_empty() {
            return None;
        }
        let i = rng.random_range(0..list.len());
        Some(list.swap_remove(i))
    }

    /// Restart every process that exited on its own; returns what happened.
    pub(crate) fn supervise(&mut self) -> Vec<String> {
        let mut exited = Vec::new();
        for list in [&mut self.managers, &mut self.workers] {
            let mut i = 0;
            while i < list.len() {
                match list[i].child.try_wait() {
                    Ok(Some(status)) => {
                        let p = list.swap_remove(i);
                        exited.push((p.id, p.role, status));
                    }
                    Ok(None) | Err(_) => i += 1,
                }
            }
        }
        let mut notes = Vec::new();
        for (id, role, status) in exited {
            let at = self.started.elapsed().as_secs_f64();
            let restarted = match role {
                Role::Manager => self.start_manager(&id),
                Role::Worker => self.start_worker(&id),
            };
            let note = match restarted {
                Ok(()) => format!("+{at:.0}s {id} exited on its own ({status}); restarted"),
                Err(e) => {
                    format!("+{at:.0}s {id} exited on its own ({status}); restart failed: {e:#}")
                }
            };
            self.notes.push(note.clone());
            notes.push(note);
        }
        notes
    }

    /// Record something about the processes for the report.
    pub(crate) fn note(&mut self, note: String) {
        self.notes.push(note);
    }

    /// Everything noted (unexpected exits, slow stops).
    pub(crate) fn notes(&self) -> Vec<String> {
        self.notes.clone()
    }

    /// Ids of the running workers.
    pub(crate) fn worker_ids(&self) -> Vec<String> {
        self.workers.iter().map(|p| p.id.clone()).collect()
    }

    /// Every worker id used in this run (their queues are deleted at the end).
    pub(crate) fn all_worker_ids(&self) -> Vec<String> {
        self.all_workers.clone()
    }

    /// SIGTERM everything (workers first, so managers can still reap), wait, kill stragglers.
    pub(crate) async fn shutdown(&mut self) {
        for list in [
            std::mem::take(&mut self.workers),
            std::mem::take(&mut self.managers),
        ] {
            let stops = list.into_iter().map(|p| async move {
                let id = p.id.clone();
                let (status, killed) = p.term(TERM_WAIT).await;
                (id, status, killed)
            });
            for (id, status, killed) in futures::future::join_all(stops).await {
                if killed {
                    self.notes.push(format!(
                        "shutdown: {id} ignored SIGTERM for {TERM_WAIT:?}; killed"
                    ));
                } else if let Some(s) = status.filter(|s| !s.success()) {
                    self.notes.push(format!("shutdown: {id} exited with {s}"));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every second manager plans by size, the rest adaptively, across restarts by id.
    #[test]
    fn odd_managers_cut_by_size() {
        assert_eq!(shard_count_of("m0"), "adaptive");
        assert_eq!(shard_count_of("m1"), "size");
        assert_eq!(shard_count_of("m3"), "size");
        assert_eq!(shard_count_of("w1"), "adaptive");
    }
}
