//! What a worker tells managers about each kind it serves, and which kind names are allowed.

use serde::{Deserialize, Serialize};

use super::{DynKind, Splitter};

/// The longest kind name.
const MAX_NAME: usize = 64;

/// Check a kind name: 1 to [`MAX_NAME`] characters of `a-z`, `0-9`, `_`, `-` and `.`, starting
/// with a letter or digit. Kind names become queue names and Redis keys, so nothing else is
/// allowed.
///
/// # Errors
/// Why the name is refused.
pub fn check_name(name: &str) -> Result<(), String> {
    let ok_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || "_-.".contains(c);
    if name.is_empty() || name.len() > MAX_NAME {
        return Err(format!("a kind name has 1 to {MAX_NAME} characters"));
    }
    if !name.chars().all(ok_char) || !name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Err(format!(
            "kind name {name:?} must be lowercase letters, digits, '_', '-' or '.', starting with a letter or digit"
        ));
    }
    Ok(())
}

/// A kind as a worker advertises it (JSON in the namespace's kinds hash, under the kind's
/// name), refreshed with every heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Advert {
    /// How a manager cuts its input.
    pub splitter: Splitter,
    /// Preferred work per shard, in the splitter's unit.
    pub shard_size: u64,
    /// Tries before a shard counts as poison.
    pub max_attempts: u32,
    /// Whether a shard's time grows with its size.
    pub cost_follows_size: bool,
    /// Whether a late shard may be sent a second time ([`crate::kind::Kind::hedge_safe`]);
    /// false in adverts from workers that predate it.
    #[serde(default)]
    pub hedge: bool,
    /// When a live worker last advertised it (epoch ms).
    pub seen: u64,
}

impl Advert {
    /// The advert of `kind`, seen at `now` (epoch ms).
    pub fn of(kind: &dyn DynKind, now: u64) -> Self {
        Advert {
            splitter: kind.splitter(),
            shard_size: kind.shard_size_hint(),
            max_attempts: kind.max_attempts(),
            cost_follows_size: kind.cost_follows_size(),
            hedge: kind.hedge_safe(),
            seen: now,
        }
    }

    /// Whether two adverts describe the kind the same way (the time seen aside).
    pub fn same_kind(&self, other: &Advert) -> bool {
        Advert {
            seen: 0,
            ..self.clone()
        } == Advert {
            seen: 0,
            ..other.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kind::Registry;

    /// Names that could not be a queue name or a Redis key part are refused.
    #[test]
    fn checks_kind_names() {
        for ok in ["wordcount", "csv-sum", "image.resize", "v2_grep", "9lives"] {
            assert_eq!(check_name(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "Word",
            "a b",
            "a:b",
            "a/b",
            "-x",
            ".x",
            "é",
            &"x".repeat(65),
        ] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }

    /// Every built-in kind has a valid name, and its advert round-trips through JSON.
    #[test]
    fn builtin_adverts_round_trip() {
        let registry = Registry::builtin();
        for name in registry.names() {
            assert_eq!(check_name(name), Ok(()));
            let kind = registry.get(name).expect("kind");
            let ad = Advert::of(kind.as_ref(), 7);
            let json = serde_json::to_string(&ad).expect("json");
            assert_eq!(serde_json::from_str::<Advert>(&json).expect("back"), ad);
        }
        let wc = Advert::of(registry.get("wordcount").expect("wc").as_ref(), 1);
        assert_eq!(wc.splitter, Splitter::Words);
        assert!(wc.same_kind(&Advert {
            seen: 9,
            ..wc.clone()
        }));
        assert!(wc.hedge, "word count is pure");
    }

    /// An advert from a worker that predates hedging reads as not hedge-safe.
    #[test]
    fn adverts_without_hedge_are_not_hedged() {
        let old = r#"{"splitter":"lines","shard_size":10,"max_attempts":3,"cost_follows_size":true,"seen":1}"#;
        let ad: Advert = serde_json::from_str(old).expect("old advert");
        assert!(!ad.hedge);
    }
}
