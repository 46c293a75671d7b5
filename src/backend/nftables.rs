//! nftables backend: our own `table inet apiserver_guard`, spoken to over
//! our own nf_tables netlink socket (`nfnl`), no `nft` process. Reads are
//! dumps of our table only, decoded into the typed model and compared with
//! the table the Blocklist wants (`nft_diff`, every attribute); writes are
//! one batch (one kernel transaction) planned from that read-back
//! (`nft_plan`: in place, or elements only), or a handover through a twin
//! table when ours must be deleted and created again (`nft_ownership`).
//! Never writes into any other table. The socket is opened on first use and
//! lives as long as the backend object (the daemon's, for its whole run):
//! with table ownership it is the socket the kernel lets change the table.

use super::nfnl::{
    describe_owner, dump_table, owner_process, owner_support, port_alive, transact, BatchMsg, NfnlError, NfnlErrorKind,
    NfnlSocket, NFPROTO_INET,
};
use super::{Backend, PacketCounters};
use crate::core::drift::{diff_nft, nft_unreadable, Drift, DriftKind};
use crate::core::model::Blocklist;
use crate::core::nft_decode::{from_dump, table_owner};
use crate::core::nft_desired::desired;
use crate::core::nft_model::{counters, TableModel, TABLE_FAMILY, TABLE_F_OWNER, TABLE_NAME};
use crate::core::nft_ownership::{
    decide, ownership_drift, steps, wanted, Got, Keeper, KernelSupport, Steps, TableOwnership, TWIN_NAME,
};
use crate::core::nft_plan::{in_place, messages, Op, Plan, PlanKind};
use crate::core::nft_text::render;
use crate::core::nft_wire::retarget;
use crate::error::{Error, Result};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The `nft` binary. This backend never runs it; the iptables-nft backend
/// and its detection ask it for one chain (milliseconds where iptables-nft
/// reads whole tables).
pub const NFT: &str = "nft";

/// How often a write planned on a read-back that another writer changed
/// meanwhile is planned again.
const ATTEMPTS: usize = 3;

/// How long a table whose owner socket is closed may still name it (the
/// kernel orphans it shortly after the close) before that is an error.
const ORPHANING: Duration = Duration::from_secs(2);

/// Our table as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    Absent,
    Table(TableModel),
    /// It exists but does not decode as a table model (why).
    Unreadable(String),
}

impl Seen {
    fn got(&self, owner: Option<u32>) -> Got<'_> {
        match self {
            Seen::Absent => Got::Absent,
            Seen::Table(t) => Got::Table(t, owner),
            Seen::Unreadable(_) => Got::Unreadable,
        }
    }
}

#[derive(Default)]
pub struct Nftables {
    sock: OnceLock<NfnlSocket>,
    /// See [`Nftables::own_twin`].
    own_twin: OnceLock<String>,
    /// Set once by `take_ownership` (the daemon); one-shot commands are visitors.
    keeper: OnceLock<Keeper>,
    support: OnceLock<KernelSupport>,
    /// The owner (netlink port id) the last read of our table found.
    last_owner: Mutex<Option<u32>>,
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

    fn last_owner(&self) -> Option<u32> {
        *self.last_owner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn keeper(&self) -> Keeper {
        self.keeper.get().copied().unwrap_or(Keeper::Visitor)
    }

    /// What table flags the kernel accepts (probed once, committing nothing).
    fn support(&self) -> Result<KernelSupport> {
        if let Some(s) = self.support.get() {
            return Ok(*s);
        }
        let o = owner_support(self.sock()?).map_err(|e| kernel_error(&e, "probe table ownership on"))?;
        Ok(*self.support.get_or_init(|| KernelSupport {
            owner: o.owner,
            persist: o.persist,
        }))
    }

    /// Our table as the kernel holds it.
    pub fn observe(&self) -> Result<Seen> {
        self.read(TABLE_NAME).map(|(s, _)| s)
    }

    /// Table `name` and the netlink port id that owns it now.
    fn read(&self, name: &str) -> Result<(Seen, Option<u32>)> {
        let dump = dump_table(self.sock()?, NFPROTO_INET, name).map_err(|e| kernel_error(&e, "read"))?;
        let owner = table_owner(&dump);
        if name == TABLE_NAME {
            *self.last_owner.lock().unwrap_or_else(|p| p.into_inner()) = owner;
        }
        if dump.table.is_none() {
            return Ok((Seen::Absent, None));
        }
        Ok(match from_dump(&dump) {
            Ok(t) => (Seen::Table(t), owner),
            Err(why) => (Seen::Unreadable(why), owner),
        })
    }

    /// Our table and its owner, read again while the owner named is a
    /// socket that no longer exists (the kernel orphans a table shortly after
    /// its owner closes; a daemon that just stopped is not an owner).
    fn read_settled(&self) -> Result<(Seen, Option<u32>)> {
        let started = Instant::now();
        loop {
            let (seen, owner) = self.read(TABLE_NAME)?;
            let mine = self.sock.get().map(|s| s.port_id());
            match owner {
                Some(by) if Some(by) != mine && port_alive(by) == Some(false) && started.elapsed() < ORPHANING => {
                    std::thread::sleep(Duration::from_millis(5))
                }
                _ => return Ok((seen, owner)),
            }
        }
    }

    /// Sends `ops` as one batch on table `name`: `Ok(Err(refusal))` when the kernel refused it.
    fn send_to(&self, name: &str, ops: &[Op]) -> Result<std::result::Result<(), NfnlError>> {
        let mut msgs = messages(ops);
        if name != TABLE_NAME {
            msgs = retarget(msgs, name);
        }
        Ok(transact(self.sock()?, BatchMsg::all(NFPROTO_INET, msgs)))
    }

    fn send(&self, ops: &[Op]) -> Result<std::result::Result<(), NfnlError>> {
        self.send_to(TABLE_NAME, ops)
    }

    /// Reads, plans and sends until the kernel takes the transaction;
    /// returns whether anything had to change. An element-only batch the
    /// kernel refuses (another writer changed the set meanwhile) falls back
    /// to the in-place one; a batch refused because the table changed since
    /// the read is planned again on a new read.
    fn apply_table(&self, want: &TableModel) -> Result<bool> {
        let keeper = self.keeper();
        let me = self.sock()?.port_id();
        let mut last = None;
        let mut elements_refused = false;
        for _ in 0..ATTEMPTS {
            let (seen, owner) = self.read_settled()?;
            let p = match steps(want, seen.got(owner), keeper, me, || self.twin_flags()) {
                Steps::Held { by } => return Err(held(by, "change")),
                Steps::Handover { twin, ours } => {
                    self.handover(&twin, &ours)?;
                    return Ok(true);
                }
                Steps::Batch(p) => match (&seen, p.kind) {
                    (Seen::Table(got), PlanKind::Elements) if elements_refused => {
                        in_place(&wanted(want, Some(got.flags), keeper), got)
                    }
                    _ => p,
                },
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

    /// Flags of a twin: owner where the kernel has it, so a twin never
    /// outlives the process that made it (plain otherwise).
    fn twin_flags(&self) -> u32 {
        match self.support() {
            Ok(s) if s.owner => TABLE_F_OWNER,
            _ => 0,
        }
    }

    /// Deletes and creates our table while a twin holds the same block:
    /// twin in, ours replaced, twin out, three transactions, so packets meet
    /// a complete block at every moment. A refused replacement keeps the
    /// twin: ours may be gone by then (deleted between the two batches), and
    /// the twin blocks until the next attempt creates ours, after which
    /// `apply` removes it.
    fn handover(&self, twin: &[Op], ours: &Plan) -> Result<()> {
        let name = self.twin_name()?;
        if let Err(e) = self.send_to(&name, twin)? {
            return Err(self.twin_refused(&name, &e));
        }
        self.send(&ours.ops)?.map_err(|e| kernel_error(&e, "replace"))?;
        self.remove_twin_named(&name).map(|_| ())
    }

    /// The twin's name: [`TWIN_NAME`], freed of a leftover; while another
    /// live process holds that name (it owns it, so nobody can delete it), a
    /// name of this socket instead, so a squatter cannot keep us from
    /// replacing our table (it would stay unowned, and the daemon not ready,
    /// for as long as the squatter lives).
    fn twin_name(&self) -> Result<String> {
        self.remove_twin()?;
        Ok(match self.read(TWIN_NAME)? {
            (Seen::Absent, _) => TWIN_NAME.to_string(),
            _ => self.own_twin()?,
        })
    }

    /// Why the kernel refused to create twin `name`: the process holding
    /// that name when there is one, rather than a guess at privileges.
    fn twin_refused(&self, name: &str, e: &NfnlError) -> Error {
        if let Ok((_, Some(by))) = self.read(name) {
            return Error::runtime(format!(
                "cannot replace table {TABLE_FAMILY} {TABLE_NAME} (it stays, unowned, still blocking): {} \
                 owns table {TABLE_FAMILY} {name}, which the handover needs; stop that process",
                describe_owner(by)
            ));
        }
        kernel_error(e, "create the handover twin of")
    }

    /// Deletes a twin table if one exists (left by an interrupted handover);
    /// returns whether there was one.
    fn remove_twin(&self) -> Result<bool> {
        let fixed = self.remove_twin_named(TWIN_NAME)?;
        // Our own name is drawn when first used: before that no table can bear it.
        let own = match self.own_twin.get() {
            Some(name) => self.remove_twin_named(name)?,
            None => false,
        };
        Ok(fixed || own)
    }

    /// This backend's own twin name, used while another process holds
    /// [`TWIN_NAME`]: a random suffix drawn once, so a squatter cannot hold it
    /// in advance (a port id or pid could be guessed). Such a twin always
    /// carries the owner flag (a squatter implies a kernel with it), so it
    /// never outlives us and nothing needs to find it by name later.
    fn own_twin(&self) -> Result<String> {
        use std::hash::{BuildHasher, Hasher};
        Ok(self
            .own_twin
            .get_or_init(|| {
                let mut h = std::collections::hash_map::RandomState::new().build_hasher();
                h.write_u32(std::process::id());
                format!("{TWIN_NAME}_{:016x}", h.finish())
            })
            .clone())
    }

    /// Deletes twin `name` unless another live socket owns it.
    fn remove_twin_named(&self, name: &str) -> Result<bool> {
        match self.read(name)? {
            (Seen::Absent, _) => Ok(false),
            (_, Some(by)) if Some(by) != self.sock.get().map(|s| s.port_id()) => Ok(false),
            _ => match self.send_to(name, &[Op::DeleteTable])? {
                Ok(()) => Ok(true),
                Err(e) if e.is(NfnlErrorKind::NotFound) => Ok(true),
                Err(e) => Err(kernel_error(&e, "delete the handover twin of")),
            },
        }
    }
}

/// Refusals that a new read-back may resolve (the table changed under us).
fn retry(e: &NfnlError) -> bool {
    matches!(
        e.kind,
        NfnlErrorKind::NotFound | NfnlErrorKind::Exists | NfnlErrorKind::Busy
    )
}

/// The refusal when another live socket owns our table: who, and what to do.
fn held(by: u32, doing: &str) -> Error {
    let owner = describe_owner(by);
    let table = format!("table {TABLE_FAMILY} {TABLE_NAME}");
    let daemon = owner_process(by).is_some_and(|p| p.comm == "apiserver-guard");
    let next = if !daemon {
        // A squatter: no apiserver-guard setting or unit helps.
        "it is not an apiserver-guard daemon: find out why it holds our table and stop it \
         (the table then goes away, or stays unowned, and apiserver-guard takes it over)"
    } else if doing == "remove" {
        "stop it first (systemctl stop apiserver-guard, or take the DaemonSet off this node): \
         the table then stays in place, unowned, and `apiserver-guard remove` removes it"
    } else {
        "stop it first (systemctl stop apiserver-guard, or take the DaemonSet off this node), \
         or run it with --table-ownership off"
    };
    let flags = if daemon { " (flags owner, persist)" } else { "" };
    Error::runtime(format!(
        "{owner} owns {table}{flags}: only it can {doing} it, nothing was changed; {next}"
    ))
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

    /// Our table as `nft list table inet apiserver_guard` shows it once applied
    /// (without the ownership flags, which depend on who installs it).
    fn render(&self, b: &Blocklist) -> String {
        render(&desired(b))
    }

    fn status(&self, b: &Blocklist) -> Result<Vec<Drift>> {
        let want = desired(b);
        let keeper = self.keeper();
        let (seen, owner) = self.read(TABLE_NAME)?;
        let mut out = match &seen {
            Seen::Absent => diff_nft(&want, None),
            Seen::Table(got) => {
                let mut w = wanted(&want, Some(got.flags), Keeper::Visitor);
                if keeper == Keeper::Owner {
                    // Ownership is one finding of its own, not a flags difference.
                    w.flags = got.flags;
                }
                diff_nft(&w, Some(got))
            }
            Seen::Unreadable(why) => vec![nft_unreadable(why)],
        };
        let me = self.sock()?.port_id();
        out.extend(ownership_drift(keeper, &seen.got(owner), me));
        // An owned twin belongs to a live process in the middle of a handover.
        if let (Seen::Table(_) | Seen::Unreadable(_), None) = self.read(TWIN_NAME)? {
            out.push(Drift {
                object: format!("table {TABLE_FAMILY} {TWIN_NAME}"),
                problem: "left by an interrupted update (it is removed at the next apply)".into(),
                kind: DriftKind::StaleObjects,
            });
        }
        Ok(out)
    }

    fn apply(&self, b: &Blocklist) -> Result<bool> {
        let changed = self.apply_table(&desired(b))?;
        Ok(self.remove_twin()? || changed)
    }

    fn remove(&self) -> Result<bool> {
        let twin = self.remove_twin()?;
        let (seen, owner) = self.read_settled()?;
        if seen == Seen::Absent {
            return Ok(twin);
        }
        let me = self.sock()?.port_id();
        if let Some(by) = owner.filter(|o| *o != me) {
            return Err(held(by, "remove"));
        }
        match self.send(&[Op::DeleteTable])? {
            Ok(()) => Ok(true),
            // Gone meanwhile: as good.
            Err(e) if e.is(NfnlErrorKind::NotFound) => Ok(true),
            Err(e) => Err(kernel_error(&e, "delete")),
        }
    }

    fn packet_counters(&self) -> Result<Option<PacketCounters>> {
        let Seen::Table(t) = self.observe()? else {
            return Ok(None);
        };
        Ok(Some(packet_counters(&t)))
    }

    fn present(&self) -> Result<bool> {
        Ok(self.observe()? != Seen::Absent)
    }

    fn take_ownership(&self, setting: TableOwnership) -> Result<(bool, String)> {
        let support = match setting {
            TableOwnership::Off => KernelSupport {
                owner: false,
                persist: false,
            },
            TableOwnership::Auto => self.support()?,
        };
        let (keeper, why) = decide(setting, support);
        let keeper = *self.keeper.get_or_init(|| keeper);
        Ok((keeper == Keeper::Owner, why))
    }

    fn owned(&self) -> bool {
        let mine = self.sock.get().map(|s| s.port_id());
        mine.is_some() && self.last_owner() == mine
    }

    fn owner(&self) -> Option<String> {
        self.last_owner().map(describe_owner)
    }
}

/// Packets and bytes of our blocking rules (comments `block-...`) and,
/// apart, of our audit rules (`audit-...`); log rules and exemptions are neither.
pub fn packet_counters(t: &TableModel) -> PacketCounters {
    let all = counters(t);
    let sum = |prefix: &str| {
        all.iter()
            .filter(|c| c.comment.starts_with(prefix))
            .fold((0, 0), |(p, b), c| (p + c.packets, b + c.bytes))
    };
    PacketCounters {
        blocked: sum("block-"),
        audited: sum("audit-"),
    }
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

    /// Our table for `action` (with log rules), every counter at 2 packets and 120 bytes.
    fn counted(action: crate::core::policy::Action) -> TableModel {
        use crate::core::model::tests::policy;
        use crate::core::nft_model::Expr;
        use crate::core::policy::Mode;
        let mut p = policy(
            &["10.0.0.0/16"],
            &["10.0.9.0/24"],
            &["192.168.0.11"],
            Mode::Both,
            action,
        );
        p.log_group = Some(1443);
        let mut t = desired(&Blocklist::from_policy(&p));
        for r in &mut t.chains.get_mut("guard").unwrap().rules {
            for e in &mut r.exprs {
                if let Expr::Counter(c) = e {
                    c.packets = 2;
                    c.bytes = 120;
                }
            }
        }
        t
    }

    #[test]
    fn counters_of_the_block_rules_are_summed() {
        let t = counted(crate::core::policy::Action::Drop);
        let blocks = rule_counters(&t).keys().filter(|k| k.starts_with("block-")).count() as u64;
        assert!(blocks >= 1);
        let c = packet_counters(&t);
        assert_eq!((c.blocked, c.audited), ((2 * blocks, 120 * blocks), (0, 0)));
        assert!(
            !rule_counters(&t).contains_key("exempt-v4"),
            "exempt rules count nothing"
        );
    }

    #[test]
    fn audit_rules_are_counted_apart_never_as_blocked_and_log_rules_not_at_all() {
        let t = counted(crate::core::policy::Action::Audit);
        let names: Vec<String> = rule_counters(&t).into_keys().collect();
        let audits = names.iter().filter(|k| k.starts_with("audit-")).count() as u64;
        assert!(
            audits >= 1 && names.iter().any(|k| k.starts_with("log-audit-")),
            "{names:?}"
        );
        let c = packet_counters(&t);
        assert_eq!(c.blocked, (0, 0), "audit mode blocks nothing");
        assert_eq!(
            c.audited,
            (2 * audits, 120 * audits),
            "the log rules' counters are not added"
        );
    }
}
