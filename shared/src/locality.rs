//! Data locality: where a shard's data lives, and which engines hold it.
//!
//! A request may name a **locality key** (a data partition, a file, a zone) for all its shards
//! (`"locality": "p3"`) or, when its client cut it, one per piece (`"localities": ["p0", null,
//! "p2"]`). Workers declare the keys they hold (`--locality`, and at run time through Redis:
//! [`crate::store::Store::add_locality`]). The manager prefers an engine that holds a shard's
//! key, bounded by load: a shard goes elsewhere once the holder's expected delay is larger than
//! the cost of reading the data remotely (see the manager's routing docs).
//!
//! A key is 1 to [`MAX_KEY_BYTES`] bytes with no whitespace or control characters, so it
//! reads the same in logs, in `redis-cli` and on the command line.

use std::fmt;

use crate::{Error, RejectReason};

/// Longest locality key, in bytes.
pub const MAX_KEY_BYTES: usize = 256;

/// A checked locality key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LocalityKey(String);

impl LocalityKey {
    /// Check `key`.
    ///
    /// # Errors
    /// A message saying what is wrong with it.
    pub fn parse(key: impl Into<String>) -> Result<Self, String> {
        let key = key.into();
        if key.is_empty() {
            return Err("a locality key must not be empty".into());
        }
        if key.len() > MAX_KEY_BYTES {
            return Err(format!(
                "a locality key is at most {MAX_KEY_BYTES} bytes, not {}",
                key.len()
            ));
        }
        if let Some(c) = key.chars().find(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!(
                "a locality key has no whitespace or control characters ({c:?} in {key:?})"
            ));
        }
        Ok(LocalityKey(key))
    }

    /// The key.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for LocalityKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for LocalityKey {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        LocalityKey::parse(s)
    }
}

/// Where a request's shards' data lives.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Locality {
    /// Nowhere in particular: every engine is as good.
    #[default]
    Anywhere,
    /// Every shard's data is at this key.
    Request(LocalityKey),
    /// One entry per piece of a request its client cut (`None`: that piece has no key).
    Shards(Vec<Option<LocalityKey>>),
}

impl Locality {
    /// Read the wire fields `locality` and `localities` of a request of `pieces` pieces
    /// (`None` for a payload the manager cuts).
    ///
    /// # Errors
    /// [`RejectReason::Malformed`]: both fields, `localities` without pieces or with another
    /// count, or a key that does not parse.
    pub fn from_wire(
        locality: Option<String>,
        localities: Option<Vec<Option<String>>>,
        pieces: Option<usize>,
    ) -> Result<Self, Error> {
        let bad = |m: String| Error::rejected(RejectReason::Malformed, m);
        match (locality, localities) {
            (None, None) => Ok(Locality::Anywhere),
            (Some(_), Some(_)) => Err(bad(
                "a request carries `locality` (every shard) or `localities` (one per piece), \
                 not both"
                    .into(),
            )),
            (Some(key), None) => LocalityKey::parse(key)
                .map(Locality::Request)
                .map_err(|e| bad(format!("locality: {e}"))),
            (None, Some(keys)) => {
                let Some(pieces) = pieces else {
                    return Err(bad(
                        "`localities` goes with `shards` (one key per piece); a payload takes \
                         one `locality` for every shard"
                            .into(),
                    ));
                };
                if keys.len() != pieces {
                    return Err(bad(format!(
                        "`localities` has {} entries for {pieces} pieces; give one per piece \
                         (null for none)",
                        keys.len()
                    )));
                }
                keys.into_iter()
                    .enumerate()
                    .map(|(i, k)| {
                        k.map(LocalityKey::parse)
                            .transpose()
                            .map_err(|e| bad(format!("localities[{i}]: {e}")))
                    })
                    .collect::<Result<Vec<_>, _>>()
                    .map(Locality::Shards)
            }
        }
    }

    /// The key of shard `index`, if it has one.
    pub fn key(&self, index: u32) -> Option<&LocalityKey> {
        match self {
            Locality::Anywhere => None,
            Locality::Request(key) => Some(key),
            Locality::Shards(keys) => keys.get(index as usize)?.as_ref(),
        }
    }

    /// Whether no shard has a key.
    pub fn is_anywhere(&self) -> bool {
        match self {
            Locality::Anywhere => true,
            Locality::Request(_) => false,
            Locality::Shards(keys) => keys.iter().all(Option::is_none),
        }
    }
}

/// Parse a comma-separated list of keys (a worker's `--locality`), skipping empty entries.
///
/// # Errors
/// The first key that does not parse, by position.
pub fn parse_list(list: &str) -> Result<Vec<LocalityKey>, String> {
    list.split(',')
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .map(LocalityKey::parse)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(e: Error) -> RejectReason {
        match e {
            Error::Rejected { reason, .. } => reason,
            other => panic!("not a rejection: {other}"),
        }
    }

    /// Keys are refused when empty, too long, or with whitespace or control characters.
    #[test]
    fn keys_are_checked() {
        assert!(LocalityKey::parse("p-3/zone:eu").is_ok());
        assert!(LocalityKey::parse("").is_err());
        assert!(LocalityKey::parse("a b").is_err());
        assert!(LocalityKey::parse("a\u{7}").is_err());
        assert!(LocalityKey::parse("x".repeat(MAX_KEY_BYTES)).is_ok());
        assert!(LocalityKey::parse("x".repeat(MAX_KEY_BYTES + 1)).is_err());
    }

    /// One key covers every shard; a list gives each piece its own, `None` for none.
    #[test]
    fn keys_by_shard() {
        let all = Locality::from_wire(Some("p1".into()), None, None).unwrap();
        assert_eq!(all.key(0).map(LocalityKey::as_str), Some("p1"));
        assert_eq!(all.key(99).map(LocalityKey::as_str), Some("p1"));
        let each = Locality::from_wire(None, Some(vec![Some("a".into()), None]), Some(2)).unwrap();
        assert_eq!(each.key(0).map(LocalityKey::as_str), Some("a"));
        assert_eq!(each.key(1), None);
        assert_eq!(each.key(2), None);
        assert!(!each.is_anywhere());
        let none = Locality::from_wire(None, Some(vec![None, None]), Some(2)).unwrap();
        assert!(none.is_anywhere());
        assert_eq!(
            Locality::from_wire(None, None, Some(3)).unwrap(),
            Locality::Anywhere
        );
    }

    /// Every misuse of the two fields is a malformed request, with what was wrong.
    #[test]
    fn misuse_is_malformed() {
        let cases = [
            Locality::from_wire(Some("a".into()), Some(vec![]), Some(0)),
            Locality::from_wire(None, Some(vec![Some("a".into())]), None),
            Locality::from_wire(None, Some(vec![Some("a".into())]), Some(2)),
            Locality::from_wire(None, Some(vec![Some(String::new())]), Some(1)),
            Locality::from_wire(Some("a b".into()), None, None),
        ];
        for case in cases {
            assert_eq!(reason(case.unwrap_err()), RejectReason::Malformed);
        }
        let e = Locality::from_wire(None, Some(vec![None, Some(" ".into())]), Some(2));
        assert!(e.unwrap_err().to_string().contains("localities[1]"));
    }

    /// A worker's list is split on commas; blanks are skipped, a bad key is refused.
    #[test]
    fn lists_parse() {
        let keys = parse_list("p1, p2,,p3").unwrap();
        assert_eq!(
            keys.iter().map(LocalityKey::as_str).collect::<Vec<_>>(),
            ["p1", "p2", "p3"]
        );
        assert!(parse_list("").unwrap().is_empty());
        assert!(parse_list("p1,a\u{1}").is_err());
    }
}
