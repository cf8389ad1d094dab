//! Is a result's output right? Recompute it here from the request's payload.
//!
//! A `completed` or `partial` result says how many shards its request was cut into and which
//! failed. Splits are deterministic, so cutting the payload the same way, processing every
//! shard that did not fail and merging gives exactly the output the deployment must have
//! sent. `synthetic` work is recomputed with a zero unit cost and no noise: its output (units
//! and a digest of every unit number) does not depend on the cost, only on which units ran.

use shardline::Registry;
use shardline::kind::Stop;
use shardline::kind::synthetic::Work;
use shardline::message::{FinalResult, Status};

/// `Ok` when the result's output is what the payload gives (or the status carries none),
/// else why not.
pub(crate) fn check(kind: &str, payload: &rmpv::Value, r: &FinalResult) -> Result<(), String> {
    if !matches!(r.status, Status::Completed | Status::Partial) {
        return Ok(());
    }
    if r.kind != kind {
        return Err(format!("result kind {:?}, sent {kind:?}", r.kind));
    }
    if r.status == Status::Completed && !r.failed_shards.is_empty() {
        return Err(format!(
            "completed with failed shards {:?}",
            r.failed_shards
        ));
    }
    if r.status == Status::Partial && r.failed_shards.is_empty() {
        return Err("partial without failed shards".into());
    }
    let Some(got) = &r.output else {
        return Err(format!("{} without output", r.status.as_str()));
    };
    let want = expected(kind, payload, r.shards, &r.failed_shards)?;
    if *got == want {
        Ok(())
    } else {
        Err(format!(
            "output differs from the local computation ({} shards, failed {:?}): got {}, want {}",
            r.shards,
            r.failed_shards,
            brief(got),
            brief(&want)
        ))
    }
}

/// The output of `payload` cut into `shards` shards, without the `failed` ones.
fn expected(
    kind: &str,
    payload: &rmpv::Value,
    shards: u32,
    failed: &[u32],
) -> Result<rmpv::Value, String> {
    let k = Registry::builtin()
        .get(kind)
        .ok_or_else(|| format!("no built-in kind {kind:?}"))?;
    let payload = if kind == "synthetic" {
        let mut w: Work = rmpv::ext::from_value(payload.clone())
            .map_err(|e| format!("re-reading the synthetic payload: {e}"))?;
        w.unit_cost_us = 0;
        w.noise_seed = None;
        shardline::message::to_named_value(&w).map_err(|e| e.to_string())?
    } else {
        payload.clone()
    };
    let n = usize::try_from(shards).map_err(|e| e.to_string())?;
    let cut = k
        .split(payload, &mut |_, _| n)
        .map_err(|e| format!("re-splitting into {shards} shards: {e}"))?;
    if cut.len() != n {
        return Err(format!(
            "the payload cannot be cut into {shards} shards (got {})",
            cut.len()
        ));
    }
    let stop = Stop::new();
    let mut parts = Vec::with_capacity(cut.len());
    for (i, shard) in cut.iter().enumerate() {
        if failed.iter().any(|f| usize::try_from(*f).ok() == Some(i)) {
            continue;
        }
        parts.push(
            k.process(shard, &stop)
                .map_err(|e| format!("processing shard {i} locally: {e}"))?,
        );
    }
    k.merge(parts).map_err(|e| format!("merging locally: {e}"))
}

/// A short rendering of a value for reports.
fn brief(v: &rmpv::Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 120 {
        format!("{}…", s.chars().take(120).collect::<String>())
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn result(kind: &str, status: Status, shards: u32, output: rmpv::Value) -> FinalResult {
        FinalResult {
            request_id: Uuid::new_v4(),
            kind: kind.into(),
            status,
            shards,
            output: Some(output),
            error: None,
            failed_shards: Vec::new(),
        }
    }

    /// A right output passes whatever the shard count; a unit lost or repeated does not.
    #[test]
    fn synthetic_outputs_are_checked() {
        let work = Work {
            units: 10,
            unit_cost_us: 1_000,
            spin: false,
            noise_seed: Some(3),
            partition: None,
        };
        let payload = shardline::message::to_named_value(&work).expect("value");
        let right = expected("synthetic", &payload, 1, &[]).expect("expected");
        for n in [1, 3, 10] {
            let r = result("synthetic", Status::Completed, n, right.clone());
            assert_eq!(check("synthetic", &payload, &r), Ok(()));
        }
        let fewer = expected("synthetic", &payload, 3, &[1]).expect("expected");
        let r = result("synthetic", Status::Completed, 3, fewer.clone());
        assert!(check("synthetic", &payload, &r).is_err());
        let mut partial = result("synthetic", Status::Partial, 3, fewer);
        partial.failed_shards = vec![1];
        assert_eq!(check("synthetic", &payload, &partial), Ok(()));
    }

    /// Sort outputs are compared with the sorted input.
    #[test]
    fn sort_outputs_are_checked() {
        let payload = rmpv::Value::Array(vec![3.into(), (-1).into(), 2.into()]);
        let sorted = rmpv::Value::Array(vec![(-1).into(), 2.into(), 3.into()]);
        let r = result("sort", Status::Completed, 2, sorted);
        assert_eq!(check("sort", &payload, &r), Ok(()));
        let r = result("sort", Status::Completed, 2, payload.clone());
        assert!(check("sort", &payload, &r).is_err());
    }
}
