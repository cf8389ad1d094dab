//! Generic splitters: how a manager cuts a kind's input without the kind's code.
//!
//! A kind names its splitter ([`crate::kind::Kind::splitter`]) and workers advertise it, so a
//! manager that was never built with the kind can still cut its requests. Every splitter is
//! deterministic (a re-driven request is cut the same way) and returns exactly the shard count
//! asked for. Each shard is a value of the kind's input type, encoded as MessagePack:
//!
//! | splitter | input | size unit | each shard |
//! |---|---|---|---|
//! | `words` | a string | bytes | a string cut at whitespace (may be empty when words are long) |
//! | `lines` | a string | bytes | a string of whole lines, each with its `\n` (may be empty) |
//! | `list` | an array | items | an array of consecutive items |
//! | `bytes` | binary, or a string | bytes | a run of the binary; for a string, a string cut at character boundaries |
//! | `none` | anything | 1 | the whole input |
//! | `custom` | the kind's own | the kind's own | only a manager built with the kind can cut it |

use std::fmt;
use std::str::FromStr;

use rmpv::Value;
use serde::{Deserialize, Serialize};

use super::{KindError, even_chunks};

/// How a kind's input is cut into shards. Parsed strictly: an unknown name is an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Splitter {
    /// Text cut at whitespace.
    Words,
    /// Text cut after line ends.
    Lines,
    /// An array cut into runs of items.
    List,
    /// Binary (or text) cut into runs of bytes.
    Bytes,
    /// One shard: the whole input.
    None,
    /// The kind's own `split`.
    Custom,
}

impl Splitter {
    /// Every splitter, in documentation order.
    pub const ALL: [Splitter; 6] = [
        Splitter::Words,
        Splitter::Lines,
        Splitter::List,
        Splitter::Bytes,
        Splitter::None,
        Splitter::Custom,
    ];

    /// The name a kinds file or an advert uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Splitter::Words => "words",
            Splitter::Lines => "lines",
            Splitter::List => "list",
            Splitter::Bytes => "bytes",
            Splitter::None => "none",
            Splitter::Custom => "custom",
        }
    }

    /// Whether a manager can cut with it without the kind's code.
    pub fn is_generic(self) -> bool {
        self != Splitter::Custom
    }

    /// Cut `input` into as many shards as `decide(size, shard_size)` says (clamped to
    /// `1..=size`), each encoded as MessagePack. Returns the shards and the input's size.
    ///
    /// # Errors
    /// [`KindError::InvalidPayload`] for input of the wrong type, [`KindError::Empty`] for
    /// empty input, [`KindError::Failed`] for [`Splitter::Custom`].
    pub fn split(
        self,
        input: Value,
        shard_size: u64,
        decide: &mut dyn FnMut(u64, u64) -> usize,
    ) -> Result<(Vec<Vec<u8>>, u64), KindError> {
        let size = self.size(&input)?;
        if size == 0 {
            return Err(KindError::Empty(self.label()));
        }
        let n =
            decide(size, shard_size.max(1)).clamp(1, usize::try_from(size).unwrap_or(usize::MAX));
        let shards = self.cut(input, n)?;
        Ok((shards.iter().map(encode).collect(), size))
    }

    /// Make each piece a client cut itself one shard, as it is: every piece must be a
    /// non-empty input of this splitter. Returns the shards and their sizes added up.
    ///
    /// # Errors
    /// [`KindError::InvalidPayload`] naming the first bad or empty piece, [`KindError::Empty`]
    /// for no pieces, [`KindError::Failed`] for [`Splitter::Custom`].
    pub fn split_pieces(self, pieces: Vec<Value>) -> Result<(Vec<Vec<u8>>, u64), KindError> {
        if pieces.is_empty() {
            return Err(KindError::Empty(self.label()));
        }
        let mut total = 0u64;
        let mut shards = Vec::with_capacity(pieces.len());
        for (i, piece) in pieces.iter().enumerate() {
            let size = self.size(piece).map_err(|e| match e {
                KindError::InvalidPayload { kind, detail } => KindError::InvalidPayload {
                    kind,
                    detail: format!("shard {i}: {detail}"),
                },
                other => other,
            })?;
            if size == 0 {
                return Err(KindError::InvalidPayload {
                    kind: self.label(),
                    detail: format!("shard {i} is empty"),
                });
            }
            total = total.saturating_add(size);
            shards.push(encode(piece));
        }
        Ok((shards, total))
    }

    /// The input's size in this splitter's unit; 0 means empty.
    fn size(self, input: &Value) -> Result<u64, KindError> {
        let n = match (self, input) {
            (Splitter::Words, Value::String(s)) => {
                let text = utf8(self, s)?;
                if text.trim().is_empty() {
                    0
                } else {
                    text.len()
                }
            }
            (Splitter::Lines | Splitter::Bytes, Value::String(s)) => utf8(self, s)?.len(),
            (Splitter::List, Value::Array(items)) => items.len(),
            (Splitter::Bytes, Value::Binary(b)) => b.len(),
            (Splitter::None, Value::Nil) => 0,
            (Splitter::None, _) => 1,
            (Splitter::Custom, _) => return Err(needs_code()),
            (_, other) => {
                return Err(KindError::InvalidPayload {
                    kind: self.label(),
                    detail: format!("expected {}, got {}", self.expects(), type_name(other)),
                });
            }
        };
        Ok(n as u64)
    }

    /// Cut a checked, non-empty input into exactly `n` values.
    fn cut(self, input: Value, n: usize) -> Result<Vec<Value>, KindError> {
        Ok(match (self, input) {
            (Splitter::Words, Value::String(s)) => {
                let text = utf8(self, &s)?;
                slices(text, &text_cuts(text, n, Boundary::Whitespace))
            }
            (Splitter::Lines, Value::String(s)) => {
                let text = utf8(self, &s)?;
                slices(text, &text_cuts(text, n, Boundary::LineEnd))
            }
            (Splitter::Bytes, Value::String(s)) => {
                let text = utf8(self, &s)?;
                slices(text, &text_cuts(text, n, Boundary::Char))
            }
            (Splitter::Bytes, Value::Binary(b)) => even_chunks(&b, n)
                .into_iter()
                .map(|c| Value::Binary(c.to_vec()))
                .collect(),
            (Splitter::List, Value::Array(items)) => even_chunks(&items, n)
                .into_iter()
                .map(|c| Value::Array(c.to_vec()))
                .collect(),
            (Splitter::None, whole) => vec![whole],
            (Splitter::Custom, _) => return Err(needs_code()),
            (_, other) => {
                return Err(KindError::InvalidPayload {
                    kind: self.label(),
                    detail: format!("expected {}, got {}", self.expects(), type_name(&other)),
                });
            }
        })
    }

    /// The name errors give: `words splitter`, ...
    fn label(self) -> &'static str {
        match self {
            Splitter::Words => "the words splitter",
            Splitter::Lines => "the lines splitter",
            Splitter::List => "the list splitter",
            Splitter::Bytes => "the bytes splitter",
            Splitter::None => "the none splitter",
            Splitter::Custom => "a custom splitter",
        }
    }

    fn expects(self) -> &'static str {
        match self {
            Splitter::Words | Splitter::Lines => "a string",
            Splitter::List => "an array",
            Splitter::Bytes => "binary or a string",
            Splitter::None | Splitter::Custom => "any value",
        }
    }
}

impl fmt::Display for Splitter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A splitter name that is not one of [`Splitter::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown splitter {0:?}; expected one of words, lines, list, bytes, none, custom")]
pub struct UnknownSplitter(pub String);

impl FromStr for Splitter {
    type Err = UnknownSplitter;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Splitter::ALL
            .into_iter()
            .find(|sp| sp.as_str() == s)
            .ok_or_else(|| UnknownSplitter(s.to_owned()))
    }
}

/// Where a text may be cut.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Boundary {
    /// Before a whitespace character.
    Whitespace,
    /// After a `\n`.
    LineEnd,
    /// At any character boundary.
    Char,
}

/// `n + 1` byte offsets that cut `text` into `n` runs: each cut is the first `boundary` at or
/// after an even share of the bytes, so runs hold about `len / n` bytes (fewer, or none, when
/// the boundaries are sparse).
pub(crate) fn text_cuts(text: &str, n: usize, boundary: Boundary) -> Vec<usize> {
    let len = text.len();
    let n = n.max(1);
    let mut cuts = Vec::with_capacity(n + 1);
    cuts.push(0);
    for i in 1..n {
        let mut ideal = (len * i / n).max(*cuts.last().unwrap_or(&0));
        while !text.is_char_boundary(ideal) {
            ideal += 1;
        }
        let rest = &text[ideal..];
        let cut = match boundary {
            Boundary::Whitespace => rest
                .char_indices()
                .find(|(_, c)| c.is_whitespace())
                .map_or(len, |(off, _)| ideal + off),
            Boundary::LineEnd => rest.find('\n').map_or(len, |off| ideal + off + 1),
            Boundary::Char => ideal,
        };
        cuts.push(cut);
    }
    cuts.push(len);
    cuts
}

fn slices(text: &str, cuts: &[usize]) -> Vec<Value> {
    cuts.windows(2)
        .map(|w| Value::from(&text[w[0]..w[1]]))
        .collect()
}

fn utf8(splitter: Splitter, s: &rmpv::Utf8String) -> Result<&str, KindError> {
    s.as_str().ok_or_else(|| KindError::InvalidPayload {
        kind: splitter.label(),
        detail: "the string is not valid UTF-8".into(),
    })
}

fn needs_code() -> KindError {
    KindError::Failed("a custom splitter needs the kind's own code".into())
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Nil => "nil",
        Value::Boolean(_) => "a boolean",
        Value::Integer(_) | Value::F32(_) | Value::F64(_) => "a number",
        Value::String(_) => "a string",
        Value::Binary(_) => "binary",
        Value::Array(_) => "an array",
        Value::Map(_) => "a map",
        Value::Ext(..) => "an extension value",
    }
}

fn encode(v: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    // Writing to a Vec cannot fail.
    let _ = rmpv::encode::write_value(&mut out, v);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use quickcheck::quickcheck;

    fn decode(b: &[u8]) -> Value {
        rmpv::decode::read_value(&mut &b[..]).expect("decode")
    }

    fn split(s: Splitter, input: Value, n: usize) -> Result<Vec<Value>, KindError> {
        let (shards, _) = s.split(input, 1, &mut |_, _| n)?;
        Ok(shards.iter().map(|b| decode(b)).collect())
    }

    fn text(v: &[Value]) -> String {
        v.iter().map(|s| s.as_str().expect("string")).collect()
    }

    quickcheck! {
        /// Words shards join back to the text, every cut is before whitespace, and the count
        /// is the one asked for.
        fn words_cover_the_text_and_cut_at_whitespace(words: Vec<String>, n: u8) -> bool {
            let t = words.join(" ");
            if t.trim().is_empty() { return true; }
            let n = usize::from(n).clamp(1, t.len());
            let parts = split(Splitter::Words, Value::from(t.as_str()), n).expect("split");
            parts.len() == n && text(&parts) == t && parts.iter().skip(1).all(|p| {
                p.as_str().expect("string").chars().next().is_none_or(char::is_whitespace)
            })
        }

        /// Lines shards join back to the text and each ends at a line end (or the text's end).
        fn lines_hold_whole_lines(lines: Vec<String>, n: u8) -> bool {
            let t: String = lines.iter().map(|l| format!("{}\n", l.replace('\n', ""))).collect();
            if t.is_empty() { return true; }
            let n = usize::from(n).clamp(1, t.len());
            let parts = split(Splitter::Lines, Value::from(t.as_str()), n).expect("split");
            parts.len() == n && text(&parts) == t
                && parts.iter().all(|p| { let s = p.as_str().expect("string"); s.is_empty() || s.ends_with('\n') })
        }

        /// List shards are consecutive runs covering the array, none empty.
        fn list_runs_cover_the_array(items: Vec<i64>, n: u8) -> bool {
            if items.is_empty() { return true; }
            let n = usize::from(n).clamp(1, items.len());
            let input = Value::Array(items.iter().map(|&i| Value::from(i)).collect());
            let parts = split(Splitter::List, input, n).expect("split");
            let joined: Vec<i64> = parts.iter()
                .flat_map(|p| p.as_array().expect("array").iter().map(|v| v.as_i64().expect("int")))
                .collect();
            parts.len() == n && joined == items
                && parts.iter().all(|p| !p.as_array().expect("array").is_empty())
        }

        /// Bytes shards of binary input are even runs covering it.
        fn bytes_runs_cover_the_binary(bytes: Vec<u8>, n: u8) -> bool {
            if bytes.is_empty() { return true; }
            let n = usize::from(n).clamp(1, bytes.len());
            let parts = split(Splitter::Bytes, Value::Binary(bytes.clone()), n).expect("split");
            let joined: Vec<u8> = parts.iter().flat_map(|p| p.as_slice().expect("binary").to_vec()).collect();
            parts.len() == n && joined == bytes
        }
    }

    /// The size each splitter measures, in its own unit.
    #[test]
    fn sizes_are_in_each_splitters_unit() {
        let size = |s: Splitter, v: Value| s.split(v, 1, &mut |_, _| 1).map(|(_, n)| n);
        assert_eq!(size(Splitter::Words, "ab cd".into()), Ok(5));
        assert_eq!(size(Splitter::Lines, "a\nb\n".into()), Ok(4));
        assert_eq!(
            size(Splitter::List, Value::Array(vec![1.into(), 2.into()])),
            Ok(2)
        );
        assert_eq!(size(Splitter::Bytes, Value::Binary(vec![0; 7])), Ok(7));
        assert_eq!(size(Splitter::None, Value::Map(vec![])), Ok(1));
    }

    /// More shards than units are clamped to one per unit; `none` always gives one shard.
    #[test]
    fn the_count_is_clamped_to_the_size() {
        let list = Value::Array(vec![1.into(), 2.into()]);
        assert_eq!(split(Splitter::List, list, 9).expect("split").len(), 2);
        let whole = Value::Map(vec![("a".into(), 1.into())]);
        assert_eq!(
            split(Splitter::None, whole.clone(), 9).expect("split"),
            vec![whole]
        );
    }

    /// Input of the wrong type, or empty input, is refused with a typed error that says what
    /// was expected.
    #[test]
    fn refuses_wrong_and_empty_input() {
        let wrong = split(Splitter::Words, Value::Array(vec![]), 2).expect_err("wrong type");
        assert!(
            matches!(&wrong, KindError::InvalidPayload { detail, .. } if detail.contains("expected a string, got an array")),
            "{wrong}"
        );
        assert!(matches!(
            split(Splitter::Words, "  \n".into(), 2),
            Err(KindError::Empty(_))
        ));
        assert!(matches!(
            split(Splitter::List, Value::Array(vec![]), 2),
            Err(KindError::Empty(_))
        ));
        assert!(matches!(
            split(Splitter::None, Value::Nil, 2),
            Err(KindError::Empty(_))
        ));
        assert!(matches!(
            split(Splitter::Custom, "a".into(), 1),
            Err(KindError::Failed(_))
        ));
    }

    /// Pre-cut pieces become one shard each, as they are; a bad or empty piece is named.
    #[test]
    fn pieces_are_shards_as_they_are() {
        let pieces = vec![Value::from("a b"), Value::from("c")];
        let (shards, size) = Splitter::Words
            .split_pieces(pieces.clone())
            .expect("pieces");
        assert_eq!(shards.iter().map(|s| decode(s)).collect::<Vec<_>>(), pieces);
        assert_eq!(size, 4);
        let bad = Splitter::Words
            .split_pieces(vec!["a".into(), 3.into()])
            .expect_err("bad");
        assert!(bad.to_string().contains("shard 1"), "{bad}");
        let empty = Splitter::List
            .split_pieces(vec![Value::Array(vec![])])
            .expect_err("empty");
        assert!(empty.to_string().contains("shard 0 is empty"), "{empty}");
        assert!(matches!(
            Splitter::List.split_pieces(vec![]),
            Err(KindError::Empty(_))
        ));
    }

    /// Names parse strictly and round-trip.
    #[test]
    fn names_parse_strictly() {
        for s in Splitter::ALL {
            assert_eq!(s.as_str().parse::<Splitter>(), Ok(s));
            let json = serde_json::to_string(&s).expect("json");
            assert_eq!(serde_json::from_str::<Splitter>(&json).expect("back"), s);
        }
        assert!("Words".parse::<Splitter>().is_err());
        assert!("chars".parse::<Splitter>().is_err());
        assert!(serde_json::from_str::<Splitter>("\"chars\"").is_err());
    }
}
