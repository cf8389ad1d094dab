//! Real binaries as child processes.

use std::process::Stdio;

use tokio::process::{Child, Command};

use crate::Cluster;

/// Start the real worker binary (pass `env!("CARGO_BIN_EXE_worker-under-test")`) as a process
/// on the cluster's namespace.
pub fn spawn_worker(bin: &str, cluster: &Cluster, id: &str, concurrency: u16) -> Child {
    spawn_worker_with(bin, cluster, id, concurrency, &[])
}

/// [`spawn_worker`] with extra environment settings.
pub fn spawn_worker_with(
    bin: &str,
    cluster: &Cluster,
    id: &str,
    concurrency: u16,
    env: &[(&str, &str)],
) -> Child {
    Command::new(bin)
        .envs(env.iter().copied())
        .env("SHARDLINE_AMQP_URL", &cluster.services_connect.amqp_url)
        .env("SHARDLINE_REDIS_URL", &cluster.connect.redis_url)
        .env(
            "SHARDLINE_REDIS_WAIT_REPLICAS",
            cluster.connect.redis_wait_replicas.to_string(),
        )
        .env("SHARDLINE_QUEUE_TYPE", cluster.connect.queue_type.as_str())
        .env("SHARDLINE_NAMESPACE", &cluster.connect.namespace)
        .env("SHARDLINE_WORKER_ID", id)
        .env("SHARDLINE_CONCURRENCY", concurrency.to_string())
        .env("SHARDLINE_HEARTBEAT_MS", "500")
        .env(
            "RUST_LOG",
            std::env::var("WORKER_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("start the worker binary")
}

/// Start the real manager binary (pass `env!("CARGO_BIN_EXE_manager-under-test")`) as a
/// process on the cluster's namespace, with extra environment settings.
pub fn spawn_manager(bin: &str, cluster: &Cluster, env: &[(&str, &str)]) -> Child {
    let mut cmd = Command::new(bin);
    // Tests start several managers at once: no default metrics port unless `env` asks.
    cmd.env("SHARDLINE_METRICS_ADDR", "off")
        .env("SHARDLINE_AMQP_URL", &cluster.services_connect.amqp_url)
        .env("SHARDLINE_REDIS_URL", &cluster.connect.redis_url)
        .env(
            "SHARDLINE_REDIS_WAIT_REPLICAS",
            cluster.connect.redis_wait_replicas.to_string(),
        )
        .env("SHARDLINE_QUEUE_TYPE", cluster.connect.queue_type.as_str())
        .env("SHARDLINE_NAMESPACE", &cluster.connect.namespace)
        .env(
            "RUST_LOG",
            std::env::var("WORKER_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.spawn().expect("start the manager binary")
}

/// Send a signal by name (TERM, KILL) to a child.
pub fn signal(child: &Child, sig: &str) {
    let pid = child.id().expect("child is running");
    let status = std::process::Command::new("kill")
        .args([format!("-{sig}"), pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{sig} {pid}");
}

/// A `shardline` CLI command (pass `env!("CARGO_BIN_EXE_shardline-under-test")`) on the
/// cluster's namespace.
pub fn cli(bin: &str, cluster: &Cluster) -> Command {
    let mut c = Command::new(bin);
    c.env("SHARDLINE_AMQP_URL", &cluster.services_connect.amqp_url)
        .env("SHARDLINE_REDIS_URL", &cluster.connect.redis_url)
        .env("SHARDLINE_QUEUE_TYPE", cluster.connect.queue_type.as_str())
        .env("SHARDLINE_NAMESPACE", &cluster.connect.namespace)
        .env_remove("RUST_LOG")
        .kill_on_drop(true);
    c
}
