//! How many shards to cut.
//!
//! For now: about `size / (shard_size_hint × scale)` shards, at least one per live engine so no
//! engine idles, never more than the request's `max_shards`, the manager's cap, or `size`.
//! (The Load Prediction Engine will make this adaptive.)

/// Inputs of the shard-count decision.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    /// Live engines (0 is treated as 1: shards then wait in the shared queue).
    pub engines: usize,
    /// The request's own cap, if any.
    pub request_max: Option<u32>,
    /// The manager's cap.
    pub manager_max: u32,
    /// Multiplier of the kind's preferred shard size.
    pub scale: f64,
}

impl Plan {
    /// Number of shards for a request of `size` units whose kind prefers `hint` units a shard.
    pub fn shards(&self, size: u64, hint: u64) -> usize {
        let per_shard = (hint.max(1) as f64 * self.scale).max(1.0);
        let by_size = (size as f64 / per_shard).ceil() as u64;
        let want = by_size.max(self.engines.max(1) as u64);
        let cap = u64::from(self.request_max.unwrap_or(u32::MAX).min(self.manager_max)).min(size);
        usize::try_from(want.clamp(1, cap.max(1))).unwrap_or(usize::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(engines: usize, request_max: Option<u32>) -> Plan {
        Plan {
            engines,
            request_max,
            manager_max: 1000,
            scale: 1.0,
        }
    }

    /// Large inputs are cut by size; small ones still use every engine.
    #[test]
    fn follows_size_with_one_shard_per_engine_at_least() {
        assert_eq!(plan(3, None).shards(1000, 100), 10);
        assert_eq!(plan(3, None).shards(50, 100), 3);
        assert_eq!(plan(0, None).shards(50, 100), 1);
    }

    /// Caps apply in order: the request's, the manager's, and the size itself.
    #[test]
    fn respects_every_cap() {
        assert_eq!(plan(3, Some(2)).shards(1000, 1), 2);
        assert_eq!(plan(3, None).shards(1_000_000, 1), 1000);
        assert_eq!(plan(8, None).shards(5, 1), 5);
        assert_eq!(plan(3, Some(1)).shards(1, 1), 1);
    }
}
