//! The whole pipeline on a real 3-node RabbitMQ cluster (from `scripts/rabbitmq-cluster.sh`)
//! with quorum queues: every built-in kind, end to end, equals the unsharded answer, and
//! every queue of the namespace is a quorum queue.

use std::time::Duration;

use rand::{Rng, SeedableRng, rngs::StdRng};
use shardline::amqp::QueueType;
use shardline::message::Options;
use shardline_tests::{Cluster, completed, rabbitmq_cluster, unsharded};

const WAIT: Duration = Duration::from_secs(60);

fn payloads() -> Vec<(&'static str, rmpv::Value)> {
    let mut rng = StdRng::seed_from_u64(21);
    let words: Vec<&str> = (0..20_000)
        .map(|_| ["alpha", "Beta", "gamma,", "délta", "ε"][rng.random_range(0..5)])
        .collect();
    let items: Vec<rmpv::Value> = (0..20_000).map(|_| rng.random::<i64>().into()).collect();
    let bytes: Vec<u8> = (0..600_000).map(|_| rng.random()).collect();
    vec![
        ("wordcount", words.join(" ").into()),
        ("sort", rmpv::Value::Array(items)),
        ("checksum", rmpv::Value::Binary(bytes)),
        ("synthetic", shardline_tests::synthetic(60, 500)),
    ]
}

/// Each built-in kind, cut into several shards, completes with the unsharded answer on
/// quorum queues, with the manager and workers spread over the cluster's nodes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_builtin_kind_completes_on_quorum_queues() {
    let c = Cluster::builder()
        .amqp_url(rabbitmq_cluster::urls())
        .queue_type(QueueType::Quorum)
        .manager(|m| m.shard_size_scale = 0.02)
        .start()
        .await;
    let runs = payloads().into_iter().map(|(kind, payload)| {
        let c = &c;
        async move {
            let r = c
                .client()
                .submit(kind, payload.clone(), Options::default(), WAIT)
                .await
                .unwrap_or_else(|e| panic!("{kind}: {e}"));
            assert_eq!(completed(&r), unsharded(kind, payload), "{kind}");
            assert!(
                r.shards >= 2,
                "{kind} was cut into only {} shards",
                r.shards
            );
        }
    });
    futures::future::join_all(runs).await;
    let mut nodes = Vec::new();
    for name in ["shardline-manager", "shardline-worker"] {
        nodes.extend(rabbitmq_cluster::nodes_of(&format!("{name} {}", c.names.namespace())).await);
    }
    nodes.sort_unstable();
    nodes.dedup();
    assert!(
        nodes.len() >= 2,
        "the services all connected to one node: {nodes:?}"
    );
    c.shutdown().await;
}

/// Every queue a namespace declares on a quorum setting (requests, dead letters, each
/// kind's shared queue, each engine's queue) is a quorum queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quorum_namespace_declares_only_quorum_queues() {
    let c = Cluster::builder()
        .amqp_url(rabbitmq_cluster::urls())
        .queue_type(QueueType::Quorum)
        .workers(2)
        .start()
        .await;
    let ns = format!("{}.", c.names.namespace());
    let queues = rabbitmq_cluster::queue_types(&ns).await;
    let names: Vec<&str> = queues.iter().map(|(n, _)| n.as_str()).collect();
    for want in [
        c.names.requests_queue(),
        c.names.dead_queue(),
        c.names.kind_queue("wordcount"),
        c.names.engine_queue("w0"),
    ] {
        assert!(
            names.contains(&want.as_str()),
            "{want} missing from {names:?}"
        );
    }
    for (name, kind) in &queues {
        assert_eq!(kind, "quorum", "{name}");
    }
    c.shutdown().await;
}

/// A worker stopping on quorum queues while requests run hands its queue's shards to the
/// shared queue and deletes its queue (with the check quorum queues need, as they refuse a
/// delete's `if-empty`), and every request completes exactly once with the right answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_stopping_on_quorum_queues_hands_off_and_deletes_its_queue() {
    let mut c = Cluster::builder()
        .amqp_url(rabbitmq_cluster::urls())
        .queue_type(QueueType::Quorum)
        .start()
        .await;
    let (mut replies, ids, want) = shardline_tests::redis_cluster::running_requests(&c, 8).await;
    let queue = c.names.engine_queue("w0");
    c.stop_worker("w0").await;
    let results = replies
        .exactly_one_each(&ids, Duration::from_secs(120))
        .await;
    for r in results.values() {
        assert_eq!(completed(r), want);
    }
    let left = rabbitmq_cluster::queue_types(&queue).await;
    assert!(
        left.is_empty(),
        "the stopped worker's queue is still there: {left:?}"
    );
    c.shutdown().await;
}
