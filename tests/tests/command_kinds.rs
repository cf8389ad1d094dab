//! Command kinds: a stock worker with a kinds file serves kinds whose work is done by commands
//! (Python, the shell), a stock manager cuts them, and sharded results equal unsharded ones;
//! failing, hanging and misdeclared commands are handled.

use std::path::{Path, PathBuf};
use std::time::Duration;

use shardline::message::{FinalResult, Status};
use shardline_tests::process::{spawn_manager, spawn_worker_with};
use shardline_tests::raw::{Replies, publish_request};
use shardline_tests::{Cluster, completed, eventually, request_body};
use tokio::process::Child;
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(60);

/// The example kinds file in the repository.
fn example_kinds() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/kinds/kinds.toml")
}

/// A stock worker (engine `id`) serving the kinds in `file`, with `env` besides; waits until
/// it is live.
async fn worker(c: &Cluster, id: &str, file: &Path, env: &[(&str, &str)]) -> Child {
    let file = file.display().to_string();
    let mut all = vec![("SHARDLINE_KINDS_FILE", file.as_str())];
    all.extend_from_slice(env);
    let child = spawn_worker_with(env!("CARGO_BIN_EXE_worker-under-test"), c, id, 2, &all);
    eventually("the worker live", WAIT, || async {
        let live = c.store.live_engines(Duration::from_secs(5)).await.ok()?;
        live.iter().any(|e| e == id).then_some(())
    })
    .await;
    child
}

/// A stock manager that cuts every request into `shards` shards (unless the request caps it).
fn manager(c: &Cluster, shards: u32) -> Child {
    spawn_manager(
        env!("CARGO_BIN_EXE_manager-under-test"),
        c,
        &[("SHARDLINE_SHARD_COUNT", &shards.to_string())],
    )
}

/// Run `payload` of `kind` cut into as many shards as the manager cuts (`max_shards` caps it)
/// and return the result.
async fn run(c: &Cluster, kind: &str, payload: &str, max_shards: u64) -> FinalResult {
    let mut replies = Replies::new(c).await;
    let id = Uuid::new_v4();
    let body = request_body(kind, payload.into(), &[("max_shards", max_shards)]);
    publish_request(c, &body, None, &id.to_string(), Some(&replies.queue)).await;
    let r = replies.next(WAIT).await;
    assert_eq!(r.request_id, id);
    r
}

/// A CSV of `rows` rows with a header: columns i, 2i, and a word.
fn csv(rows: i64) -> String {
    let mut s = String::from("id,double,name\n");
    for i in 1..=rows {
        s.push_str(&format!("{i},{},row{i}\n", 2 * i));
    }
    s
}

/// The Python kinds (a process per shard, and long-running) and the shell kinds of the example
/// file give, cut into 6 shards, exactly what they give whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn example_kinds_sharded_equal_unsharded() {
    let c = Cluster::builder()
        .workers(0)
        .without_manager()
        .start()
        .await;
    let mut w = worker(&c, "cmd", &example_kinds(), &[]).await;
    let mut m = manager(&c, 6);
    let numbers: String = (0..300)
        .map(|i| format!("{}\n", (i * 7919) % 1000))
        .collect();
    let log: String = (0..200)
        .map(|i| match i % 7 {
            0 => format!("{i} ERROR disk\n"),
            3 => format!("{i} FATAL oom\n"),
            _ => format!("{i} INFO ok\n"),
        })
        .collect();
    for (kind, payload) in [
        ("csv-sum", csv(250)),
        ("csv-sum-served", csv(250)),
        ("numsort", numbers),
        ("grep-error", log),
    ] {
        let sharded = run(&c, kind, &payload, 6).await;
        let whole = run(&c, kind, &payload, 1).await;
        assert_eq!(
            sharded.status,
            Status::Completed,
            "{kind}: {:?}",
            sharded.error
        );
        assert_eq!(whole.status, Status::Completed, "{kind}: {:?}", whole.error);
        assert_eq!((sharded.shards, whole.shards), (6, 1), "{kind}");
        assert_eq!(completed(&sharded), completed(&whole), "{kind}");
    }
    let want = serde_json::json!({"rows": 251, "sums": {"0": 31_375, "1": 62_750}});
    for kind in ["csv-sum", "csv-sum-served"] {
        let sums = completed(&run(&c, kind, &csv(250), 6).await);
        assert_eq!(serde_json::to_value(&sums).expect("json"), want, "{kind}");
    }
    let _ = m.kill().await;
    let _ = w.kill().await;
    c.shutdown().await;
}

/// Write `text` as a kinds file in a fresh directory.
fn kinds_file(text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("kinds.toml");
    std::fs::write(&path, text).expect("write");
    (dir, path)
}

/// A command that exits non-zero fails its request, with the tail of its stderr in the error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_command_fails_the_request_with_its_stderr() {
    let (_dir, file) = kinds_file(
        "[kinds.broken]\nsplitter = \"lines\"\nmax_attempts = 1\nshell = true\n\
         process = [\"echo 'cannot parse row 3' >&2; exit 2\"]\n",
    );
    let c = Cluster::builder()
        .workers(0)
        .without_manager()
        .start()
        .await;
    let mut w = worker(&c, "cmd", &file, &[]).await;
    let mut m = manager(&c, 2);
    let r = run(&c, "broken", "a\nb\n", 2).await;
    assert_eq!(r.status, Status::Failed);
    let message = r.error.map(|e| e.message).unwrap_or_default();
    assert!(
        message.contains("cannot parse row 3") && message.contains("exit status: 2"),
        "{message}"
    );
    let _ = m.kill().await;
    let _ = w.kill().await;
    c.shutdown().await;
}

/// A command that hangs (and ignores SIGTERM) is killed at the worker's shard time limit, and
/// its request fails soon after instead of waiting for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_command_is_stopped_at_the_time_limit() {
    let (_dir, file) = kinds_file(
        "[kinds.hangs]\nsplitter = \"none\"\nmax_attempts = 1\nshell = true\nstop_grace_ms = 300\n\
         process = [\"trap '' TERM; sleep 120\"]\n",
    );
    let c = Cluster::builder()
        .workers(0)
        .without_manager()
        .start()
        .await;
    let mut w = worker(
        &c,
        "cmd",
        &file,
        &[("SHARDLINE_SHARD_TIME_LIMIT_MS", "1000")],
    )
    .await;
    let mut m = manager(&c, 1);
    let started = std::time::Instant::now();
    let r = run(&c, "hangs", "x", 1).await;
    assert_eq!(r.status, Status::Failed, "{r:?}");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    let _ = m.kill().await;
    let _ = w.kill().await;
    c.shutdown().await;
}

/// A worker given a kinds file that does not parse, or whose command does not exist, refuses
/// to start and says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_kinds_file_stops_the_worker_with_a_clear_error() {
    let c = Cluster::builder()
        .workers(0)
        .without_manager()
        .start()
        .await;
    for (text, says) in [
        ("[kinds.x\n", "does not parse"),
        (
            "[kinds.x]\nsplitter = \"lines\"\nprocess = [\"no-such-program\"]\n",
            "not found",
        ),
        (
            "[kinds.x]\nsplitter = \"sentences\"\nprocess = [\"cat\"]\n",
            "unknown variant",
        ),
        (
            "[kinds.sort]\nsplitter = \"list\"\nprocess = [\"cat\"]\n",
            "registered already",
        ),
    ] {
        let (_dir, file) = kinds_file(text);
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_worker-under-test"))
            .env("SHARDLINE_AMQP_URL", &c.connect.amqp_url)
            .env("SHARDLINE_REDIS_URL", &c.connect.redis_url)
            .env("SHARDLINE_NAMESPACE", &c.connect.namespace)
            .env("SHARDLINE_KINDS_FILE", &file)
            .env("SHARDLINE_METRICS_ADDR", "off")
            .output();
        let out = tokio::time::timeout(WAIT, out)
            .await
            .expect("the worker exits")
            .expect("runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{text}");
        assert!(stderr.contains(says), "{text}: {stderr}");
    }
    c.shutdown().await;
}
