//! Runtime errors on a real kernel: a missing firewall tool names its
//! package (nftables needs no `nft` binary, `render` with an explicit backend
//! no tool at all), and an unprivileged user gets a clear error, exit 1, at
//! once, without detection switching backends and without any change.
//!
//! Everything runs inside the test's own network namespaces.

mod common;

use common::bad_input_cases::*;
use common::bad_input_checks::*;
use common::*;

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
