//! The two halves of the in-process nftables path meet on a real kernel: the
//! typed model of our table (`core::nft_desired`, `nft_wire`) sent as one
//! batch over our own netlink socket (`backend::nfnl`), read back with
//! `dump_table` and decoded (`nft_decode`) to exactly the model, listed by
//! `nft` as exactly what `nft_text::render` prints, and blocking real
//! packets (curl from the pod namespace). Also: the same table owned by the
//! socket (flags owner|persist) survives a foreign `nft flush ruleset`.

mod common;

use apiserver_guard::backend::nfnl::{dump_table, transact, BatchMsg, NfnlSocket, NFPROTO_INET};
use apiserver_guard::core::address::{parse_cidr, parse_endpoint};
use apiserver_guard::core::attempt_log::DEFAULT_LOG_GROUP;
use apiserver_guard::core::model::Blocklist;
use apiserver_guard::core::nft_decode::from_dump;
use apiserver_guard::core::nft_desired::desired;
use apiserver_guard::core::nft_diff::differences;
use apiserver_guard::core::nft_model::{counters, TableModel, TABLE_F_OWNER, TABLE_F_PERSIST};
use apiserver_guard::core::nft_text::render;
use apiserver_guard::core::nft_wire::messages;
use apiserver_guard::core::policy::{Action, BackendChoice, Mode, Policy};
use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::guard_cases::*;
use common::*;

fn blocklist(local: bool, action: Action) -> Blocklist {
    blocklist_logged(local, action, None)
}

/// With `log_group`, every block (or audit) rule follows its log rule.
fn blocklist_logged(local: bool, action: Action, log_group: Option<u16>) -> Blocklist {
    let apis = [format!("{API_V4}:{API_PORT}"), format!("[{API_V6}]:{API_PORT}")];
    let apiservers: Vec<_> = apis.iter().map(|a| parse_endpoint(a).unwrap()).collect();
    let policy = Policy {
        sources: [CONTAINER_CIDR_V4, CONTAINER_CIDR_V6]
            .iter()
            .map(|c| parse_cidr("x", c).unwrap())
            .collect(),
        exempt: Vec::new(),
        local_apiservers: if local {
            vec![parse_endpoint(&format!("{NODE_API_V4}:6443")).unwrap()]
        } else {
            Vec::new()
        },
        apiservers,
        mode: Mode::Both,
        action,
        backend: BackendChoice::Nftables,
        dynamic_exempt: true,
        log_group,
        origins: Default::default(),
    };
    Blocklist::from_policy(&policy)
}

/// Sends the model as one batch from inside `ns`, keeping the socket (and so
/// an owned table) alive while `then` runs there too.
fn install_and<T: Send>(ns: &Netns, model: &TableModel, then: impl FnOnce(&NfnlSocket) -> T + Send) -> T {
    ns.in_thread(|| {
        let sock = NfnlSocket::open().expect("netlink socket");
        transact(&sock, BatchMsg::all(NFPROTO_INET, messages(model))).expect("batch applied");
        then(&sock)
    })
    .expect("enter netns")
}

/// Our table read back over netlink from inside `ns`.
fn read_back(ns: &Netns) -> TableModel {
    ns.in_thread(|| {
        let sock = NfnlSocket::open().expect("netlink socket");
        from_dump(&dump_table(&sock, NFPROTO_INET, "apiserver_guard").expect("dump")).expect("decode")
    })
    .expect("enter netns")
}

/// Packets counted by each rule of chain guard, by comment.
fn read_counters(ns: &Netns) -> BTreeMap<String, u64> {
    counters(&read_back(ns))
        .into_iter()
        .map(|c| (c.comment, c.packets))
        .collect()
}

/// `nft list table` without counter values, handles and the `# progname` note, whitespace squeezed.
fn normalised(text: &str) -> Vec<String> {
    let mut lines: Vec<String> = text
        .lines()
        .map(|l| {
            let l = l.split(" # ").next().unwrap_or(l);
            let words: Vec<&str> = l.split_whitespace().collect();
            let mut out = Vec::new();
            let mut i = 0;
            while i < words.len() {
                if words[i] == "counter" && words.get(1 + i) == Some(&"packets") {
                    out.push("counter");
                    i += 5;
                    continue;
                }
                out.push(words[i]);
                i += 1;
            }
            out.join(" ")
        })
        .filter(|l| !l.is_empty())
        .collect();
    // Hash-set elements come in the kernel's order: compare element lines as sets.
    lines.sort();
    lines
}

#[test]
fn the_model_sent_over_netlink_reads_back_exactly_lists_as_rendered_and_blocks() {
    if !can_run() {
        return;
    }
    let logged = Some(DEFAULT_LOG_GROUP);
    for (local, action, log_group) in [
        (false, Action::Reject, None),
        (true, Action::Reject, None),
        (false, Action::Drop, None),
        (true, Action::Reject, logged),
        (true, Action::Audit, logged),
    ] {
        let topo = Topology::new();
        let want = desired(&blocklist_logged(local, action, log_group));
        let got = install_and(&topo.node, &want, |sock| {
            from_dump(&dump_table(sock, NFPROTO_INET, "apiserver_guard").expect("dump")).expect("decode")
        });
        let diff = differences(&want, &got);
        assert!(diff.is_empty(), "read back differs: {diff:?}");
        let listed = topo.node.run_ok(&["nft", "list", "table", "inet", "apiserver_guard"]);
        assert_eq!(
            normalised(&listed),
            normalised(&render(&want)),
            "nft list vs render\n--- nft\n{listed}\n--- render\n{}",
            render(&want)
        );
        match action {
            Action::Reject => {
                assert_refused_fast(&topo.pod, None, API_V4, API_PORT, "pod -> API_V4 (netlink-installed)");
                assert_refused_fast(&topo.pod, None, API_V6, API_PORT, "pod -> API_V6 (netlink-installed)");
            }
            Action::Drop => assert!(curl(&topo.pod, API_V4, API_PORT, 2).timed_out(), "drop: pod times out"),
            Action::Audit => {
                assert_served(
                    &curl(&topo.pod, API_V4, API_PORT, MAX_TIME),
                    "audit: pod -> API_V4 served",
                );
                assert_served(
                    &curl(&topo.pod, API_V6, API_PORT, MAX_TIME),
                    "audit: pod -> API_V6 served",
                );
            }
        }
        if log_group.is_some() {
            // Each attempt hit the log rule and the rule after it.
            let c = read_counters(&topo.node);
            let verb = if action == Action::Audit { "audit" } else { "block" };
            for rule in [format!("{verb}-tcp-port-v4"), format!("{verb}-tcp-port-v6")] {
                assert!(c[&rule] >= 1, "{rule} counted nothing: {c:?}");
                // By any of its log rules (a connect by the connect rules).
                let logged: u64 = c
                    .iter()
                    .filter(|(k, _)| k.starts_with(&format!("log-{rule}")))
                    .map(|(_, v)| v)
                    .sum();
                assert!(logged >= 1, "log-{rule} logged nothing: {c:?}");
            }
        } else {
            assert!(!render(&want).contains(" log "), "no log rules without a group");
            assert!(!want.sets.contains_key("flows_v4"), "no meter without a group");
        }
        assert_served(&curl(&topo.node, API_V4, API_PORT, MAX_TIME), "node -> API_V4");
        assert_served(&curl(&topo.pod, OTHER_V4, API_PORT, MAX_TIME), "pod -> OTHER_V4");
    }
}

#[test]
fn an_owned_table_survives_a_foreign_flush_while_its_socket_lives() {
    if !can_run() {
        return;
    }
    let topo = Topology::new();
    let mut want = desired(&blocklist(false, Action::Reject));
    want.flags |= TABLE_F_OWNER | TABLE_F_PERSIST;
    let node = &topo.node;
    install_and(node, &want, |sock| {
        // Another process flushes the ruleset and tries to delete our table.
        let flush = std::process::Command::new("nft")
            .args(["flush", "ruleset"])
            .output()
            .expect("nft");
        assert!(flush.status.success(), "flush ruleset: {flush:?}");
        let delete = std::process::Command::new("nft")
            .args(["delete", "table", "inet", "apiserver_guard"])
            .output()
            .expect("nft");
        assert!(!delete.status.success(), "deleting an owned table must be refused");
        let got = from_dump(&dump_table(sock, NFPROTO_INET, "apiserver_guard").expect("dump")).expect("decode");
        assert!(differences(&want, &got).is_empty(), "{:?}", differences(&want, &got));
    });
    // The socket is closed now: persist leaves the table in place, unowned.
    assert!(node
        .run_ok(&["nft", "list", "table", "inet", "apiserver_guard"])
        .contains("sources_v4"));
    assert_refused_fast(
        &topo.pod,
        None,
        API_V4,
        API_PORT,
        "pod after the owner's socket closed (persist)",
    );
}

/// A second pod address on the pod's interface (the node routes the /24 to it).
const POD2_V4: &str = "10.0.1.3";

#[test]
fn a_flooding_pod_does_not_hide_another_pods_single_attempt() {
    if !can_run() {
        return;
    }
    let topo = Topology::new();
    topo.pod
        .ip_ok(&["addr", "add", &format!("{POD2_V4}/24"), "dev", POD_IF]);
    let want = desired(&blocklist_logged(false, Action::Reject, Some(DEFAULT_LOG_GROUP)));
    install_and(&topo.node, &want, |_| ());
    // One pod connects as fast as it can for a second: every SYN is refused at once.
    let api: SocketAddr = format!("{API_V4}:{API_PORT}").parse().unwrap();
    let started = Instant::now();
    let flood = topo
        .pod
        .in_thread(|| {
            let mut n = 0u64;
            while started.elapsed() < Duration::from_secs(1) {
                let r = TcpStream::connect_timeout(&api, Duration::from_millis(500));
                assert!(r.is_err(), "the flood got through");
                n += 1;
            }
            n
        })
        .expect("enter netns");
    let after_flood = read_counters(&topo.node);
    let secs = started.elapsed().as_secs_f64().ceil() as u64;
    // Logged by any log rule: the source's first packet by a rule for new
    // sources, connects by the connect rules (over their limit, by none).
    let logged_by = |c: &BTreeMap<String, u64>| {
        c["log-block-tcp-port-v4-flow"]
            + c["log-block-tcp-port-v4-flow-new-source"]
            + c["log-block-tcp-port-v4-connect"]
            + c["log-block-tcp-port-v4-connect-new-source"]
    };
    let logged = logged_by(&after_flood);
    eprintln!("flood: {flood} attempts blocked, {logged} logged in ~{secs}s");
    assert!(flood >= 200, "the flood is a flood: {flood}");
    assert_eq!(
        after_flood["block-tcp-port-v4"], flood,
        "the block never depends on the log path"
    );
    assert!(
        (1..=20 + 10 * secs + 2).contains(&logged),
        "the meter of connects caps the flooding pod at burst 20 + 10/s: {logged} logged of {flood}"
    );
    // The other pod's one attempt, while the first one is over its limit.
    assert_refused(&curl_from(&topo.pod, POD2_V4, API_V4, API_PORT, MAX_TIME), "second pod");
    let after = read_counters(&topo.node);
    assert_eq!(
        logged_by(&after),
        logged + 1,
        "the second pod's single attempt is logged: {after:?}"
    );
    assert_eq!(after["block-tcp-port-v4"], flood + 1);
    // Each source has its own element (and limit) in the meter (read with nft:
    // our read-back skips the meters' elements, which are state); they are no drift.
    // Connects are metered in the meter of connects.
    let meter = topo
        .node
        .run_ok(&["nft", "list", "set", "inet", "apiserver_guard", "connects_v4"]);
    assert!(
        meter.contains(POD_V4) && meter.contains(POD2_V4),
        "meter elements:\n{meter}"
    );
    let t = read_back(&topo.node);
    assert!(
        t.sets["connects_v4"].learned.0.is_empty() && t.sets["flows_v4"].learned.0.is_empty(),
        "the read-back skips learned elements"
    );
    assert!(differences(&want, &t).is_empty(), "{:?}", differences(&want, &t));
}

#[test]
fn a_blocked_or_audited_attempt_reaches_the_nflog_group_named_by_its_rule() {
    use apiserver_guard::core::attempt_log::{parse_prefix, AttemptAction, LOG_SNAPLEN};
    use common::nflog_probe::NflogProbe;
    if !can_run() {
        return;
    }
    const GROUP: u16 = 4242;
    for (action, verb, seen) in [
        (Action::Reject, "block", AttemptAction::Blocked),
        (Action::Audit, "audit", AttemptAction::Audited),
    ] {
        let topo = Topology::new();
        let want = desired(&blocklist_logged(false, action, Some(GROUP)));
        install_and(&topo.node, &want, |_| ());
        let got = topo
            .node
            .in_thread(|| {
                let probe = NflogProbe::bind(GROUP).expect("bind the NFLOG group");
                let v4 = curl(&topo.pod, API_V4, API_PORT, MAX_TIME);
                let v6 = curl(&topo.pod, API_V6, API_PORT, MAX_TIME);
                (probe.collect(2, Duration::from_secs(3)), v4, v6)
            })
            .expect("enter netns");
        let (logged, v4, v6) = got;
        match action {
            Action::Audit => {
                assert_served(&v4, "audit: v4 served");
                assert_served(&v6, "audit: v6 served");
            }
            _ => {
                assert_refused(&v4, "reject: v4 refused");
                assert_refused(&v6, "reject: v6 refused");
            }
        }
        eprintln!("{verb}: {logged:?}");
        for (fam, pod) in [("v4", POD_V4), ("v6", POD_V6)] {
            let prefix = format!("apiserver-guard:{verb}-tcp-port-{fam}");
            let hit = logged
                .iter()
                .find(|l| l.prefix == prefix)
                .unwrap_or_else(|| panic!("no packet logged with prefix {prefix}: {logged:?}"));
            assert_eq!(hit.source, Some(pod.parse().unwrap()), "{prefix}: the pod's address");
            assert!(
                (40..=LOG_SNAPLEN as usize).contains(&hit.copied),
                "{prefix}: {} bytes copied, snaplen {LOG_SNAPLEN}",
                hit.copied
            );
            assert_eq!(parse_prefix(&hit.prefix).map(|(_, a)| a), Some(seen));
        }
    }
}
