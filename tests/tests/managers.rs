//! Managers: several at once, and one killed in the middle of a fan-out.

use std::collections::BTreeMap;
use std::time::Duration;

use redis::AsyncCommands;

use shardline_tests::process::{signal, spawn_manager};
use shardline_tests::raw::{Replies, publish_request};
use shardline_tests::{
    Cluster, completed, consumers, eventually, request_body, synthetic, unsharded,
};
use uuid::Uuid;

/// Two managers consume the request queue together: each records some of the requests, and
/// every request completes exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_managers_share_the_requests() {
    let mut c = Cluster::builder().start().await;
    c.start_manager(|_| {});
    eventually(
        "both managers consuming",
        Duration::from_secs(20),
        || async {
            let n = consumers(&c, &c.names.requests_queue()).await?;
            (n == 2).then_some(())
        },
    )
    .await;
    let mut replies = Replies::new(&c).await;
    let payload = rmpv::Value::Array((0..300i64).rev().map(rmpv::Value::from).collect());
    let body = request_body("sort", payload.clone(), &[]);
    let ids: Vec<Uuid> = (0..60).map(|_| Uuid::new_v4()).collect();
    for id in &ids {
        publish_request(&c, &body, None, &id.to_string(), Some(&replies.queue)).await;
    }
    let want = unsharded("sort", payload);
    for r in replies
        .exactly_one_each(&ids, Duration::from_secs(60))
        .await
        .values()
    {
        assert_eq!(completed(r), want);
    }
    let client = redis::Client::open(c.connect.redis_url.as_str()).expect("redis url");
    let mut redis = client
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    let mut managers = BTreeMap::<String, usize>::new();
    for id in &ids {
        let manager: Option<String> = redis
            .hget(c.names.meta_key(*id), "manager")
            .await
            .expect("hget");
        *managers
            .entry(manager.expect("a manager field"))
            .or_default() += 1;
    }
    assert_eq!(managers.len(), 2, "requests per manager: {managers:?}");
    c.shutdown().await;
}

/// A manager process killed with SIGKILL after recording a 5,000-shard request and while
/// publishing its shards: the broker redelivers the request to another manager, which
/// publishes the missing shards, and the request completes exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manager_killed_mid_fan_out() {
    let mut c = Cluster::builder()
        .without_manager()
        .worker(|w| w.concurrency = Some(8))
        .start()
        .await;
    let mut doomed = spawn_manager(
        env!("CARGO_BIN_EXE_manager-under-test"),
        &c,
        &[("SHARDLINE_SHARD_SIZE_SCALE", "1e-9")],
    );
    let mut replies = Replies::new(&c).await;
    let payload = synthetic(5_000, 100);
    let id = Uuid::new_v4();
    let body = request_body("synthetic", payload.clone(), &[("max_shards", 5_000)]);
    publish_request(&c, &body, None, &id.to_string(), Some(&replies.queue)).await;
    // The record is written before the first shard is published: kill as soon as it exists.
    eventually("the request recorded", Duration::from_secs(30), || async {
        c.store.meta(id).await.ok()?
    })
    .await;
    signal(&doomed, "KILL");
    let _ = doomed.wait().await;
    // Published shards are either done, waiting in a queue, or held unacked by a worker (at
    // most 2 queues × prefetch 8 × 3 workers = 48); fewer than 5,000 proves the kill landed
    // mid-fan-out.
    let done = c.store.meta(id).await.expect("redis").expect("meta").done;
    let ch = c.channel().await;
    let mut ready = 0;
    for q in ["w0", "w1", "w2"]
        .map(|w| c.names.engine_queue(w))
        .into_iter()
        .chain([c.names.kind_queue("synthetic")])
    {
        ready += ch
            .queue_declare(
                q.into(),
                lapin::options::QueueDeclareOptions::default().passive(),
                Default::default(),
            )
            .await
            .expect("queue")
            .message_count();
    }
    eprintln!("at the kill: {done} done + {ready} ready (+ at most 48 unacked) of 5000");
    assert!(
        done + ready + 48 < 5_000,
        "the fan-out had finished before the kill"
    );

    c.start_manager(|m| m.shard_size_scale = 1e-9);
    let results = replies
        .exactly_one_each(&[id], Duration::from_secs(120))
        .await;
    let r = &results[&id];
    assert_eq!(r.shards, 5_000);
    assert_eq!(completed(r), unsharded("synthetic", payload));
    c.shutdown().await;
}
