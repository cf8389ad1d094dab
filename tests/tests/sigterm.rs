//! A worker process stopped with SIGTERM mid-run loses nothing.

use std::time::Duration;

use shardline::message::Options;
use shardline_tests::process::{signal, spawn_worker};
use shardline_tests::{Cluster, completed, eventually, ready, unsharded};

/// SIGTERM to a busy worker: it finishes its running shards, hands its queued shards to the
/// shared queue, deletes its queue itself (no manager's sweeper runs meanwhile), exits 0, and
/// every request still completes correctly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_run_loses_nothing() {
    let mut c = Cluster::builder().engine_queues().workers(2).start().await;
    let mut proc_worker = spawn_worker(env!("CARGO_BIN_EXE_worker-under-test"), &c, "p0", 2);
    c.wait_registered("p0").await;

    // 12 requests × 10 shards × 100 ms: several seconds of work spread over three engines.
    let work = shardline::kind::synthetic::Work {
        units: 100,
        unit_cost_us: 10_000,
        spin: false,
        noise_seed: None,
        partition: None,
    };
    let payload = shardline::message::to_named_value(&work).expect("value");
    let pending = std::sync::Mutex::new(Vec::new());
    // The manager notices p0 within its refresh period: send until a shard is routed to it.
    eventually(
        "shards routed to the worker process",
        Duration::from_secs(20),
        || async {
            let sent = c
                .client()
                .send("synthetic", payload.clone(), Options::default())
                .await
                .expect("send");
            let id = sent.0;
            pending.lock().expect("lock").push(sent);
            let routed = eventually("the request routed", Duration::from_secs(10), || async {
                let routes = c.store.routes(id).await.ok()?;
                (!routes.is_empty()).then_some(routes)
            })
            .await;
            routed.values().any(|e| e == "p0").then_some(())
        },
    )
    .await;
    let mut pending = pending.into_inner().expect("lock");
    for _ in 0..10 {
        pending.push(
            c.client()
                .send("synthetic", payload.clone(), Options::default())
                .await
                .expect("send"),
        );
    }
    // Stop it while it has shards both running and queued.
    eventually(
        "the worker process busy",
        Duration::from_secs(20),
        || async {
            let mut done = 0;
            for (id, _) in &pending {
                done += c.store.meta(*id).await.ok()??.done;
            }
            (done >= 6).then_some(())
        },
    )
    .await;
    // Without a manager, no sweeper can reap the worker's queue for it.
    c.stop_manager().await;
    signal(&proc_worker, "TERM");
    let status = tokio::time::timeout(Duration::from_secs(40), proc_worker.wait())
        .await
        .expect("worker exits after SIGTERM")
        .expect("wait");
    assert!(status.success(), "worker exited with {status}");
    assert_eq!(
        ready(&c, &c.names.engine_queue("p0")).await,
        None,
        "the stopped worker deleted its own queue"
    );
    c.start_manager(|_| {});

    let want = unsharded("synthetic", payload);
    for (id, rx) in pending {
        let r = c
            .client()
            .wait(id, rx, Duration::from_secs(60))
            .await
            .expect("result");
        assert_eq!(completed(&r), want, "request {id}");
    }
    let live = c
        .store
        .live_engines(Duration::from_secs(60))
        .await
        .expect("redis");
    assert!(
        !live.contains(&"p0".to_string()),
        "the stopped engine deregistered"
    );
    c.shutdown().await;
}

/// Stopping the only worker mid-request (with shards running, prefetched and queued) hands
/// every unfinished shard to the shared queue by itself (no manager runs to reap its queue):
/// its queue is gone, the shared queue holds exactly the unfinished shards, and a worker
/// started afterwards finishes the request, so none was lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_stop_of_the_only_worker_loses_nothing() {
    let mut c = Cluster::builder()
        .engine_queues()
        .workers(1)
        .manager(|m| m.shard_size_scale = 1e-9)
        .worker(|w| w.concurrency = Some(4))
        .start()
        .await;
    let payload = shardline_tests::synthetic(60, 50_000); // 60 shards of 50 ms
    let opts = Options {
        max_shards: Some(60),
        deadline_ms: None,
        ..Options::default()
    };
    let (id, rx) = c
        .client()
        .send("synthetic", payload.clone(), opts)
        .await
        .expect("send");
    shardline_tests::wait_progress(&c, &[id], 8).await;
    // Every shard is published (a stopping manager lets held ones go to the shared queue),
    // and no sweeper runs while the worker stops.
    c.stop_manager().await;
    c.stop_worker("w0").await;
    let done = c.store.meta(id).await.expect("redis").expect("meta").done;
    assert!(done < 60, "the stop landed mid-request ({done} done)");
    assert_eq!(
        ready(&c, &c.names.engine_queue("w0")).await,
        None,
        "the stopped worker deleted its own queue"
    );
    assert_eq!(
        ready(&c, &c.names.kind_queue("synthetic")).await,
        Some(60 - done),
        "the unfinished shards wait in the shared queue"
    );
    c.start_manager(|m| m.shard_size_scale = 1e-9);
    c.add_worker("w1").await;
    let r = c
        .client()
        .wait(id, rx, Duration::from_secs(60))
        .await
        .expect("result");
    assert_eq!(completed(&r), unsharded("synthetic", payload));
    c.shutdown().await;
}
