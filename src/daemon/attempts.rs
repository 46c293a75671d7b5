//! What the daemon knows about attempts, as operators see it: the bounded
//! table, totals by namespace and action (at most `MAX_NAMESPACES` label
//! values), the health of the NFLOG reader (bound or why not, overflows,
//! packets ignored) and, with Kubernetes discovery, the Events written on pods. Kept in `Metrics`;
//! rendered as Prometheus families and as the `/attempts` JSON page, whose
//! types `apiserver-guard attempts` reads back. Pure.

use crate::core::attempts::{Attempt, AttemptTable, Recorded, Repeat, Row};
use crate::logging::rfc3339_millis;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write;

/// Distinct namespace label values of the attempts metric; attempts from
/// further namespaces count under `OTHER_NAMESPACES` (never a namespace name:
/// names cannot start with '_').
pub const MAX_NAMESPACES: usize = 256;
pub const OTHER_NAMESPACES: &str = "_other";

/// Counts of the Event writer, for `/metrics`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventStats {
    pub created: u64,
    pub patched: u64,
    pub failed: u64,
    /// (pod, reason) entries dropped to stay within the book's cap.
    pub dropped: u64,
}

/// The reader's state and the attempts seen.
#[derive(Debug, Clone, Default)]
pub struct AttemptLog {
    /// The NFLOG group read (None: the reader is off).
    pub group: Option<u16>,
    /// The group is bound to our socket.
    pub bound: bool,
    /// Why it is not (another reader holds it, the kernel refused).
    pub problem: Option<String>,
    pub bind_failures: u64,
    pub table: AttemptTable,
    /// Attempts by (namespace, action).
    pub totals: BTreeMap<(String, &'static str), u64>,
    /// Bursts that overflowed the socket (ENOBUFS): reports lost, never the block.
    pub overflows: u64,
    /// Logged packets not counted, by reason (`foreign_prefix`, `truncated`, ...).
    pub ignored: BTreeMap<&'static str, u64>,
    /// New-key log lines left out to keep the log bounded (summarised instead).
    pub lines_suppressed: u64,
    /// `lines_suppressed` as of the last summary line: kept here, not in a
    /// reader, so a new reader (a rebind, a new group) never says them again.
    pub lines_suppressed_summarised: u64,
    /// The Event writer (None: no Kubernetes discovery, no Events).
    pub events: Option<EventStats>,
}

impl AttemptLog {
    /// Puts one logged packet in the table and counts it, unless it belongs
    /// to a connection already counted or to none (a bare ACK of a flow
    /// never seen).
    pub fn record(&mut self, a: &Attempt) -> Recorded {
        let recorded = self.table.record(a);
        if matches!(recorded, Recorded::New | Recorded::Repeat) {
            let action = a.action.as_str();
            let mut ns = a.namespace();
            if !self.totals.contains_key(&(ns.to_string(), action)) {
                let mut seen: Vec<&str> = self.totals.keys().map(|(n, _)| n.as_str()).collect();
                seen.dedup();
                if !seen.contains(&ns) && seen.len() >= MAX_NAMESPACES {
                    ns = OTHER_NAMESPACES;
                }
            }
            *self.totals.entry((ns.to_string(), action)).or_default() += 1;
        }
        recorded
    }

    /// What the summary line says: the keys repeated since the last one,
    /// and the new-key lines left out since then.
    pub fn take_summary(&mut self) -> (Vec<Repeat>, u64) {
        let unlogged = self.lines_suppressed - self.lines_suppressed_summarised;
        self.lines_suppressed_summarised = self.lines_suppressed;
        (self.table.take_repeats(), unlogged)
    }

    pub fn ignore(&mut self, reason: &'static str) {
        *self.ignored.entry(reason).or_default() += 1;
    }

    /// The `/attempts` page.
    pub fn page(&self) -> AttemptsPage {
        AttemptsPage {
            group: self.group,
            bound: self.bound,
            problem: self.problem.clone(),
            capacity: self.table.capacity(),
            evicted: self.table.evicted(),
            overflows: self.overflows,
            attempts: self.table.rows().into_iter().map(RowView::from).collect(),
        }
    }

    /// The attempt families of `/metrics` (none while the reader is off).
    pub fn render(&self, o: &mut String) {
        if self.group.is_none() {
            return;
        }
        let family = |o: &mut String, name: &str, kind: &str, help: &str| {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}");
        };
        family(
            o,
            "apiserver_guard_attempts_total",
            "counter",
            "Connection attempts to reach an apiserver that our rules logged (each connection once), by the source's namespace (\"\" when unknown) and action.",
        );
        for ((ns, action), n) in &self.totals {
            let ns = ns.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n");
            let _ = writeln!(
                o,
                "apiserver_guard_attempts_total{{namespace=\"{ns}\",action=\"{action}\"}} {n}"
            );
        }
        family(
            o,
            "apiserver_guard_attempt_log_bound",
            "gauge",
            "1 when the daemon reads its NFLOG group (0: another process holds it, or the kernel refused).",
        );
        let _ = writeln!(o, "apiserver_guard_attempt_log_bound {}", u8::from(self.bound));
        let counters: [(&str, &str, u64); 5] = [
            (
                "apiserver_guard_attempt_log_bind_failures_total",
                "Failed attempts to bind the NFLOG group (retried with backoff).",
                self.bind_failures,
            ),
            (
                "apiserver_guard_attempt_log_overflows_total",
                "Times a burst overflowed the NFLOG socket (ENOBUFS): some attempts went unreported.",
                self.overflows,
            ),
            (
                "apiserver_guard_attempts_evicted_total",
                "Rows evicted from the full attempts table (least recently seen first).",
                self.table.evicted(),
            ),
            (
                "apiserver_guard_attempt_log_lines_suppressed_total",
                "New attempts not logged on their own line (log rate limit); in the minute summary instead.",
                self.lines_suppressed,
            ),
            (
                "apiserver_guard_attempts_table_rows",
                "Rows in the attempts table now.",
                self.table.len() as u64,
            ),
        ];
        for (name, help, v) in counters {
            let kind = if name.ends_with("_total") { "counter" } else { "gauge" };
            family(o, name, kind, help);
            let _ = writeln!(o, "{name} {v}");
        }
        if let Some(e) = &self.events {
            family(
                o,
                "apiserver_guard_pod_events_total",
                "counter",
                "Kubernetes Events written on the pods behind attempts, by result (created, patched, failed).",
            );
            for (result, n) in [("created", e.created), ("patched", e.patched), ("failed", e.failed)] {
                let _ = writeln!(o, "apiserver_guard_pod_events_total{{result=\"{result}\"}} {n}");
            }
            family(
                o,
                "apiserver_guard_pod_events_dropped_total",
                "counter",
                "Pods whose pending Event was dropped to keep the writer's memory bounded.",
            );
            let _ = writeln!(o, "apiserver_guard_pod_events_dropped_total {}", e.dropped);
        }
        family(
            o,
            "apiserver_guard_attempt_log_ignored_total",
            "counter",
            "Packets in our NFLOG group not counted as attempts, by reason (foreign_prefix, truncated, not_ip, no_payload, malformed, answer: a reset, SYN+ACK, ICMP error or echo reply answering a packet sent to the pod, fragment: a fragment after the first, bare_ack: a bare TCP ACK of a connection never seen, what a pod sends to answer a SYN forged to it).",
        );
        for (reason, n) in &self.ignored {
            let _ = writeln!(
                o,
                "apiserver_guard_attempt_log_ignored_total{{reason=\"{reason}\"}} {n}"
            );
        }
    }
}

/// `GET /attempts`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptsPage {
    pub group: Option<u16>,
    pub bound: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
    pub capacity: usize,
    pub evicted: u64,
    pub overflows: u64,
    /// Most recently seen first.
    pub attempts: Vec<RowView>,
}

/// A table row with its times also in RFC 3339.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RowView {
    #[serde(flatten)]
    pub row: Row,
    pub first_seen: String,
    pub last_seen: String,
}

impl From<Row> for RowView {
    fn from(row: Row) -> RowView {
        RowView {
            first_seen: rfc3339_millis(u128::from(row.first_seen_unix_ms)),
            last_seen: rfc3339_millis(u128::from(row.last_seen_unix_ms)),
            row,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::attempt_log::AttemptAction;
    use crate::core::attempt_packet::{Headers, Protocol};

    /// One connection: each call gets a source port of its own.
    fn attempt(src: &str, action: AttemptAction) -> Attempt {
        static NEXT_PORT: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(40000);
        Attempt {
            headers: Headers {
                source: src.parse().unwrap(),
                destination: "192.168.50.10".parse().unwrap(),
                protocol: Protocol::Tcp,
                source_port: Some(NEXT_PORT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)),
                destination_port: Some(5443),
                tcp: None,
                answer: false,
                later_fragment: false,
            },
            action,
            rule: "block-tcp-port-v4".into(),
            pod: None,
            interface: None,
            at_ms: 1_795_880_400_123,
        }
    }

    #[test]
    fn each_summary_says_only_the_lines_left_out_since_the_last_one() {
        let mut l = AttemptLog::default();
        l.record(&attempt("10.0.1.2", AttemptAction::Blocked));
        l.record(&attempt("10.0.1.2", AttemptAction::Blocked));
        l.lines_suppressed = 5;
        let (repeats, unlogged) = l.take_summary();
        assert_eq!((repeats.len(), unlogged), (1, 5));
        assert_eq!(l.take_summary(), (Vec::new(), 0), "nothing new since");
        // The state is the log's, not a reader's: a new reader (a rebind) says nothing twice.
        l.lines_suppressed = 8;
        assert_eq!(l.take_summary().1, 3);
    }

    #[test]
    fn metrics_count_by_namespace_and_action() {
        let mut l = AttemptLog::default();
        let mut o = String::new();
        l.render(&mut o);
        assert!(o.is_empty(), "nothing while the reader is off");
        l.group = Some(1443);
        l.bound = true;
        l.record(&attempt("10.0.1.2", AttemptAction::Blocked));
        // Another connection (another source port: `attempt` gives each its own).
        let next = attempt("10.0.1.2", AttemptAction::Blocked);
        l.record(&next);
        // A retransmit of that connection: not another attempt.
        l.record(&next);
        l.record(&attempt("10.0.0.5", AttemptAction::Audited));
        l.ignore("foreign_prefix");
        l.overflows = 2;
        l.render(&mut o);
        for needle in [
            "apiserver_guard_attempts_total{namespace=\"\",action=\"blocked\"} 2\n",
            "apiserver_guard_attempts_total{namespace=\"\",action=\"audited\"} 1\n",
            "apiserver_guard_attempt_log_bound 1\n",
            "apiserver_guard_attempt_log_overflows_total 2\n",
            "apiserver_guard_attempts_evicted_total 0\n",
            "apiserver_guard_attempts_table_rows 2\n",
            "# TYPE apiserver_guard_attempts_table_rows gauge\n",
            "apiserver_guard_attempt_log_ignored_total{reason=\"foreign_prefix\"} 1\n",
        ] {
            assert!(o.contains(needle), "missing {needle}\n{o}");
        }
    }

    #[test]
    fn namespaces_label_the_metric_within_a_bound_and_events_are_counted() {
        let mut l = AttemptLog {
            group: Some(1443),
            ..Default::default()
        };
        let from = |ns: &str| {
            let mut a = attempt("10.0.1.2", AttemptAction::Blocked);
            a.pod = Some(crate::core::attempts::PodRef {
                namespace: ns.into(),
                name: "web-0".into(),
                uid: format!("uid-{ns}"),
                node: "node-a".into(),
            });
            a
        };
        l.record(&from("team-a"));
        l.record(&from("team-a"));
        l.record(&attempt("10.0.0.9", AttemptAction::Blocked));
        for i in 0..(MAX_NAMESPACES + 5) {
            l.record(&from(&format!("ns-{i}")));
        }
        // Known namespaces keep counting under their own name.
        l.record(&from("team-a"));
        let mut o = String::new();
        l.render(&mut o);
        assert!(
            o.contains("apiserver_guard_attempts_total{namespace=\"team-a\",action=\"blocked\"} 3\n"),
            "{o}"
        );
        assert!(
            o.contains("apiserver_guard_attempts_total{namespace=\"\",action=\"blocked\"} 1\n"),
            "{o}"
        );
        let namespaces: std::collections::BTreeSet<&String> = l.totals.keys().map(|(n, _)| n).collect();
        assert_eq!(
            namespaces.len(),
            MAX_NAMESPACES + 1,
            "the bound plus {OTHER_NAMESPACES}"
        );
        assert_eq!(l.totals.get(&(OTHER_NAMESPACES.to_string(), "blocked")), Some(&7));
        assert!(!o.contains("web-0"), "never a pod name in a label");
        assert!(!o.contains("apiserver_guard_pod_events_total"), "no writer, no family");
        l.events = Some(EventStats {
            created: 2,
            patched: 1,
            failed: 4,
            dropped: 0,
        });
        let mut o = String::new();
        l.render(&mut o);
        for needle in [
            "apiserver_guard_pod_events_total{result=\"created\"} 2\n",
            "apiserver_guard_pod_events_total{result=\"failed\"} 4\n",
            "apiserver_guard_pod_events_dropped_total 0\n",
        ] {
            assert!(o.contains(needle), "missing {needle}\n{o}");
        }
    }

    #[test]
    fn the_page_round_trips_with_readable_times() {
        let mut l = AttemptLog {
            group: Some(1443),
            bound: true,
            ..Default::default()
        };
        l.record(&attempt("10.0.1.2", AttemptAction::Blocked));
        let page = l.page();
        let json = serde_json::to_value(&page).unwrap();
        assert_eq!(json["attempts"][0]["source"], "10.0.1.2");
        assert_eq!(json["attempts"][0]["first_seen"], "2026-11-28T15:40:00.123Z");
        assert_eq!(json["attempts"][0]["count"], 1);
        assert_eq!(json["capacity"], 4096);
        assert!(json.get("problem").is_none());
        let back: AttemptsPage = serde_json::from_value(json).unwrap();
        assert_eq!(back, page);
    }
}
