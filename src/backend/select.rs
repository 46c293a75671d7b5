//! Picking the backend, and saying why: `auto` takes nftables when the
//! kernel's nf_tables answers us over netlink (no `nft` binary needed), else iptables in the variant the host already uses, detected
//! the way the `iptables-wrappers` project does (kubelet's hint chains first,
//! nft before legacy, then which variant holds more rules). Detection that the kernel refuses
//! for lack of privilege stops with "needs root or CAP_NET_ADMIN": never a
//! silent switch to another backend than root would get (the signals and
//! their order are in `detect`). An explicit
//! `--backend nftables|iptables-nft|iptables-legacy` needs no detection.

use super::detect::detection_refused;
pub use super::detect::{choose_variant, detect_variant, VariantFacts};
use super::exec::Runner;
use super::iptables::{Iptables, Variant};
use super::nftables::Nftables;
use super::Backend;
use crate::core::drift::{Drift, DriftKind};
use crate::core::policy::BackendChoice;
use crate::error::{Error, Result};

/// What asking nf_tables for our table says about using it here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NftCheck {
    /// nf_tables answers us over netlink.
    Works,
    /// The kernel has no nf_tables (or no netlink socket for it).
    Unusable,
    /// The kernel refused us: not root / no CAP_NET_ADMIN.
    Refused,
}

/// Whether nf_tables answers `nft` (a backend object) here: one dump of our
/// own table over its netlink socket (milliseconds, whatever the size of
/// the rest of the ruleset; `nft list tables` would read the whole of it).
pub fn nft_check(nft: &Nftables) -> NftCheck {
    match nft.present() {
        Ok(_) => NftCheck::Works,
        Err(Error::Privilege(_)) => NftCheck::Refused,
        Err(_) => NftCheck::Unusable,
    }
}

/// Every backend we know, for leftover cleanup.
pub fn all(runner: &dyn Runner) -> Vec<Box<dyn Backend + '_>> {
    vec![
        Box::new(Nftables::new()),
        Box::new(Iptables::new(runner, Variant::Nft)),
        Box::new(Iptables::new(runner, Variant::Legacy)),
    ]
}

/// Our objects found in the backends other than `keep` (cheap presence
/// checks; a backend that cannot be read counts as holding nothing).
pub fn leftovers(keep: &dyn Backend, runner: &dyn Runner) -> Vec<Drift> {
    all(runner)
        .iter()
        .filter(|b| b.name() != keep.name() && b.present().unwrap_or(false))
        .map(|b| Drift {
            object: b.name().to_string(),
            problem: "stale objects of ours in a backend not in use (apply removes them)".into(),
            kind: DriftKind::StaleObjects,
        })
        .collect()
}

/// Removes our objects from every backend except `keep`; returns the
/// backends that held some. A backend whose tool is not installed holds
/// nothing. On failure, says which backend could not be cleared.
pub fn remove_from_all(
    runner: &dyn Runner,
    keep: Option<&str>,
) -> std::result::Result<Vec<&'static str>, (&'static str, Error)> {
    let mut cleaned = Vec::new();
    for b in all(runner).iter().filter(|b| Some(b.name()) != keep) {
        match b.remove() {
            Ok(true) => cleaned.push(b.name()),
            Ok(false) | Err(Error::MissingTool(_)) => {}
            Err(e) => return Err((b.name(), e)),
        }
    }
    Ok(cleaned)
}

/// Removes our objects from every backend but `keep`, so a backend switch
/// never leaves an old block behind.
pub fn remove_others(keep: &dyn Backend, runner: &dyn Runner) -> Result<Vec<&'static str>> {
    remove_from_all(runner, Some(keep.name())).map_err(|(other, e)| {
        Error::runtime(format!(
            "the block is in place with {}, but stale rules of ours in {other} could not be removed: {e}",
            keep.name()
        ))
    })
}

/// The backend to use and the reason it was chosen.
pub fn select(choice: BackendChoice, runner: &dyn Runner) -> Result<(Box<dyn Backend + '_>, String)> {
    Ok(match choice {
        // No probe: `render` must work without privileges; apply/status say what they lack themselves.
        BackendChoice::Nftables => (Box::new(Nftables::new()), "chosen with --backend nftables".into()),
        BackendChoice::IptablesNft => (
            Box::new(Iptables::new(runner, Variant::Nft)),
            "chosen with --backend iptables-nft".into(),
        ),
        BackendChoice::IptablesLegacy => (
            Box::new(Iptables::new(runner, Variant::Legacy)),
            "chosen with --backend iptables-legacy".into(),
        ),
        BackendChoice::Iptables => detected_iptables(runner, "chosen with --backend iptables")?,
        BackendChoice::Auto => {
            let nft = Nftables::new();
            let check = nft_check(&nft);
            return auto(check, nft, runner);
        }
    })
}

/// `auto`: nftables when nf_tables answers, else the iptables variant the host uses.
fn auto(check: NftCheck, nft: Nftables, runner: &dyn Runner) -> Result<(Box<dyn Backend + '_>, String)> {
    match check {
        NftCheck::Works => Ok((Box::new(nft), "auto: nf_tables answers here".into())),
        NftCheck::Refused => Err(detection_refused("nf_tables (netlink)", "Operation not permitted")),
        NftCheck::Unusable => {
            let any_iptables = ["iptables-nft", "iptables-legacy"]
                .iter()
                .any(|p| runner.run(p, &["--version"], None).is_ok());
            if !any_iptables {
                return Err(Error::runtime(
                    "no firewall found: this kernel has no nf_tables and no iptables tool is installed (install iptables)",
                ));
            }
            detected_iptables(runner, "auto: this kernel has no nf_tables")
        }
    }
}

/// The iptables backend in the variant the host uses.
fn detected_iptables<'r>(runner: &'r dyn Runner, reason: &str) -> Result<(Box<dyn Backend + 'r>, String)> {
    let (v, why) = detect_variant(runner).map_err(|e| match e {
        Error::Privilege(m) if !m.starts_with("cannot tell") => Error::Privilege(format!(
            "cannot tell which iptables variant to use: {m}. To only see a rendering without privileges, \
             name the variant: --backend iptables-nft or iptables-legacy"
        )),
        other => other,
    })?;
    Ok((Box::new(Iptables::new(runner, v)), format!("{reason}; {why}")))
}

/// `select`, then a look at our own objects, so a backend this process may
/// not read is refused at once ("needs root or CAP_NET_ADMIN") instead of
/// failing at every later turn (the daemon).
pub fn select_usable(choice: BackendChoice, runner: &dyn Runner) -> Result<(Box<dyn Backend + '_>, String)> {
    let (backend, why) = select(choice, runner)?;
    match backend.present() {
        Err(e @ Error::Privilege(_)) => Err(e),
        _ => Ok((backend, why)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::exec::fake::FakeRunner;
    use crate::core::model::Family;

    /// A variant with kubelet's hint chain in IPv4 mangle (`hint`) and `rules` rules.
    fn facts(hint: bool, rules: usize) -> VariantFacts {
        VariantFacts {
            hint: hint.then_some(crate::backend::detect::Hint {
                chain: "KUBE-IPTABLES-HINT",
                table: "mangle",
                family: Family::V4,
            }),
            rules,
        }
    }

    #[test]
    fn kube_hint_wins_over_rule_counts() {
        let legacy = facts(true, 0);
        let nft = facts(false, 500);
        assert_eq!(choose_variant(legacy, nft).0, Variant::Legacy);
        assert_eq!(choose_variant(nft, legacy).0, Variant::Nft);
    }

    #[test]
    fn more_rules_wins_ties_go_to_nft() {
        let few = facts(false, 3);
        let many = facts(false, 30);
        assert_eq!(choose_variant(many, few).0, Variant::Legacy);
        assert_eq!(choose_variant(few, many).0, Variant::Nft);
        assert_eq!(choose_variant(few, few).0, Variant::Nft);
        let both = facts(true, 0);
        assert_eq!(choose_variant(both, both).0, Variant::Nft);
    }

    #[test]
    fn auto_prefers_nftables_when_nf_tables_answers() {
        let r = FakeRunner::default();
        let (b, why) = auto(NftCheck::Works, Nftables::new(), &r).unwrap();
        assert_eq!(b.name(), "nftables");
        assert!(why.contains("nf_tables answers"), "{why}");
        assert!(r.calls().is_empty(), "no tool run: {:?}", r.calls());
    }

    #[test]
    fn auto_refused_for_lack_of_privilege_stops_instead_of_switching() {
        let r = FakeRunner::default()
            .on("iptables-nft --version", 0, "iptables v1.8.9 (nf_tables)", "")
            .on("iptables-legacy --version", 0, "iptables v1.8.9 (legacy)", "");
        let e = auto(NftCheck::Refused, Nftables::new(), &r).err().expect("refused");
        assert!(matches!(e, Error::Privilege(_)), "{e}");
        let e = e.to_string();
        assert!(
            e.contains("needs root or CAP_NET_ADMIN") && e.contains("--backend nftables"),
            "{e}"
        );
        assert!(!e.contains("{") && !e.contains("Some("), "no debug text: {e}");
    }

    #[test]
    fn variant_detection_refused_for_lack_of_privilege_is_an_error() {
        let r = FakeRunner::default()
            .on("iptables-nft-save", 4, "", "iptables-nft-save v1.8.9 (nf_tables): Could not fetch rule set generation id: Permission denied (you must be root)")
            .on("iptables-legacy-save", 4, "", "iptables-legacy-save v1.8.9 (legacy): Permission denied (you must be root)")
            .on("ip6tables-legacy-save", 4, "", "ip6tables-legacy-save v1.8.9 (legacy): Permission denied (you must be root)");
        let e = detect_variant(&r).unwrap_err();
        assert!(e.to_string().contains("needs root or CAP_NET_ADMIN"), "{e}");
    }

    #[test]
    fn auto_falls_back_to_iptables_when_nf_tables_is_unusable() {
        // Every dump answered (empty but for the nft hint), so the outcome does
        // not depend on whether this test's own kernel answers over netlink.
        let r = FakeRunner::default()
            .on("iptables-nft --version", 0, "iptables v1.8.9 (nf_tables)", "")
            .on("iptables-legacy --version", 0, "iptables v1.8.9 (legacy)", "")
            .on(
                "iptables-nft-save -t mangle",
                0,
                "*mangle\n:KUBE-IPTABLES-HINT - [0:0]\nCOMMIT\n",
                "",
            )
            .on("iptables-nft-save", 0, "", "")
            .on("ip6tables-nft-save", 0, "", "")
            .on("iptables-legacy-save", 0, "", "")
            .on("ip6tables-legacy-save", 0, "", "");
        let (b, why) = auto(NftCheck::Unusable, Nftables::new(), &r).unwrap();
        assert_eq!(b.name(), "iptables-nft");
        assert!(
            why.starts_with("auto: this kernel has no nf_tables; ") && why.contains("iptables-nft"),
            "{why}"
        );
    }

    #[test]
    fn auto_without_nf_tables_or_iptables_says_what_to_install() {
        let r = FakeRunner::default().missing("iptables");
        let e = auto(NftCheck::Unusable, Nftables::new(), &r).err().unwrap().to_string();
        assert!(e.contains("install iptables"), "{e}");
    }

    #[test]
    fn explicit_nftables_runs_nothing_to_select() {
        let r = FakeRunner::default().missing("nft");
        let (b, _) = select(BackendChoice::Nftables, &r).unwrap();
        assert_eq!(b.name(), "nftables");
        assert!(r.calls().is_empty(), "selection ran {:?}", r.calls());
    }
}
