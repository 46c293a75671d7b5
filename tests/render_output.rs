//! `render` on a real kernel: it prints the payload and changes nothing, it
//! is exactly what `apply` installs, and `apply`'s summary counts distinct
//! values (bare seconds accepted by every duration setting).
//!
//! Everything runs inside the test's own network namespaces.

mod common;

use common::bad_input_cases::*;
use common::bad_input_checks::*;
use common::*;

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

/// `render | head -1` (the reader leaves early): no panic, no exit 101;
/// the command ends as other tools do on SIGPIPE.
#[test]
fn render_into_a_pipe_closed_early_stops_quietly() {
    use std::process::{Command, Stdio};
    let mut child = Command::new(env!("CARGO_BIN_EXE_apiserver-guard"))
        .args([
            "render",
            "--backend",
            "nftables",
            "--container-cidr",
            "10.0.0.0/16",
            "--apiserver",
            "192.168.0.10:6443",
            "--config",
            "/dev/null",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The reader is gone before the first line is written.
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("panicked"),
        "render panicked on a closed pipe: {stderr}"
    );
    assert_ne!(out.status.code(), Some(101), "{stderr}");
}
