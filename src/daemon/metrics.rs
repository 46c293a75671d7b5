//! The daemon's state as operators see it: what `/metrics` (Prometheus text
//! format), `/readyz` and `/healthz` report. Plain data updated by the
//! controller; rendering is pure.

use super::attempts::AttemptLog;
use super::discovery_status::DiscoveryStatus;
use super::repair_budget::DEFAULT_BUDGET;
use crate::core::policy::Action;
use crate::verify::report::Report;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::time::{Duration, Instant};

/// Upper bounds (seconds) of the reconcile duration histogram.
pub const BUCKETS: [f64; 12] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];

#[derive(Debug, Clone)]
pub struct Metrics {
    pub version: &'static str,
    pub backend: String,
    /// The first apply succeeded.
    pub started: bool,
    /// The last check found our objects as desired.
    pub in_sync: bool,
    /// The last read found our table owned by the daemon's own socket.
    pub table_owned: bool,
    /// Rules of others naming our hashlimit tables, as the last look found
    /// them (iptables backends with log rules; `Backend::shared_state_warnings`).
    pub foreign_meter_rules: u64,
    /// The node honours IPv4 source routes (`node_facts::accepts_source_routes`;
    /// None: not read yet, or unreadable).
    pub accepts_source_routes: Option<bool>,
    /// Why not ready, for `/readyz`.
    pub not_ready_reason: String,
    pub repairs: BTreeMap<String, u64>,
    /// Repairs the repair budget had to defer (another process undoing the block fast).
    pub repair_conflicts: u64,
    /// While a repair conflict lasts: the last process that undid the block.
    pub repair_conflict: Option<String>,
    pub reconciles: BTreeMap<String, u64>,
    pub reconcile_errors: u64,
    /// Cumulative histogram counts, one per bucket, plus count and sum.
    pub duration_buckets: [u64; BUCKETS.len()],
    pub duration_count: u64,
    pub duration_sum: f64,
    pub last_success_unix: f64,
    pub blocked_packets: u64,
    pub blocked_bytes: u64,
    /// Counted by the audit rules (`--action audit`): let through, never blocked.
    pub audited_packets: u64,
    pub audited_bytes: u64,
    /// The action of the policy enforced (audit: nothing is blocked).
    pub action: Action,
    pub config_errors: u64,
    pub config_last_reload_ok: bool,
    /// When the control loop last went round (for `/healthz`).
    pub last_turn: Instant,
    /// The last periodic verification, and how the runs went (`pass`, `fail`, `error`).
    pub probe: Option<Report>,
    pub probe_runs: BTreeMap<&'static str, u64>,
    pub probe_last_unix: f64,
    /// `/readyz` also requires the last probe to have passed.
    pub ready_requires_probe: bool,
    /// Kubernetes discovery, when on.
    pub discovery: Option<DiscoveryStatus>,
    /// The health listener could not be bound (still retrying): why.
    pub listener_error: Option<String>,
    pub listener_bind_failures: u64,
    /// Attempts read from our NFLOG group, and the reader's health.
    pub attempts: AttemptLog,
}

impl Metrics {
    pub fn new(version: &'static str) -> Metrics {
        Metrics {
            version,
            backend: String::new(),
            started: false,
            in_sync: false,
            table_owned: false,
            foreign_meter_rules: 0,
            accepts_source_routes: None,
            not_ready_reason: "starting: the block is not installed yet".into(),
            repairs: BTreeMap::new(),
            repair_conflicts: 0,
            repair_conflict: None,
            reconciles: BTreeMap::new(),
            reconcile_errors: 0,
            duration_buckets: [0; BUCKETS.len()],
            duration_count: 0,
            duration_sum: 0.0,
            last_success_unix: 0.0,
            blocked_packets: 0,
            blocked_bytes: 0,
            audited_packets: 0,
            audited_bytes: 0,
            action: Action::Reject,
            config_errors: 0,
            config_last_reload_ok: true,
            last_turn: Instant::now(),
            probe: None,
            probe_runs: BTreeMap::new(),
            probe_last_unix: 0.0,
            ready_requires_probe: false,
            discovery: None,
            listener_error: None,
            listener_bind_failures: 0,
            attempts: AttemptLog::default(),
        }
    }

    pub fn observe_duration(&mut self, d: Duration) {
        let s = d.as_secs_f64();
        for (i, le) in BUCKETS.iter().enumerate() {
            if s <= *le {
                self.duration_buckets[i] += 1;
            }
        }
        self.duration_count += 1;
        self.duration_sum += s;
    }

    pub fn ready(&self) -> bool {
        self.started
            && self.in_sync
            && (!self.ready_requires_probe || self.probe.as_ref().is_some_and(Report::passed))
            && self.discovery.as_ref().is_none_or(|d| d.not_ready().is_none())
            && self.listener_error.is_none()
            && self.repair_conflict.is_none()
    }

    /// What `/readyz` answers when ready: in audit mode, that nothing is blocked.
    pub fn ready_text(&self) -> &'static str {
        match (self.action, self.attempts.group.is_some()) {
            (Action::Audit, true) => {
                "ready: audit rules installed and in sync (audit mode: nothing is blocked; \
                 attempts are logged and let through)"
            }
            (Action::Audit, false) => {
                "ready: audit rules installed and in sync (audit mode: nothing is blocked; \
                 connections are counted and let through; --log-group off: nothing records who tried)"
            }
            _ => "ready: block installed and in sync",
        }
    }

    /// Why `/readyz` says no.
    pub fn why_not_ready(&self) -> String {
        if let Some(who) = &self.repair_conflict {
            let every = DEFAULT_BUDGET.every();
            return format!(
                "repairs keep being undone by {who}: repairing at most once per {every} until it stops \
                 (ready again once the block stays in place for {every})"
            );
        }
        if !self.started || !self.in_sync {
            return self.not_ready_reason.clone();
        }
        if let Some(why) = self.discovery.as_ref().and_then(DiscoveryStatus::not_ready) {
            return why;
        }
        if let Some(why) = &self.listener_error {
            return why.clone();
        }
        match &self.probe {
            None => "waiting for the first probe (--ready-requires-probe)".into(),
            Some(r) => match r.problem() {
                Some(why) if self.action == Action::Audit => {
                    format!("the last probe did not prove that the audit rules see pod traffic: {why}")
                }
                Some(why) => format!("the last probe did not prove the block: {why}"),
                None => "ready".into(),
            },
        }
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Prometheus text exposition format 0.0.4.
pub fn render(m: &Metrics) -> String {
    let mut o = String::new();
    let b = |v: bool| u8::from(v);
    family(&mut o, "apiserver_guard_build_info", "gauge", "Build information.");
    let _ = writeln!(o, "apiserver_guard_build_info{{version=\"{}\"}} 1", escape(m.version));
    family(
        &mut o,
        "apiserver_guard_backend_info",
        "gauge",
        "Firewall backend in use.",
    );
    let _ = writeln!(
        o,
        "apiserver_guard_backend_info{{backend=\"{}\"}} 1",
        escape(&m.backend)
    );
    family(
        &mut o,
        "apiserver_guard_in_sync",
        "gauge",
        "1 when the last check found the block exactly as desired.",
    );
    let _ = writeln!(o, "apiserver_guard_in_sync {}", b(m.in_sync));
    family(
        &mut o,
        "apiserver_guard_table_owned",
        "gauge",
        "1 when our nftables table is owned by the daemon's netlink socket (no other process can change, flush or delete it).",
    );
    let _ = writeln!(o, "apiserver_guard_table_owned {}", b(m.table_owned));
    family(
        &mut o,
        "apiserver_guard_foreign_meter_rules",
        "gauge",
        "Rules that are not ours naming one of our iptables hashlimit tables (they share our log rules' per-source budget and may set the table's size); looked for at start and at most once a minute.",
    );
    let _ = writeln!(o, "apiserver_guard_foreign_meter_rules {}", m.foreign_meter_rules);
    if let Some(accepts) = m.accepts_source_routes {
        family(
            &mut o,
            "apiserver_guard_node_accepts_source_routes",
            "gauge",
            "1 when this node honours IPv4 source routes (net.ipv4.conf.all.accept_source_route=1): a pod can source-route a packet past the block; read at start and at each resync.",
        );
        let _ = writeln!(o, "apiserver_guard_node_accepts_source_routes {}", b(accepts));
    }
    family(
        &mut o,
        "apiserver_guard_ready",
        "gauge",
        "1 when the block is installed and in sync (/readyz).",
    );
    let _ = writeln!(o, "apiserver_guard_ready {}", b(m.ready()));
    family(
        &mut o,
        "apiserver_guard_repairs_total",
        "counter",
        "Repairs of drift, by cause.",
    );
    for (cause, n) in &m.repairs {
        let _ = writeln!(o, "apiserver_guard_repairs_total{{cause=\"{}\"}} {n}", escape(cause));
    }
    family(
        &mut o,
        "apiserver_guard_repair_conflicts_total",
        "counter",
        "Repairs deferred by the repair budget (a burst of 5, then one per second) because another process kept undoing the block.",
    );
    let _ = writeln!(o, "apiserver_guard_repair_conflicts_total {}", m.repair_conflicts);
    family(
        &mut o,
        "apiserver_guard_reconciles_total",
        "counter",
        "Checks of the installed block, by trigger.",
    );
    for (trigger, n) in &m.reconciles {
        let _ = writeln!(
            o,
            "apiserver_guard_reconciles_total{{trigger=\"{}\"}} {n}",
            escape(trigger)
        );
    }
    family(
        &mut o,
        "apiserver_guard_reconcile_errors_total",
        "counter",
        "Checks or repairs that failed.",
    );
    let _ = writeln!(o, "apiserver_guard_reconcile_errors_total {}", m.reconcile_errors);
    family(
        &mut o,
        "apiserver_guard_reconcile_duration_seconds",
        "histogram",
        "Duration of a check (and repair).",
    );
    for (i, le) in BUCKETS.iter().enumerate() {
        let _ = writeln!(
            o,
            "apiserver_guard_reconcile_duration_seconds_bucket{{le=\"{le}\"}} {}",
            m.duration_buckets[i]
        );
    }
    let _ = writeln!(
        o,
        "apiserver_guard_reconcile_duration_seconds_bucket{{le=\"+Inf\"}} {}",
        m.duration_count
    );
    let _ = writeln!(o, "apiserver_guard_reconcile_duration_seconds_sum {}", m.duration_sum);
    let _ = writeln!(
        o,
        "apiserver_guard_reconcile_duration_seconds_count {}",
        m.duration_count
    );
    family(
        &mut o,
        "apiserver_guard_last_successful_reconcile_timestamp_seconds",
        "gauge",
        "UNIX time of the last check that ended in sync.",
    );
    let _ = writeln!(
        o,
        "apiserver_guard_last_successful_reconcile_timestamp_seconds {:.3}",
        m.last_success_unix
    );
    family(
        &mut o,
        "apiserver_guard_blocked_packets_total",
        "counter",
        "Packets blocked by our rules (nftables counters).",
    );
    let _ = writeln!(o, "apiserver_guard_blocked_packets_total {}", m.blocked_packets);
    family(
        &mut o,
        "apiserver_guard_blocked_bytes_total",
        "counter",
        "Bytes blocked by our rules (nftables counters).",
    );
    let _ = writeln!(o, "apiserver_guard_blocked_bytes_total {}", m.blocked_bytes);
    family(
        &mut o,
        "apiserver_guard_audited_packets_total",
        "counter",
        "Packets our audit rules counted and let through (--action audit; nftables counters), never included in the blocked ones.",
    );
    let _ = writeln!(o, "apiserver_guard_audited_packets_total {}", m.audited_packets);
    family(
        &mut o,
        "apiserver_guard_audited_bytes_total",
        "counter",
        "Bytes our audit rules counted and let through (--action audit; nftables counters).",
    );
    let _ = writeln!(o, "apiserver_guard_audited_bytes_total {}", m.audited_bytes);
    family(
        &mut o,
        "apiserver_guard_action_info",
        "gauge",
        "The action of the policy enforced (reject, drop, or audit: nothing is blocked).",
    );
    let _ = writeln!(o, "apiserver_guard_action_info{{action=\"{}\"}} 1", m.action.name());
    family(
        &mut o,
        "apiserver_guard_config_errors_total",
        "counter",
        "Config reloads refused as invalid.",
    );
    let _ = writeln!(o, "apiserver_guard_config_errors_total {}", m.config_errors);
    family(
        &mut o,
        "apiserver_guard_listener_bind_failures_total",
        "counter",
        "Failed attempts to bind the health and metrics listener (retried with backoff; the block does not wait for it).",
    );
    let _ = writeln!(
        o,
        "apiserver_guard_listener_bind_failures_total {}",
        m.listener_bind_failures
    );
    family(
        &mut o,
        "apiserver_guard_config_last_reload_successful",
        "gauge",
        "0 while an invalid config is being ignored.",
    );
    let _ = writeln!(
        o,
        "apiserver_guard_config_last_reload_successful {}",
        b(m.config_last_reload_ok)
    );
    if let Some(report) = &m.probe {
        family(
            &mut o,
            "apiserver_guard_probe_runs_total",
            "counter",
            "Periodic verifications, by result.",
        );
        for (result, n) in &m.probe_runs {
            let _ = writeln!(o, "apiserver_guard_probe_runs_total{{result=\"{result}\"}} {n}");
        }
        family(
            &mut o,
            "apiserver_guard_probe_last_run_timestamp_seconds",
            "gauge",
            "UNIX time of the last verification.",
        );
        let _ = writeln!(
            o,
            "apiserver_guard_probe_last_run_timestamp_seconds {:.3}",
            m.probe_last_unix
        );
        o.push_str(&report.prometheus());
    }
    if let Some(d) = &m.discovery {
        d.render(&mut o);
    }
    m.attempts.render(&mut o);
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_is_cumulative() {
        let mut m = Metrics::new("0.1.0");
        m.observe_duration(Duration::from_millis(3));
        m.observe_duration(Duration::from_millis(30));
        assert_eq!(m.duration_buckets[0], 0);
        assert_eq!(m.duration_buckets[2], 1, "<= 5ms");
        assert_eq!(m.duration_buckets[5], 2, "<= 50ms");
        assert_eq!(m.duration_count, 2);
    }

    #[test]
    fn source_routing_is_reported_once_read() {
        let mut m = Metrics::new("0.1.0");
        assert!(
            !render(&m).contains("apiserver_guard_node_accepts_source_routes"),
            "not read yet"
        );
        m.accepts_source_routes = Some(true);
        assert!(render(&m).contains("\napiserver_guard_node_accepts_source_routes 1\n"));
        m.accepts_source_routes = Some(false);
        assert!(render(&m).contains("\napiserver_guard_node_accepts_source_routes 0\n"));
    }

    #[test]
    fn render_has_every_family_and_labels() {
        let mut m = Metrics::new("0.1.0");
        m.backend = "nftables".into();
        m.repairs.insert("table_missing".into(), 2);
        m.reconciles.insert("event".into(), 5);
        let t = render(&m);
        for needle in [
            "apiserver_guard_build_info{version=\"0.1.0\"} 1",
            "apiserver_guard_backend_info{backend=\"nftables\"} 1",
            "apiserver_guard_in_sync 0",
            "apiserver_guard_table_owned 0",
            "apiserver_guard_foreign_meter_rules 0",
            "apiserver_guard_repairs_total{cause=\"table_missing\"} 2",
            "apiserver_guard_reconciles_total{trigger=\"event\"} 5",
            "apiserver_guard_reconcile_duration_seconds_bucket{le=\"+Inf\"} 0",
            "# TYPE apiserver_guard_reconcile_duration_seconds histogram",
            "apiserver_guard_config_last_reload_successful 1",
            "apiserver_guard_action_info{action=\"reject\"} 1",
            "apiserver_guard_audited_packets_total 0",
        ] {
            assert!(t.contains(needle), "missing {needle}\n{t}");
        }
    }

    #[test]
    fn audited_packets_are_their_own_family_and_the_action_is_named() {
        let mut m = Metrics::new("0.1.0");
        m.action = Action::Audit;
        (m.audited_packets, m.audited_bytes) = (7, 420);
        let t = render(&m);
        for needle in [
            "# TYPE apiserver_guard_audited_packets_total counter\n",
            "apiserver_guard_audited_packets_total 7\n",
            "apiserver_guard_audited_bytes_total 420\n",
            "apiserver_guard_blocked_packets_total 0\n",
            "apiserver_guard_action_info{action=\"audit\"} 1\n",
        ] {
            assert!(t.contains(needle), "missing {needle}\n{t}");
        }
    }

    #[test]
    fn ready_can_require_a_passing_probe() {
        let mut m = Metrics::new("x");
        m.started = true;
        m.in_sync = true;
        m.ready_requires_probe = true;
        assert!(!m.ready());
        assert!(m.why_not_ready().contains("first probe"));
        let mut r = Report::failed(
            crate::verify::outcome::Expect::Blocked,
            false,
            2.0,
            true,
            "no pod namespace".into(),
        );
        r.summarise();
        m.probe = Some(r);
        assert!(!m.ready());
        assert!(m.why_not_ready().contains("no pod namespace"));
        assert!(render(&m).contains("apiserver_guard_probe_last_run_timestamp_seconds"));
        // Exit 0 with nothing proven (every endpoint skipped) is not ready either.
        let mut r = Report::failed(crate::verify::outcome::Expect::Blocked, false, 2.0, true, String::new());
        r.error = None;
        r.exit_code = 0;
        m.probe = Some(r);
        assert!(!m.ready());
        assert!(
            m.why_not_ready().contains("did not prove the block"),
            "{}",
            m.why_not_ready()
        );
    }

    #[test]
    fn a_listener_still_retrying_is_not_ready_and_says_why() {
        let mut m = Metrics::new("x");
        m.started = true;
        m.in_sync = true;
        assert!(m.ready());
        m.listener_error = Some("cannot listen on 127.0.0.1:9480: address in use".into());
        m.listener_bind_failures = 3;
        assert!(!m.ready());
        assert!(m.why_not_ready().contains("cannot listen"));
        assert!(render(&m).contains("apiserver_guard_listener_bind_failures_total 3\n"));
    }

    #[test]
    fn audit_readiness_says_whether_anything_records_who_tried() {
        let mut m = Metrics::new("test");
        m.action = Action::Audit;
        assert!(
            m.ready_text().contains("nothing records who tried"),
            "{}",
            m.ready_text()
        );
        m.attempts.group = Some(1443);
        assert!(m.ready_text().contains("attempts are logged"), "{}", m.ready_text());
        m.action = Action::Reject;
        assert_eq!(m.ready_text(), "ready: block installed and in sync");
    }

    #[test]
    fn ready_needs_started_and_in_sync() {
        let mut m = Metrics::new("x");
        m.in_sync = true;
        assert!(!m.ready());
        m.started = true;
        assert!(m.ready());
    }

    #[test]
    fn a_repair_conflict_is_not_ready_names_the_writer_and_is_counted() {
        let mut m = Metrics::new("x");
        (m.started, m.in_sync) = (true, true);
        m.repair_conflicts = 3;
        assert!(render(&m).contains("\napiserver_guard_repair_conflicts_total 3\n"));
        m.repair_conflict = Some("iptables-nft (pid 4242)".into());
        assert!(!m.ready());
        assert!(render(&m).contains("\napiserver_guard_ready 0\n"));
        assert_eq!(
            m.why_not_ready(),
            "repairs keep being undone by iptables-nft (pid 4242): repairing at most once per 1s until it \
             stops (ready again once the block stays in place for 1s)"
        );
        m.in_sync = false;
        assert!(
            m.why_not_ready().starts_with("repairs keep being undone"),
            "the conflict says more than the drift"
        );
        m.repair_conflict = None;
        m.in_sync = true;
        assert!(m.ready());
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
