//! The policy as plain data: which sources are blocked from which apiserver
//! endpoints, on which hooks, with which action, through which backend.
//! Built by `config`, checked by `validate`, turned into rules by `model`.

use super::address::Endpoint;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// Network model of the cluster, i.e. which netfilter hooks see pod traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// VPC model: pod traffic leaves through the node's OUTPUT path.
    Vpc,
    /// Overlay/tunnel model: pod traffic is routed through FORWARD.
    Tunnel,
    /// Both hooks (the default: safe whatever the network model).
    Both,
}

/// A netfilter hook we attach to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Hook {
    Output,
    Forward,
    /// Pod -> an apiserver on this very node (control-plane nodes).
    Input,
}

impl Hook {
    pub const ALL: [Hook; 3] = [Hook::Output, Hook::Forward, Hook::Input];

    /// Lower-case name, as nftables spells the hook.
    pub fn name(self) -> &'static str {
        match self {
            Hook::Output => "output",
            Hook::Forward => "forward",
            Hook::Input => "input",
        }
    }

    /// The kernel's number of this hook (`NF_INET_*`), as nf_tables and the
    /// iptables-legacy table blob carry it.
    pub fn number(self) -> u32 {
        match self {
            Hook::Input => 1,
            Hook::Forward => 2,
            Hook::Output => 3,
        }
    }

    /// Upper-case name of the built-in iptables chain on this hook.
    pub fn iptables_chain(self) -> &'static str {
        match self {
            Hook::Output => "OUTPUT",
            Hook::Forward => "FORWARD",
            Hook::Input => "INPUT",
        }
    }
}

impl Mode {
    pub fn hooks(self) -> Vec<Hook> {
        match self {
            Mode::Vpc => vec![Hook::Output],
            Mode::Tunnel => vec![Hook::Forward],
            Mode::Both => vec![Hook::Output, Hook::Forward],
        }
    }
}

impl Action {
    /// The name operators write (`--action reject`).
    pub fn name(self) -> &'static str {
        match self {
            Action::Reject => "reject",
            Action::Drop => "drop",
            Action::Audit => "audit",
        }
    }
}

/// What happens to a blocked packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// TCP reset for TCP (instant, not rate limited), ICMP error otherwise.
    Reject,
    /// Silently drop (clients wait for their timeout).
    Drop,
    /// Block nothing: count and log what would be blocked (roll-out).
    Audit,
}

/// Which firewall to program.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BackendChoice {
    /// nftables when `nft` works, else iptables in the variant the host uses.
    Auto,
    Nftables,
    /// iptables in the variant the host uses (legacy or nft).
    Iptables,
    IptablesNft,
    IptablesLegacy,
}

/// Where each list of the policy was given, as messages name it: a flag
/// (`--exempt`), an environment variable (`APISERVER_GUARD_EXEMPT`) or a
/// config key (`exempt in /etc/apiserver-guard/config.toml`), with
/// "(auto: discovered)" when Kubernetes discovery adds to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origins {
    pub sources: String,
    pub exempt: String,
    pub apiservers: String,
}

impl Default for Origins {
    fn default() -> Self {
        Origins {
            sources: "--container-cidr".into(),
            exempt: "--exempt".into(),
            apiservers: "--apiserver".into(),
        }
    }
}

/// The whole policy, parsed but not yet validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Container CIDRs whose traffic is blocked.
    pub sources: Vec<IpNet>,
    /// Sources inside the container CIDRs that keep access.
    pub exempt: Vec<IpNet>,
    pub apiservers: Vec<Endpoint>,
    pub mode: Mode,
    pub action: Action,
    pub backend: BackendChoice,
    /// The apiserver endpoints whose address is one of this node's own (a
    /// control-plane node): pods reach them through INPUT, which is hooked
    /// too, and on their ports at *every* local address of the node (an
    /// apiserver listens on all of them). Set by the shell from the node's
    /// addresses (`model::local_apiservers`); empty elsewhere.
    pub local_apiservers: Vec<Endpoint>,
    /// The exempt set changes at run time (the allow-list follows pods):
    /// keep its set and rule even while it is empty, so a change is an
    /// element update and never a rule change.
    pub dynamic_exempt: bool,
    /// NFLOG group the log rules copy each attempt to; None: no log rules.
    pub log_group: Option<u16>,
    /// Where the lists came from, for validation messages.
    pub origins: Origins,
}

/// What operators are told when audit mode has no log rules.
pub const AUDIT_UNLOGGED: &str = "audit mode with --log-group off: connections that would be blocked are \
     counted and let through, but nothing records who tried (apiserver-guard attempts stays empty); \
     give a log group (--log-group N, default 1443) to see them";

impl Policy {
    /// Audit mode without log rules (`--log-group off`): connections that
    /// would be blocked are only counted; nobody is named.
    pub fn audit_unlogged(&self) -> bool {
        self.action == Action::Audit && self.log_group.is_none()
    }
}
