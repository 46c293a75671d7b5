//! Running the binary with a controlled environment (every
//! `APISERVER_GUARD_*` variable unset unless the test sets it), temporary
//! config files, and the builder of refused-input cases: the case tables
//! themselves live next to the test that runs them (`tests/bad_input/`).

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
pub type Overrides<'a> = &'a [(&'a str, Option<&'a str>)];

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
    pub fn without(mut self, absent: &[&str]) -> BadCase {
        self.absent = absent.iter().map(|s| s.to_string()).collect();
        self
    }
}

/// Builds the cases of one table, each otherwise identical to the good
/// policy with `--backend backend` and an empty config file.
pub struct CaseBuilder {
    backend: String,
    empty: String,
}

impl CaseBuilder {
    pub fn new(dir: &TempDir, backend: &str) -> CaseBuilder {
        CaseBuilder {
            backend: backend.to_owned(),
            empty: dir.empty_config(),
        }
    }

    /// A case given by flag overrides.
    pub fn b(&self, name: &str, overrides: Overrides, expect: &[&str]) -> BadCase {
        build(name, &self.backend, &self.empty, overrides, &[], expect)
    }

    /// A case given by flag overrides and environment.
    pub fn be(&self, name: &str, overrides: Overrides, env: &[(&str, &str)], expect: &[&str]) -> BadCase {
        build(name, &self.backend, &self.empty, overrides, env, expect)
    }

    /// A config file case: flags given by the file are dropped from the command line.
    pub fn file(&self, name: &str, path: &str, expect: &[&str]) -> BadCase {
        build(
            name,
            &self.backend,
            path,
            &[("--container-cidr", None), ("--apiserver", None), ("--mode", None)],
            &[],
            expect,
        )
    }
}

/// Override of `--container-cidr`.
pub fn cidr(v: &str) -> [(&str, Option<&str>); 1] {
    [("--container-cidr", Some(v))]
}

/// Override of `--apiserver`.
pub fn api(v: &str) -> [(&str, Option<&str>); 1] {
    [("--apiserver", Some(v))]
}
