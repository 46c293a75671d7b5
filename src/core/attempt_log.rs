//! The contract between the rules that report blocked attempts and the
//! daemon that reads them: the NFLOG group our log rules copy packet
//! headers to, how much of each packet they copy, and the prefix that names
//! the rule (and so the action) an attempt hit. Pure constants, the function
//! that reads a prefix back and what a rule's name says of the packet.

use super::attempt_packet::{Headers, Protocol};
use super::model::named_rule_takes_only_tcp;
pub use super::model::LOG_PREFIX;

/// NFLOG group of our log rules unless `--log-group` says otherwise. NFLOG
/// groups are per network namespace and one reader each; ulogd and IDSes
/// commonly use the low numbers, so ours is out of their way.
pub const DEFAULT_LOG_GROUP: u16 = 1443;

/// Bytes of each logged packet copied to the reader: the IP header (IPv6:
/// 40, IPv4: 20 to 60) and the TCP/UDP ports that follow.
pub const LOG_SNAPLEN: u32 = 96;

/// What happened to an attempt, read from its log prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AttemptAction {
    /// Refused or dropped (`block-...` rules).
    Blocked,
    /// Let through and only reported (`--action audit`: `audit-...` rules).
    Audited,
}

impl AttemptAction {
    /// Label value and JSON name: `blocked`, `audited`.
    pub fn as_str(self) -> &'static str {
        match self {
            AttemptAction::Blocked => "blocked",
            AttemptAction::Audited => "audited",
        }
    }
}

/// The rule comment and action named by an NFLOG prefix of ours (None: not ours).
pub fn parse_prefix(prefix: &str) -> Option<(&str, AttemptAction)> {
    let rule = prefix.strip_prefix(LOG_PREFIX)?.trim_end_matches(['\0', ' ']);
    let action = if rule.starts_with("block-") {
        AttemptAction::Blocked
    } else if rule.starts_with("audit-") {
        AttemptAction::Audited
    } else {
        return None;
    };
    Some((rule, action))
}

/// The transport protocol a rule matched, when its match names one: the
/// TCP rules (`block-tcp-port-v4`, `audit-tcp-v6`, `block-local-port-v4`,
/// ...) only take TCP; `...-all-...` takes any protocol (None).
pub fn rule_protocol(rule: &str) -> Option<Protocol> {
    named_rule_takes_only_tcp(rule).then_some(Protocol::Tcp)
}

/// A logged packet's headers, corrected by what its rule matched: when the
/// copied bytes end inside IPv6 extension headers (a pod can push the
/// transport header past `LOG_SNAPLEN`), the header walk names the last
/// extension header (`proto-60`); a TCP rule's attempt is TCP all the same,
/// its ports unknown.
pub fn with_rule_protocol(mut h: Headers, rule: &str) -> Headers {
    if let Some(p) = rule_protocol(rule) {
        if h.protocol != p {
            h.protocol = p;
            h.source_port = None;
            h.destination_port = None;
            h.tcp = None;
            h.answer = false;
        }
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tcp_rules_name_their_protocol_and_port_less_rules_none() {
        for r in [
            "block-tcp-port-v4",
            "audit-tcp-port-v6",
            "block-tcp-v4",
            "block-local-port-v6",
            "block-local-port-link-local",
        ] {
            assert_eq!(rule_protocol(r), Some(Protocol::Tcp), "{r}");
        }
        for r in ["block-all-v4", "audit-all-v6", "exempt-v4", "tcp-port-v4"] {
            assert_eq!(rule_protocol(r), None, "{r}");
        }
    }

    #[test]
    fn headers_cut_off_in_extension_headers_take_the_rules_protocol() {
        let cut = Headers {
            source: "fd00:10::2".parse().unwrap(),
            destination: "fd00:50::10".parse().unwrap(),
            protocol: Protocol::Other(60),
            source_port: None,
            destination_port: None,
            tcp: None,
            answer: false,
            later_fragment: false,
        };
        let h = with_rule_protocol(cut, "block-tcp-port-v6");
        assert_eq!(
            (h.protocol, h.source_port, h.destination_port, h.tcp),
            (Protocol::Tcp, None, None, None)
        );
        assert_eq!(with_rule_protocol(cut, "block-all-v6").protocol, Protocol::Other(60));
        let tcp = Headers {
            protocol: Protocol::Tcp,
            source_port: Some(40000),
            destination_port: Some(5443),
            ..cut
        };
        assert_eq!(
            with_rule_protocol(tcp, "block-tcp-port-v6"),
            tcp,
            "read headers are kept"
        );
    }

    #[test]
    fn prefixes_name_the_rule_and_the_action() {
        assert_eq!(
            parse_prefix("apiserver-guard:block-tcp-port-v4"),
            Some(("block-tcp-port-v4", AttemptAction::Blocked))
        );
        assert_eq!(
            parse_prefix("apiserver-guard:audit-all-v6 \0"),
            Some(("audit-all-v6", AttemptAction::Audited))
        );
        assert_eq!(parse_prefix("apiserver-guard:exempt-v4"), None);
        assert_eq!(parse_prefix("other:block-x"), None);
        assert_eq!(parse_prefix(""), None);
        assert_eq!(AttemptAction::Audited.as_str(), "audited");
    }
}
