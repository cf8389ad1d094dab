//! Turning a file or stdin into a request payload for the CLI.

use crate::Error;

/// How the CLI reads its input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum InputFormat {
    /// By kind: text for `wordcount`, bytes for `checksum`, integers for `sort`; for other
    /// kinds JSON when the input is JSON, else text (so that a kind the CLI does not know still
    /// reaches the manager, which says whether it knows it).
    Auto,
    /// UTF-8 text as a string.
    Text,
    /// Raw bytes.
    Bytes,
    /// Integers separated by whitespace or commas.
    Ints,
    /// A JSON value.
    Json,
}

/// Build the payload for `kind` from raw input.
///
/// # Errors
/// [`Error::Input`] when the input does not parse as the chosen format.
pub fn parse_payload(
    kind: &str,
    format: InputFormat,
    input: Vec<u8>,
) -> Result<rmpv::Value, Error> {
    let format = match format {
        InputFormat::Auto => match kind {
            "wordcount" => InputFormat::Text,
            "checksum" => InputFormat::Bytes,
            "sort" if !input.trim_ascii_start().starts_with(b"[") => InputFormat::Ints,
            "sort" => InputFormat::Json,
            _ if serde_json::from_slice::<serde::de::IgnoredAny>(&input).is_ok() => {
                InputFormat::Json
            }
            _ => InputFormat::Text,
        },
        f => f,
    };
    match format {
        InputFormat::Text => String::from_utf8(input)
            .map(rmpv::Value::from)
            .map_err(|e| Error::Input(format!("input is not UTF-8: {e}"))),
        InputFormat::Bytes => Ok(rmpv::Value::Binary(input)),
        InputFormat::Ints => {
            let text = String::from_utf8(input).map_err(|e| Error::Input(e.to_string()))?;
            text.split(|c: char| c.is_whitespace() || c == ',')
                .filter(|t| !t.is_empty())
                .map(|t| {
                    t.parse::<i64>()
                        .map(rmpv::Value::from)
                        .map_err(|e| Error::Input(format!("{t:?} is not an integer: {e}")))
                })
                .collect::<Result<Vec<_>, _>>()
                .map(rmpv::Value::Array)
        }
        InputFormat::Json | InputFormat::Auto => serde_json::from_slice::<rmpv::Value>(&input)
            .map_err(|e| Error::Input(format!("input is not JSON: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each kind reads its natural input format by default.
    #[test]
    fn auto_picks_the_kind_s_format() {
        let v = parse_payload("sort", InputFormat::Auto, b"3, 1\n2".to_vec()).expect("ints");
        assert_eq!(v, rmpv::Value::Array(vec![3.into(), 1.into(), 2.into()]));
        let v = parse_payload("sort", InputFormat::Auto, b"[3,1]".to_vec()).expect("json");
        assert_eq!(v, rmpv::Value::Array(vec![3.into(), 1.into()]));
        let v = parse_payload("wordcount", InputFormat::Auto, b"a b".to_vec()).expect("text");
        assert_eq!(v, rmpv::Value::from("a b"));
        let v = parse_payload("checksum", InputFormat::Auto, vec![0, 255]).expect("bytes");
        assert_eq!(v, rmpv::Value::Binary(vec![0, 255]));
        assert!(parse_payload("sort", InputFormat::Auto, b"1 x".to_vec()).is_err());
    }

    /// A kind the CLI does not know takes JSON when the input is JSON and text otherwise, so
    /// that the request reaches the manager (which knows the kinds) instead of failing here.
    #[test]
    fn auto_sends_other_kinds_json_or_text() {
        let v = parse_payload("mine", InputFormat::Auto, b"{\"a\": 1}".to_vec()).expect("json");
        assert_eq!(v, rmpv::Value::Map(vec![("a".into(), 1.into())]));
        let v = parse_payload("frobnicate", InputFormat::Auto, b"x".to_vec()).expect("text");
        assert_eq!(v, rmpv::Value::from("x"));
        assert!(parse_payload("mine", InputFormat::Json, b"x".to_vec()).is_err());
    }
}
