//! The contract between the rules that report blocked attempts and the
//! daemon that reads them: the NFLOG group our log rules copy packet
//! headers to, how much of each packet they copy, and the prefix that names
//! the rule (and so the action) an attempt hit. Pure constants and the one
//! function that reads a prefix back.

/// NFLOG group of our log rules unless `--log-group` says otherwise. NFLOG
/// groups are per network namespace and one reader each; ulogd and IDSes
/// commonly use the low numbers, so ours is out of their way.
pub const DEFAULT_LOG_GROUP: u16 = 1443;

/// Bytes of each logged packet copied to the reader: the IP header (IPv6:
/// 40, IPv4: 20 to 60) and the TCP/UDP ports that follow.
pub const LOG_SNAPLEN: u32 = 96;

/// Every log rule's prefix starts with this, followed by the comment of the
/// rule whose match it shares (`apiserver-guard:block-tcp-port-v4`).
pub const LOG_PREFIX: &str = "apiserver-guard:";

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

#[cfg(test)]
mod tests {
    use super::*;

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
