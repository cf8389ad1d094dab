//! The broker closes every connection of a running deployment mid-request: lapin's recovery
//! (and the supervisor behind it) brings the manager and workers back, and every request still
//! ends with exactly one correct result.

use std::time::Duration;

use shardline::message::{Format, RequestBody};
use shardline_tests::raw::{Replies, publish_request};
use shardline_tests::{Cluster, completed, eventually, unsharded};
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
/// exactly once, with the right answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_closed_by_the_broker_mid_request() {
    let c = Cluster::builder().start().await;
    let mut replies = Replies::new(&c).await;
    let work = shardline::kind::synthetic::Work {
        units: 200,
        unit_cost_us: 5_000,
        spin: false,
    };
    let payload = shardline::message::to_named_value(&work).expect("value");
    let body = Format::MsgPack
        .encode(&RequestBody {
            kind: "synthetic".into(),
            payload: payload.clone(),
            options: None,
        })
        .expect("encode");
    let ids: Vec<Uuid> = (0..10).map(|_| Uuid::new_v4()).collect();
    for id in &ids {
        publish_request(&c, &body, None, &id.to_string(), Some(&replies.queue)).await;
    }
    eventually("work under way", Duration::from_secs(20), || async {
        let mut done = 0;
        for id in &ids {
            done += c.store.meta(*id).await.ok()?.map_or(0, |m| m.done);
        }
        (done >= 10).then_some(())
    })
    .await;
    let closed = close_connections(c.names.namespace());
    assert_eq!(
        closed, 4,
        "the manager's and the three workers' connections"
    );

    let want = unsharded("synthetic", payload);
    let mut seen = std::collections::HashSet::new();
    while seen.len() < ids.len() {
        let r = replies.next(Duration::from_secs(60)).await;
        assert!(
            seen.insert(r.request_id),
            "two results for {}",
            r.request_id
        );
        assert_eq!(completed(&r), want);
    }
    assert!(!replies.another_within(Duration::from_millis(500)).await);
    c.shutdown().await;
}
