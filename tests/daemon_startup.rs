//! Real-kernel tests that nothing auxiliary stands between the daemon and the
//! block, and that one namespace has one daemon: a taken health port does not
//! delay the block (the listener is retried in the background and comes up
//! when the port frees); a config file replaced by a FIFO is refused without
//! blocking, and flushes are still repaired; SIGTERM is honoured within a
//! second even while a firewall tool hangs, and a tool that hangs is killed
//! at its timeout so repairs go on; a second daemon in the same network
//! namespace refuses to start, naming the first, and changes nothing, while a
//! squatter on the daemon's instance socket (unprivileged, or root but not a
//! daemon) cannot stop the block.

mod common;

use std::net::TcpListener;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::thread;
use std::time::{Duration, Instant};

use common::daemon_cases::*;
use common::guard_cases::*;
use common::*;

/// How fast a stop must be honoured (the promise), plus process start-up slack.
const STOP_WITHIN: Duration = Duration::from_millis(1500);

fn tunnel_v4(b: Backend) -> GuardPolicy {
    GuardPolicy::new(b, "tunnel", &[CONTAINER_CIDR_V4], &[&endpoint(API_V4, Some(API_PORT))])
}

fn config_text(apiserver: &str) -> String {
    format!(
        "container_cidr = [\"{CONTAINER_CIDR_V4}\"]\napiserver = [\"{apiserver}\"]\nmode = \"tunnel\"\nbackend = \"nftables\"\n"
    )
}

fn run_with_config(path: &std::path::Path) -> Vec<String> {
    ["run", "--config", &path.display().to_string(), "--log-format", "text"]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

fn mkfifo(path: &std::path::Path) {
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).expect("no NUL in path");
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(
        unsafe { libc::mkfifo(c.as_ptr(), 0o600) },
        0,
        "mkfifo {}",
        path.display()
    );
}

/// Sends SIGTERM and asserts a clean exit (0) within `STOP_WITHIN`.
#[track_caller]
fn assert_stops_promptly(d: &Daemon, what: &str) {
    let t = Instant::now();
    d.signal(libc::SIGTERM);
    let status = d.wait_exit(Duration::from_secs(10));
    let took = t.elapsed();
    eprintln!("{what}: SIGTERM -> exit in {took:?}");
    let status = status.unwrap_or_else(|| panic!("{what}: no exit within 10 s of SIGTERM\nlog:\n{}", d.log()));
    assert!(took < STOP_WITHIN, "{what}: SIGTERM took {took:?}\nlog:\n{}", d.log());
    assert_eq!(status.code(), Some(0), "{what}: exit status\nlog:\n{}", d.log());
}

#[test]
fn a_taken_health_port_never_holds_up_the_block() {
    if !can_run() {
        return;
    }
    let topo = Topology::new();
    // Someone else holds the daemon's health port in the node namespace.
    let squatter = topo
        .node
        .in_thread(|| TcpListener::bind(LISTEN))
        .expect("enter node netns")
        .expect("bind the squatter");
    let d = Daemon::spawn(&topo.node, &daemon_args(&tunnel_v4(Backend::Nftables), &[]));
    d.wait_ready();
    assert_refused_fast(&topo.pod, None, API_V4, API_PORT, "block installed with the port taken");
    d.wait_log(&format!("cannot listen on {LISTEN}"), 1, Duration::from_secs(5));
    assert!(d.exited().is_none(), "the daemon must keep running\n{}", d.log());

    drop(squatter);
    let (ready, took) = wait_http(&topo.node, "/readyz", 200, |_| true, Duration::from_secs(15));
    eprintln!("listener up {took:?} after the port was freed: {}", ready.body.trim());
    let s = scrape(&topo.node);
    let failures = total(&s, "apiserver_guard_listener_bind_failures_total");
    assert!(failures >= 1.0, "bind failures counted: {failures}");
    assert!(d.log().contains("listener is up"), "{}", d.log());
    assert_stops_promptly(&d, "after the listener came up");
}

#[test]
fn a_config_file_replaced_by_a_fifo_is_refused_and_the_block_kept() {
    if !can_run() {
        return;
    }
    let topo = Topology::new();
    let dir = TempDir::new("fifo");
    let path = dir.join("config.toml");
    std::fs::write(&path, config_text(&format!("{API_V4}:{API_PORT}"))).expect("write config");
    // An ordinary table, so a foreign flush reaches it and shows the loop repairing.
    let mut args = run_with_config(&path);
    args.extend(["--table-ownership".to_owned(), "off".to_owned()]);
    let d = Daemon::spawn(&topo.node, &args);
    d.wait_ready();

    std::fs::remove_file(&path).expect("remove config");
    mkfifo(&path);
    d.wait_log("config reload refused", 1, Duration::from_secs(5));
    assert!(
        d.log().contains("FIFO"),
        "the refusal names what is there:\n{}",
        d.log()
    );

    // The control loop still turns: a flush is repaired, /healthz answers.
    let mark = d.log().len();
    topo.node.run_ok(&["nft", "flush", "ruleset"]);
    d.wait_log(REPAIR_LINE, 1, REPAIR_DEADLINE);
    assert!(d.log_since(mark).contains(REPAIR_LINE));
    assert_refused_fast(
        &topo.pod,
        None,
        API_V4,
        API_PORT,
        "after the flush, with a FIFO as config",
    );
    let health = http_get(&topo.node, "/healthz").expect("/healthz answers");
    assert_eq!(health.code, 200, "{health:?}");
    assert_stops_promptly(&d, "with a FIFO as config");

    // Starting on a FIFO is bad input: exit 2 at once, nothing installed.
    let before = firewall_snapshot(&topo.node);
    let t = Instant::now();
    let d2 = Daemon::spawn(&topo.node, &run_with_config(&path));
    let status = d2.wait_exit(Duration::from_secs(5));
    assert_eq!(status.and_then(|s| s.code()), Some(2), "{}", d2.log());
    assert!(t.elapsed() < STOP_WITHIN, "refused in {:?}", t.elapsed());
    assert!(d2.log().contains("FIFO"), "{}", d2.log());
    assert_same_snapshot(&before, &firewall_snapshot(&topo.node), "after a refused start");
}

#[test]
fn sigterm_is_honoured_within_a_second_while_a_firewall_tool_hangs() {
    if !can_run() {
        return;
    }
    let topo = Topology::new();
    let dir = TempDir::new("hang");
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).expect("shim dir");
    // The nftables backend runs no tool (nf_tables netlink); the iptables ones do.
    for tool in IPTABLES_NFT_TOOLS {
        let shim = bin.join(tool);
        std::fs::write(&shim, "#!/bin/sh\nexec sleep 30\n").expect("write shim");
        std::fs::set_permissions(&shim, std::fs::Permissions::from_mode(0o755)).expect("chmod shim");
    }
    let d = Daemon::spawn_with_path(
        &topo.node,
        &daemon_args(&tunnel_v4(Backend::IptablesNft), &[]),
        Some(&bin),
    );
    thread::sleep(Duration::from_millis(700)); // well inside the hung tool
    assert!(d.exited().is_none(), "still waiting on the tool:\n{}", d.log());
    assert_stops_promptly(&d, "while an iptables tool hangs");
}

#[test]
fn a_second_daemon_in_the_same_namespace_refuses_to_start() {
    if !can_run() {
        return;
    }
    let topo = Topology::new();
    let first = Daemon::spawn(&topo.node, &daemon_args(&tunnel_v4(Backend::Nftables), &[]));
    first.wait_ready();
    let before = firewall_snapshot(&topo.node);

    // Another policy and backend, as a systemd unit left enabled under the DaemonSet would have.
    let other = GuardPolicy::new(
        Backend::IptablesNft,
        "both",
        &[CONTAINER_CIDR_V4],
        &[&endpoint(OTHER_V4, Some(API_PORT))],
    );
    let t = Instant::now();
    let second = Daemon::spawn(&topo.node, &daemon_args(&other, &["--listen", "127.0.0.1:9441"]));
    let status = second.wait_exit(Duration::from_secs(5));
    let log = second.log();
    assert_eq!(status.and_then(|s| s.code()), Some(1), "{log}");
    eprintln!("second daemon refused in {:?}: {}", t.elapsed(), log.trim());
    assert!(log.contains("already runs in this network namespace"), "{log}");
    assert!(
        log.contains(&format!("pid {}", first.pid)),
        "names the first one's pid: {log}"
    );
    assert!(
        log.contains("started as by hand"),
        "says how the first was started: {log}"
    );
    assert_same_snapshot(
        &before,
        &firewall_snapshot(&topo.node),
        "after the refused second daemon",
    );
    assert!(first.exited().is_none(), "the first keeps running\n{}", first.log());
    assert_refused_fast(&topo.pod, None, API_V4, API_PORT, "first daemon's block");
    assert_served(&curl(&topo.pod, OTHER_V4, API_PORT, MAX_TIME), "not the second's");

    // Nothing stale after a crash: once the first is SIGKILLed a new one starts at once.
    first.kill();
    let third = Daemon::spawn(&topo.node, &daemon_args(&tunnel_v4(Backend::Nftables), &[]));
    third.wait_ready();
    assert_stops_promptly(&third, "third daemon");
}

#[test]
fn before_the_node_joins_the_daemon_exits_1_to_be_started_again() {
    if !can_run() {
        return;
    }
    // Only meaningful where the kubelet's default kubeconfig is absent (no kubeadm node).
    if std::path::Path::new("/etc/kubernetes/kubelet.conf").exists() {
        eprintln!("skipped: this machine has /etc/kubernetes/kubelet.conf");
        return;
    }
    let topo = Topology::new();
    let args: Vec<String> = [
        "run",
        "--config",
        empty_config(),
        "--container-cidr",
        CONTAINER_CIDR_V4,
        "--apiserver",
        "auto",
        "--backend",
        "nftables",
        "--log-format",
        "text",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let d = Daemon::spawn(&topo.node, &args);
    let status = d.wait_exit(Duration::from_secs(10));
    // Not 2 (bad input, never restarted): the supervisor must try again after the join.
    assert_eq!(status.and_then(|s| s.code()), Some(1), "{}", d.log());
    assert!(d.log().contains("kubelet.conf"), "{}", d.log());

    // Named explicitly, the same missing file is bad input.
    let mut named = args.clone();
    named.extend(["--kubeconfig".to_string(), "/nonexistent/kubeconfig".to_string()]);
    let d = Daemon::spawn(&topo.node, &named);
    let status = d.wait_exit(Duration::from_secs(10));
    assert_eq!(status.and_then(|s| s.code()), Some(2), "{}", d.log());
}

/// The tools the iptables-nft backend runs.
const IPTABLES_NFT_TOOLS: [&str; 6] = [
    "iptables-nft",
    "iptables-nft-save",
    "iptables-nft-restore",
    "ip6tables-nft",
    "ip6tables-nft-save",
    "ip6tables-nft-restore",
];

/// Shims for `tools`: each hangs while `marker` exists, else runs the real tool.
fn hang_switch(dir: &TempDir, tools: &[&str]) -> (std::path::PathBuf, std::path::PathBuf) {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).expect("shim dir");
    let marker = dir.join("hang");
    for tool in tools {
        let real = which(tool);
        let shim = bin.join(tool);
        let script = format!(
            "#!/bin/sh\nif [ -e '{}' ]; then exec sleep 60; fi\nexec '{}' \"$@\"\n",
            marker.display(),
            real.display()
        );
        std::fs::write(&shim, script).expect("write shim");
        std::fs::set_permissions(&shim, std::fs::Permissions::from_mode(0o755)).expect("chmod shim");
    }
    (bin, marker)
}

#[test]
fn a_hung_firewall_tool_is_killed_at_its_timeout_and_repairs_go_on() {
    if !can_run() {
        return;
    }
    let topo = Topology::new();
    let dir = TempDir::new("hang-steady");
    let (bin, marker) = hang_switch(&dir, &IPTABLES_NFT_TOOLS);
    let d = Daemon::spawn_with_path(
        &topo.node,
        &daemon_args(&tunnel_v4(Backend::IptablesNft), &[]),
        Some(&bin),
    );
    d.wait_ready();
    std::fs::write(&marker, "").expect("marker");
    topo.node.run_ok(&["/usr/sbin/nft", "flush", "ruleset"]);
    // The check hangs in an iptables tool; the tool timeout (10 s) kills it and says so.
    d.wait_log("killed", 1, Duration::from_secs(20));
    let (r, _) = wait_http(&topo.node, "/readyz", 503, |_| true, Duration::from_secs(5));
    eprintln!("/readyz while the tool hangs: {}", r.body.trim());
    std::fs::remove_file(&marker).expect("unhang");
    d.wait_log(REPAIR_LINE, 1, Duration::from_secs(30));
    assert_refused_fast(&topo.pod, None, API_V4, API_PORT, "repaired once the tool works again");
    // And a stop while the tool hangs is still prompt.
    std::fs::write(&marker, "").expect("marker");
    topo.node.run_ok(&["/usr/sbin/nft", "flush", "ruleset"]);
    thread::sleep(Duration::from_millis(500));
    assert_stops_promptly(&d, "while a repair hangs in an iptables tool");
}

#[test]
fn a_squatter_on_the_instance_socket_cannot_stop_the_block() {
    if !can_run() {
        return;
    }
    // perl is in every Debian base system (perl-base), and uid 65534 may run it.
    let squat = r#"socket(S,PF_UNIX,SOCK_STREAM,0) or die; bind(S, pack_sockaddr_un("\0apiserver-guard/daemon")) or die "bind: $!"; listen(S,1); sleep 60"#;
    let unprivileged: &[&str] = &["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"];
    // Who squats, and what the daemon's log must say about it: an unprivileged
    // process, and a root process that is not an apiserver-guard daemon.
    let cases: [(&[&str], &[&str]); 2] = [
        (unprivileged, &["held by an unprivileged process", "uid 65534"]),
        (&[], &["held by process perl", "perl"]),
    ];
    for (prefix, says) in cases {
        let topo = Topology::new();
        let mut argv: Vec<&str> = prefix.to_vec();
        argv.extend(["perl", "-MSocket", "-e", squat]);
        topo.node.spawn(&argv);
        let t = Instant::now();
        while !topo.node.run_ok(&["ss", "-xlH"]).contains("@apiserver-guard/daemon") {
            assert!(
                t.elapsed() < Duration::from_secs(5),
                "the squatter never bound the name"
            );
            thread::sleep(Duration::from_millis(20));
        }
        let d = Daemon::spawn(&topo.node, &daemon_args(&tunnel_v4(Backend::Nftables), &[]));
        d.wait_ready();
        assert_refused_fast(
            &topo.pod,
            None,
            API_V4,
            API_PORT,
            "block installed despite the squatter",
        );
        let log = d.log();
        for s in says {
            assert!(log.contains(s), "{s}: {log}");
        }
        assert_stops_promptly(&d, "with a squatter");
    }
}
