//! `apiserver-guard verify`: proves the block from the container network and
//! proves the node still gets through. Orchestration only: resolve where to
//! probe from, open one socket per (endpoint, port) in the pod namespace, one
//! per positive control there (`control`: the gateway towards the apiserver,
//! or `--control`) and one per (endpoint, port) in the node's; let `schedule`
//! run them (the controls first, then each probe that needs counter evidence
//! in a window of its own, with our matching rules' counters read around it
//! by `counters`), then hand the outcomes to `evidence` and `outcome` for the
//! verdicts and to `report` for the output.
//!
//! `verify_once` is the synchronous, self-contained entry point for the
//! daemon's periodic probe.

pub mod control;
pub mod counters;
pub mod discover;
pub mod evidence;
pub mod netns;
pub mod outcome;
pub mod probe;
pub mod probe_result;
pub mod report;
pub mod route;
pub mod schedule;
pub mod tls;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use crate::backend::exec::SYSTEM;
use crate::cli::VerifyArgs;
use crate::core::address::{parse_endpoint, Endpoint};
use crate::core::duration::parse_duration;
use crate::core::policy::{Action, Hook, Mode, Policy};
use crate::error::{Error, Result};
use crate::node_facts::source_address;
use control::ControlPlan;
use counters::{RuleKey, Snapshot};
use evidence::{control_verdict, produced_by_our_rule, ControlVerdict, CounterEvidence};
use netns::Namespace;
use outcome::{coverage, judge_block, judge_node, BlockVerdict, Coverage, Evidence, Expect, NodeEvidence, Outcome};
use probe::Target;
use report::{ControlReport, EndpointReport, ProbeReport, Report, VantageReport};
use schedule::{Job, Planned, Ran};

/// Ports tried, in order, on an apiserver given without a port (and no `--probe-port`).
pub const DEFAULT_PORTS: [u16; 2] = [5443, 443];
/// Default per-probe timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest accepted `--timeout`.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(300);

/// Where the container-network probes run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Vantage {
    /// A pod network namespace (`/run/netns/NAME`, `/proc/PID/ns/net`).
    Netns(PathBuf),
    /// This namespace, bound to a local address inside a container CIDR (VPC mode).
    Source(IpAddr),
    /// This namespace as it is: the process already runs in the pod network.
    Here,
    /// Find a pod namespace on this node.
    Auto,
}

/// Everything `verify` needs besides the policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyOptions {
    pub vantage: Vantage,
    /// Port for apiservers given without one (None: `DEFAULT_PORTS`).
    pub probe_port: Option<u16>,
    pub timeout: Duration,
    pub tls: bool,
    /// Probe from the node too (is the apiserver up?); ignored with `Vantage::Here`.
    pub host_check: bool,
    pub expect: Expect,
    /// The positive control from the probe's side (`--control`); None: the gateway towards
    /// each apiserver (with `--source`: the node's own probe).
    pub control: Option<Endpoint>,
}

impl Default for VerifyOptions {
    fn default() -> VerifyOptions {
        VerifyOptions {
            vantage: Vantage::Auto,
            probe_port: None,
            timeout: DEFAULT_TIMEOUT,
            tls: false,
            host_check: true,
            expect: Expect::Blocked,
            control: None,
        }
    }
}

/// Parses and checks a `--timeout` value.
pub fn parse_timeout(raw: &str) -> std::result::Result<Duration, String> {
    let d = parse_duration("timeout", raw)?;
    if d.is_zero() || d > MAX_TIMEOUT {
        return Err(format!("timeout: '{raw}' is outside 1ms..5m"));
    }
    Ok(d)
}

/// The options of the command line, checked (exit 2 on a bad value).
pub fn options(args: &VerifyArgs) -> Result<VerifyOptions> {
    let from = &args.from;
    let vantage = if let Some(p) = &from.netns {
        Vantage::Netns(p.clone())
    } else if let Some(ip) = from.source {
        Vantage::Source(ip)
    } else if from.from_here {
        Vantage::Here
    } else {
        Vantage::Auto
    };
    let timeout = match &args.timeout {
        None => DEFAULT_TIMEOUT,
        Some(raw) => parse_timeout(raw).map_err(Error::bad_input)?,
    };
    let control = match &args.control {
        None => None,
        Some(raw) => Some(
            parse_endpoint(raw)
                .map_err(|e| Error::bad_input(format!("--control: {}", e.replacen("apiserver: ", "", 1))))?,
        ),
    };
    Ok(VerifyOptions {
        vantage,
        probe_port: args.probe_port,
        timeout,
        tls: args.tls,
        host_check: !args.no_host_check,
        expect: args.expect,
        control,
    })
}

/// One verification for the daemon: synchronous (it blocks for up to about `opts.timeout`
/// for the controls, plus one `opts.timeout` per endpoint and port of the busier address
/// family, since each probe with counter evidence runs alone, plus the `--auto` scan),
/// self-contained (threads of its own, no runtime needed), never
/// fails: a verification that cannot run is a `Report` with `error` set and exit code 1.
/// The policy must have been validated.
pub fn verify_once(policy: &Policy, opts: &VerifyOptions) -> Report {
    verify(policy, opts).unwrap_or_else(|e| failed(opts, e.to_string()))
}

/// The report of a verification that could not run (exit code 1, `error` set).
pub fn failed(opts: &VerifyOptions, error: String) -> Report {
    let mut r = Report::failed(
        opts.expect,
        opts.tls,
        opts.timeout.as_secs_f64(),
        opts.host_check,
        error,
    );
    r.summarise();
    r
}

/// The container side, resolved.
enum Side {
    Netns(Namespace),
    Source(IpAddr),
    Here,
}

/// One planned endpoint: probed on `ports`, or skipped (why).
struct Plan {
    endpoint: Endpoint,
    ports: Vec<u16>,
    skipped: Option<String>,
}

/// What the probe's side prepared: sockets to the apiservers, the control plan of each
/// endpoint (with a note when `--control` could not be used), and sockets to the controls.
struct Prepared {
    jobs: Vec<Job>,
    controls: Vec<(ControlPlan, Option<String>)>,
    control_jobs: Vec<Job>,
}

/// What audit mode says to a verification that expects the block.
pub const AUDIT_BLOCKS_NOTHING: &str = "action audit blocks nothing: pods reach the apiserver and our audit rules \
     only count and log them, so there is no block to verify. Run `apiserver-guard verify --expect reachable` \
     (with the same policy) to check that pods get through and that the audit rules see them; \
     switch to --action reject (or drop) to block";

/// The daemon's periodic probe for `policy`: its configured options, except that under
/// `--action audit` it expects the pod to get through (and our audit rules to count it).
pub fn probe_options(policy: &Policy, configured: &VerifyOptions) -> VerifyOptions {
    let mut opts = configured.clone();
    if policy.action == Action::Audit {
        opts.expect = Expect::Reachable;
    }
    opts
}

/// Runs one verification. Errors: bad input (exit 2: also `--expect blocked` on an audit
/// policy, which blocks nothing) and a vantage that cannot be used (no such namespace, no
/// permission, nothing found by `--auto`: exit 1).
pub fn verify(policy: &Policy, opts: &VerifyOptions) -> Result<Report> {
    if policy.action == Action::Audit && opts.expect == Expect::Blocked {
        return Err(Error::bad_input(AUDIT_BLOCKS_NOTHING));
    }
    let (side, vantage) = resolve(policy, &opts.vantage)?;
    let host_check = opts.host_check && !matches!(side, Side::Here);
    let plans = plan(policy, opts.probe_port);
    let bind = match side {
        Side::Source(ip) => Some(ip),
        _ => None,
    };
    let node_is_control = matches!(side, Side::Source(_)) && host_check;

    // One (endpoint, port) per container-side probe, with the key of our rules matching it.
    let slots: Vec<(&Plan, u16)> = plans
        .iter()
        .flat_map(|p| p.ports.iter().map(move |port| (p, *port)))
        .collect();
    let targets: Vec<Target> = slots
        .iter()
        .map(|(p, port)| Target {
            addr: SocketAddr::new(p.endpoint.ip, *port),
            bind,
        })
        .collect();
    let keys: Vec<RuleKey> = slots
        .iter()
        .map(|(p, port)| RuleKey {
            ip: p.endpoint.ip,
            port: *port,
            portless: p.endpoint.port.is_none(),
            local: policy.local_apiservers.iter().any(|l| l.ip == p.endpoint.ip),
        })
        .collect();
    let local_ports = crate::core::model::Blocklist::from_policy(policy).local_ports;
    // Runs in the probe's namespace: routes and sockets belong to it.
    let prepare = || {
        let controls: Vec<(ControlPlan, Option<String>)> = plans
            .iter()
            .map(|p| match p.ports.first() {
                None => (ControlPlan::Missing("skipped".into()), None),
                Some(port) => control::plan(
                    opts.control.as_ref(),
                    node_is_control,
                    &route::lookup(p.endpoint.ip),
                    p.endpoint.ip,
                    *port,
                    &policy.apiservers,
                    &local_ports,
                ),
            })
            .collect();
        let mut control_targets: Vec<Target> = Vec::new();
        for (c, _) in &controls {
            if let ControlPlan::Probe { addr, .. } = c {
                if !control_targets.iter().any(|t| t.addr == *addr) {
                    control_targets.push(Target { addr: *addr, bind });
                }
            }
        }
        Prepared {
            jobs: open_all(&targets),
            controls,
            control_jobs: open_all(&control_targets),
        }
    };
    let prepared = match &side {
        Side::Netns(ns) => ns
            .in_thread(prepare)
            .map_err(|e| Error::runtime(format!("cannot enter network namespace {}: {e}", ns.path.display())))?,
        Side::Source(_) | Side::Here => prepare(),
    };
    let host_jobs = if host_check {
        let unbound: Vec<Target> = targets.iter().map(|t| Target { bind: None, ..*t }).collect();
        open_all(&unbound)
    } else {
        Vec::new()
    };
    let control_addrs: Vec<SocketAddr> = prepared.control_jobs.iter().map(|j| j.target.addr).collect();
    let (n, k) = (prepared.jobs.len(), prepared.control_jobs.len());

    // Our rules' counters are read from this (the node's) namespace; out of sight from inside
    // a pod. Every container probe, and every node probe the policy could stop, runs in a
    // counting window of its own; the controls and the other node probes run before.
    let counting = !matches!(side, Side::Here);
    let mut planned: Vec<Planned> = Vec::new();
    for (job, key) in prepared.jobs.into_iter().zip(&keys) {
        planned.push(Planned {
            job,
            window: counting.then_some(*key),
        });
    }
    for job in prepared.control_jobs {
        planned.push(Planned { job, window: None });
    }
    for (job, key) in host_jobs.into_iter().zip(&keys) {
        let hooked = node_blocked(policy, job.from).is_some();
        planned.push(Planned {
            job,
            window: (counting && hooked).then_some(*key),
        });
    }
    let (mut ran, first) = schedule::run(planned, opts.timeout, opts.tls, &|| counters::read(&SYSTEM));
    let unread = || CounterEvidence::Unknown {
        detail: "--from-here: the node's firewall counters cannot be read from inside the pod network".into(),
    };
    let host_probes: Vec<(Ran, Option<CounterEvidence>)> = ran.split_off(n + k);
    let control_probes: BTreeMap<SocketAddr, Ran> = control_addrs
        .into_iter()
        .zip(ran.split_off(n).into_iter().map(|(r, _)| r))
        .collect();
    let container: Vec<(Ran, CounterEvidence)> = ran.into_iter().map(|(r, c)| (r, c.unwrap_or_else(unread))).collect();

    let no_node_check = if matches!(side, Side::Here) {
        "--from-here: this process is in the pod network, there is no node namespace to compare with"
    } else {
        "--no-host-check"
    };
    let mut endpoints = Vec::new();
    let mut i = 0;
    for (p, (cplan, cnote)) in plans.iter().zip(&prepared.controls) {
        let k = p.ports.len();
        let host = host_check.then(|| &host_probes[i..i + k]);
        let evidence_in = EvidenceIn {
            control: cplan,
            control_note: cnote.as_deref(),
            control_probes: &control_probes,
            table: first.as_ref(),
            keys: &keys[i..i + k],
        };
        endpoints.push(judge(
            policy,
            opts,
            &side,
            p,
            &container[i..i + k],
            host,
            no_node_check,
            evidence_in,
        ));
        i += k;
    }
    let mut report = Report {
        vantage: Some(vantage),
        expect: opts.expect,
        tls: opts.tls,
        timeout_seconds: opts.timeout.as_secs_f64(),
        host_check,
        endpoints,
        notes: first.as_ref().and_then(|s| hooks_note(policy, s)).into_iter().collect(),
        block_effective: None,
        node_unaffected: None,
        error: None,
        exit_code: 0,
    };
    report.summarise();
    Ok(report)
}

/// `Some(cidr)` when the policy can stop the node's own traffic from `from`: the source lies
/// in the blocked container CIDR `cidr` and the policy hooks OUTPUT (or INPUT).
fn node_blocked(policy: &Policy, from: Option<IpAddr>) -> Option<String> {
    let hooks_node = policy.mode.hooks().contains(&Hook::Output) || !policy.local_apiservers.is_empty();
    match coverage(&policy.sources, &policy.exempt, from.filter(|_| hooks_node)?) {
        Coverage::Blocked(cidr) => Some(cidr),
        _ => None,
    }
}

/// A note when our nftables table, as read, hooks other paths than the policy verified.
fn hooks_note(policy: &Policy, snapshot: &Snapshot) -> Option<String> {
    let installed = snapshot.nft_table()?.hooks();
    let wanted = crate::core::model::Blocklist::from_policy(policy)
        .hooks
        .iter()
        .map(|h| h.name().to_string())
        .collect();
    let mode = match policy.mode {
        Mode::Vpc => "vpc",
        Mode::Tunnel => "tunnel",
        Mode::Both => "both",
    };
    counters::hooks_disagree(&installed, &wanted, mode)
}

/// Opens the container side (entering or finding the namespace) and describes it.
fn resolve(policy: &Policy, vantage: &Vantage) -> Result<(Side, VantageReport)> {
    let netns = |path: &PathBuf, kind: &str, description: String| -> Result<(Side, VantageReport)> {
        let ns = Namespace::open(path).map_err(Error::runtime)?;
        Ok((
            Side::Netns(ns),
            VantageReport {
                kind: kind.into(),
                description,
                netns: Some(path.display().to_string()),
            },
        ))
    };
    match vantage {
        Vantage::Netns(path) => netns(path, "netns", format!("netns {}", path.display())),
        Vantage::Auto => {
            let apiservers: Vec<IpAddr> = policy.apiservers.iter().map(|a| a.ip).collect();
            let found = discover::find(&policy.sources, &policy.exempt, &apiservers).map_err(Error::runtime)?;
            netns(
                &found.path,
                "auto",
                format!("netns {} (found by --auto: {})", found.path.display(), found.address),
            )
        }
        Vantage::Source(ip) => {
            if coverage(&policy.sources, &[], *ip) == Coverage::Outside {
                return Err(Error::bad_input(format!(
                    "--source {ip} is not inside any container CIDR ({}): a probe from it cannot show the block; \
                     give an address of the container network configured on this node",
                    policy
                        .sources
                        .iter()
                        .map(|s| s.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
            // bind() alone does not tell: with no local route at all, Linux accepts any address.
            let here = crate::node_facts::local_addresses()
                .map_err(|e| Error::runtime(format!("cannot list this namespace's addresses: {e}")))?;
            if !here.contains(ip) {
                return Err(Error::runtime(format!(
                    "--source {ip} is not configured on any interface in this network namespace: \
                     give a container-network address the node holds (ip -br addr)"
                )));
            }
            Ok((
                Side::Source(*ip),
                VantageReport {
                    kind: "source".into(),
                    description: format!("source address {ip} in this namespace"),
                    netns: None,
                },
            ))
        }
        Vantage::Here => Ok((
            Side::Here,
            VantageReport {
                kind: "here".into(),
                description: "this namespace (--from-here)".into(),
                netns: None,
            },
        )),
    }
}

/// Endpoints and their candidate ports; endpoints of a family without a container CIDR are
/// skipped (the policy blocks nothing towards them).
fn plan(policy: &Policy, probe_port: Option<u16>) -> Vec<Plan> {
    policy
        .apiservers
        .iter()
        .map(|ep| {
            let family_blocked = policy.sources.iter().any(|s| s.addr().is_ipv4() == ep.ip.is_ipv4());
            if !family_blocked {
                let v = if ep.ip.is_ipv4() { "IPv4" } else { "IPv6" };
                return Plan {
                    endpoint: *ep,
                    ports: Vec::new(),
                    skipped: Some(format!("no {v} container CIDR in the policy")),
                };
            }
            let ports = match (ep.port, probe_port) {
                (Some(p), _) | (None, Some(p)) => vec![p],
                (None, None) => DEFAULT_PORTS.to_vec(),
            };
            Plan {
                endpoint: *ep,
                ports,
                skipped: None,
            }
        })
        .collect()
}

/// Opens a socket per target in the calling thread's namespace, with the kernel's source
/// address towards it (the bound one, if any).
fn open_all(targets: &[Target]) -> Vec<Job> {
    targets
        .iter()
        .map(|t| Job {
            target: *t,
            socket: probe::open(t),
            from: t.bind.or_else(|| {
                source_address(&Endpoint {
                    ip: t.addr.ip(),
                    port: Some(t.addr.port()),
                })
            }),
        })
        .collect()
}

fn probe_report((p, from): &Ran) -> ProbeReport {
    ProbeReport {
        from: from.map(|f| f.to_string()),
        outcome: p.outcome.clone(),
        latency_seconds: p.elapsed.as_secs_f64(),
    }
}

/// What one endpoint's verdict rests on besides its own probes and their counter evidence.
struct EvidenceIn<'a> {
    control: &'a ControlPlan,
    control_note: Option<&'a str>,
    control_probes: &'a BTreeMap<SocketAddr, Ran>,
    /// Our table's first reading (its sets say whether it still holds the endpoint).
    table: Option<&'a Snapshot>,
    /// Our rules matching the endpoint, per candidate port.
    keys: &'a [RuleKey],
}

/// The control's report and verdict; `node` is the node's probe of the reported port.
fn control_of(e: &EvidenceIn<'_>, node: Option<&Ran>, endpoint: SocketAddr) -> ControlReport {
    let (kind, target, probe) = match e.control {
        ControlPlan::Probe { addr, kind } => (*kind, Some(*addr), e.control_probes.get(addr)),
        ControlPlan::Node => ("node", Some(endpoint), node),
        ControlPlan::Missing(why) => {
            return ControlReport {
                kind: "none".into(),
                target: None,
                probe: None,
                verdict: ControlVerdict::Missing(why.clone()),
            }
        }
    };
    let target_text = target.map(|t| t.to_string()).unwrap_or_default();
    let verdict = match probe {
        Some((p, _)) => control_verdict(&target_text, &p.outcome),
        None => ControlVerdict::Missing("the control probe did not run".into()),
    };
    ControlReport {
        kind: kind.into(),
        target: target.map(|t| t.to_string()),
        probe: probe.map(probe_report),
        verdict,
    }
}

/// The verdicts of one endpoint from its probes (one per candidate port).
#[allow(clippy::too_many_arguments)]
fn judge(
    policy: &Policy,
    opts: &VerifyOptions,
    side: &Side,
    plan: &Plan,
    container: &[(Ran, CounterEvidence)],
    host: Option<&[(Ran, Option<CounterEvidence>)]>,
    no_node_check: &str,
    evidence: EvidenceIn<'_>,
) -> EndpointReport {
    let endpoint = plan.endpoint.to_string();
    if let Some(why) = &plan.skipped {
        return EndpointReport {
            address: endpoint.clone(),
            endpoint,
            port: plan.endpoint.port.unwrap_or(0),
            container: None,
            node: None,
            block: BlockVerdict::Skipped(why.clone()),
            node_check: outcome::NodeVerdict::NotChecked(why.clone()),
            control: None,
            counter: None,
            node_counter: None,
            notes: Vec::new(),
            exit_code: 0,
        };
    }
    let candidates: Vec<(u16, &Outcome, Option<&Outcome>)> = plan
        .ports
        .iter()
        .enumerate()
        .map(|(j, port)| (*port, &container[j].0 .0.outcome, host.map(|h| &h[j].0 .0.outcome)))
        .collect();
    let j = outcome::pick_port(&candidates);
    let port = plan.ports[j];
    let ((c_probe, c_from), c_counter) = &container[j];
    let h = host.map(|h| &h[j].0);
    let unread = CounterEvidence::Unknown {
        detail: "the node's probe ran outside every counting window".into(),
    };
    let h_counter = host.and_then(|h| h[j].1.as_ref()).unwrap_or(&unread);

    let mut notes = Vec::new();
    // Can the policy stop the node's own traffic (its source in a blocked CIDR, and the
    // OUTPUT or INPUT hook)? Only then, and with our rule's evidence, is a node that does not
    // get through "cut off".
    let node_blocked = h.and_then(|(_, from)| node_blocked(policy, *from));
    let node_check = judge_node(
        h.map(|(p, _)| &p.outcome),
        node_blocked.as_deref(),
        no_node_check,
        &NodeEvidence {
            action: policy.action,
            counter: h_counter,
        },
    );
    let node_counter = h
        .filter(|(p, _)| node_blocked.is_some() && produced_by_our_rule(&p.outcome, policy.action))
        .map(|_| h_counter.clone());

    let source = c_from.map(|ip| (ip, coverage(&policy.sources, &policy.exempt, ip)));
    if source.is_none() && c_probe.outcome.stopped() {
        notes.push("the probe namespace has no usable route to this apiserver".to_string());
    }
    let control = control_of(&evidence, h, SocketAddr::new(plan.endpoint.ip, port));
    if let Some(n) = evidence.control_note {
        notes.push(n.to_string());
    }
    let block = judge_block(
        &c_probe.outcome,
        &node_check,
        opts.expect,
        source.as_ref().map(|(ip, c)| (*ip, c)),
        &Evidence {
            action: policy.action,
            control: &control.verdict,
            counter: c_counter,
        },
    );
    let block = outcome::judge_audit(block, policy.action, source.as_ref().map(|(_, c)| c), c_counter);
    // The counters matter only for a probe that failed the way our rule makes it fail, or, in
    // audit mode, that got through from a source the policy covers (our audit rule counts it).
    let audited = policy.action == Action::Audit
        && c_probe.outcome.reached()
        && matches!(source, Some((_, Coverage::Blocked(_))));
    let counter = (audited || produced_by_our_rule(&c_probe.outcome, policy.action)).then(|| c_counter.clone());
    // Our table, as read before the probes, may no longer hold this endpoint (drift).
    let table = evidence.table.and_then(Snapshot::nft_table);
    if block != BlockVerdict::Blocked && table.is_some_and(|t| !t.holds(&evidence.keys[j])) {
        notes.push(format!(
            "our nftables table does not hold {} in its sets: it no longer blocks this endpoint \
             (apiserver-guard status shows the drift; apply repairs it)",
            SocketAddr::new(plan.endpoint.ip, port)
        ));
    }
    if let (BlockVerdict::Reachable, Some((ip, Coverage::Outside))) = (&block, &source) {
        notes.push(format!(
            "the probe source {ip} is outside every container CIDR ({}): the policy does not block it; \
             if it is a pod address, the container CIDR is incomplete",
            policy
                .sources
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if block == BlockVerdict::Reachable && opts.expect == Expect::Blocked {
        match (side, policy.mode) {
            (Side::Source(_), Mode::Tunnel) => notes.push(
                "mode tunnel hooks FORWARD only: traffic from a local --source address goes through OUTPUT, \
                 which only mode vpc or both blocks"
                    .into(),
            ),
            (Side::Netns(_), Mode::Vpc) => notes.push(
                "mode vpc hooks OUTPUT only: traffic a pod namespace sends through the node is forwarded \
                 (FORWARD), which only mode tunnel or both blocks"
                    .into(),
            ),
            _ => {}
        }
    }
    if plan.ports.len() > 1 {
        let tried: Vec<String> = plan.ports.iter().map(|p| p.to_string()).collect();
        notes.push(format!(
            "no port in the policy: tried {}, reporting {port} (set --probe-port to choose)",
            tried.join(" and ")
        ));
    }
    let exit_code = outcome::endpoint_exit(&block, &node_check, opts.expect);
    EndpointReport {
        endpoint,
        address: SocketAddr::new(plan.endpoint.ip, port).to_string(),
        port,
        container: Some(probe_report(&container[j].0)),
        node: h.map(probe_report),
        block,
        node_check,
        control: Some(control),
        counter,
        node_counter,
        notes,
        exit_code,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use crate::core::address::{parse_cidr, parse_endpoint};
    use crate::core::policy::{Action, BackendChoice};
    use clap::Parser;

    fn args(a: &[&str]) -> std::result::Result<VerifyArgs, clap::Error> {
        let cli = Cli::try_parse_from(["apiserver-guard", "verify"].iter().chain(a.iter()).copied())?;
        let Command::Verify(v) = cli.command else { panic!() };
        Ok(v)
    }

    fn policy(sources: &[&str], apis: &[&str]) -> Policy {
        Policy {
            sources: sources.iter().map(|s| parse_cidr("s", s).unwrap()).collect(),
            exempt: vec![],
            apiservers: apis.iter().map(|s| parse_endpoint(s).unwrap()).collect(),
            mode: Mode::Both,
            action: Action::Reject,
            backend: BackendChoice::Auto,
            local_apiservers: Vec::new(),
            dynamic_exempt: false,
            log_group: None,
            origins: Default::default(),
        }
    }

    #[test]
    fn defaults_are_auto_2s_blocked_with_the_node_check() {
        let o = options(&args(&[]).unwrap()).unwrap();
        assert_eq!(o, VerifyOptions::default());
    }

    #[test]
    fn flags_map_to_options() {
        let o = options(
            &args(&[
                "--netns",
                "/proc/1/ns/net",
                "--timeout",
                "500ms",
                "--tls",
                "--no-host-check",
                "--expect",
                "reachable",
                "--probe-port",
                "6443",
            ])
            .unwrap(),
        )
        .unwrap();
        assert_eq!(o.vantage, Vantage::Netns("/proc/1/ns/net".into()));
        assert_eq!(o.timeout, Duration::from_millis(500));
        assert!(o.tls && !o.host_check);
        assert_eq!((o.expect, o.probe_port), (Expect::Reachable, Some(6443)));
        let o = options(&args(&["--source", "10.0.200.1"]).unwrap()).unwrap();
        assert_eq!(o.vantage, Vantage::Source("10.0.200.1".parse().unwrap()));
        assert_eq!(
            options(&args(&["--from-here"]).unwrap()).unwrap().vantage,
            Vantage::Here
        );
    }

    #[test]
    fn bad_values_are_usage_errors() {
        for bad in [
            &["--expect", "maybe"][..],
            &["--output", "yaml"],
            &["--probe-port", "0"],
            &["--probe-port", "70000"],
            &["--source", "10.0.0.0/16"],
            &["--netns", "/run/netns/a", "--auto"],
            &["--from-here", "--source", "10.0.0.1"],
        ] {
            assert_eq!(args(bad).unwrap_err().exit_code(), 2, "{bad:?}");
        }
        for bad in ["0s", "soon", "10y", "1h"] {
            let e = options(&args(&["--timeout", bad]).unwrap()).unwrap_err();
            assert!(matches!(e, Error::BadInput(_)), "{bad}");
        }
    }

    #[test]
    fn ports_come_from_the_endpoint_then_the_flag_then_the_defaults() {
        let p = policy(
            &["10.0.0.0/16"],
            &["192.168.0.10:6443", "192.168.0.11", "[fd00::1]:443"],
        );
        let plans = plan(&p, None);
        assert_eq!(plans[0].ports, vec![6443]);
        assert_eq!(plans[1].ports, vec![5443, 443]);
        assert!(plans[2].skipped.as_deref().unwrap().contains("IPv6"));
        let plans = plan(&p, Some(8443));
        assert_eq!(
            (plans[0].ports.clone(), plans[1].ports.clone()),
            (vec![6443], vec![8443])
        );
    }

    #[test]
    fn a_source_outside_the_container_cidrs_is_bad_input() {
        let p = policy(&["10.0.0.0/16"], &["192.168.0.10:6443"]);
        let e = verify(
            &p,
            &VerifyOptions {
                vantage: Vantage::Source("192.168.0.1".parse().unwrap()),
                ..Default::default()
            },
        )
        .unwrap_err();
        assert!(
            matches!(&e, Error::BadInput(m) if m[0].contains("not inside any container CIDR")),
            "{e}"
        );
    }

    #[test]
    fn a_missing_namespace_is_a_runtime_error_and_verify_once_reports_it() {
        let p = policy(&["10.0.0.0/16"], &["192.168.0.10:6443"]);
        let opts = VerifyOptions {
            vantage: Vantage::Netns("/run/netns/apiserver-guard-unit-missing".into()),
            ..Default::default()
        };
        let e = verify(&p, &opts).unwrap_err();
        assert_eq!(e.exit_code(), 1);
        let r = verify_once(&p, &opts);
        assert_eq!(r.exit_code, 1);
        assert!(r.error.unwrap().contains("no such namespace"));
    }

    #[test]
    fn from_here_on_loopback_sees_a_listener_reachable() {
        // 127.0.0.0/8 plays the container CIDR, so the probe source (127.0.0.1) is covered.
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let p = policy(&["127.0.0.0/8"], &[&format!("127.0.0.2:{port}")]);
        // The listener is on 127.0.0.1 only: 127.0.0.2 is refused. Loopback has no gateway:
        // the listener itself is the control.
        let opts = VerifyOptions {
            vantage: Vantage::Here,
            control: Some(parse_endpoint(&format!("127.0.0.1:{port}")).unwrap()),
            ..Default::default()
        };
        let mut no_control = opts.clone();
        no_control.control = None;
        let r = verify(&p, &no_control).unwrap();
        assert!(
            matches!(&r.endpoints[0].block, BlockVerdict::Inconclusive(m) if m.contains("no positive control")),
            "{}",
            r.to_text()
        );
        assert_eq!(r.exit_code, 1);
        let r = verify(&p, &opts).unwrap();
        assert_eq!(r.endpoints[0].block, BlockVerdict::Blocked);
        assert_eq!(r.exit_code, 0, "{}", r.to_text());
        let p = policy(&["127.0.0.0/8"], &[&format!("127.0.0.1:{port}")]);
        let r = verify(&p, &opts).unwrap();
        assert_eq!(r.endpoints[0].block, BlockVerdict::Reachable);
        assert_eq!(r.exit_code, 3);
    }

    #[test]
    fn audit_expects_reachable_and_says_plainly_that_it_blocks_nothing() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let mut p = policy(&["127.0.0.0/8"], &[&format!("127.0.0.1:{port}")]);
        p.action = Action::Audit;
        let opts = VerifyOptions {
            vantage: Vantage::Here,
            ..Default::default()
        };
        let e = verify(&p, &opts).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        let text = e.to_string();
        assert!(
            text.contains("action audit blocks nothing") && text.contains("--expect reachable"),
            "{text}"
        );
        let r = verify_once(&p, &opts);
        assert!(r.error.unwrap().contains("audit blocks nothing"));
        // The daemon's probe expects reachable under audit, and only then.
        let probe = probe_options(&p, &opts);
        assert_eq!(probe.expect, Expect::Reachable);
        assert_eq!(
            probe_options(&policy(&["127.0.0.0/8"], &[]), &opts).expect,
            Expect::Blocked
        );
        // From inside the pod network our counters are out of sight: reachable is the verdict.
        let r = verify(&p, &probe).unwrap();
        assert_eq!(r.endpoints[0].block, BlockVerdict::Reachable, "{}", r.to_text());
        assert_eq!(r.exit_code, 0, "{}", r.to_text());
        assert!(r.passed());
    }
}
