//! Golden tests: each rule kind's expressions against what
//! `nft --debug=netlink add rule inet apiserver_guard guard ...` printed
//! (nft 1.0.6, kernel 6.18, in a scratch network namespace), and the sets
//! and chains `desired` declares.

use super::*;
use crate::core::model::tests::policy;
use crate::core::nft_stmt::{debug_lines, rule_text};
use crate::core::policy::{Action, Mode};

/// The log verdict of a blocking policy logging to group 1443.
const LOG_1443: RuleVerdict = RuleVerdict::Log {
    group: 1443,
    audit: false,
};

/// A logged v4 apiserver-port rule (group 1443) and its reset verdict.
fn logged_tcp_port_v4() -> (Rule, Rule) {
    (
        rule(Family::V4, Target::ApiPort, true, LOG_1443),
        rule(Family::V4, Target::ApiPort, true, RuleVerdict::TcpReset),
    )
}

fn rule(family: Family, target: Target, tcp_only: bool, verdict: RuleVerdict) -> Rule {
    Rule {
        family,
        target,
        tcp_only,
        verdict,
    }
}

/// The table `desired` builds for pods in 10.0.0.0/16 and one apiserver
/// (tunnel mode), logging to group 1443.
fn logged_table(api: &str, action: Action) -> TableModel {
    let mut p = policy(&["10.0.0.0/16"], &[], &[api], Mode::Tunnel, action);
    p.log_group = Some(1443);
    desired(&Blocklist::from_policy(&p))
}

fn golden(r: Rule, nft: &str) {
    let (exprs, _) = rule_exprs(&r);
    let want: Vec<&str> = nft.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    assert_eq!(debug_lines(&exprs), want, "rule {}", r.name());
}

#[test]
fn exempt_v4_is_what_nft_sends() {
    // ip saddr @exempt_v4 return comment "exempt-v4"
    golden(
        rule(Family::V4, Target::Exempt, false, RuleVerdict::Return),
        "[ meta load nfproto => reg 1 ]
         [ cmp eq reg 1 0x00000002 ]
         [ payload load 4b @ network header + 12 => reg 1 ]
         [ lookup reg 1 set exempt_v4 ]
         [ immediate reg 0 return ]",
    );
    // userdata = { \x00\x0aexempt-v4\x00 }
    assert_eq!(comment_udata("exempt-v4"), b"\x00\x0aexempt-v4\x00");
}

#[test]
fn tcp_port_v4_concatenates_in_consecutive_registers() {
    // ip saddr @sources_v4 ip daddr . tcp dport @api_port_v4 counter reject with tcp reset
    golden(
        rule(Family::V4, Target::ApiPort, true, RuleVerdict::TcpReset),
        "[ meta load nfproto => reg 1 ]
         [ cmp eq reg 1 0x00000002 ]
         [ payload load 4b @ network header + 12 => reg 1 ]
         [ lookup reg 1 set sources_v4 ]
         [ meta load l4proto => reg 1 ]
         [ cmp eq reg 1 0x00000006 ]
         [ payload load 4b @ network header + 16 => reg 1 ]
         [ payload load 2b @ transport header + 2 => reg 9 ]
         [ lookup reg 1 set api_port_v4 ]
         [ counter pkts 0 bytes 0 ]
         [ reject type 1 code 0 ]",
    );
}

#[test]
fn tcp_port_v6_uses_the_next_16_byte_register() {
    // ip6 saddr @sources_v6 ip6 daddr . tcp dport @api_port_v6 counter reject with tcp reset
    golden(
        rule(Family::V6, Target::ApiPort, true, RuleVerdict::TcpReset),
        "[ meta load nfproto => reg 1 ]
         [ cmp eq reg 1 0x0000000a ]
         [ payload load 16b @ network header + 8 => reg 1 ]
         [ lookup reg 1 set sources_v6 ]
         [ meta load l4proto => reg 1 ]
         [ cmp eq reg 1 0x00000006 ]
         [ payload load 16b @ network header + 24 => reg 1 ]
         [ payload load 2b @ transport header + 2 => reg 2 ]
         [ lookup reg 1 set api_port_v6 ]
         [ counter pkts 0 bytes 0 ]
         [ reject type 1 code 0 ]",
    );
}

#[test]
fn tcp_any_v4_checks_l4proto_after_the_lookups() {
    // ip saddr @sources_v4 ip daddr @api_any_v4 meta l4proto tcp counter reject with tcp reset
    golden(
        rule(Family::V4, Target::ApiAny, true, RuleVerdict::TcpReset),
        "[ meta load nfproto => reg 1 ]
         [ cmp eq reg 1 0x00000002 ]
         [ payload load 4b @ network header + 12 => reg 1 ]
         [ lookup reg 1 set sources_v4 ]
         [ payload load 4b @ network header + 16 => reg 1 ]
         [ lookup reg 1 set api_any_v4 ]
         [ meta load l4proto => reg 1 ]
         [ cmp eq reg 1 0x00000006 ]
         [ counter pkts 0 bytes 0 ]
         [ reject type 1 code 0 ]",
    );
}

#[test]
fn all_v6_rejects_with_icmpx_admin_prohibited() {
    // ip6 saddr @sources_v6 ip6 daddr @api_any_v6 counter reject with icmpx type admin-prohibited
    golden(
        rule(Family::V6, Target::ApiAny, false, RuleVerdict::IcmpProhibited),
        "[ meta load nfproto => reg 1 ]
         [ cmp eq reg 1 0x0000000a ]
         [ payload load 16b @ network header + 8 => reg 1 ]
         [ lookup reg 1 set sources_v6 ]
         [ payload load 16b @ network header + 24 => reg 1 ]
         [ lookup reg 1 set api_any_v6 ]
         [ counter pkts 0 bytes 0 ]
         [ reject type 2 code 3 ]",
    );
}

#[test]
fn drop_action_is_an_immediate_drop() {
    // ip saddr @sources_v4 ip daddr @api_any_v4 counter drop
    golden(
        rule(Family::V4, Target::ApiAny, false, RuleVerdict::Drop),
        "[ meta load nfproto => reg 1 ]
         [ cmp eq reg 1 0x00000002 ]
         [ payload load 4b @ network header + 12 => reg 1 ]
         [ lookup reg 1 set sources_v4 ]
         [ payload load 4b @ network header + 16 => reg 1 ]
         [ lookup reg 1 set api_any_v4 ]
         [ counter pkts 0 bytes 0 ]
         [ immediate reg 0 drop ]",
    );
}

#[test]
fn local_port_matches_fib_types_then_the_port_set() {
    // ip saddr @sources_v4 fib saddr type != local fib daddr type local tcp dport @local_ports
    //   counter reject with tcp reset comment "block-local-port-v4"
    golden(
        rule(Family::V4, Target::LocalPort, true, RuleVerdict::TcpReset),
        "[ meta load nfproto => reg 1 ]
         [ cmp eq reg 1 0x00000002 ]
         [ payload load 4b @ network header + 12 => reg 1 ]
         [ lookup reg 1 set sources_v4 ]
         [ fib saddr type => reg 1 ]
         [ cmp neq reg 1 0x00000002 ]
         [ fib daddr type => reg 1 ]
         [ cmp eq reg 1 0x00000002 ]
         [ meta load l4proto => reg 1 ]
         [ cmp eq reg 1 0x00000006 ]
         [ payload load 2b @ transport header + 2 => reg 1 ]
         [ lookup reg 1 set local_ports ]
         [ counter pkts 0 bytes 0 ]
         [ reject type 1 code 0 ]",
    );
    // Same rule in v6 with drop.
    golden(
        rule(Family::V6, Target::LocalPort, true, RuleVerdict::Drop),
        "[ meta load nfproto => reg 1 ]
         [ cmp eq reg 1 0x0000000a ]
         [ payload load 16b @ network header + 8 => reg 1 ]
         [ lookup reg 1 set sources_v6 ]
         [ fib saddr type => reg 1 ]
         [ cmp neq reg 1 0x00000002 ]
         [ fib daddr type => reg 1 ]
         [ cmp eq reg 1 0x00000002 ]
         [ meta load l4proto => reg 1 ]
         [ cmp eq reg 1 0x00000006 ]
         [ payload load 2b @ transport header + 2 => reg 1 ]
         [ lookup reg 1 set local_ports ]
         [ counter pkts 0 bytes 0 ]
         [ immediate reg 0 drop ]",
    );
}

#[test]
fn rules_read_back_as_the_rule_text_nft_accepts() {
    let mut p = policy(
        &["10.0.0.0/16", "fd00::/48"],
        &["10.0.9.0/24"],
        &["192.168.0.10:5443", "192.168.0.11", "[fd01::1]:443", "fd01::2"],
        Mode::Both,
        Action::Reject,
    );
    p.local_apiservers = p.apiservers[..1].to_vec();
    let b = Blocklist::from_policy(&p);
    let t = desired(&b);
    // The statements the text renderer used to send with `nft -f` (nft lists them back so).
    let texts: Vec<String> = t.chains["guard"].rules.iter().map(rule_text).collect();
    let want = [
        "ip saddr @exempt_v4 return comment \"exempt-v4\"",
        "ip saddr @sources_v4 fib saddr type != local fib daddr type local tcp dport @local_ports counter packets 0 bytes 0 reject with tcp reset comment \"block-local-port-v4\"",
        "ip saddr @sources_v4 ip daddr . tcp dport @api_port_v4 counter packets 0 bytes 0 reject with tcp reset comment \"block-tcp-port-v4\"",
        "ip saddr @sources_v4 ip daddr @api_any_v4 meta l4proto tcp counter packets 0 bytes 0 reject with tcp reset comment \"block-tcp-v4\"",
        "ip saddr @sources_v4 ip daddr @api_any_v4 counter packets 0 bytes 0 reject with icmpx admin-prohibited comment \"block-all-v4\"",
        "ip6 saddr @sources_v6 ip6 daddr . tcp dport @api_port_v6 counter packets 0 bytes 0 reject with tcp reset comment \"block-tcp-port-v6\"",
        "ip6 saddr @sources_v6 ip6 daddr @api_any_v6 meta l4proto tcp counter packets 0 bytes 0 reject with tcp reset comment \"block-tcp-v6\"",
        "ip6 saddr @sources_v6 ip6 daddr @api_any_v6 counter packets 0 bytes 0 reject with icmpx admin-prohibited comment \"block-all-v6\"",
    ];
    for w in want {
        assert!(texts.iter().any(|t| t == w), "{w}\nnot in\n{}", texts.join("\n"));
    }
    assert_eq!(
        rule_text(&t.chains["input"].rules[0]),
        "jump guard comment \"enter-guard\""
    );
}

#[test]
fn sets_are_those_the_rules_reference_and_chains_one_per_hook() {
    let mut p = policy(
        &["10.0.0.0/16"],
        &[],
        &["192.168.0.10:5443"],
        Mode::Tunnel,
        Action::Reject,
    );
    p.dynamic_exempt = true;
    p.local_apiservers = p.apiservers.clone();
    let t = desired(&Blocklist::from_policy(&p));
    assert_eq!(
        t.sets.keys().collect::<Vec<_>>(),
        ["api_port_v4", "exempt_v4", "link_local_v6", "local_ports", "sources_v4"]
    );
    assert!(
        t.sets["exempt_v4"].elements.is_empty(),
        "dynamic exempt: declared empty"
    );
    assert_eq!(t.chains.keys().collect::<Vec<_>>(), ["forward", "guard", "input"]);
    let fwd = t.chains["forward"].base.as_ref().unwrap();
    assert_eq!((fwd.hook, fwd.priority, fwd.policy), (HOOK_FORWARD, 0, NF_ACCEPT));
    for (set, _) in referenced_sets(&t) {
        assert!(t.sets.contains_key(&set), "{set}");
    }
    // Elements as the kernel holds them (read back in the golden dumps).
    let port = &t.sets["api_port_v4"];
    assert_eq!(
        port.elements.iter().next().unwrap().key,
        [192, 168, 0, 10, 0x15, 0x43, 0, 0]
    );
    assert_eq!(
        port.userdata,
        [0, 4, 0, 0, 0, 0, 3, 8, 0, 4, 13, 0, 0, 0, 1, 0]
            .map(|b| b as u8)
            .to_vec()
    );
    assert_eq!(t.sets["local_ports"].elements.iter().next().unwrap().key, [0x15, 0x43]);
}

#[test]
fn interval_elements_are_starts_and_ends_after_a_zero_end() {
    let nets: Vec<IpNet> = ["10.0.0.0/16", "10.2.0.0/16"]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
    let got: Vec<(Vec<u8>, u32)> = interval_elements(&nets).into_iter().map(|e| (e.key, e.flags)).collect();
    // Kernel dump of sources_v4 { 10.0.0.0/16, 10.2.0.0/16 }.
    assert_eq!(
        got,
        [
            (vec![0, 0, 0, 0], 1),
            (vec![10, 0, 0, 0], 0),
            (vec![10, 1, 0, 0], 1),
            (vec![10, 2, 0, 0], 0),
            (vec![10, 3, 0, 0], 1)
        ]
    );
    // Adjacent ranges: an end and a start at the same key (as the kernel
    // held 10.4.1.0/24, 10.4.2.0/24 in v4_full); a range at the top has no
    // end; one at 0 needs no zero end.
    let nets: Vec<IpNet> = ["0.0.0.0/8", "1.0.0.0/8", "255.0.0.0/8"]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
    let got: Vec<(Vec<u8>, u32)> = interval_elements(&nets).into_iter().map(|e| (e.key, e.flags)).collect();
    assert_eq!(
        got,
        [
            (vec![0, 0, 0, 0], 0),
            (vec![1, 0, 0, 0], 0),
            (vec![1, 0, 0, 0], 1),
            (vec![2, 0, 0, 0], 1),
            (vec![255, 0, 0, 0], 0)
        ]
    );
}

fn golden_exprs(exprs: &[Expr], nft: &str) {
    let want: Vec<&str> = nft.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    assert_eq!(debug_lines(exprs), want);
}

#[test]
fn log_rules_v4_meter_per_source_and_per_interface_then_count_and_log() {
    // nft --debug=netlink of:
    // meta iif . ip saddr @attempts_v4 update @iif_known { meta iif limit rate 1000/second burst 2000 packets }
    //   counter log ...
    // meta iif . ip saddr != @attempts_v4 update @iif_new { meta iif limit rate 200/second burst 400 packets }
    //   update @attempts_v4 { meta iif . ip saddr limit rate 10/second burst 20 packets } counter log ...
    // The other protocols' rules exist only in a port-less apiserver's chain.
    let r = rule(Family::V4, Target::ApiAny, false, LOG_1443);
    let rules = log_rules(&r);
    assert_eq!(rules.meter, "attempts_v4");
    golden_exprs(
        &rules.known,
        "[ meta load nfproto => reg 1 ]
         [ cmp eq reg 1 0x00000002 ]
         [ meta load iif => reg 1 ]
         [ payload load 4b @ network header + 12 => reg 9 ]
         [ lookup reg 1 set attempts_v4 ]
         [ meta load iif => reg 1 ]
         [ dynset update reg_key 1 set iif_known expr [ limit rate 1000/second burst 2000 type packets flags 0x0 ] ]
         [ counter pkts 0 bytes 0 ]
         [ log prefix apiserver-guard:block-all-v4 group 1443 snaplen 96 qthreshold 0 ]",
    );
    golden_exprs(
        &rules.new,
        "[ meta load nfproto => reg 1 ]
         [ cmp eq reg 1 0x00000002 ]
         [ meta load iif => reg 1 ]
         [ payload load 4b @ network header + 12 => reg 9 ]
         [ lookup reg 1 set attempts_v4 0x1 ]
         [ meta load iif => reg 1 ]
         [ dynset update reg_key 1 set iif_new expr [ limit rate 200/second burst 400 type packets flags 0x0 ] ]
         [ meta load iif => reg 1 ]
         [ payload load 4b @ network header + 12 => reg 9 ]
         [ dynset update reg_key 1 set attempts_v4 expr [ limit rate 10/second burst 20 type packets flags 0x0 ] ]
         [ counter pkts 0 bytes 0 ]
         [ log prefix apiserver-guard:block-all-v4 group 1443 snaplen 96 qthreshold 0 ]",
    );
    // userdata = { \x00\x11log-block-all-v4\x00 }
    assert_eq!(comment_udata(&r.name()), b"\x00\x11log-block-all-v4\x00");
    assert_eq!(rules.new_name, "log-block-all-v4-new-source");
}

#[test]
fn fragment_rules_meter_ipv4_fragments_per_source_first_and_end_in_the_verdict() {
    // nft --debug=netlink (1.0.6) of `ip frag-off & 0x3fff != 0 iif . ip
    // saddr @attempts_v4 update @iif_known { ... } counter log ... reject
    // with tcp reset` (with `meta l4proto tcp` first, as nft puts it).
    let (r, decider) = logged_tcp_port_v4();
    let f = fragment_rules(&r, verdict_exprs(&decider));
    assert_eq!(f.meter, "attempts_v4");
    assert_eq!(
        (f.name.as_str(), f.new_name.as_str()),
        (
            "log-block-tcp-port-v4-fragment",
            "log-block-tcp-port-v4-fragment-new-source"
        )
    );
    golden_exprs(
        &f.known,
        "[ meta load l4proto => reg 1 ]
         [ cmp eq reg 1 0x00000006 ]
         [ meta load nfproto => reg 1 ]
         [ cmp eq reg 1 0x00000002 ]
         [ payload load 2b @ network header + 6 => reg 1 ]
         [ bitwise reg 1 = ( reg 1 & 0x0000ff3f ) ^ 0x00000000 ]
         [ cmp neq reg 1 0x00000000 ]
         [ meta load iif => reg 1 ]
         [ payload load 4b @ network header + 12 => reg 9 ]
         [ lookup reg 1 set attempts_v4 ]
         [ meta load iif => reg 1 ]
         [ dynset update reg_key 1 set iif_known expr [ limit rate 1000/second burst 2000 type packets flags 0x0 ] ]
         [ counter pkts 0 bytes 0 ]
         [ log prefix apiserver-guard:block-tcp-port-v4 group 1443 snaplen 96 qthreshold 0 ]
         [ reject type 1 code 0 ]",
    );
    // Audit: TCP still (other protocols' fragments keep their rules);
    // `return` after the log.
    let audited = fragment_rules(&r, None);
    assert_eq!(audited.known[..5], f.known[..5]);
    assert!(matches!(
        audited.known.last(),
        Some(Expr::Immediate {
            verdict: Verdict::Return,
            ..
        })
    ));
}

#[test]
fn flowless_rules_meter_per_source_what_the_flow_meter_holds_no_element_for() {
    // nft --debug=netlink (1.0.6) of `tcp flags != syn / syn,ack iif . ip
    // saddr . tcp sport != @flows_v4 iif . ip saddr @attempts_v4 update
    // @iif_known { ... } counter log ...`.
    let r = rule(Family::V4, Target::ApiPort, true, LOG_1443);
    let f = flowless_rules(&r);
    assert_eq!(f.meter, "attempts_v4");
    assert_eq!(f.new_name, "log-block-tcp-port-v4-flowless-new-source");
    golden_exprs(
        &f.known,
        "[ meta load l4proto => reg 1 ]
         [ cmp eq reg 1 0x00000006 ]
         [ payload load 1b @ transport header + 13 => reg 1 ]
         [ bitwise reg 1 = ( reg 1 & 0x00000012 ) ^ 0x00000000 ]
         [ cmp neq reg 1 0x00000002 ]
         [ meta load nfproto => reg 1 ]
         [ cmp eq reg 1 0x00000002 ]
         [ meta load iif => reg 1 ]
         [ payload load 4b @ network header + 12 => reg 9 ]
         [ payload load 2b @ transport header + 0 => reg 10 ]
         [ lookup reg 1 set flows_v4 0x1 ]
         [ meta load iif => reg 1 ]
         [ payload load 4b @ network header + 12 => reg 9 ]
         [ lookup reg 1 set attempts_v4 ]
         [ meta load iif => reg 1 ]
         [ dynset update reg_key 1 set iif_known expr [ limit rate 1000/second burst 2000 type packets flags 0x0 ] ]
         [ counter pkts 0 bytes 0 ]
         [ log prefix apiserver-guard:block-tcp-port-v4 group 1443 snaplen 96 qthreshold 0 ]",
    );
}

#[test]
fn flow_rules_meter_tcp_per_source_port_without_a_verdict() {
    // nft --debug=netlink (1.0.6) of `tcp flags != syn / syn,ack iif . ip
    // saddr . tcp sport @flows_v4 update @iif_known { ... } counter log ...`
    // and the IPv6 new-source rule.
    let r = rule(Family::V4, Target::ApiAny, false, LOG_1443);
    let f = flow_rules(&r);
    assert_eq!(f.meter, "flows_v4");
    assert_eq!(
        (f.name.as_str(), f.new_name.as_str()),
        ("log-block-all-v4-flow", "log-block-all-v4-flow-new-source")
    );
    golden_exprs(
        &f.known,
        "[ meta load l4proto => reg 1 ]
         [ cmp eq reg 1 0x00000006 ]
         [ payload load 1b @ transport header + 13 => reg 1 ]
         [ bitwise reg 1 = ( reg 1 & 0x00000012 ) ^ 0x00000000 ]
         [ cmp neq reg 1 0x00000002 ]
         [ meta load nfproto => reg 1 ]
         [ cmp eq reg 1 0x00000002 ]
         [ meta load iif => reg 1 ]
         [ payload load 4b @ network header + 12 => reg 9 ]
         [ payload load 2b @ transport header + 0 => reg 10 ]
         [ lookup reg 1 set flows_v4 ]
         [ meta load iif => reg 1 ]
         [ dynset update reg_key 1 set iif_known expr [ limit rate 1000/second burst 2000 type packets flags 0x0 ] ]
         [ counter pkts 0 bytes 0 ]
         [ log prefix apiserver-guard:block-all-v4 group 1443 snaplen 96 qthreshold 0 ]",
    );
    let r6 = rule(Family::V6, Target::ApiPort, true, LOG_1443);
    golden_exprs(
        &flow_rules(&r6).new,
        "[ meta load l4proto => reg 1 ]
         [ cmp eq reg 1 0x00000006 ]
         [ payload load 1b @ transport header + 13 => reg 1 ]
         [ bitwise reg 1 = ( reg 1 & 0x00000012 ) ^ 0x00000000 ]
         [ cmp neq reg 1 0x00000002 ]
         [ meta load nfproto => reg 1 ]
         [ cmp eq reg 1 0x0000000a ]
         [ meta load iif => reg 1 ]
         [ payload load 16b @ network header + 8 => reg 9 ]
         [ payload load 2b @ transport header + 0 => reg 13 ]
         [ lookup reg 1 set flows_v6 0x1 ]
         [ meta load iif => reg 1 ]
         [ dynset update reg_key 1 set iif_new expr [ limit rate 200/second burst 400 type packets flags 0x0 ] ]
         [ meta load iif => reg 1 ]
         [ payload load 16b @ network header + 8 => reg 9 ]
         [ payload load 2b @ transport header + 0 => reg 13 ]
         [ dynset update reg_key 1 set flows_v6 expr [ limit rate 10/second burst 20 type packets flags 0x0 ] ]
         [ counter pkts 0 bytes 0 ]
         [ log prefix apiserver-guard:block-tcp-port-v6 group 1443 snaplen 96 qthreshold 0 ]",
    );
}

#[test]
fn a_chain_taking_every_protocol_gives_tcp_past_its_meters_the_verdict_before_the_other_protocols_meter() {
    let mut p = policy(&["10.0.0.0/16"], &[], &["192.168.0.11"], Mode::Both, Action::Drop);
    p.log_group = Some(7);
    for (action, chain, ending) in [
        (Action::Drop, "block-all-v4", "[ immediate reg 0 drop ]"),
        (Action::Audit, "audit-all-v4", "[ immediate reg 0 return ]"),
    ] {
        p.action = action;
        let t = desired(&Blocklist::from_policy(&p));
        let rules = &t
            .chains
            .get(chain)
            .unwrap_or_else(|| panic!("{chain} in {:?}", t.chains.keys()))
            .rules;
        let names: Vec<String> = rules.iter().map(|r| r.comment().unwrap()).collect();
        let at = |n: &str| {
            names
                .iter()
                .position(|x| x == n)
                .unwrap_or_else(|| panic!("{n} in {names:?}"))
        };
        let unlogged = at(&format!("{chain}-tcp-unlogged"));
        assert_eq!(
            at(&format!("log-{chain}-fragment-new-source")),
            1,
            "fragments first: {names:?}"
        );
        assert!(at(&format!("log-{chain}-connect-new-source")) < at(&format!("log-{chain}-flow")));
        assert_eq!(
            at(&format!("log-{chain}-flowless")),
            at(&format!("log-{chain}-flow-new-source")) + 1
        );
        assert_eq!(unlogged, at(&format!("log-{chain}-flowless-meter-full")) + 1);
        assert_eq!(unlogged + 1, at(&format!("log-{chain}")), "{names:?}");
        assert_eq!(at(&format!("log-{chain}-meter-full")), unlogged + 3, "{names:?}");
        golden_exprs(
            &rules[unlogged].exprs,
            &format!(
                "[ meta load l4proto => reg 1 ]
                 [ cmp eq reg 1 0x00000006 ]
                 {ending}"
            ),
        );
        assert!(t.sets.contains_key("attempts_v4") && t.sets.contains_key("flows_v4"));
    }
}

#[test]
fn connect_rules_meter_syns_apart_and_end_in_the_verdict() {
    // nft --debug=netlink (1.0.6) of `tcp flags syn / syn,ack iif . ip saddr
    // @connects_v4 update @iif_known { ... } counter log ... reject with tcp reset`.
    let (r, decider) = logged_tcp_port_v4();
    let c = connect_rules(&r, verdict_exprs(&decider));
    assert_eq!(c.meter, "connects_v4");
    // A new source the full meter could not take: the new-source rule
    // without the meter's update (a break-it find), its interface's
    // allowance for new sources alone, then the log and the verdict.
    let (full, full_name) = c.full.clone().expect("a rule for a full meter");
    assert_eq!(full_name, "log-block-tcp-port-v4-connect-meter-full");
    let meter_update = |e: &Expr| matches!(e, Expr::Dynset { set, .. } if set == "connects_v4");
    let mut without_update = c.new.clone();
    let at = without_update
        .iter()
        .position(meter_update)
        .expect("the meter's update");
    // The update and its key's two loads before it.
    without_update.drain(at - 2..=at);
    assert_eq!(full, without_update);
    assert!(
        flow_rules(&r).full.is_none(),
        "the flowless rules are the flows' fallback"
    );
    assert_eq!(
        (c.name.as_str(), c.new_name.as_str()),
        (
            "log-block-tcp-port-v4-connect",
            "log-block-tcp-port-v4-connect-new-source"
        )
    );
    golden_exprs(
        &c.known[..10],
        "[ meta load l4proto => reg 1 ]
         [ cmp eq reg 1 0x00000006 ]
         [ payload load 1b @ transport header + 13 => reg 1 ]
         [ bitwise reg 1 = ( reg 1 & 0x00000012 ) ^ 0x00000000 ]
         [ cmp eq reg 1 0x00000002 ]
         [ meta load nfproto => reg 1 ]
         [ cmp eq reg 1 0x00000002 ]
         [ meta load iif => reg 1 ]
         [ payload load 4b @ network header + 12 => reg 9 ]
         [ lookup reg 1 set connects_v4 ]",
    );
    for e in [&c.known, &c.new] {
        assert_eq!(
            e.last(),
            Some(&Expr::Reject {
                kind: REJECT_TCP_RST,
                icmp_code: 0
            })
        );
    }
    // Audited: a logged connect leaves the chain (`return`), not logged twice.
    let audit = connect_rules(&r, None);
    assert_eq!(
        audit.known.last(),
        Some(&Expr::Immediate {
            dreg: REG_VERDICT,
            verdict: Verdict::Return
        })
    );
    assert!(rule_text(&RuleModel::new(c.known.clone(), "x"))
        .starts_with("tcp flags syn / syn,ack iif . ip saddr @connects_v4 update @iif_known_initiated { "));
}

/// The interface allowances each rule of a logged chain spends, by name.
fn allowances_spent(t: &TableModel, chain: &str) -> Vec<(String, Vec<String>)> {
    t.chains[chain]
        .rules
        .iter()
        .map(|r| {
            let spent = r
                .exprs
                .iter()
                .filter_map(|e| match e {
                    Expr::Dynset { set, .. } if set.starts_with("iif_") => Some(set.clone()),
                    _ => None,
                })
                .collect();
            (r.comment().unwrap_or_default(), spent)
        })
        .collect()
}

#[test]
fn only_connects_and_pushes_spend_the_interface_allowances_forged_packets_cannot_draw() {
    // A break-it find: with the flow and per-source meters full, the bare
    // ACKs forged SYNs drew from a pod spent its interface's allowance for
    // new sources and hid some of its new connects.
    let t = logged_table("192.168.0.10:5443", Action::Audit);
    let rules = allowances_spent(&t, "audit-tcp-port-v4");
    let initiated = [IIF_NEW_INITIATED_SET, IIF_KNOWN_INITIATED_SET];
    let mut seen = 0;
    for (name, spent) in &rules {
        let is_initiated = name.contains(CONNECT_SUFFIX) || name.contains(PUSH_SUFFIX);
        for set in spent {
            assert_eq!(initiated.contains(&set.as_str()), is_initiated, "{name} spends {set}");
            seen += 1;
        }
    }
    // connect: 3 rules, push: 3, fragment: 3, flow: 2, flowless: 3.
    assert_eq!(seen, 14, "{rules:?}");
    for set in initiated {
        assert!(t.sets.contains_key(set), "{set} declared");
    }
}

#[test]
fn log_rules_link_local_key_the_v6_meter_on_the_16_byte_source() {
    let rules = log_rules(&rule(Family::V6, Target::LocalPortLinkLocal, true, LOG_1443));
    assert_eq!(rules.meter, "attempts_v6");
    golden_exprs(
        &rules.known[..5],
        "[ meta load nfproto => reg 1 ]
         [ cmp eq reg 1 0x0000000a ]
         [ meta load iif => reg 1 ]
         [ payload load 16b @ network header + 8 => reg 9 ]
         [ lookup reg 1 set attempts_v6 ]",
    );
    golden_exprs(
        &rules.new[7..10],
        "[ meta load iif => reg 1 ]
         [ payload load 16b @ network header + 8 => reg 9 ]
         [ dynset update reg_key 1 set attempts_v6 expr [ limit rate 10/second burst 20 type packets flags 0x0 ] ]",
    );
}

#[test]
fn a_logged_match_is_paid_once_guard_jumps_to_a_chain_that_logs_then_decides() {
    // nft --debug=netlink of the v4_logged fixture:
    // guard: ip saddr @sources_v4 ip daddr . tcp dport @api_port_v4 counter jump block-tcp-port-v4
    // block-tcp-port-v4: the log rule, then meta l4proto tcp reject with tcp reset
    let t = logged_table("192.168.0.10:5443", Action::Reject);
    let guard = &t.chains[GUARD_CHAIN].rules;
    let jump = guard
        .iter()
        .find(|r| r.comment().as_deref() == Some("block-tcp-port-v4"))
        .unwrap();
    golden_exprs(
        &jump.exprs,
        "[ meta load nfproto => reg 1 ]
         [ cmp eq reg 1 0x00000002 ]
         [ payload load 4b @ network header + 12 => reg 1 ]
         [ lookup reg 1 set sources_v4 ]
         [ meta load l4proto => reg 1 ]
         [ cmp eq reg 1 0x00000006 ]
         [ payload load 4b @ network header + 16 => reg 1 ]
         [ payload load 2b @ transport header + 2 => reg 9 ]
         [ lookup reg 1 set api_port_v4 ]
         [ counter pkts 0 bytes 0 ]
         [ immediate reg 0 jump -> block-tcp-port-v4 ]",
    );
    let lookups = |r: &RuleModel| r.exprs.iter().filter(|e| matches!(e, Expr::Lookup { .. })).count();
    assert_eq!(
        guard.iter().map(lookups).sum::<usize>(),
        2 * guard.len(),
        "one match per rule in guard"
    );
    let decide = &t.chains["block-tcp-port-v4"];
    assert!(decide.base.is_none());
    // The log rules look up their own meter (known or new source), never a match set.
    let match_lookups = |r: &RuleModel| {
        r.exprs
            .iter()
            .filter(|e| matches!(e, Expr::Lookup { set, .. } if !["attempts_v4", "connects_v4", "pushes_v4", "flows_v4"].contains(&set.as_str())))
            .count()
    };
    assert_eq!(
        decide.rules.iter().map(match_lookups).sum::<usize>(),
        0,
        "no match repeated: {decide:?}"
    );
    assert_eq!(
        decide.rules.iter().map(|r| r.comment().unwrap()).collect::<Vec<_>>(),
        [
            "log-block-tcp-port-v4-fragment",
            "log-block-tcp-port-v4-fragment-new-source",
            "log-block-tcp-port-v4-fragment-meter-full",
            "block-tcp-port-v4-answer-rst",
            "block-tcp-port-v4-answer-syn-ack",
            "log-block-tcp-port-v4-connect",
            "log-block-tcp-port-v4-connect-new-source",
            "log-block-tcp-port-v4-connect-meter-full",
            "log-block-tcp-port-v4-push",
            "log-block-tcp-port-v4-push-new-source",
            "log-block-tcp-port-v4-push-meter-full",
            "log-block-tcp-port-v4-flow",
            "log-block-tcp-port-v4-flow-new-source",
            "log-block-tcp-port-v4-flowless",
            "log-block-tcp-port-v4-flowless-new-source",
            "log-block-tcp-port-v4-flowless-meter-full",
            "block-tcp-port-v4"
        ],
        "fragments first, then answers (nft_answers), connects, the flow log rules, the flowless ones, the verdict"
    );
    golden_exprs(
        &decide.rules.last().expect("the verdict").exprs,
        "[ meta load l4proto => reg 1 ]
         [ cmp eq reg 1 0x00000006 ]
         [ reject type 1 code 0 ]",
    );
    // Only the jump counts the packet: one counter per blocked packet under the rule's name.
    let counters = crate::core::nft_model::counters(&t);
    assert_eq!(counters.iter().filter(|c| c.comment == "block-tcp-port-v4").count(), 1);
    // Audit: the chain only logs; the packet returns to guard and goes on.
    let t = logged_table("192.168.0.10:5443", Action::Audit);
    assert_eq!(
        t.chains["audit-tcp-port-v4"]
            .rules
            .iter()
            .map(|r| r.comment().unwrap())
            .collect::<Vec<_>>(),
        [
            "log-audit-tcp-port-v4-fragment",
            "log-audit-tcp-port-v4-fragment-new-source",
            "log-audit-tcp-port-v4-fragment-meter-full",
            "audit-tcp-port-v4-answer-rst",
            "audit-tcp-port-v4-answer-syn-ack",
            "log-audit-tcp-port-v4-connect",
            "log-audit-tcp-port-v4-connect-new-source",
            "log-audit-tcp-port-v4-connect-meter-full",
            "log-audit-tcp-port-v4-push",
            "log-audit-tcp-port-v4-push-new-source",
            "log-audit-tcp-port-v4-push-meter-full",
            "log-audit-tcp-port-v4-flow",
            "log-audit-tcp-port-v4-flow-new-source",
            "log-audit-tcp-port-v4-flowless",
            "log-audit-tcp-port-v4-flowless-new-source",
            "log-audit-tcp-port-v4-flowless-meter-full"
        ]
    );
    // No log group: no chain but guard and the hooks', the verdict in guard.
    let p = policy(
        &["10.0.0.0/16"],
        &[],
        &["192.168.0.10:5443"],
        Mode::Tunnel,
        Action::Reject,
    );
    let t = desired(&Blocklist::from_policy(&p));
    assert_eq!(t.chains.keys().collect::<Vec<_>>(), ["forward", "guard"]);
}

#[test]
fn audit_rule_counts_without_a_verdict() {
    // ip saddr @sources_v4 ip daddr @api_any_v4 counter comment "audit-all-v4"
    let r = rule(Family::V4, Target::ApiAny, false, RuleVerdict::Count);
    golden(
        r,
        "[ meta load nfproto => reg 1 ]
         [ cmp eq reg 1 0x00000002 ]
         [ payload load 4b @ network header + 12 => reg 1 ]
         [ lookup reg 1 set sources_v4 ]
         [ payload load 4b @ network header + 16 => reg 1 ]
         [ lookup reg 1 set api_any_v4 ]
         [ counter pkts 0 bytes 0 ]",
    );
    // userdata = { \x00\x0daudit-all-v4\x00 }
    assert_eq!(comment_udata(&r.name()), b"\x00\x0daudit-all-v4\x00");
}

#[test]
fn the_meter_is_a_dynamic_timeout_set_per_logged_family_and_absent_without_logging() {
    let mut p = policy(&["10.0.0.0/16"], &[], &["192.168.0.1:443"], Mode::Both, Action::Reject);
    assert!(!desired(&Blocklist::from_policy(&p)).sets.contains_key("flows_v4"));
    p.log_group = Some(7);
    let t = desired(&Blocklist::from_policy(&p));
    for name in ["connects_v4", "flows_v4"] {
        let m = &t.sets[name];
        assert_eq!(m.flags, SET_F_EVAL | SET_F_TIMEOUT);
        assert_eq!((m.timeout_ms, m.size), (60_000, 65535));
        assert!(m.elements.is_empty());
    }
    assert_eq!(
        t.sets["flows_v4"].key,
        KeyType::Concat(vec![KeyType::IfaceIndex, KeyType::Ipv4Addr, KeyType::InetService]),
        "iif . ip saddr . tcp sport"
    );
    assert!(!t.sets.contains_key("flows_v6"), "no v6 rules, no v6 meter");
    assert_eq!(
        t.sets["attempts_v4"].key,
        KeyType::Concat(vec![KeyType::IfaceIndex, KeyType::Ipv4Addr]),
        "the per-source meter of fragments and flowless packets: iif . ip saddr"
    );
    let text = crate::core::nft_text::render(&t);
    assert!(
        text.contains("\t\tsize 65535\n\t\tflags dynamic,timeout\n\t\ttimeout 1m\n"),
        "{text}"
    );
}
