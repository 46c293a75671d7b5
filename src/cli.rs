//! The command line (the stable contract of DESIGN.md): subcommands, policy
//! flags and their `APISERVER_GUARD_*` environment variables.

use crate::core::nft_ownership::TableOwnership;
use crate::core::policy::{Action, BackendChoice, Mode};
use clap::builder::PossibleValue;
use clap::parser::ValueSource;
use clap::{ArgMatches, Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
use std::collections::BTreeSet;
use std::ffi::OsString;
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "apiserver-guard",
    version,
    about = "Keep pod traffic away from kube-apiserver: an atomic, idempotent, self-checking nftables/iptables block",
    after_help = "Exit codes: 0 ok, 1 runtime error, 2 bad input (nothing changed), 3 not in sync (status) or, for verify, block ineffective or node cut off."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Install or update the block once, idempotently and atomically.
    Apply(PolicyArgs),
    /// Remove everything this tool installed, in every backend, and nothing else.
    Remove,
    /// Compare what is installed with the policy: exit 0 in sync, 3 missing or drifted.
    Status(StatusArgs),
    /// Print what `apply` sends to install the block (on a node without it); change nothing.
    Render(PolicyArgs),
    /// Daemon: apply, then keep the block in place (event-driven repair, periodic
    /// resync, config reload); health and Prometheus metrics over HTTP.
    Run(RunArgs),
    /// Probe every apiserver endpoint from the container network (expect it blocked) and from
    /// the node (expect it reached): exit 0 as expected, 3 block ineffective or node cut off,
    /// 1 could not probe or inconclusive, 2 bad input.
    Verify(VerifyArgs),
    /// Who tried to reach the apiserver: the running daemon's table of attempts (source,
    /// apiserver, protocol, count, first and last seen, action); exit 1 when the daemon
    /// cannot be reached.
    Attempts(AttemptsArgs),
}

/// `attempts`: where the daemon listens, and how to print its table.
#[derive(Debug, Clone, Args)]
pub struct AttemptsArgs {
    /// The daemon's health listener (its --listen; an unspecified address means loopback).
    #[arg(
        long,
        value_name = "ADDR",
        env = "APISERVER_GUARD_LISTEN",
        default_value = "127.0.0.1:9440"
    )]
    pub listen: std::net::SocketAddr,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    pub output: OutputFormat,
}

/// Log output of the daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LogFormat {
    /// The systemd journal with structured fields when started by systemd, else text.
    Auto,
    /// One plain line per event on stderr.
    Text,
    /// One JSON object per line on stderr.
    Json,
}

#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub policy: PolicyArgs,
    /// Periodic full check besides event-driven repair, e.g. 10s, 500ms, 1m [default: 10s].
    #[arg(long, value_name = "DURATION", env = "APISERVER_GUARD_RESYNC_INTERVAL")]
    pub resync_interval: Option<String>,
    /// Address of the health and metrics endpoint (/healthz, /readyz, /metrics) [default: 127.0.0.1:9440].
    #[arg(long, value_name = "ADDR", env = "APISERVER_GUARD_LISTEN")]
    pub listen: Option<String>,
    /// Remove the block when the daemon stops (default: fail-closed, the block stays).
    #[arg(long, env = "APISERVER_GUARD_CLEANUP_ON_EXIT")]
    pub cleanup_on_exit: bool,
    /// Log format [default: auto].
    #[arg(long, value_enum, env = "APISERVER_GUARD_LOG_FORMAT")]
    pub log_format: Option<LogFormat>,
    /// Run `verify` this often and export its results in /metrics, e.g. 60s [default: off].
    #[arg(long, value_name = "DURATION", env = "APISERVER_GUARD_PROBE_INTERVAL")]
    pub probe_interval: Option<String>,
    /// /readyz also requires the last periodic probe to have passed (needs --probe-interval).
    #[arg(long, env = "APISERVER_GUARD_READY_REQUIRES_PROBE")]
    pub ready_requires_probe: bool,
    /// Where the periodic probe runs from: a pod network namespace [default: found as `verify --auto` does].
    #[arg(long, value_name = "PATH", conflicts_with = "probe_source")]
    pub probe_netns: Option<PathBuf>,
    /// Where the periodic probe runs from: a local address inside a container CIDR (VPC mode).
    #[arg(long, value_name = "IP")]
    pub probe_source: Option<std::net::IpAddr>,
    /// The periodic probe's positive control (as `verify --control`): an address the probe's
    /// side reaches that the policy does not block [default: the gateway towards the apiserver].
    #[arg(long, value_name = "ADDR[:PORT]", env = "APISERVER_GUARD_PROBE_CONTROL")]
    pub probe_control: Option<String>,
    /// Remove this NoSchedule taint from the node once the block is installed and a probe
    /// proved it (register nodes with it: kubelet --register-with-taints=KEY:NoSchedule).
    #[arg(long, value_name = "KEY", env = "APISERVER_GUARD_NODE_TAINT")]
    pub node_taint: Option<String>,
    /// Own our nftables table from the daemon's netlink socket, so no other process can change,
    /// flush or delete it (auto: where the kernel can keep it through a crash, Linux 6.9+; off:
    /// an ordinary table, repaired after foreign changes) [default: auto].
    #[arg(long, value_name = "auto|off", env = "APISERVER_GUARD_TABLE_OWNERSHIP", value_parser = parse_table_ownership)]
    pub table_ownership: Option<TableOwnership>,
}

/// Output format of `status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Text,
    Json,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub policy: PolicyArgs,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    pub output: OutputFormat,
}

/// `verify`: where to probe from, how, and what to expect. The vantage flags are exclusive;
/// without one, `--auto` is used.
#[derive(Debug, Clone, Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub policy: PolicyArgs,
    #[command(flatten)]
    pub from: VerifyFrom,
    /// Port to probe on apiservers given without one [default: 5443, then 443].
    #[arg(long, value_name = "PORT", value_parser = clap::value_parser!(u16).range(1..))]
    pub probe_port: Option<u16>,
    /// Connect (and handshake) timeout per probe, e.g. 2s, 500ms [default: 2s].
    #[arg(long, value_name = "DURATION")]
    pub timeout: Option<String>,
    /// Also run a TLS handshake, accepting any certificate (as `curl -k`).
    #[arg(long)]
    pub tls: bool,
    /// Skip the probe from the node (the namespace the command runs in).
    #[arg(long)]
    pub no_host_check: bool,
    /// Positive control from the probe's side: an address it reaches that the policy does not
    /// block (IP, IP:PORT or [IPv6]:PORT; no port = the probed port); any answer, a reset
    /// included, shows its network works [default: the gateway towards the apiserver].
    #[arg(long, value_name = "ADDR[:PORT]", env = "APISERVER_GUARD_VERIFY_CONTROL")]
    pub control: Option<String>,
    /// What the container network should see; with --action audit (which blocks nothing) only
    /// reachable: the pod gets through and our audit rule counts it.
    #[arg(long, value_enum, default_value = "blocked")]
    pub expect: Expect,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    pub output: OutputFormat,
}

/// Where `verify` probes the container network from (at most one).
#[derive(Debug, Clone, Default, Args)]
#[group(multiple = false)]
pub struct VerifyFrom {
    /// A pod network namespace: /run/netns/NAME or /proc/PID/ns/net (entered by one thread only).
    #[arg(long, value_name = "PATH")]
    pub netns: Option<PathBuf>,
    /// Bind this local address, inside a container CIDR, and probe from this namespace (VPC mode).
    #[arg(long, value_name = "IP")]
    pub source: Option<std::net::IpAddr>,
    /// This process already runs in the pod network (e.g. an unprivileged pod); no node check.
    #[arg(long)]
    pub from_here: bool,
    /// Find a pod namespace that reaches the apiserver from a container-CIDR address (/run/netns, then /proc) [default].
    #[arg(long)]
    pub auto: bool,
}

/// Policy options shared by every subcommand that needs a policy. Unset
/// options fall back to the config file, then to the defaults.
#[derive(Debug, Clone, Default, Args)]
pub struct PolicyArgs {
    /// Container (pod) CIDR to block; repeatable or comma-separated; IPv4 and IPv6; `auto` = this
    /// node's spec.podCIDRs from Kubernetes.
    #[arg(
        long = "container-cidr",
        value_name = "CIDR",
        env = "APISERVER_GUARD_CONTAINER_CIDR",
        value_delimiter = ','
    )]
    pub container_cidr: Vec<String>,
    /// Apiserver endpoint: IP, IP:PORT or [IPv6]:PORT (no port = every port); repeatable or
    /// comma-separated; `auto` = the `kubernetes` EndpointSlices and the kubeconfig's server, followed live.
    #[arg(long, value_name = "ADDR", env = "APISERVER_GUARD_APISERVER", value_delimiter = ',')]
    pub apiserver: Vec<String>,
    /// vpc = OUTPUT hook, tunnel = FORWARD hook, both [default: both].
    #[arg(long, value_enum, env = "APISERVER_GUARD_MODE")]
    pub mode: Option<Mode>,
    /// Firewall backend [default: auto].
    #[arg(long, value_enum, env = "APISERVER_GUARD_BACKEND")]
    pub backend: Option<BackendChoice>,
    /// Source inside a container CIDR that keeps access; repeatable or comma-separated.
    #[arg(long, value_name = "CIDR", env = "APISERVER_GUARD_EXEMPT", value_delimiter = ',')]
    pub exempt: Vec<String>,
    /// What happens to blocked packets; audit blocks nothing, only counts and logs [default: reject].
    #[arg(long, value_enum, env = "APISERVER_GUARD_ACTION")]
    pub action: Option<Action>,
    /// NFLOG group our log rules copy each blocked attempt to (0..65535), or off: no log rules
    /// [default: 1443].
    #[arg(long, value_name = "N|off", env = "APISERVER_GUARD_LOG_GROUP")]
    pub log_group: Option<String>,
    /// TOML config file; a missing default file is fine, a missing named file is an error.
    #[arg(long, value_name = "PATH", env = "APISERVER_GUARD_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub kube: KubeArgs,
    /// Ids of the settings (this command's, daemon ones included) whose value came
    /// from an environment variable rather than a flag, so messages name the variable.
    #[arg(skip)]
    pub from_env: BTreeSet<String>,
}

/// Kubernetes discovery: used by `auto` values, the allow-list and the node taint.
#[derive(Debug, Clone, Default, Args)]
pub struct KubeArgs {
    /// Kubeconfig for discovery [default: in a pod its service account, else /etc/kubernetes/kubelet.conf].
    #[arg(long, value_name = "PATH", env = "APISERVER_GUARD_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// This node's name in Kubernetes [default: $NODE_NAME, else the hostname].
    #[arg(long, value_name = "NAME", env = "NODE_NAME")]
    pub node_name: Option<String>,
    /// Pods on this node in NAMESPACE whose labels match SELECTOR keep apiserver access; repeatable or
    /// ';'-separated (e.g. monitoring/apiserver-guard.io/allow=true). A selector without a namespace is refused.
    #[arg(
        long,
        value_name = "NAMESPACE/SELECTOR",
        env = "APISERVER_GUARD_ALLOW_PODS",
        value_delimiter = ';'
    )]
    pub allow_pods: Vec<String>,
    /// Pods on this node in these namespaces keep apiserver access; comma-separated (e.g. kube-system).
    #[arg(
        long,
        value_name = "NS",
        env = "APISERVER_GUARD_ALLOW_NAMESPACES",
        value_delimiter = ','
    )]
    pub allow_namespaces: Vec<String>,
    /// File keeping the last discovered state across restarts [default: /var/lib/apiserver-guard/discovered.json].
    #[arg(long, value_name = "PATH", env = "APISERVER_GUARD_DISCOVERY_CACHE")]
    pub discovery_cache: Option<PathBuf>,
}

impl Command {
    /// The policy options of this command, if it takes any.
    pub fn policy_mut(&mut self) -> Option<&mut PolicyArgs> {
        match self {
            Command::Apply(p) | Command::Render(p) => Some(p),
            Command::Status(s) => Some(&mut s.policy),
            Command::Run(r) => Some(&mut r.policy),
            Command::Verify(v) => Some(&mut v.policy),
            Command::Remove | Command::Attempts(_) => None,
        }
    }
}

/// Ids of the arguments of `m` whose value came from the environment.
fn env_ids(m: &ArgMatches) -> BTreeSet<String> {
    m.ids()
        .map(|id| id.as_str())
        .filter(|id| m.value_source(id) == Some(ValueSource::EnvVariable))
        .map(str::to_string)
        .collect()
}

/// Parses `argv`; on a usage error returns clap's error, or, when the bad
/// value came from an environment variable, a message naming the variable.
pub fn parse_from(argv: Vec<OsString>) -> Result<Cli, UsageError> {
    let m = Cli::command()
        .try_get_matches_from(argv.clone())
        .map_err(|e| match env_value_problem(&e, &argv) {
            Some(msg) => UsageError::BadEnv(msg),
            None => UsageError::Clap(e),
        })?;
    let mut cli = Cli::from_arg_matches(&m).map_err(UsageError::Clap)?;
    if let (Some((_, sub)), Some(p)) = (m.subcommand(), cli.command.policy_mut()) {
        p.from_env = env_ids(sub);
    }
    Ok(cli)
}

/// Why the command line was refused.
#[derive(Debug)]
pub enum UsageError {
    /// clap's own message (a bad flag, `--help`, `--version`).
    Clap(clap::Error),
    /// A variable holds no valid value (exit 2, the message names it).
    BadEnv(String),
}

/// The daemon settings given by environment variables alone, as `run` would
/// read them, for the commands that do not take them as flags (the one
/// validator checks them whatever the command). `policy` is kept as given.
pub fn daemon_args_from_env(policy: &PolicyArgs) -> Result<RunArgs, String> {
    let argv: Vec<OsString> = vec!["apiserver-guard".into(), "run".into()];
    match parse_from(argv) {
        Ok(Cli {
            command: Command::Run(mut r),
        }) => {
            let from_env = std::mem::take(&mut r.policy.from_env);
            r.policy = policy.clone();
            r.policy.from_env.extend(from_env);
            Ok(r)
        }
        Ok(_) => unreachable!("parsed `run`"),
        Err(UsageError::BadEnv(m)) => Err(m),
        Err(UsageError::Clap(e)) => Err(e.to_string().lines().next().unwrap_or_default().to_string()),
    }
}

/// When clap refused a value that came from an environment variable (the
/// flag is not on the command line, the variable is set), says so naming
/// the variable; clap itself would name only the flag.
fn env_value_problem(e: &clap::Error, argv: &[OsString]) -> Option<String> {
    use clap::error::{ContextKind, ContextValue};
    let ContextValue::String(arg) = e.get(ContextKind::InvalidArg)? else {
        return None;
    };
    let long = arg.split_whitespace().next()?.strip_prefix("--")?;
    let flag = format!("--{long}");
    let given = argv
        .iter()
        .filter_map(|a| a.to_str())
        .any(|a| a == flag || a.starts_with(&format!("{flag}=")));
    if given {
        return None;
    }
    let cmd = Cli::command();
    let found = std::iter::once(&cmd)
        .chain(cmd.get_subcommands())
        .flat_map(|c| c.get_arguments())
        .find(|a| a.get_long() == Some(long))?;
    let env = found.get_env()?.to_str()?.to_string();
    let value = std::env::var_os(&env)?;
    let valid = match (e.get(ContextKind::ValidValue), found.get_value_names()) {
        (Some(ContextValue::Strings(v)), _) if !v.is_empty() => format!("one of {}", v.join(", ")),
        (_, Some([name, ..])) => format!("a {name}"),
        _ => "a value".to_string(),
    };
    Some(if value.is_empty() {
        format!("{env} is set but empty: set it to {valid}, or unset it")
    } else {
        format!(
            "{env}: '{}' is not valid for {flag} (expected {valid})",
            value.to_string_lossy()
        )
    })
}

fn parse_table_ownership(s: &str) -> Result<TableOwnership, String> {
    s.parse()
}

/// What the probe from the container network is expected to see.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Expect {
    /// The block holds: the pod is refused, reset, unreachable or dropped.
    Blocked,
    /// The pod reaches the apiserver (e.g. an exempt pod, or before `apply`).
    Reachable,
}

/// The policy's choices as command-line values (the core knows nothing of
/// the command line): each variant's spelling and its line of help.
macro_rules! value_enum {
    ($t:ty { $($v:path => $name:literal: $help:literal,)* }) => {
        impl ValueEnum for $t {
            fn value_variants<'a>() -> &'a [Self] {
                &[$($v),*]
            }
            fn to_possible_value(&self) -> Option<PossibleValue> {
                let (name, help) = match self {
                    $($v => ($name, $help),)*
                };
                let value = PossibleValue::new(name);
                Some(if help.is_empty() { value } else { value.help(help) })
            }
        }
    };
}

value_enum!(Mode {
    Mode::Vpc => "vpc": "VPC model: pod traffic leaves through the node's OUTPUT path",
    Mode::Tunnel => "tunnel": "Overlay/tunnel model: pod traffic is routed through FORWARD",
    Mode::Both => "both": "Both hooks (the default: safe whatever the network model)",
});

value_enum!(Action {
    Action::Reject => "reject": "TCP reset for TCP (instant, not rate limited), ICMP error otherwise",
    Action::Drop => "drop": "Silently drop (clients wait for their timeout)",
    Action::Audit => "audit": "Block nothing: count and log what would be blocked (roll-out)",
});

value_enum!(BackendChoice {
    BackendChoice::Auto => "auto": "nftables when `nft` works, else iptables in the variant the host uses",
    BackendChoice::Nftables => "nftables": "",
    BackendChoice::Iptables => "iptables": "iptables in the variant the host uses (legacy or nft)",
    BackendChoice::IptablesNft => "iptables-nft": "",
    BackendChoice::IptablesLegacy => "iptables-legacy": "",
});

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("apiserver-guard").chain(args.iter().copied()))
    }

    #[test]
    fn definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn lists_are_repeatable_and_comma_separated() {
        let cli = parse(&[
            "apply",
            "--container-cidr",
            "10.0.0.0/16,10.1.0.0/16",
            "--container-cidr",
            "fd00::/48",
            "--apiserver",
            "1.2.3.4:443",
        ])
        .unwrap();
        let Command::Apply(p) = cli.command else { panic!() };
        assert_eq!(p.container_cidr, vec!["10.0.0.0/16", "10.1.0.0/16", "fd00::/48"]);
    }

    #[test]
    fn allow_pods_entries_are_repeatable_and_semicolon_separated_keeping_commas() {
        let cli = parse(&[
            "apply",
            "--allow-pods",
            "monitoring/app=prom,tier in (a,b);kube-system/k8s-app",
            "--allow-pods",
            "default/x",
        ])
        .unwrap();
        let Command::Apply(p) = cli.command else { panic!() };
        assert_eq!(
            p.kube.allow_pods,
            vec!["monitoring/app=prom,tier in (a,b)", "kube-system/k8s-app", "default/x"]
        );
    }

    #[test]
    fn unknown_enum_values_are_usage_errors() {
        let e = parse(&["apply", "--mode", "overlay"]).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        let e = parse(&["apply", "--backend", "pf"]).unwrap_err();
        assert_eq!(e.exit_code(), 2);
    }

    #[test]
    fn attempts_takes_listen_and_output() {
        let cli = parse(&["attempts"]).unwrap();
        let Command::Attempts(a) = cli.command else { panic!() };
        assert_eq!(a.listen.to_string(), crate::daemon_settings::DEFAULT_LISTEN);
        assert_eq!(a.output, OutputFormat::Text);
        let cli = parse(&["attempts", "--listen", "[::1]:9555", "--output", "json"]).unwrap();
        let Command::Attempts(a) = cli.command else { panic!() };
        assert_eq!(
            (a.listen.to_string().as_str(), a.output),
            ("[::1]:9555", OutputFormat::Json)
        );
        assert_eq!(parse(&["attempts", "--listen", "nope"]).unwrap_err().exit_code(), 2);
    }

    #[test]
    fn status_takes_output_json() {
        let cli = parse(&["status", "--output", "json"]).unwrap();
        let Command::Status(s) = cli.command else { panic!() };
        assert_eq!(s.output, OutputFormat::Json);
    }
}
