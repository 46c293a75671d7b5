//! Which iptables variant (legacy or nft) the host uses, decided the way the
//! `iptables-wrappers` project decides it (kubernetes-sigs/iptables-wrappers,
//! the wrapper in every Kubernetes image that runs iptables: kube-proxy,
//! CNI plugins). The facts come from the same `-save` dumps it reads; the
//! decision is the pure [`choose_variant`].
//!
//! What iptables-wrappers does (v3, `internal/iptables/detect.go`
//! `DetectMode`, and the v2 shell wrapper in `iptables-wrapper-installer.sh`,
//! commit 70d7897, which has the same order), first match wins:
//!
//! 1. `iptables-nft-save -t mangle` has a line matching
//!    `^:(KUBE-IPTABLES-HINT|KUBE-KUBELET-CANARY)` (kubelet's hint chain,
//!    1.24+, or its canary, 1.17+; a prefix match, as the regex is not
//!    anchored at the end) -> nft;
//! 2. the same in `ip6tables-nft-save -t mangle` -> nft;
//! 3. the same in `iptables-legacy-save`, all tables (filter, nat, mangle,
//!    raw, security: it may not pass `-t mangle`, which would create the
//!    legacy table) -> legacy;
//! 4. the same in `ip6tables-legacy-save`, all tables -> legacy;
//! 5. no hint anywhere: the v2 shell wrapper (commits 70d7897 and 2a9e1a1)
//!    counts the lines starting with `-` (the `-A` rules) of
//!    `iptables-legacy-save` + `ip6tables-legacy-save` against
//!    `iptables-nft-save` + `ip6tables-nft-save` (all tables) and takes legacy
//!    only when it holds strictly more (`-gt`), else nft. v3 (the Go rewrite,
//!    commit 680003b) returns nft here without counting; the two differ only
//!    when no hint exists anywhere and legacy holds more rules, and we keep
//!    the count, so v2's own test ("old" rules: kubelet-like rules in one
//!    variant, junk in the other) is met as well as v3's.
//!
//! So a hint in nft is seen only in its mangle table, a hint in legacy in any
//! table; a hint in both variants means nft; every tool error but a refusal
//! is "nothing found" (iptables-wrappers ignores them all), while a refusal
//! for lack of privilege is an error here (the answer would be wrong).
//! Legacy tables are listed in /proc first, and a family with none is not
//! dumped at all (nothing to find, and nothing gets created or loaded).
//! Steps 1 and 2 read the chain names of nft's `ip`/`ip6 mangle` tables
//! over nf_tables netlink (one chain dump, milliseconds; iptables-nft 1.8
//! reads the whole ruleset even for `-save -t mangle`: 2 s at 100,000 foreign
//! rules), the chains that dump declares; the tool is asked only when netlink
//! cannot answer. (A `mangle` table written with `nft` in a form iptables-nft
//! cannot print would show its chains here and not to iptables-wrappers.)

use super::exec::{CmdOutput, Runner, ToolFailure};
use super::iptables::{legacy_tables, tool, Variant};
use super::nfnl::{chain_names, NfnlErrorKind, NfnlSocket, NFPROTO_IPV4, NFPROTO_IPV6};
use crate::core::model::Family;
use crate::error::{Error, Result};

/// kubelet's chains that tell which variant it uses, as iptables-wrappers
/// matches them (`rules.go`: `^:(KUBE-IPTABLES-HINT|KUBE-KUBELET-CANARY)`).
pub const HINT_CHAINS: [&str; 2] = ["KUBE-IPTABLES-HINT", "KUBE-KUBELET-CANARY"];

/// Tables named in a finding (anything else is reported as "another").
const TABLES: [&str; 5] = ["filter", "nat", "mangle", "raw", "security"];

/// Where a hint chain was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hint {
    /// The entry of [`HINT_CHAINS`] the chain's name starts with.
    pub chain: &'static str,
    /// The table holding it.
    pub table: &'static str,
    pub family: Family,
}

impl Hint {
    fn describe(&self) -> String {
        let fam = match self.family {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        };
        format!("{} chain ({} table, {fam})", self.chain, self.table)
    }
}

/// What was found about one iptables variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct VariantFacts {
    /// kubelet's hint chain where iptables-wrappers looks for one in this
    /// variant (nft: mangle; legacy: every table), IPv4 before IPv6.
    pub hint: Option<Hint>,
    /// Rules (`-` lines) of the IPv4 and IPv6 `-save` dumps, all tables;
    /// counted only when neither variant has a hint (it decides nothing then).
    pub rules: usize,
}

/// The pure decision between the variants, in iptables-wrappers' order (see
/// the module doc): hint in nft, hint in legacy, then legacy only with
/// strictly more rules. Returns the variant and why, for the operator.
pub fn choose_variant(legacy: VariantFacts, nft: VariantFacts) -> (Variant, String) {
    if let Some(h) = nft.hint {
        let also = if legacy.hint.is_some() {
            " (iptables-legacy has one too; iptables-nft is looked at first, as iptables-wrappers does)"
        } else {
            ""
        };
        return (
            Variant::Nft,
            format!("kubelet's {} is in iptables-nft{also}", h.describe()),
        );
    }
    if let Some(h) = legacy.hint {
        return (
            Variant::Legacy,
            format!("kubelet's {} is in iptables-legacy", h.describe()),
        );
    }
    if legacy.rules > nft.rules {
        (
            Variant::Legacy,
            format!(
                "no kubelet hint chain in either variant, and iptables-legacy holds more rules ({} vs {} in iptables-nft)",
                legacy.rules, nft.rules
            ),
        )
    } else {
        (
            Variant::Nft,
            format!(
                "no kubelet hint chain in either variant, and iptables-legacy holds no more rules than iptables-nft ({} vs {})",
                legacy.rules, nft.rules
            ),
        )
    }
}

/// The entry of [`HINT_CHAINS`] a chain's name starts with, if any.
fn hint_chain(name: &str) -> Option<&'static str> {
    HINT_CHAINS.iter().find(|c| name.starts_with(**c)).copied()
}

/// The first hint chain declared in an `iptables-save` dump (`:NAME ...`
/// lines, under the `*table` line they belong to).
pub fn find_hint(save: &str, family: Family) -> Option<Hint> {
    let mut table = "another";
    for line in save.lines() {
        if let Some(t) = line.strip_prefix('*') {
            table = TABLES.iter().find(|k| **k == t.trim()).copied().unwrap_or("another");
        } else if let Some(chain) = line.strip_prefix(':').and_then(hint_chain) {
            return Some(Hint { chain, table, family });
        }
    }
    None
}

/// The first hint chain among the chain names of nft's mangle table.
fn hint_in_mangle(names: &[String], family: Family) -> Option<Hint> {
    names.iter().find_map(|n| hint_chain(n)).map(|chain| Hint {
        chain,
        table: "mangle",
        family,
    })
}

/// Rules in an `iptables-save` dump: the lines starting with `-`, as
/// iptables-wrappers counts them (`grep '^-'`).
pub fn count_rules(save: &str) -> usize {
    save.lines().filter(|l| l.starts_with('-')).count()
}

/// Runs a detection probe; a refusal for lack of privilege is an error (the
/// answer would be wrong), a tool that cannot start is `None`.
pub(super) fn probe(runner: &dyn Runner, prog: &str, args: &[&str]) -> Result<Option<CmdOutput>> {
    match runner.run(prog, args, None) {
        Ok(o) if o.failure() == Some(ToolFailure::Permission) => {
            Err(detection_refused(&format!("`{prog}`"), &o.stderr))
        }
        Ok(o) => Ok(Some(o)),
        Err(_) => Ok(None),
    }
}

/// The error of a detection the kernel refused (`what`: the tool or interface asked).
pub(super) fn detection_refused(what: &str, stderr: &str) -> Error {
    Error::Privilege(format!(
        "cannot tell which firewall backend to use: {what} was refused by the kernel ({}); \
         apiserver-guard needs root or CAP_NET_ADMIN (and CAP_NET_RAW for iptables). \
         To only see a rendering without privileges, name the backend: --backend nftables, iptables-nft or iptables-legacy",
        stderr.trim().lines().next().unwrap_or("permission denied")
    ))
}

/// What a `-save` dump printed; empty when the tool is missing or failed
/// (only a refusal is an error, see `probe`).
fn dump(runner: &dyn Runner, v: Variant, fam: Family, args: &[&str]) -> Result<String> {
    let prog = format!("{}-save", tool(v, fam, false));
    Ok(probe(runner, &prog, args)?
        .filter(CmdOutput::ok)
        .map(|o| o.stdout)
        .unwrap_or_default())
}

/// What the kernel says besides the `-save` tools: the real thing in
/// `detect_variant`, stand-ins in the unit tests.
struct Kernel<'a> {
    /// Whether a family has any legacy table (a family with none is not dumped).
    legacy_loaded: &'a dyn Fn(Family) -> Result<bool>,
    /// The chain names of nft's mangle table of a family; `None` when
    /// netlink cannot answer (then `iptables-nft-save -t mangle` is asked).
    nft_mangle_chains: &'a dyn Fn(Family) -> Result<Option<Vec<String>>>,
}

/// nft's mangle chains over netlink; a refusal is an error, anything else
/// that keeps netlink from answering is `None`.
fn nft_mangle_chains(fam: Family) -> Result<Option<Vec<String>>> {
    let family = match fam {
        Family::V4 => NFPROTO_IPV4,
        Family::V6 => NFPROTO_IPV6,
    };
    let Ok(sock) = NfnlSocket::open() else {
        return Ok(None);
    };
    match chain_names(&sock, family, "mangle") {
        Ok(names) => Ok(Some(names)),
        Err(e) if e.is(NfnlErrorKind::PermissionDenied) => {
            Err(detection_refused("nf_tables (netlink)", "Operation not permitted"))
        }
        Err(_) => Ok(None),
    }
}

/// Both variants' facts, read in iptables-wrappers' order.
fn gather(runner: &dyn Runner, kernel: &Kernel) -> Result<(VariantFacts, VariantFacts)> {
    let mut nft = VariantFacts::default();
    for fam in Family::ALL {
        if nft.hint.is_none() {
            nft.hint = match (kernel.nft_mangle_chains)(fam)? {
                Some(names) => hint_in_mangle(&names, fam),
                None => find_hint(&dump(runner, Variant::Nft, fam, &["-t", "mangle"])?, fam),
            };
        }
    }
    let mut legacy = VariantFacts::default();
    for fam in Family::ALL {
        if !(kernel.legacy_loaded)(fam)? {
            continue;
        }
        let save = dump(runner, Variant::Legacy, fam, &[])?;
        legacy.hint = legacy.hint.or(find_hint(&save, fam));
        legacy.rules += count_rules(&save);
    }
    if nft.hint.is_none() && legacy.hint.is_none() {
        for fam in Family::ALL {
            nft.rules += count_rules(&dump(runner, Variant::Nft, fam, &[])?);
        }
    }
    Ok((legacy, nft))
}

/// The variant the host uses and why; an error when the kernel refuses to tell us.
pub fn detect_variant(runner: &dyn Runner) -> Result<(Variant, String)> {
    let kernel = Kernel {
        legacy_loaded: &|fam| Ok(!legacy_tables(fam)?.is_empty()),
        nft_mangle_chains: &nft_mangle_chains,
    };
    let (legacy, nft) = gather(runner, &kernel)?;
    Ok(choose_variant(legacy, nft))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::exec::fake::FakeRunner;

    fn hint(chain: &'static str, table: &'static str, family: Family) -> Option<Hint> {
        Some(Hint { chain, table, family })
    }

    const NONE: VariantFacts = VariantFacts { hint: None, rules: 0 };

    fn rules(n: usize) -> VariantFacts {
        VariantFacts { hint: None, rules: n }
    }

    fn hinted(chain: &'static str, table: &'static str, family: Family, n: usize) -> VariantFacts {
        VariantFacts {
            hint: hint(chain, table, family),
            rules: n,
        }
    }

    const HINT: &str = "KUBE-IPTABLES-HINT";
    const CANARY: &str = "KUBE-KUBELET-CANARY";

    /// Every host state of iptables-wrappers' own tests, and the corners of
    /// its order, as rows: (what, legacy facts, nft facts, variant it picks).
    #[test]
    fn host_states_of_iptables_wrappers() {
        use Family::{V4, V6};
        use Variant::{Legacy, Nft};
        let rows: Vec<(&str, VariantFacts, VariantFacts, Variant)> = vec![
            // test/test.sh (v3, and v2 "new"): `iptables-${mode} -t mangle -N
            // KUBE-IPTABLES-HINT`, junk BAD-1/BAD-2 (one rule each) in the other's filter.
            ("test.sh legacy", hinted(HINT, "mangle", V4, 0), rules(2), Legacy),
            ("test.sh nft", rules(2), hinted(HINT, "mangle", V4, 0), Nft),
            // v2 test.sh "old" (70d7897): kubelet-like rules (nat KUBE-MARK-DROP,
            // filter KUBE-FIREWALL + 2 jumps: 4 rules), no hint, junk (2) in the other.
            ("test.sh legacy old", rules(4), rules(2), Legacy),
            ("test.sh nft old", rules(2), rules(4), Nft),
            // DetectMode's order: nft v4, nft v6, legacy v4, legacy v6.
            (
                "canary in legacy mangle only",
                hinted(CANARY, "mangle", V4, 0),
                NONE,
                Legacy,
            ),
            ("hint in legacy nat", hinted(HINT, "nat", V4, 0), rules(40), Legacy),
            (
                "hint in legacy filter",
                hinted(HINT, "filter", V4, 0),
                rules(40),
                Legacy,
            ),
            (
                "IPv6-only hint in legacy",
                hinted(HINT, "mangle", V6, 0),
                rules(500),
                Legacy,
            ),
            ("IPv6-only hint in nft", rules(500), hinted(HINT, "mangle", V6, 0), Nft),
            (
                "IPv6-only canary in nft",
                rules(9),
                hinted(CANARY, "mangle", V6, 0),
                Nft,
            ),
            (
                "hints in both: nft is looked at first",
                hinted(HINT, "mangle", V4, 900),
                hinted(HINT, "mangle", V4, 0),
                Nft,
            ),
            (
                "legacy hint next to Docker's rules in nft",
                hinted(HINT, "mangle", V4, 0),
                rules(30),
                Legacy,
            ),
            // No hint: v2's count, `-gt`, ties (and nothing at all) to nft (2a9e1a1).
            ("no hint, legacy holds more", rules(5), rules(4), Legacy),
            ("no hint, equal counts", rules(4), rules(4), Nft),
            ("nothing anywhere", NONE, NONE, Nft),
        ];
        for (what, legacy, nft, want) in rows {
            let (got, why) = choose_variant(legacy, nft);
            assert_eq!(got, want, "{what}: {why}");
            assert!(
                !why.contains("Some(") && !why.contains("V4") && !why.contains("{"),
                "{what}: {why}"
            );
        }
    }

    #[test]
    fn reasons_name_the_chain_table_family_and_counts() {
        let (_, why) = choose_variant(NONE, hinted(CANARY, "mangle", Family::V6, 0));
        assert_eq!(
            why,
            "kubelet's KUBE-KUBELET-CANARY chain (mangle table, IPv6) is in iptables-nft"
        );
        let (_, why) = choose_variant(
            hinted(HINT, "nat", Family::V4, 0),
            hinted(HINT, "mangle", Family::V4, 0),
        );
        assert!(why.contains("iptables-legacy has one too"), "{why}");
        let (_, why) = choose_variant(rules(7), rules(3));
        assert!(why.contains("7 vs 3"), "{why}");
    }

    #[test]
    fn hints_are_found_in_any_table_by_prefix_like_the_regex() {
        let save = "# Generated by iptables-save v1.8.9\n*filter\n:INPUT ACCEPT [0:0]\n\
                    -A INPUT -j KUBE-IPTABLES-HINT\nCOMMIT\n*nat\n:PREROUTING ACCEPT [0:0]\n\
                    :KUBE-KUBELET-CANARY - [0:0]\nCOMMIT\n";
        assert_eq!(find_hint(save, Family::V4), hint(CANARY, "nat", Family::V4));
        // `^:(KUBE-IPTABLES-HINT|...)` also matches a longer name.
        let longer = "*mangle\n:KUBE-IPTABLES-HINT-OLD - [0:0]\nCOMMIT\n";
        assert_eq!(find_hint(longer, Family::V6), hint(HINT, "mangle", Family::V6));
        // A jump to the chain, a comment or another chain is not the chain.
        for not in [
            "*filter\n-A INPUT -j KUBE-IPTABLES-HINT\n",
            "# :KUBE-IPTABLES-HINT\n",
            "*mangle\n:KUBE-IPTABLES-HIN - [0:0]\n:XKUBE-KUBELET-CANARY - [0:0]\n",
        ] {
            assert_eq!(find_hint(not, Family::V4), None, "{not}");
        }
        assert_eq!(count_rules(save), 1);
    }

    /// A fake host: the `-save` dumps of each tool, and which legacy families have tables.
    fn host(nft4: &str, nft6: &str, legacy4: &str, legacy6: &str) -> FakeRunner {
        FakeRunner::default()
            .on("iptables-nft-save -t mangle", 0, nft4, "")
            .on("ip6tables-nft-save -t mangle", 0, nft6, "")
            .on("iptables-nft-save", 0, nft4, "")
            .on("ip6tables-nft-save", 0, nft6, "")
            .on("iptables-legacy-save", 0, legacy4, "")
            .on("ip6tables-legacy-save", 0, legacy6, "")
    }

    /// `gather` with netlink unusable (the tools answer for nft) and `legacy` saying which families have legacy tables.
    fn via_tools(r: &FakeRunner, legacy: impl Fn(Family) -> bool) -> Result<(VariantFacts, VariantFacts)> {
        let loaded = |fam| Ok(legacy(fam));
        gather(
            r,
            &Kernel {
                legacy_loaded: &loaded,
                nft_mangle_chains: &|_| Ok(None),
            },
        )
    }

    fn calls(r: &FakeRunner) -> Vec<String> {
        r.calls().into_iter().map(|(c, _)| c).collect()
    }

    const MANGLE_HINT: &str = "*mangle\n:KUBE-IPTABLES-HINT - [0:0]\nCOMMIT\n";
    const JUNK: &str = "*filter\n:BAD-1 - [0:0]\n:BAD-2 - [0:0]\n-A BAD-1 -j ACCEPT\n-A BAD-2 -j DROP\nCOMMIT\n";

    #[test]
    fn probes_follow_iptables_wrappers_order_and_skip_legacy_families_without_tables() {
        let r = host("", MANGLE_HINT, JUNK, "");
        let (legacy, nft) = via_tools(&r, |fam| fam == Family::V4).unwrap();
        assert_eq!(nft.hint, hint(HINT, "mangle", Family::V6));
        assert_eq!(legacy.rules, 2);
        assert_eq!(
            calls(&r),
            [
                "iptables-nft-save -t mangle",
                "ip6tables-nft-save -t mangle",
                "iptables-legacy-save"
            ],
            "nft mangle v4, v6; legacy v4 only (no IPv6 legacy table); no count once a hint is found"
        );
        assert_eq!(choose_variant(legacy, nft).0, Variant::Nft);
    }

    #[test]
    fn without_hints_both_variants_are_counted_over_both_families() {
        let r = host(JUNK, "", JUNK, JUNK);
        let (legacy, nft) = via_tools(&r, |_| true).unwrap();
        assert_eq!((legacy.rules, nft.rules), (4, 2));
        assert!(calls(&r).contains(&"ip6tables-nft-save".to_string()), "{:?}", calls(&r));
        assert_eq!(choose_variant(legacy, nft).0, Variant::Legacy);
    }

    #[test]
    fn a_legacy_hint_in_ipv6_only_is_found_without_a_legacy_filter_table() {
        let r = host("", "", "", MANGLE_HINT);
        let (legacy, nft) = via_tools(&r, |fam| fam == Family::V6).unwrap();
        assert_eq!(legacy.hint, hint(HINT, "mangle", Family::V6));
        assert_eq!(choose_variant(legacy, nft).0, Variant::Legacy);
    }

    #[test]
    fn failing_or_missing_tools_find_nothing_but_refusals_are_errors() {
        let r = FakeRunner::default().missing("iptables-nft-save").on(
            "ip6tables-nft-save",
            1,
            MANGLE_HINT,
            "ip6tables-nft-save: something odd",
        );
        let (legacy, nft) = via_tools(&r, |_| false).unwrap();
        assert_eq!((legacy, nft), (NONE, NONE));

        let r = FakeRunner::default().on(
            "iptables-nft-save",
            4,
            "",
            "iptables-nft-save v1.8.9 (nf_tables): Could not fetch rule set generation id: Permission denied (you must be root)",
        );
        let e = via_tools(&r, |_| false).unwrap_err();
        assert!(e.to_string().contains("needs root or CAP_NET_ADMIN"), "{e}");

        let r = host("", "", "", "");
        let kernel = Kernel {
            legacy_loaded: &|_| Err(Error::Privilege("cannot read /proc/self/net/ip_tables_names".into())),
            nft_mangle_chains: &|_| Ok(None),
        };
        let e = gather(&r, &kernel).unwrap_err();
        assert!(matches!(e, Error::Privilege(_)), "{e}");
    }

    /// nft's mangle chains come over netlink when it answers: the tool is
    /// not run for them, and a refusal there is an error too.
    #[test]
    fn nft_mangle_chains_over_netlink_spare_the_tool() {
        let r = host("", "", "", "");
        let names = |fam: Family| -> Result<Option<Vec<String>>> {
            Ok(Some(match fam {
                Family::V4 => vec!["PREROUTING".into(), "OUTPUT".into()],
                Family::V6 => vec!["PREROUTING".into(), "KUBE-KUBELET-CANARY".into()],
            }))
        };
        let kernel = Kernel {
            legacy_loaded: &|_| Ok(false),
            nft_mangle_chains: &names,
        };
        let (legacy, nft) = gather(&r, &kernel).unwrap();
        assert_eq!(nft.hint, hint(CANARY, "mangle", Family::V6));
        assert_eq!(choose_variant(legacy, nft).0, Variant::Nft);
        assert!(calls(&r).is_empty(), "{:?}", calls(&r));

        let kernel = Kernel {
            legacy_loaded: &|_| Ok(false),
            nft_mangle_chains: &|_| Err(detection_refused("nf_tables (netlink)", "Operation not permitted")),
        };
        assert!(matches!(gather(&r, &kernel), Err(Error::Privilege(_))));
    }
}
