//! The test harness leaves nothing behind on the shared broker and Redis.

use std::time::Duration;

use lapin::options::QueueDeclareOptions;
use shardline::message::Options;
use shardline::store::Store;
use shardline_tests::{Cluster, patience, synthetic};

/// A cluster dropped without `shutdown`, as when a test panics, still deletes its namespace:
/// no Redis key and no queue of it remain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_cluster_removes_its_namespace() {
    let c = Cluster::builder().workers(1).start().await;
    c.client()
        .submit(
            "synthetic",
            synthetic(4, 100),
            Options::default(),
            patience(Duration::from_secs(30)),
        )
        .await
        .expect("a request leaves keys behind");
    let (connect, names) = (c.connect.clone(), c.names.clone());
    drop(c);

    let store = Store::connect(&connect.redis_url, names.clone())
        .await
        .expect("redis");
    let raw = redis::Client::open(connect.redis_url.as_str()).expect("url");
    let mut redis = raw.get_multiplexed_async_connection().await.expect("redis");
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}:*", names.namespace()))
        .query_async(&mut redis)
        .await
        .expect("keys");
    assert_eq!(keys, Vec::<String>::new(), "Redis keys left behind");
    assert!(store.known_engines().await.expect("redis").is_empty());

    let conn = shardline::amqp::connect(&connect.amqp_url, "cleanup test")
        .await
        .expect("broker");
    for queue in [
        names.requests_queue(),
        names.kind_queue("synthetic"),
        names.engine_queue("w0"),
    ] {
        let ch = conn.create_channel().await.expect("channel");
        let found = ch
            .queue_declare(
                queue.as_str().into(),
                QueueDeclareOptions::default().passive(),
                Default::default(),
            )
            .await;
        assert!(found.is_err(), "queue {queue} left behind");
    }
    let _ = conn.close(200, "done".into()).await;
}
