//! Helpers for the real-kernel tests of `apiserver-guard` itself
//! (`tests/blocking.rs`, `tests/lifecycle.rs`): the backends under test, a
//! policy builder that runs the binary inside a namespace with a clean
//! environment and an empty config file, traffic assertions (curl, UDP) and
//! read-back of the firewall objects each backend owns.

use std::io::ErrorKind;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use super::curl::{curl, curl_from, CurlResult};
use super::guard::guard_bin;
use super::netns::Netns;

/// `--max-time` of curl probes that are expected to be answered (served or refused).
pub const MAX_TIME: u32 = 5;
/// Refused attempts in a row for the "refused fast" check.
pub const FAST_ATTEMPTS: usize = 20;
/// Upper bound of one refused attempt (a TCP reset, not a rate-limited ICMP error or a timeout).
pub const FAST_LIMIT: Duration = Duration::from_secs(1);

/// Our iptables chain and the comment on every rule we own.
pub const IPT_CHAIN: &str = "APISERVER-GUARD";
/// Our nftables table, as `nft list ruleset` prints its first line.
pub const NFT_TABLE_LINE: &str = "table inet apiserver_guard {";

/// Environment variables of the binary: cleared so a developer's or CI's
/// environment cannot change the policy under test.
const GUARD_ENV: [&str; 13] = [
    "APISERVER_GUARD_CONTAINER_CIDR",
    "APISERVER_GUARD_APISERVER",
    "APISERVER_GUARD_MODE",
    "APISERVER_GUARD_BACKEND",
    "APISERVER_GUARD_EXEMPT",
    "APISERVER_GUARD_ACTION",
    "APISERVER_GUARD_CONFIG",
    "APISERVER_GUARD_KUBECONFIG",
    "APISERVER_GUARD_ALLOW_PODS",
    "APISERVER_GUARD_ALLOW_NAMESPACES",
    "APISERVER_GUARD_DISCOVERY_CACHE",
    "NODE_NAME",
    "KUBERNETES_SERVICE_HOST",
];

/// A concrete backend (never `auto`), as tested.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Nftables,
    IptablesNft,
    IptablesLegacy,
}

impl Backend {
    pub const ALL: [Backend; 3] = [Backend::Nftables, Backend::IptablesNft, Backend::IptablesLegacy];

    /// The `--backend` value (also the name the binary reports).
    pub fn flag(self) -> &'static str {
        match self {
            Backend::Nftables => "nftables",
            Backend::IptablesNft => "iptables-nft",
            Backend::IptablesLegacy => "iptables-legacy",
        }
    }

    /// `nft` / `legacy` for the iptables backends.
    pub fn iptables_variant(self) -> Option<&'static str> {
        match self {
            Backend::Nftables => None,
            Backend::IptablesNft => Some("nft"),
            Backend::IptablesLegacy => Some("legacy"),
        }
    }
}

/// One `#[test]` per backend: `per_backend!(name);` expands to
/// `mod name { fn nftables(); fn iptables_nft(); fn iptables_legacy(); }`,
/// each calling `name(Backend::...)` of the invoking scope after `can_run()`.
#[allow(unused_macros)]
macro_rules! per_backend {
    ($($name:ident),+ $(,)?) => {$(
        mod $name {
            use $crate::common::guard_cases::Backend;

            #[test]
            fn nftables() {
                if !$crate::common::can_run() {
                    return;
                }
                super::$name(Backend::Nftables)
            }

            #[test]
            fn iptables_nft() {
                if !$crate::common::can_run() {
                    return;
                }
                super::$name(Backend::IptablesNft)
            }

            #[test]
            fn iptables_legacy() {
                if !$crate::common::can_run() {
                    return;
                }
                super::$name(Backend::IptablesLegacy)
            }
        }
    )+};
}
#[allow(unused_imports)]
pub(crate) use per_backend;

/// As `per_backend!`, for the two iptables variants only.
#[allow(unused_macros)]
macro_rules! per_iptables_variant {
    ($($name:ident),+ $(,)?) => {$(
        mod $name {
            use $crate::common::guard_cases::Backend;

            #[test]
            fn iptables_nft() {
                if !$crate::common::can_run() {
                    return;
                }
                super::$name(Backend::IptablesNft)
            }

            #[test]
            fn iptables_legacy() {
                if !$crate::common::can_run() {
                    return;
                }
                super::$name(Backend::IptablesLegacy)
            }
        }
    )+};
}
#[allow(unused_imports)]
pub(crate) use per_iptables_variant;

/// An empty TOML file (in cargo's per-target temp dir) passed as `--config`,
/// so a stray `/etc/apiserver-guard/config.toml` cannot change the policy.
pub fn empty_config() -> &'static str {
    static PATH: OnceLock<String> = OnceLock::new();
    PATH.get_or_init(|| {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        let path = dir.join("apiserver-guard-empty-config.toml");
        std::fs::write(&path, "").unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        path.to_str().expect("utf-8 temp path").to_owned()
    })
}

/// Result of one run of the binary.
#[derive(Debug, Clone)]
pub struct GuardRun {
    pub args: Vec<String>,
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl GuardRun {
    /// Panics with the full output unless the exit code is `code`.
    #[track_caller]
    pub fn expect_code(&self, code: i32, what: &str) -> &GuardRun {
        assert_eq!(
            self.code,
            code,
            "{what}: `apiserver-guard {}` exited {} (expected {code})\nstdout: {}\nstderr: {}",
            self.args.join(" "),
            self.code,
            self.stdout.trim(),
            self.stderr.trim()
        );
        self
    }
}

/// Runs `apiserver-guard args...` inside `ns` with every `APISERVER_GUARD_*` variable unset.
pub fn run_guard(ns: &Netns, args: &[String]) -> GuardRun {
    run_guard_with(ns, &[], args)
}

/// `run_guard` with extra `NAME=value` assignments (e.g. a PATH with shims first).
pub fn run_guard_with(ns: &Netns, assignments: &[String], args: &[String]) -> GuardRun {
    let mut argv: Vec<&str> = vec!["env"];
    for var in GUARD_ENV {
        argv.extend(["-u", var]);
    }
    argv.extend(assignments.iter().map(String::as_str));
    argv.push(guard_bin());
    argv.extend(args.iter().map(String::as_str));
    let out = ns.run(&argv);
    GuardRun {
        args: args.to_vec(),
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `apiserver-guard remove` inside `ns`.
pub fn remove(ns: &Netns) -> GuardRun {
    run_guard(ns, &["remove".to_owned()])
}

/// `IP:PORT`, `[IPv6]:PORT`, or the bare address when `port` is None.
pub fn endpoint(ip: &str, port: Option<u16>) -> String {
    match port {
        None => ip.to_owned(),
        Some(p) if ip.contains(':') => format!("[{ip}]:{p}"),
        Some(p) => format!("{ip}:{p}"),
    }
}

/// A complete policy on the command line (no env, empty config file).
#[derive(Debug, Clone)]
pub struct GuardPolicy {
    pub backend: Backend,
    pub mode: &'static str,
    pub container_cidrs: Vec<String>,
    pub apiservers: Vec<String>,
    pub action: &'static str,
}

impl GuardPolicy {
    /// `--mode mode --container-cidr cidrs --apiserver apiservers --action reject`.
    pub fn new(backend: Backend, mode: &'static str, cidrs: &[&str], apiservers: &[&str]) -> GuardPolicy {
        GuardPolicy {
            backend,
            mode,
            container_cidrs: cidrs.iter().map(|s| s.to_string()).collect(),
            apiservers: apiservers.iter().map(|s| s.to_string()).collect(),
            action: "reject",
        }
    }

    pub fn with_action(mut self, action: &'static str) -> GuardPolicy {
        self.action = action;
        self
    }

    pub fn with_backend(mut self, backend: Backend) -> GuardPolicy {
        self.backend = backend;
        self
    }

    /// Argument vector of `subcommand` with this policy.
    pub fn args(&self, subcommand: &str) -> Vec<String> {
        let mut a = vec![subcommand.to_owned(), "--config".to_owned(), empty_config().to_owned()];
        a.extend(["--container-cidr".to_owned(), self.container_cidrs.join(",")]);
        a.extend(["--apiserver".to_owned(), self.apiservers.join(",")]);
        a.extend(["--mode".to_owned(), self.mode.to_owned()]);
        a.extend(["--backend".to_owned(), self.backend.flag().to_owned()]);
        a.extend(["--action".to_owned(), self.action.to_owned()]);
        a
    }

    pub fn apply(&self, ns: &Netns) -> GuardRun {
        run_guard(ns, &self.args("apply"))
    }

    /// `apply`, asserting exit 0.
    #[track_caller]
    pub fn apply_ok(&self, ns: &Netns) -> GuardRun {
        let r = self.apply(ns);
        r.expect_code(0, &format!("apply ({})", self.backend.flag()));
        r
    }

    /// `status --output json`: the run and the parsed report (panics if stdout is not JSON).
    #[track_caller]
    pub fn status(&self, ns: &Netns) -> (GuardRun, serde_json::Value) {
        let mut args = self.args("status");
        args.extend(["--output".to_owned(), "json".to_owned()]);
        let r = run_guard(ns, &args);
        let json = serde_json::from_str(&r.stdout)
            .unwrap_or_else(|e| panic!("status --output json printed no JSON ({e}): {r:?}"));
        (r, json)
    }

    /// `status` must exit 0 with `in_sync: true`, empty drift and our backend.
    #[track_caller]
    pub fn assert_in_sync(&self, ns: &Netns, what: &str) {
        let (r, json) = self.status(ns);
        r.expect_code(0, what);
        assert_eq!(json["in_sync"], serde_json::Value::Bool(true), "{what}: {json}");
        assert_eq!(json["drift"], serde_json::json!([]), "{what}: {json}");
        assert_eq!(json["backend"], self.backend.flag(), "{what}: {json}");
    }
}

#[track_caller]
pub fn assert_served(r: &CurlResult, what: &str) {
    assert!(r.served(), "{what}: expected HTTP 200, got {r:?}");
}

#[track_caller]
pub fn assert_refused(r: &CurlResult, what: &str) {
    assert!(r.refused(), "{what}: expected refused (curl exit 7), got {r:?}");
}

/// `FAST_ATTEMPTS` curls in a row (from `src` when given), each refused
/// (curl exit 7) in under `FAST_LIMIT`: a TCP reset, which is neither rate
/// limited nor a timeout.
#[track_caller]
pub fn assert_refused_fast(ns: &Netns, src: Option<&str>, ip: &str, port: u16, what: &str) {
    for i in 0..FAST_ATTEMPTS {
        let r = match src {
            Some(s) => curl_from(ns, s, ip, port, MAX_TIME),
            None => curl(ns, ip, port, MAX_TIME),
        };
        assert!(
            r.refused(),
            "{what}: attempt {}/{FAST_ATTEMPTS}: expected refused (curl exit 7), got {r:?}",
            i + 1
        );
        assert!(
            r.elapsed < FAST_LIMIT,
            "{what}: attempt {}/{FAST_ATTEMPTS} refused but took {:?} (limit {FAST_LIMIT:?}): not a TCP reset?",
            i + 1,
            r.elapsed
        );
    }
}

/// How a UDP datagram to a port nobody listens on was answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UdpOutcome {
    /// ICMP port unreachable from the destination (ECONNREFUSED): reached it.
    PortUnreachable,
    /// ICMP "administratively prohibited" (EHOSTUNREACH for IPv4, EACCES for IPv6).
    Prohibited,
    /// No answer within the timeout (dropped).
    Silent,
    Other(String),
}

/// UDP port with no listener in the apiserver namespace.
pub const UDP_CLOSED_PORT: u16 = 9;

/// Sends one datagram from `ns` to `ip:port` on a connected UDP socket and
/// classifies the ICMP error that comes back (waits at most `timeout`).
pub fn udp_probe(ns: &Netns, ip: &str, port: u16, timeout: Duration) -> UdpOutcome {
    let ip: IpAddr = ip.parse().expect("valid address");
    let dest = SocketAddr::new(ip, port);
    let bind: SocketAddr = if ip.is_ipv4() {
        "0.0.0.0:0".parse().expect("valid")
    } else {
        "[::]:0".parse().expect("valid")
    };
    ns.in_thread(|| -> UdpOutcome {
        let probe = || -> std::io::Result<()> {
            let s = UdpSocket::bind(bind)?;
            s.connect(dest)?;
            s.set_read_timeout(Some(timeout))?;
            s.send(b"probe")?;
            let mut buf = [0u8; 64];
            s.recv(&mut buf).map(|_| ())
        };
        match probe() {
            Ok(()) => UdpOutcome::Other("got a UDP answer".into()),
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => UdpOutcome::PortUnreachable,
            Err(e) if e.raw_os_error() == Some(libc::EHOSTUNREACH) || e.raw_os_error() == Some(libc::EACCES) => {
                UdpOutcome::Prohibited
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::TimedOut => UdpOutcome::Silent,
            Err(e) => UdpOutcome::Other(e.to_string()),
        }
    })
    .unwrap_or_else(|e| panic!("enter netns {}: {e}", ns.name))
}

/// Runs a firewall tool inside `ns` and asserts success; returns stdout.
#[track_caller]
pub fn fw_ok(ns: &Netns, argv: &[&str]) -> String {
    ns.run_ok(argv)
}

/// `<iptables|ip6tables>-<variant> -w 10 args...` inside `ns` (the xtables
/// lock is shared by every namespace, so wait for it), asserting success.
#[track_caller]
pub fn ipt_ok(ns: &Netns, v6: bool, variant: &str, args: &[&str]) -> String {
    let tool = format!("{}-{variant}", if v6 { "ip6tables" } else { "iptables" });
    let mut argv = vec![tool.as_str(), "-w", "10"];
    argv.extend_from_slice(args);
    ns.run_ok(&argv)
}

/// `iptables-<variant>-save` + `ip6tables-<variant>-save` (comments stripped).
pub fn ipt_save(ns: &Netns, variant: &str) -> String {
    let mut all = String::new();
    for base in ["iptables", "ip6tables"] {
        let tool = format!("{base}-{variant}-save");
        all.push_str(&format!("==> {tool} <==\n"));
        for line in ns.run_ok(&[&tool]).lines().filter(|l| !l.starts_with('#')) {
            all.push_str(line);
            all.push('\n');
        }
    }
    all
}

/// `<iptables|ip6tables>-<variant>-save` of one family (comments stripped).
pub fn ipt_save_family(ns: &Netns, v6: bool, variant: &str) -> String {
    let tool = format!("{}-{variant}-save", if v6 { "ip6tables" } else { "iptables" });
    ns.run_ok(&[&tool])
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| format!("{l}\n"))
        .collect()
}

/// Lines of `text` exactly equal to `line`.
pub fn count_lines(text: &str, line: &str) -> usize {
    text.lines().filter(|l| *l == line).count()
}

/// Our jump into `APISERVER-GUARD` as `iptables-save` prints it in `chain`.
pub fn jump_line(chain: &str) -> String {
    format!("-A {chain} -m comment --comment apiserver-guard -j {IPT_CHAIN}")
}

/// Whether `nft list table inet apiserver_guard` finds our table.
pub fn nft_table_present(ns: &Netns) -> bool {
    ns.run(&["nft", "list", "table", "inet", "apiserver_guard"])
        .status
        .success()
}

/// Whether an iptables `-save` dump mentions our chain or our comment.
fn mentions_us(save: &str) -> bool {
    save.contains(IPT_CHAIN) || save.contains("apiserver-guard")
}

/// The backends that hold any object of ours in `ns` (read with the
/// `-save` tools and `nft list table`, none of which creates anything).
pub fn holders(ns: &Netns) -> Vec<Backend> {
    let mut found = Vec::new();
    if nft_table_present(ns) {
        found.push(Backend::Nftables);
    }
    if mentions_us(&ipt_save(ns, "nft")) {
        found.push(Backend::IptablesNft);
    }
    if mentions_us(&ipt_save(ns, "legacy")) {
        found.push(Backend::IptablesLegacy);
    }
    found
}

/// Another agent's nftables table: a forward base chain at priority -200
/// (before ours) that accepts `accept_src`.
pub fn add_foreign_nft_accept(ns: &Netns, table: &str, accept_src: &str) {
    fw_ok(ns, &["nft", "add", "table", "inet", table]);
    fw_ok(
        ns,
        &[
            "nft",
            "add",
            "chain",
            "inet",
            table,
            "accepting",
            "{ type filter hook forward priority -200; policy accept; }",
        ],
    );
    let family = if accept_src.contains(':') { "ip6" } else { "ip" };
    fw_ok(
        ns,
        &[
            "nft",
            "add",
            "rule",
            "inet",
            table,
            "accepting",
            family,
            "saddr",
            accept_src,
            "counter",
            "accept",
        ],
    );
}

/// Asserts two firewall snapshots are byte-identical; on failure shows a
/// line diff (`-` only in `expected`, `+` only in `actual`), then both in full.
#[track_caller]
pub fn assert_same_snapshot(expected: &str, actual: &str, what: &str) {
    if expected == actual {
        return;
    }
    panic!(
        "{what}: firewall snapshots differ\n{}--- expected:\n{expected}--- actual:\n{actual}",
        line_diff(expected, actual)
    );
}

/// Minimal line diff (longest common subsequence; snapshots are small).
pub fn line_diff(a: &str, b: &str) -> String {
    let (a, b): (Vec<&str>, Vec<&str>) = (a.lines().collect(), b.lines().collect());
    // lcs[i][j]: length of the LCS of a[i..] and b[j..].
    let mut lcs = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j, mut out) = (0, 0, String::new());
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            out.push_str(&format!("  {}\n", a[i]));
            i += 1;
            j += 1;
        } else if j < b.len() && (i == a.len() || lcs[i][j + 1] >= lcs[i + 1][j]) {
            out.push_str(&format!("+ {}\n", b[j]));
            j += 1;
        } else {
            out.push_str(&format!("- {}\n", a[i]));
            i += 1;
        }
    }
    out
}
