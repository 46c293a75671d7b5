//! A rule of others that names one of our hashlimit tables (issue 13): the
//! kernel shares an xt_hashlimit table by name across iptables tables,
//! chains and variants, so such a rule spends our log rules' per-source
//! budget and, if it created the table, sets its size. The daemon looks
//! (in the background, at start and at most once a minute), counts such
//! rules in `apiserver_guard_foreign_meter_rules` and logs each (its block
//! stays in sync: it holds, and the rule is not ours), and nothing of the
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
fn the_daemon_reports_a_foreign_rule_naming_our_hashlimit_table_and_touches_nothing() {
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
        let name = our_meter_name(&ns, ours.iptables_variant().unwrap());
        let at = add_foreign_holder(&ns, foreign_variant, table, &name);
        // A name that only starts like ours is not ours (one look counts both or neither).
        add_foreign_holder(&ns, foreign_variant, table, "apiserver-guardian");
        let before = firewall_snapshot(&ns);
        let daemon = Daemon::spawn(&ns, &daemon_args(&p, &resync_flags(ours)));
        daemon.wait_ready();
        let (s, _) = wait_metrics(
            &ns,
            &format!("{what}: the foreign rule counted"),
            |s| sample(s, "apiserver_guard_foreign_meter_rules", &[]) == Some(1.0),
            READY_TIMEOUT,
        );
        assert_eq!(
            sample(&s, "apiserver_guard_in_sync", &[]),
            Some(1.0),
            "{what}: the block holds"
        );
        daemon.wait_log(&format!("{WARNING}{name} "), 1, READY_TIMEOUT);
        let log = daemon.log();
        let line = log
            .lines()
            .find(|l| l.contains(WARNING))
            .unwrap_or_else(|| panic!("{what}: {log}"));
        assert!(
            line.contains(&at) && line.contains(&format!("iptables-{foreign_variant} ")),
            "{what}: the line names the rule: {line}"
        );
        assert_same_snapshot(
            &before,
            &firewall_snapshot(&ns),
            &format!("{what}: the daemon touched nothing"),
        );
        drop(daemon);
    }
}
