//! Helpers for `tests/verify.rs`: running `apiserver-guard verify` inside a
//! namespace and reading its JSON report, comparing each probe outcome with
//! what curl sees from the same place, a topology of its own for `--auto`
//! (a container CIDR no other test uses, decoy namespaces), a real TLS
//! listener (`openssl s_server` with a throwaway self-signed certificate),
//! a process parked in a namespace (for `/proc/PID/ns/net`) and hand-built
//! nft rules that cut the node off (bypassing our self-lockout guard).

use std::net::{IpAddr, SocketAddr, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::addresses::*;
use super::bad_input_cases::TempDir;
use super::curl::CurlResult;
use super::guard_cases::{run_guard, GuardPolicy, GuardRun};
use super::listener::Listener;
use super::netns::Netns;

/// `verify --output json` with `policy` and `extra` flags inside `ns`: the run and its report.
#[track_caller]
pub fn verify_json(ns: &Netns, policy: &GuardPolicy, extra: &[&str]) -> (GuardRun, Value) {
    let mut args = policy.args("verify");
    args.extend(extra.iter().map(|s| s.to_string()));
    args.extend(["--output".to_owned(), "json".to_owned()]);
    let r = run_guard(ns, &args);
    let json =
        serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("verify --output json printed no JSON ({e}): {r:?}"));
    (r, json)
}

/// `verify` (table output) with `policy` and `extra` flags inside `ns`.
pub fn verify_text(ns: &Netns, policy: &GuardPolicy, extra: &[&str]) -> GuardRun {
    let mut args = policy.args("verify");
    args.extend(extra.iter().map(|s| s.to_string()));
    run_guard(ns, &args)
}

/// The `outcome` of the container (`side = "container"`) or node probe of endpoint `i`.
#[track_caller]
pub fn outcome(report: &Value, i: usize, side: &str) -> String {
    report["endpoints"][i][side]["outcome"]
        .as_str()
        .unwrap_or_else(|| panic!("no {side} outcome for endpoint {i}: {report}"))
        .to_owned()
}

/// Asserts that our probe and curl, run from the same place, saw the same thing:
/// connected/TLS ok = served, refused = curl exit 7, timed out = curl exit 28, reset = curl
/// exit 7 (reset noticed while connecting), 35 (TLS connect error) or 56 (receive failure).
#[track_caller]
pub fn assert_agrees(ours: &str, curl: &CurlResult, what: &str) {
    let agrees = match ours {
        "connected" | "tls-ok" => curl.served(),
        "refused" => curl.refused(),
        "timed-out" => curl.timed_out(),
        "reset" => matches!(curl.exit_code, 7 | 35 | 56),
        _ => false,
    };
    assert!(agrees, "{what}: verify saw '{ours}' but curl saw {curl:?}");
}

/// `curl -k https://ip:port/` from `ns` (a TLS listener), as the guide's manual check does.
pub fn curl_tls(ns: &Netns, ip: &str, port: u16, max_time_secs: u32) -> CurlResult {
    let url = format!("https://{ip}:{port}/");
    let max_time = max_time_secs.to_string();
    let start = Instant::now();
    let out = ns.run(&[
        "curl",
        "-k",
        "-sS",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "--max-time",
        &max_time,
        "--noproxy",
        "*",
        &url,
    ]);
    CurlResult {
        exit_code: out.status.code().unwrap_or(-1),
        http_code: String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse::<u16>()
            .ok()
            .filter(|&c| c != 0),
        elapsed: start.elapsed(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Waits (<= 5 s) until `ip:port` accepts a TCP connection from inside `ns`.
#[track_caller]
pub fn wait_connectable(ns: &Netns, ip: &str, port: u16) {
    let addr = SocketAddr::new(ip.parse::<IpAddr>().expect("valid address"), port);
    let deadline = Instant::now() + Duration::from_secs(5);
    let ok = ns
        .in_thread(|| loop {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok() {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            thread::sleep(Duration::from_millis(20));
        })
        .unwrap_or_else(|e| panic!("enter netns {}: {e}", ns.name));
    assert!(ok, "{addr} not reachable from netns {} within 5 s", ns.name);
}

/// Port of the TLS listener.
pub const TLS_PORT: u16 = 6443;

/// `openssl s_server -www` on `API_V4:TLS_PORT` in `api`, with a fresh self-signed
/// certificate; killed when `api` is dropped. Returns the temp dir holding the key (keep it).
pub fn start_tls_server(api: &Netns) -> TempDir {
    let dir = TempDir::new("verify-tls");
    let key = dir.path().join("key.pem");
    let cert = dir.path().join("cert.pem");
    let (key, cert) = (key.to_str().expect("utf-8"), cert.to_str().expect("utf-8"));
    api.run_ok(&[
        "openssl",
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        key,
        "-out",
        cert,
        "-days",
        "1",
        "-subj",
        "/CN=kube-apiserver-test",
    ]);
    let accept = format!("{API_V4}:{TLS_PORT}");
    api.spawn(&[
        "openssl", "s_server", "-accept", &accept, "-cert", cert, "-key", key, "-www", "-quiet",
    ]);
    wait_connectable(api, API_V4, TLS_PORT);
    dir
}

/// Starts `sleep` inside `ns` and returns its pid once the process has entered the
/// namespace (`ip netns exec` execs into it after setns).
pub fn park_process(ns: &Netns) -> u32 {
    let pid = ns.spawn(&["sleep", "300"]);
    let want = std::fs::metadata(ns.path()).expect("netns file").ino();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let ino = std::fs::metadata(format!("/proc/{pid}/ns/net")).map(|m| m.ino());
        if ino.as_ref().ok() == Some(&want) {
            return pid;
        }
        assert!(Instant::now() < deadline, "pid {pid} never entered netns {}", ns.name);
        thread::sleep(Duration::from_millis(10));
    }
}

/// Routes the node's own traffic to `API_V4` from `src` (an address of the node inside the
/// container CIDR), as a route changed after `apply` can: the self-lockout case.
pub fn route_node_from(node: &Netns, src: &str) {
    node.ip_ok(&[
        "route",
        "add",
        &format!("{API_V4}/32"),
        "dev",
        super::topology::NODE_API_IF,
        "src",
        src,
    ]);
}

/// Cuts the node off by hand, as a careless operator would (our `apply` refuses this):
/// the node's route to the apiserver takes a source address inside the container CIDR, and
/// a foreign nft table blocks that CIDR to the apiserver on OUTPUT (and FORWARD, for pods)
/// with `verdict` (`reject with tcp reset` or `drop`).
pub fn cut_node_off_by_hand(node: &Netns, verdict: &str) {
    route_node_from(node, NODE_LOCAL_POD_V4);
    let port = API_PORT.to_string();
    let script = format!(
        "table ip handmade_lockout {{\n\
         \tchain lockout_out {{ type filter hook output priority filter; policy accept;\n\
         \t\tip saddr {CONTAINER_CIDR_V4} ip daddr {API_V4} tcp dport {port} {verdict}\n\t}}\n\
         \tchain lockout_fwd {{ type filter hook forward priority filter; policy accept;\n\
         \t\tip saddr {CONTAINER_CIDR_V4} ip daddr {API_V4} tcp dport {port} {verdict}\n\t}}\n\
         }}\n"
    );
    let out = node.run_stdin(&["nft", "-f", "-"], &script);
    assert!(
        out.status.success(),
        "nft -f (hand-made lockout) failed: {}\n{script}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A pod/node/api network of its own for `--auto`, in a container CIDR no other test uses
/// (`10.<100 + pid % 100>.0.0/16`, so parallel runs and leftovers of other processes do not
/// collide), plus decoy namespaces that `--auto` must pass over: one with an address in the
/// exempt range, one with an address inside the CIDR that it does not use towards the
/// apiserver (its route takes a source outside every container CIDR). Names sort so that the decoys and the node
/// (which also has an address in the CIDR, and is where `verify` runs, so it must be skipped
/// as "self") come before the pod.
pub struct AutoTopology {
    pub decoy_exempt: Netns,
    pub decoy_other: Netns,
    pub node: Netns,
    pub pod: Netns,
    pub api: Netns,
    pub cidr: String,
    pub exempt: String,
    pub pod_ip: String,
    listener: Option<Listener>,
}

impl AutoTopology {
    pub fn new() -> AutoTopology {
        let n = 100 + std::process::id() % 100;
        let mut t = AutoTopology {
            decoy_exempt: Netns::new("vauto-a-decoy"),
            decoy_other: Netns::new("vauto-b-decoy"),
            node: Netns::new("vauto-node"),
            pod: Netns::new("vauto-pod"),
            api: Netns::new("vauto-api"),
            cidr: format!("10.{n}.0.0/16"),
            exempt: format!("10.{n}.250.0/24"),
            pod_ip: format!("10.{n}.1.2"),
            listener: None,
        };
        for (ns, addr) in [
            (&t.decoy_exempt, format!("10.{n}.250.2/24")),
            (&t.decoy_other, format!("172.31.{n}.2/24")),
        ] {
            // A veth pair inside the decoy (the dummy module may be missing).
            ns.ip_ok(&["link", "add", "d0", "type", "veth", "peer", "name", "d1"]);
            ns.ip_ok(&["addr", "add", &addr, "dev", "d0"]);
            ns.ip_ok(&["link", "set", "d0", "up"]);
            ns.ip_ok(&["link", "set", "d1", "up"]);
        }
        // The "other" decoy also holds a gateway-like address inside the CIDR, but reaches the
        // apiserver from its address outside it: no pod.
        let other = &t.decoy_other;
        other.ip_ok(&["addr", "add", &format!("10.{n}.5.1/24"), "dev", "d0"]);
        other.ip_ok(&[
            "route",
            "add",
            &format!("{API_V4}/32"),
            "dev",
            "d0",
            "src",
            &format!("172.31.{n}.2"),
        ]);
        let (pod, node, api) = (&t.pod, &t.node, &t.api);
        node.sysctl(&[("net.ipv4.ip_forward", "1")]);
        node.ip_ok(&[
            "link", "add", "to-pod", "type", "veth", "peer", "name", "eth0", "netns", &pod.name,
        ]);
        node.ip_ok(&[
            "link", "add", "to-api", "type", "veth", "peer", "name", "eth0", "netns", &api.name,
        ]);
        node.ip_ok(&["addr", "add", &format!("10.{n}.1.1/24"), "dev", "to-pod"]);
        node.ip_ok(&["addr", "add", &format!("{NODE_API_V4}/24"), "dev", "to-api"]);
        node.ip_ok(&["link", "set", "to-pod", "up"]);
        node.ip_ok(&["link", "set", "to-api", "up"]);
        pod.ip_ok(&["addr", "add", &format!("{}/24", t.pod_ip), "dev", "eth0"]);
        pod.ip_ok(&["link", "set", "eth0", "up"]);
        pod.ip_ok(&["route", "add", "default", "via", &format!("10.{n}.1.1")]);
        api.ip_ok(&["addr", "add", &format!("{API_V4}/24"), "dev", "eth0"]);
        api.ip_ok(&["link", "set", "eth0", "up"]);
        api.ip_ok(&["route", "add", "default", "via", NODE_API_V4]);
        t.listener = Some(Listener::start(api, API_V4, API_PORT));
        wait_connectable(pod, API_V4, API_PORT);
        t
    }
}

impl Drop for AutoTopology {
    fn drop(&mut self) {
        // The listener thread lives in `api`: stop it before the namespaces go.
        self.listener.take();
    }
}

/// A foreign nft table in `node` that resets pod connections to `API_V4:port` once they are
/// established (the SYN and SYN-ACK pass).
pub fn reset_established_pod_traffic(node: &Netns, port: u16) {
    let script = format!(
        "table ip handmade_resetter {{\n\
         \tchain resetter_fwd {{ type filter hook forward priority filter; policy accept;\n\
         \t\tip saddr {CONTAINER_CIDR_V4} ip daddr {API_V4} tcp dport {port} ct state established reject with tcp reset\n\t}}\n\
         }}\n"
    );
    let out = node.run_stdin(&["nft", "-f", "-"], &script);
    assert!(
        out.status.success(),
        "nft -f (hand-made resetter) failed: {}\n{script}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Packets counted so far by our nftables block rules in `node` (rules whose comment starts
/// with `block-`), read with `nft -j` independently of `verify`.
pub fn nft_block_packets(node: &Netns) -> u64 {
    let out = node.run_ok(&["nft", "-j", "list", "table", "inet", "apiserver_guard"]);
    let j: Value = serde_json::from_str(&out).expect("nft -j prints JSON");
    j["nftables"]
        .as_array()
        .expect("nftables array")
        .iter()
        .filter_map(|o| o.get("rule"))
        .filter(|r| r["comment"].as_str().is_some_and(|c| c.starts_with("block-")))
        .flat_map(|r| r["expr"].as_array().cloned().unwrap_or_default())
        .filter_map(|e| e.get("counter").and_then(|c| c["packets"].as_u64()))
        .sum()
}

/// A foreign nft table in `node` that drops everything the pod sends to the node itself (its
/// gateway), as a hardened host's INPUT policy can: the default control gets no answer.
pub fn drop_pod_traffic_to_node(node: &Netns) {
    let script = format!(
        "table ip handmade_input {{\n\
         \tchain input_drop {{ type filter hook input priority filter; policy accept;\n\
         \t\tip saddr {POD_V4} drop\n\t}}\n\
         }}\n"
    );
    let out = node.run_stdin(&["nft", "-f", "-"], &script);
    assert!(
        out.status.success(),
        "nft -f (hand-made input drop) failed: {}\n{script}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A foreign nft table in `node` that rejects the pod's connections to `API_V4:API_PORT` with a
/// TCP reset in FORWARD, exactly as our rule would, but is not ours.
pub fn reject_pod_traffic_by_hand(node: &Netns) {
    let script = format!(
        "table ip handmade_reject {{\n\
         \tchain reject_fwd {{ type filter hook forward priority filter; policy accept;\n\
         \t\tip saddr {CONTAINER_CIDR_V4} ip daddr {API_V4} tcp dport {API_PORT} reject with tcp reset\n\t}}\n\
         }}\n"
    );
    let out = node.run_stdin(&["nft", "-f", "-"], &script);
    assert!(
        out.status.success(),
        "nft -f (hand-made reject) failed: {}\n{script}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The `status` of the block verdict of endpoint `i`, and its detail (empty when none).
pub fn block_verdict(report: &Value, i: usize) -> (String, String) {
    let b = &report["endpoints"][i]["block"];
    (
        b["status"].as_str().unwrap_or("").to_owned(),
        b["detail"].as_str().unwrap_or("").to_owned(),
    )
}

/// Port of the control-plane apiservers of the per-endpoint evidence test (listened on by
/// the node itself and by `API_V4`).
pub const CONTROL_PLANE_PORT: u16 = 6443;

/// A foreign nft table in `node` whose FORWARD chain (priority -10, before ours) rejects the
/// pod's connections to `API_V4:port` with a TCP reset, as our rule would.
pub fn foreign_forward_reject(node: &Netns, port: u16) {
    node.run_ok(&["nft", "add", "table", "ip", "foreign"]);
    node.run_ok(&[
        "nft",
        "add",
        "chain",
        "ip",
        "foreign",
        "fw1",
        "{ type filter hook forward priority -10; }",
    ]);
    node.run_ok(&[
        "nft",
        "add",
        "rule",
        "ip",
        "foreign",
        "fw1",
        "ip",
        "saddr",
        POD_V4,
        "ip",
        "daddr",
        API_V4,
        "tcp",
        "dport",
        &port.to_string(),
        "reject",
        "with",
        "tcp",
        "reset",
    ]);
}

/// Packets counted so far by our nftables rule with `comment` in `node`, read with `nft -j`.
pub fn nft_rule_packets(node: &Netns, comment: &str) -> u64 {
    let out = node.run_ok(&["nft", "-j", "list", "table", "inet", "apiserver_guard"]);
    let j: Value = serde_json::from_str(&out).expect("nft -j prints JSON");
    j["nftables"]
        .as_array()
        .expect("nftables array")
        .iter()
        .filter_map(|o| o.get("rule"))
        .filter(|r| r["comment"].as_str() == Some(comment))
        .flat_map(|r| r["expr"].as_array().cloned().unwrap_or_default())
        .filter_map(|e| e.get("counter").and_then(|c| c["packets"].as_u64()))
        .sum()
}

/// The `status` of the node verdict of endpoint `i`, and its detail (empty when none).
pub fn node_verdict(report: &Value, i: usize) -> (String, String) {
    let b = &report["endpoints"][i]["node_check"];
    (
        b["status"].as_str().unwrap_or("").to_owned(),
        b["detail"].as_str().unwrap_or("").to_owned(),
    )
}
