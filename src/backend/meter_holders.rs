//! Reads every iptables table, both variants, for rules of others that name
//! one of our hashlimit tables (`core::meter_holders` says which): the
//! kernel shares such a table by name across tables, chains and variants.
//! iptables-legacy is read only where its tables exist (reading a table
//! through the tool creates it); a tool that is missing or fails is skipped
//! (this is a warning about someone else's rule, never a reason to stop).

use super::exec::{start, Runner};
use super::iptables::{legacy_tables, tool, Variant};
use crate::core::meter_holders::{foreign_meter_holders, MeterHolder};
use crate::core::model::Family;

/// The foreign rules naming our hashlimit tables in `families`, each with
/// the variant it was read from (`iptables-legacy`, `iptables-nft`).
pub fn scan(runner: &dyn Runner, families: &[Family]) -> Vec<(Variant, Family, MeterHolder)> {
    let mut out = Vec::new();
    for &fam in families {
        for variant in [Variant::Legacy, Variant::Nft] {
            for text in saves(runner, variant, fam) {
                out.extend(foreign_meter_holders(&text).into_iter().map(|h| (variant, fam, h)));
            }
        }
    }
    out
}

/// The `-save` output of one variant and family: one per existing legacy
/// table, or one of every nft table.
fn saves(runner: &dyn Runner, variant: Variant, fam: Family) -> Vec<String> {
    let prog = format!("{}-save", tool(variant, fam, false));
    let tables = match variant {
        Variant::Legacy => legacy_tables(fam).unwrap_or_default(),
        Variant::Nft => vec![String::new()],
    };
    tables
        .iter()
        .filter_map(|t| {
            let args: Vec<&str> = if t.is_empty() { Vec::new() } else { vec!["-t", t] };
            match start(runner, &prog, &args, None) {
                Ok(out) if out.ok() => Some(out.stdout),
                Ok(out) => {
                    log::debug!("{prog} {}: exit {}: {}", args.join(" "), out.code, out.stderr.trim());
                    None
                }
                Err(e) => {
                    log::debug!("{prog}: {e}");
                    None
                }
            }
        })
        .collect()
}

/// What to tell the operator about `found` (one line each), empty when nothing was found.
pub fn warnings(found: &[(Variant, Family, MeterHolder)]) -> Vec<String> {
    found
        .iter()
        .map(|(variant, fam, h)| {
            format!(
                "a rule that is not ours names our hashlimit table {} ({} {}): it shares the per-source budget of \
                 our log rules, and if it created the table, the table has its size and mask (a small \
                 --hashlimit-htable-max makes our log rule drop new sources' packets; in audit mode, block them); \
                 remove it or rename its table",
                h.name,
                tool(*variant, *fam, false),
                h.spec()
            )
        })
        .collect()
}
