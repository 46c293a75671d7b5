//! Golden tests against the kernel: for each shape of blocklist, the table
//! `nft -f` installed from `nft_text::render(desired(b))` in a scratch
//! network namespace, dumped by the kernel (tests/fixtures/nft/<shape>.hex,
//! recorded by scripts/nft-golden-fixtures.sh with scripts/nft-dump-hex.py)
//! and listed by nft (<shape>.list). The dump, parsed by
//! netlink-packet-netfilter and decoded by `from_dump`, must equal
//! `desired(b)`; nft's listing must equal `render` (whitespace and counter
//! values normalised); and our own messages must decode back to the model.

use super::model::tests::policy;
use super::model::Blocklist;
use super::nft_decode::{from_dump, TableDump};
use super::nft_desired::desired;
use super::nft_diff::differences;
use super::nft_text::render;
use super::nft_wire::messages;
use super::policy::{Action, Mode};
use netlink_packet_core::{Emitable, NetlinkBuffer, NetlinkMessage, NetlinkPayload, Parseable};
use netlink_packet_netfilter::nftables::NfTablesMessage;
use netlink_packet_netfilter::{NetfilterHeader, NetfilterMessage, NetfilterMessageInner, NetfilterProtoFamily};

/// The shapes the fixtures cover, by name.
pub(crate) fn shapes() -> Vec<(&'static str, Blocklist)> {
    let mut v4 = policy(
        &["10.0.0.0/16", "10.2.0.0/16", "10.4.1.0/24", "10.4.2.0/24"],
        &["10.0.9.0/24", "10.0.10.7/32"],
        &["192.168.0.10:5443", "192.168.0.12:6443", "192.168.0.11", "192.168.0.13"],
        Mode::Both,
        Action::Reject,
    );
    v4.dynamic_exempt = false;
    let mut v6_input = policy(
        &["fd00::/48"],
        &[],
        &["[fd01::1]:443", "[fd01::3]:6443"],
        Mode::Tunnel,
        Action::Reject,
    );
    v6_input.local_apiservers = v6_input.apiservers[1..].to_vec();
    let dual_drop = policy(
        &["10.0.0.0/16", "fd00::/48"],
        &["fd00:0:0:9::/64"],
        &["192.168.0.10:5443", "192.168.0.11", "[fd01::1]:443", "fd01::2"],
        Mode::Vpc,
        Action::Drop,
    );
    let mut dynamic = policy(
        &["10.0.0.0/16"],
        &[],
        &["192.168.0.10:5443"],
        Mode::Tunnel,
        Action::Reject,
    );
    dynamic.dynamic_exempt = true;
    let mut local_v4 = policy(&["10.0.0.0/8"], &[], &["192.168.0.10"], Mode::Both, Action::Reject);
    local_v4.local_apiservers = vec![crate::core::address::parse_endpoint("192.168.0.10:6443").unwrap()];
    let mut v4_logged = v4.clone();
    v4_logged.log_group = Some(crate::core::attempt_log::DEFAULT_LOG_GROUP);
    v4_logged.local_apiservers = vec![crate::core::address::parse_endpoint("192.168.0.10:5443").unwrap()];
    let mut dual_audit = policy(
        &["10.0.0.0/16", "fd00::/48"],
        &["fd00:0:0:9::/64"],
        &["192.168.0.10:5443", "192.168.0.11", "[fd01::1]:443", "fd01::2"],
        Mode::Both,
        Action::Audit,
    );
    dual_audit.log_group = Some(2);
    vec![
        ("v4_full", Blocklist::from_policy(&v4)),
        ("v4_logged", Blocklist::from_policy(&v4_logged)),
        ("dual_audit_logged", Blocklist::from_policy(&dual_audit)),
        ("v6_input_local_ports", Blocklist::from_policy(&v6_input)),
        ("dual_drop", Blocklist::from_policy(&dual_drop)),
        ("dynamic_exempt", Blocklist::from_policy(&dynamic)),
        ("v4_portless_input", Blocklist::from_policy(&local_v4)),
    ]
}

fn fixture(shape: &str, ext: &str) -> String {
    let path = format!("{}/tests/fixtures/nft/{shape}.{ext}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e} (run scripts/nft-golden-fixtures.sh)"))
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn nftables(bytes: &[u8]) -> NfTablesMessage {
    let msg = NetlinkMessage::<NetfilterMessage>::parse(&NetlinkBuffer::new(&bytes)).expect("netlink message");
    match msg.payload {
        NetlinkPayload::InnerMessage(NetfilterMessage {
            inner: NetfilterMessageInner::NfTables(m),
            ..
        }) => m,
        _ => panic!("not an nf_tables message"),
    }
}

/// A dump recorded by scripts/nft-dump-hex.py.
fn dump_of(hex: &str) -> TableDump {
    let mut d = TableDump::default();
    for line in hex.lines().filter(|l| !l.trim().is_empty()) {
        let (kind, h) = line.split_once(' ').expect("kind hex");
        let m = nftables(&unhex(h.trim()));
        match kind {
            "table" => d.table = Some(m),
            "chain" => d.chains.push(m),
            "set" => d.sets.push(m),
            "elements" => d.elements.push(m),
            "rule" => d.rules.push(m),
            k => panic!("unknown kind {k}"),
        }
    }
    d
}

/// Whitespace collapsed, counter values zeroed, elements sorted (nft lists
/// hash sets in the kernel's hash order).
fn normalise(text: &str) -> String {
    let mut text = text.to_string();
    let mut at = 0;
    while let Some(start) = text[at..].find("elements = {").map(|i| at + i + "elements = {".len()) {
        let end = start + text[start..].find('}').expect("closing brace");
        let mut items: Vec<String> = text[start..end].split(',').map(|i| i.trim().to_string()).collect();
        items.sort();
        let sorted = format!(" {} ", items.join(", "));
        text.replace_range(start..end, &sorted);
        at = start + sorted.len();
    }
    let words: Vec<&str> = text.split_whitespace().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < words.len() {
        out.push(words[i]);
        if (words[i] == "packets" || words[i] == "bytes") && i + 1 < words.len() {
            out.push("N");
            i += 1;
        }
        i += 1;
    }
    out.join(" ")
}

#[test]
#[ignore = "writes the inputs of scripts/nft-golden-fixtures.sh"]
fn write_rendered_inputs() {
    for (shape, b) in shapes() {
        let path = format!("{}/tests/fixtures/nft/{shape}.nft", env!("CARGO_MANIFEST_DIR"));
        std::fs::write(path, render(&desired(&b))).unwrap();
    }
}

#[test]
fn kernel_dumps_decode_to_the_desired_model() {
    for (shape, b) in shapes() {
        let got = from_dump(&dump_of(&fixture(shape, "hex"))).unwrap_or_else(|e| panic!("{shape}: {e}"));
        let want = desired(&b);
        let diffs: Vec<String> = differences(&want, &got).iter().map(ToString::to_string).collect();
        assert!(diffs.is_empty(), "{shape}: {diffs:#?}");
        assert_eq!(got, want, "{shape}");
    }
}

#[test]
fn nft_lists_the_table_as_render_prints_it() {
    for (shape, b) in shapes() {
        let want = desired(&b);
        assert_eq!(
            fixture(shape, "nft"),
            render(&want),
            "{shape}: stale input, rerun the script"
        );
        assert_eq!(normalise(&fixture(shape, "list")), normalise(&render(&want)), "{shape}");
    }
}

/// Our messages, emitted and parsed back as the kernel would see them.
fn through_the_wire(msgs: Vec<NfTablesMessage>) -> TableDump {
    let mut d = TableDump::default();
    for m in msgs {
        let nl = NetfilterMessage::new(NetfilterHeader::new(NetfilterProtoFamily::Inet, 0, 0), m);
        let mut msg = NetlinkMessage::from(nl);
        msg.finalize();
        let mut buf = vec![0; msg.buffer_len()];
        msg.emit(&mut buf);
        let m = nftables(&buf);
        match &m {
            NfTablesMessage::NewTable(_) => d.table = Some(m),
            NfTablesMessage::NewChain(_) => d.chains.push(m),
            NfTablesMessage::NewSet(_) => d.sets.push(m),
            NfTablesMessage::NewSetElement(_) => d.elements.push(m),
            NfTablesMessage::NewRule(_) => d.rules.push(m),
            _ => panic!("unexpected message"),
        }
    }
    d
}

#[test]
fn our_messages_decode_back_to_the_model() {
    for (shape, b) in shapes() {
        let mut want = desired(&b);
        want.flags = super::nft_model::TABLE_F_OWNER | super::nft_model::TABLE_F_PERSIST;
        let mut got = from_dump(&through_the_wire(messages(&want))).unwrap();
        // The kernel sets the base flag on base chains itself.
        for c in got.chains.values_mut().filter(|c| c.base.is_some()) {
            c.flags |= super::nft_model::CHAIN_F_BASE;
        }
        assert_eq!(got, want, "{shape}");
    }
}

#[test]
fn an_absent_table_or_orphan_objects_are_errors() {
    assert!(from_dump(&TableDump::default()).is_err());
    let mut d = dump_of(&fixture("dynamic_exempt", "hex"));
    d.chains
        .retain(|m| !matches!(m, NfTablesMessage::NewChain(c) if format!("{c:?}").contains("\"guard\"")));
    assert!(from_dump(&d).unwrap_err().contains("guard"));
}
