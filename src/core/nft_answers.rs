//! The answer rules of nftables: at the head of each chain that logs and
//! decides (`nft_desired`), one rule per kind of packet that answers a
//! packet sent to the pod (`attempt_packet::is_tcp_answer`: any TCP reset, a
//! SYN+ACK; for a rule that takes every protocol also the ICMP answers of
//! its family, `attempt_packet::ICMP_ANSWERS` / `ICMPV6_ANSWERS`), each giving
//! the chain's own verdict at once (`return` for an audit rule), so answers
//! never reach the log rules and their meters.
//!
//! Why: a pod's kernel answers whatever reaches it, including packets
//! another pod forges "from the apiserver"; each answer was logged as the
//! pod's attempt and spent its per-source allowance (a break-it find). A
//! positive match with the verdict, rather than a `tcp flags` test inside
//! the log rules, keeps every packet whose flags or type cannot be read (a
//! later or tiny fragment) logged as before, covers rules that take every
//! protocol (the log rules cannot test TCP flags there), and keeps the
//! block independent of the log path: each answer rule is the block itself.
//! (The kernel's fast payload path reads a later fragment's data as if it
//! were a transport header, so a later fragment may meet an answer rule: it
//! gets the verdict unlogged, and the reader ignores later fragments anyway.)
//! Answers these rules cannot recognise (a bare ACK, the later fragments
//! of an ICMP reply) reach the log rules, but never the connect log rules
//! (a SYN without ACK, which nothing a pod's stack sends to answer is),
//! whose meter is a pod's allowance for connects (`nft_desired::connect_rules`).

use super::attempt_packet::{ANSWER_RESET, ANSWER_SYN_ACK, ICMPV6_ANSWERS, ICMP_ANSWERS};
use super::model::{Family, Rule};
use super::nft_exprs::{cmp, meta, payload, tcp_flags, verdict_or_return};
use super::nft_model::*;

/// What follows a deciding rule's name in its answer rules' names
/// (`block-tcp-port-v4-answer-rst`).
pub const ANSWER_SUFFIX: &str = "-answer";

/// The answer rules of the chain of `decider` (see the module doc), each
/// ending in `verdict`, the decider's verdict expressions (None, an audit
/// rule: `return`).
pub fn answer_rules(decider: &Rule, verdict: Option<Vec<Expr>>) -> Vec<RuleModel> {
    let ending = verdict_or_return(verdict);
    let name = format!("{}{ANSWER_SUFFIX}", decider.name());
    let rule = |mut e: Vec<Expr>, what: &str| {
        e.extend(ending.iter().cloned());
        RuleModel::new(e, &format!("{name}-{what}"))
    };
    let mut out = vec![
        // `tcp flags rst`
        rule(tcp_flags(ANSWER_RESET, CMP_NEQ, 0), "rst"),
        // `tcp flags syn,ack / syn,ack`
        rule(tcp_flags(ANSWER_SYN_ACK, CMP_EQ, ANSWER_SYN_ACK), "syn-ack"),
    ];
    if !decider.takes_only_tcp() {
        let (nfproto, l4, types, word): (u8, u8, &[u8], &str) = match decider.family {
            Family::V4 => (NFPROTO_IPV4, IPPROTO_ICMP, &ICMP_ANSWERS, "icmp"),
            Family::V6 => (NFPROTO_IPV6, IPPROTO_ICMPV6, &ICMPV6_ANSWERS, "icmpv6"),
        };
        for t in types {
            // `icmp type echo-reply`, with nft's `meta nfproto` and `meta l4proto` dependencies.
            let e = vec![
                meta(META_NFPROTO),
                cmp(CMP_EQ, vec![nfproto]),
                meta(META_L4PROTO),
                cmp(CMP_EQ, vec![l4]),
                payload(PAYLOAD_TRANSPORT, 0, 1, REG_1),
                cmp(CMP_EQ, vec![*t]),
            ];
            out.push(rule(e, &format!("{word}-{t}")));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::model::{Target, Verdict as RuleVerdict};
    use crate::core::nft_desired::verdict_exprs;
    use crate::core::nft_stmt::{debug_lines, rule_text};

    fn answers(d: Rule) -> Vec<RuleModel> {
        answer_rules(&d, verdict_exprs(&d))
    }

    fn decider(family: Family, target: Target, tcp_only: bool, verdict: RuleVerdict) -> Rule {
        Rule {
            family,
            target,
            tcp_only,
            verdict,
        }
    }

    #[track_caller]
    fn golden(r: &RuleModel, nft: &str) {
        let want: Vec<&str> = nft.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
        assert_eq!(debug_lines(&r.exprs), want);
    }

    #[test]
    fn a_tcp_rule_refuses_resets_and_syn_acks_at_once() {
        // nft --debug=netlink (1.0.6) of `tcp flags rst reject with tcp reset`
        // and `tcp flags syn,ack / syn,ack reject with tcp reset`.
        let r = answers(decider(Family::V4, Target::ApiPort, true, RuleVerdict::TcpReset));
        assert_eq!(r.len(), 2);
        golden(
            &r[0],
            "[ meta load l4proto => reg 1 ]
             [ cmp eq reg 1 0x00000006 ]
             [ payload load 1b @ transport header + 13 => reg 1 ]
             [ bitwise reg 1 = ( reg 1 & 0x00000004 ) ^ 0x00000000 ]
             [ cmp neq reg 1 0x00000000 ]
             [ reject type 1 code 0 ]",
        );
        golden(
            &r[1],
            "[ meta load l4proto => reg 1 ]
             [ cmp eq reg 1 0x00000006 ]
             [ payload load 1b @ transport header + 13 => reg 1 ]
             [ bitwise reg 1 = ( reg 1 & 0x00000012 ) ^ 0x00000000 ]
             [ cmp eq reg 1 0x00000012 ]
             [ reject type 1 code 0 ]",
        );
        assert_eq!(
            rule_text(&r[0]),
            "tcp flags rst reject with tcp reset comment \"block-tcp-port-v4-answer-rst\""
        );
        assert_eq!(
            rule_text(&r[1]),
            "tcp flags syn,ack / syn,ack reject with tcp reset comment \"block-tcp-port-v4-answer-syn-ack\""
        );
    }

    #[test]
    fn a_rule_for_every_protocol_also_takes_its_familys_icmp_answers() {
        let v4 = answers(decider(Family::V4, Target::ApiAny, false, RuleVerdict::Drop));
        let names: Vec<String> = v4.iter().map(|r| r.comment().unwrap()).collect();
        assert_eq!(
            names,
            [
                "block-all-v4-answer-rst",
                "block-all-v4-answer-syn-ack",
                "block-all-v4-answer-icmp-0",
                "block-all-v4-answer-icmp-3",
                "block-all-v4-answer-icmp-11",
                "block-all-v4-answer-icmp-12",
                "block-all-v4-answer-icmp-14",
            ]
        );
        // nft --debug=netlink of `icmp type echo-reply drop`.
        golden(
            &v4[2],
            "[ meta load nfproto => reg 1 ]
             [ cmp eq reg 1 0x00000002 ]
             [ meta load l4proto => reg 1 ]
             [ cmp eq reg 1 0x00000001 ]
             [ payload load 1b @ transport header + 0 => reg 1 ]
             [ cmp eq reg 1 0x00000000 ]
             [ immediate reg 0 drop ]",
        );
        assert_eq!(
            rule_text(&v4[2]),
            "icmp type echo-reply drop comment \"block-all-v4-answer-icmp-0\""
        );
        // Audited: the answer leaves the chain unlogged (`return`), as a logged packet would after its log rules.
        let v6 = answers(decider(Family::V6, Target::ApiAny, false, RuleVerdict::Count));
        assert_eq!(v6.len(), 2 + ICMPV6_ANSWERS.len());
        assert_eq!(
            rule_text(&v6[6]),
            "icmpv6 type echo-reply return comment \"audit-all-v6-answer-icmpv6-129\""
        );
        assert_eq!(
            rule_text(&v6[3]),
            "icmpv6 type packet-too-big return comment \"audit-all-v6-answer-icmpv6-2\""
        );
    }
}
