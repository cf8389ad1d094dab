//! A RabbitMQ cluster node stopped mid-run, the one the manager is connected to: with quorum
//! queues every request still ends in exactly one result, and the right one, and new
//! requests run while the node is down (the manager moved to another node); the node then
//! starts again and rejoins, and requests run on as before with nothing duplicated. A test
//! binary of its own, so that no other test shares the cluster while a node is down.

use shardline::amqp::QueueType;
use shardline_tests::{Cluster, rabbitmq_cluster};

/// Stop the manager's node while 12 requests run: each completes exactly once with the
/// unsharded answer, and so do 6 requests sent while the node is down; after the node
/// rejoins, the namespace's queues are all there, still quorum queues, and 6 more requests
/// complete exactly once each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_node_leaves_every_request_one_right_result_and_rejoins() {
    // The test keeps to the first node; the services get the other two, so stopping the
    // manager's node leaves it one to move to, and the quorum queues a majority.
    let urls = rabbitmq_cluster::urls();
    let (first, rest) = urls.split_once(',').expect("several nodes");
    let c = Cluster::builder()
        .amqp_url(first.to_owned())
        .services_amqp_url(rest.to_owned())
        .queue_type(QueueType::Quorum)
        .start()
        .await;
    let ns = c.names.namespace().to_owned();
    let before = rabbitmq_cluster::queue_types(&format!("{ns}.")).await;
    let (mut replies, ids, want) = shardline_tests::raw::running_requests(&c, 12).await;

    let manager = rabbitmq_cluster::nodes_of(&format!("shardline-manager {ns}")).await;
    let workers = rabbitmq_cluster::nodes_of(&format!("shardline-worker {ns}")).await;
    let victim = *manager.first().expect("the manager is connected");
    assert_ne!(
        Some(victim),
        rabbitmq_cluster::ports().first().copied(),
        "the test's own node"
    );
    let moved = workers.iter().filter(|p| **p == victim).count();
    eprintln!("stopping node {victim}: the manager's and {moved} of the workers'");
    rabbitmq_cluster::stop(victim).await;

    replies.each_completed_once(&ids, &want).await;
    let (mut replies, ids, want) = shardline_tests::raw::running_requests(&c, 6).await;
    replies.each_completed_once(&ids, &want).await;
    let now = rabbitmq_cluster::nodes_of(&format!("shardline-manager {ns}")).await;
    assert!(
        !now.is_empty() && !now.contains(&victim),
        "the manager is not connected to another node: {now:?}"
    );

    rabbitmq_cluster::heal().await;
    let after = rabbitmq_cluster::queue_types(&format!("{ns}.")).await;
    for queue in &before {
        assert!(
            after.contains(queue),
            "{queue:?} not back after the rejoin: {after:?}"
        );
    }
    let (mut replies, ids, want) = shardline_tests::raw::running_requests(&c, 6).await;
    replies.each_completed_once(&ids, &want).await;
    c.shutdown().await;
}
