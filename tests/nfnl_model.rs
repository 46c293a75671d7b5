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
use apiserver_guard::core::model::Blocklist;
use apiserver_guard::core::nft_decode::from_dump;
use apiserver_guard::core::nft_desired::desired;
use apiserver_guard::core::nft_diff::differences;
use apiserver_guard::core::nft_model::{TableModel, TABLE_F_OWNER, TABLE_F_PERSIST};
use apiserver_guard::core::nft_text::render;
use apiserver_guard::core::nft_wire::messages;
use apiserver_guard::core::policy::{Action, BackendChoice, Mode, Policy};

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
    for (local, action) in [(false, Action::Reject), (true, Action::Reject), (false, Action::Drop)] {
        let topo = Topology::new();
        let want = desired(&blocklist(local, action));
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
            Action::Audit => unreachable!("not in this list"),
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
