//! Helpers for `tests/bad_input.rs`: running the binary with a controlled
//! environment (every `APISERVER_GUARD_*` variable unset unless the test sets
//! it), temporary config files, and the table of refused inputs.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::atomic::{AtomicU64, Ordering};

use super::guard::guard_bin;
use super::netns::Netns;

/// Every environment variable the binary reads; unset for each run so the
/// host's environment cannot leak into a test.
pub const GUARD_ENV_VARS: [&str; 22] = [
    "APISERVER_GUARD_CONTAINER_CIDR",
    "APISERVER_GUARD_APISERVER",
    "APISERVER_GUARD_MODE",
    "APISERVER_GUARD_BACKEND",
    "APISERVER_GUARD_EXEMPT",
    "APISERVER_GUARD_ACTION",
    "APISERVER_GUARD_LOG_GROUP",
    "APISERVER_GUARD_CONFIG",
    // Daemon and discovery settings: every command validates them when given.
    "APISERVER_GUARD_RESYNC_INTERVAL",
    "APISERVER_GUARD_LISTEN",
    "APISERVER_GUARD_CLEANUP_ON_EXIT",
    "APISERVER_GUARD_LOG_FORMAT",
    "APISERVER_GUARD_PROBE_INTERVAL",
    "APISERVER_GUARD_READY_REQUIRES_PROBE",
    "APISERVER_GUARD_NODE_TAINT",
    "APISERVER_GUARD_TABLE_OWNERSHIP",
    "APISERVER_GUARD_KUBECONFIG",
    "APISERVER_GUARD_ALLOW_PODS",
    "APISERVER_GUARD_ALLOW_NAMESPACES",
    "APISERVER_GUARD_DISCOVERY_CACHE",
    "NODE_NAME",
    "KUBERNETES_SERVICE_HOST",
];

/// Finished run of the binary, decoded.
#[derive(Debug, Clone)]
pub struct GuardRun {
    /// Exit code; None when killed by a signal.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl GuardRun {
    fn from_output(out: Output) -> GuardRun {
        GuardRun {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

/// `ip netns exec <ns> [prefix...] env -u APISERVER_GUARD_*... K=V... <bin> args...`.
/// `prefix` wraps the whole thing (e.g. `setpriv ...`); `env` entries are set
/// after the unsets, so a test can set one variable explicitly (PATH too).
pub fn guard_run(ns: &Netns, prefix: &[&str], env: &[(&str, &str)], args: &[&str]) -> GuardRun {
    let assignments: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let mut argv: Vec<&str> = prefix.to_vec();
    argv.push("env");
    for var in GUARD_ENV_VARS {
        argv.extend(["-u", var]);
    }
    argv.extend(assignments.iter().map(String::as_str));
    argv.push(guard_bin());
    argv.extend_from_slice(args);
    GuardRun::from_output(ns.run(&argv))
}

/// A temporary directory for config files, removed on drop.
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("apiserver-guard-test-{tag}-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
        // Readable by an unprivileged user too (the "not root" test runs the binary as nobody).
        set_mode(&path, 0o755);
        TempDir { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Write `name` with `text` and return its path as a string.
    pub fn file(&self, name: &str, text: &str) -> String {
        let p = self.path.join(name);
        fs::write(&p, text).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
        set_mode(&p, 0o644);
        p.to_str().expect("utf-8 temp path").to_owned()
    }

    /// An empty config file (the binary then ignores the host's default config).
    pub fn empty_config(&self) -> String {
        self.file("empty.toml", "")
    }
}

fn set_mode(p: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap_or_else(|e| panic!("chmod {}: {e}", p.display()));
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

/// The good policy every bad case starts from (tunnel mode: no self-lockout question).
pub const GOOD_CIDR: &str = "10.0.0.0/16";
pub const GOOD_API: &str = "192.168.50.10:5443";
pub const GOOD_MODE: &str = "tunnel";

/// A path that certainly does not exist.
pub const MISSING_CONFIG: &str = "/nonexistent/apiserver-guard-test/config.toml";
/// A kubeconfig that certainly does not exist.
pub const MISSING_KUBECONFIG: &str = "/nonexistent/apiserver-guard-test/kubeconfig";

/// One refused input: the arguments after the subcommand, extra environment,
/// phrases that must all appear on stderr (the first names the flag, the
/// variable or the config key the value came from) and phrases that must not
/// (a second, contradictory message).
#[derive(Debug, Clone)]
pub struct BadCase {
    pub name: String,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub expect: Vec<String>,
    pub absent: Vec<String>,
}

impl BadCase {
    pub fn args(&self) -> Vec<&str> {
        self.args.iter().map(String::as_str).collect()
    }

    pub fn env(&self) -> Vec<(&str, &str)> {
        self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
    }
}

/// Flag overrides of one case: `(flag, Some(value))` replaces the default
/// (several entries for one flag repeat it), `(flag, None)` drops it.
type Overrides<'a> = &'a [(&'a str, Option<&'a str>)];

fn build(
    name: &str,
    backend: &str,
    config: &str,
    overrides: Overrides,
    env: &[(&str, &str)],
    expect: &[&str],
) -> BadCase {
    let defaults = [
        ("--container-cidr", GOOD_CIDR),
        ("--apiserver", GOOD_API),
        ("--mode", GOOD_MODE),
        ("--backend", backend),
        ("--config", config),
    ];
    let mut args = Vec::new();
    let mut push = |flag: &str, value: &str| {
        args.push(flag.to_owned());
        args.push(value.to_owned());
    };
    for (flag, default) in defaults {
        let mine: Vec<&Option<&str>> = overrides.iter().filter(|(f, _)| *f == flag).map(|(_, v)| v).collect();
        if mine.is_empty() {
            push(flag, default);
        }
        for v in mine.into_iter().flatten() {
            push(flag, v);
        }
    }
    for (flag, value) in overrides {
        if !defaults.iter().any(|(d, _)| d == flag) {
            if let Some(v) = value {
                push(flag, v);
            }
        }
    }
    BadCase {
        name: name.to_owned(),
        args,
        env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        expect: expect.iter().map(|s| s.to_string()).collect(),
        absent: Vec::new(),
    }
}

impl BadCase {
    /// Phrases that must not appear on stderr.
    fn without(mut self, absent: &[&str]) -> BadCase {
        self.absent = absent.iter().map(|s| s.to_string()).collect();
        self
    }
}

/// Every refused input, each otherwise identical to the good policy with
/// `--backend backend`. Config files are written into `dir`.
pub fn bad_cases(dir: &TempDir, backend: &str) -> Vec<BadCase> {
    let empty = dir.empty_config();
    let unknown_key = dir.file("unknown-key.toml", "container_cidrs = [\"10.0.0.0/16\"]\n");
    let not_toml = dir.file("not-toml.toml", "this is not toml\n");
    let bad_value = dir.file(
        "bad-value.toml",
        "container_cidr = \"10.0.1.5/16\"\napiserver = \"192.168.50.10:5443\"\nmode = \"tunnel\"\n",
    );
    let bad_mode = dir.file("bad-mode.toml", "mode = \"overlay\"\n");
    let bad_type = dir.file("bad-type.toml", "container_cidr = 10\n");
    let smuggled = dir.file(
        "smuggled.toml",
        "container_cidr = [\"10.0.0.0/16; nft flush ruleset\"]\napiserver = \"192.168.50.10:5443\"\n",
    );
    let config_dir = dir.path().to_str().expect("utf-8 temp path").to_owned();
    let loopback_api = dir.file(
        "loopback-api.toml",
        "container_cidr = \"10.0.0.0/16\"\napiserver = \"127.0.0.1:6443\"\nmode = \"tunnel\"\n",
    );
    let mapped_cidr = dir.file(
        "mapped-cidr.toml",
        "container_cidr = \"::ffff:10.0.0.0/104\"\napiserver = \"192.168.50.10:5443\"\nmode = \"tunnel\"\n",
    );
    let zero_resync = dir.file("zero-resync.toml", "resync_interval = \"0s\"\n");
    // Values of the wrong TOML type: each message says what the key takes, in plain words.
    let int_in_exempt = dir.file("int-in-exempt.toml", "exempt = [\"10.0.1.0/24\", 5]\n");
    let int_mode = dir.file("int-mode.toml", "mode = 3\n");
    let quoted_bool = dir.file("quoted-bool.toml", "cleanup_on_exit = \"true\"\n");
    let port_only_listen = dir.file("port-only-listen.toml", "listen = 9440\n");
    let bool_resync = dir.file("bool-resync.toml", "resync_interval = true\n");
    let long_resync = dir.file("long-resync.toml", "resync_interval = 7200\n");
    let table_api = dir.file(
        "table-api.toml",
        "apiserver = { ip = \"192.168.50.10\", port = 5443 }\n",
    );
    let bool_backend = dir.file("bool-backend.toml", "backend = false\n");
    let star_namespaces = dir.file(
        "star-namespaces.toml",
        "allow_namespaces = [\"kube-system\", \"*\"]\napiserver = \"auto\"\n",
    );
    let split_exempt = dir.file("split-exempt.toml", "exempt = [\"10.0.0.0/17\", \"10.0.128.0/17\"]\n");
    // A cache that, if it were used, would install another apiserver.
    let cache = dir.file(
        "discovered.json",
        "{\"apiservers\": [\"192.168.50.99:5443\"], \"pod_cidrs\": [], \"allowed\": {}}\n",
    );
    let not_kubeconfig = dir.file("not-a-kubeconfig", "clusters: 7\n");
    let big_log_group = dir.file("big-log-group.toml", "log_group = 70000\n");
    let bool_log_group = dir.file("bool-log-group.toml", "log_group = true\n");
    let b = |name: &str, overrides: Overrides, expect: &[&str]| build(name, backend, &empty, overrides, &[], expect);
    let be = |name: &str, overrides: Overrides, env: &[(&str, &str)], expect: &[&str]| {
        build(name, backend, &empty, overrides, env, expect)
    };
    let cidr = |v| [("--container-cidr", Some(v))];
    let api = |v| [("--apiserver", Some(v))];
    // A config file case: flags given by the file are dropped from the command line.
    let file = |name: &str, path: &str, expect: &[&str]| {
        build(
            name,
            backend,
            path,
            &[("--container-cidr", None), ("--apiserver", None), ("--mode", None)],
            &[],
            expect,
        )
    };
    vec![
        // Malformed CIDRs.
        b(
            "malformed cidr 10.0.0/16",
            &cidr("10.0.0/16"),
            &["'10.0.0/16'", "not a valid CIDR"],
        ),
        b("malformed cidr banana", &cidr("banana"), &["'banana'", "not a CIDR"]),
        b(
            "host bits v4",
            &cidr("10.0.1.5/16"),
            &["'10.0.1.5/16'", "host bits", "network address is 10.0.0.0/16"],
        ),
        b(
            "host bits v6 next to a good v4 cidr",
            &cidr("10.0.0.0/16,fd00::1/48"),
            &["'fd00::1/48'", "host bits", "network address is fd00::/48"],
        ),
        b(
            "prefix too long v4",
            &cidr("10.0.0.0/33"),
            &["'10.0.0.0/33'", "not a valid CIDR", "at most 32"],
        ),
        b(
            "prefix too long v6",
            &cidr("fd00::/129"),
            &["'fd00::/129'", "not a valid CIDR"],
        ),
        // Ports.
        b("port 0", &api("192.168.50.10:0"), &["port 0", "1..65535"]),
        b("port 65536", &api("192.168.50.10:65536"), &["port 65536", "1..65535"]),
        b(
            "port https",
            &api("192.168.50.10:https"),
            // Port names are not resolved: the message says the port is invalid and what is valid.
            &["'192.168.50.10:https'", "invalid port 'https'", "1 to 65535"],
        ),
        b(
            "port abc (hex letters reach the port parser)",
            &api("192.168.50.10:abc"),
            &["invalid port 'abc'", "1 to 65535"],
        ),
        // Unsafe policies.
        b("0.0.0.0/0 source", &cidr("0.0.0.0/0"), &["0.0.0.0/0", "every source"]),
        b(
            "::/0 source",
            &[
                ("--container-cidr", Some("::/0")),
                ("--apiserver", Some("[fd00:50::10]:5443")),
            ],
            &["::/0", "every source"],
        ),
        b(
            "apiserver inside a blocked cidr",
            &api("10.0.3.4:443"),
            &["10.0.3.4:443", "inside the blocked container CIDR 10.0.0.0/16"],
        ),
        b(
            "unspecified apiserver",
            &api("0.0.0.0:443"),
            &["0.0.0.0:443", "unspecified"],
        ),
        b(
            "ipv4 apiserver in brackets",
            &api("[192.168.50.10]:5443"),
            &["[192.168.50.10]:5443", "brackets"],
        ),
        // Empty lists.
        b(
            "no container cidr",
            &[("--container-cidr", None)],
            &["no container CIDR"],
        ),
        b("empty container cidr value", &cidr(""), &["no container CIDR"]),
        b("no apiserver", &[("--apiserver", None)], &["no apiserver"]),
        b("empty apiserver value", &api(",,"), &["no apiserver"]),
        b(
            "nothing to block for any family",
            &api("[fd00:50::10]:5443"),
            &["nothing to block", "10.0.0.0/16", "[fd00:50::10]:5443"],
        ),
        // Exempt.
        b(
            "exempt outside every cidr",
            &[("--exempt", Some("10.9.0.0/24"))],
            &["exempt 10.9.0.0/24", "not inside any container CIDR"],
        ),
        b(
            "exempt covering the whole cidr",
            &[("--exempt", Some("10.0.0.0/8"))],
            &[
                "--exempt: exempt 10.0.0.0/8",
                "covers the whole container CIDR 10.0.0.0/16",
            ],
        )
        // One problem, one message: not also "outside every container CIDR".
        .without(&["not inside any container CIDR"]),
        be(
            "exempt covering the whole cidr via APISERVER_GUARD_EXEMPT",
            &[],
            &[("APISERVER_GUARD_EXEMPT", "10.0.0.0/8")],
            &[
                "APISERVER_GUARD_EXEMPT: exempt 10.0.0.0/8",
                "covers the whole container CIDR",
            ],
        )
        .without(&["not inside any container CIDR"]),
        // Exempt ranges that only together cover the whole CIDR: the pods would be served.
        b(
            "exempt ranges together covering the whole cidr",
            &[("--exempt", Some("10.0.0.0/17,10.0.128.0/17"))],
            &[
                "--exempt: the exempt ranges 10.0.0.0/17, 10.0.128.0/17 together cover the whole container CIDR 10.0.0.0/16 (--container-cidr)",
                "nothing of it would be blocked",
            ],
        )
        .without(&["not inside any container CIDR"]),
        be(
            "four exempt ranges together covering the cidr via APISERVER_GUARD_EXEMPT",
            &[],
            &[(
                "APISERVER_GUARD_EXEMPT",
                "10.0.192.0/18,10.0.0.0/18,10.0.128.0/18,10.0.64.0/18",
            )],
            &["APISERVER_GUARD_EXEMPT: the exempt ranges 10.0.0.0/18, 10.0.64.0/18, 10.0.128.0/18, 10.0.192.0/18 together cover the whole container CIDR 10.0.0.0/16"],
        ),
        b(
            "exempt ranges together covering the cidr from the config file",
            &[("--config", Some(split_exempt.as_str()))],
            &[&format!(
                "exempt in {split_exempt}: the exempt ranges 10.0.0.0/17, 10.0.128.0/17 together cover the whole container CIDR 10.0.0.0/16"
            )],
        ),
        b(
            "exempt with host bits",
            &[("--exempt", Some("10.0.5.1/24"))],
            &["host bits", "10.0.5.0/24"],
        ),
        // Names are not addresses.
        b(
            "host name as apiserver",
            &api("kubernetes.default:443"),
            &["'kubernetes.default:443'", "host names are not resolved"],
        ),
        // Smuggled commands.
        b(
            "smuggled ; nft flush ruleset",
            &cidr("10.0.0.0/16; nft flush ruleset"),
            &["'10.0.0.0/16; nft flush ruleset'", "not a CIDR"],
        ),
        b(
            "smuggled -j ACCEPT",
            &cidr("10.0.0.0/16 -j ACCEPT"),
            &["'10.0.0.0/16 -j ACCEPT'", "not a CIDR"],
        ),
        b("smuggled $(reboot)", &cidr("$(reboot)"), &["'$(reboot)'", "not a CIDR"]),
        b(
            "smuggled in the apiserver",
            &api("192.168.50.10:5443; nft flush ruleset"),
            &["not an IP address"],
        ),
        b(
            "smuggled in exempt",
            &[("--exempt", Some("10.0.5.0/24 -j ACCEPT"))],
            &["'10.0.5.0/24 -j ACCEPT'", "not a CIDR"],
        ),
        be(
            "smuggled via APISERVER_GUARD_CONTAINER_CIDR",
            &[("--container-cidr", None)],
            &[("APISERVER_GUARD_CONTAINER_CIDR", "10.0.0.0/16; nft flush ruleset")],
            &["'10.0.0.0/16; nft flush ruleset'", "not a CIDR"],
        ),
        be(
            "host bits via APISERVER_GUARD_CONTAINER_CIDR",
            &[("--container-cidr", None)],
            &[("APISERVER_GUARD_CONTAINER_CIDR", "10.0.1.5/16")],
            &["host bits", "10.0.0.0/16"],
        ),
        be(
            "port 0 via APISERVER_GUARD_APISERVER",
            &[("--apiserver", None)],
            &[("APISERVER_GUARD_APISERVER", "192.168.50.10:0")],
            &["port 0", "1..65535"],
        ),
        // Unknown enum values: clap usage errors, exit 2 too.
        b(
            "--mode overlay",
            &[("--mode", Some("overlay"))],
            &["invalid value 'overlay'", "--mode"],
        ),
        b(
            "--backend pf",
            &[("--backend", Some("pf"))],
            &["invalid value 'pf'", "--backend"],
        ),
        b(
            "--action accept",
            &[("--action", Some("accept"))],
            &["invalid value 'accept'", "--action"],
        ),
        b(
            "--log-group 70000",
            &[("--log-group", Some("70000"))],
            &["--log-group: '70000' is not an NFLOG group", "0..65535", "'off'"],
        ),
        b(
            "--log-group on",
            &[("--log-group", Some("on"))],
            &["--log-group: 'on' is not an NFLOG group"],
        ),
        be(
            "APISERVER_GUARD_LOG_GROUP=65536",
            &[],
            &[("APISERVER_GUARD_LOG_GROUP", "65536")],
            &["APISERVER_GUARD_LOG_GROUP: '65536' is not an NFLOG group"],
        )
        .without(&["--log-group:"]),
        b(
            "config with log_group 70000",
            &[("--config", Some(big_log_group.as_str()))],
            &[&format!("log_group in {big_log_group}: '70000' is not an NFLOG group")],
        ),
        b(
            "config with a boolean log_group",
            &[("--config", Some(bool_log_group.as_str()))],
            &[&format!(
                "log_group in {bool_log_group}: expected an NFLOG group number 0..65535 or \"off\", found the boolean true"
            )],
        ),
        be(
            "APISERVER_GUARD_MODE=overlay",
            &[("--mode", None)],
            &[("APISERVER_GUARD_MODE", "overlay")],
            &["APISERVER_GUARD_MODE: 'overlay'", "--mode", "vpc, tunnel, both"],
        ),
        be(
            "empty APISERVER_GUARD_MODE",
            &[("--mode", None)],
            &[("APISERVER_GUARD_MODE", "")],
            &["APISERVER_GUARD_MODE is set but empty", "vpc, tunnel, both"],
        )
        .without(&["a value is required"]),
        be(
            "empty APISERVER_GUARD_ACTION",
            &[],
            &[("APISERVER_GUARD_ACTION", "")],
            &["APISERVER_GUARD_ACTION is set but empty", "reject, drop"],
        ),
        be(
            "empty APISERVER_GUARD_BACKEND",
            &[("--backend", None)],
            &[("APISERVER_GUARD_BACKEND", "")],
            &["APISERVER_GUARD_BACKEND is set but empty", "nftables"],
        ),
        be(
            "APISERVER_GUARD_LOG_FORMAT=xml (a daemon setting, checked by every command)",
            &[],
            &[("APISERVER_GUARD_LOG_FORMAT", "xml")],
            &["APISERVER_GUARD_LOG_FORMAT: 'xml'", "auto, text, json"],
        ),
        // Config files.
        file(
            "config with an unknown key",
            &unknown_key,
            &[
                &unknown_key,
                "unknown key 'container_cidrs'",
                "did you mean container_cidr?",
            ],
        ),
        file("config that is not TOML", &not_toml, &[&not_toml, "TOML parse error"]),
        file(
            "named config that does not exist",
            MISSING_CONFIG,
            &[MISSING_CONFIG, "cannot read it"],
        ),
        file(
            "config that is a directory",
            &config_dir,
            &[&config_dir, "cannot read it"],
        ),
        file(
            "config with a host-bit cidr",
            &bad_value,
            &["'10.0.1.5/16'", "host bits", "10.0.0.0/16"],
        ),
        file(
            "config with mode overlay",
            &bad_mode,
            &[&format!(
                "mode in {bad_mode}: expected one of \"vpc\", \"tunnel\", \"both\", found the string \"overlay\""
            )],
        ),
        file(
            "config with a number as cidr",
            &bad_type,
            &[&format!(
                "container_cidr in {bad_type}: expected a CIDR string or a list of CIDR strings, found the integer 10"
            )],
        ),
        // Wrong TOML types, key by key: plain words, no Rust or serde type names.
        b(
            "config with an integer in the exempt list",
            &[("--config", Some(int_in_exempt.as_str()))],
            &[&format!(
                "exempt in {int_in_exempt}: expected a CIDR string or a list of CIDR strings, found the integer 5"
            )],
        )
        .without(&["untagged", "OneOrMany", "variant"]),
        b(
            "config with an integer mode",
            &[("--mode", None), ("--config", Some(int_mode.as_str()))],
            &[&format!(
                "mode in {int_mode}: expected one of \"vpc\", \"tunnel\", \"both\", found the integer 3"
            )],
        )
        .without(&["wanted", "string or table"]),
        b(
            "config with a quoted boolean",
            &[("--config", Some(quoted_bool.as_str()))],
            &[
                &format!("cleanup_on_exit in {quoted_bool}: expected true or false, found the string \"true\""),
                "without quotes",
            ],
        ),
        b(
            "config with a port alone as listen",
            &[("--config", Some(port_only_listen.as_str()))],
            &[
                &format!("listen in {port_only_listen}: expected an address:port string"),
                "found the integer 9440",
                "write \"127.0.0.1:9440\"",
            ],
        ),
        b(
            "config with a boolean resync_interval",
            &[("--config", Some(bool_resync.as_str()))],
            &[&format!(
                "resync_interval in {bool_resync}: expected a duration such as \"10s\""
            ), "found the boolean true"],
        ),
        b(
            "config with a bare-seconds resync_interval out of range",
            &[("--config", Some(long_resync.as_str()))],
            &[&format!("resync_interval in {long_resync}: '7200' is outside 100ms..1h")],
        ),
        b(
            "config with a table as apiserver",
            &[("--apiserver", None), ("--config", Some(table_api.as_str()))],
            &[&format!("apiserver in {table_api}: expected an address string"), "found a table"],
        ),
        b(
            "config with a boolean backend",
            &[("--backend", None), ("--config", Some(bool_backend.as_str()))],
            &[
                &format!("backend in {bool_backend}: expected one of \"auto\", \"nftables\""),
                "found the boolean false",
            ],
        ),
        file("config with a smuggled command", &smuggled, &["not a CIDR"]),
        be(
            "APISERVER_GUARD_CONFIG names a missing file",
            &[("--config", None)],
            &[("APISERVER_GUARD_CONFIG", MISSING_CONFIG)],
            &[MISSING_CONFIG, "cannot read it"],
        ),
        // Addresses that parse but cannot work.
        b(
            "ipv4-mapped container cidr and apiserver",
            &[
                ("--container-cidr", Some("::ffff:10.0.0.0/104")),
                ("--apiserver", Some("[::ffff:192.168.50.10]:5443")),
            ],
            &[
                "--container-cidr: '::ffff:10.0.0.0/104'",
                "IPv4 form 10.0.0.0/8",
                "--apiserver: '[::ffff:192.168.50.10]:5443'",
                "IPv4 form 192.168.50.10:5443",
            ],
        ),
        b(
            "ipv4-mapped exempt",
            &[("--exempt", Some("::ffff:10.0.5.0/120"))],
            &["--exempt: '::ffff:10.0.5.0/120'", "IPv4 form 10.0.5.0/24"],
        )
        .without(&["not inside any container CIDR"]),
        b(
            "link-local multicast apiserver",
            &api("224.0.0.1:443"),
            &["--apiserver: '224.0.0.1:443'", "link-local multicast"],
        ),
        b(
            "multicast apiserver",
            &api("239.1.2.3"),
            &["--apiserver: '239.1.2.3'", "multicast"],
        ),
        b(
            "ipv6 multicast apiserver",
            &[
                ("--container-cidr", Some("fd00:10::/48")),
                ("--apiserver", Some("[ff02::1]:443")),
            ],
            &["--apiserver: '[ff02::1]:443'", "link-local multicast"],
        ),
        b(
            "broadcast apiserver",
            &api("255.255.255.255"),
            &["--apiserver: '255.255.255.255'", "broadcast"],
        ),
        b(
            "loopback apiserver",
            &api("127.0.0.1:6443"),
            &["--apiserver: '127.0.0.1:6443'", "loopback"],
        ),
        b(
            "ipv6 loopback apiserver",
            &[
                ("--container-cidr", Some("fd00:10::/48")),
                ("--apiserver", Some("[::1]:6443")),
            ],
            &["--apiserver: '[::1]:6443'", "loopback"],
        ),
        b(
            "ipv6 unspecified apiserver",
            &[
                ("--container-cidr", Some("fd00:10::/48")),
                ("--apiserver", Some("[::]:443")),
            ],
            &["--apiserver: '[::]:443'", "unspecified"],
        ),
        b(
            "multicast container cidr",
            &cidr("224.0.0.0/4"),
            &["--container-cidr: '224.0.0.0/4'", "multicast"],
        ),
        b(
            "reserved container cidr",
            &cidr("240.0.0.0/4"),
            &["--container-cidr: '240.0.0.0/4'", "reserved"],
        ),
        b(
            "container cidr overlapping multicast",
            &cidr("192.0.0.0/2"),
            &["--container-cidr: '192.0.0.0/2'", "overlaps 224.0.0.0/4"],
        ),
        b(
            "ipv6 multicast container cidr",
            &[
                ("--container-cidr", Some("ff00::/8")),
                ("--apiserver", Some("[fd00:50::10]:5443")),
            ],
            &["--container-cidr: 'ff00::/8'", "multicast"],
        ),
        b(
            "leading zeros in the container cidr",
            &cidr("010.000.000.000/16"),
            &[
                "--container-cidr: '010.000.000.000/16' is ambiguous",
                "(10.0.0.0/16)",
                "(8.0.0.0/16)",
            ],
        ),
        b(
            "leading zeros in the apiserver",
            &api("192.168.050.010:5443"),
            &[
                "--apiserver: '192.168.050.010:5443' is ambiguous",
                "(192.168.50.10:5443)",
                "(192.168.40.8:5443)",
            ],
        ),
        b(
            "leading zeros in exempt",
            &[("--exempt", Some("10.0.05.0/24"))],
            &["--exempt: '10.0.05.0/24' is ambiguous", "(10.0.5.0/24)"],
        ),
        be(
            "multicast apiserver via APISERVER_GUARD_APISERVER",
            &[("--apiserver", None)],
            &[("APISERVER_GUARD_APISERVER", "224.0.0.1:443")],
            &["APISERVER_GUARD_APISERVER: '224.0.0.1:443'", "multicast"],
        ),
        be(
            "leading zeros via APISERVER_GUARD_CONTAINER_CIDR",
            &[("--container-cidr", None)],
            &[("APISERVER_GUARD_CONTAINER_CIDR", "010.000.000.000/16")],
            &["APISERVER_GUARD_CONTAINER_CIDR: '010.000.000.000/16' is ambiguous"],
        ),
        file(
            "config with a loopback apiserver",
            &loopback_api,
            &[&format!("apiserver in {loopback_api}: '127.0.0.1:6443'"), "loopback"],
        ),
        file(
            "config with an ipv4-mapped container cidr",
            &mapped_cidr,
            &[
                &format!("container_cidr in {mapped_cidr}: '::ffff:10.0.0.0/104'"),
                "10.0.0.0/8",
            ],
        ),
        b(
            "ipv4-compatible apiserver",
            &api("[::192.168.50.10]:5443"),
            &[
                "--apiserver: '[::192.168.50.10]:5443' is an IPv4-compatible IPv6 address",
                "RFC 4291",
                "write the IPv4 form 192.168.50.10:5443",
            ],
        )
        .without(&["c0a8", "share no address family"]),
        b(
            "ipv4-compatible container cidr",
            &cidr("::10.0.0.0/104"),
            &[
                "--container-cidr: '::10.0.0.0/104' is IPv4-compatible IPv6",
                "write the IPv4 form 10.0.0.0/8",
            ],
        )
        .without(&["a00:0", "share no address family"]),
        // The allow-list: a real namespace per entry, and every message names where the value came from.
        b(
            "allow-pods entry with an empty namespace",
            &[("--allow-pods", Some("/apiserver-guard.io/allow=true"))],
            &[
                "--allow-pods: selector '/apiserver-guard.io/allow=true' has an empty namespace part",
                "NAMESPACE must be a real namespace name",
                "e.g. monitoring/apiserver-guard.io/allow=true",
            ],
        )
        .without(&["monitoring//"]),
        be(
            "allow-pods entry with namespace * via APISERVER_GUARD_ALLOW_PODS",
            &[],
            &[("APISERVER_GUARD_ALLOW_PODS", "*/app=x")],
            &[
                "APISERVER_GUARD_ALLOW_PODS: selector '*/app=x' names the namespace '*'",
                "no wildcard",
                "anyone who may create a pod anywhere can set a label",
            ],
        )
        .without(&["monitoring/*"]),
        b(
            "allow-pods selector without a namespace",
            &[("--allow-pods", Some("apiserver-guard.io/allow=true"))],
            &[
                "--allow-pods: selector 'apiserver-guard.io/allow=true' names no namespace",
                "e.g. monitoring/apiserver-guard.io/allow=true",
            ],
        ),
        b(
            "allow_namespaces * in the config file",
            &[("--apiserver", None), ("--config", Some(star_namespaces.as_str()))],
            &[
                &format!("allow_namespaces in {star_namespaces}: '*' is not a namespace name"),
                "no wildcard",
            ],
        ),
        b(
            "allow-namespaces that is no namespace name",
            &[("--allow-namespaces", Some("Kube_System"))],
            &["--allow-namespaces: 'Kube_System' is not a namespace name"],
        ),
        // Daemon settings are validated by every command, as `run` does.
        b(
            "resync_interval = 0s in the config file",
            &[("--config", Some(zero_resync.as_str()))],
            &[&format!("resync_interval in {zero_resync}: '0s'"), "100ms..1h"],
        ),
        be(
            "APISERVER_GUARD_RESYNC_INTERVAL=0s",
            &[],
            &[("APISERVER_GUARD_RESYNC_INTERVAL", "0s")],
            &["APISERVER_GUARD_RESYNC_INTERVAL: '0s'", "100ms..1h"],
        ),
        be(
            "APISERVER_GUARD_LISTEN=nonsense",
            &[],
            &[("APISERVER_GUARD_LISTEN", "nonsense")],
            &["APISERVER_GUARD_LISTEN: 'nonsense'", "address:port"],
        ),
        // A missing kubeconfig is a configuration error, never a reason to use the cache.
        b(
            "missing kubeconfig with a discovery cache at hand",
            &[
                ("--apiserver", Some("auto")),
                ("--kubeconfig", Some(MISSING_KUBECONFIG)),
                ("--discovery-cache", Some(cache.as_str())),
            ],
            &["--kubeconfig: cannot read the kubeconfig", MISSING_KUBECONFIG],
        )
        .without(&["last known state"]),
        be(
            "missing kubeconfig via APISERVER_GUARD_KUBECONFIG",
            &[
                ("--apiserver", Some("auto")),
                ("--discovery-cache", Some(cache.as_str())),
            ],
            &[("APISERVER_GUARD_KUBECONFIG", MISSING_KUBECONFIG)],
            &[
                "APISERVER_GUARD_KUBECONFIG: cannot read the kubeconfig",
                MISSING_KUBECONFIG,
            ],
        ),
        b(
            "kubeconfig that is not one",
            &[
                ("--apiserver", Some("auto")),
                ("--kubeconfig", Some(not_kubeconfig.as_str())),
                ("--discovery-cache", Some(cache.as_str())),
            ],
            &["--kubeconfig:", "not a valid kubeconfig"],
        ),
        // Several problems at once: each one is named.
        b(
            "several problems at once",
            &[
                ("--container-cidr", Some("10.0.1.5/16")),
                ("--apiserver", Some("192.168.50.10:0")),
            ],
            &["host bits", "10.0.0.0/16", "port 0"],
        ),
    ]
}
