//! Turning a delivery from the request queue into an accepted request or a typed rejection.

use lapin::BasicProperties;
use shardline::amqp::ReplyTo;
use shardline::locality::Locality;
use shardline::message::{Format, Input, Options, decode_request};
use shardline::{Error, RejectReason};
use uuid::Uuid;

/// UUID namespace for request ids derived from non-UUID `message_id`s.
const ID_NAMESPACE: Uuid = Uuid::from_u128(0x5a4d_7c1e_8f2b_4e61_9d3a_0b6c_2e8f_1a47);

/// A request that passed validation.
#[derive(Debug)]
pub struct Accepted {
    /// Request id.
    pub id: Uuid,
    /// Kind name (registered).
    pub kind: String,
    /// The kind's input, or the pieces the client cut.
    pub input: Input,
    /// Validated options.
    pub options: Options,
    /// Where its shards' data lives.
    pub locality: Locality,
    /// Where the result goes.
    pub reply: ReplyTo,
}

/// A request refused before any shard was cut.
#[derive(Debug)]
pub struct Rejection {
    /// Request id (also when the body was unreadable).
    pub id: Uuid,
    /// Kind name if the body had one.
    pub kind: String,
    /// Why.
    pub reason: RejectReason,
    /// Detail for humans.
    pub message: String,
    /// Where the error result goes.
    pub reply: ReplyTo,
}

/// The request id: the AMQP `message_id` when it is a UUID, a UUIDv5 of it when it is some
/// other string (so redeliveries keep their id), else a fresh UUIDv4.
pub fn request_id(props: &BasicProperties) -> Uuid {
    match props.message_id().as_ref().map(|s| s.as_str()) {
        Some(s) if !s.is_empty() => s
            .parse()
            .unwrap_or_else(|_| Uuid::new_v5(&ID_NAMESPACE, s.as_bytes())),
        _ => Uuid::new_v4(),
    }
}

/// Reply routing from the request's properties.
pub fn reply_to(props: &BasicProperties) -> ReplyTo {
    ReplyTo {
        reply_to: props
            .reply_to()
            .as_ref()
            .map(|s| s.to_string())
            .filter(|s| !s.is_empty()),
        correlation_id: props.correlation_id().as_ref().map(|s| s.to_string()),
        format: Format::from_content_type(props.content_type().as_ref().map(|s| s.as_str())),
    }
}

/// Validate a request body: size, encoding, options. Whether its kind is served is the
/// catalog's call ([`crate::kinds`]); the payload itself is checked when it is split.
///
/// # Errors
/// A [`Rejection`] saying why.
pub fn accept(
    id: Uuid,
    body: &[u8],
    props: &BasicProperties,
    max_payload: usize,
) -> Result<Accepted, Box<Rejection>> {
    let reply = reply_to(props);
    let reject = |kind: &str, reason, message: String, reply: &ReplyTo| {
        Box::new(Rejection {
            id,
            kind: kind.to_owned(),
            reason,
            message,
            reply: reply.clone(),
        })
    };
    if body.len() > max_payload {
        return Err(reject(
            "",
            RejectReason::Oversized,
            format!(
                "body of {} bytes is over the {max_payload}-byte limit",
                body.len()
            ),
            &reply,
        ));
    }
    let req = decode_request(reply.format, body).map_err(|e| match e {
        Error::Rejected { reason, message } => reject("", reason, message, &reply),
        other => reject("", RejectReason::Malformed, other.to_string(), &reply),
    })?;
    let options = Options::from_value(req.options).map_err(|e| match e {
        Error::Rejected { reason, message } => reject(&req.kind, reason, message, &reply),
        other => reject(
            &req.kind,
            RejectReason::BadOptions,
            other.to_string(),
            &reply,
        ),
    })?;
    Ok(Accepted {
        id,
        kind: req.kind,
        input: req.input,
        options,
        locality: req.locality,
        reply,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use shardline::message::RequestBody;

    fn body(kind: &str) -> Vec<u8> {
        Format::MsgPack
            .encode(&RequestBody {
                kind: kind.into(),
                payload: "a b".into(),
                options: None,
                locality: None,
            })
            .expect("encode")
    }

    fn reason(r: Result<Accepted, Box<Rejection>>) -> RejectReason {
        r.expect_err("should be rejected").reason
    }

    /// Each sort of bad input maps to its own typed reason.
    #[test]
    fn rejects_each_sort_of_bad_input() {
        let p = BasicProperties::default();
        let id = Uuid::new_v4();
        assert_eq!(
            reason(accept(id, &body("wordcount"), &p, 4)),
            RejectReason::Oversized
        );
        assert_eq!(
            reason(accept(id, b"\xc1", &p, 1024)),
            RejectReason::Malformed
        );
        assert!(accept(id, &body("wordcount"), &p, 1024).is_ok());
    }

    /// A UUID message_id is the request id; other strings map to a stable UUIDv5, a distinct one
    /// per string.
    #[test]
    fn request_ids_are_stable_across_redeliveries() {
        let id = Uuid::new_v4();
        let p = BasicProperties::default().with_message_id(id.to_string().into());
        assert_eq!(request_id(&p), id);
        let p = BasicProperties::default().with_message_id("order-17".into());
        let mapped = request_id(&p);
        assert_eq!(request_id(&p), mapped);
        assert_eq!(mapped.get_version(), Some(uuid::Version::Sha1));
        let other = BasicProperties::default().with_message_id("order-18".into());
        assert_ne!(request_id(&other), mapped);
        assert_ne!(
            request_id(&BasicProperties::default()),
            request_id(&BasicProperties::default())
        );
    }
}
