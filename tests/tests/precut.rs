//! Requests cut by their client (`"shards": [...]` instead of `"payload"`): each piece becomes
//! one shard, the merge is the same, and bad pieces are refused like bad payloads.

use std::time::Duration;

use shardline::message::{Format, Options, PreCutBody, Status};
use shardline_tests::raw::{Replies, publish_request};
use shardline_tests::{Cluster, completed, unsharded};
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(30);

/// Publish `body` (JSON when `json`) and return the final result on the reply queue.
async fn answer(c: &Cluster, body: &[u8], json: bool) -> shardline::message::FinalResult {
    let mut replies = Replies::new(c).await;
    let id = Uuid::new_v4();
    let content_type = json.then_some("application/json");
    publish_request(c, body, content_type, &id.to_string(), Some(&replies.queue)).await;
    let r = replies.next(WAIT).await;
    assert_eq!(r.request_id, id);
    r
}

/// A word count sent in four pieces runs as four shards, and counts what the whole text counts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pieces_are_the_shards_and_merge_like_a_payload() {
    let c = Cluster::builder().workers(2).start().await;
    let pieces = [
        "the quick brown fox",
        "jumps over the lazy dog",
        "the dog sleeps",
        "and the fox runs",
    ];
    let r = c
        .client()
        .submit_shards(
            "wordcount",
            pieces.iter().map(|p| (*p).into()).collect(),
            Options::default(),
            WAIT,
        )
        .await
        .expect("a result");
    assert_eq!(r.shards, 4);
    assert_eq!(
        completed(&r),
        unsharded("wordcount", pieces.join(" ").into())
    );
    let routes = c.store.routes(r.request_id).await.expect("redis");
    assert_eq!(routes.len(), 4, "every piece routed as a shard: {routes:?}");
    c.shutdown().await;
}

/// Any AMQP client can send pieces as JSON: sorted lists merged in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_pieces_from_any_client() {
    let c = Cluster::builder().workers(1).start().await;
    let r = answer(
        &c,
        br#"{"kind": "sort", "shards": [[9, 3, 5], [4, 1], [8, 2, 7, 6]]}"#,
        true,
    )
    .await;
    assert_eq!(r.status, Status::Completed, "{:?}", r.error);
    assert_eq!(r.shards, 3);
    let sorted: Vec<rmpv::Value> = (1..=9).map(rmpv::Value::from).collect();
    assert_eq!(r.output, Some(rmpv::Value::Array(sorted)));
    c.shutdown().await;
}

/// A piece that is not the kind's input is refused as `invalid_payload`, naming the piece; an
/// empty piece and an empty list of pieces are refused too; nothing runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_pieces_are_refused_with_their_index() {
    let c = Cluster::builder().workers(1).start().await;
    let cases: [(&[u8], &str, &str); 4] = [
        (
            br#"{"kind": "sort", "shards": [[1, 2], ["x"]]}"#,
            "invalid_payload",
            "shard 1",
        ),
        (
            br#"{"kind": "sort", "shards": [[1], []]}"#,
            "invalid_payload",
            "shard 1 is empty",
        ),
        (br#"{"kind": "sort", "shards": []}"#, "empty_payload", ""),
        (
            br#"{"kind": "sort", "payload": [1], "shards": [[1]]}"#,
            "malformed",
            "not both",
        ),
    ];
    for (body, code, says) in cases {
        let r = answer(&c, body, true).await;
        assert_eq!(
            r.status,
            Status::Rejected,
            "{}",
            String::from_utf8_lossy(body)
        );
        let err = r.error.expect("an error");
        assert_eq!(err.code, code, "{}", err.message);
        assert!(err.message.contains(says), "{}", err.message);
        assert!(
            c.store.meta(r.request_id).await.expect("redis").is_none(),
            "a refused request leaves no record"
        );
    }
    c.shutdown().await;
}

/// More pieces than the manager runs for one request (`--max-shards`) are refused as
/// `oversized`, in MessagePack as in JSON.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_pieces_than_the_manager_allows_are_refused() {
    let c = Cluster::builder()
        .workers(1)
        .manager(|m| m.max_shards = 4)
        .start()
        .await;
    let body = Format::MsgPack
        .encode(&PreCutBody {
            kind: "wordcount".into(),
            shards: (0..5).map(|i| format!("piece {i}").into()).collect(),
            options: None,
            locality: None,
            localities: None,
        })
        .expect("encode");
    let r = answer(&c, &body, false).await;
    assert_eq!(r.status, Status::Rejected);
    let err = r.error.expect("an error");
    assert_eq!(err.code, "oversized", "{}", err.message);
    assert!(err.message.contains("5 shards"), "{}", err.message);
    c.shutdown().await;
}
