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
