//! The broker closes every connection of a running deployment mid-request: lapin's recovery
//! (and the supervisor behind it) brings the manager and workers back, and every request still
//! ends with exactly one correct result.

use std::time::Duration;

use shardline_tests::raw::{Replies, publish_request};
use shardline_tests::{Cluster, completed, request_body, synthetic, unsharded, wait_progress};
use uuid::Uuid;

/// Close, from the broker side, every connection whose client name mentions `namespace`.
/// Returns how many were closed. Uses `rabbitmqctl` (override with `TEST_RABBITMQCTL`).
fn close_connections(namespace: &str) -> usize {
    let ctl = std::env::var("TEST_RABBITMQCTL").unwrap_or_else(|_| "rabbitmqctl".into());
    let out = std::process::Command::new(&ctl)
        .args([
            "list_connections",
            "--no-table-headers",
            "pid",
            "client_properties",
        ])
        .output()
        .unwrap_or_else(|e| panic!("this test needs {ctl} (set TEST_RABBITMQCTL): {e}"));
    assert!(out.status.success(), "{ctl} list_connections failed");
    let listing = String::from_utf8_lossy(&out.stdout);
    let pids: Vec<&str> = listing
        .lines()
        .filter(|l| {
            l.contains(namespace)
                && !l.contains("shardline-tests")
                && !l.contains("shardline-client")
        })
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    for pid in &pids {
        let ok = std::process::Command::new(&ctl)
            .args(["close_connection", pid, "fault injection"])
            .status()
            .expect("close_connection")
            .success();
        assert!(ok, "closing {pid}");
    }
    pids.len()
}

/// Manager and worker connections dropped by the broker mid-run: every request completes,
/// exactly once, with the right answer, one sent after the drop among them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_closed_by_the_broker_mid_request() {
    let c = Cluster::builder().start().await;
    let mut replies = Replies::new(&c).await;
    let payload = synthetic(200, 5_000);
    let body = request_body("synthetic", payload.clone(), &[]);
    let mut ids: Vec<Uuid> = (0..10).map(|_| Uuid::new_v4()).collect();
    for id in &ids {
        publish_request(&c, &body, None, &id.to_string(), Some(&replies.queue)).await;
    }
    wait_progress(&c, &ids, 10).await;
    let closed = close_connections(c.names.namespace());
    assert_eq!(
        closed, 4,
        "the manager's and the three workers' connections"
    );
    // A request sent after the close reaches only a manager that came back.
    let late = Uuid::new_v4();
    publish_request(&c, &body, None, &late.to_string(), Some(&replies.queue)).await;
    ids.push(late);

    let want = unsharded("synthetic", payload);
    for r in replies
        .exactly_one_each(&ids, Duration::from_secs(60))
        .await
        .values()
    {
        assert_eq!(completed(r), want);
    }
    c.shutdown().await;
}
