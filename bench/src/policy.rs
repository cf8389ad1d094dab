//! The routing suite's policy arms: every manager routing policy, plus the locality and
//! late-binding ablations and the default policy with hedged shards.

use clap::builder::PossibleValue;
use shardline_manager::RouterKind;

/// One arm of the routing suite: what the manager is configured with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// A routing policy as the manager runs it by default (locality routing on).
    Router(RouterKind),
    /// `predictive-no-forecast` with `locality_routing = false`: the default policy blind to
    /// locality keys (the ablation of W9).
    NoLocality,
    /// `predictive-no-forecast` with `--hedge true`: late shards get a second copy (for W7,
    /// the stragglers).
    Hedged,
    /// `predictive-no-forecast` with `--late-binding false`: alike engines take shards up to
    /// the in-flight cap, not only into free slots (the ablation of late binding).
    EarlyBinding,
}

impl Policy {
    /// Every arm: the manager's policies in their report order, then the ablations and
    /// hedging.
    pub const ALL: [Policy; RouterKind::ALL.len() + 3] = {
        let mut all = [Policy::NoLocality; RouterKind::ALL.len() + 3];
        all[RouterKind::ALL.len() + 1] = Policy::Hedged;
        all[RouterKind::ALL.len() + 2] = Policy::EarlyBinding;
        let mut i = 0;
        while i < RouterKind::ALL.len() {
            all[i] = Policy::Router(RouterKind::ALL[i]);
            i += 1;
        }
        all
    };

    /// The manager's routing policy.
    pub fn router(self) -> RouterKind {
        match self {
            Policy::Router(kind) => kind,
            Policy::NoLocality | Policy::Hedged | Policy::EarlyBinding => {
                RouterKind::PredictiveNoForecast
            }
        }
    }

    /// The manager's `locality_routing`.
    pub fn locality_routing(self) -> bool {
        match self {
            Policy::NoLocality => false,
            _ => shardline_manager::Config::DEFAULT_LOCALITY_ROUTING,
        }
    }

    /// The manager's `hedge`.
    pub fn hedge(self) -> bool {
        match self {
            Policy::Hedged => true,
            _ => shardline_manager::Config::DEFAULT_HEDGE,
        }
    }

    /// The manager's `late_binding`.
    pub fn late_binding(self) -> bool {
        match self {
            Policy::EarlyBinding => false,
            _ => shardline_manager::Config::DEFAULT_LATE_BINDING,
        }
    }

    /// Name in tables and on the command line (`--policies`).
    pub fn as_str(self) -> &'static str {
        match self {
            Policy::Router(kind) => kind.as_str(),
            Policy::NoLocality => "predictive-no-locality",
            Policy::Hedged => "predictive-hedged",
            Policy::EarlyBinding => "predictive-early-binding",
        }
    }
}

impl From<RouterKind> for Policy {
    fn from(kind: RouterKind) -> Self {
        Policy::Router(kind)
    }
}

impl clap::ValueEnum for Policy {
    fn value_variants<'a>() -> &'a [Self] {
        &Policy::ALL
    }

    fn to_possible_value(&self) -> Option<PossibleValue> {
        match self {
            // The manager's own names and help lines.
            Policy::Router(kind) => kind.to_possible_value(),
            Policy::NoLocality => Some(
                PossibleValue::new(self.as_str())
                    .help("predictive-no-forecast with locality routing off (the ablation of W9)"),
            ),
            Policy::Hedged => Some(
                PossibleValue::new(self.as_str())
                    .help("predictive-no-forecast with hedged shards (--hedge true)"),
            ),
            Policy::EarlyBinding => Some(PossibleValue::new(self.as_str()).help(
                "predictive-no-forecast with late binding off (--late-binding false), its ablation",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::ValueEnum;

    use super::*;

    /// Every arm parses from its table name, and the names are distinct.
    #[test]
    fn names_round_trip() {
        for p in Policy::ALL {
            assert_eq!(Policy::from_str(p.as_str(), false), Ok(p));
        }
        let mut names: Vec<&str> = Policy::ALL.iter().map(|p| p.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Policy::ALL.len());
        assert!(!Policy::NoLocality.locality_routing());
        assert!(Policy::Hedged.hedge() && !Policy::NoLocality.hedge());
        assert!(!Policy::EarlyBinding.late_binding() && Policy::Hedged.late_binding());
        assert_eq!(
            Policy::NoLocality.router(),
            RouterKind::PredictiveNoForecast
        );
    }
}
