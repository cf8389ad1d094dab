//! The whole pipeline on a real 3-node RabbitMQ cluster (from `scripts/rabbitmq-cluster.sh`)
//! with quorum queues: every built-in kind, end to end, equals the unsharded answer; the
//! services spread over the nodes; every queue of the namespace is a quorum queue; engine
//! queues are handed off, by a stopping worker and by the sweeper, as quorum queues need.

use std::time::Duration;

use shardline::amqp::{self, QueueType};
use shardline_tests::raw::{Replies, publish_request};
use shardline_tests::{
    Cluster, completed, eventually, rabbitmq_cluster, ready, request_body, unsharded,
};
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(60);

/// Each built-in kind, cut into several shards, completes with the unsharded answer on
/// quorum queues.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_builtin_kind_completes_on_quorum_queues() {
    let c = Cluster::builder()
        .amqp_url(rabbitmq_cluster::urls())
        .queue_type(QueueType::Quorum)
        .manager(|m| m.shard_size_scale = 0.02)
        .start()
        .await;
    shardline_tests::each_builtin_kind_sharded(&c, 21, WAIT).await;
    c.shutdown().await;
}

/// Given the cluster's node list, the manager and the workers connect to different nodes (each
/// process starts at a random node and takes them in turn), not all to the first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_services_spread_over_the_nodes() {
    let c = Cluster::builder()
        .amqp_url(rabbitmq_cluster::urls())
        .queue_type(QueueType::Quorum)
        .start()
        .await;
    let mut nodes = Vec::new();
    for name in ["shardline-manager", "shardline-worker"] {
        nodes.extend(rabbitmq_cluster::nodes_of(&format!("{name} {}", c.names.namespace())).await);
    }
    assert_eq!(
        nodes.len(),
        4,
        "a manager and 3 workers connected: {nodes:?}"
    );
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
        .engine_queues()
        .amqp_url(rabbitmq_cluster::urls())
        .queue_type(QueueType::Quorum)
        .start()
        .await;
    let (mut replies, ids, want) = shardline_tests::raw::running_requests(&c, 8).await;
    let queue = c.names.engine_queue("w0");
    c.stop_worker("w0").await;
    replies.each_completed_once(&ids, &want).await;
    let left = rabbitmq_cluster::queue_types(&queue).await;
    assert!(
        left.is_empty(),
        "the stopped worker's queue is still there: {left:?}"
    );
    c.shutdown().await;
}

/// A dead engine's quorum queue is drained by the sweeper and left unbound and empty for the
/// broker to expire, not deleted (an engine back under the same id between a check and a
/// delete would lose what it holds): its shards finish elsewhere, the queue is still there,
/// empty, and a shard sent to the engine's route comes back as unroutable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_engines_quorum_queue_is_drained_and_left_to_expire() {
    const TTL_MS: u64 = 1_500;
    let mut c = Cluster::builder()
        .engine_queues()
        .amqp_url(rabbitmq_cluster::urls())
        .queue_type(QueueType::Quorum)
        .workers(0)
        .without_manager()
        .start()
        .await;
    let beat = shardline_tests::ghost_engine(&c, "ghost", Duration::from_millis(TTL_MS)).await;
    let ch = c.channel().await;
    c.start_manager(|m| {
        m.engine_ttl_ms = TTL_MS;
        m.shard_size_scale = 1e-9;
    });
    let mut replies = Replies::new(&c).await;
    let payload = rmpv::Value::Array((0..100i64).rev().map(rmpv::Value::from).collect());
    let id = Uuid::new_v4();
    let body = request_body("sort", payload.clone(), &[("max_shards", 10)]);
    publish_request(&c, &body, None, &id.to_string(), Some(&replies.queue)).await;
    let ghost = c.names.engine_queue("ghost");
    eventually(
        "10 shards queued on the ghost engine",
        Duration::from_secs(15),
        || async { (ready(&c, &ghost).await == Some(10)).then_some(()) },
    )
    .await;
    beat.abort();
    c.add_worker("w0").await;
    let results = replies
        .exactly_one_each(&[id], Duration::from_secs(30))
        .await;
    assert_eq!(completed(&results[&id]), unsharded("sort", payload));
    assert_eq!(
        ready(&c, &ghost).await,
        Some(0),
        "the queue is there, and empty"
    );
    let probe = amqp::publish_to_engine(
        &ch,
        &c.names,
        "ghost",
        b"probe",
        lapin::BasicProperties::default().with_message_id("probe".into()),
    )
    .await
    .expect("publish");
    assert!(
        probe.is_returned("probe"),
        "the queue is unbound: {probe:?}"
    );
    c.shutdown().await;
}
