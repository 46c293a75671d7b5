//! The result of one verification as data (serialised as the `--output json`
//! document), and its renderings: the table `verify` prints by default, and
//! Prometheus lines the daemon can append to `/metrics`. Pure.

use serde::Serialize;
use std::fmt::Write;

use super::evidence::{ControlVerdict, CounterEvidence};
use super::outcome::{BlockVerdict, Expect, NodeVerdict, Outcome};
use crate::error::exit;

/// One probe as reported.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProbeReport {
    /// Source address used (None when unknown, e.g. no route).
    pub from: Option<String>,
    #[serde(flatten)]
    pub outcome: Outcome,
    pub latency_seconds: f64,
}

/// The positive control of one endpoint: a probe from the container network's side to an
/// address the policy does not block.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ControlReport {
    /// `gateway` (the next hop towards the apiserver), `given` (`--control`), `node` (with
    /// `--source`: the node's own probe, same namespace) or `none`.
    pub kind: String,
    /// The address probed.
    pub target: Option<String>,
    pub probe: Option<ProbeReport>,
    pub verdict: ControlVerdict,
}

/// One apiserver endpoint: the probes, the evidence and the verdicts.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EndpointReport {
    /// The endpoint as the policy names it (`IP`, `IP:PORT`, `[IPv6]:PORT`).
    pub endpoint: String,
    /// The address and port probed.
    pub address: String,
    pub port: u16,
    /// From the container network (None when skipped).
    pub container: Option<ProbeReport>,
    /// From the node (None when the node check did not run).
    pub node: Option<ProbeReport>,
    pub block: BlockVerdict,
    pub node_check: NodeVerdict,
    /// The positive control from the container network's side (None when skipped).
    pub control: Option<ControlReport>,
    /// Our block rules' counters during the probe (None unless the probe failed the way our
    /// rule makes it fail, or, in audit mode, got through from a source the policy covers:
    /// then our audit rule's counters).
    pub counter: Option<CounterEvidence>,
    /// The same for the node's probe, when the policy could stop the node's own traffic and
    /// that probe failed the way our rule makes it fail (the "node cut off" evidence).
    pub node_counter: Option<CounterEvidence>,
    /// Notes for the operator (coverage of the source, mode...).
    pub notes: Vec<String>,
    /// 0 as expected, 3 an expectation failed, 1 could not tell.
    pub exit_code: i32,
}

impl EndpointReport {
    /// How the table names the endpoint: as the policy does, with the probed port when the
    /// policy gives none.
    pub fn label(&self) -> String {
        if self.endpoint == self.address || self.container.is_none() {
            self.endpoint.clone()
        } else {
            format!("{} (port {})", self.endpoint, self.port)
        }
    }
}

/// Where the container-network probes ran.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VantageReport {
    /// `netns`, `source`, `here` or `auto`.
    pub kind: String,
    /// Human description, e.g. `netns /run/netns/cni-1234 (found by --auto: 10.0.1.2)`.
    pub description: String,
    /// The namespace path (netns, auto).
    pub netns: Option<String>,
}

/// The whole verification.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub vantage: Option<VantageReport>,
    pub expect: Expect,
    pub tls: bool,
    pub timeout_seconds: f64,
    pub host_check: bool,
    pub endpoints: Vec<EndpointReport>,
    /// Notes about the whole verification (e.g. our table hooks other paths than the policy).
    pub notes: Vec<String>,
    /// Every endpoint proven blocked from the container network (None: could not tell, or not
    /// expected to be blocked).
    pub block_effective: Option<bool>,
    /// Every endpoint reached from the node (None: not checked or could not tell).
    pub node_unaffected: Option<bool>,
    /// Why nothing could be probed (e.g. no such namespace); the endpoints are then empty.
    pub error: Option<String>,
    pub exit_code: i32,
}

impl Report {
    /// A verification that could not run at all.
    pub fn failed(expect: Expect, tls: bool, timeout_seconds: f64, host_check: bool, error: String) -> Report {
        Report {
            vantage: None,
            expect,
            tls,
            timeout_seconds,
            host_check,
            endpoints: Vec::new(),
            notes: Vec::new(),
            block_effective: None,
            node_unaffected: None,
            error: Some(error),
            exit_code: exit::RUNTIME,
        }
    }

    /// Every expectation held (exit 0) and, when the block is expected, it was proven: the
    /// only result the daemon's `/readyz`, the node taint and the probe DaemonSet accept.
    pub fn passed(&self) -> bool {
        self.exit_code == exit::OK && (self.expect == Expect::Reachable || self.block_effective == Some(true))
    }

    /// Why the verification did not pass, in plain words (None when it passed).
    pub fn problem(&self) -> Option<String> {
        if self.passed() {
            return None;
        }
        if let Some(e) = &self.error {
            return Some(format!("the probe could not run: {e}"));
        }
        let mut why: Vec<String> = Vec::new();
        for e in &self.endpoints {
            let label = e.label();
            match (&e.block, self.expect) {
                (BlockVerdict::Reachable, Expect::Blocked) => why.push(format!("{label}: a pod got through")),
                (BlockVerdict::Blocked, Expect::Reachable) => why.push(format!("{label}: blocked, expected reachable")),
                (
                    BlockVerdict::Inconclusive(m)
                    | BlockVerdict::NotCovered(m)
                    | BlockVerdict::Error(m)
                    | BlockVerdict::Unaudited(m),
                    _,
                ) => why.push(format!("{label}: {m}")),
                _ => {}
            }
            if let NodeVerdict::CutOff(m) = &e.node_check {
                why.push(format!("{label}: {m}"));
            }
        }
        if why.is_empty() {
            why.push("the block was not proven".into());
        }
        Some(why.join("; "))
    }

    /// Fills in `block_effective`, `node_unaffected` and `exit_code` from the endpoints.
    pub fn summarise(&mut self) {
        let judged: Vec<&EndpointReport> = self
            .endpoints
            .iter()
            .filter(|e| !matches!(e.block, BlockVerdict::Skipped(_)))
            .collect();
        self.block_effective = if self.expect == Expect::Reachable {
            None
        } else if judged.iter().any(|e| e.block == BlockVerdict::Reachable) {
            Some(false)
        } else if !judged.is_empty() && judged.iter().all(|e| e.block == BlockVerdict::Blocked) {
            Some(true)
        } else {
            None
        };
        self.node_unaffected = if judged.iter().any(|e| matches!(e.node_check, NodeVerdict::CutOff(_))) {
            Some(false)
        } else if !judged.is_empty() && judged.iter().all(|e| e.node_check == NodeVerdict::Unaffected) {
            Some(true)
        } else {
            None
        };
        self.exit_code = if self.error.is_some() {
            exit::RUNTIME
        } else {
            super::outcome::worst(self.endpoints.iter().map(|e| e.exit_code))
        };
    }

    /// The verification as pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("the report serialises")
    }

    /// The table printed by default.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        if let Some(v) = &self.vantage {
            let expect = match self.expect {
                Expect::Blocked => "blocked",
                Expect::Reachable => "reachable",
            };
            let _ = writeln!(
                out,
                "verify from {} (expect {expect}; timeout {}s{}{})",
                v.description,
                self.timeout_seconds,
                if self.tls { "; TLS" } else { "" },
                if self.host_check { "" } else { "; no node check" }
            );
        }
        let header = ["APISERVER", "FROM CONTAINER NETWORK", "CONTROL", "FROM NODE", "VERDICT"];
        let rows: Vec<[String; 5]> = self
            .endpoints
            .iter()
            .map(|e| {
                [
                    e.label(),
                    cell(e.container.as_ref()),
                    control_cell(e.control.as_ref()),
                    cell(e.node.as_ref()),
                    verdict(e, self.expect),
                ]
            })
            .collect();
        let mut widths = header.map(str::len);
        for r in &rows {
            for (w, c) in widths.iter_mut().zip(r) {
                *w = (*w).max(c.chars().count());
            }
        }
        let line = |cells: [&str; 5]| {
            let mut s = String::new();
            for (i, (c, w)) in cells.iter().zip(widths).enumerate() {
                if i == 4 {
                    s.push_str(c);
                } else {
                    let _ = write!(s, "{c:<w$}  ");
                }
            }
            s.trim_end().to_string()
        };
        if !rows.is_empty() {
            let _ = writeln!(out, "{}", line(header));
            for r in &rows {
                let _ = writeln!(out, "{}", line([&r[0], &r[1], &r[2], &r[3], &r[4]]));
            }
        }
        for e in &self.endpoints {
            if let Some(c) = &e.counter {
                let _ = writeln!(out, "counters: {}: {}", e.label(), c.describe());
            }
            if let Some(c) = &e.node_counter {
                let _ = writeln!(out, "counters: {} (node): {}", e.label(), c.describe());
            }
            for n in &e.notes {
                let _ = writeln!(out, "note: {}: {n}", e.label());
            }
        }
        for n in &self.notes {
            let _ = writeln!(out, "note: {n}");
        }
        if let Some(err) = &self.error {
            let _ = writeln!(out, "could not verify: {err}");
        }
        let _ = writeln!(out, "{}", self.block_line());
        let _ = writeln!(out, "{}", self.node_line());
        out
    }

    fn block_line(&self) -> String {
        let reached: Vec<String> = self
            .endpoints
            .iter()
            .filter(|e| e.block == BlockVerdict::Reachable)
            .map(EndpointReport::label)
            .collect();
        match (self.expect, self.block_effective) {
            (Expect::Blocked, Some(true)) => {
                "block effective: yes (proven: control answered, failure of our rule)".into()
            }
            (Expect::Blocked, Some(false)) => format!(
                "block effective: NO: the container network reaches {}",
                reached.join(", ")
            ),
            (Expect::Blocked, None) => "block effective: inconclusive (see the verdicts above)".into(),
            (Expect::Reachable, _) => {
                let blocked: Vec<String> = self
                    .endpoints
                    .iter()
                    .filter(|e| e.block == BlockVerdict::Blocked)
                    .map(EndpointReport::label)
                    .collect();
                let unseen: Vec<String> = self
                    .endpoints
                    .iter()
                    .filter(|e| matches!(e.block, BlockVerdict::Unaudited(_)))
                    .map(EndpointReport::label)
                    .collect();
                if !blocked.is_empty() {
                    format!("reachable as expected: NO: blocked towards {}", blocked.join(", "))
                } else if !unseen.is_empty() {
                    format!(
                        "reachable as expected: yes, but NOT seen by our audit rules towards {}",
                        unseen.join(", ")
                    )
                } else if !self.endpoints.is_empty()
                    && self
                        .endpoints
                        .iter()
                        .all(|e| matches!(e.block, BlockVerdict::Reachable | BlockVerdict::Skipped(_)))
                {
                    "reachable as expected: yes".into()
                } else {
                    "reachable as expected: inconclusive (see the verdicts above)".into()
                }
            }
        }
    }

    fn node_line(&self) -> String {
        match self.node_unaffected {
            Some(true) => "node unaffected: yes".into(),
            Some(false) => {
                let cut: Vec<String> = self
                    .endpoints
                    .iter()
                    .filter(|e| matches!(e.node_check, NodeVerdict::CutOff(_)))
                    .map(EndpointReport::label)
                    .collect();
                format!("node unaffected: NO: node cut off from {}", cut.join(", "))
            }
            None => {
                let not_checked = self.endpoints.iter().find_map(|e| match (&e.node_check, &e.block) {
                    (_, BlockVerdict::Skipped(_)) => None,
                    (NodeVerdict::NotChecked(why), _) => Some(why.as_str()),
                    _ => None,
                });
                match not_checked {
                    Some(why) => format!("node unaffected: not checked ({why})"),
                    None if self.endpoints.is_empty() => "node unaffected: not checked".into(),
                    None => "node unaffected: inconclusive (see the verdicts above)".into(),
                }
            }
        }
    }

    /// Prometheus text-format lines for the daemon's `/metrics` (HELP/TYPE included):
    /// per endpoint and side (`from="container"|"node"`), the one-hot outcome, whether it was
    /// reached and the latency; per endpoint whether its expectation held; overall, whether
    /// the last verification passed.
    pub fn prometheus(&self) -> String {
        let mut out = String::new();
        let probes: Vec<(&EndpointReport, &str, &ProbeReport)> = self
            .endpoints
            .iter()
            .flat_map(|e| {
                [
                    ("container", e.container.as_ref()),
                    ("control", e.control.as_ref().and_then(|c| c.probe.as_ref())),
                    ("node", e.node.as_ref()),
                ]
                .into_iter()
                .filter_map(move |(side, p)| p.map(|p| (e, side, p)))
            })
            .collect();
        let _ = writeln!(
            out,
            "# HELP apiserver_guard_probe_outcome Outcome of the last probe of each apiserver endpoint (1 for the outcome seen, 0 for the others).\n# TYPE apiserver_guard_probe_outcome gauge"
        );
        for (e, side, p) in &probes {
            for name in Outcome::NAMES {
                let v = u8::from(p.outcome.name() == name);
                let _ = writeln!(
                    out,
                    "apiserver_guard_probe_outcome{{endpoint=\"{}\",from=\"{side}\",outcome=\"{name}\"}} {v}",
                    escape(&e.address)
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP apiserver_guard_probe_reachable Whether the last probe connected (1) or not (0).\n# TYPE apiserver_guard_probe_reachable gauge"
        );
        for (e, side, p) in &probes {
            let _ = writeln!(
                out,
                "apiserver_guard_probe_reachable{{endpoint=\"{}\",from=\"{side}\"}} {}",
                escape(&e.address),
                u8::from(p.outcome.reached())
            );
        }
        let _ = writeln!(
            out,
            "# HELP apiserver_guard_probe_latency_seconds Duration of the last probe (connect, plus TLS handshake with --tls).\n# TYPE apiserver_guard_probe_latency_seconds gauge"
        );
        for (e, side, p) in &probes {
            let _ = writeln!(
                out,
                "apiserver_guard_probe_latency_seconds{{endpoint=\"{}\",from=\"{side}\"}} {}",
                escape(&e.address),
                p.latency_seconds
            );
        }
        let _ = writeln!(
            out,
            "# HELP apiserver_guard_probe_endpoint_ok Whether every expectation held for the endpoint in the last verification.\n# TYPE apiserver_guard_probe_endpoint_ok gauge"
        );
        for e in &self.endpoints {
            let _ = writeln!(
                out,
                "apiserver_guard_probe_endpoint_ok{{endpoint=\"{}\"}} {}",
                escape(&e.address),
                u8::from(e.exit_code == exit::OK)
            );
        }
        let _ = writeln!(
            out,
            "# HELP apiserver_guard_probe_ok Whether the last verification passed (block effective and node unaffected).\n# TYPE apiserver_guard_probe_ok gauge\napiserver_guard_probe_ok {}",
            u8::from(self.passed())
        );
        out
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

fn cell(p: Option<&ProbeReport>) -> String {
    match p {
        None => "-".into(),
        Some(p) => {
            let ms = p.latency_seconds * 1000.0;
            let from = p.from.as_deref().map(|f| format!("{f}: ")).unwrap_or_default();
            format!("{from}{} ({ms:.0} ms)", p.outcome.describe())
        }
    }
}

fn control_cell(c: Option<&ControlReport>) -> String {
    match c {
        None => "-".into(),
        Some(c) => match (&c.probe, &c.verdict) {
            (Some(p), _) if c.kind == "node" => format!("the node's probe: {}", p.outcome.describe()),
            (Some(p), _) => format!(
                "{} {}: {}",
                c.kind,
                c.target.as_deref().unwrap_or(""),
                p.outcome.describe()
            ),
            (None, _) => "none".into(),
        },
    }
}

fn verdict(e: &EndpointReport, expect: Expect) -> String {
    let block = match (&e.block, expect) {
        (BlockVerdict::Blocked, Expect::Blocked) => "blocked".to_string(),
        (BlockVerdict::Blocked, Expect::Reachable) => "BLOCKED, expected reachable".to_string(),
        (BlockVerdict::Reachable, Expect::Blocked) => "REACHABLE: block ineffective".to_string(),
        (BlockVerdict::Reachable, Expect::Reachable) => "reachable, as expected".to_string(),
        (BlockVerdict::Inconclusive(why), _) => why.clone(),
        (BlockVerdict::NotCovered(why), _) => format!("cannot show the block: {why}"),
        (BlockVerdict::Skipped(why), _) => format!("skipped: {why}"),
        (BlockVerdict::Error(why), _) => format!("could not probe: {why}"),
        (BlockVerdict::Unaudited(why), _) => format!("UNSEEN BY AUDIT: {why}"),
    };
    let node = match &e.node_check {
        NodeVerdict::Unaffected | NodeVerdict::NotChecked(_) => None,
        NodeVerdict::CutOff(why) => Some(why.clone()),
        // Already said by the block verdict when it is inconclusive.
        NodeVerdict::NoAnswer(why) if !matches!(e.block, BlockVerdict::Inconclusive(_)) => Some(why.clone()),
        NodeVerdict::NoAnswer(_) => None,
        NodeVerdict::Error(why) => Some(format!("node probe failed: {why}")),
    };
    match node {
        Some(n) => format!("{block}; {n}"),
        None => block,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::outcome::INCONCLUSIVE;

    fn probe(from: &str, outcome: Outcome) -> Option<ProbeReport> {
        Some(ProbeReport {
            from: Some(from.into()),
            outcome,
            latency_seconds: 0.002,
        })
    }

    fn endpoint(container: Outcome, node: Outcome, block: BlockVerdict, node_check: NodeVerdict) -> EndpointReport {
        let exit_code = super::super::outcome::endpoint_exit(&block, &node_check, Expect::Blocked);
        EndpointReport {
            endpoint: "192.168.50.10:5443".into(),
            address: "192.168.50.10:5443".into(),
            port: 5443,
            container: probe("10.0.1.2", container),
            node: probe("192.168.50.1", node),
            block,
            node_check,
            control: None,
            counter: None,
            node_counter: None,
            notes: vec![],
            exit_code,
        }
    }

    fn report(endpoints: Vec<EndpointReport>) -> Report {
        let mut r = Report {
            notes: Vec::new(),
            vantage: Some(VantageReport {
                kind: "netns".into(),
                description: "netns /run/netns/pod".into(),
                netns: Some("/run/netns/pod".into()),
            }),
            expect: Expect::Blocked,
            tls: false,
            timeout_seconds: 2.0,
            host_check: true,
            endpoints,
            block_effective: None,
            node_unaffected: None,
            error: None,
            exit_code: 0,
        };
        r.summarise();
        r
    }

    #[test]
    fn a_blocked_endpoint_passes() {
        let r = report(vec![endpoint(
            Outcome::Refused,
            Outcome::Connected,
            BlockVerdict::Blocked,
            NodeVerdict::Unaffected,
        )]);
        assert_eq!(
            (r.block_effective, r.node_unaffected, r.exit_code),
            (Some(true), Some(true), 0)
        );
        let t = r.to_text();
        assert!(
            t.contains("10.0.1.2: refused") && t.contains("192.168.50.1: connected"),
            "{t}"
        );
        assert!(
            t.contains("block effective: yes") && t.contains("node unaffected: yes"),
            "{t}"
        );
        let j: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
        assert_eq!(j["endpoints"][0]["container"]["outcome"], "refused");
        assert_eq!(j["endpoints"][0]["block"]["status"], "blocked");
        assert_eq!(j["block_effective"], true);
        assert_eq!(j["exit_code"], 0);
    }

    #[test]
    fn a_leak_and_a_cut_node_are_both_named() {
        let r = report(vec![endpoint(
            Outcome::Connected,
            Outcome::TimedOut,
            BlockVerdict::Reachable,
            NodeVerdict::CutOff("node cut off: timed out from the node".into()),
        )]);
        assert_eq!(
            (r.block_effective, r.node_unaffected, r.exit_code),
            (Some(false), Some(false), 3)
        );
        let t = r.to_text();
        assert!(t.contains("REACHABLE: block ineffective"), "{t}");
        assert!(
            t.contains("node unaffected: NO: node cut off from 192.168.50.10:5443"),
            "{t}"
        );
    }

    #[test]
    fn inconclusive_is_said_once_and_exits_1() {
        let r = report(vec![endpoint(
            Outcome::Refused,
            Outcome::Refused,
            BlockVerdict::Inconclusive(INCONCLUSIVE.into()),
            NodeVerdict::NoAnswer(format!("{INCONCLUSIVE} (refused from the node too)")),
        )]);
        assert_eq!((r.block_effective, r.node_unaffected, r.exit_code), (None, None, 1));
        let t = r.to_text();
        assert_eq!(t.matches(INCONCLUSIVE).count(), 1, "{t}");
        assert!(!t.contains("block effective: yes"), "{t}");
    }

    #[test]
    fn metrics_are_one_hot_and_parseable_lines() {
        let r = report(vec![endpoint(
            Outcome::Refused,
            Outcome::Connected,
            BlockVerdict::Blocked,
            NodeVerdict::Unaffected,
        )]);
        let m = r.prometheus();
        assert!(m.contains(
            "apiserver_guard_probe_outcome{endpoint=\"192.168.50.10:5443\",from=\"container\",outcome=\"refused\"} 1"
        ));
        assert!(m.contains(
            "apiserver_guard_probe_outcome{endpoint=\"192.168.50.10:5443\",from=\"node\",outcome=\"refused\"} 0"
        ));
        assert!(m.contains("apiserver_guard_probe_reachable{endpoint=\"192.168.50.10:5443\",from=\"node\"} 1"));
        assert!(m.contains("apiserver_guard_probe_ok 1"));
        for l in m.lines().filter(|l| !l.starts_with('#')) {
            let (_, value) = l.rsplit_once(' ').unwrap();
            value.parse::<f64>().unwrap_or_else(|_| panic!("bad value in {l}"));
        }
    }

    #[test]
    fn only_a_proven_block_passes() {
        let proven = report(vec![endpoint(
            Outcome::Refused,
            Outcome::Connected,
            BlockVerdict::Blocked,
            NodeVerdict::Unaffected,
        )]);
        assert!(proven.passed() && proven.problem().is_none());
        let unproven = report(vec![endpoint(
            Outcome::Unreachable("network unreachable (no route)".into()),
            Outcome::Connected,
            BlockVerdict::Inconclusive("inconclusive: no positive control from the probe's side: no route".into()),
            NodeVerdict::Unaffected,
        )]);
        assert!(!unproven.passed());
        assert!(
            unproven.problem().unwrap().contains("no positive control"),
            "{:?}",
            unproven.problem()
        );
        // Exit 0 with nothing judged (every endpoint skipped) proves nothing either.
        let mut skipped = report(vec![endpoint(
            Outcome::Refused,
            Outcome::Connected,
            BlockVerdict::Skipped("no IPv6 container CIDR".into()),
            NodeVerdict::NotChecked("skipped".into()),
        )]);
        skipped.summarise();
        assert_eq!(skipped.exit_code, 0);
        assert!(!skipped.passed());
        assert!(skipped.problem().unwrap().contains("not proven"));
        let leak = report(vec![endpoint(
            Outcome::Connected,
            Outcome::Connected,
            BlockVerdict::Reachable,
            NodeVerdict::Unaffected,
        )]);
        assert!(leak.problem().unwrap().contains("a pod got through"));
    }

    #[test]
    fn a_failed_verification_exits_1_with_the_reason() {
        let mut r = Report::failed(Expect::Blocked, false, 2.0, true, "no such namespace".into());
        r.summarise();
        assert_eq!(r.exit_code, 1);
        assert!(r.to_text().contains("could not verify: no such namespace"));
        assert!(r.prometheus().contains("apiserver_guard_probe_ok 0"));
    }
}
