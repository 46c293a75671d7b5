//! Refused input and runtime failures, on a real kernel: every bad value
//! (flags, environment, config file) exits 2 with a message naming the
//! problem and leaves the firewall byte-identical; the self-lockout guard
//! refuses OUTPUT-hook policies that would cut the node off; flags > env >
//! file precedence; missing tools and missing privileges exit 1 without
//! touching anything; `render` prints the payload and changes nothing.
//!
//! Everything runs inside the test's own network namespaces.

mod common;

use common::bad_input_cases::*;
use common::*;

const BACKENDS: [&str; 3] = ["nftables", "iptables-nft", "iptables-legacy"];
const MAX_TIME: u32 = 5;

/// Marker of our own objects in a `firewall_snapshot`, per backend.
fn our_marker(backend: &str) -> &'static str {
    match backend {
        "nftables" => "table inet apiserver_guard",
        // iptables-nft state shows up in the nft section, in nft syntax.
        "iptables-nft" => "chain APISERVER-GUARD",
        "iptables-legacy" => ":APISERVER-GUARD",
        other => panic!("no marker for backend {other}"),
    }
}

fn owned(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// The good policy (tunnel mode) for `backend`, without the subcommand.
fn good_args(backend: &str, config: &str) -> Vec<String> {
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

fn with_cmd<'a>(cmd: &'a str, args: &'a [String]) -> Vec<&'a str> {
    std::iter::once(cmd).chain(args.iter().map(String::as_str)).collect()
}

fn run(ns: &Netns, args: &[&str]) -> GuardRun {
    guard_run(ns, &[], &[], args)
}

#[track_caller]
fn assert_code(r: &GuardRun, code: i32, what: &str) {
    assert_eq!(
        r.code,
        Some(code),
        "{what}: expected exit {code}\nstdout: {}\nstderr: {}",
        r.stdout,
        r.stderr
    );
}

/// Firewall state that is not ours, in nftables and in iptables-legacy (v4 and v6).
fn add_foreign_state(ns: &Netns) {
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

const FOREIGN_MARKERS: [&str; 3] = ["foreign-legacy", "foreign-legacy6", "foreign-nft"];

/// Lines only in `a` / only in `b`, for readable snapshot mismatches.
fn snapshot_diff(a: &str, b: &str) -> String {
    let only_a: Vec<&str> = a.lines().filter(|l| !b.lines().any(|x| x == *l)).collect();
    let only_b: Vec<&str> = b.lines().filter(|l| !a.lines().any(|x| x == *l)).collect();
    format!(
        "  only before: {only_a:?}\n  only after:  {only_b:?}\n  (full before/after lengths {} / {})",
        a.len(),
        b.len()
    )
}

#[track_caller]
fn assert_same_snapshot(before: &str, after: &str, what: &str) {
    assert!(
        before == after,
        "{what}: firewall changed\n{}",
        snapshot_diff(before, after)
    );
}

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

// ---------------------------------------------------------------------------
// Self-lockout guard
// ---------------------------------------------------------------------------

/// Address inside the container CIDR that the node uses to reach the apiserver.
const LOCKOUT_SRC_V4: &str = "10.0.250.7";
const LOCKOUT_SRC_V6: &str = "fd00:10:0:250::7";

/// Make the node reach `API_V4`/`API_V6` from an address inside the container CIDRs.
fn route_node_from_container_cidr(topo: &Topology) {
    let node = &topo.node;
    node.ip_ok(&["addr", "add", &format!("{LOCKOUT_SRC_V4}/32"), "dev", NODE_API_IF]);
    node.ip_ok(&[
        "addr",
        "add",
        &format!("{LOCKOUT_SRC_V6}/128"),
        "dev",
        NODE_API_IF,
        "nodad",
    ]);
    node.ip_ok(&[
        "-4",
        "route",
        "replace",
        &format!("{API_V4}/32"),
        "dev",
        NODE_API_IF,
        "src",
        LOCKOUT_SRC_V4,
    ]);
    node.ip_ok(&[
        "-6",
        "route",
        "replace",
        &format!("{API_V6}/128"),
        "dev",
        NODE_API_IF,
        "src",
        LOCKOUT_SRC_V6,
    ]);
    // Preconditions: the kernel picks that source, and the node is served from it.
    for (api, src) in [(API_V4, LOCKOUT_SRC_V4), (API_V6, LOCKOUT_SRC_V6)] {
        let got = node.run_ok(&["ip", "route", "get", api]);
        assert!(
            got.contains(&format!("src {src} ")),
            "route to {api} should use src {src}: {got}"
        );
    }
    let held = HeldConnection::open(node, API_V4, API_PORT).expect("node -> API_V4");
    assert_eq!(held.stream().local_addr().unwrap().ip().to_string(), LOCKOUT_SRC_V4);
    let held6 = HeldConnection::open(node, API_V6, API_PORT).expect("node -> API_V6");
    assert_eq!(held6.stream().local_addr().unwrap().ip().to_string(), LOCKOUT_SRC_V6);
    assert!(
        curl(node, API_V4, API_PORT, MAX_TIME).served(),
        "node -> API_V4 before apply"
    );
}

#[test]
fn self_lockout_is_refused_in_vpc_and_both_modes() {
    if !common::can_run() {
        return;
    }
    let topo = Topology::new();
    route_node_from_container_cidr(&topo);
    let dir = TempDir::new("lockout");
    let empty = dir.empty_config();
    let api_v6 = format!("[{API_V6}]:{API_PORT}");
    let api_v4 = format!("{API_V4}:{API_PORT}");

    // (description, extra args, extra env, phrases)
    let v4 = |mode: &'static str, backend: &'static str| {
        (
            format!("v4 --mode {mode} --backend {backend}"),
            owned(&[
                "--container-cidr",
                CONTAINER_CIDR_V4,
                "--apiserver",
                &api_v4,
                "--mode",
                mode,
                "--backend",
                backend,
                "--config",
                &empty,
            ]),
            Vec::<(&str, &str)>::new(),
            owned(&["self-lockout", LOCKOUT_SRC_V4, &api_v4, CONTAINER_CIDR_V4]),
        )
    };
    let mut cases = Vec::new();
    for backend in BACKENDS {
        cases.push(v4("vpc", backend));
        cases.push(v4("both", backend));
    }
    cases.push((
        "v4, default mode (both), apiserver without port".into(),
        owned(&[
            "--container-cidr",
            CONTAINER_CIDR_V4,
            "--apiserver",
            API_V4,
            "--backend",
            "nftables",
            "--config",
            &empty,
        ]),
        vec![],
        owned(&["self-lockout", LOCKOUT_SRC_V4, CONTAINER_CIDR_V4]),
    ));
    cases.push((
        "v4, mode vpc from APISERVER_GUARD_MODE".into(),
        owned(&[
            "--container-cidr",
            CONTAINER_CIDR_V4,
            "--apiserver",
            &api_v4,
            "--backend",
            "nftables",
            "--config",
            &empty,
        ]),
        vec![("APISERVER_GUARD_MODE", "vpc")],
        owned(&["self-lockout", LOCKOUT_SRC_V4]),
    ));
    cases.push((
        "v6 --mode vpc".into(),
        owned(&[
            "--container-cidr",
            CONTAINER_CIDR_V6,
            "--apiserver",
            &api_v6,
            "--mode",
            "vpc",
            "--backend",
            "nftables",
            "--config",
            &empty,
        ]),
        vec![],
        owned(&["self-lockout", LOCKOUT_SRC_V6, &api_v6, CONTAINER_CIDR_V6]),
    ));
    cases.push((
        "exempt covers another address only".into(),
        owned(&[
            "--container-cidr",
            CONTAINER_CIDR_V4,
            "--apiserver",
            &api_v4,
            "--mode",
            "vpc",
            "--exempt",
            "10.0.251.0/24",
            "--backend",
            "nftables",
            "--config",
            &empty,
        ]),
        vec![],
        owned(&["self-lockout", LOCKOUT_SRC_V4]),
    ));

    let check_all = |stage: &str| {
        let before = firewall_snapshot(&topo.node);
        for (what, args, env, phrases) in &cases {
            let r = guard_run(&topo.node, &[], env, &with_cmd("apply", args));
            assert_code(&r, 2, &format!("{stage}: apply {what}"));
            for p in phrases {
                assert!(
                    r.stderr.contains(p.as_str()),
                    "{stage}: apply {what}: stderr lacks {p:?}: {}",
                    r.stderr
                );
            }
            assert_same_snapshot(
                &before,
                &firewall_snapshot(&topo.node),
                &format!("{stage}: apply {what}"),
            );
        }
        assert!(
            curl(&topo.node, API_V4, API_PORT, MAX_TIME).served(),
            "{stage}: node cut off"
        );
    };

    // Nothing installed yet: refusing must not install anything.
    check_all("fresh node");

    // FORWARD cannot cut the node: tunnel mode is accepted and blocks the pod.
    let tunnel = owned(&[
        "--container-cidr",
        &format!("{CONTAINER_CIDR_V4},{CONTAINER_CIDR_V6}"),
        "--apiserver",
        &format!("{api_v4},{api_v6}"),
        "--mode",
        "tunnel",
        "--backend",
        "nftables",
        "--config",
        &empty,
    ]);
    let r = run(&topo.node, &with_cmd("apply", &tunnel));
    assert_code(&r, 0, "apply --mode tunnel with the node's source in the CIDR");
    assert!(
        curl(&topo.node, API_V4, API_PORT, MAX_TIME).served(),
        "tunnel: node must still be served"
    );
    assert!(
        curl(&topo.node, API_V6, API_PORT, MAX_TIME).served(),
        "tunnel: node v6 must still be served"
    );
    let c = curl(&topo.pod, API_V4, API_PORT, MAX_TIME);
    assert!(c.refused(), "tunnel: pod must be blocked, got {c:?}");

    // With a block in place, a refused lockout policy leaves it as it is.
    check_all("after tunnel apply");
    assert_code(
        &run(&topo.node, &with_cmd("status", &tunnel)),
        0,
        "tunnel block still in sync",
    );

    // Exempting the node's own address makes vpc and both acceptable.
    for mode in ["vpc", "both"] {
        let args = owned(&[
            "--container-cidr",
            &format!("{CONTAINER_CIDR_V4},{CONTAINER_CIDR_V6}"),
            "--apiserver",
            &format!("{api_v4},{api_v6}"),
            "--mode",
            mode,
            "--exempt",
            &format!("{LOCKOUT_SRC_V4}/32,{LOCKOUT_SRC_V6}/128"),
            "--backend",
            "nftables",
            "--config",
            &empty,
        ]);
        let r = run(&topo.node, &with_cmd("apply", &args));
        assert_code(&r, 0, &format!("apply --mode {mode} --exempt <node address>"));
        assert!(
            curl(&topo.node, API_V4, API_PORT, MAX_TIME).served(),
            "{mode} + exempt: node must be served"
        );
        assert!(
            curl(&topo.node, API_V6, API_PORT, MAX_TIME).served(),
            "{mode} + exempt: node v6 must be served"
        );
        // Another container-CIDR address of the node (on lo) is still blocked in OUTPUT.
        let c = curl_from(&topo.node, NODE_LOCAL_POD_V4, API_V4, API_PORT, MAX_TIME);
        assert!(
            c.refused(),
            "{mode}: node-local container source must be blocked, got {c:?}"
        );
    }
    let c = curl(&topo.pod, API_V4, API_PORT, MAX_TIME);
    assert!(c.refused(), "both + exempt: pod must be blocked, got {c:?}");
}

// ---------------------------------------------------------------------------
// Precedence: flags > env > file > defaults
// ---------------------------------------------------------------------------

/// What a `render` output says, for either backend format.
#[derive(Debug, PartialEq, Eq)]
struct Rendered {
    backend: String,
    output_hook: bool,
    forward_hook: bool,
    drop: bool,
}

fn rendered(out: &str) -> Rendered {
    let first = out.lines().next().unwrap_or_default();
    let backend = first
        .strip_prefix("# backend: ")
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("render output lacks the '# backend:' header:\n{out}"))
        .to_owned();
    Rendered {
        output_hook: out.contains("chain output {") || out.contains("-I OUTPUT 1"),
        forward_hook: out.contains("chain forward {") || out.contains("-I FORWARD 1"),
        drop: out.contains(" drop comment") || out.contains("-j DROP"),
        backend,
    }
}

#[track_caller]
fn render_ok(ns: &Netns, env: &[(&str, &str)], args: &[&str]) -> String {
    let mut argv = vec!["render"];
    argv.extend_from_slice(args);
    let r = guard_run(ns, &[], env, &argv);
    assert_code(&r, 0, &format!("render env {env:?} args {args:?}"));
    r.stdout
}

#[track_caller]
fn assert_has(out: &str, present: &[&str], absent: &[&str], what: &str) {
    for p in present {
        assert!(out.contains(p), "{what}: output lacks {p:?}:\n{out}");
    }
    for a in absent {
        assert!(!out.contains(a), "{what}: output should not contain {a:?}:\n{out}");
    }
}

#[test]
fn flags_beat_env_beat_file() {
    if !common::can_run() {
        return;
    }
    let ns = Netns::new("prec");
    let before = firewall_snapshot(&ns);
    let dir = TempDir::new("prec");
    let file = dir.file(
        "file.toml",
        "container_cidr = \"10.1.0.0/16\"\n\
         apiserver = \"192.168.50.10:5443\"\n\
         exempt = \"10.1.5.0/24\"\n\
         mode = \"vpc\"\n\
         action = \"drop\"\n\
         backend = \"iptables-legacy\"\n",
    );
    let env_all = [
        ("APISERVER_GUARD_CONFIG", file.as_str()),
        ("APISERVER_GUARD_CONTAINER_CIDR", "10.2.0.0/16"),
        ("APISERVER_GUARD_APISERVER", "192.168.50.11:6443"),
        ("APISERVER_GUARD_EXEMPT", "10.2.5.0/24"),
        ("APISERVER_GUARD_MODE", "both"),
        ("APISERVER_GUARD_ACTION", "reject"),
        ("APISERVER_GUARD_BACKEND", "iptables-nft"),
    ];
    let file_vals = ["10.1.0.0/16", "192.168.50.10", "5443", "10.1.5.0/24"];
    let env_vals = ["10.2.0.0/16", "192.168.50.11", "6443", "10.2.5.0/24"];
    let flag_vals = ["10.3.0.0/16", "192.168.50.12", "7443", "10.3.5.0/24"];

    // File alone (named with --config).
    let out = render_ok(&ns, &[], &["--config", &file]);
    assert_eq!(
        rendered(&out),
        Rendered {
            backend: "iptables-legacy".into(),
            output_hook: true,
            forward_hook: false,
            drop: true
        },
        "file alone:\n{out}"
    );
    assert_has(
        &out,
        &file_vals,
        &[&env_vals[..], &flag_vals[..]].concat(),
        "file alone",
    );

    // Env over file (the file named by APISERVER_GUARD_CONFIG).
    let out = render_ok(&ns, &env_all, &[]);
    assert_eq!(
        rendered(&out),
        Rendered {
            backend: "iptables-nft".into(),
            output_hook: true,
            forward_hook: true,
            drop: false
        },
        "env over file:\n{out}"
    );
    assert_has(
        &out,
        &env_vals,
        &[&file_vals[..], &flag_vals[..]].concat(),
        "env over file",
    );

    // Flags over env over file.
    let flags = [
        "--container-cidr",
        "10.3.0.0/16",
        "--apiserver",
        "192.168.50.12:7443",
        "--exempt",
        "10.3.5.0/24",
        "--mode",
        "tunnel",
        "--action",
        "drop",
        "--backend",
        "nftables",
    ];
    let out = render_ok(&ns, &env_all, &flags);
    assert_eq!(
        rendered(&out),
        Rendered {
            backend: "nftables".into(),
            output_hook: false,
            forward_hook: true,
            drop: true
        },
        "flags over env:\n{out}"
    );
    assert_has(
        &out,
        &["10.3.0.0/16", "192.168.50.12 . 7443", "10.3.5.0/24"],
        &[&file_vals[..], &env_vals[..]].concat(),
        "flags over env over file",
    );

    // Per key: a flag replaces only its own key; the rest still comes from the file.
    let out = render_ok(&ns, &[], &["--config", &file, "--apiserver", "192.168.50.12:7443"]);
    assert_eq!(rendered(&out).backend, "iptables-legacy", "{out}");
    assert_has(
        &out,
        &[
            "10.1.0.0/16",
            "192.168.50.12/32",
            "--dport 7443",
            "10.1.5.0/24",
            "-j DROP",
        ],
        &["192.168.50.10", "5443"],
        "one flag over the file",
    );

    // --config beats APISERVER_GUARD_CONFIG.
    let other = dir.file(
        "other.toml",
        "container_cidr = [\"10.4.0.0/16\"]\napiserver = [\"192.168.50.13:8443\"]\nbackend = \"nftables\"\n",
    );
    let out = render_ok(&ns, &[("APISERVER_GUARD_CONFIG", file.as_str())], &["--config", &other]);
    assert_eq!(
        rendered(&out),
        Rendered {
            backend: "nftables".into(),
            output_hook: true,
            forward_hook: true,
            drop: false
        },
        "defaults both/reject with --config other:\n{out}"
    );
    assert_has(
        &out,
        &["10.4.0.0/16", "192.168.50.13 . 8443"],
        &file_vals,
        "--config over env",
    );

    // An empty env value is no value: the file's apiserver stays.
    let out = render_ok(&ns, &[("APISERVER_GUARD_APISERVER", "")], &["--config", &file]);
    assert_has(&out, &["192.168.50.10/32", "--dport 5443"], &[], "empty env value");

    assert_same_snapshot(&before, &firewall_snapshot(&ns), "render with precedence cases");
}

#[test]
fn lists_combine_from_commas_repeats_and_toml_arrays() {
    if !common::can_run() {
        return;
    }
    let ns = Netns::new("lists");
    let before = firewall_snapshot(&ns);
    let dir = TempDir::new("lists");
    let empty = dir.empty_config();
    let all = [
        "10.0.0.0/16",
        "10.2.0.0/16",
        "fd00:10::/48",
        "192.168.50.10 . 5443",
        "192.168.50.11",
        "fd00:50::10 . 5443",
    ];

    // Comma-separated and repeated flags combine (spaces around items are trimmed).
    let out = render_ok(
        &ns,
        &[],
        &[
            "--config",
            &empty,
            "--backend",
            "nftables",
            "--container-cidr",
            "10.0.0.0/16, 10.2.0.0/16",
            "--container-cidr",
            "fd00:10::/48",
            "--apiserver",
            "192.168.50.10:5443,192.168.50.11",
            "--apiserver",
            "[fd00:50::10]:5443",
        ],
    );
    assert_has(&out, &all, &[], "comma-separated and repeated flags");
    assert!(
        out.contains("set api_any_v4 {"),
        "port-less apiserver set missing:\n{out}"
    );

    // Comma-separated env values.
    let out = render_ok(
        &ns,
        &[
            ("APISERVER_GUARD_CONTAINER_CIDR", "10.0.0.0/16,10.2.0.0/16,fd00:10::/48"),
            (
                "APISERVER_GUARD_APISERVER",
                "192.168.50.10:5443,192.168.50.11,[fd00:50::10]:5443",
            ),
            ("APISERVER_GUARD_EXEMPT", "10.0.5.0/24,10.2.5.0/24"),
        ],
        &["--config", &empty, "--backend", "nftables"],
    );
    assert_has(
        &out,
        &[&all[..], &["10.0.5.0/24", "10.2.5.0/24"]].concat(),
        &[],
        "comma-separated env",
    );

    // TOML: every list key as a string or as an array.
    let strings = dir.file(
        "strings.toml",
        "container_cidr = \"10.0.0.0/16\"\napiserver = \"192.168.50.10:5443\"\nexempt = \"10.0.5.0/24\"\n",
    );
    let out = render_ok(&ns, &[], &["--config", &strings, "--backend", "nftables"]);
    assert_has(
        &out,
        &["10.0.0.0/16", "192.168.50.10 . 5443", "10.0.5.0/24"],
        &["10.2.0.0/16", "fd00"],
        "TOML strings",
    );
    let arrays = dir.file(
        "arrays.toml",
        "container_cidr = [\"10.0.0.0/16\", \"10.2.0.0/16\", \"fd00:10::/48\"]\n\
         apiserver = [\"192.168.50.10:5443\", \"192.168.50.11\", \"[fd00:50::10]:5443\"]\n\
         exempt = [\"10.0.5.0/24\", \"fd00:10:0:5::/64\"]\n",
    );
    let out = render_ok(&ns, &[], &["--config", &arrays, "--backend", "nftables"]);
    assert_has(
        &out,
        &[&all[..], &["10.0.5.0/24", "fd00:10:0:5::/64"]].concat(),
        &[],
        "TOML arrays",
    );

    assert_same_snapshot(&before, &firewall_snapshot(&ns), "render with list cases");
}

// ---------------------------------------------------------------------------
// Runtime errors: exit 1, a clear message, nothing changed
// ---------------------------------------------------------------------------

/// A valid policy different from the good one, so a wrongly successful apply shows.
fn other_policy(backend: &str, config: &str) -> Vec<String> {
    owned(&[
        "--container-cidr",
        "10.0.0.0/16,fd00:10::/48",
        "--apiserver",
        &format!("{API_V4},[{API_V6}]:{API_PORT}"),
        "--mode",
        "both",
        "--exempt",
        "10.0.7.0/24",
        "--backend",
        backend,
        "--config",
        config,
    ])
}

#[test]
fn missing_firewall_tool_names_the_package() {
    if !common::can_run() {
        return;
    }
    let no_path = [("PATH", "/nonexistent")];
    // (backend, package). The nftables backend speaks nf_tables netlink itself:
    // it needs no tool (`nftables_needs_no_nft_binary`).
    let expectations = [("iptables-nft", "iptables"), ("iptables-legacy", "iptables")];
    for (backend, package) in expectations {
        for prior in [false, true] {
            let topo = Topology::new();
            let dir = TempDir::new("nopath");
            let empty = dir.empty_config();
            let what = format!("{backend}, PATH without tools, prior block: {prior}");
            if prior {
                add_foreign_state(&topo.node);
                assert_code(
                    &run(&topo.node, &with_cmd("apply", &good_args(backend, &empty))),
                    0,
                    &format!("{what}: apply good policy"),
                );
            }
            let before = firewall_snapshot(&topo.node);
            // `status` on a fresh node may truthfully say "missing" without any
            // tool (legacy tables not loaded); with a block in place it must fail.
            let cmds: &[&str] = if prior { &["apply", "status"] } else { &["apply"] };
            for &cmd in cmds {
                let args = other_policy(backend, &empty);
                let r = guard_run(&topo.node, &[], &no_path, &with_cmd(cmd, &args));
                assert_code(&r, 1, &format!("{what}: {cmd}"));
                assert!(
                    r.stderr.contains("not found") && r.stderr.contains(&format!("install the {package} package")),
                    "{what}: {cmd}: message should name the {package} package: {}",
                    r.stderr
                );
                assert_same_snapshot(&before, &firewall_snapshot(&topo.node), &format!("{what}: {cmd}"));
            }
            if prior {
                // The old block is still in force.
                let c = curl(&topo.pod, API_V4, API_PORT, MAX_TIME);
                assert!(c.refused(), "{what}: pod must still be blocked, got {c:?}");
            }
        }
    }
}

/// The nftables backend runs no `nft` process: with no tool on PATH it
/// installs, reads back and removes the block all the same.
#[test]
fn nftables_needs_no_nft_binary() {
    if !common::can_run() {
        return;
    }
    let no_path = [("PATH", "/nonexistent")];
    for prior in [false, true] {
        let topo = Topology::new();
        let dir = TempDir::new("nopath-nft");
        let empty = dir.empty_config();
        let what = format!("nftables, PATH without tools, prior block: {prior}");
        if prior {
            add_foreign_state(&topo.node);
            assert_code(
                &run(&topo.node, &with_cmd("apply", &good_args("nftables", &empty))),
                0,
                &format!("{what}: apply good policy"),
            );
        }
        let args = other_policy("nftables", &empty);
        for cmd in ["apply", "status"] {
            let r = guard_run(&topo.node, &[], &no_path, &with_cmd(cmd, &args));
            assert_code(&r, 0, &format!("{what}: {cmd}"));
        }
        let c = curl(&topo.pod, API_V4, API_PORT, MAX_TIME);
        assert!(c.refused(), "{what}: pod must be blocked, got {c:?}");
        let r = guard_run(&topo.node, &[], &no_path, &["remove"]);
        assert_code(&r, 0, &format!("{what}: remove"));
        assert!(
            !common::guard_cases::nft_table_present(&topo.node),
            "{what}: remove left our table"
        );
    }
}

/// `render` of an explicit backend is pure (DESIGN.md: render exits 0 or 2):
/// it must not need the firewall tool to be installed.
#[test]
fn render_with_an_explicit_backend_needs_no_firewall_tool() {
    if !common::can_run() {
        return;
    }
    let ns = Netns::new("render-nopath");
    let dir = TempDir::new("render-nopath");
    let empty = dir.empty_config();
    let mut failures = Vec::new();
    for backend in BACKENDS {
        let args = good_args(backend, &empty);
        let r = guard_run(&ns, &[], &[("PATH", "/nonexistent")], &with_cmd("render", &args));
        if r.code != Some(0) || !r.stdout.contains(GOOD_CIDR) {
            failures.push(format!(
                "render --backend {backend} with PATH=/nonexistent: expected exit 0 and the payload, got exit {:?}\n  stdout: {}\n  stderr: {}",
                r.code,
                r.stdout.trim(),
                r.stderr.trim()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn unprivileged_user_gets_a_clear_error_and_changes_nothing() {
    if !common::can_run() {
        return;
    }
    let topo = Topology::new();
    let dir = TempDir::new("nobody");
    let empty = dir.empty_config();
    add_foreign_state(&topo.node);
    let nobody = [
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "--inh-caps=-all",
    ];
    // Sanity: the wrapper really drops privileges.
    let who = topo.node.run_ok(&[&nobody[..], &["id", "-u"]].concat());
    assert_eq!(who.trim(), "65534");
    let mut failures = Vec::new();
    for backend in BACKENDS {
        // A block installed by root with this backend (apply switches backends).
        let good = good_args(backend, &empty);
        assert_code(
            &run(&topo.node, &with_cmd("apply", &good)),
            0,
            &format!("apply good policy with {backend} as root"),
        );
        let before = firewall_snapshot(&topo.node);
        assert!(before.contains(our_marker(backend)), "{backend}: {before}");
        let other = other_policy(backend, &empty);
        // apply of a different policy, and status of the installed one: neither
        // can be done without privileges, and neither may claim an answer.
        for (cmd, args) in [("apply", &other), ("status", &good)] {
            let what = format!("{cmd} --backend {backend} as nobody");
            let r = guard_run(&topo.node, &nobody, &[], &with_cmd(cmd, args));
            if r.code != Some(1) || !(r.stderr.contains("CAP_NET_ADMIN") && r.stderr.contains("root")) {
                failures.push(format!(
                    "{what}: expected exit 1 and a message naming root/CAP_NET_ADMIN, got exit {:?}\n  stdout: {}\n  stderr: {}",
                    r.code,
                    r.stdout.trim(),
                    r.stderr.trim()
                ));
            }
            let after = firewall_snapshot(&topo.node);
            if after != before {
                failures.push(format!("{what}: firewall changed\n{}", snapshot_diff(&before, &after)));
            }
        }
        assert_code(
            &run(&topo.node, &with_cmd("status", &good)),
            0,
            &format!("{backend}: the root-installed block is still in sync"),
        );
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

const NOBODY: [&str; 5] = [
    "setpriv",
    "--reuid=65534",
    "--regid=65534",
    "--clear-groups",
    "--inh-caps=-all",
];

/// Without privileges, `render` and `status` must not silently pick another
/// backend than root would get: detecting the backend (`auto`, or the
/// iptables variant) stops with exit 1 and "needs root or CAP_NET_ADMIN".
/// An explicit backend needs no detection, so `render` still prints it.
#[test]
fn unprivileged_detection_stops_instead_of_switching_backend() {
    if !common::can_run() {
        return;
    }
    let topo = Topology::new();
    let dir = TempDir::new("nobody-detect");
    let empty = dir.empty_config();
    add_foreign_state(&topo.node);
    assert_code(
        &run(&topo.node, &with_cmd("apply", &good_args("nftables", &empty))),
        0,
        "apply as root",
    );
    let before = firewall_snapshot(&topo.node);
    let mut failures = Vec::new();
    for (cmd, backend) in [
        ("render", "auto"),
        ("status", "auto"),
        ("render", "iptables"),
        ("status", "iptables"),
    ] {
        let r = guard_run(&topo.node, &NOBODY, &[], &with_cmd(cmd, &good_args(backend, &empty)));
        if r.code != Some(1) || !r.stderr.contains("needs root or CAP_NET_ADMIN") || !r.stdout.trim().is_empty() {
            failures.push(format!(
                "{cmd} --backend {backend} as nobody: expected exit 1, 'needs root or CAP_NET_ADMIN' and no output, got exit {:?}\n  stdout: {}\n  stderr: {}",
                r.code,
                r.stdout.trim(),
                r.stderr.trim()
            ));
        }
        if backend == "auto" && !r.stderr.contains("--backend nftables") {
            failures.push(format!(
                "{cmd} auto as nobody: no hint to name the backend: {}",
                r.stderr.trim()
            ));
        }
    }
    for backend in BACKENDS {
        let r = guard_run(
            &topo.node,
            &NOBODY,
            &[],
            &with_cmd("render", &good_args(backend, &empty)),
        );
        if r.code != Some(0) || !r.stdout.starts_with(&format!("# backend: {backend} ")) {
            failures.push(format!(
                "render --backend {backend} as nobody: expected exit 0 and that backend, got exit {:?}\n  stdout: {}\n  stderr: {}",
                r.code,
                r.stdout.lines().next().unwrap_or_default(),
                r.stderr.trim()
            ));
        }
    }
    assert_same_snapshot(&before, &firewall_snapshot(&topo.node), "unprivileged detection");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// `run` without privileges stops at once with exit 1 (it used to retry
/// forever), whatever the backend.
#[test]
fn unprivileged_run_exits_promptly() {
    if !common::can_run() {
        return;
    }
    let topo = Topology::new();
    let dir = TempDir::new("nobody-run");
    let empty = dir.empty_config();
    let before = firewall_snapshot(&topo.node);
    let prefix: Vec<&str> = ["timeout", "20"].into_iter().chain(NOBODY).collect();
    let mut failures = Vec::new();
    for backend in ["auto", "nftables", "iptables-nft", "iptables-legacy"] {
        let good = good_args(backend, &empty);
        let mut args = with_cmd("run", &good);
        args.extend(["--listen", "127.0.0.1:0"]);
        let started = std::time::Instant::now();
        let r = guard_run(&topo.node, &prefix, &[], &args);
        let took = started.elapsed();
        if r.code != Some(1)
            || !r.stderr.contains("needs root or CAP_NET_ADMIN")
            || took > std::time::Duration::from_secs(5)
        {
            failures.push(format!(
                "run --backend {backend} as nobody: expected exit 1 with 'needs root or CAP_NET_ADMIN' within 5 s, got exit {:?} after {} ms\n  stderr: {}",
                r.code,
                took.as_millis(),
                r.stderr.trim()
            ));
        }
    }
    assert_same_snapshot(&before, &firewall_snapshot(&topo.node), "unprivileged run");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

// ---------------------------------------------------------------------------
// render: the payload, and nothing changed
// ---------------------------------------------------------------------------

#[test]
fn render_prints_the_payload_and_changes_nothing() {
    if !common::can_run() {
        return;
    }
    let topo = Topology::new();
    let dir = TempDir::new("render");
    let empty = dir.empty_config();
    let dual = |backend: &str| {
        owned(&[
            "--container-cidr",
            "10.0.0.0/16,fd00:10::/48",
            "--apiserver",
            &format!("{API_V4}:{API_PORT},[{API_V6}]:{API_PORT}"),
            "--mode",
            "tunnel",
            "--backend",
            backend,
            "--config",
            &empty,
        ])
    };
    for prior in [false, true] {
        if prior {
            add_foreign_state(&topo.node);
            assert_code(
                &run(&topo.node, &with_cmd("apply", &good_args("iptables-legacy", &empty))),
                0,
                "apply good policy",
            );
        }
        let before = firewall_snapshot(&topo.node);

        let r = run(&topo.node, &with_cmd("render", &dual("nftables")));
        assert_code(&r, 0, "render nftables");
        assert_has(
            &r.stdout,
            &[
                "table inet apiserver_guard {",
                "chain forward {",
                "jump guard comment \"enter-guard\"",
                "10.0.0.0/16",
                "fd00:10::/48",
                &format!("{API_V4} . {API_PORT}"),
                &format!("{API_V6} . {API_PORT}"),
                "reject with tcp reset",
            ],
            &["chain output {", "delete table"],
            "render nftables",
        );
        assert_same_snapshot(&before, &firewall_snapshot(&topo.node), "render nftables");

        for backend in ["iptables-legacy", "iptables-nft"] {
            let r = run(&topo.node, &with_cmd("render", &dual(backend)));
            assert_code(&r, 0, &format!("render {backend}"));
            let out = &r.stdout;
            assert_has(
                out,
                &[
                    &format!("# sent to: iptables-{}-restore", &backend[9..]),
                    &format!("# sent to: ip6tables-{}-restore", &backend[9..]),
                    "*filter",
                    ":APISERVER-GUARD",
                    "-I FORWARD 1",
                    "-s 10.0.0.0/16",
                    "-s fd00:10::/48",
                    "COMMIT",
                ],
                &["-I OUTPUT 1", "table inet"],
                &format!("render {backend}"),
            );
            assert_eq!(out.matches("*filter").count(), 2, "one transaction per family:\n{out}");
            assert_eq!(out.matches("COMMIT").count(), 2, "one transaction per family:\n{out}");
            assert_same_snapshot(&before, &firewall_snapshot(&topo.node), &format!("render {backend}"));
        }

        // auto and iptables have to look at the host; still nothing changes.
        for backend in ["auto", "iptables"] {
            let r = run(&topo.node, &with_cmd("render", &dual(backend)));
            assert_code(&r, 0, &format!("render {backend}"));
            assert!(r.stdout.starts_with("# backend: "), "render {backend}: {}", r.stdout);
            assert_same_snapshot(&before, &firewall_snapshot(&topo.node), &format!("render {backend}"));
        }
    }
}

/// Feed `render` output to the tools by hand in one namespace, run `apply`
/// in another: the kernel ends up in the same state (render prints exactly
/// what apply installs).
#[test]
fn render_is_exactly_what_apply_installs() {
    if !common::can_run() {
        return;
    }
    let dir = TempDir::new("render-eq");
    let empty = dir.empty_config();
    for backend in BACKENDS {
        let args = owned(&[
            "--container-cidr",
            "10.0.0.0/16,fd00:10::/48",
            "--apiserver",
            &format!("{API_V4}:{API_PORT},{OTHER_V4},[{API_V6}]:{API_PORT}"),
            "--exempt",
            "10.0.5.0/24",
            "--mode",
            "both",
            "--action",
            "reject",
            "--backend",
            backend,
            "--config",
            &empty,
        ]);
        let by_hand = Netns::new("byhand");
        let by_apply = Netns::new("byapply");
        let r = run(&by_hand, &with_cmd("render", &args));
        assert_code(&r, 0, &format!("render {backend}"));
        if backend == "nftables" {
            let out = by_hand.run_stdin(&["nft", "-f", "-"], &r.stdout);
            assert!(
                out.status.success(),
                "nft -f of the rendered script: {}\n{}",
                String::from_utf8_lossy(&out.stderr),
                r.stdout
            );
        } else {
            // Split on "# sent to: <tool> <args>" headers and run each part.
            let mut parts: Vec<(Vec<String>, String)> = Vec::new();
            for line in r.stdout.lines() {
                if let Some(cmd) = line.strip_prefix("# sent to: ") {
                    parts.push((cmd.split_whitespace().map(str::to_owned).collect(), String::new()));
                } else if let Some((_, payload)) = parts.last_mut() {
                    payload.push_str(line);
                    payload.push('\n');
                }
            }
            assert_eq!(
                parts.len(),
                2,
                "render {backend}: expected a v4 and a v6 part:\n{}",
                r.stdout
            );
            for (cmd, payload) in &parts {
                let argv: Vec<&str> = cmd.iter().map(String::as_str).collect();
                let out = by_hand.run_stdin(&argv, payload);
                assert!(
                    out.status.success(),
                    "{argv:?} of the rendered payload: {}\n{payload}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
        let r = run(&by_apply, &with_cmd("apply", &args));
        assert_code(&r, 0, &format!("apply {backend}"));
        let hand = firewall_snapshot(&by_hand);
        let applied = firewall_snapshot(&by_apply);
        assert!(hand.contains(our_marker(backend)), "{backend}: {hand}");
        assert_same_snapshot(&hand, &applied, &format!("{backend}: rendered-by-hand vs applied"));
        assert_code(
            &run(&by_hand, &with_cmd("status", &args)),
            0,
            &format!("{backend}: status of the hand-made state"),
        );
    }
}

/// Accepted input, said right: `apply`'s summary counts distinct values
/// (a CIDR given three times is one) and spells CIDR in capitals; a
/// duration without a unit is seconds from the config file
/// (`resync_interval = 10`) as from the variable (`..._RESYNC_INTERVAL=5`).
#[test]
fn apply_summary_counts_distinct_values_and_bare_seconds_are_accepted_everywhere() {
    if !common::can_run() {
        return;
    }
    let ns = Netns::new("summary");
    let dir = TempDir::new("summary");
    let bare_seconds = dir.file("bare-seconds.toml", "resync_interval = 10\nprobe_interval = 90\n");
    let empty = dir.empty_config();
    let args = |config: &str| {
        owned(&[
            "--container-cidr",
            "10.0.0.0/16,10.0.0.0/16",
            "--container-cidr",
            " 10.0.0.0/16",
            "--apiserver",
            "192.168.50.10:5443,192.168.50.10:5443",
            "--exempt",
            "10.0.5.0/24,10.0.5.0/24",
            "--mode",
            "tunnel",
            "--backend",
            "nftables",
            "--config",
            config,
        ])
    };
    let summary = "1 container CIDR(s), 1 exempt, 1 apiserver endpoint(s), hooks forward, action reject";
    let r = run(&ns, &with_cmd("apply", &args(&bare_seconds)));
    assert_code(&r, 0, "apply with resync_interval = 10 in the config file");
    assert!(
        r.stdout.contains("block installed") && r.stdout.contains(summary),
        "{}",
        r.stdout
    );
    let a = args(&empty);
    let r = guard_run(
        &ns,
        &[],
        &[("APISERVER_GUARD_RESYNC_INTERVAL", "5")],
        &with_cmd("apply", &a),
    );
    assert_code(&r, 0, "apply with APISERVER_GUARD_RESYNC_INTERVAL=5");
    assert!(
        r.stdout.contains("already in place") && r.stdout.contains(summary),
        "{}",
        r.stdout
    );
    assert!(!r.stdout.contains("cidr(s)"), "{}", r.stdout);
}
