//! Reads every iptables table, both variants, for rules of others that name
//! one of the hashlimit tables our rules use (`core::meter_holders` says
//! which): the kernel shares such a table by name across tables, chains and
//! variants. iptables-legacy is read only where its tables exist (reading a
//! table through the tool creates it). What cannot be read (a tool missing
//! where legacy tables exist, failing, or killed at its timeout) is
//! reported as a problem, so an incomplete look never passes for a clean one.

use super::exec::{start, Runner};
use super::iptables::{legacy_tables, tool, Variant};
use super::SharedLook;
use crate::core::meter_holders::{foreign_meter_holders, MeterHolder};
use crate::core::model::Family;

/// The rules of others naming `names` (per family: the tables our rules of
/// that family use), our chain skipped in `ours` (the variant we write).
pub fn scan(runner: &dyn Runner, ours: Variant, names: &[(Family, Vec<String>)]) -> SharedLook {
    let mut look = SharedLook::default();
    for (fam, names) in names {
        if names.is_empty() {
            continue;
        }
        for variant in [Variant::Legacy, Variant::Nft] {
            for text in saves(runner, variant, *fam, &mut look.problems) {
                look.warnings.extend(
                    foreign_meter_holders(&text, names, variant == ours)
                        .iter()
                        .map(|h| warning(variant, *fam, h)),
                );
            }
        }
    }
    look
}

/// The `-save` output of one variant and family: one per existing legacy
/// table, or one of every nft table. What fails is added to `problems`;
/// a missing `iptables-nft-save` is not (no iptables-nft rules can have
/// been written on this host then, unless from a container: see README).
fn saves(runner: &dyn Runner, variant: Variant, fam: Family, problems: &mut Vec<String>) -> Vec<String> {
    let prog = format!("{}-save", tool(variant, fam, false));
    let tables = match variant {
        Variant::Legacy => match legacy_tables(fam) {
            Ok(t) => t,
            Err(e) => {
                problems.push(e.to_string());
                return Vec::new();
            }
        },
        Variant::Nft => vec![String::new()],
    };
    let mut out = Vec::new();
    for t in &tables {
        let args: Vec<&str> = if t.is_empty() { Vec::new() } else { vec!["-t", t] };
        let shown = format!("{prog} {}", args.join(" "));
        match start(runner, &prog, &args, None) {
            Ok(o) if o.ok() => out.push(o.stdout),
            Ok(o) => problems.push(format!("`{}`: exit {}: {}", shown.trim_end(), o.code, o.stderr.trim())),
            Err(crate::error::Error::MissingTool(e)) if variant == Variant::Nft => log::debug!("{prog}: {e}"),
            Err(e) => problems.push(format!("`{}`: {e}", shown.trim_end())),
        }
    }
    out
}

/// What to tell the operator about one rule.
fn warning(variant: Variant, fam: Family, h: &MeterHolder) -> String {
    format!(
        "a rule that is not ours names our hashlimit table {} ({} {}): it shares the per-source budget of \
         our log rules, and if it created the table, the table has its size and mask (a small \
         --hashlimit-htable-max makes our log rule drop new sources' packets; in audit mode, block them); \
         remove it or rename its table",
        h.name,
        tool(variant, fam, false),
        h.spec()
    )
}
