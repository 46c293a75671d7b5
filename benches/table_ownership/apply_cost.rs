//! What an apply costs in process (the library: `backend::nftables::Nftables`, `Backend::apply`)
//! and as a process, in a network namespace of its own holding N foreign iptables-nft rules:
//! - an allow-list element update: the daemon's table with the exempt set kept (dynamic exempt),
//!   one apply per iteration whose only change is one element of `exempt_v4` (10.0.1.2 added, then
//!   removed, alternately); checked to be an element-only plan, and that no rule was rewritten;
//! - apply with nothing to change, in process;
//! - apply cold (nothing of ours installed; removed before, untimed) in process, with a new
//!   netlink socket each time, and `apiserver-guard apply` from spawn to exit with the same policy;
//! - `apiserver-guard status` and `apiserver-guard --version` from spawn to exit, the same way.
//!
//! The process rows are spawned from a thread inside the namespace (no `ip netns exec`).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use apiserver_guard::backend::nftables::{Nftables, Seen};
use apiserver_guard::backend::Backend;
use apiserver_guard::core::address::{parse_cidr, parse_endpoint};
use apiserver_guard::core::model::Blocklist;
use apiserver_guard::core::nft_desired::desired;
use apiserver_guard::core::nft_plan::{plan, PlanKind};
use apiserver_guard::core::policy::{Action, BackendChoice, Mode, Origins, Policy};

use crate::common::{Netns, API_PORT, API_V4, CONTAINER_CIDR_V4, POD_V4};
use crate::shared::foreign::foreign_rules;
use crate::shared::stop::check_stop;
use crate::shared::R;
use crate::POLICY;

#[derive(Default)]
pub struct ApplyCost {
    pub foreign: usize,
    /// One exempt element added or removed (ms).
    pub element: Vec<f64>,
    pub noop_in_process: Vec<f64>,
    pub cold_in_process: Vec<f64>,
    pub cold_process: Vec<f64>,
    pub status_process: Vec<f64>,
    pub version_process: Vec<f64>,
}

fn policy(dynamic_exempt: bool, exempt: &[&str]) -> R<Blocklist> {
    let p = Policy {
        sources: vec![parse_cidr("--container-cidr", CONTAINER_CIDR_V4)?],
        exempt: exempt
            .iter()
            .map(|e| parse_cidr("--exempt", e))
            .collect::<Result<_, _>>()?,
        apiservers: vec![parse_endpoint(&format!("{API_V4}:{API_PORT}"))?],
        mode: Mode::Tunnel,
        action: Action::Reject,
        backend: BackendChoice::Nftables,
        local_apiservers: Vec::new(),
        dynamic_exempt,
        // As `apply` installs it by default: the log rules included.
        log_group: Some(apiserver_guard::core::attempt_log::DEFAULT_LOG_GROUP),
        origins: Origins::default(),
    };
    Ok(Blocklist::from_policy(&p))
}

fn ms_since(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1000.0
}

/// `bin args...` from spawn to exit (in the calling thread's namespace); fails on a non-zero exit.
fn timed(bin: &Path, args: &[&str]) -> R<f64> {
    let t = Instant::now();
    let st = Command::new(bin)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map_err(|e| format!("spawn {}: {e}", bin.display()))?;
    let ms = ms_since(t);
    if !st.success() {
        return Err(format!("`apiserver-guard {}` failed ({st})", args.join(" ")));
    }
    Ok(ms)
}

fn with_policy(cmd: &str) -> Vec<&str> {
    let mut a = vec![cmd];
    a.extend(POLICY);
    a
}

fn remove() -> R<()> {
    Nftables::new().remove().map(|_| ()).map_err(|e| e.to_string())
}

/// Lines of `nft -a -s list table` that carry a handle: table, sets, chains and rules, no elements.
fn handles() -> R<String> {
    let out = Command::new("nft")
        .args(["-a", "-s", "list", "table", "inet", "apiserver_guard"])
        .output()
        .map_err(|e| format!("nft: {e}"))?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains("# handle"))
        .collect::<Vec<_>>()
        .join("\n"))
}

fn exempt_listing() -> R<String> {
    let out = Command::new("nft")
        .args(["list", "set", "inet", "apiserver_guard", "exempt_v4"])
        .output()
        .map_err(|e| format!("nft: {e}"))?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Creates the namespace, loads `foreign` rules, measures (see the module doc).
pub fn run(bin: &Path, foreign: usize, runs: usize, iterations: usize) -> R<ApplyCost> {
    let ns = Netns::new("lib");
    if foreign > 0 {
        eprintln!("  loading {foreign} foreign iptables-nft rules ...");
        let out = ns.run_stdin(&["iptables-nft-restore", "--noflush"], &foreign_rules(foreign));
        if !out.status.success() {
            return Err(format!(
                "iptables-nft-restore: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
    }
    let bin = bin.to_path_buf();
    let r = ns
        .in_thread(move || measure(&bin, runs, iterations))
        .map_err(|e| format!("enter {}: {e}", ns.name))?;
    r.map(|c| ApplyCost { foreign, ..c })
}

fn measure(bin: &Path, runs: usize, iterations: usize) -> R<ApplyCost> {
    let mut c = ApplyCost::default();
    let e = |e: apiserver_guard::error::Error| e.to_string();
    let fixed = policy(false, &[])?;
    // The in-process blocklist is the one `apply` installs from the command line.
    remove()?;
    timed(bin, &with_policy("apply"))?;
    let drift = Nftables::new().status(&fixed).map_err(e)?;
    if !drift.is_empty() {
        return Err(format!(
            "the bench's in-process policy differs from what `apiserver-guard apply {}` installs ({} differences)",
            POLICY.join(" "),
            drift.len()
        ));
    }
    eprintln!("  cold apply, status, --version: {runs} interleaved runs");
    for _ in 0..runs {
        check_stop()?;
        remove()?;
        let t = Instant::now();
        let b = Nftables::new();
        if !b.apply(&fixed).map_err(e)? {
            return Err("a cold in-process apply changed nothing".into());
        }
        c.cold_in_process.push(ms_since(t));
        let t = Instant::now();
        if b.apply(&fixed).map_err(e)? {
            return Err("an apply with nothing to change changed something".into());
        }
        c.noop_in_process.push(ms_since(t));
        drop(b);
        remove()?;
        c.cold_process.push(timed(bin, &with_policy("apply"))?);
        c.status_process.push(timed(bin, &with_policy("status"))?);
        c.version_process.push(timed(bin, &["--version"])?);
    }

    eprintln!("  allow-list element update: {iterations} applies");
    remove()?;
    let base = policy(true, &[])?;
    let host = format!("{POD_V4}/32");
    let with = policy(true, &[&host])?;
    let b = Nftables::new();
    b.apply(&base).map_err(e)?;
    let Seen::Table(got) = b.observe().map_err(e)? else {
        return Err("our table is not there after apply".into());
    };
    let kind = plan(&desired(&with), Some(&got)).kind;
    if kind != PlanKind::Elements {
        return Err("adding one exempt element is not an element-only plan".into());
    }
    let before = handles()?;
    for i in 0..iterations {
        if i % 100 == 0 {
            check_stop()?;
        }
        let want = if i % 2 == 0 { &with } else { &base };
        let t = Instant::now();
        let changed = b.apply(want).map_err(e)?;
        c.element.push(ms_since(t));
        if !changed {
            return Err(format!("element update {i} changed nothing"));
        }
        if i == 0 && !exempt_listing()?.contains(POD_V4) {
            return Err(format!("{POD_V4} is not in exempt_v4 after the update"));
        }
    }
    if handles()? != before {
        return Err("the element updates rewrote rules or sets (their handles changed)".into());
    }
    remove()?;
    Ok(c)
}
