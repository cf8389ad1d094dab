//! Bad input of each sort is answered with a typed error result and dead-lettered with the
//! reason, and never disturbs other requests.

use std::time::Duration;

use lapin::types::AMQPValue;
use shardline::amqp::REASON_HEADER;
use shardline::message::{FinalResult, Format, Options, RequestBody, Status};
use shardline_tests::raw::{Replies, publish_request};
use shardline_tests::{Cluster, completed, eventually, unsharded};
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(30);

fn msgpack(kind: &str, payload: rmpv::Value, options: Option<rmpv::Value>) -> Vec<u8> {
    Format::MsgPack
        .encode(&RequestBody {
            kind: kind.into(),
            payload,
            options,
            locality: None,
        })
        .expect("encode")
}

/// Publish `body`, expect a rejection with `code` on the reply queue, and the original in the
/// dead-letter queue with the same reason. Returns the reply as it came.
async fn expect_rejected(
    body: Vec<u8>,
    content_type: Option<&str>,
    code: &str,
) -> lapin::message::Delivery {
    let c = Cluster::builder()
        .workers(1)
        .manager(|m| m.max_payload_bytes = 64 * 1024)
        .start()
        .await;
    let mut replies = Replies::new(&c).await;
    let id = Uuid::new_v4();
    publish_request(
        &c,
        &body,
        content_type,
        &id.to_string(),
        Some(&replies.queue),
    )
    .await;
    let reply = replies.next_raw(WAIT).await;
    let r: FinalResult =
        Format::from_content_type(reply.properties.content_type().as_ref().map(|s| s.as_str()))
            .decode(&reply.data)
            .expect("a decodable result");
    assert_eq!(r.request_id, id);
    assert_eq!(r.status, Status::Rejected);
    let err = r.error.expect("rejections carry an error");
    assert_eq!(err.code, code, "{}", err.message);
    assert!(!err.message.is_empty());

    let dead = eventually("the request in the dead-letter queue", WAIT, || async {
        c.drain(&c.names.dead_queue()).await.into_iter().next()
    })
    .await;
    assert_eq!(dead.data, body, "the original body is kept");
    let headers = dead.properties.headers().clone().expect("headers");
    let reason = headers.inner().get(REASON_HEADER).expect("reason header");
    assert_eq!(reason, &AMQPValue::LongString(code.into()));
    c.shutdown().await;
    reply
}

/// Bytes that are not MessagePack are `malformed`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_msgpack() {
    expect_rejected(b"\xc1\xc1 not msgpack".to_vec(), None, "malformed").await;
}

/// Broken JSON is `malformed`, and the answer comes back as JSON.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_json() {
    let reply = expect_rejected(
        br#"{"kind": "sort", "payload": [1,"#.to_vec(),
        Some("application/json"),
        "malformed",
    )
    .await;
    assert_eq!(
        reply.properties.content_type().as_ref().map(|s| s.as_str()),
        Some("application/json")
    );
    let r: FinalResult = serde_json::from_slice(&reply.data).expect("a JSON result");
    assert_eq!(r.status, Status::Rejected);
}

/// A request without its `kind` field is `malformed`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_field() {
    expect_rejected(
        br#"{"payload": [1, 2]}"#.to_vec(),
        Some("application/json"),
        "malformed",
    )
    .await;
}

/// A kind nobody registered is `unknown_kind`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_kind() {
    expect_rejected(msgpack("teleport", 1.into(), None), None, "unknown_kind").await;
}

/// An empty list to sort is `empty_payload`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_payload() {
    expect_rejected(
        msgpack("sort", rmpv::Value::Array(vec![]), None),
        None,
        "empty_payload",
    )
    .await;
}

/// A body over the manager's size limit is `oversized`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_payload() {
    let big = "word ".repeat(20_000);
    expect_rejected(msgpack("wordcount", big.into(), None), None, "oversized").await;
}

/// `max_shards: 0` is `bad_options`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_options() {
    let opts = rmpv::Value::Map(vec![("max_shards".into(), 0.into())]);
    expect_rejected(
        msgpack("sort", rmpv::Value::Array(vec![1.into()]), Some(opts)),
        None,
        "bad_options",
    )
    .await;
}

/// A payload of the wrong type for the kind is `invalid_payload`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_payload() {
    expect_rejected(
        msgpack("sort", "not a list".into(), None),
        None,
        "invalid_payload",
    )
    .await;
}

/// Bad requests interleaved with good ones leave the good ones untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_does_not_affect_other_requests() {
    let c = Cluster::builder().start().await;
    let mut pending = Vec::new();
    for i in 0..20i64 {
        publish_request(&c, b"\x00garbage", None, &Uuid::new_v4().to_string(), None).await;
        let payload = rmpv::Value::Array(
            (0..50)
                .map(|j| rmpv::Value::from((j * 7 + i) % 50))
                .collect(),
        );
        pending.push((
            payload.clone(),
            c.client()
                .send("sort", payload, Options::default())
                .await
                .expect("send"),
        ));
    }
    for (payload, (id, rx)) in pending {
        let r = c.client().wait(id, rx, WAIT).await.expect("result");
        assert_eq!(completed(&r), unsharded("sort", payload));
    }
    let seen = std::sync::atomic::AtomicUsize::new(0);
    eventually("20 dead letters", WAIT, || async {
        let n = c.drain(&c.names.dead_queue()).await.len();
        let total = seen.fetch_add(n, std::sync::atomic::Ordering::SeqCst) + n;
        assert!(
            total <= 20,
            "only the 20 bad requests are dead-lettered, saw {total}"
        );
        (total == 20).then_some(())
    })
    .await;
    c.shutdown().await;
}
