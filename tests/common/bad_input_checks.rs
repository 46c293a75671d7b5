//! Helpers shared by the refused-input tests (`tests/bad_input/`,
//! `tests/self_lockout.rs`, `tests/settings_precedence.rs`,
//! `tests/runtime_errors.rs`, `tests/render_output.rs`): the good policy's
//! arguments, one run of the binary with its exit code checked, foreign
//! firewall state to preserve, and whole-firewall snapshot comparison.

use super::bad_input_cases::*;
use super::netns::Netns;

pub const BACKENDS: [&str; 3] = ["nftables", "iptables-nft", "iptables-legacy"];
pub const MAX_TIME: u32 = 5;

/// Marker of our own objects in a `firewall_snapshot`, per backend.
pub fn our_marker(backend: &str) -> &'static str {
    match backend {
        "nftables" => "table inet apiserver_guard",
        // iptables-nft state shows up in the nft section, in nft syntax.
        "iptables-nft" => "chain APISERVER-GUARD",
        "iptables-legacy" => ":APISERVER-GUARD",
        other => panic!("no marker for backend {other}"),
    }
}

pub fn owned(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// The good policy (tunnel mode) for `backend`, without the subcommand.
pub fn good_args(backend: &str, config: &str) -> Vec<String> {
    owned(&[
        "--container-cidr",
        GOOD_CIDR,
        "--apiserver",
        GOOD_API,
        "--mode",
        GOOD_MODE,
        "--backend",
        backend,
        "--config",
        config,
    ])
}

pub fn with_cmd<'a>(cmd: &'a str, args: &'a [String]) -> Vec<&'a str> {
    std::iter::once(cmd).chain(args.iter().map(String::as_str)).collect()
}

pub fn run(ns: &Netns, args: &[&str]) -> GuardRun {
    guard_run(ns, &[], &[], args)
}

#[track_caller]
pub fn assert_code(r: &GuardRun, code: i32, what: &str) {
    assert_eq!(
        r.code,
        Some(code),
        "{what}: expected exit {code}\nstdout: {}\nstderr: {}",
        r.stdout,
        r.stderr
    );
}

/// Firewall state that is not ours, in nftables and in iptables-legacy (v4 and v6).
pub fn add_foreign_state(ns: &Netns) {
    ns.run_ok(&[
        "iptables-legacy",
        "-w",
        "5",
        "-A",
        "INPUT",
        "-s",
        "203.0.113.0/24",
        "-m",
        "comment",
        "--comment",
        "foreign-legacy",
        "-j",
        "DROP",
    ]);
    ns.run_ok(&[
        "ip6tables-legacy",
        "-w",
        "5",
        "-A",
        "INPUT",
        "-s",
        "2001:db8::/32",
        "-m",
        "comment",
        "--comment",
        "foreign-legacy6",
        "-j",
        "DROP",
    ]);
    let out = ns.run_stdin(
        &["nft", "-f", "-"],
        "table inet foreign_fw {\n\
         \tchain input {\n\
         \t\ttype filter hook input priority 10; policy accept;\n\
         \t\tip saddr 203.0.113.0/24 counter drop comment \"foreign-nft\"\n\
         \t}\n\
         }\n",
    );
    assert!(
        out.status.success(),
        "adding foreign nft state: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Lines only in `a` / only in `b`, for readable snapshot mismatches.
pub fn snapshot_diff(a: &str, b: &str) -> String {
    let only_a: Vec<&str> = a.lines().filter(|l| !b.lines().any(|x| x == *l)).collect();
    let only_b: Vec<&str> = b.lines().filter(|l| !a.lines().any(|x| x == *l)).collect();
    format!(
        "  only before: {only_a:?}\n  only after:  {only_b:?}\n  (full before/after lengths {} / {})",
        a.len(),
        b.len()
    )
}

#[track_caller]
pub fn assert_same_snapshot(before: &str, after: &str, what: &str) {
    assert!(
        before == after,
        "{what}: firewall changed\n{}",
        snapshot_diff(before, after)
    );
}

#[track_caller]
pub fn assert_has(out: &str, present: &[&str], absent: &[&str], what: &str) {
    for p in present {
        assert!(out.contains(p), "{what}: output lacks {p:?}:\n{out}");
    }
    for a in absent {
        assert!(!out.contains(a), "{what}: output should not contain {a:?}:\n{out}");
    }
}
