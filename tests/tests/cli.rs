//! The `shardline` command line: results, progress lookups and exit codes.

use std::time::Duration;

use shardline_tests::Cluster;

fn cli(c: &Cluster) -> tokio::process::Command {
    shardline_tests::process::cli(env!("CARGO_BIN_EXE_shardline-under-test"), c)
}

async fn output(cmd: &mut tokio::process::Command) -> std::process::Output {
    tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .expect("CLI finishes")
        .expect("CLI runs")
}

/// `submit` prints the completed result as JSON and exits 0; `status` then shows it published.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_and_status() {
    let c = Cluster::builder().start().await;
    let out =
        output(cli(&c).args(["submit", "--kind", "sort", "--data", "5 3, 9 -1", "--quiet"])).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    assert_eq!(json["status"], "completed");
    assert_eq!(json["output"], serde_json::json!([-1, 3, 5, 9]));
    let id = json["request_id"].as_str().expect("id").to_owned();

    let out = output(cli(&c).args(["status", &id])).await;
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("state=published") && text.contains("status=completed"),
        "{text}"
    );
    c.shutdown().await;
}

/// `submit --shard-file a --shard-file b` sends the files as the request's shards, in order:
/// as many shards as files, and the result of the whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_sends_files_as_shards() {
    let c = Cluster::builder().start().await;
    let dir = std::env::temp_dir().join(format!("shardline-pieces-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    let files: Vec<String> = ["5 3 9", "-1 7", "4"]
        .iter()
        .enumerate()
        .map(|(i, text)| {
            let path = dir.join(format!("part{i}.txt"));
            std::fs::write(&path, text).expect("a piece written");
            path.display().to_string()
        })
        .collect();
    let mut cmd = cli(&c);
    cmd.args(["submit", "--kind", "sort", "--quiet"]);
    for f in &files {
        cmd.args(["--shard-file", f]);
    }
    let out = output(&mut cmd).await;
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    assert_eq!(json["status"], "completed");
    assert_eq!(json["shards"], 3);
    assert_eq!(json["output"], serde_json::json!([-1, 3, 4, 5, 7, 9]));
    c.shutdown().await;
}

/// `locality add`, `list` and `remove` change and show the keys an engine holds; a bad key
/// is refused before anything is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locality_keys_are_managed_at_run_time() {
    let c = Cluster::builder().workers(1).start().await;
    let out = output(cli(&c).args(["locality", "add", "--engine", "w0", "p1", "p2"])).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("2 key(s) added"));
    let out = output(cli(&c).args(["locality", "list"])).await;
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "w0  p1,p2");
    let out = output(cli(&c).args(["locality", "remove", "--engine", "w0", "p1", "p9"])).await;
    assert!(String::from_utf8_lossy(&out.stdout).contains("1 key(s) removed, 1 not held"));
    let out = output(cli(&c).args(["locality", "add", "--engine", "w0", "a b"])).await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("whitespace"));
    assert_eq!(
        c.client().locality("w0").await.expect("redis"),
        ["p2".to_owned()]
    );
    c.shutdown().await;
}

/// `submit --shard-file … --shard-locality …` sends each file's key: both shards run on the
/// engine that holds it (without keys, two free engines would take one each).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_sends_shard_localities() {
    let c = Cluster::builder().workers(2).start().await;
    let out = output(cli(&c).args(["locality", "add", "--engine", "w1", "disk1"])).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    c.wait_keys("w1", 1).await;
    let dir = std::env::temp_dir().join(format!("shardline-located-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    let mut cmd = cli(&c);
    cmd.args(["submit", "--kind", "sort", "--quiet"]);
    for (i, text) in ["5 3", "9 -1"].iter().enumerate() {
        let path = dir.join(format!("part{i}.txt"));
        std::fs::write(&path, text).expect("a piece written");
        cmd.arg("--shard-file")
            .arg(&path)
            .args(["--shard-locality", "disk1"]);
    }
    let out = output(&mut cmd).await;
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    assert_eq!(json["output"], serde_json::json!([-1, 3, 5, 9]));
    let id: uuid::Uuid = json["request_id"]
        .as_str()
        .expect("id")
        .parse()
        .expect("uuid");
    let routes = c.store.routes(id).await.expect("redis");
    assert!(
        routes.values().all(|e| e == "w1") && routes.len() == 2,
        "{routes:?}"
    );
    let out = output(cli(&c).args([
        "submit",
        "--kind",
        "sort",
        "--data",
        "1",
        "--shard-locality",
        "x",
    ]))
    .await;
    assert!(!out.status.success(), "--shard-locality needs --shard-file");
    c.shutdown().await;
}

/// An error result exits 1 with the error in the JSON.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_result_exits_one() {
    let c = Cluster::builder().workers(1).start().await;
    let out = output(cli(&c).args(["submit", "--kind", "nope", "--data", "{}", "--quiet"])).await;
    assert_eq!(out.status.code(), Some(1));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    assert_eq!(json["error"]["code"], "unknown_kind");
    c.shutdown().await;
}

/// An unreachable broker exits 3 with a message naming the broker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_broker_exits_three() {
    let c = Cluster::builder()
        .workers(0)
        .without_manager()
        .start()
        .await;
    let out = output(
        cli(&c)
            .env("SHARDLINE_AMQP_URL", "amqp://guest:guest@127.0.0.1:1/%2f")
            .args(["submit", "--kind", "sort", "--data", "1", "--quiet"]),
    )
    .await;
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("broker"));
    c.shutdown().await;
}

/// No result in time exits 2 (no manager is running).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_exits_two() {
    let c = Cluster::builder()
        .workers(0)
        .without_manager()
        .start()
        .await;
    let out = output(cli(&c).args([
        "submit",
        "--kind",
        "sort",
        "--data",
        "1",
        "--quiet",
        "--timeout-secs",
        "1",
    ]))
    .await;
    assert_eq!(out.status.code(), Some(2));
    c.shutdown().await;
}

/// A kind the CLI does not know, with plain text, reaches the manager: the answer says the
/// kind is unknown and lists the known ones, on stdout (JSON) and stderr, and exits 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_kind_with_text_is_answered_by_the_manager() {
    let c = Cluster::builder().workers(1).start().await;
    let out =
        output(cli(&c).args(["submit", "--kind", "frobnicate", "--data", "x", "--quiet"])).await;
    assert_eq!(out.status.code(), Some(1));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    assert_eq!(json["error"]["code"], "unknown_kind");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("unknown_kind") && stderr.contains("wordcount"),
        "{stderr}"
    );
    c.shutdown().await;
}

/// `status` of a request rejected a moment ago says it was rejected and why, instead of
/// calling it unknown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_tells_of_a_rejection() {
    let c = Cluster::builder().workers(1).start().await;
    let out = output(cli(&c).args(["submit", "--kind", "nope", "--data", "{}", "--quiet"])).await;
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    let id = json["request_id"].as_str().expect("id").to_owned();

    let out = output(cli(&c).args(["status", &id])).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("state=rejected") && text.contains("unknown_kind"),
        "{text}"
    );
    let out = output(cli(&c).args(["status", &id, "--json"])).await;
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    assert_eq!(json["state"], "rejected");
    assert_eq!(json["error"]["code"], "unknown_kind");
    assert!(json["rejected"].as_u64().is_some(), "{json}");
    c.shutdown().await;
}

/// `status` prints times a person reads, and the shards each engine took; `--json` keeps the
/// raw epoch milliseconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_reads_as_text_and_as_json() {
    let c = Cluster::builder().workers(1).start().await;
    let out =
        output(cli(&c).args(["submit", "--kind", "sort", "--data", "3 2 1", "--quiet"])).await;
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    let id = json["request_id"].as_str().expect("id").to_owned();

    let out = output(cli(&c).args(["status", &id])).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("deadline 20") && text.contains("(in "),
        "{text}"
    );
    assert!(text.contains("shards per engine: "), "{text}");
    let out = output(cli(&c).args(["status", &id, "--json"])).await;
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    assert!(json["deadline"].as_u64().is_some(), "{json}");
    assert_eq!(json["status"], "completed");
    c.shutdown().await;
}

/// A malformed id is refused with a message saying a UUID is expected (exit 2, clap's usage
/// error), before anything is contacted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_id_asks_for_a_uuid() {
    let c = Cluster::builder()
        .workers(0)
        .without_manager()
        .start()
        .await;
    for command in ["status", "cancel"] {
        let out = output(cli(&c).args([command, "12345"])).await;
        assert_eq!(out.status.code(), Some(2), "{command}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("expected a UUID"), "{command}: {stderr}");
    }
    c.shutdown().await;
}

/// `list` with nothing in flight says so rather than printing nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_list_says_so() {
    let c = Cluster::builder()
        .workers(0)
        .without_manager()
        .start()
        .await;
    let out = output(cli(&c).args(["list"])).await;
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "no requests in flight"
    );
    c.shutdown().await;
}

/// `teardown` needs `--yes`, is refused while a worker of the namespace runs, and otherwise
/// removes the namespace's queues and keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn teardown_asks_and_refuses_while_workers_run() {
    let mut c = Cluster::builder()
        .workers(1)
        .without_manager()
        .start()
        .await;
    let out = output(cli(&c).args(["teardown"])).await;
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--yes"));

    let out = output(cli(&c).args(["teardown", "--yes"])).await;
    assert_eq!(out.status.code(), Some(64));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("still running"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let workers = c.store.known_engines().await.expect("redis");
    for id in &workers {
        c.stop_worker(id).await;
    }
    let out = output(cli(&c).args(["teardown", "--yes"])).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let queue = c.names.requests_queue();
    assert_eq!(
        shardline_tests::ready(&c, &queue).await,
        None,
        "the requests queue is gone"
    );
    c.shutdown().await;
}
