//! nftables backend: our own `table inet apiserver_guard`, spoken to over
//! our own nf_tables netlink socket (`nfnl`), no `nft` process. Reads are
//! dumps of our table only, decoded into the typed model and compared with
//! the table the Blocklist wants (`nft_diff`, every attribute); writes are
//! one batch (one kernel transaction) planned from that read-back
//! (`nft_plan`: in place, or elements only). Never writes into any other
//! table. The socket is opened on first use and lives as long as the
//! backend object (the daemon's, for its whole run).

use super::nfnl::{dump_table, transact, BatchMsg, NfnlError, NfnlErrorKind, NfnlSocket, NFPROTO_INET};
use super::Backend;
use crate::core::drift::{diff_nft, nft_unreadable, Drift};
use crate::core::model::Blocklist;
use crate::core::nft_decode::from_dump;
use crate::core::nft_desired::desired;
use crate::core::nft_model::{counters, TableModel, TABLE_FAMILY, TABLE_NAME};
use crate::core::nft_plan::{in_place, messages, plan, recreate, Op, PlanKind};
use crate::core::nft_text::render;
use crate::error::{Error, Result};
use std::sync::OnceLock;

/// The `nft` binary. This backend never runs it; the iptables-nft backend
/// and its detection ask it for one chain (milliseconds where iptables-nft
/// reads whole tables).
pub const NFT: &str = "nft";

/// How often a write planned on a read-back that another writer changed
/// meanwhile is planned again.
const ATTEMPTS: usize = 3;

/// Our table as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    Absent,
    Table(TableModel),
    /// It exists but does not decode as a table model (why).
    Unreadable(String),
}

#[derive(Default)]
pub struct Nftables {
    sock: OnceLock<NfnlSocket>,
}

impl Nftables {
    pub fn new() -> Self {
        Nftables::default()
    }

    /// The socket, opened on first use.
    fn sock(&self) -> Result<&NfnlSocket> {
        if let Some(s) = self.sock.get() {
            return Ok(s);
        }
        let s = NfnlSocket::open().map_err(|e| {
            Error::MissingTool(format!(
                "cannot open a netlink socket to nf_tables ({e}): this kernel has no nftables support"
            ))
        })?;
        Ok(self.sock.get_or_init(|| s))
    }

    /// Our table as the kernel holds it.
    pub fn observe(&self) -> Result<Seen> {
        let dump = dump_table(self.sock()?, NFPROTO_INET, TABLE_NAME).map_err(|e| kernel_error(&e, "read"))?;
        if dump.table.is_none() {
            return Ok(Seen::Absent);
        }
        Ok(match from_dump(&dump) {
            Ok(t) => Seen::Table(t),
            Err(why) => Seen::Unreadable(why),
        })
    }

    /// Sends `ops` as one batch: `Ok(Err(refusal))` when the kernel refused it.
    fn send(&self, ops: &[Op]) -> Result<std::result::Result<(), NfnlError>> {
        Ok(transact(self.sock()?, BatchMsg::all(NFPROTO_INET, messages(ops))))
    }

    /// Reads, plans and sends until the kernel takes the batch; returns
    /// whether anything had to change. An element-only batch the kernel
    /// refuses (another writer changed the set meanwhile) falls back to the
    /// in-place one; a batch refused because the table changed since the
    /// read is planned again on a new read.
    fn converge(&self, want: &TableModel) -> Result<bool> {
        let mut last = None;
        let mut elements_refused = false;
        for _ in 0..ATTEMPTS {
            let p = match self.observe()? {
                Seen::Absent => plan(want, None),
                Seen::Table(got) => match plan(want, Some(&got)) {
                    p if p.kind == PlanKind::Elements && elements_refused => in_place(want, &got),
                    p => p,
                },
                Seen::Unreadable(_) => recreate(want),
            };
            if p.kind == PlanKind::Nothing {
                return Ok(last.is_some());
            }
            match self.send(&p.ops)? {
                Ok(()) => return Ok(true),
                Err(e) if p.kind == PlanKind::Elements => {
                    elements_refused = true;
                    last = Some(e)
                }
                Err(e) if retry(&e) => last = Some(e),
                Err(e) => return Err(kernel_error(&e, "update")),
            }
        }
        let e = last.expect("every attempt failed");
        Err(kernel_error(&e, "update"))
    }
}

/// Refusals that a new read-back may resolve (the table changed under us).
fn retry(e: &NfnlError) -> bool {
    matches!(
        e.kind,
        NfnlErrorKind::NotFound | NfnlErrorKind::Exists | NfnlErrorKind::Busy
    )
}

/// A kernel refusal as the program's error: lack of privilege says what is needed.
fn kernel_error(e: &NfnlError, doing: &str) -> Error {
    let table = format!("table {TABLE_FAMILY} {TABLE_NAME}");
    match e.kind {
        NfnlErrorKind::PermissionDenied => Error::Privilege(format!(
            "the kernel refused to {doing} {table}: apiserver-guard needs root or CAP_NET_ADMIN ({e})"
        )),
        _ => Error::runtime(format!("cannot {doing} {table}: {e}")),
    }
}

impl Backend for Nftables {
    fn name(&self) -> &'static str {
        "nftables"
    }

    /// Our table as `nft list table inet apiserver_guard` shows it once applied.
    fn render(&self, b: &Blocklist) -> String {
        render(&desired(b))
    }

    fn status(&self, b: &Blocklist) -> Result<Vec<Drift>> {
        let want = desired(b);
        Ok(match self.observe()? {
            Seen::Absent => diff_nft(&want, None),
            Seen::Table(got) => diff_nft(&want, Some(&got)),
            Seen::Unreadable(why) => vec![nft_unreadable(&why)],
        })
    }

    fn apply(&self, b: &Blocklist) -> Result<bool> {
        self.converge(&desired(b))
    }

    fn remove(&self) -> Result<bool> {
        if !self.present()? {
            return Ok(false);
        }
        match self.send(&[Op::DeleteTable])? {
            Ok(()) => Ok(true),
            // Gone meanwhile: as good.
            Err(e) if e.is(NfnlErrorKind::NotFound) => Ok(true),
            Err(e) => Err(kernel_error(&e, "delete")),
        }
    }

    fn blocked_counters(&self) -> Result<Option<(u64, u64)>> {
        let Seen::Table(t) = self.observe()? else {
            return Ok(None);
        };
        Ok(Some(blocked(&t)))
    }

    fn present(&self) -> Result<bool> {
        Ok(self.observe()? != Seen::Absent)
    }
}

/// Packets and bytes of our blocking rules (comments `block-...`).
pub fn blocked(t: &TableModel) -> (u64, u64) {
    counters(t)
        .iter()
        .filter(|c| c.comment.starts_with("block-"))
        .fold((0, 0), |(p, b), c| (p + c.packets, b + c.bytes))
}

/// Packets and bytes of every rule of ours with a comment, by comment.
pub fn rule_counters(t: &TableModel) -> std::collections::BTreeMap<String, (u64, u64)> {
    let mut out = std::collections::BTreeMap::new();
    for c in counters(t).into_iter().filter(|c| !c.comment.is_empty()) {
        let e = out.entry(c.comment).or_insert((0, 0));
        e.0 += c.packets;
        e.1 += c.bytes;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn privilege_refusals_say_what_is_needed_in_plain_words() {
        let e = kernel_error(
            &NfnlError::new(libc::EPERM, None, "reading the table of table inet apiserver_guard"),
            "read",
        );
        assert!(matches!(e, Error::Privilege(_)));
        let s = e.to_string();
        assert!(s.contains("needs root or CAP_NET_ADMIN"), "{s}");
        assert!(!s.contains("NfnlError") && !s.contains('{'), "{s}");
        let e = kernel_error(
            &NfnlError::new(libc::ENOENT, Some(2), "message 3 of 9 (new rule)"),
            "update",
        );
        assert!(matches!(e, Error::Runtime(_)));
        assert!(e.to_string().contains("message 3 of 9"), "{e}");
    }

    #[test]
    fn a_changed_table_is_retried_other_refusals_are_not() {
        assert!(retry(&NfnlError::new(libc::ENOENT, Some(1), "x")));
        assert!(retry(&NfnlError::new(libc::EBUSY, None, "x")));
        assert!(!retry(&NfnlError::new(libc::EPERM, None, "x")));
        assert!(!retry(&NfnlError::new(libc::EINVAL, Some(0), "x")));
    }

    #[test]
    fn counters_of_the_block_rules_are_summed() {
        use crate::core::model::tests::policy;
        use crate::core::nft_model::Expr;
        use crate::core::policy::{Action, Mode};
        let p = policy(
            &["10.0.0.0/16"],
            &["10.0.9.0/24"],
            &["192.168.0.11"],
            Mode::Both,
            Action::Drop,
        );
        let mut t = desired(&Blocklist::from_policy(&p));
        for r in &mut t.chains.get_mut("guard").unwrap().rules {
            for e in &mut r.exprs {
                if let Expr::Counter(c) = e {
                    c.packets = 2;
                    c.bytes = 120;
                }
            }
        }
        let blocks = rule_counters(&t).keys().filter(|k| k.starts_with("block-")).count() as u64;
        assert!(blocks >= 1);
        assert_eq!(blocked(&t), (2 * blocks, 120 * blocks));
        assert!(
            !rule_counters(&t).contains_key("exempt-v4"),
            "exempt rules count nothing"
        );
    }
}
