//! The subcommands as thin orchestration: load and check the policy, pick
//! the backend, call it, print the result, map it to an exit code.

use crate::backend::exec::{Runner, SystemRunner};
use crate::backend::select::{leftovers, remove_from_all, remove_others, select};
use crate::cli::{Cli, Command, OutputFormat, PolicyArgs, StatusArgs};
use crate::core::drift::{describe, Drift};
use crate::core::model::Blocklist;
use crate::core::policy::Policy;
use crate::core::validate::{check_lockout, validate};
use crate::error::{exit, Error, Result};
use crate::lockout::routes;
use crate::policy_source::Cache;
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
        Command::Verify(args) => crate::verify::command(&args),
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

/// Validates a policy (and, before changing the firewall, the self-lockout
/// guard) and builds its blocklist.
pub fn checked(policy: &Policy, check_node_route: bool) -> Result<Blocklist> {
    validate(policy).map_err(Error::BadInput)?;
    if check_node_route {
        check_lockout(policy, &routes(&policy.apiservers)).map_err(Error::BadInput)?;
    }
    Ok(Blocklist::from_policy(policy))
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
    /// Who owns our table, when a process does (nftables ownership).
    #[serde(skip_serializing_if = "Option::is_none")]
    owner: Option<String>,
    drift: &'a [Drift],
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
        owner: backend.owner(),
        drift: &drift,
    };
    match args.output {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&report).expect("serializable")),
        OutputFormat::Text => {
            let state = if report.in_sync { "in sync" } else { "NOT in sync" };
            println!("backend: {} ({why})\nstate: {state}", report.backend);
            if let Some(owner) = &report.owner {
                println!("owned by: {owner} (only it can change the table)");
            }
            for d in &drift {
                println!("  - {}: {}", d.object, d.problem);
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
}
