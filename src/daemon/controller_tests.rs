//! The reconcile step against a fake firewall that can be made to drift,
//! fail, or be busy: check -> repair -> metrics -> readiness, the repair
//! budget's deferral, and what a failure leaves in the metrics. No root, no
//! kernel.

use super::*;
use crate::core::drift::DriftKind;
use crate::error::Error;
use std::collections::VecDeque;

/// A firewall whose answers are scripted: each check pops the next answer
/// (default: in sync); a repair fixes the drift unless told to fail.
#[derive(Default)]
struct FakeFirewall {
    checks: Mutex<VecDeque<Result<Vec<Drift>>>>,
    repair_fails: Mutex<Option<Error>>,
    calls: Mutex<Vec<&'static str>>,
    action: Option<Action>,
    /// "In sync" rests on the text alone (`Firewall::proven` false).
    unproven: std::sync::atomic::AtomicBool,
}

impl FakeFirewall {
    fn answering(answers: Vec<Result<Vec<Drift>>>) -> Arc<FakeFirewall> {
        Arc::new(FakeFirewall {
            checks: Mutex::new(answers.into()),
            ..Default::default()
        })
    }

    fn calls(&self) -> Vec<&'static str> {
        self.calls.lock().unwrap().clone()
    }

    fn proven_now(&self) {
        self.unproven.store(false, std::sync::atomic::Ordering::Relaxed);
    }

    fn unproven(&self) {
        self.unproven.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Firewall for FakeFirewall {
    fn check(&self, _thorough: bool) -> Result<Vec<Drift>> {
        self.calls.lock().unwrap().push("check");
        self.checks.lock().unwrap().pop_front().unwrap_or(Ok(Vec::new()))
    }
    fn repair(&self, _thorough: bool) -> Result<()> {
        self.calls.lock().unwrap().push("repair");
        match self.repair_fails.lock().unwrap().take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
    fn counters(&self) -> Option<PacketCounters> {
        Some(PacketCounters {
            blocked: (7, 420),
            audited: (0, 0),
        })
    }
    fn owned(&self) -> bool {
        true
    }
    fn action(&self) -> Action {
        self.action.unwrap_or(Action::Reject)
    }
    fn proven(&self) -> bool {
        !self.unproven.load(std::sync::atomic::Ordering::Relaxed)
    }
}

fn flushed() -> Vec<Drift> {
    vec![Drift {
        object: "table inet apiserver_guard".into(),
        problem: "missing".into(),
        kind: DriftKind::TableMissing,
    }]
}

fn controller() -> (Controller, Arc<Mutex<Metrics>>) {
    let state = Arc::new(Mutex::new(Metrics::new("test")));
    state.lock().unwrap().started = true;
    let actor = Arc::new(Mutex::new(Some("nft (pid 42)".to_string())));
    (Controller::new(state.clone(), actor), state)
}

fn run<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

#[test]
fn in_sync_is_ready_and_changes_nothing() {
    let (ctl, state) = controller();
    let fw = FakeFirewall::answering(vec![Ok(Vec::new())]);
    let (ok, noteworthy) = run(ctl.reconcile(fw.clone(), Trigger::Timer, true));
    assert!(ok && !noteworthy);
    assert_eq!(fw.calls(), ["check"], "no repair when nothing drifted");
    let m = state.lock().unwrap();
    assert!(m.in_sync && m.ready() && m.table_owned);
    assert_eq!(m.reconciles["timer"], 1);
    assert_eq!(
        (m.blocked_packets, m.blocked_bytes),
        (7, 420),
        "a thorough check reads the counters"
    );
    assert!(m.repairs.is_empty());
}

#[test]
fn drift_is_repaired_counted_by_cause_and_ready_again() {
    let (ctl, state) = controller();
    let fw = FakeFirewall::answering(vec![Ok(flushed())]);
    let (ok, noteworthy) = run(ctl.reconcile(fw.clone(), Trigger::Event, false));
    assert!(ok && noteworthy);
    assert_eq!(fw.calls(), ["check", "repair"]);
    let m = state.lock().unwrap();
    assert!(m.in_sync && m.ready());
    assert_eq!(m.repairs["table_missing"], 1);
    assert_eq!(m.reconcile_errors, 0);
    assert_eq!(m.blocked_packets, 0, "an event's check does not read counters");
}

#[test]
fn the_first_apply_runs_even_in_sync_and_later_checks_in_sync_write_nothing() {
    let (ctl, state) = controller();
    let fw = FakeFirewall::answering(vec![Ok(vec![]), Ok(vec![])]);
    assert!(run(ctl.reconcile(fw.clone(), Trigger::Start, true)).0);
    assert_eq!(fw.calls(), vec!["check", "repair"], "the first apply");
    assert!(state.lock().unwrap().repairs.is_empty(), "not counted as a repair");
    assert!(run(ctl.reconcile(fw.clone(), Trigger::Timer, false)).0);
    assert_eq!(
        fw.calls(),
        vec!["check", "repair", "check"],
        "a resync in sync writes nothing"
    );
}

#[test]
fn a_resync_writes_again_while_in_sync_is_not_proven_byte_for_byte() {
    let (ctl, state) = controller();
    let fw = FakeFirewall::answering(vec![Ok(vec![]), Ok(vec![])]);
    fw.unproven();
    assert!(run(ctl.reconcile(fw.clone(), Trigger::Timer, false)).0);
    assert_eq!(fw.calls(), vec!["check", "repair"]);
    assert!(run(ctl.reconcile(fw.clone(), Trigger::Event, false)).0);
    assert_eq!(fw.calls(), vec!["check", "repair", "check"], "only the resync writes");
    assert!(state.lock().unwrap().repairs.is_empty(), "not counted as a repair");
    // Never "ready" on text alone: a hidden match would read as in place.
    {
        let m = state.lock().unwrap();
        assert!(
            !m.ready() && m.not_ready_reason.contains("could not be verified"),
            "{}",
            m.not_ready_reason
        );
    }
    // Proven at last: ready.
    fw.proven_now();
    assert!(run(ctl.reconcile(fw.clone(), Trigger::Event, false)).0);
    assert!(state.lock().unwrap().ready());
}

#[test]
fn a_first_apply_is_not_a_repair() {
    let (ctl, state) = controller();
    let fw = FakeFirewall::answering(vec![Ok(flushed())]);
    assert!(run(ctl.reconcile(fw, Trigger::Start, true)).0);
    assert!(
        state.lock().unwrap().repairs.is_empty(),
        "installing at start is not drift"
    );
}

#[test]
fn a_failed_repair_is_not_ready_says_why_and_is_counted() {
    let (ctl, state) = controller();
    let fw = FakeFirewall::answering(vec![Ok(flushed())]);
    *fw.repair_fails.lock().unwrap() = Some(Error::runtime("the kernel said no"));
    let (ok, noteworthy) = run(ctl.reconcile(fw.clone(), Trigger::Event, false));
    assert!(!ok && noteworthy);
    {
        let m = state.lock().unwrap();
        assert!(!m.in_sync && !m.ready());
        assert_eq!(m.reconcile_errors, 1);
        assert!(
            m.not_ready_reason.contains("missing") && m.not_ready_reason.contains("the kernel said no"),
            "{}",
            m.not_ready_reason
        );
        assert!(m.repairs.is_empty());
    }
    // The next check finds it in place: ready again, reason cleared.
    assert!(run(ctl.reconcile(fw, Trigger::Timer, true)).0);
    let m = state.lock().unwrap();
    assert!(m.ready() && m.not_ready_reason.is_empty());
}

#[test]
fn a_busy_firewall_is_an_error_that_a_later_check_clears() {
    let (ctl, state) = controller();
    let busy = Error::Busy("another process holds the xtables lock".into());
    let fw = FakeFirewall::answering(vec![Err(busy), Ok(Vec::new())]);
    assert!(!run(ctl.reconcile(fw.clone(), Trigger::Timer, true)).0);
    {
        let m = state.lock().unwrap();
        assert!(
            !m.ready() && m.not_ready_reason.contains("xtables lock"),
            "{}",
            m.not_ready_reason
        );
        assert_eq!(m.reconcile_errors, 1);
    }
    assert_eq!(
        fw.calls(),
        ["check"],
        "no repair is tried when the check could not read"
    );
    assert!(run(ctl.reconcile(fw, Trigger::Timer, true)).0);
    assert!(state.lock().unwrap().ready());
}

#[test]
fn past_the_burst_event_repairs_wait_for_a_token_and_are_not_dropped() {
    let (ctl, state) = controller();
    let burst = DEFAULT_BUDGET.burst as usize;
    let fw = FakeFirewall::answering(vec![Ok(flushed()); burst + 1]);
    for _ in 0..burst {
        assert!(run(ctl.reconcile(fw.clone(), Trigger::Event, false)).0);
    }
    // One more at once: the budget defers it (no repair now, not in sync, not an error).
    let (ok, _) = run(ctl.reconcile(fw.clone(), Trigger::Event, false));
    assert!(!ok);
    let repairs = fw.calls().iter().filter(|c| **c == "repair").count();
    assert_eq!(repairs, burst, "{:?}", fw.calls());
    {
        let m = state.lock().unwrap();
        assert!(!m.in_sync && m.reconcile_errors == 0);
        assert_eq!(m.repairs["table_missing"] as usize, burst);
    }
    assert!(ctl.budget().budget.due().is_some(), "the deferred repair is scheduled");
    // A start (ours, not budgeted) still applies at once.
    let fw2 = FakeFirewall::answering(vec![Ok(flushed())]);
    assert!(run(ctl.reconcile(fw2.clone(), Trigger::Reload, true)).0);
    assert_eq!(fw2.calls(), ["check", "repair"]);
}

#[test]
fn audit_mode_is_reported_from_the_firewall() {
    let (ctl, state) = controller();
    let fw = Arc::new(FakeFirewall {
        action: Some(Action::Audit),
        ..Default::default()
    });
    assert!(run(ctl.reconcile(fw, Trigger::Timer, true)).0);
    let m = state.lock().unwrap();
    assert_eq!(m.action, Action::Audit);
    assert!(m.ready_text().contains("audit"));
}
