//! A request of 100,000 shards completes with every shard counted once, with bounded memory in
//! the manager and in each worker (real processes, so each one's peak is its own).

use std::time::{Duration, Instant};

use shardline::message::{Options, Status};
use shardline_tests::process::{spawn_manager, spawn_worker};
use shardline_tests::{Cluster, completed, eventually, patience, synthetic, unsharded};

const SHARDS: u32 = 100_000;
const MANAGER: &str = env!("CARGO_BIN_EXE_manager-under-test");
const WORKER: &str = env!("CARGO_BIN_EXE_worker-under-test");

/// Peak resident memory (`VmHWM`) of a process, in KiB.
fn peak_kib(pid: u32) -> u64 {
    let status =
        std::fs::read_to_string(format!("/proc/{pid}/status")).expect("the process status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in the process status")
}

/// A 100,000-shard request completes exactly once with every unit counted, and the peak
/// memory stays bounded: under 100 MiB for the manager (it splits, routes and tracks every
/// shard; about 45 MiB measured) and under 64 MiB for each worker (the finalizer reads all
/// 100,000 partials but not the per-shard bookkeeping; about 31 MiB measured, 83 MiB when it
/// read the whole metadata hash).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_thousand_shard_request() {
    let c = Cluster::builder()
        .without_manager()
        .workers(0)
        .start()
        .await;
    let workers: Vec<_> = ["a", "b"]
        .into_iter()
        .map(|id| spawn_worker(WORKER, &c, id, 16))
        .collect();
    let manager = spawn_manager(
        MANAGER,
        &c,
        &[
            ("SHARDLINE_MAX_SHARDS", "100000"),
            ("SHARDLINE_SHARD_COUNT", "100000"),
        ],
    );
    eventually(
        "both workers registered",
        Duration::from_secs(30),
        || async {
            let live = c.store.live_engines(Duration::from_secs(5)).await.ok()?;
            (live.len() == 2).then_some(())
        },
    )
    .await;

    let started = Instant::now();
    let r = c
        .client()
        .submit(
            "synthetic",
            synthetic(u64::from(SHARDS), 0),
            Options {
                max_shards: Some(SHARDS),
                ..Options::default()
            },
            patience(Duration::from_secs(600)),
        )
        .await
        .expect("the request completes");
    let took = started.elapsed();
    assert_eq!((r.status, r.shards), (Status::Completed, SHARDS));
    assert_eq!(
        completed(&r),
        unsharded("synthetic", synthetic(u64::from(SHARDS), 0)),
        "every unit counted once (the same digest as one shard)"
    );
    let meta = c
        .store
        .meta(r.request_id)
        .await
        .expect("redis")
        .expect("meta");
    assert_eq!((meta.done, meta.total), (SHARDS, SHARDS));

    let manager_kib = peak_kib(manager.id().expect("manager running"));
    let worker_kib: Vec<u64> = workers
        .iter()
        .map(|w| peak_kib(w.id().expect("worker running")))
        .collect();
    eprintln!(
        "100,000 shards in {took:?}; peak memory: manager {manager_kib} KiB, workers {worker_kib:?} KiB"
    );
    assert!(manager_kib < 100 * 1024, "manager peak {manager_kib} KiB");
    for kib in worker_kib {
        assert!(kib < 64 * 1024, "worker peak {kib} KiB");
    }
    for mut child in workers.into_iter().chain([manager]) {
        let _ = child.kill().await;
    }
    c.shutdown().await;
}
