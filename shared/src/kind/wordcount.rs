//! `wordcount`: UTF-8 text → word frequencies.
//!
//! A word is a run of non-whitespace, lower-cased, with leading and trailing punctuation
//! trimmed; tokens that are all punctuation are skipped. Shards are cut on whitespace, never
//! inside a word, so the count never depends on the number of shards.

use std::collections::BTreeMap;

use super::{Kind, KindError, Stop};

/// Counts words in text.
#[derive(Debug, Clone, Copy, Default)]
pub struct WordCount;

/// Word → count, sorted by word.
pub type Counts = BTreeMap<String, u64>;

impl Kind for WordCount {
    type Input = String;
    type Shard = String;
    type Partial = Counts;
    type Output = Counts;

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

    fn split(&self, input: String, n: usize) -> Vec<String> {
        let cuts = cut_points(&input, n);
        cuts.windows(2)
            .map(|w| input[w[0]..w[1]].to_owned())
            .collect()
    }

    fn process(&self, shard: String) -> Result<Counts, KindError> {
        self.process_with(shard, &Stop::new())
    }

    fn process_with(&self, shard: String, stop: &Stop) -> Result<Counts, KindError> {
        let mut counts = Counts::new();
        for (i, token) in shard.split_whitespace().enumerate() {
            if i % 8192 == 0 {
                stop.check()?;
            }
            let word = token.trim_matches(|c: char| !c.is_alphanumeric());
            if !word.is_empty() {
                *counts.entry(word.to_lowercase()).or_default() += 1;
            }
        }
        Ok(counts)
    }

    fn merge(&self, parts: Vec<Counts>) -> Result<Counts, KindError> {
        let mut parts = parts.into_iter();
        let mut total = parts.next().unwrap_or_default();
        for part in parts {
            for (word, n) in part {
                *total.entry(word).or_default() += n;
            }
        }
        Ok(total)
    }
}

/// `n + 1` byte offsets from 0 to `text.len()`: each inner cut is moved forward from the ideal
/// even position to the next whitespace character, so no word is split.
fn cut_points(text: &str, n: usize) -> Vec<usize> {
    let len = text.len();
    let mut cuts = Vec::with_capacity(n + 1);
    cuts.push(0);
    for i in 1..n {
        let mut ideal = (len * i / n).max(*cuts.last().unwrap_or(&0));
        while !text.is_char_boundary(ideal) {
            ideal += 1;
        }
        let cut = text[ideal..]
            .char_indices()
            .find(|(_, c)| c.is_whitespace())
            .map_or(len, |(off, _)| ideal + off);
        cuts.push(cut);
    }
    cuts.push(len);
    cuts
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kind::testing::run_sharded;
    use quickcheck::quickcheck;

    fn direct(text: &str) -> rmpv::Value {
        let counts = WordCount.process(text.to_owned()).expect("process");
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

    /// Case and surrounding punctuation do not make separate words.
    #[test]
    fn normalises_case_and_punctuation() {
        let counts = WordCount
            .process("To be, or not to BE! -- ...".into())
            .expect("ok");
        assert_eq!(counts.get("to"), Some(&2));
        assert_eq!(counts.get("be"), Some(&2));
        assert_eq!(counts.len(), 4);
    }
}
