//! Many requests at once all complete with correct results.

use std::time::Duration;

use rand::{Rng, SeedableRng, rngs::StdRng};
use shardline::message::Options;
use shardline_tests::{Cluster, completed, unsharded};

/// 200 concurrent requests of every kind all complete, each with its own correct answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_requests() {
    let c = Cluster::builder()
        .manager(|m| m.shard_size_scale = 0.001)
        .worker(|w| w.concurrency = Some(4))
        .start()
        .await;
    let mut rng = StdRng::seed_from_u64(200);
    let mut pending = Vec::new();
    for i in 0..200 {
        let (kind, payload): (&str, rmpv::Value) = match i % 4 {
            0 => (
                "sort",
                rmpv::Value::Array(
                    (0..500)
                        .map(|_| rng.random_range(-1000i64..1000).into())
                        .collect(),
                ),
            ),
            1 => (
                "wordcount",
                (0..300)
                    .map(|_| format!("w{} ", rng.random_range(0..40)))
                    .collect::<String>()
                    .into(),
            ),
            2 => (
                "checksum",
                rmpv::Value::Binary((0..20_000).map(|_| rng.random()).collect()),
            ),
            _ => {
                let w = shardline::kind::synthetic::Work {
                    units: 20,
                    unit_cost_us: 100,
                    spin: false,
                    noise_seed: None,
                    partition: None,
                };
                (
                    "synthetic",
                    shardline::message::to_named_value(&w).expect("value"),
                )
            }
        };
        let sent = c
            .client()
            .send(kind, payload.clone(), Options::default())
            .await
            .expect("send");
        pending.push((kind, payload, sent));
    }
    let waits = pending.into_iter().map(|(kind, payload, (id, rx))| {
        let client = c.client();
        async move {
            let r = client
                .wait(id, rx, Duration::from_secs(120))
                .await
                .expect("result");
            assert_eq!(r.request_id, id);
            assert_eq!(completed(&r), unsharded(kind, payload), "{kind} {id}");
        }
    });
    futures::future::join_all(waits).await;
    c.shutdown().await;
}
