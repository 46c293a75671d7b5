//! Refused input on a real kernel: every bad value (flags, environment,
//! config file) exits 2 with a message naming the problem, on stderr only and
//! without Rust debug text, and leaves the firewall byte-identical: over an
//! installed block and foreign state with each backend, and on a fresh node
//! (where not even an empty table may appear).
//!
//! The case tables are next to this file, one per topic; this file runs them.
//! Everything runs inside the test's own network namespaces.

#[path = "../common/mod.rs"]
mod common;

mod addresses;
mod config_file;
mod discovery_settings;
mod flags_env;
mod policy_values;

use common::bad_input_cases::*;
use common::bad_input_checks::*;
use common::*;

/// Every refused input, each otherwise identical to the good policy with
/// `--backend backend`. Config files are written into `dir`.
fn bad_cases(dir: &TempDir, backend: &str) -> Vec<BadCase> {
    [
        policy_values::cases(dir, backend),
        flags_env::cases(dir, backend),
        config_file::cases(dir, backend),
        addresses::cases(dir, backend),
        discovery_settings::cases(dir, backend),
    ]
    .concat()
}

const FOREIGN_MARKERS: [&str; 3] = ["foreign-legacy", "foreign-legacy6", "foreign-nft"];

/// Problems with one refused run (empty when it behaved).
fn check_refused(r: &GuardRun, case: &BadCase) -> Vec<String> {
    let mut problems = Vec::new();
    if r.code != Some(2) {
        problems.push(format!("exit {:?}, expected 2", r.code));
    }
    for phrase in &case.expect {
        if !r.stderr.contains(phrase.as_str()) {
            problems.push(format!("stderr lacks {phrase:?}"));
        }
    }
    for phrase in &case.absent {
        if r.stderr.contains(phrase.as_str()) {
            problems.push(format!("stderr should not contain {phrase:?}"));
        }
    }
    // No Rust debug text reaches the operator.
    for debug in ["Some(", "None", "Err(", "Ok(", "\\\""] {
        if r.stderr.contains(debug) {
            problems.push(format!("stderr has Rust debug text {debug:?}"));
        }
    }
    if !r.stdout.trim().is_empty() {
        problems.push(format!("stdout should be empty, got {:?}", r.stdout));
    }
    problems
}

/// Applies the good policy with `backend` (over foreign state), then runs
/// every bad case through apply, status and render, comparing the whole
/// firewall after each run.
fn bad_input_changes_nothing(backend: &str) {
    let topo = Topology::new();
    let dir = TempDir::new("bad");
    let empty = dir.empty_config();
    add_foreign_state(&topo.node);
    let good = good_args(backend, &empty);
    let r = run(&topo.node, &with_cmd("apply", &good));
    assert_code(&r, 0, &format!("apply good policy with {backend}"));

    let mut before = firewall_snapshot(&topo.node);
    assert!(!before.contains("!! exit"), "a snapshot command failed:\n{before}");
    for marker in std::iter::once(our_marker(backend)).chain(FOREIGN_MARKERS) {
        assert!(before.contains(marker), "state to preserve lacks {marker:?}:\n{before}");
    }

    let cases = bad_cases(&dir, backend);
    assert!(cases.len() >= 40, "only {} cases", cases.len());
    let mut failures = Vec::new();
    for case in &cases {
        for cmd in ["apply", "status", "render"] {
            let mut argv = vec![cmd];
            argv.extend(case.args());
            let r = guard_run(&topo.node, &[], &case.env(), &argv);
            let mut problems = check_refused(&r, case);
            let after = firewall_snapshot(&topo.node);
            if after != before {
                problems.push(format!("firewall changed:\n{}", snapshot_diff(&before, &after)));
                // Judge the following cases on their own.
                before = after;
            }
            if !problems.is_empty() {
                failures.push(format!(
                    "[{backend}] {cmd} / {}: {}\n    env {:?} args {:?}\n    stderr: {}",
                    case.name,
                    problems.join("; "),
                    case.env,
                    case.args,
                    r.stderr.trim()
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} refused runs misbehaved:\n{}",
        failures.len(),
        cases.len() * 3,
        failures.join("\n")
    );

    // The block is still exactly what the good policy wants, and traffic agrees.
    let r = run(&topo.node, &with_cmd("status", &good));
    assert_code(
        &r,
        0,
        &format!("status of the good policy after the bad runs ({backend})"),
    );
    let c = curl(&topo.pod, API_V4, API_PORT, MAX_TIME);
    assert!(c.refused(), "pod -> apiserver must still be blocked, got {c:?}");
    let c = curl(&topo.pod, OTHER_V4, API_PORT, MAX_TIME);
    assert!(c.served(), "pod -> other destination must still work, got {c:?}");
}

#[test]
fn bad_input_changes_nothing_nftables() {
    if !common::can_run() {
        return;
    }
    bad_input_changes_nothing("nftables");
}

#[test]
fn bad_input_changes_nothing_iptables_nft() {
    if !common::can_run() {
        return;
    }
    bad_input_changes_nothing("iptables-nft");
}

#[test]
fn bad_input_changes_nothing_iptables_legacy() {
    if !common::can_run() {
        return;
    }
    bad_input_changes_nothing("iptables-legacy");
}

/// On a fresh node with the `auto` backend, refused input must not even
/// create empty tables (e.g. by probing a backend).
#[test]
fn bad_input_on_a_fresh_node_creates_nothing() {
    if !common::can_run() {
        return;
    }
    let topo = Topology::new();
    let dir = TempDir::new("fresh");
    let before = firewall_snapshot(&topo.node);
    let tables: Vec<&str> = before
        .lines()
        .filter(|l| l.starts_with("table ") || l.starts_with('*'))
        .collect();
    assert!(tables.is_empty(), "fresh node has tables {tables:?}");
    let mut failures = Vec::new();
    for case in bad_cases(&dir, "auto") {
        let mut argv = vec!["apply"];
        argv.extend(case.args());
        let r = guard_run(&topo.node, &[], &case.env(), &argv);
        let mut problems = check_refused(&r, &case);
        let after = firewall_snapshot(&topo.node);
        if after != before {
            problems.push(format!("firewall changed:\n{}", snapshot_diff(&before, &after)));
        }
        if !problems.is_empty() {
            failures.push(format!("apply / {}: {}", case.name, problems.join("; ")));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
