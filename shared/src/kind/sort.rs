//! `sort`: a list of integers → the sorted list. Shards sort their slice; the merge is a k-way
//! merge over the sorted runs (a binary heap of run heads), O(N log k), never a re-sort.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use super::{Kind, KindError, Splitter, even_chunks};

/// Sorts 64-bit integers.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sort;

impl Kind for Sort {
    type Input = Vec<i64>;
    type Shard = Vec<i64>;
    type Partial = Vec<i64>;
    type Output = Vec<i64>;

    /// Pure: a shard's result depends on the shard alone.
    fn hedge_safe(&self) -> bool {
        true
    }
    fn name(&self) -> &'static str {
        "sort"
    }

    fn size(&self, input: &Vec<i64>) -> u64 {
        input.len() as u64
    }

    fn shard_size_hint(&self) -> u64 {
        64 * 1024
    }

    fn splitter(&self) -> Splitter {
        Splitter::List
    }

    fn split(&self, input: Vec<i64>, n: usize) -> Vec<Vec<i64>> {
        even_chunks(&input, n)
            .into_iter()
            .map(<[i64]>::to_vec)
            .collect()
    }

    fn process(&self, mut shard: Vec<i64>) -> Result<Vec<i64>, KindError> {
        shard.sort_unstable();
        Ok(shard)
    }

    fn merge(&self, runs: Vec<Vec<i64>>) -> Result<Vec<i64>, KindError> {
        if let Some(unsorted) = runs.iter().position(|r| !r.is_sorted()) {
            return Err(KindError::Failed(format!(
                "sort: partial {unsorted} is not sorted"
            )));
        }
        Ok(kway_merge(runs))
    }
}

/// Merge sorted runs with a heap of `(value, run, position)`; ties keep run order.
fn kway_merge(runs: Vec<Vec<i64>>) -> Vec<i64> {
    let total = runs.iter().map(Vec::len).sum();
    let mut out = Vec::with_capacity(total);
    let mut heap: BinaryHeap<Reverse<(i64, usize, usize)>> = runs
        .iter()
        .enumerate()
        .filter_map(|(r, run)| run.first().map(|&v| Reverse((v, r, 0))))
        .collect();
    while let Some(Reverse((v, r, i))) = heap.pop() {
        out.push(v);
        if let Some(&next) = runs[r].get(i + 1) {
            heap.push(Reverse((next, r, i + 1)));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kind::testing::run_sharded;
    use quickcheck::quickcheck;

    quickcheck! {
        /// Any number of shards gives exactly the fully sorted input.
        fn sharded_equals_sorted(items: Vec<i64>, n: u8) -> bool {
            if items.is_empty() { return true; }
            let n = usize::from(n).clamp(1, items.len());
            let mut want = items.clone();
            want.sort();
            run_sharded(Sort, crate::message::to_named_value(&items).expect("value"), n)
                == crate::message::to_named_value(&want).expect("value")
        }
    }

    /// The merge refuses unsorted runs instead of returning a wrong answer.
    #[test]
    fn merge_rejects_unsorted_runs() {
        assert!(Sort.merge(vec![vec![1, 3], vec![5, 2]]).is_err());
        assert_eq!(
            Sort.merge(vec![vec![1, 4], vec![2, 3], vec![]])
                .expect("ok"),
            vec![1, 2, 3, 4]
        );
    }
}
