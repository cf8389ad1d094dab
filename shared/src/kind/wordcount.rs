//! `wordcount`: UTF-8 text → word frequencies.
//!
//! A word is a run of non-whitespace, lower-cased, with leading and trailing punctuation
//! trimmed; tokens that are all punctuation are skipped. Shards are cut on whitespace, never
//! inside a word, so the count never depends on the number of shards.
//!
//! Shards count into a hash map (a partial is an unordered MessagePack map), and the merge
//! adds the partials up in a hash map, moving each word's string rather than copying it; only
//! the output is sorted. A word already in the map costs no allocation.

use std::collections::{BTreeMap, HashMap};

use super::splitter::{Boundary, text_cuts};
use super::{Kind, KindError, Splitter, Stop};

/// Counts words in text.
#[derive(Debug, Clone, Copy, Default)]
pub struct WordCount;

/// Word → count, sorted by word: the output.
pub type Counts = BTreeMap<String, u64>;

/// Word → count while counting or merging.
type Map = HashMap<String, u64, foldhash::fast::RandomState>;

/// One shard's partial: word → count pairs, unordered, each word once. On the wire it is a
/// MessagePack map; in memory a list, so that decoding builds no hash table of its own.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tally(pub Vec<(String, u64)>);

impl Tally {
    /// The count of `word`, if it occurs.
    pub fn get(&self, word: &str) -> Option<&u64> {
        self.0.iter().find(|(w, _)| w == word).map(|(_, n)| n)
    }
}

impl serde::Serialize for Tally {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter().map(|(w, n)| (w, n)))
    }
}

impl<'de> serde::Deserialize<'de> for Tally {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Pairs;
        impl<'de> serde::de::Visitor<'de> for Pairs {
            type Value = Tally;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a map of words to counts")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut m: A) -> Result<Tally, A::Error> {
                let mut pairs = Vec::with_capacity(m.size_hint().unwrap_or(0).min(1 << 16));
                while let Some(pair) = m.next_entry()? {
                    pairs.push(pair);
                }
                Ok(Tally(pairs))
            }
        }
        d.deserialize_map(Pairs)
    }
}

impl Kind for WordCount {
    type Input = String;
    type Shard = String;
    type Partial = Tally;
    type Output = Counts;

    /// Pure: a shard's result depends on the shard alone.
    fn hedge_safe(&self) -> bool {
        true
    }
    fn name(&self) -> &'static str {
        "wordcount"
    }

    fn size(&self, input: &String) -> u64 {
        if input.trim().is_empty() {
            0
        } else {
            input.len() as u64
        }
    }

    fn shard_size_hint(&self) -> u64 {
        64 * 1024
    }

    fn splitter(&self) -> Splitter {
        Splitter::Words
    }

    fn split(&self, input: String, n: usize) -> Vec<String> {
        let cuts = text_cuts(&input, n, Boundary::Whitespace);
        cuts.windows(2)
            .map(|w| input[w[0]..w[1]].to_owned())
            .collect()
    }

    fn process(&self, shard: String) -> Result<Tally, KindError> {
        self.process_with(shard, &Stop::new())
    }

    fn process_with(&self, shard: String, stop: &Stop) -> Result<Tally, KindError> {
        // About one distinct word per 16 bytes of text saves most regrowth.
        let mut counts = Map::with_capacity_and_hasher(shard.len() / 16, Default::default());
        let mut lowered;
        for (i, token) in shard.split_whitespace().enumerate() {
            if i % 8192 == 0 {
                stop.check()?;
            }
            let word = if token.is_ascii() {
                token.trim_matches(|c: char| !c.is_ascii_alphanumeric())
            } else {
                token.trim_matches(|c: char| !c.is_alphanumeric())
            };
            if word.is_empty() {
                continue;
            }
            let lower = if word.is_ascii() {
                !word.bytes().any(|b| b.is_ascii_uppercase())
            } else {
                !word.chars().any(changes_case)
            };
            let word = if !lower {
                lowered = word.to_lowercase();
                lowered.as_str()
            } else {
                word
            };
            match counts.get_mut(word) {
                Some(n) => *n += 1,
                None => {
                    counts.insert(word.to_owned(), 1);
                }
            }
        }
        Ok(Tally(counts.into_iter().collect()))
    }

    fn merge(&self, parts: Vec<Tally>) -> Result<Counts, KindError> {
        let first = parts.first().map_or(0, |p| p.0.len());
        let mut total = Map::with_capacity_and_hasher(first * 2, Default::default());
        for part in parts {
            for (word, n) in part.0 {
                match total.get_mut(&word) {
                    Some(c) => *c += n,
                    None => {
                        total.insert(word, n);
                    }
                }
            }
        }
        Ok(total.into_iter().collect())
    }
}

/// Whether lower-casing changes this character (upper- and title-case letters, and any other
/// character with a lower-case mapping), so that words without one are counted uncopied.
fn changes_case(c: char) -> bool {
    let mut lower = c.to_lowercase();
    lower.next() != Some(c) || lower.next().is_some()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kind::testing::run_sharded;
    use quickcheck::quickcheck;

    fn direct(text: &str) -> rmpv::Value {
        let part = WordCount.process(text.to_owned()).expect("process");
        let counts = WordCount.merge(vec![part]).expect("merge");
        crate::message::to_named_value(&counts).expect("value")
    }

    quickcheck! {
        /// Any number of shards gives the same counts as counting the whole text at once.
        fn sharded_equals_unsharded(words: Vec<String>, seps: Vec<u8>, n: u8) -> bool {
            let mut text = String::new();
            for (i, w) in words.iter().enumerate() {
                text.push_str(w);
                text.push(match seps.get(i).copied().unwrap_or(0) % 4 { 0 => ' ', 1 => '\n', 2 => '\t', _ => '\u{2003}' });
            }
            if WordCount.size(&text) == 0 { return true; }
            let n = usize::from(n).clamp(1, text.len());
            run_sharded(WordCount, text.clone().into(), n) == direct(&text)
        }
    }

    /// Cuts never fall inside a word, even with multi-byte characters, and lose nothing.
    #[test]
    fn never_cuts_inside_a_word() {
        let text = "héllo wörld ünïcode   spaces\tand\nlines ok";
        for n in 1..=text.len() {
            let shards = WordCount.split(text.to_owned(), n);
            assert_eq!(shards.len(), n);
            assert_eq!(shards.concat(), text);
            let nonempty: Vec<&String> = shards.iter().filter(|s| !s.is_empty()).collect();
            for pair in nonempty.windows(2) {
                let left_ends_in_word = !pair[0].ends_with(char::is_whitespace);
                let right_starts_in_word = !pair[1].starts_with(char::is_whitespace);
                assert!(!(left_ends_in_word && right_starts_in_word), "{pair:?}");
            }
        }
        let shards = WordCount.split("aaaa bbbb".into(), 2);
        assert_eq!(shards, vec!["aaaa".to_owned(), " bbbb".to_owned()]);
    }

    /// Title-case letters, which are not upper-case, are lower-cased too.
    #[test]
    fn title_case_letters_are_lowered() {
        let counts = WordCount.process("ǅemal ǆemal".into()).expect("ok");
        assert_eq!(counts.get("ǆemal"), Some(&2));
    }

    /// Case and surrounding punctuation do not make separate words.
    #[test]
    fn normalises_case_and_punctuation() {
        let counts = WordCount
            .process("To be, or not to BE! -- ...".into())
            .expect("ok");
        assert_eq!(counts.get("to"), Some(&2));
        assert_eq!(counts.get("be"), Some(&2));
        assert_eq!(counts.0.len(), 4);
    }
}
