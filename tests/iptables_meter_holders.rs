//! A rule of others that names one of our hashlimit tables (issue 13): the
//! kernel shares an xt_hashlimit table by name across iptables tables,
//! chains and variants, so such a rule spends our log rules' per-source
//! budget and, if it created the table, sets its size. `status` and
//! `apply` warn about it (status stays in sync: the block holds, and the
//! rule is not ours), the daemon counts it in
//! `apiserver_guard_foreign_meter_rules` and logs it, and nothing of the
//! firewall is touched. Real kernel, own namespaces: a foreign rule in
//! `mangle` or `raw`, of the same variant as ours or the other one.

mod common;

use common::daemon_cases::*;
use common::guard_cases::*;
use common::*;

const WARNING: &str = "a rule that is not ours names our hashlimit table ";

fn policy(b: Backend) -> GuardPolicy {
    GuardPolicy::new(b, "tunnel", &[CONTAINER_CIDR_V4], &[&endpoint(API_V4, Some(API_PORT))])
}

/// The `--hashlimit-name` of our IPv4 log rule, as installed.
fn our_meter_name(ns: &Netns, variant: &str) -> String {
    let save = ipt_save_family(ns, false, variant);
    save.split_whitespace()
        .skip_while(|w| *w != "--hashlimit-name")
        .nth(1)
        .unwrap_or_else(|| panic!("no hashlimit table in our rules: {save}"))
        .to_string()
}

/// A rule in `table`'s PREROUTING (of `variant`) that names hashlimit table `name`.
fn add_foreign_holder(ns: &Netns, variant: &str, table: &str, name: &str) -> String {
    let spec = [
        "-t",
        table,
        "-A",
        "PREROUTING",
        "-s",
        "10.99.0.0/16",
        "-m",
        "hashlimit",
        "--hashlimit-upto",
        "1/sec",
        "--hashlimit-name",
        name,
        "--hashlimit-htable-max",
        "8",
        "-j",
        "ACCEPT",
    ];
    ipt_ok(ns, false, variant, &spec);
    format!("-t {table} -A PREROUTING")
}

#[test]
fn a_foreign_rule_naming_our_hashlimit_table_is_reported_by_status_and_apply_and_left_alone() {
    if !can_run() {
        return;
    }
    let cases = [
        (Backend::IptablesLegacy, "legacy", "mangle"),
        (Backend::IptablesLegacy, "nft", "raw"),
        (Backend::IptablesNft, "nft", "mangle"),
        (Backend::IptablesNft, "legacy", "raw"),
    ];
    for (ours, foreign_variant, table) in cases {
        let what = format!("{} with a foreign {foreign_variant} rule in {table}", ours.flag());
        let ns = Netns::new("meter-holder");
        let p = policy(ours);
        p.apply_ok(&ns);
        let (r, clean) = p.status(&ns);
        r.expect_code(0, &what);
        assert!(
            clean.get("warnings").is_none(),
            "{what}: nothing to warn about yet: {clean}"
        );
        let name = our_meter_name(&ns, ours.iptables_variant().unwrap());
        let at = add_foreign_holder(&ns, foreign_variant, table, &name);
        let before = firewall_snapshot(&ns);

        let (r, json) = p.status(&ns);
        r.expect_code(0, &format!("{what}: status stays in sync (the block holds)"));
        assert_eq!(json["in_sync"], true, "{what}: {json}");
        let warnings = json["warnings"]
            .as_array()
            .unwrap_or_else(|| panic!("{what}: no warnings: {json}"));
        assert_eq!(warnings.len(), 1, "{what}: {json}");
        let w = warnings[0].as_str().unwrap();
        assert!(w.starts_with(&format!("{WARNING}{name} ")), "{what}: {w}");
        assert!(
            w.contains(&at) && w.contains(&format!("iptables-{foreign_variant}")),
            "{what}: {w}"
        );

        let text = run_guard(&ns, &p.args("status"));
        text.expect_code(0, &what);
        assert!(
            text.stdout.contains(&format!("warning: {WARNING}{name} ")),
            "{what}: {text:?}"
        );

        let applied = p.apply_ok(&ns);
        assert!(applied.stderr.contains(WARNING), "{what}: apply warns: {applied:?}");
        assert_same_snapshot(&before, &firewall_snapshot(&ns), &format!("{what}: status and apply"));
    }
}

#[test]
fn without_log_rules_or_with_nftables_nothing_is_ours_to_share() {
    if !can_run() {
        return;
    }
    let ns = Netns::new("meter-holder-none");
    add_foreign_holder(&ns, "legacy", "mangle", "apiserver-guard-m32");
    let p = policy(Backend::IptablesLegacy);
    let mut args = p.args("apply");
    args.extend(["--log-group".to_owned(), "off".to_owned()]);
    let r = run_guard(&ns, &args);
    r.expect_code(0, "apply --log-group off");
    assert!(!r.stderr.contains(WARNING), "no hashlimit table of ours: {r:?}");
    let nft = policy(Backend::Nftables);
    let r = nft.apply_ok(&ns);
    assert!(
        !r.stderr.contains(WARNING),
        "nftables keeps its meters in its own table: {r:?}"
    );
    let (_, json) = nft.status(&ns);
    assert!(json.get("warnings").is_none(), "{json}");
}

#[test]
fn the_daemon_counts_and_logs_a_foreign_rule_naming_our_hashlimit_table() {
    if !can_run() {
        return;
    }
    let ns = Netns::new("meter-holder-daemon");
    let p = policy(Backend::IptablesLegacy);
    p.apply_ok(&ns);
    let name = our_meter_name(&ns, "legacy");
    add_foreign_holder(&ns, "nft", "mangle", &name);
    let before = firewall_snapshot(&ns);
    let daemon = Daemon::spawn(&ns, &daemon_args(&p, &resync_flags(Backend::IptablesLegacy)));
    daemon.wait_ready();
    daemon.wait_log(&format!("{WARNING}{name} "), 1, READY_TIMEOUT);
    let (s, _) = wait_metrics(
        &ns,
        "the foreign rule counted",
        |s| sample(s, "apiserver_guard_foreign_meter_rules", &[]) == Some(1.0),
        READY_TIMEOUT,
    );
    assert_eq!(sample(&s, "apiserver_guard_in_sync", &[]), Some(1.0), "the block holds");
    assert_same_snapshot(&before, &firewall_snapshot(&ns), "the daemon touched nothing");
}
