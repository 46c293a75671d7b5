//! iptables-nft reads only what is ours (issue 15, item 4), on a real
//! kernel: with foreign rules in FORWARD and a foreign chain, `status` in
//! sync and the repair of `iptables-nft -F` are decided from nf_tables
//! netlink alone (no `iptables-nft-save`, counted through a PATH shim); a
//! changed rule of ours still goes to the text read-back that names it; a
//! reference that is wrong (tampered file) can never make `status` say
//! "in sync"; a change iptables-nft-save cannot print (a match added with
//! nft) is found by the bytes and rewritten; a table iptables-nft-save
//! cannot print is an error, never "our chain is missing" (which made every
//! apply add one more jump); a FIFO in place of the reference file blocks
//! nothing. (Findings of a break-it round, each kept here.)

mod common;

use common::guard_cases::*;
use common::save_counter::SaveCounter;
use common::*;
use std::path::PathBuf;

/// Foreign rules put in FORWARD (below our jump) and in a foreign chain.
const FOREIGN: usize = 2000;

fn policy() -> GuardPolicy {
    GuardPolicy::new(
        Backend::IptablesNft,
        "tunnel",
        &[CONTAINER_CIDR_V4, CONTAINER_CIDR_V6],
        &[&endpoint(API_V4, Some(API_PORT)), &endpoint(API_V6, Some(API_PORT))],
    )
}

/// A fresh topology with our policy applied (through the counter); None
/// where the kernel tests cannot run.
fn installed() -> Option<(Topology, SaveCounter)> {
    if !can_run() {
        return None;
    }
    let topo = Topology::new();
    let c = SaveCounter::new("nft");
    c.guard(&topo.node, &policy().args("apply")).expect_code(0, "apply");
    Some((topo, c))
}

/// `status --output json` through the counter: the run, its findings, and how many saves it ran.
fn status(c: &SaveCounter, ns: &Netns) -> (GuardRun, String, usize) {
    let mut args = policy().args("status");
    args.extend(["--output".into(), "json".into()]);
    let r = c.guard(ns, &args);
    let json: serde_json::Value = serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("no JSON ({e}): {r:?}"));
    (r, json["drift"].to_string(), c.take())
}

/// The file holding the IPv4 reference of `ns` (named by the namespace's
/// cookie, read by the library itself on a thread that joined `ns`).
fn reference_file(ns: &Netns) -> PathBuf {
    use std::os::fd::AsRawFd;
    let path = ns.path();
    let name = std::thread::spawn(move || {
        let file = std::fs::File::open(&path).expect("netns file");
        apiserver_guard::verify::netns::enter(file.as_raw_fd()).expect("setns");
        apiserver_guard::backend::iptables_created::netns_name().expect("netns name")
    })
    .join()
    .expect("netns thread");
    PathBuf::from(format!("/run/apiserver-guard/iptables-nft-reference/{name}-ip"))
}

fn add_foreign_rules(ns: &Netns) {
    let mut text = String::from("*filter\n:FOREIGN - [0:0]\n");
    for i in 0..FOREIGN {
        text.push_str(&format!("-A FORWARD -s 172.16.{}.{}/32 -j ACCEPT\n", i / 256, i % 256));
        text.push_str(&format!("-A FOREIGN -d 172.17.{}.{}/32 -j ACCEPT\n", i / 256, i % 256));
    }
    text.push_str("COMMIT\n");
    let file = std::env::temp_dir().join(format!("ag-foreign-{}", std::process::id()));
    std::fs::write(&file, text).expect("write foreign rules");
    ns.run_ok(&["iptables-nft-restore", "--noflush", file.to_str().unwrap()]);
    let _ = std::fs::remove_file(file);
}

#[test]
fn iptables_nft_reads_only_what_is_ours() {
    if !can_run() {
        return;
    }
    let topo = Topology::new();
    let c = SaveCounter::new("nft");
    let p = policy();
    let apply = p.args("apply");

    // Installed with foreign rules around: the apply reads back through the
    // text once and learns the bytes; from then on status needs no save.
    add_foreign_rules(&topo.node);
    c.guard(&topo.node, &apply).expect_code(0, "apply");
    c.take();
    let (r, drift, saves) = status(&c, &topo.node);
    r.expect_code(0, "status after apply");
    assert_eq!(saves, 0, "status in sync ran iptables-nft-save: {drift}");
    assert!(
        reference_file(&topo.node).is_file(),
        "the reference is kept for the next process"
    );

    // Everything flushed: found and repaired without reading the table.
    for tool in ["iptables-nft", "ip6tables-nft"] {
        topo.node.run_ok(&[tool, "-w", "10", "-F"]);
    }
    let (r, drift, saves) = status(&c, &topo.node);
    r.expect_code(3, "status after -F");
    assert!(
        drift.contains("flushed") && drift.contains("our jump is missing"),
        "{drift}"
    );
    assert_eq!(saves, 0, "a flush is decided from netlink: {drift}");
    c.guard(&topo.node, &apply).expect_code(0, "apply after -F");
    assert_eq!(c.take(), 0, "the repair of a flush read no whole table");
    let (r, _, saves) = status(&c, &topo.node);
    r.expect_code(0, "status after the repair");
    assert_eq!(saves, 0);
    assert_refused_fast(&topo.pod, None, API_V4, API_PORT, "after the repair of -F");

    // A changed rule of ours: the text read-back names it.
    let negated = format!(
        "-R APISERVER-GUARD 2 ! -s {CONTAINER_CIDR_V4} -d {API_V4}/32 -p tcp -m tcp --dport {API_PORT} \
         -m comment --comment apiserver-guard -j REJECT --reject-with tcp-reset"
    );
    let args: Vec<&str> = negated.split_whitespace().collect();
    ipt_ok(&topo.node, false, "nft", &args);
    let (r, drift, saves) = status(&c, &topo.node);
    r.expect_code(3, "status after a negated match");
    assert!(drift.contains(&format!("! -s {CONTAINER_CIDR_V4}")), "{drift}");
    assert!(saves > 0, "a changed rule is named from the text read-back");
    c.guard(&topo.node, &apply)
        .expect_code(0, "apply after the negated match");
    c.take();

    // A wrong reference (one byte of our first rule changed in the file)
    // cannot say "in sync": the bytes differ, the text matches, so the
    // difference is reported as one iptables cannot print; `apply` writes
    // our objects again and learns the right bytes from its own write.
    let file = reference_file(&topo.node);
    let good = std::fs::read_to_string(&file).expect("reference file");
    // The last hex digit of every rule line changed.
    let wrong: String = good
        .lines()
        .map(|l| match l.strip_prefix("rule ") {
            Some(hex) => {
                let flipped = if hex.ends_with('0') { "1" } else { "0" };
                format!("rule {}{flipped}\n", &hex[..hex.len() - 1])
            }
            None => format!("{l}\n"),
        })
        .collect();
    assert_ne!(wrong, good);
    std::fs::write(&file, &wrong).expect("write the wrong reference");
    let (r, drift, saves) = status(&c, &topo.node);
    r.expect_code(3, "status with a wrong reference");
    assert!(drift.contains("of our chain: it reads like ours"), "{drift}");
    assert!(saves > 0, "a reference that does not match is not trusted");
    c.guard(&topo.node, &apply)
        .expect_code(0, "apply with a wrong reference");
    assert_eq!(
        std::fs::read_to_string(&file).expect("reference file"),
        good,
        "learnt again"
    );
    c.take();
    let (r, _, saves) = status(&c, &topo.node);
    r.expect_code(0, "status after relearning");
    assert_eq!(saves, 0);

    // Removal forgets it.
    remove_with(&c, &topo.node);
    assert!(!file.exists(), "remove deleted the reference");
}

fn remove_with(c: &SaveCounter, ns: &Netns) {
    let args = vec!["remove".to_string()];
    c.guard(ns, &args).expect_code(0, "remove");
}

/// FORWARD replaced (with nft) by a chain that is not the built-in one: a
/// regular chain of that name, or a base chain at another hook. A jump there
/// would filter nothing: `status` says so in plain words (exit 3), and
/// `apply` does not delete someone else's chain to fix it (iptables-nft
/// refuses to use it: exit 1, the message passed on).
#[test]
fn a_forward_chain_that_is_not_hooked_at_forward_is_named() {
    for replacement in ["", "{ type filter hook input priority 0; }"] {
        let Some((topo, c)) = installed() else { return };
        let p = policy();
        ipt_ok(
            &topo.node,
            false,
            "nft",
            &[
                "-D",
                "FORWARD",
                "-m",
                "comment",
                "--comment",
                "apiserver-guard",
                "-j",
                "APISERVER-GUARD",
            ],
        );
        topo.node.run_ok(&["nft", "delete", "chain", "ip", "filter", "FORWARD"]);
        let mut add = vec!["nft", "add", "chain", "ip", "filter", "FORWARD"];
        if !replacement.is_empty() {
            add.push(replacement);
        }
        topo.node.run_ok(&add);
        let (r, drift, _) = status(&c, &topo.node);
        r.expect_code(3, &format!("status with FORWARD replaced by {replacement:?}"));
        assert!(
            drift.contains("is not the built-in chain") && drift.contains("not hooked at forward"),
            "{replacement:?}: {drift}"
        );
        let applied = c.guard(&topo.node, &p.args("apply"));
        assert_eq!(applied.code, 1, "{replacement:?}: {applied:?}");
        let chains = topo.node.run_ok(&["nft", "list", "chains", "ip"]);
        assert!(
            chains.contains("chain FORWARD"),
            "the replacement is left alone: {chains}"
        );
    }
}

/// How many jumps to our chain FORWARD holds.
fn jumps_in_forward(ns: &Netns) -> usize {
    ns.run_ok(&["nft", "list", "chain", "ip", "filter", "FORWARD"])
        .matches("jump APISERVER-GUARD")
        .count()
}

/// Our jump replaced (with nft) by one whose extra matches iptables-nft-save
/// does not print (`ip saddr 10.99.0.1` then a zero-mask match it prints as
/// nothing): the text is exactly our jump line, the jump never fires. The
/// bytes see it; `apply` rewrites it; the pod is refused again.
#[test]
fn a_match_iptables_cannot_print_is_found_by_the_bytes_and_rewritten() {
    let Some((topo, c)) = installed() else { return };
    let p = policy();
    let listing = topo
        .node
        .run_ok(&["nft", "-a", "list", "chain", "ip", "filter", "FORWARD"]);
    let handle = listing
        .lines()
        .find(|l| l.contains("jump APISERVER-GUARD"))
        .and_then(|l| l.rsplit("# handle ").next())
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|| panic!("no jump in {listing}"));
    topo.node.run_ok(&[
        "nft",
        "replace",
        "rule",
        "ip",
        "filter",
        "FORWARD",
        "handle",
        &handle,
        "ip",
        "saddr",
        "10.99.0.1",
        "ip",
        "saddr",
        "&",
        "0.0.0.0",
        "==",
        "0.0.0.0",
        "counter",
        "jump",
        "APISERVER-GUARD",
        "comment",
        "\"apiserver-guard\"",
    ]);
    let text = ipt_ok(&topo.node, false, "nft", &["-S", "FORWARD"]);
    assert!(
        text.contains("-A FORWARD -m comment --comment apiserver-guard -j APISERVER-GUARD"),
        "the tampered jump must read as ours: {text}"
    );
    let (r, drift, _) = status(&c, &topo.node);
    r.expect_code(3, "status with a hidden match in our jump");
    assert!(drift.contains("our jump in FORWARD: it reads like ours"), "{drift}");
    c.guard(&topo.node, &p.args("apply")).expect_code(0, "apply");
    let (r, drift, _) = status(&c, &topo.node);
    r.expect_code(0, &format!("status after the rewrite: {drift}"));
    assert_eq!(jumps_in_forward(&topo.node), 1);
    assert_refused_fast(&topo.pod, None, API_V4, API_PORT, "after rewriting the jump");
}

/// Replaces our jump in FORWARD with one that has a match iptables-nft-save
/// does not print (`ip saddr 10.99.0.1` with a zero mask: never fires).
fn hide_a_match_in_our_jump(node: &Netns) {
    hide_matches_in_our_jump(node, 1);
}

/// As `hide_a_match_in_our_jump`, the hidden match `times` over.
fn hide_matches_in_our_jump(node: &Netns, times: usize) {
    let listing = node.run_ok(&["nft", "-a", "list", "chain", "ip", "filter", "FORWARD"]);
    let handle = listing
        .lines()
        .find(|l| l.contains("jump APISERVER-GUARD"))
        .and_then(|l| l.rsplit("# handle ").next())
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|| panic!("no jump in {listing}"));
    let rule = format!(
        "{}counter jump APISERVER-GUARD comment \"apiserver-guard\"",
        "ip saddr 10.99.0.1 ip saddr & 0.0.0.0 == 0.0.0.0 ".repeat(times)
    );
    let mut argv = vec!["nft", "replace", "rule", "ip", "filter", "FORWARD", "handle", &handle];
    argv.extend(rule.split(' '));
    node.run_ok(&argv);
}

/// Another agent committing as fast as it can in its own table (kube-proxy's
/// churn, harder): our writes are proven all the same, by the commits the
/// kernel notifies around them (none touched our objects), where requiring
/// our write to be the only commit learnt 4 applies in 10. Then a hidden
/// match added while the churn goes on is found by the bytes.
#[test]
fn the_bytes_are_learnt_amid_another_agents_commits() {
    let Some((topo, c)) = installed() else { return };
    let p = policy();
    let node = &topo.node;
    for _ in 0..2 {
        node.spawn(&[
            "sh",
            "-c",
            "while :; do nft add table ip churn; nft delete table ip churn; done",
        ]);
    }
    std::thread::sleep(std::time::Duration::from_millis(200));
    let mut learnt = 0;
    for _ in 0..10 {
        let r = c.guard(node, &["remove".to_string()]);
        assert_eq!(r.code, 0, "remove: {r:?}");
        c.guard(node, &p.args("apply")).expect_code(0, "apply amid churn");
        c.take();
        let (r, drift, saves) = status(&c, node);
        r.expect_code(0, &format!("status amid churn: {drift}"));
        learnt += usize::from(saves == 0);
    }
    eprintln!("learnt amid churn: {learnt} of 10 applies");
    assert_eq!(learnt, 10, "every apply amid churn proves its write");
    hide_a_match_in_our_jump(node);
    let (r, drift, _) = status(&c, node);
    r.expect_code(3, "a hidden match amid churn");
    assert!(drift.contains("our jump in FORWARD: it reads like ours"), "{drift}");
}

/// Our jump made longer than a page with hidden matches (a helper's hider
/// piled them up): a dump on a fresh socket ended empty, so rule 1 read as
/// absent and `status` said in sync while the pod was served. Rule 1 is read
/// whole now, and a hook chain with rules but no rule read is never "empty".
#[test]
fn a_rule_1_longer_than_a_page_is_read_and_compared() {
    let Some((topo, c)) = installed() else { return };
    let p = policy();
    hide_matches_in_our_jump(&topo.node, 24);
    let listing = topo
        .node
        .run_ok(&["nft", "--debug=netlink", "list", "chain", "ip", "filter", "FORWARD"]);
    assert!(
        listing.len() > 4096,
        "rule 1 longer than a page: {} bytes of listing",
        listing.len()
    );
    assert_served(
        &curl(&topo.pod, API_V4, API_PORT, MAX_TIME),
        "the long hidden jump never fires",
    );
    let (r, drift, _) = status(&c, &topo.node);
    r.expect_code(3, "status with a long hidden jump");
    assert!(drift.contains("our jump in FORWARD: it reads like ours"), "{drift}");
    c.guard(&topo.node, &p.args("apply")).expect_code(0, "apply");
    status(&c, &topo.node).0.expect_code(0, "after the rewrite");
    assert_refused_fast(&topo.pod, None, API_V4, API_PORT, "after rewriting the long jump");
}

/// A rule iptables cannot express anywhere in `ip filter` (here an nft
/// INPUT chain with `ct state established accept`): iptables-nft-save then
/// prints only "Table `filter' is incompatible". What the bytes decide still
/// works; what needs the text is an error that names the cause, and nothing
/// is written (it used to read as "our chain is missing" and every apply
/// added one more jump).
#[test]
fn a_table_iptables_cannot_print_is_an_error_and_writes_nothing() {
    let Some((topo, c)) = installed() else { return };
    let p = policy();
    topo.node.run_ok(&[
        "nft",
        "add",
        "chain",
        "ip",
        "filter",
        "INPUT",
        "{ type filter hook input priority 0; policy accept; }",
    ]);
    topo.node.run_ok(&[
        "nft",
        "add",
        "rule",
        "ip",
        "filter",
        "INPUT",
        "ct",
        "state",
        "established",
        "accept",
    ]);
    let (r, _, _) = status(&c, &topo.node);
    r.expect_code(0, "status in sync is decided by the bytes");
    // A change only the text could name.
    let negated = format!(
        "-R APISERVER-GUARD 2 ! -s {CONTAINER_CIDR_V4} -d {API_V4}/32 -p tcp -m tcp --dport {API_PORT} \
         -m comment --comment apiserver-guard -j REJECT --reject-with tcp-reset"
    );
    let args: Vec<&str> = negated.split_whitespace().collect();
    ipt_ok(&topo.node, false, "nft", &args);
    let mut json_args = p.args("status");
    json_args.extend(["--output".into(), "json".into()]);
    let r = c.guard(&topo.node, &json_args);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stderr.contains("is incompatible") && r.stderr.contains("nftables backend"),
        "{r:?}"
    );
    for _ in 0..3 {
        let r = c.guard(&topo.node, &p.args("apply"));
        assert_eq!(r.code, 1, "{r:?}");
    }
    assert_eq!(jumps_in_forward(&topo.node), 1, "no jump added by a failed read");
    let r = c.guard(&topo.node, &["remove".to_string()]);
    assert_eq!(r.code, 1, "remove cannot read either, and says so: {r:?}");
    let ours = topo.node.run_ok(&["nft", "list", "chains", "ip"]);
    assert!(ours.contains("APISERVER-GUARD"), "{ours}");
}

/// A FIFO where the reference file goes blocks nothing: the reference is
/// simply absent (the text read-back decides), and the next apply replaces it.
#[test]
fn a_fifo_in_place_of_the_reference_blocks_nothing() {
    let Some((topo, c)) = installed() else { return };
    let p = policy();
    let file = reference_file(&topo.node);
    std::fs::remove_file(&file).expect("remove the reference");
    let made = std::process::Command::new("mkfifo")
        .arg(&file)
        .status()
        .expect("mkfifo");
    assert!(made.success());
    let path = format!("PATH={}", std::env::var("PATH").unwrap_or_default());
    let mut args = vec![
        "timeout".to_string(),
        "20".to_string(),
        "env".to_string(),
        path,
        guard_bin().to_string(),
    ];
    args.extend(p.args("status"));
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = topo.node.run(&argv);
    assert_eq!(out.status.code(), Some(0), "status with a FIFO as reference: {out:?}");
    c.guard(&topo.node, &p.args("apply")).expect_code(0, "apply");
    assert!(
        std::fs::metadata(&file).expect("reference").is_file(),
        "replaced by a file"
    );
}

/// `ip filter` switched off with nft (`flags dormant`): no rule in it runs,
/// the pod gets through, and neither our rules nor their text changed. The
/// table's flags are read over netlink: `status` names it (exit 3); we do
/// not switch the table back on ourselves; once its owner does, in sync.
#[test]
fn a_dormant_filter_table_is_named() {
    let Some((topo, c)) = installed() else { return };
    topo.node
        .run_ok(&["nft", "add", "table", "ip", "filter", "{ flags dormant; }"]);
    let served = curl(&topo.pod, API_V4, API_PORT, MAX_TIME);
    assert!(
        served.served(),
        "the attack is real: a dormant table filters nothing: {served:?}"
    );
    let (r, drift, _) = status(&c, &topo.node);
    r.expect_code(3, "status with a dormant table");
    assert!(
        drift.contains("table filter") && drift.contains("is dormant"),
        "{drift}"
    );
    topo.node.run_ok(&["nft", "add", "table", "ip", "filter"]);
    let (r, drift, _) = status(&c, &topo.node);
    r.expect_code(0, &format!("status once the table runs again: {drift}"));
    assert_refused_fast(&topo.pod, None, API_V4, API_PORT, "the table runs again");
}

/// A reference file forged by another root process (the bytes of a chain
/// that blocks another CIDR, under the key of our policy) next to that
/// chain: the daemon reads no reference file, it trusts only what it wrote
/// itself, so it finds our chain wrong by the text and rewrites it.
#[test]
fn the_daemon_trusts_no_reference_file() {
    if !can_run() {
        return;
    }
    use common::daemon_cases::{daemon_args, Daemon};
    let topo = Topology::new();
    let c = SaveCounter::new("nft");
    let ours = policy();
    let file = reference_file(&topo.node);
    c.guard(&topo.node, &ours.args("apply")).expect_code(0, "apply ours");
    let our_key = std::fs::read_to_string(&file)
        .expect("our reference")
        .lines()
        .find(|l| l.starts_with("key "))
        .expect("a key line")
        .to_string();
    // Another chain, for 10.99.0.0/16 only, with our key put on its bytes.
    let mut other = policy();
    other.container_cidrs = vec!["10.99.0.0/16".into(), CONTAINER_CIDR_V6.into()];
    c.guard(&topo.node, &other.args("apply"))
        .expect_code(0, "apply the other policy");
    let forged: String = std::fs::read_to_string(&file)
        .expect("the other reference")
        .lines()
        .map(|l| {
            if l.starts_with("key ") {
                format!("{our_key}\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    std::fs::write(&file, forged).expect("forge");
    let d = Daemon::spawn(&topo.node, &daemon_args(&ours, &[]));
    d.wait_ready();
    assert_refused_fast(&topo.pod, None, API_V4, API_PORT, "the daemon rewrote the forged chain");
}
