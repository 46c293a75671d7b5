//! `can_run`: decides once per test process whether the privileged
//! integration tests can run here (root, `ip netns`, setns, required tools),
//! skipping locally but failing hard in CI.

use std::path::Path;
use std::sync::OnceLock;

use super::netns::Netns;

const TOOLS: [&str; 7] = [
    "ip",
    "nft",
    "curl",
    "sysctl",
    "iptables-legacy-save",
    "ip6tables-legacy-save",
    "iptables-nft",
];

/// True when the integration tests can run. Otherwise: panics with the
/// reason if `CI` is `true` (or `1`), else prints `skipping: <reason>` to
/// stderr and returns false.
pub fn can_run() -> bool {
    static CHECK: OnceLock<Result<(), String>> = OnceLock::new();
    match CHECK.get_or_init(check) {
        Ok(()) => true,
        Err(reason) if in_ci() => panic!("integration tests cannot run in CI: {reason}"),
        Err(reason) => {
            eprintln!("skipping: {reason}");
            false
        }
    }
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}

fn check() -> Result<(), String> {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    if euid != 0 {
        return Err(format!("integration tests need root (euid is {euid})"));
    }
    let missing: Vec<&str> = TOOLS.iter().copied().filter(|t| !in_path(t)).collect();
    if !missing.is_empty() {
        return Err(format!("missing tools in PATH: {}", missing.join(", ")));
    }
    let probe = Netns::try_new("probe").map_err(|e| format!("cannot create a network namespace: {e}"))?;
    probe
        .in_thread(|| ())
        .map_err(|e| format!("cannot enter network namespace {}: {e}", probe.name))?;
    let out = probe.run(&["true"]);
    if !out.status.success() {
        return Err(format!(
            "`ip netns exec {} true` failed: {}",
            probe.name,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(())
}

fn in_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|dir| is_executable(&dir.join(tool))))
        .unwrap_or(false)
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}
