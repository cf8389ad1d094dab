//! Hedged shards: with `--hedge`, a shard stuck on a slow engine is finished by a copy on
//! another engine, the request completes with every unit counted once, and the slow engine
//! drops its copy once the result is stored.

use std::time::{Duration, Instant};

use shardline::message::{Options, Status};
use shardline_manager::plan::ShardCount;
use shardline_tests::process::{signal, spawn_worker_with};
use shardline_tests::{Cluster, completed, patience, synthetic, unsharded};

const WORKER: &str = env!("CARGO_BIN_EXE_worker-under-test");

/// Shards per request.
const SHARDS: u32 = 4;
/// Units of the request: 100 ms of work per shard at full speed.
const UNITS: u64 = 400;
const UNIT_COST_US: u64 = 1_000;
/// Speed of the slow engine (a process of its own: in-process workers share one registry):
/// its shards take 100 s each, so a request waiting on one of them cannot complete within
/// [`WAIT`].
const SLOW: &str = "0.001";
const WAIT: Duration = Duration::from_secs(20);

/// With hedging on, the shards routed to a stalled engine are copied to the other one and the
/// request completes long before the stalled copies could have, each unit counted once.
/// (With `--hedge false` the same request waits on the slow shards and misses [`WAIT`].)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shards_on_a_stalled_engine_are_finished_by_copies() {
    let c = Cluster::builder()
        .workers(1)
        .manager(|m| {
            m.hedge = true;
            m.shard_count = ShardCount::Fixed(SHARDS);
        })
        .start()
        .await;
    let mut slow = spawn_worker_with(
        WORKER,
        &c,
        "slow",
        2,
        &[("SHARDLINE_SYNTHETIC_SPEED", SLOW)],
    );
    c.wait_seen(&["w0", "slow"]).await;
    let work = synthetic(UNITS, UNIT_COST_US);
    let started = Instant::now();
    let r = c
        .client()
        .submit(
            "synthetic",
            work.clone(),
            Options::default(),
            patience(WAIT),
        )
        .await
        .expect("the request completes while its slow copies are still running");
    let took = started.elapsed();
    assert_eq!((r.status, r.shards), (Status::Completed, SHARDS), "{r:?}");
    assert_eq!(
        completed(&r),
        unsharded("synthetic", work),
        "every unit counted once"
    );
    let routes = c.store.routes(r.request_id).await.expect("redis");
    assert!(
        routes.values().any(|e| e == "slow"),
        "some shards went to the slow engine first: {routes:?}"
    );
    eprintln!("completed in {took:?}; first routes {routes:?}");
    // The slow engine's copies stop at their next check, so it exits promptly on SIGTERM
    // (a stopping worker waits for the shards it is running).
    signal(&slow, "TERM");
    let status = tokio::time::timeout(patience(Duration::from_secs(10)), slow.wait())
        .await
        .expect("the slow engine dropped its unwanted copies and exited")
        .expect("wait for the worker");
    assert!(status.success(), "{status}");
    c.shutdown().await;
}
