//! The subcommands as thin orchestration: load and check the policy, pick
//! the backend, call it, print the result, map it to an exit code.

use crate::backend::exec::{Runner, SystemRunner};
use crate::backend::select::{leftovers, remove_from_all, remove_others, select};
use crate::cli::{Cli, Command, OutputFormat, PolicyArgs, StatusArgs};
use crate::core::drift::{describe, Drift};
use crate::core::model::Blocklist;
use crate::core::policy::{Action, Policy, AUDIT_UNLOGGED};
use crate::error::{exit, Error, Result};
use crate::policy_source::{checked, Cache};
use serde::Serialize;

/// Runs one command; returns the process exit code.
pub fn run(cli: Cli) -> i32 {
    let runner = SystemRunner;
    let result = match cli.command {
        Command::Apply(args) => apply(&args, &runner),
        Command::Remove => remove(&runner),
        Command::Status(args) => status(&args, &runner),
        Command::Render(args) => render(&args, &runner),
        Command::Run(args) => return crate::daemon::run(&args),
        Command::Verify(args) => crate::verify_cmd::command(&args),
        Command::Attempts(args) => crate::attempts_cmd::command(&args),
    };
    result.unwrap_or_else(|e| {
        eprintln!("apiserver-guard: {e}");
        e.exit_code()
    })
}

/// Policy from flags/env/file, validated (and, for changes, checked for self-lockout).
pub fn prepare(args: &PolicyArgs, check_node_route: bool, cache: Cache) -> Result<(Policy, Blocklist)> {
    let policy = crate::policy_source::one_shot(args, cache)?;
    let blocklist = checked(&policy, check_node_route)?;
    Ok((policy, blocklist))
}

/// The apply summary line: distinct values are counted (`--container-cidr
/// 10.0.0.0/16` given three times is one container CIDR).
fn summary(p: &Policy, b: &Blocklist) -> String {
    fn distinct<T: Ord>(v: &[T]) -> usize {
        v.iter().collect::<std::collections::BTreeSet<_>>().len()
    }
    let hooks: Vec<&str> = b.hooks.iter().map(|h| h.name()).collect();
    format!(
        "{} container CIDR(s), {} exempt, {} apiserver endpoint(s), hooks {}, action {}",
        distinct(&p.sources),
        distinct(&p.exempt),
        distinct(&p.apiservers),
        hooks.join("+"),
        p.action.name()
    )
}

fn apply(args: &PolicyArgs, runner: &dyn Runner) -> Result<i32> {
    let (policy, blocklist) = prepare(args, true, Cache::FallbackAndKeep)?;
    let (backend, why) = select(policy.backend, runner)?;
    let changed = backend.apply(&blocklist)?;
    let left = backend.status(&blocklist)?;
    if !left.is_empty() {
        return Err(Error::runtime(format!(
            "applied with {} but the read-back still differs (another agent may be rewriting the firewall): {}",
            backend.name(),
            describe(&left)
        )));
    }
    let verb = if changed {
        "block installed"
    } else {
        "block already in place, nothing changed"
    };
    println!(
        "apiserver-guard: {verb} [{}: {why}]: {}",
        backend.name(),
        summary(&policy, &blocklist)
    );
    if policy.audit_unlogged() {
        eprintln!("apiserver-guard: warning: {AUDIT_UNLOGGED}");
    }
    let cleaned = remove_others(backend.as_ref(), runner)?;
    for name in cleaned {
        println!("apiserver-guard: removed stale rules of ours from {name}");
    }
    Ok(exit::OK)
}

fn remove(runner: &dyn Runner) -> Result<i32> {
    let removed = remove_from_all(runner, None).map_err(|(_, e)| e)?;
    if removed.is_empty() {
        println!("apiserver-guard: nothing of ours installed");
    } else {
        println!("apiserver-guard: removed from {}", removed.join(", "));
    }
    Ok(exit::OK)
}

#[derive(Serialize)]
struct StatusReport<'a> {
    backend: &'a str,
    reason: &'a str,
    in_sync: bool,
    /// Whether "in sync" was checked byte for byte (false: as iptables rules
    /// only, their bytes never learnt here, so a match iptables does not
    /// print could hide; `apply` learns them).
    verified: bool,
    /// The policy's action (`reject`, `drop`, `audit`), compared with what is installed.
    action: &'a str,
    /// Whether the rules, when in sync, block anything (false in audit mode).
    blocks: bool,
    /// Who owns our table, when a process does (nftables ownership).
    #[serde(skip_serializing_if = "Option::is_none")]
    owner: Option<String>,
    drift: &'a [Drift],
}

/// The `status` line about the action: audit mode says plainly that nothing
/// is blocked, and whether anything records who tried (`logged`).
fn action_line(action: Action, logged: bool) -> String {
    match (action, logged) {
        (Action::Audit, true) => "action: audit (nothing is blocked: connections to the apiservers are counted, logged \
                                  and let through; apiserver-guard attempts shows who tried; --action reject blocks them)"
            .into(),
        (Action::Audit, false) => "action: audit (nothing is blocked: connections to the apiservers are counted and \
                                   let through; --log-group off: nothing records who tried; --action reject blocks them)"
            .into(),
        (a, _) => format!("action: {} (pods are blocked)", a.name()),
    }
}

/// When the drift is another action's rules (our `audit-...` rules installed while this
/// status asked for reject or drop, or `block-...` ones under audit): what to pass instead.
fn action_hint(action: Action, drift: &[Drift]) -> Option<String> {
    let names = |verb: &str| {
        drift
            .iter()
            .any(|d| d.problem.contains(&format!("\"{verb}-")) || d.object.contains(&format!("\"{verb}-")))
    };
    match action {
        Action::Audit if names("block") => Some(
            "the installed rules block (reject or drop) while this status asked for --action audit: \
             compare with the action the block was applied with, or apply to switch to audit"
                .into(),
        ),
        Action::Reject | Action::Drop if names("audit") => Some(format!(
            "the installed rules are audit rules (nothing is blocked) while this status asked for --action {}: \
             pass --action audit to check audit mode, or apply to start blocking",
            action.name()
        )),
        _ => None,
    }
}

fn status(args: &StatusArgs, runner: &dyn Runner) -> Result<i32> {
    let (policy, blocklist) = prepare(&args.policy, false, Cache::Fallback)?;
    let (backend, why) = select(policy.backend, runner)?;
    let mut drift = backend.status(&blocklist)?;
    drift.extend(leftovers(backend.as_ref(), runner));
    let report = StatusReport {
        backend: backend.name(),
        reason: &why,
        in_sync: drift.is_empty(),
        verified: backend.proven(&blocklist),
        action: policy.action.name(),
        blocks: policy.action != Action::Audit,
        owner: backend.owner(),
        drift: &drift,
    };
    match args.output {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&report).expect("serializable")),
        OutputFormat::Text => {
            let state = if report.in_sync { "in sync" } else { "NOT in sync" };
            println!(
                "backend: {} ({why})\nstate: {state}\n{}",
                report.backend,
                action_line(policy.action, policy.log_group.is_some())
            );
            if let Some(owner) = &report.owner {
                println!("owned by: {owner} (only it can change the table)");
            }
            for d in &drift {
                println!("  - {}: {}", d.object, d.problem);
            }
            if let Some(hint) = action_hint(policy.action, &drift) {
                println!("note: {hint}");
            }
            if report.in_sync && !report.verified {
                println!(
                    "note: checked as iptables rules only: the bytes of our rules were never learnt in this \
                     namespace (no reference from our own write), so a match iptables does not print could \
                     hide; `apply` writes them again and learns them"
                );
            }
        }
    }
    Ok(if report.in_sync { exit::OK } else { exit::NOT_IN_SYNC })
}

fn render(args: &PolicyArgs, runner: &dyn Runner) -> Result<i32> {
    let (policy, blocklist) = prepare(args, false, Cache::Fallback)?;
    let (backend, why) = select(policy.backend, runner)?;
    println!("# backend: {} ({why})", backend.name());
    print!("{}", backend.render(&blocklist));
    Ok(exit::OK)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::address::{parse_cidr, parse_endpoint};

    #[test]
    fn the_summary_counts_distinct_values_and_spells_cidr_in_capitals() {
        let args = PolicyArgs {
            container_cidr: vec![
                "10.0.0.0/16".into(),
                "10.0.0.0/16".into(),
                " 10.0.0.0/16".into(),
                "fd00::/48".into(),
            ],
            apiserver: vec!["192.168.50.10:5443".into(), "192.168.50.10:5443".into()],
            exempt: vec!["10.0.5.0/24".into(), "10.0.5.0/24".into()],
            action: Some(crate::core::policy::Action::Drop),
            mode: Some(crate::core::policy::Mode::Tunnel),
            ..Default::default()
        };
        let p = crate::config::merge(&args, Default::default()).unwrap();
        assert_eq!(p.sources.len(), 4, "the policy keeps what was given");
        let s = summary(&p, &Blocklist::from_policy(&p));
        assert_eq!(
            s,
            "2 container CIDR(s), 1 exempt, 1 apiserver endpoint(s), hooks forward, action drop"
        );
        // Same value, different spelling: still one.
        let mut p2 = p.clone();
        p2.sources = vec![
            parse_cidr("x", "fd00::/48").unwrap(),
            parse_cidr("x", "fd00:0::/48").unwrap(),
        ];
        p2.apiservers = vec![
            parse_endpoint("[fd00::1]:443").unwrap(),
            parse_endpoint("[fd00:0::1]:443").unwrap(),
        ];
        assert!(summary(&p2, &Blocklist::from_policy(&p2)).starts_with("1 container CIDR(s), 1 exempt, 1 apiserver"));
    }

    #[test]
    fn drift_of_the_other_action_gets_a_hint() {
        use crate::core::drift::DriftKind;
        let extra = |name: &str| Drift {
            object: "table inet apiserver_guard chain guard".into(),
            problem: format!("an extra rule with our comment \"{name}\": ..."),
            kind: DriftKind::RulesChanged,
        };
        let audit_installed = [extra("audit-tcp-port-v4")];
        assert!(action_hint(Action::Reject, &audit_installed)
            .unwrap()
            .contains("pass --action audit"));
        assert_eq!(action_hint(Action::Audit, &audit_installed), None);
        let blocks_installed = [extra("block-tcp-port-v4")];
        assert!(action_hint(Action::Audit, &blocks_installed)
            .unwrap()
            .contains("asked for --action audit"));
        assert_eq!(action_hint(Action::Drop, &blocks_installed), None);
    }

    #[test]
    fn the_status_action_line_says_that_audit_blocks_nothing() {
        assert!(action_line(Action::Audit, true).starts_with("action: audit (nothing is blocked:"));
        assert!(action_line(Action::Audit, true).contains("apiserver-guard attempts shows who tried"));
        let unlogged = action_line(Action::Audit, false);
        assert!(unlogged.contains("nothing records who tried") && !unlogged.contains("attempts shows"));
        assert_eq!(action_line(Action::Reject, true), "action: reject (pods are blocked)");
        assert_eq!(action_line(Action::Drop, false), "action: drop (pods are blocked)");
    }
}
