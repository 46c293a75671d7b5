//! iptables-legacy read back by bytes, on a real kernel: a change that
//! `iptables-legacy-save` cannot print (found by a helper trying to break the
//! read-back: one interface-mask byte set through the kernel's own socket
//! option, no interface named) is drift, is repaired, and never wedges a
//! repair or `remove` (a changed jump `iptables -D` by spec cannot find is
//! taken out by its bytes). Each case first proves the tamper is real: the
//! text is byte-identical and the pod is served.

mod common;

use apiserver_guard::backend::iptables_legacy_raw::{read, rewrite};
use apiserver_guard::core::iptables_legacy_blob::{LegacyTable, Target};
use apiserver_guard::core::model::Family;
use apiserver_guard::core::policy::Hook;
use common::daemon_cases::*;
use common::daemon_checks::*;
use common::guard_cases::*;
use common::save_counter::SaveCounter;
use common::*;

/// Where `iniface_mask` is in an entry.
fn iniface_mask(fam: Family) -> usize {
    match fam {
        Family::V4 => 48,
        Family::V6 => 96,
    }
}

/// Which entry of the table to change.
type Pick = fn(&LegacyTable) -> usize;

/// Rule 1 of FORWARD (our jump).
fn forward_rule_1(t: &LegacyTable) -> usize {
    t.builtin_rules(Hook::Forward).expect("FORWARD").start
}

/// The last rule of our chain (the block rule).
fn our_block_rule(t: &LegacyTable) -> usize {
    let (_, rules) = t.user_chain(IPT_CHAIN).expect("our chain");
    rules.end - 1
}

/// Changes both families' tables in the node through the kernel's socket
/// option (`patch` gets the table as read and the blob to write back) and
/// proves what `iptables-legacy-save` prints unchanged.
fn patch_unseen(node: &Netns, what: &str, patch: impl Fn(&LegacyTable, &mut [u8]) + Sync) {
    let before = saves(node);
    for fam in Family::ALL {
        node.in_thread(|| {
            rewrite(fam, |t| {
                let mut e = t.without(&[]).expect("the table as it is");
                patch(t, &mut e.blob);
                Ok(Some(e))
            })
        })
        .expect("enter the node namespace")
        .expect("raw replace");
    }
    assert_same_snapshot(&before, &saves(node), &format!("{what}: text unchanged"));
}

/// Sets iniface_mask[1] on the entry `pick` names, in both families: no
/// interface named, so the text is unchanged, but the kernel now matches
/// only interfaces whose name is one character long.
fn hide_byte(node: &Netns, pick: Pick, what: &str) {
    patch_unseen(node, what, |t, blob| {
        blob[t.entries[pick(t)].offset as usize + iniface_mask(t.family) + 1] = 0xff;
    });
}

fn policy() -> GuardPolicy {
    GuardPolicy::new(
        Backend::IptablesLegacy,
        "tunnel",
        &[CONTAINER_CIDR_V4, CONTAINER_CIDR_V6],
        &[&endpoint(API_V4, Some(API_PORT)), &endpoint(API_V6, Some(API_PORT))],
    )
}

/// Both families' `iptables-legacy-save -t filter`, policy counters aside
/// (the probes move them).
fn saves(node: &Netns) -> String {
    let text = ipt_save_family(node, false, "legacy") + &ipt_save_family(node, true, "legacy");
    text.lines()
        .map(|l| match (l.starts_with(':'), l.rfind(" [")) {
            (true, Some(at)) => format!("{} [0:0]\n", &l[..at]),
            _ => format!("{l}\n"),
        })
        .collect()
}

/// Tampers both families where `pick` says and proves it is real: the text
/// read by iptables-legacy-save is unchanged, the pod is served.
fn tamper(topo: &Topology, pick: Pick, what: &str) {
    hide_byte(&topo.node, pick, what);
    assert_served(
        &curl(&topo.pod, API_V4, API_PORT, MAX_TIME),
        &format!("{what}: pod -> v4"),
    );
    assert_served(
        &curl(&topo.pod, API_V6, API_PORT, MAX_TIME),
        &format!("{what}: pod -> v6"),
    );
}

fn status_names(policy: &GuardPolicy, node: &Netns, needle: &str, what: &str) {
    let (r, json) = policy.status(node);
    r.expect_code(3, &format!("status after {what}"));
    let drift = json["drift"].to_string();
    assert!(drift.contains(needle), "{what}: {needle:?} not in {drift}");
    assert!(
        drift.contains("ip6tables-legacy"),
        "{what}: both families named: {drift}"
    );
}

fn assert_blocked(topo: &Topology, what: &str) {
    assert_refused_fast(&topo.pod, None, API_V4, API_PORT, &format!("{what} v4"));
    assert_refused_fast(&topo.pod, None, API_V6, API_PORT, &format!("{what} v6"));
}

/// A topology with our block applied (None where the kernel tests cannot run).
fn applied() -> Option<(Topology, GuardPolicy)> {
    if !can_run() {
        return None;
    }
    let topo = Topology::new();
    let policy = policy();
    policy.apply_ok(&topo.node);
    Some((topo, policy))
}

#[test]
fn a_jump_changed_where_the_text_cannot_show_it_is_found_repaired_and_removable() {
    let Some((topo, policy)) = applied() else { return };
    let node = &topo.node;
    let clean = saves(node);
    tamper(&topo, forward_rule_1, "jump tampered");
    status_names(&policy, node, "1 changed copy of our jump", "jump tampered");
    // It was: "block already in place"; then every repair failed on `-D`.
    policy.apply_ok(node);
    policy.assert_in_sync(node, "after apply repaired the jump");
    assert_blocked(&topo, "after apply repaired the jump");
    assert_same_snapshot(&clean, &saves(node), "one jump, as before the tamper");

    // `remove` with a changed jump: it was "line 2 failed", chain left.
    tamper(&topo, forward_rule_1, "jump tampered again");
    let r = remove(node);
    assert_eq!(r.code, 0, "remove: {r:?}");
    let after = saves(node);
    assert!(!after.contains(IPT_CHAIN), "nothing of ours left: {after}");
    assert_served(&curl(&topo.pod, API_V4, API_PORT, MAX_TIME), "removed");
}

#[test]
fn a_rule_of_our_chain_changed_where_the_text_cannot_show_it_is_found_and_repaired() {
    let Some((topo, policy)) = applied() else { return };
    let node = &topo.node;
    tamper(&topo, our_block_rule, "block rule tampered");
    status_names(&policy, node, "of our chain: it reads like ours", "block rule tampered");
    policy.apply_ok(node);
    policy.assert_in_sync(node, "after apply repaired our rule");
    assert_blocked(&topo, "after apply repaired our rule");
}

#[test]
fn the_daemon_repairs_a_change_the_text_cannot_show() {
    if !can_run() {
        return;
    }
    let topo = Topology::new();
    let node = &topo.node;
    let policy = policy();
    let daemon = Daemon::spawn(node, &daemon_args(&policy, &resync_flags(Backend::IptablesLegacy)));
    daemon.wait_ready();
    assert_blocked(&topo, "daemon ready");
    for (pick, what) in [
        (forward_rule_1 as Pick, "jump tampered"),
        (our_block_rule as Pick, "block rule tampered"),
    ] {
        hide_byte(node, pick, what);
        let took = poll_refused(&topo, &daemon, what);
        eprintln!("daemon: {what}: pod refused again after {took:?}");
        policy.assert_in_sync(node, &format!("daemon repaired: {what}"));
        assert_blocked(&topo, &format!("daemon repaired: {what}"));
    }
    assert!(daemon.exited().is_none(), "daemon alive: {}", daemon.log());
}

/// Deletes the reference files `apply` wrote for the node namespace (as
/// with a read-only /run, or a `status` on the host of a containerised
/// daemon): what is found then is found without a reference.
fn forget_references(node: &Netns) {
    let name = node
        .in_thread(apiserver_guard::backend::iptables_created::netns_name)
        .expect("enter the node namespace")
        .expect("namespace name");
    for fam in ["ip", "ip6"] {
        let path = format!("/run/apiserver-guard/iptables-legacy-reference/{name}-{fam}");
        std::fs::remove_file(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    }
}

/// `! -i +`, written with the iptables tool itself (a helper's find): it
/// masks no byte of the name, so iptables-legacy-save prints nothing of it,
/// yet inverted it never matches. Found without any reference, repaired.
#[test]
fn an_inverted_match_on_no_interface_is_found_without_a_reference() {
    let Some((topo, policy)) = applied() else { return };
    let node = &topo.node;
    forget_references(node);
    // Without a reference, `status` says what it could not check.
    let (r, json) = policy.status(node);
    r.expect_code(0, "status without a reference");
    assert_eq!(json["verified"], serde_json::json!(false), "{json}");
    let text = run_guard(node, &policy.args("status"));
    assert!(text.stdout.contains("checked as iptables rules only"), "{text:?}");
    let before = saves(node);
    for v6 in [false, true] {
        let save = ipt_save_family(node, v6, "legacy");
        let rules: Vec<&str> = save.lines().filter(|l| l.starts_with("-A APISERVER-GUARD ")).collect();
        let last = rules.last().expect("our rules");
        let mut args: Vec<String> = vec!["-R".into(), IPT_CHAIN.into(), rules.len().to_string()];
        args.extend(last.split_whitespace().skip(2).map(|w| w.trim_matches('"').to_string()));
        args.extend(["!".into(), "-i".into(), "+".into()]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        ipt_ok(node, v6, "legacy", &args);
    }
    assert_same_snapshot(&before, &saves(node), "`! -i +`: text unchanged");
    assert_served(&curl(&topo.pod, API_V4, API_PORT, MAX_TIME), "`! -i +`: pod -> v4");
    status_names(&policy, node, "rule 2 of our chain: it reads like ours", "`! -i +`");
    policy.apply_ok(node);
    policy.assert_in_sync(node, "after apply repaired `! -i +`");
    assert_eq!(
        policy.status(node).1["verified"],
        serde_json::json!(true),
        "learnt again"
    );
    assert_blocked(&topo, "after apply repaired `! -i +`");
}

/// The end of our chain (the RETURN iptables puts there) set to ACCEPT:
/// every packet our rules do not refuse skips the rest of FORWARD (a
/// foreign REJECT below our jump stopped working); the text is unchanged.
#[test]
fn the_end_of_our_chain_changed_is_found_and_repaired() {
    let Some((topo, policy)) = applied() else { return };
    let node = &topo.node;
    for v6 in [false, true] {
        let other = if v6 { OTHER_V6 } else { OTHER_V4 };
        ipt_ok(node, v6, "legacy", &["-A", "FORWARD", "-d", other, "-j", "REJECT"]);
    }
    policy.apply_ok(node);
    patch_unseen(node, "end of our chain", |t, blob| {
        let (_, rules) = t.user_chain(IPT_CHAIN).expect("our chain");
        let end = t.entries[rules.end];
        let verdict = (end.offset + end.len) as usize - 8;
        blob[verdict..verdict + 4].copy_from_slice(&(-2i32).to_ne_bytes());
    });
    status_names(
        &policy,
        node,
        "the end of our chain (the RETURN iptables puts there)",
        "end changed",
    );
    policy.apply_ok(node);
    policy.assert_in_sync(node, "after apply repaired the end of our chain");
    assert_blocked(&topo, "after apply repaired the end of our chain");
}

/// Where the bytes decide (in sync, our chain flushed), no check and no
/// repair reads the whole table as text: at 100,000 foreign rules one
/// `iptables-legacy-save` is most of half a second. A change the bytes
/// cannot name still goes to the text, which names it.
#[test]
fn the_bytes_decide_without_iptables_legacy_save_where_they_can() {
    let Some((topo, policy)) = applied() else { return };
    let node = &topo.node;
    let c = SaveCounter::new("legacy");
    let status = |what: &str| -> (i32, String, usize) {
        let mut args = policy.args("status");
        args.extend(["--output".into(), "json".into()]);
        let r = c.guard(node, &args);
        let json: serde_json::Value =
            serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("{what}: no JSON ({e}): {r:?}"));
        (r.code, json["drift"].to_string(), c.take())
    };
    assert_eq!(status("in sync"), (0, "[]".to_string(), 0), "in sync: no save");
    ipt_ok(node, false, "legacy", &["-F", IPT_CHAIN]);
    let (code, drift, saves) = status("flushed");
    assert_eq!((code, saves), (3, 0), "flushed: {drift}");
    assert!(drift.contains("empty (flushed"), "{drift}");
    c.guard(node, &policy.args("apply"))
        .expect_code(0, "apply after the flush");
    assert_eq!(c.take(), 0, "the repair read no text either");
    assert_eq!(status("repaired").0, 0);
    assert_blocked(&topo, "repaired");
    // A foreign rule above our jump: the text names it.
    ipt_ok(
        node,
        false,
        "legacy",
        &["-I", "FORWARD", "1", "-s", CONTAINER_CIDR_V4, "-j", "ACCEPT"],
    );
    let (code, drift, saves) = status("foreign rule 1");
    assert_eq!(code, 3);
    assert!(
        saves > 0 && drift.contains(&format!("-A FORWARD -s {CONTAINER_CIDR_V4} -j ACCEPT")),
        "{drift}"
    );
}

/// The raw replace keeps everything else as it was: other rules, their
/// order and policies (byte-identical text), and jumps of other chains.
#[test]
fn taking_out_a_changed_jump_leaves_everything_else_as_it_was() {
    if !can_run() {
        return;
    }
    let topo = Topology::new();
    let node = &topo.node;
    for (v6, spec) in [(false, "10.9.0.0/16"), (true, "fd09::/48")] {
        ipt_ok(node, v6, "legacy", &["-N", "FOO"]);
        ipt_ok(node, v6, "legacy", &["-A", "FOO", "-s", spec, "-j", "ACCEPT"]);
        ipt_ok(node, v6, "legacy", &["-A", "FORWARD", "-s", spec, "-j", "FOO"]);
        ipt_ok(node, v6, "legacy", &["-A", "OUTPUT", "-d", spec, "-j", "DROP"]);
        ipt_ok(node, v6, "legacy", &["-P", "INPUT", "DROP"]);
    }
    let policy = policy();
    policy.apply_ok(node);
    let clean = saves(node);
    tamper(&topo, forward_rule_1, "jump tampered");
    policy.apply_ok(node);
    assert_same_snapshot(&clean, &saves(node), "all as before the tamper");
    policy.assert_in_sync(node, "after apply took the changed jump out");
    assert_blocked(&topo, "after apply took the changed jump out");
    // The foreign jump still lands in FOO: its rule still counts.
    for fam in Family::ALL {
        let t = node.in_thread(|| read(fam)).unwrap().expect("read the table");
        let (foo, _) = t.user_chain("FOO").expect("FOO");
        let fwd = t.builtin_rules(Hook::Forward).unwrap();
        assert!(
            fwd.clone()
                .any(|i| t.target(&t.entries[i]) == Target::Standard(foo as i32)),
            "{fam:?}: -j FOO still points at FOO"
        );
        assert!(t.valid_hooks & (1 << Hook::Forward.number()) != 0);
    }
}
