//! Wire messages: requests, shards and final results.
//!
//! Every message is MessagePack with field names (`rmp_serde::to_vec_named`), so fields can be
//! added without breaking older readers and any language can decode them. Requests may also be
//! JSON (`content_type: application/json`); their result is then JSON too. UUIDs travel as
//! hyphenated strings.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::locality::Locality;
use crate::{Error, RejectReason};

/// Content type of MessagePack bodies.
pub const CONTENT_TYPE_MSGPACK: &str = "application/msgpack";
/// Content type of JSON bodies.
pub const CONTENT_TYPE_JSON: &str = "application/json";

/// How a body is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// MessagePack with field names (the default).
    #[default]
    MsgPack,
    /// JSON, for clients without a MessagePack library.
    Json,
}

impl Format {
    /// The format named by an AMQP `content_type`; anything but JSON is read as MessagePack.
    pub fn from_content_type(ct: Option<&str>) -> Self {
        match ct {
            Some(ct) if ct.trim().eq_ignore_ascii_case(CONTENT_TYPE_JSON) => Format::Json,
            Some(ct)
                if ct
                    .trim()
                    .to_ascii_lowercase()
                    .starts_with("application/json;") =>
            {
                Format::Json
            }
            _ => Format::MsgPack,
        }
    }

    /// The AMQP `content_type` for this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::MsgPack => CONTENT_TYPE_MSGPACK,
            Format::Json => CONTENT_TYPE_JSON,
        }
    }

    /// Stable short name stored in Redis.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::MsgPack => "msgpack",
            Format::Json => "json",
        }
    }

    /// Parse [`Format::as_str`]; `None` for anything else.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "json" => Some(Format::Json),
            "msgpack" => Some(Format::MsgPack),
            _ => None,
        }
    }

    /// Encode a value in this format.
    ///
    /// # Errors
    /// When the value cannot be represented (for example a map with non-string keys in JSON).
    pub fn encode<T: Serialize>(self, value: &T) -> Result<Vec<u8>, Error> {
        Ok(match self {
            Format::MsgPack => rmp_serde::to_vec_named(value)?,
            Format::Json => serde_json::to_vec(value)?,
        })
    }

    /// Decode a value in this format.
    ///
    /// # Errors
    /// When the bytes are not valid for the format or do not fit `T`.
    pub fn decode<T: serde::de::DeserializeOwned>(self, bytes: &[u8]) -> Result<T, Error> {
        Ok(match self {
            Format::MsgPack => rmp_serde::from_slice(bytes)?,
            Format::Json => serde_json::from_slice(bytes)?,
        })
    }
}

/// What a client publishes to the request exchange: the manager cuts the payload.
///
/// ```json
/// {"kind": "wordcount", "payload": "to be or not to be", "options": {"max_shards": 8}}
/// ```
///
/// A client that holds its data in pieces sends them cut instead ([`PreCutBody`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RequestBody {
    /// Name of a registered kind of work.
    pub kind: String,
    /// The kind's input (a string for `wordcount`, a list of integers for `sort`, ...).
    pub payload: rmpv::Value,
    /// Optional limits; missing means defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<rmpv::Value>,
    /// Where every shard's data lives (see [`crate::locality`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locality: Option<String>,
}

/// A request whose client cut it: each piece of `shards` is a value of the kind's input, and
/// becomes one shard, in order; the merge and every guarantee are the same as for a payload.
///
/// ```json
/// {"kind": "wordcount", "shards": ["to be or", "not to be"]}
/// ```
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PreCutBody {
    /// Name of a registered kind of work.
    pub kind: String,
    /// The pieces, one shard each.
    pub shards: Vec<rmpv::Value>,
    /// Optional limits (`max_shards` does not apply: the client chose the count).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<rmpv::Value>,
    /// Where every piece's data lives (see [`crate::locality`]); excludes `localities`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locality: Option<String>,
    /// Where each piece's data lives, one entry per piece (`None`: no key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub localities: Option<Vec<Option<String>>>,
}

/// What a request asks to be worked on.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// One input for the manager to cut.
    Payload(rmpv::Value),
    /// Pieces the client cut, one shard each.
    Shards(Vec<rmpv::Value>),
}

/// A decoded request: kind, input and raw options.
#[derive(Debug, Clone)]
pub struct Request {
    /// Name of the kind.
    pub kind: String,
    /// The payload or the pieces.
    pub input: Input,
    /// Optional limits; missing means defaults.
    pub options: Option<rmpv::Value>,
    /// Where its shards' data lives.
    pub locality: Locality,
}

/// Either request body, as read from the wire: exactly one of `payload` and `shards`.
#[derive(Deserialize)]
struct WireRequest {
    kind: String,
    #[serde(default)]
    payload: Option<rmpv::Value>,
    #[serde(default)]
    shards: Option<Vec<rmpv::Value>>,
    #[serde(default)]
    options: Option<rmpv::Value>,
    #[serde(default)]
    locality: Option<String>,
    #[serde(default)]
    localities: Option<Vec<Option<String>>>,
}

/// Longest deadline a request may ask for: 7 days.
pub const MAX_DEADLINE_MS: u64 = 7 * 24 * 3600 * 1000;

/// What a request does when a shard fails for good (after its retries). On the wire it is one
/// of the strings `fail_fast`, `partial`, `quorum`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum FailurePolicy {
    /// The request fails at once; its remaining shards are skipped (the default).
    #[default]
    FailFast,
    /// Wait for every shard; the result merges the shards that succeeded and lists the others.
    Partial,
    /// Like `partial`, but at least `quorum` shards must succeed; the request fails as soon as
    /// that is impossible.
    Quorum,
}

impl FailurePolicy {
    /// Stable name stored in Redis.
    pub fn as_str(self) -> &'static str {
        match self {
            FailurePolicy::FailFast => "fail_fast",
            FailurePolicy::Partial => "partial",
            FailurePolicy::Quorum => "quorum",
        }
    }

    /// Parse [`FailurePolicy::as_str`]; `None` for anything else.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "fail_fast" => Some(FailurePolicy::FailFast),
            "partial" => Some(FailurePolicy::Partial),
            "quorum" => Some(FailurePolicy::Quorum),
            _ => None,
        }
    }
}

impl TryFrom<String> for FailurePolicy {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        FailurePolicy::parse(&s).ok_or_else(|| {
            format!("unknown failure_policy {s:?}; use fail_fast, partial or quorum")
        })
    }
}

impl From<FailurePolicy> for String {
    fn from(p: FailurePolicy) -> String {
        p.as_str().to_owned()
    }
}

/// Per-request options.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Options {
    /// Cut the request into at most this many shards (≥ 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_shards: Option<u32>,
    /// Milliseconds from acceptance until the request should have ended (≥ 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_ms: Option<u64>,
    /// What a failed shard does to the request (default `fail_fast`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_policy: Option<FailurePolicy>,
    /// With `failure_policy: quorum`: shards that must succeed (1 ≤ quorum ≤ shards).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quorum: Option<u32>,
}

impl Options {
    /// Decode and range-check options given as a loose value.
    ///
    /// # Errors
    /// [`RejectReason::BadOptions`] for wrong types or values out of range.
    pub fn from_value(v: Option<rmpv::Value>) -> Result<Self, Error> {
        let opts: Options = match v {
            None | Some(rmpv::Value::Nil) => Options::default(),
            Some(v) => rmpv::ext::from_value(v)
                .map_err(|e| Error::rejected(RejectReason::BadOptions, e.to_string()))?,
        };
        if opts.max_shards == Some(0) {
            return Err(Error::rejected(
                RejectReason::BadOptions,
                "max_shards must be at least 1",
            ));
        }
        match (opts.failure_policy, opts.quorum) {
            (Some(FailurePolicy::Quorum), None | Some(0)) => {
                return Err(Error::rejected(
                    RejectReason::BadOptions,
                    "failure_policy quorum needs quorum ≥ 1",
                ));
            }
            (Some(FailurePolicy::Quorum), Some(_)) | (_, None) => {}
            (_, Some(_)) => {
                return Err(Error::rejected(
                    RejectReason::BadOptions,
                    "quorum is only valid with failure_policy quorum",
                ));
            }
        }
        if let Some(d) = opts.deadline_ms
            && !(1..=MAX_DEADLINE_MS).contains(&d)
        {
            return Err(Error::rejected(
                RejectReason::BadOptions,
                format!("deadline_ms must be between 1 and {MAX_DEADLINE_MS} (7 days), not {d}"),
            ));
        }
        Ok(opts)
    }

    /// Encode as a loose value for [`RequestBody::options`].
    pub fn to_value(self) -> Option<rmpv::Value> {
        if self == Options::default() {
            return None;
        }
        to_named_value(&self).ok()
    }
}

/// One shard on its way to an engine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    /// The request this shard belongs to.
    #[serde(with = "uuid::serde::hyphenated")]
    pub request_id: Uuid,
    /// Position of this shard, `0..total`.
    pub index: u32,
    /// How many shards the request was cut into.
    pub total: u32,
    /// Name of the kind of work.
    pub kind: String,
    /// 1 for the first publish; higher when re-driven.
    pub attempt: u32,
    /// Epoch milliseconds by which the request should have ended.
    pub deadline: u64,
    /// The kind's shard input, MessagePack.
    #[serde(with = "serde_bytes")]
    pub payload: Vec<u8>,
}

impl Shard {
    /// AMQP `message_id` of a shard: `<request id>:<index>`.
    pub fn message_id(&self) -> String {
        Self::message_id_of(self.request_id, self.index)
    }

    /// The `message_id` of shard `index` of `request`.
    pub fn message_id_of(request: Uuid, index: u32) -> String {
        format!("{request}:{index}")
    }

    /// The request id and shard index in a shard's `message_id`, if it is one.
    pub fn parse_message_id(message_id: &str) -> Option<(Uuid, u32)> {
        let (id, index) = message_id.rsplit_once(':')?;
        Some((id.parse().ok()?, index.parse().ok()?))
    }
}

/// AMQP `type` of a [`FinalizeOrder`]: not a valid kind name, so it never names a shard.
pub const FINALIZE_TYPE: &str = "shardline:finalize";

/// A manager's order to a worker of the request's kind to finalize it: sent to the kind's
/// shared queue when every shard is settled but no finalizer holds the request and the manager
/// cannot merge it (it was not built with the kind). The worker takes the finalizer lease and
/// publishes the result; finalizing is idempotent, so a repeated order does nothing more.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FinalizeOrder {
    /// The request to finalize.
    #[serde(with = "uuid::serde::hyphenated")]
    pub request_id: Uuid,
}

/// How a request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Every shard succeeded and the output is the merged result.
    Completed,
    /// A shard or the merge failed; `error` says why.
    Failed,
    /// The request was refused before any shard was cut; `error` says why.
    Rejected,
    /// The deadline passed before every shard was done.
    TimedOut,
    /// The request was cancelled.
    Cancelled,
    /// Some shards failed and the request's failure policy allowed it: the output merges the
    /// shards that succeeded; `failed_shards` lists the others.
    Partial,
}

impl Status {
    /// Stable lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Completed => "completed",
            Status::Failed => "failed",
            Status::Rejected => "rejected",
            Status::TimedOut => "timed_out",
            Status::Cancelled => "cancelled",
            Status::Partial => "partial",
        }
    }

    /// Parse [`Status::as_str`]; `None` for anything else.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "completed" => Some(Status::Completed),
            "failed" => Some(Status::Failed),
            "rejected" => Some(Status::Rejected),
            "timed_out" => Some(Status::TimedOut),
            "cancelled" => Some(Status::Cancelled),
            "partial" => Some(Status::Partial),
            _ => None,
        }
    }
}

/// A typed error inside a result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorInfo {
    /// Stable code, e.g. `unknown_kind`.
    pub code: String,
    /// Human-readable detail.
    pub message: String,
}

/// The one terminal message of a request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FinalResult {
    /// The request id (also the AMQP `message_id`, for deduplication downstream).
    #[serde(with = "uuid::serde::hyphenated")]
    pub request_id: Uuid,
    /// The kind, or `""` when the request was too malformed to have one.
    pub kind: String,
    /// How it ended.
    pub status: Status,
    /// How many shards it was cut into (0 when rejected).
    pub shards: u32,
    /// The merged output when completed.
    #[serde(default)]
    pub output: Option<rmpv::Value>,
    /// Why it did not complete.
    #[serde(default)]
    pub error: Option<ErrorInfo>,
    /// Shards that failed, when the failure policy let the request go on without them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed_shards: Vec<u32>,
}

impl FinalResult {
    /// An error result for a rejected request.
    pub fn rejected(request_id: Uuid, kind: &str, reason: RejectReason, message: &str) -> Self {
        FinalResult {
            request_id,
            kind: kind.to_owned(),
            status: Status::Rejected,
            shards: 0,
            output: None,
            error: Some(ErrorInfo {
                code: reason.code().to_owned(),
                message: message.to_owned(),
            }),
            failed_shards: Vec::new(),
        }
    }
}

/// Convert a value to a loose MessagePack value **with field names** (structs become maps, as
/// on the wire), unlike `rmpv::ext::to_value`, which writes structs as arrays.
///
/// # Errors
/// When the value cannot be encoded.
pub fn to_named_value<T: Serialize + ?Sized>(value: &T) -> Result<rmpv::Value, Error> {
    let bytes = rmp_serde::to_vec_named(value)?;
    rmpv::decode::read_value(&mut bytes.as_slice())
        .map_err(|e| Error::Config(format!("re-reading encoded value: {e}")))
}

/// Decode a request body in either format, mapping every failure to a typed rejection.
///
/// # Errors
/// [`RejectReason::Malformed`] when the bytes are not a request.
pub fn decode_request(format: Format, body: &[u8]) -> Result<Request, Error> {
    let wire = format
        .decode::<WireRequest>(body)
        .map_err(|e| Error::rejected(RejectReason::Malformed, e.to_string()))?;
    let input = match (wire.payload, wire.shards) {
        (Some(p), None) => Input::Payload(p),
        (None, Some(s)) => Input::Shards(s),
        (Some(_), Some(_)) => {
            return Err(Error::rejected(
                RejectReason::Malformed,
                "a request carries either a payload or shards, not both",
            ));
        }
        (None, None) => {
            return Err(Error::rejected(
                RejectReason::Malformed,
                "missing field `payload` (or `shards`, for a request cut by its client)",
            ));
        }
    };
    let pieces = match &input {
        Input::Payload(_) => None,
        Input::Shards(s) => Some(s.len()),
    };
    let locality = Locality::from_wire(wire.locality, wire.localities, pieces)?;
    Ok(Request {
        kind: wire.kind,
        input,
        options: wire.options,
        locality,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A JSON request decodes into the same body as its MessagePack twin.
    #[test]
    fn json_and_msgpack_requests_agree() {
        let json = br#"{"kind":"sort","payload":[3,1,2],"options":{"max_shards":2}}"#;
        let a = decode_request(Format::Json, json).expect("json");
        let packed = Format::MsgPack
            .encode(&RequestBody {
                kind: "sort".into(),
                payload: rmpv::Value::Array(vec![3.into(), 1.into(), 2.into()]),
                options: Some(rmpv::Value::Map(vec![("max_shards".into(), 2.into())])),
                locality: None,
            })
            .expect("encode");
        let b = decode_request(Format::MsgPack, &packed).expect("msgpack");
        assert_eq!(a.kind, b.kind);
        assert_eq!(a.input, b.input);
        let (oa, ob) = (
            Options::from_value(a.options).expect("json options"),
            Options::from_value(b.options).expect("msgpack options"),
        );
        assert_eq!(oa, ob);
        assert_eq!(oa.max_shards, Some(2));
    }

    /// A request cut by its client decodes to its pieces; a payload and pieces together, or
    /// neither, is `malformed`.
    #[test]
    fn pieces_decode_and_exclude_a_payload() {
        let r = decode_request(
            Format::Json,
            br#"{"kind":"wordcount","shards":["a b","c"]}"#,
        )
        .expect("pieces");
        assert_eq!(r.input, Input::Shards(vec!["a b".into(), "c".into()]));
        let packed = Format::MsgPack
            .encode(&PreCutBody {
                kind: "wordcount".into(),
                shards: vec!["a b".into(), "c".into()],
                options: None,
                locality: None,
                localities: None,
            })
            .expect("encode");
        assert_eq!(
            decode_request(Format::MsgPack, &packed)
                .expect("msgpack")
                .input,
            r.input
        );
        for body in [
            &br#"{"kind":"sort","payload":[1],"shards":[[1]]}"#[..],
            &br#"{"kind":"sort"}"#[..],
            &br#"{"kind":"sort","payload":null}"#[..],
        ] {
            match decode_request(Format::Json, body) {
                Err(Error::Rejected { reason, .. }) => assert_eq!(reason, RejectReason::Malformed),
                other => panic!("{other:?}"),
            }
        }
    }

    /// A request's `locality` covers every shard; a pre-cut request's `localities` gives each
    /// piece its own; a misuse of either is `malformed`.
    #[test]
    fn localities_decode() {
        let r = decode_request(
            Format::Json,
            br#"{"kind":"wordcount","payload":"a b","locality":"p1"}"#,
        )
        .expect("locality");
        assert_eq!(r.locality.key(5).map(|k| k.as_str()), Some("p1"));
        let r = decode_request(
            Format::Json,
            br#"{"kind":"wordcount","shards":["a","b"],"localities":[null,"p2"]}"#,
        )
        .expect("localities");
        assert_eq!(r.locality.key(0), None);
        assert_eq!(r.locality.key(1).map(|k| k.as_str()), Some("p2"));
        for body in [
            &br#"{"kind":"wordcount","payload":"a","localities":["p"]}"#[..],
            &br#"{"kind":"wordcount","shards":["a"],"localities":["p","q"]}"#[..],
            &br#"{"kind":"wordcount","payload":"a","locality":""}"#[..],
            &br#"{"kind":"wordcount","payload":"a","locality":7}"#[..],
        ] {
            match decode_request(Format::Json, body) {
                Err(Error::Rejected { reason, .. }) => assert_eq!(reason, RejectReason::Malformed),
                other => panic!("{other:?}"),
            }
        }
    }

    /// Garbage and missing fields are typed `malformed` rejections, not panics.
    #[test]
    fn malformed_bodies_are_rejected() {
        for (fmt, body) in [
            (Format::MsgPack, &b"\xc1\xff\x00"[..]),
            (Format::Json, &b"{not json"[..]),
            (Format::Json, &br#"{"payload": 1}"#[..]),
        ] {
            match decode_request(fmt, body) {
                Err(Error::Rejected { reason, .. }) => assert_eq!(reason, RejectReason::Malformed),
                other => panic!("expected a rejection, got {other:?}"),
            }
        }
    }

    /// Options of the wrong type or out of range are `bad_options`.
    #[test]
    fn bad_options_are_rejected() {
        for v in [
            rmpv::Value::from("lots"),
            rmpv::Value::Map(vec![("max_shards".into(), 0.into())]),
            rmpv::Value::Map(vec![("max_shards".into(), (-3).into())]),
            rmpv::Value::Map(vec![("deadline_ms".into(), "soon".into())]),
            rmpv::Value::Map(vec![("deadline_ms".into(), u64::MAX.into())]),
            rmpv::Value::Map(vec![("failure_policy".into(), "quorum".into())]),
            rmpv::Value::Map(vec![("quorum".into(), 2.into())]),
            rmpv::Value::Map(vec![("failure_policy".into(), "sometimes".into())]),
        ] {
            match Options::from_value(Some(v)) {
                Err(Error::Rejected { reason, .. }) => assert_eq!(reason, RejectReason::BadOptions),
                other => panic!("expected bad_options, got {other:?}"),
            }
        }
    }

    /// Options travel as a map with field names, so they survive added or skipped fields.
    #[test]
    fn options_encode_as_named_maps() {
        let o = Options {
            max_shards: None,
            deadline_ms: Some(5),
            ..Options::default()
        };
        let v = o.to_value().expect("some");
        assert_eq!(v, rmpv::Value::Map(vec![("deadline_ms".into(), 5.into())]));
        assert_eq!(Options::from_value(Some(v)).expect("decode"), o);
    }

    /// Shards round-trip through MessagePack with the request id as a readable string.
    #[test]
    fn shard_round_trip_uses_string_ids() {
        let s = Shard {
            request_id: Uuid::new_v4(),
            index: 3,
            total: 9,
            kind: "sort".into(),
            attempt: 1,
            deadline: 42,
            payload: vec![1, 2, 3],
        };
        let bytes = rmp_serde::to_vec_named(&s).expect("encode");
        let needle = s.request_id.to_string();
        assert!(bytes.windows(needle.len()).any(|w| w == needle.as_bytes()));
        let back: Shard = rmp_serde::from_slice(&bytes).expect("decode");
        assert_eq!(back, s);
    }

    /// Content types choose the format, defaulting to MessagePack.
    #[test]
    fn content_type_selects_format() {
        assert_eq!(Format::from_content_type(None), Format::MsgPack);
        assert_eq!(
            Format::from_content_type(Some("application/json")),
            Format::Json
        );
        assert_eq!(
            Format::from_content_type(Some("application/json; charset=utf-8")),
            Format::Json
        );
        assert_eq!(
            Format::from_content_type(Some("application/msgpack")),
            Format::MsgPack
        );
    }
}
