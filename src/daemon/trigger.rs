//! What woke a reconcile: its label (the `trigger` of the log lines and of
//! `apiserver_guard_reconciles_total`) and what the daemon does differently
//! for it.

/// Why the daemon checks (and repairs) now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// The first apply after start.
    Start,
    /// An nf_tables change event.
    Event,
    /// A repair the budget deferred, now due.
    Deferred,
    /// The periodic resync.
    Timer,
    /// The node's addresses changed (an apiserver became local or stopped being).
    Addresses,
    /// SIGHUP with the policy unchanged (a firewall reload sends it): check now.
    Signal,
    /// SIGHUP with a changed policy: apply it.
    Reload,
    /// Kubernetes discovery changed the policy.
    Discovery,
}

impl Trigger {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Start => "start",
            Trigger::Event => "event",
            Trigger::Deferred => "deferred",
            Trigger::Timer => "timer",
            Trigger::Addresses => "addresses",
            Trigger::Signal => "signal",
            Trigger::Reload => "reload",
            Trigger::Discovery => "discovery",
        }
    }

    /// Whether the repair budget limits it: the triggers another process
    /// can cause at any rate. A start, reload, discovery or address change
    /// is ours, and a signal comes from an operator.
    pub fn budgeted(self) -> bool {
        matches!(self, Trigger::Event | Trigger::Timer | Trigger::Deferred)
    }

    /// Whether it applies a new or first policy (logged as "block installed"
    /// or "already in place"), rather than checking a standing one (a change
    /// found then is drift, logged as a repair).
    pub fn applies_policy(self) -> bool {
        matches!(
            self,
            Trigger::Start | Trigger::Reload | Trigger::Discovery | Trigger::Addresses
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [Trigger; 8] = [
        Trigger::Start,
        Trigger::Event,
        Trigger::Deferred,
        Trigger::Timer,
        Trigger::Addresses,
        Trigger::Signal,
        Trigger::Reload,
        Trigger::Discovery,
    ];

    #[test]
    fn labels_are_distinct_and_each_trigger_is_budgeted_or_applies_or_neither() {
        let labels: std::collections::BTreeSet<_> = ALL.iter().map(|t| t.as_str()).collect();
        assert_eq!(labels.len(), ALL.len());
        let budgeted: Vec<_> = ALL.iter().filter(|t| t.budgeted()).map(|t| t.as_str()).collect();
        assert_eq!(budgeted, ["event", "deferred", "timer"]);
        let applies: Vec<_> = ALL.iter().filter(|t| t.applies_policy()).map(|t| t.as_str()).collect();
        assert_eq!(applies, ["start", "addresses", "reload", "discovery"]);
        assert!(ALL.iter().all(|t| !(t.budgeted() && t.applies_policy())));
    }
}
