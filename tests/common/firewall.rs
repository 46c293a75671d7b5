//! `firewall_snapshot`: a normalised dump of every firewall state in a
//! namespace (nftables, iptables-legacy, ip6tables-legacy), suitable for
//! byte-identical before/after comparisons; `our_table_listing`: our own
//! nftables table alone, handles included, state left out.

use super::netns::Netns;

/// `nft -s -a list table inet apiserver_guard` (handles included, counter
/// values left out; empty when absent), without the sources the kernel adds
/// to the log rules' meter (state, like the counters): equal before and after
/// means nobody changed our table.
pub fn our_table_listing(ns: &Netns) -> String {
    String::from_utf8_lossy(
        &ns.run(&["nft", "-s", "-a", "list", "table", "inet", "apiserver_guard"])
            .stdout,
    )
    .lines()
    .filter(|l| !is_meter_element_line(l))
    .map(|l| format!("{l}\n"))
    .collect()
}

/// A line of the elements the kernel adds to our meters (`attempts_v4`,
/// `iif_new`, ...: `elements = { 10.0.1.2 limit rate 10/second burst 20
/// packets }`, continued on more lines when long): state, like counters.
fn is_meter_element_line(l: &str) -> bool {
    let end = l.trim_end();
    !l.contains("update @")
        && l.contains(" limit rate ")
        && (l.contains("elements = {") || end.ends_with("packets,") || end.ends_with("packets }"))
}

/// Concatenation of `nft --stateless list ruleset`, `iptables-legacy-save`
/// and `ip6tables-legacy-save` run in `ns`, each preceded by a header line
/// `==> <command> <==`. Lines starting with '#' (timestamps, iptables-nft
/// warnings) are removed and iptables chain counters (`[packets:bytes]`) are
/// zeroed, so traffic does not change the snapshot. iptables-nft state shows
/// up in the nft section. A failing command adds a `!! exit ...` line.
pub fn firewall_snapshot(ns: &Netns) -> String {
    const SECTIONS: [&[&str]; 3] = [
        &["nft", "--stateless", "list", "ruleset"],
        &["iptables-legacy-save"],
        &["ip6tables-legacy-save"],
    ];
    let mut snapshot = String::new();
    for argv in SECTIONS {
        snapshot.push_str(&format!("==> {} <==\n", argv.join(" ")));
        let out = ns.run(argv);
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            if line.starts_with('#') || is_meter_element_line(line) {
                continue;
            }
            snapshot.push_str(&zero_chain_counters(line));
            snapshot.push('\n');
        }
        if !out.status.success() {
            snapshot.push_str(&format!(
                "!! exit {}: {}\n",
                out.status.code().unwrap_or(-1),
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
    }
    snapshot
}

/// `:INPUT ACCEPT [12:720]` -> `:INPUT ACCEPT [0:0]`; other lines unchanged.
fn zero_chain_counters(line: &str) -> String {
    if line.starts_with(':') && line.ends_with(']') {
        if let Some(open) = line.rfind(" [") {
            return format!("{} [0:0]", &line[..open]);
        }
    }
    line.to_owned()
}
