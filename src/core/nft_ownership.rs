//! Who holds our nftables table, decided and planned without I/O: the
//! operator's setting (`TableOwnership`), what the kernel offers
//! (`KernelSupport`), the resulting `Keeper` and why (`decide`), the finding
//! when the daemon's table is not held by its socket (`ownership_drift`),
//! and the steps from a read-back to the wanted table (`steps`): one batch,
//! or a handover through a twin table when ours must be deleted and created
//! again, so that packets always meet a complete block.
//!
//! Kernel facts this relies on (measured, `shared/notes/nf-tables-ownership.md`):
//! a table flagged `owner` can be changed or deleted only from the netlink
//! socket that created it and `nft flush ruleset` skips it; with `persist`
//! it outlives that socket as an unowned orphan that the next socket adopts
//! by sending NEWTABLE with owner|persist; the `persist` bit of a table
//! cannot be changed, and a table created without `owner` can never gain it.
//! Deleting and creating a table in one transaction lets packets through
//! during the swap (kernel 6.18), hence the twin.

use super::drift::{Drift, DriftKind};
use super::nft_model::{TableModel, TABLE_FAMILY, TABLE_F_OWNER, TABLE_F_PERSIST, TABLE_NAME};
use super::nft_plan::{plan, recreate, Op, Plan, PlanKind};
use std::fmt;
use std::str::FromStr;

/// The twin that holds the block while our table is deleted and created again.
pub const TWIN_NAME: &str = "apiserver_guard_handover";

/// The operator's setting (`--table-ownership`, `table_ownership`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TableOwnership {
    /// Own the table where the kernel can keep it through a daemon crash.
    #[default]
    Auto,
    /// Never own it (scripts that must edit our table, or a firewall manager that must flush it).
    Off,
}

impl TableOwnership {
    pub const VALUES: [&'static str; 2] = ["auto", "off"];
}

impl FromStr for TableOwnership {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(TableOwnership::Auto),
            "off" => Ok(TableOwnership::Off),
            _ => Err(format!("'{s}' is not a table ownership setting (auto or off)")),
        }
    }
}

impl fmt::Display for TableOwnership {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TableOwnership::Auto => "auto",
            TableOwnership::Off => "off",
        })
    }
}

/// The table flags the running kernel accepts (probed, not guessed from its version).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelSupport {
    /// `owner` (Linux 5.12).
    pub owner: bool,
    /// `persist` (Linux 6.9).
    pub persist: bool,
}

/// Who keeps the table, and so what a transaction may do to its ownership.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keeper {
    /// One-shot commands, and the daemon without ownership: the table's
    /// ownership bits stay as they are (they cannot change in place), and a
    /// table another live socket owns is left alone.
    Visitor,
    /// The daemon: the table must carry owner|persist with this socket as owner.
    Owner,
}

/// The keeper a daemon with `setting` is on a kernel with `support`, and
/// the sentence its log says about it.
pub fn decide(setting: TableOwnership, support: KernelSupport) -> (Keeper, String) {
    const OFF: &str = "foreign changes to it are repaired when their change event arrives";
    match (setting, support.owner, support.persist) {
        (TableOwnership::Off, ..) => (
            Keeper::Visitor,
            format!("off (--table-ownership off): the table is an ordinary one; {OFF}"),
        ),
        (_, false, _) => (
            Keeper::Visitor,
            format!("off: this kernel cannot own tables (the owner flag needs Linux 5.12); {OFF}"),
        ),
        (_, true, false) => (
            Keeper::Visitor,
            format!(
                "off: this kernel has the owner flag but not persist (Linux 6.9): an owned table would be \
                 deleted when the daemon dies, so it is not owned; {OFF}"
            ),
        ),
        (_, true, true) => (
            Keeper::Owner,
            "on: the kernel can hold the table for this daemon's netlink socket (flags owner, persist)".to_string(),
        ),
    }
}

/// Our table as read back, with its owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Got<'a> {
    Absent,
    /// The table and the netlink port id that owns it now (none: nobody).
    Table(&'a TableModel, Option<u32>),
    /// Present but not readable as a model.
    Unreadable,
}

/// The transaction(s) that bring the table to what is wanted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Steps {
    /// One batch on our table (`Nothing` when nothing differs).
    Batch(Plan),
    /// Create the twin (`twin`, ops of a table named [`TWIN_NAME`]), then
    /// delete and create ours (`ours`), then delete the twin.
    Handover { twin: Vec<Op>, ours: Plan },
    /// Another live netlink socket owns the table: nothing can change it.
    Held { by: u32 },
}

const OWNERSHIP_BITS: u32 = TABLE_F_OWNER | TABLE_F_PERSIST;

/// `want` with the flags it should be compared with against `got`: a
/// visitor accepts whatever ownership bits the table has (the daemon's
/// table is in sync for `status` when its contents are), an owner wants
/// owner|persist.
pub fn wanted(want: &TableModel, got_flags: Option<u32>, keeper: Keeper) -> TableModel {
    let mut w = want.clone();
    w.flags = (w.flags & !OWNERSHIP_BITS)
        | match keeper {
            Keeper::Visitor => got_flags.unwrap_or(0) & OWNERSHIP_BITS,
            Keeper::Owner => OWNERSHIP_BITS,
        };
    w
}

/// The steps from `got` to `want` (whose flags carry no ownership bits)
/// for `keeper` on socket `me`; `twin_flags` gives the flags of a twin (owner
/// where the kernel has it, so a twin never outlives the process that made
/// it), asked only when a handover is needed (finding out costs a probe).
pub fn steps(want: &TableModel, got: Got, keeper: Keeper, me: u32, twin_flags: impl FnOnce() -> u32) -> Steps {
    let fresh = wanted(want, None, keeper);
    let handover = |ours: &TableModel| Steps::Handover {
        twin: {
            let mut t = ours.clone();
            t.flags = twin_flags();
            plan(&t, None).ops
        },
        ours: recreate(ours),
    };
    match got {
        Got::Absent => Steps::Batch(plan(&fresh, None)),
        Got::Unreadable => handover(&fresh),
        Got::Table(_, Some(owner)) if owner != me => Steps::Held { by: owner },
        Got::Table(g, owner) => {
            let orphan = owner.is_none() && g.flags & OWNERSHIP_BITS == TABLE_F_PERSIST;
            match keeper {
                Keeper::Visitor => {
                    let w = wanted(want, Some(g.flags), keeper);
                    let p = plan(&w, Some(g));
                    if p.kind == PlanKind::Recreate {
                        handover(&fresh)
                    } else {
                        Steps::Batch(p)
                    }
                }
                // Ours already, or an orphan we adopt: NEWTABLE owner|persist
                // first, then the contents in the same transaction.
                Keeper::Owner if owner == Some(me) || orphan => {
                    let mut g = g.clone();
                    g.flags = fresh.flags;
                    let p = plan(&fresh, Some(&g));
                    match p.kind {
                        PlanKind::Recreate => handover(&fresh),
                        _ if owner == Some(me) => Steps::Batch(p),
                        _ => Steps::Batch(adopt(&fresh, p)),
                    }
                }
                // Unowned and not persistent: it can never gain the flag.
                Keeper::Owner => handover(&fresh),
            }
        }
    }
}

/// `p` preceded by the NEWTABLE that adopts an orphan (and without its own).
fn adopt(want: &TableModel, p: Plan) -> Plan {
    let mut ops = vec![Op::Table {
        flags: want.flags,
        userdata: want.userdata.clone(),
    }];
    ops.extend(p.ops.into_iter().filter(|o| !matches!(o, Op::Table { .. })));
    Plan {
        kind: PlanKind::Adopt,
        ops,
    }
}

/// For the owning daemon: the finding when the table is not held by its
/// socket `me` (None when it is, or when there is no table to hold).
pub fn ownership_drift(keeper: Keeper, got: &Got, me: u32) -> Option<Drift> {
    let Got::Table(g, owner) = got else {
        return None;
    };
    if keeper != Keeper::Owner || *owner == Some(me) {
        return None;
    }
    let problem = match owner {
        Some(p) => format!("owned by another process's netlink socket (port id {p}), not by this daemon"),
        None if g.flags & TABLE_F_PERSIST != 0 => {
            "not owned: left by an apiserver-guard daemon that stopped (it is adopted in one transaction)".to_string()
        }
        None => "not owned: created by a one-shot apply or a daemon with --table-ownership off \
                 (it is replaced by an owned one without a moment unblocked)"
            .to_string(),
    };
    Some(Drift {
        object: format!("table {TABLE_FAMILY} {TABLE_NAME}"),
        problem,
        kind: DriftKind::NotOwned,
    })
}

#[cfg(test)]
#[path = "nft_ownership_tests.rs"]
mod tests;
