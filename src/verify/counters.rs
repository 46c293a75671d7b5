//! Packet counters of our block rules, per address family, read from this
//! (the node's) namespace before and after the probes: did our rule see the
//! probe? Every backend is read, whichever installed the block: our nftables
//! table (a netlink dump of `inet apiserver_guard`, through the backend's own
//! read-back), and our `APISERVER-GUARD` chain in iptables-nft and
//! iptables-legacy (`iptables -L APISERVER-GUARD -v -x -n`; a legacy table
//! that is not loaded is not created by looking). Parsing is pure.

use std::collections::BTreeMap;

use super::evidence::CounterReading;
use crate::backend::exec::{failure, start, Runner};
use crate::backend::iptables::{legacy_table_loaded, tool, Variant};
use crate::backend::nftables::{rule_counters, Nftables, Seen};
use crate::core::model::Family;
use crate::core::render_iptables::CHAIN;
use crate::error::Error;

/// One reading for both families.
pub type Reading = BTreeMap<Family, CounterReading>;

/// Packets counted by our nftables block rules (comments `block-...-v4|v6`), per family;
/// a family without a block rule is absent.
pub fn nft_packets(counters: &BTreeMap<String, (u64, u64)>) -> BTreeMap<Family, u64> {
    let mut out = BTreeMap::new();
    for (name, (packets, _)) in counters.iter().filter(|(n, _)| n.starts_with("block-")) {
        let fam = if name.ends_with("-v6") { Family::V6 } else { Family::V4 };
        *out.entry(fam).or_insert(0) += packets;
    }
    out
}

/// Packets counted by the REJECT and DROP rules of `iptables -L APISERVER-GUARD -v -x -n`
/// (exempt RETURNs and anything else are not the block); None when the chain holds none.
pub fn iptables_packets(listing: &str) -> Option<u64> {
    let mut found = None;
    for line in listing.lines() {
        let mut cols = line.split_whitespace();
        let (Some(packets), Some(_bytes), Some(target)) = (cols.next(), cols.next(), cols.next()) else {
            continue;
        };
        let Ok(packets) = packets.parse::<u64>() else { continue };
        if matches!(target, "REJECT" | "DROP") {
            found = Some(found.unwrap_or(0) + packets);
        }
    }
    found
}

/// Adds one backend's reading of one family into the total.
fn add(total: &mut CounterReading, part: CounterReading) {
    *total = match (std::mem::replace(total, Ok(None)), part) {
        (Err(a), Err(b)) => Err(format!("{a}; {b}")),
        (Err(e), _) | (_, Err(e)) => Err(e),
        (Ok(a), Ok(b)) => Ok(match (a, b) {
            (None, None) => None,
            (a, b) => Some(a.unwrap_or(0) + b.unwrap_or(0)),
        }),
    };
}

/// Whether our chain exists in iptables-nft, asked of `nft` (one chain, milliseconds; and
/// `iptables-nft -L` of a missing chain calls it "incompatible" in some versions). None: `nft`
/// cannot tell.
fn nft_chain_exists(runner: &dyn Runner, fam: Family) -> Option<bool> {
    let family = match fam {
        Family::V4 => "ip",
        Family::V6 => "ip6",
    };
    let out = runner
        .run(
            crate::backend::nftables::NFT,
            &["list", "chain", family, "filter", CHAIN],
            None,
        )
        .ok()?;
    if out.ok() {
        Some(true)
    } else if out.stderr.contains("No such file or directory") {
        Some(false)
    } else {
        None
    }
}

fn iptables_reading(runner: &dyn Runner, variant: Variant, fam: Family) -> CounterReading {
    let present = match variant {
        Variant::Legacy => legacy_table_loaded(fam, "filter").map_err(|e| e.to_string())?,
        Variant::Nft => nft_chain_exists(runner, fam).unwrap_or(true),
    };
    if !present {
        return Ok(None);
    }
    let prog = tool(variant, fam, false);
    let args = ["-w", "5", "-L", CHAIN, "-v", "-x", "-n"];
    match start(runner, &prog, &args, None) {
        Err(Error::MissingTool(_)) => Ok(None),
        Err(e) => Err(e.to_string()),
        Ok(out) if out.ok() => Ok(iptables_packets(&out.stdout)),
        Ok(out) if out.stderr.contains("No chain/target/match") || out.stderr.contains("does not exist") => Ok(None),
        Ok(out) => Err(failure(&prog, &args, &out).to_string()),
    }
}

/// Reads every backend once.
pub fn read(runner: &dyn Runner) -> Reading {
    let nft = match Nftables::new().observe() {
        Ok(Seen::Absent | Seen::Unreadable(_)) | Err(Error::MissingTool(_)) => Ok(BTreeMap::new()),
        Ok(Seen::Table(t)) => Ok(nft_packets(&rule_counters(&t))),
        Err(e) => Err(e.to_string()),
    };
    with_nft(nft, runner)
}

/// The nftables reading (packets per family) plus both iptables variants read with `runner`.
fn with_nft(nft: Result<BTreeMap<Family, u64>, String>, runner: &dyn Runner) -> Reading {
    let mut total: Reading = Family::ALL.iter().map(|f| (*f, Ok(None))).collect();
    for fam in Family::ALL {
        let entry = total.get_mut(&fam).expect("every family is in the total");
        add(entry, nft.as_ref().map(|m| m.get(&fam).copied()).map_err(Clone::clone));
        for variant in [Variant::Nft, Variant::Legacy] {
            add(entry, iptables_reading(runner, variant, fam));
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::exec::fake::FakeRunner;

    #[test]
    fn nft_block_rules_are_summed_per_family() {
        let c: BTreeMap<String, (u64, u64)> = [
            ("exempt-v4", (50, 1)),
            ("block-tcp-port-v4", (3, 1)),
            ("block-all-v4", (2, 1)),
            ("block-tcp-port-v6", (7, 1)),
        ]
        .into_iter()
        .map(|(n, v)| (n.to_string(), v))
        .collect();
        let m = nft_packets(&c);
        assert_eq!((m[&Family::V4], m[&Family::V6]), (5, 7));
        assert!(nft_packets(&BTreeMap::new()).is_empty());
    }

    #[test]
    fn iptables_block_rules_are_summed_and_returns_ignored() {
        let v4 = "Chain APISERVER-GUARD (1 references)
    pkts      bytes target     prot opt in     out     source               destination
      40     2400 RETURN     all  --  *      *       10.0.9.0/24          0.0.0.0/0            /* apiserver-guard */
       3      180 REJECT     tcp  --  *      *       10.0.0.0/16          192.168.0.10         tcp dpt:5443 /* apiserver-guard */ reject-with tcp-reset
       1       60 DROP       all  --  *      *       10.0.0.0/16          192.168.0.11         /* apiserver-guard */
";
        assert_eq!(iptables_packets(v4), Some(4));
        let v6 = "Chain APISERVER-GUARD (1 references)
    pkts      bytes target     prot opt in     out     source               destination
       2      160 REJECT     tcp      *      *       fd00::/48            fd01::1              tcp dpt:5443 /* apiserver-guard */ reject-with tcp-reset
";
        assert_eq!(iptables_packets(v6), Some(2));
        let empty = "Chain APISERVER-GUARD (1 references)\n    pkts      bytes target     prot opt in     out     source               destination\n";
        assert_eq!(iptables_packets(empty), None);
    }

    #[test]
    fn readings_add_up_and_errors_win() {
        let mut t: CounterReading = Ok(None);
        add(&mut t, Ok(None));
        assert_eq!(t, Ok(None));
        add(&mut t, Ok(Some(2)));
        add(&mut t, Ok(None));
        add(&mut t, Ok(Some(3)));
        assert_eq!(t, Ok(Some(5)));
        add(&mut t, Err("nft: permission denied".into()));
        add(&mut t, Ok(Some(1)));
        assert_eq!(t, Err("nft: permission denied".into()));
    }

    #[test]
    fn missing_tools_and_chains_hold_nothing() {
        let r = FakeRunner::default()
            .on("nft list chain ip filter", 1, "", "Error: No such file or directory\n")
            // nft cannot tell: iptables-nft is asked, and a missing chain holds nothing.
            .on("nft list chain ip6 filter", 1, "", "Error: Could not process rule\n")
            .on(
                "ip6tables-nft -w 5 -L",
                1,
                "",
                "ip6tables: No chain/target/match by that name.\n",
            )
            .missing("iptables-legacy")
            .missing("ip6tables-legacy");
        let got = with_nft(Ok(BTreeMap::new()), &r);
        assert_eq!((&got[&Family::V4], &got[&Family::V6]), (&Ok(None), &Ok(None)));
        // The chain exists: its counters are read with iptables.
        let listing = "Chain APISERVER-GUARD (1 references)\n pkts bytes target prot opt in out source destination\n    4  240 REJECT tcp -- * * 10.0.0.0/16 192.168.0.10 reject-with tcp-reset\n";
        let r = FakeRunner::default()
            .on(
                "nft list chain ip filter",
                0,
                "table ip filter { chain APISERVER-GUARD { } }",
                "",
            )
            .on("nft list chain ip6 filter", 1, "", "Error: No such file or directory\n")
            .on("iptables-nft -w 5 -L APISERVER-GUARD -v -x -n", 0, listing, "")
            .missing("iptables-legacy")
            .missing("ip6tables-legacy");
        let got = with_nft(Ok(BTreeMap::new()), &r);
        assert_eq!((&got[&Family::V4], &got[&Family::V6]), (&Ok(Some(4)), &Ok(None)));
    }
}
