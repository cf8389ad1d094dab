//! Redis killed and restarted mid-request. Redis holds the in-flight requests, so it must
//! persist them (append-only file); with that, every request still ends exactly once.
//!
//! The test runs its own `redis-server` (on a free port, with its own data directory) so that
//! other tests sharing the machine's Redis are not disturbed. It needs `redis-server` on PATH
//! (override with `TEST_REDIS_SERVER`).

use std::net::TcpListener;
use std::path::Path;
use std::time::Duration;

use shardline::message::{Format, RequestBody};
use shardline_tests::raw::{Replies, publish_request};
use shardline_tests::{Cluster, completed, eventually, unsharded};
use tokio::process::{Child, Command};
use uuid::Uuid;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

fn start_redis(port: u16, dir: &Path) -> Child {
    let bin = std::env::var("TEST_REDIS_SERVER").unwrap_or_else(|_| "redis-server".into());
    Command::new(&bin)
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
        ])
        .args(["--appendonly", "yes", "--appendfsync", "always"])
        .arg("--dir")
        .arg(dir)
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("this test needs {bin} (set TEST_REDIS_SERVER): {e}"))
}

async fn wait_up(port: u16) {
    eventually(
        "the private Redis answering",
        Duration::from_secs(15),
        || async {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .ok()
                .map(|_| ())
        },
    )
    .await;
}

/// SIGKILL Redis while requests are running and start it again on the same data: every
/// request completes exactly once with the right answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarted_mid_request() {
    let port = free_port();
    let dir = std::env::temp_dir().join(format!("shardline-redis-{}", Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("data dir");
    let mut redis = start_redis(port, &dir);
    wait_up(port).await;
    let url = format!("redis://127.0.0.1:{port}");
    let c = Cluster::builder().redis_url(url).start().await;
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
    let ids: Vec<Uuid> = (0..8).map(|_| Uuid::new_v4()).collect();
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
    redis.start_kill().expect("kill redis");
    let _ = redis.wait().await;
    let _redis = start_redis(port, &dir);
    wait_up(port).await;

    let want = unsharded("synthetic", payload);
    let mut seen = std::collections::HashSet::new();
    while seen.len() < ids.len() {
        let r = replies.next(Duration::from_secs(90)).await;
        assert!(
            seen.insert(r.request_id),
            "two results for {}",
            r.request_id
        );
        assert_eq!(completed(&r), want);
    }
    assert!(!replies.another_within(Duration::from_millis(500)).await);
    c.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}
