//! Fault injection: at exponential intervals, one of
//!
//! - **kill-worker**: SIGKILL a random worker; after 0.5–5 s start a replacement under a new id
//!   (the dead engine's queue is left for the managers to reap);
//! - **term-worker**: SIGTERM a random worker (it finishes its running shards), then restart it
//!   under the same id after 0.5–3 s;
//! - **kill-manager**: SIGKILL a random manager, restart it after 0.5–3 s;
//! - **stop-broker-node** (with `--broker-nodes`): stop the RabbitMQ application of a random
//!   cluster node other than the first (`rabbitmqctl -n <node> stop_app`, which closes every
//!   connection to it and takes its quorum queue members down), start it again after 2–8 s.
//!
//! Weights 40/30/30, or 30/25/20/25 with broker nodes. Faults run one at a time; the fleet
//! lock is not held during the pauses, so the supervisor keeps watching the other processes.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::watch;
use tokio::time::Instant;

use super::fleet::{Fleet, Role, TERM_WAIT};

/// A kind of fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum FaultKind {
    KillWorker,
    TermWorker,
    KillManager,
    StopBrokerNode,
}

impl FaultKind {
    pub(crate) const ALL: [FaultKind; 4] = [
        FaultKind::KillWorker,
        FaultKind::TermWorker,
        FaultKind::KillManager,
        FaultKind::StopBrokerNode,
    ];

    /// The fault a uniform `roll` in [0, 1) picks, with or without broker node faults.
    fn pick(roll: f64, broker_nodes: bool) -> FaultKind {
        let weights: &[(FaultKind, f64)] = if broker_nodes {
            &[
                (FaultKind::KillWorker, 0.30),
                (FaultKind::TermWorker, 0.25),
                (FaultKind::KillManager, 0.20),
                (FaultKind::StopBrokerNode, 0.25),
            ]
        } else {
            &[
                (FaultKind::KillWorker, 0.4),
                (FaultKind::TermWorker, 0.3),
                (FaultKind::KillManager, 0.3),
            ]
        };
        let mut below = 0.0;
        for &(kind, w) in weights {
            below += w;
            if roll < below {
                return kind;
            }
        }
        weights[weights.len() - 1].0
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            FaultKind::KillWorker => "kill-worker (SIGKILL, new id)",
            FaultKind::TermWorker => "term-worker (SIGTERM, same id)",
            FaultKind::KillManager => "kill-manager (SIGKILL)",
            FaultKind::StopBrokerNode => "stop-broker-node (stop_app, start_app)",
        }
    }

    pub(crate) fn short(self) -> &'static str {
        match self {
            FaultKind::KillWorker => "kill-worker",
            FaultKind::TermWorker => "term-worker",
            FaultKind::KillManager => "kill-manager",
            FaultKind::StopBrokerNode => "stop-broker-node",
        }
    }
}

/// One injected fault.
#[derive(Debug, Clone)]
pub(crate) struct Fault {
    /// Since the start of the load.
    pub(crate) at: Duration,
    pub(crate) kind: FaultKind,
    pub(crate) target: String,
    /// The process started in its place.
    pub(crate) replacement: String,
    /// Anything unusual (slow stop, failed restart).
    pub(crate) note: Option<String>,
}

impl std::fmt::Display for Fault {
    /// `kind: target → replacement (note)`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {} → {}",
            self.kind.short(),
            self.target,
            self.replacement
        )?;
        match &self.note {
            Some(n) => write!(f, " ({n})"),
            None => Ok(()),
        }
    }
}

/// Faults so far, shared with the progress lines and the report.
pub(crate) type FaultLog = Arc<Mutex<Vec<Fault>>>;

/// How many faults of each kind `log` holds.
pub(crate) fn counts(log: &FaultLog) -> Vec<(FaultKind, usize)> {
    let faults = log
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    FaultKind::ALL
        .iter()
        .map(|k| (*k, faults.iter().filter(|f| f.kind == *k).count()))
        .collect()
}

/// Inject faults with mean interval `mean` until `stop` turns true; a fault under way when it
/// does is finished (its restart included). `broker_nodes`: the RabbitMQ nodes a
/// stop-broker-node fault may stop (none: no such faults).
pub(crate) async fn inject(
    fleet: Arc<tokio::sync::Mutex<Fleet>>,
    log: FaultLog,
    seed: u64,
    mean: Duration,
    broker_nodes: Vec<String>,
    t0: Instant,
    mut stop: watch::Receiver<bool>,
) {
    let mut rng = StdRng::seed_from_u64(seed ^ 0xfa17_fa17);
    loop {
        let u: f64 = rng.random();
        let wait = mean.mul_f64(-(1.0 - u).ln());
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            () = tokio::time::sleep(wait) => {}
        }
        let kind = FaultKind::pick(rng.random(), !broker_nodes.is_empty());
        let at = t0.elapsed();
        let fault = if kind == FaultKind::StopBrokerNode {
            let node = &broker_nodes[rng.random_range(0..broker_nodes.len())];
            Some(stop_broker_node(node, &mut rng, at).await)
        } else {
            one(&fleet, kind, &mut rng, at).await
        };
        if let Some(f) = fault {
            eprintln!("soak: +{:.0}s fault {f}", at.as_secs_f64());
            log.lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(f);
        }
    }
}

/// Stop the RabbitMQ application on `node`, start it again after 2–8 s.
async fn stop_broker_node(node: &str, rng: &mut StdRng, at: Duration) -> Fault {
    let mut notes = Vec::new();
    if let Err(e) = rabbitmqctl(node, "stop_app").await {
        notes.push(format!("stop_app failed: {e:#}"));
    }
    tokio::time::sleep(Duration::from_millis(rng.random_range(2_000..=8_000))).await;
    if let Err(e) = rabbitmqctl(node, "start_app").await {
        notes.push(format!("start_app failed: {e:#}"));
    }
    Fault {
        at,
        kind: FaultKind::StopBrokerNode,
        target: node.to_owned(),
        replacement: node.to_owned(),
        note: (!notes.is_empty()).then(|| notes.join("; ")),
    }
}

async fn rabbitmqctl(node: &str, command: &str) -> anyhow::Result<()> {
    let out = tokio::process::Command::new("rabbitmqctl")
        .args(["-q", "-n", node, command])
        .output()
        .await?;
    anyhow::ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

async fn one(
    fleet: &tokio::sync::Mutex<Fleet>,
    kind: FaultKind,
    rng: &mut StdRng,
    at: Duration,
) -> Option<Fault> {
    let role = match kind {
        FaultKind::KillManager => Role::Manager,
        FaultKind::KillWorker | FaultKind::TermWorker => Role::Worker,
        FaultKind::StopBrokerNode => return None,
    };
    let victim = fleet.lock().await.take(role, rng)?;
    let target = victim.id.clone();
    let mut note = None;
    let pause = match kind {
        FaultKind::KillWorker => {
            victim.kill().await;
            rng.random_range(500..=5_000)
        }
        FaultKind::TermWorker => {
            let (status, killed) = victim.term(TERM_WAIT).await;
            if killed {
                note = Some(format!("ignored SIGTERM for {TERM_WAIT:?}; killed"));
            } else if let Some(s) = status.filter(|s| !s.success()) {
                note = Some(format!("exited with {s} after SIGTERM"));
            }
            rng.random_range(500..=3_000)
        }
        FaultKind::KillManager | FaultKind::StopBrokerNode => {
            victim.kill().await;
            rng.random_range(500..=3_000)
        }
    };
    tokio::time::sleep(Duration::from_millis(pause)).await;
    let mut f = fleet.lock().await;
    let replacement = match kind {
        FaultKind::KillWorker => f.fresh_worker_id(),
        FaultKind::TermWorker | FaultKind::KillManager | FaultKind::StopBrokerNode => {
            target.clone()
        }
    };
    let started = match role {
        Role::Manager => f.start_manager(&replacement),
        Role::Worker => f.start_worker(&replacement),
    };
    if let Err(e) = started {
        note = Some(format!("restart failed: {e:#}"));
    }
    if let Some(n) = &note {
        f.note(format!("+{:.0}s {target}: {n}", at.as_secs_f64()));
    }
    Some(Fault {
        at,
        kind,
        target,
        replacement,
        note,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Broker node faults are picked only when there are nodes to stop, and then about a
    /// quarter of the time.
    #[test]
    fn broker_node_faults_only_with_nodes() {
        let rolls: Vec<f64> = (0..1000).map(|i| f64::from(i) / 1000.0).collect();
        let count = |nodes: bool| {
            rolls
                .iter()
                .filter(|r| FaultKind::pick(**r, nodes) == FaultKind::StopBrokerNode)
                .count()
        };
        assert_eq!(count(false), 0);
        assert_eq!(count(true), 250);
        assert_eq!(FaultKind::pick(0.999_999, false), FaultKind::KillManager);
    }
}
