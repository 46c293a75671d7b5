//! iptables backend, legacy or nft variant, IPv4 and IPv6: our own chain
//! `APISERVER-GUARD` in `filter`, one jump at rule 1 of OUTPUT/FORWARD,
//! written with `iptables-restore --noflush` (one transaction per family,
//! waiting on the xtables lock). Reads back with one `iptables-save -t filter`
//! per family (see `core::iptables_state`); with iptables-nft, presence
//! checks ask nf_tables for our chain alone over netlink (no process).
//! An iptables-nft `apply` that creates a family's `filter` table records it
//! (`iptables_created`); `remove` deletes such a table again once it is empty.
//! iptables-legacy is also read as bytes (`iptables_legacy_raw`,
//! `core::iptables_legacy_read`): a change its save cannot print is drift,
//! and a changed jump that `-D` by spec cannot find is taken out by bytes.

use super::exec::{failure, is_own_pid, run_ok, run_ok_with_env, start, Runner};
use super::iptables_created;
use super::iptables_legacy_raw::{self, XtablesLock};
use super::iptables_reference;
use super::nfnl::commit_watch::CommitWatch;
use super::nfnl::{
    chain_exists, delete_table_if_empty, read_chain_and_heads, table_handle, ChainRead, NfnlSocket, TableFate,
    NFPROTO_IPV4, NFPROTO_IPV6,
};
use super::{Backend, SharedLook};
use crate::core::drift::{diff_iptables, Drift};
use crate::core::iptables_legacy_read as legacy_read;
use crate::core::iptables_nft_read::{derive, dormant, heads, hidden_change, key, learn, unhooked};
use crate::core::iptables_plan::plan;
use crate::core::iptables_state::{parse_save, IptObserved, JumpState};
use crate::core::model::{Blocklist, Family};
use crate::core::nft_events::own_write_proven;
use crate::core::policy::Hook;
use crate::core::render_iptables::{desired, meter_names, IptDesired, CHAIN};
use crate::error::Result;

/// How many more times our iptables-nft objects are written when another
/// commit came with our write, to learn their bytes (see `learn_from_own_write`).
const LEARN_RETRIES: usize = 2;

/// Seconds to wait for the xtables lock (held by kube-proxy and friends).
const LOCK_WAIT: &str = "5";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    Legacy,
    Nft,
}

impl Variant {
    pub fn name(self) -> &'static str {
        match self {
            Variant::Legacy => "iptables-legacy",
            Variant::Nft => "iptables-nft",
        }
    }

    /// `nft` or `legacy`.
    pub fn suffix(self) -> &'static str {
        match self {
            Variant::Legacy => "legacy",
            Variant::Nft => "nft",
        }
    }
}

/// A lock file of our own for an iptables-legacy restore to take while we
/// hold the xtables lock for it (`XTABLES_LOCKFILE`): a memory file (no
/// path anyone else can open, hold or replace, nothing on a read-only
/// filesystem), inherited by the restore and named to it as
/// `/proc/self/fd/N`. Closed when dropped.
struct PrivateLock(std::os::fd::OwnedFd);

impl PrivateLock {
    fn new() -> Option<PrivateLock> {
        // Without MFD_CLOEXEC: the restore inherits it under the same number.
        // SAFETY: memfd_create with a NUL-terminated name; the descriptor is owned below.
        let fd = unsafe { libc::memfd_create(c"apiserver-guard-xtables-lock".as_ptr(), 0) };
        if fd < 0 {
            return None;
        }
        // SAFETY: a fresh descriptor nobody else owns.
        Some(PrivateLock(unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) }))
    }

    fn path(&self) -> String {
        format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&self.0))
    }
}

/// The tool of one variant and family, e.g. `ip6tables-legacy` (`restore`: `ip6tables-legacy-restore`).
pub fn tool(v: Variant, fam: Family, restore: bool) -> String {
    let base = match fam {
        Family::V4 => "iptables",
        Family::V6 => "ip6tables",
    };
    let r = if restore { "-restore" } else { "" };
    format!("{base}-{}{r}", v.suffix())
}

/// Legacy tables exist in a network namespace only once something made
/// them, and reading one through the tool creates it; so look at /proc
/// first. Unreadable (not root) is an error, not "absent": a monitoring job
/// must not be told the block is missing when it cannot look.
pub fn legacy_table_loaded(fam: Family, table: &str) -> Result<bool> {
    Ok(legacy_tables(fam)?.iter().any(|t| t == table))
}

/// The legacy tables that exist in this network namespace for one family
/// (none when the kernel module is not loaded), read from /proc without
/// creating anything; unreadable (not root) is an error, as above.
pub fn legacy_tables(fam: Family) -> Result<Vec<String>> {
    let file = match fam {
        Family::V4 => "/proc/self/net/ip_tables_names",
        Family::V6 => "/proc/self/net/ip6_tables_names",
    };
    match std::fs::read_to_string(file) {
        Ok(s) => Ok(s
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => Err(crate::error::Error::Privilege(format!(
            "cannot read {file} ({e}): apiserver-guard needs root or CAP_NET_ADMIN to inspect iptables-legacy"
        ))),
        Err(e) => Err(crate::error::Error::runtime(format!("cannot read {file}: {e}"))),
    }
}

/// The nfproto family of one address family's iptables-nft tables.
fn nfproto(fam: Family) -> u8 {
    match fam {
        Family::V4 => NFPROTO_IPV4,
        Family::V6 => NFPROTO_IPV6,
    }
}

pub struct Iptables<'r> {
    runner: &'r dyn Runner,
    variant: Variant,
    /// Read our objects as the kernel's bytes too (nf_tables netlink for
    /// iptables-nft, the legacy socket options for iptables-legacy); off in
    /// unit tests, whose fake runner is the only state there is.
    kernel_reads: bool,
}

impl<'r> Iptables<'r> {
    pub fn new(runner: &'r dyn Runner, variant: Variant) -> Self {
        Iptables {
            runner,
            variant,
            kernel_reads: true,
        }
    }

    /// A backend that reads back through the tools only (`runner`'s answers).
    #[cfg(test)]
    fn text_only(runner: &'r dyn Runner, variant: Variant) -> Self {
        Iptables {
            kernel_reads: false,
            ..Self::new(runner, variant)
        }
    }

    fn readable(&self, fam: Family) -> Result<bool> {
        Ok(self.variant == Variant::Nft || legacy_table_loaded(fam, "filter")?)
    }

    /// Our objects in one family, from one `iptables-save -t filter`.
    pub fn observe(&self, fam: Family) -> Result<IptObserved> {
        if !self.readable(fam)? {
            return Ok(IptObserved::default());
        }
        self.save(fam)
    }

    /// `observe` of a family known to be readable.
    fn save(&self, fam: Family) -> Result<IptObserved> {
        let prog = format!("{}-save", tool(self.variant, fam, false));
        let args = ["-t", "filter"];
        let out = start(self.runner, &prog, &args, None)?;
        if !out.ok() {
            return Err(failure(&prog, &args, &out));
        }
        parse_save(&out.stdout).map_err(|_| {
            crate::error::Error::runtime(format!(
                "`{prog}` cannot print the {} table: it holds rules written with nft that iptables cannot \
                 express (\"Table `filter' is incompatible\"), so apiserver-guard cannot read its chain back as \
                 iptables rules and changes nothing; remove those rules from the table (nft list table {}) or use the \
                 nftables backend",
                iptables_created::table_name(fam),
                iptables_created::table_name(fam)
            ))
        })
    }

    /// Our objects in one family as far as `want` needs them. With
    /// iptables-nft, read over netlink (our chain, each wanted hook chain
    /// and its rule 1, see `core::iptables_nft_read`) wherever the bytes
    /// decide; otherwise the text read-back, marked for a full rewrite (its
    /// text cannot prove the bytes) and, where the text matches but the
    /// bytes differ from the reference, naming that hidden change.
    fn observe_for(&self, fam: Family, want: Option<&IptDesired>) -> Result<IptObserved> {
        if !self.kernel_reads {
            return self.observe(fam);
        }
        if self.variant == Variant::Legacy {
            return self.observe_legacy(fam, want);
        }
        let read = self.read_ours(fam, want);
        let reference = want.and_then(|w| iptables_reference::load(Variant::Nft.suffix(), fam, &key(w)));
        if let Some(seen) = read.as_ref().ok().and_then(|r| derive(want, reference.as_ref(), r)) {
            return Ok(seen);
        }
        let mut seen = self.observe(fam)?;
        seen.rewrite_all = true;
        if let Ok(read) = &read {
            // A hook chain moved to another hook reads like the built-in one as text.
            seen.unhooked.extend(unhooked(&heads(want), read));
            seen.dormant = dormant(read);
            if let (Some(w), Some(r)) = (want, &reference) {
                if diff_iptables(Some(w), &seen, "").is_empty() {
                    seen.hidden_change = hidden_change(w, r, read);
                }
            }
        }
        Ok(seen)
    }

    /// iptables-legacy: the table's bytes decide where they can (in sync,
    /// our chain flushed or missing: no `iptables-legacy-save`); elsewhere the
    /// text read-back with the bytes folded in (`core::iptables_legacy_read`).
    /// When the bytes cannot be read, the text decides and the next write is
    /// a full one.
    fn observe_legacy(&self, fam: Family, want: Option<&IptDesired>) -> Result<IptObserved> {
        if !self.readable(fam)? {
            return Ok(IptObserved::default());
        }
        let read = iptables_legacy_raw::read(fam).map(|t| legacy_read::read(&t));
        let reference = want.and_then(|w| iptables_reference::load(Variant::Legacy.suffix(), fam, &key(w)));
        if let Some(seen) = read
            .as_ref()
            .ok()
            .and_then(|r| legacy_read::derive(want, reference.as_ref(), r))
        {
            return Ok(seen);
        }
        let mut seen = self.save(fam)?;
        match read {
            Ok(read) => legacy_read::fold(want, reference.as_ref(), &read, &mut seen),
            Err(e) => {
                log::warn!(
                    "cannot read the {} filter table as bytes ({e}): checking its text only",
                    tool(self.variant, fam, false)
                );
                seen.rewrite_all = true;
            }
        }
        Ok(seen)
    }

    /// iptables-legacy: takes out the jumps to our chain that carry our
    /// mark but are not our jump byte for byte (`-D` by spec cannot).
    fn take_out_stray_jumps(&self, lock: &XtablesLock, fam: Family) -> Result<()> {
        iptables_legacy_raw::take_out(lock, fam, |t| legacy_read::stray(&legacy_read::read(t))).map_err(|e| {
            let msg = format!(
                "cannot take the changed jumps to our chain out of the {} filter table: {e}",
                tool(self.variant, fam, false)
            );
            if e.kind() == std::io::ErrorKind::WouldBlock {
                crate::error::Error::Busy(msg)
            } else {
                crate::error::Error::runtime(msg)
            }
        })
    }

    /// iptables-legacy, after our own write of all of `want`: our chain's
    /// bytes as read now become the reference. iptables-legacy has no
    /// generation count to prove that nothing else wrote in between (see the
    /// README, "iptables read-back").
    fn learn_legacy(&self, fam: Family, want: &IptDesired) {
        match iptables_legacy_raw::read(fam) {
            Ok(t) => match legacy_read::learn(want, &legacy_read::read(&t)) {
                Some(r) => iptables_reference::store(Variant::Legacy.suffix(), fam, &r),
                None => log::debug!("our iptables-legacy objects not as written right after our write: not learnt"),
            },
            Err(e) => log::debug!("cannot read the iptables-legacy table to learn our rules: {e}"),
        }
    }

    /// After our own restore wrote all of `want` (iptables-nft): the bytes
    /// it wrote become the reference, if nothing but our own writes touched
    /// our objects since `before` (the generation read just before it): our
    /// restore was the only commit (generation + 1), or the commits `watch`
    /// heard in between (opened before that read) touched only other chains
    /// (kube-proxy's churn) or were ours. Otherwise our objects are written
    /// again, all of them, up to `LEARN_RETRIES` times, each time in one
    /// transaction that never leaves a moment without the block; without a
    /// proven write, the reference stays unlearnt and the text read-back
    /// decides (README, "iptables read-back"). Returns the read of the
    /// proven write (None without one).
    fn learn_from_own_write(
        &self,
        fam: Family,
        want: &IptDesired,
        before: Option<u32>,
        mut watch: Option<CommitWatch>,
    ) -> Option<ChainRead> {
        let mut before = before?;
        for attempt in 0..=LEARN_RETRIES {
            if attempt > 0 {
                // Our objects are as `want` after the last write: write them again.
                let ours = IptObserved {
                    chain: Some(want.rules.clone()),
                    jumps: want
                        .hooks
                        .iter()
                        .map(|h| (*h, JumpState { at_top: true, count: 1 }))
                        .collect(),
                    rewrite_all: true,
                    ..Default::default()
                };
                let payload = plan(Some(want), &ours, false)?;
                before = self.read_ours(fam, Some(want)).ok()?.generation;
                if let Err(e) = self.restore(fam, &payload) {
                    log::debug!("writing our iptables-nft objects again to learn their bytes failed: {e}");
                    return None;
                }
            }
            let after = self.read_ours(fam, Some(want)).ok()?;
            let proven = after.generation == before.wrapping_add(1)
                || watch
                    .as_mut()
                    .and_then(|w| w.until(after.generation))
                    .is_some_and(|changes| {
                        own_write_proven(changes, nfproto(fam), before, after.generation, is_own_pid)
                    });
            if proven {
                if let Some(r) = learn(want, &after) {
                    iptables_reference::store(Variant::Nft.suffix(), fam, &r);
                }
                return Some(after);
            }
        }
        log::warn!(
            "another process kept changing our iptables-nft objects around our writes ({} tries): the bytes of \
             our rules are not learnt, so checks read the whole table as text, which cannot show a match \
             iptables does not print; the next repair or apply tries again",
            LEARN_RETRIES + 1
        );
        None
    }

    /// Our chain and rule 1 of each wanted hook chain, over netlink.
    fn read_ours(&self, fam: Family, want: Option<&IptDesired>) -> std::result::Result<ChainRead, String> {
        let names: Vec<&str> = heads(want).iter().map(|h| h.iptables_chain()).collect();
        let sock = NfnlSocket::open().map_err(|e| e.to_string())?;
        read_chain_and_heads(&sock, nfproto(fam), "filter", CHAIN, &names).map_err(|e| e.to_string())
    }

    /// Whether our chain exists in one family. With iptables-nft, one
    /// nf_tables GETCHAIN over netlink asks for just that chain (one round
    /// trip, no process), where iptables-nft reads the whole table (seconds
    /// on a node with 100,000 rules); with iptables-legacy, the table's bytes
    /// (no save). The text when neither can tell.
    fn chain_exists(&self, fam: Family) -> Result<bool> {
        if !self.readable(fam)? {
            return Ok(false);
        }
        let found = match self.variant {
            Variant::Nft => NfnlSocket::open()
                .ok()
                .and_then(|sock| chain_exists(&sock, nfproto(fam), "filter", CHAIN).ok()),
            // The table's bytes, as every legacy check reads them.
            Variant::Legacy if self.kernel_reads => iptables_legacy_raw::read(fam)
                .ok()
                .map(|t| legacy_read::read(&t).chain.is_some()),
            Variant::Legacy => None,
        };
        match found {
            Some(found) => Ok(found),
            None => Ok(self.save(fam)?.chain.is_some()),
        }
    }

    fn restore(&self, fam: Family, payload: &str) -> Result<()> {
        let prog = tool(self.variant, fam, true);
        run_ok(self.runner, &prog, &["-w", LOCK_WAIT, "--noflush"], Some(payload)).map(|_| ())
    }

    /// Brings one family from `seen` to `want` (None: nothing of ours).
    /// With iptables-nft, a `filter` table that did not exist before the
    /// restore and does after is recorded as ours to delete on `remove`.
    fn apply_family(&self, fam: Family, want: Option<&IptDesired>, seen: &IptObserved) -> Result<bool> {
        if self.variant == Variant::Legacy {
            return self.apply_legacy(fam, want, seen);
        }
        let Some(payload) = plan(want, seen, true) else {
            return Ok(false);
        };
        let learnable = want.filter(|_| self.variant == Variant::Nft && self.kernel_reads);
        // Opened before the generation is read: it hears every commit after it.
        let watch = learnable.and_then(|_| CommitWatch::open().ok());
        // The read that gives the generation gives the table's handle too.
        let first = learnable.and_then(|w| self.read_ours(fam, Some(w)).ok());
        let before = match &first {
            Some(r) => Some(r.table_handle),
            None => self.nft_table_handle(fam),
        };
        self.restore(fam, &payload)?;
        let last = learnable.and_then(|w| self.learn_from_own_write(fam, w, first.map(|r| r.generation), watch));
        let after = match last {
            Some(r) => Some(r.table_handle),
            None => self.nft_table_handle(fam),
        };
        if let (Some(None), Some(Some(handle))) = (before, after) {
            // Best effort: without the record (/run read-only, as in a
            // container with a read-only root) `remove` leaves the empty
            // table behind, which is the safe side; the block is in place.
            if let Err(e) = iptables_created::record(fam, handle) {
                log::warn!(
                    "{e}: remove will leave the empty table {} behind",
                    iptables_created::table_name(fam)
                );
            }
        }
        Ok(true)
    }

    /// iptables-legacy: the restore, and stray jumps taken out by bytes:
    /// after the restore put our jump at rule 1 (so there is no moment
    /// without one), or, on removal, first (our chain cannot be deleted
    /// while anything jumps to it). Then our chain's bytes are learnt.
    ///
    /// All of it holds the xtables lock, from before the restore (which then
    /// takes a private lock file instead) to after the read that learns our
    /// chain: no iptables tool writes in between (a helper's loop of
    /// `iptables-legacy -R` on our rule got its change learnt as ours while
    /// the restore and the read took the lock one after the other).
    fn apply_legacy(&self, fam: Family, want: Option<&IptDesired>, seen: &IptObserved) -> Result<bool> {
        let payload = plan(want, seen, false);
        if !self.kernel_reads {
            if let Some(p) = &payload {
                self.restore(fam, p)?;
            }
            return Ok(payload.is_some());
        }
        let stray = !seen.stray_jumps.is_empty();
        if payload.is_none() && !stray {
            return Ok(false);
        }
        let lock = XtablesLock::acquire().map_err(|e| {
            crate::error::Error::Busy(format!(
                "cannot write the {} filter table: {e}",
                tool(self.variant, fam, false)
            ))
        })?;
        if want.is_none() && stray {
            self.take_out_stray_jumps(&lock, fam)?;
        }
        if let Some(p) = &payload {
            match PrivateLock::new() {
                Some(private) => {
                    let prog = tool(self.variant, fam, true);
                    let file = private.path();
                    let env = [("XTABLES_LOCKFILE", file.as_str())];
                    run_ok_with_env(self.runner, &prog, &["-w", LOCK_WAIT, "--noflush"], Some(p), &env)?;
                }
                None => {
                    // No memory file (memfd_create refused): the restore
                    // takes the xtables lock itself, after we let it go.
                    drop(lock);
                    self.restore(fam, p)?;
                    let lock = XtablesLock::acquire().map_err(|e| crate::error::Error::Busy(e.to_string()))?;
                    return self.finish_legacy(&lock, fam, want, stray);
                }
            }
        }
        self.finish_legacy(&lock, fam, want, stray)
    }

    /// iptables-legacy, after the restore, holding the xtables lock: stray
    /// jumps taken out, then our chain's bytes learnt.
    fn finish_legacy(&self, lock: &XtablesLock, fam: Family, want: Option<&IptDesired>, stray: bool) -> Result<bool> {
        if want.is_some() && stray {
            self.take_out_stray_jumps(lock, fam)?;
        }
        if let Some(w) = want {
            self.learn_legacy(fam, w);
        }
        Ok(true)
    }

    /// The handle of the nf_tables `filter` table of `fam` (iptables-nft
    /// only; Some(None): absent); None when netlink cannot tell: then nothing
    /// is recorded, so an unknown table is never deleted later.
    fn nft_table_handle(&self, fam: Family) -> Option<Option<u64>> {
        if self.variant != Variant::Nft {
            return None;
        }
        let sock = NfnlSocket::open().ok()?;
        table_handle(&sock, nfproto(fam), "filter").ok()
    }

    /// Deletes the `filter` tables our iptables-nft `apply` created, each
    /// only if it is empty now (the kernel decides, atomically); a table that
    /// holds someone else's objects stays, and stays recorded.
    fn drop_created_tables(&self) -> Result<bool> {
        if self.variant != Variant::Nft {
            return Ok(false);
        }
        let mut deleted = false;
        for (fam, handle) in iptables_created::recorded()? {
            let sock = NfnlSocket::open()
                .map_err(|e| crate::error::Error::runtime(format!("cannot open an nf_tables netlink socket: {e}")))?;
            let name = iptables_created::table_name(fam);
            match delete_table_if_empty(&sock, nfproto(fam), handle) {
                Ok(TableFate::Deleted) => {
                    deleted = true;
                    iptables_created::forget(fam)?;
                }
                Ok(TableFate::Absent) => iptables_created::forget(fam)?,
                Ok(TableFate::InUse) => {}
                Err(e) => {
                    return Err(crate::error::Error::runtime(format!(
                        "cannot delete the empty table {name} that apply created: {e}"
                    )))
                }
            }
        }
        Ok(deleted)
    }

    /// Puts one family back as it was read before a failed multi-family apply.
    fn roll_back(&self, fam: Family, before: &IptObserved) -> Result<bool> {
        let hooks = Hook::ALL
            .into_iter()
            .filter(|h| before.jumps.get(h).is_some_and(|j| j.count > 0))
            .collect();
        let want = before.chain.clone().map(|rules| IptDesired { rules, hooks });
        self.apply_family(fam, want.as_ref(), &self.observe(fam)?)
    }
}

impl Backend for Iptables<'_> {
    fn name(&self) -> &'static str {
        self.variant.name()
    }

    /// Only with log rules (no hashlimit table of ours otherwise): the
    /// tables our rules of each family name, looked for in both variants.
    fn shared_state(&self, b: &Blocklist) -> Option<SharedLook> {
        b.log_group?;
        let names: Vec<(Family, Vec<String>)> = [Family::V4, Family::V6]
            .into_iter()
            .map(|fam| (fam, meter_names(b, fam)))
            .collect();
        Some(super::meter_holders::scan(self.runner, self.variant, &names))
    }

    /// iptables-legacy lives outside nf_tables: no change events.
    fn emits_change_events(&self) -> bool {
        self.variant == Variant::Nft
    }

    /// Every family we want something in has learnt bytes.
    fn proven(&self, b: &Blocklist) -> bool {
        if !self.kernel_reads {
            return true;
        }
        Family::ALL
            .into_iter()
            .filter_map(|fam| desired(b, fam).map(|w| (fam, w)))
            .all(|(fam, w)| iptables_reference::load(self.variant.suffix(), fam, &key(&w)).is_some())
    }

    fn render(&self, b: &Blocklist) -> String {
        let mut out = String::new();
        for fam in Family::ALL {
            let want = desired(b, fam);
            if let Some(payload) = plan(want.as_ref(), &IptObserved::default(), false) {
                out.push_str(&format!(
                    "# sent to: {} -w {LOCK_WAIT} --noflush\n",
                    tool(self.variant, fam, true)
                ));
                out.push_str(&payload);
            }
        }
        out
    }

    fn status(&self, b: &Blocklist) -> Result<Vec<Drift>> {
        let mut drift = Vec::new();
        for fam in Family::ALL {
            let want = desired(b, fam);
            let seen = self.observe_for(fam, want.as_ref())?;
            drift.extend(diff_iptables(want.as_ref(), &seen, &tool(self.variant, fam, false)));
        }
        Ok(drift)
    }

    /// One restore transaction per family; if a later family fails, the
    /// earlier ones are put back as they were, so nothing is half-applied.
    fn apply(&self, b: &Blocklist) -> Result<bool> {
        let mut done: Vec<(Family, IptObserved)> = Vec::new();
        for fam in Family::ALL {
            let want = desired(b, fam);
            let before = self.observe_for(fam, want.as_ref())?;
            match self.apply_family(fam, want.as_ref(), &before) {
                Ok(true) => done.push((fam, before)),
                Ok(false) => {}
                Err(e) => {
                    let undone: Vec<String> = done
                        .iter()
                        .map(|(f, prev)| match self.roll_back(*f, prev) {
                            Ok(_) => format!("{} rolled back", tool(self.variant, *f, false)),
                            Err(r) => format!("{} could NOT be rolled back: {r}", tool(self.variant, *f, false)),
                        })
                        .collect();
                    if undone.is_empty() {
                        return Err(e);
                    }
                    return Err(crate::error::Error::runtime(format!("{e} ({})", undone.join("; "))));
                }
            }
        }
        Ok(!done.is_empty())
    }

    /// Every family is read first: a rule of another chain that jumps to
    /// ours (ours cannot go while it does, and it is not ours to delete)
    /// refuses the whole removal before anything changed.
    fn remove(&self) -> Result<bool> {
        let mut seen = Vec::new();
        for fam in Family::ALL {
            // A jump cannot exist without its target chain: no chain, nothing to read.
            if !self.chain_exists(fam)? {
                continue;
            }
            let s = self.observe_for(fam, None)?;
            if let Some(rule) = s.foreign_jumps.first() {
                let t = tool(self.variant, fam, false);
                return Err(crate::error::Error::runtime(format!(
                    "cannot remove our chain {CHAIN} from table {} ({t}): a rule of another chain jumps to it \
                     ('{rule}'), and apiserver-guard does not delete other people's rules; delete that rule (`{t} -D \
                     {}`), then run remove again; nothing was changed",
                    iptables_created::table_name(fam),
                    rule.strip_prefix("-A ").unwrap_or(rule)
                )));
            }
            seen.push((fam, s));
        }
        let mut changed = false;
        for (fam, s) in &seen {
            changed |= self.apply_family(*fam, None, s)?;
        }
        if self.kernel_reads {
            for fam in Family::ALL {
                iptables_reference::forget(self.variant.suffix(), fam);
            }
        }
        Ok(self.drop_created_tables()? || changed)
    }

    fn present(&self) -> Result<bool> {
        for fam in Family::ALL {
            if self.chain_exists(fam)? {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::exec::fake::FakeRunner;
    use crate::core::model::tests::policy;
    use crate::core::policy::{Action, Hook, Mode};
    use crate::core::render_iptables::jump_line;

    fn bl() -> Blocklist {
        Blocklist::from_policy(&policy(
            &["10.0.0.0/16"],
            &[],
            &["192.168.0.10:5443"],
            Mode::Tunnel,
            Action::Reject,
        ))
    }

    #[test]
    fn foreign_rules_naming_our_hashlimit_table_are_warned_about_only_with_log_rules() {
        let foreign =
            "*mangle\n-A PREROUTING -m hashlimit --hashlimit-upto 1/sec --hashlimit-name apiserver-guard-m32 \
                       --hashlimit-htable-max 8 -j ACCEPT\nCOMMIT\n";
        let r = FakeRunner::default()
            .on("iptables-nft-save", 0, foreign, "")
            .on("ip6tables-nft-save", 0, "", "")
            .on("iptables-legacy-save", 1, "", "test: refused")
            .on("ip6tables-legacy-save", 1, "", "test: refused");
        let ipt = Iptables::text_only(&r, Variant::Nft);
        let mut logged = bl();
        logged.log_group = Some(1443);
        let look = ipt.shared_state(&logged).expect("log rules: a look");
        assert_eq!(look.warnings.len(), 1, "{look:?}");
        let w = &look.warnings[0];
        assert!(
            w.contains("apiserver-guard-m32") && w.contains("iptables-nft -t mangle -A PREROUTING"),
            "{w}"
        );
        // The policy has no IPv6: nothing of ours to share there, nothing read.
        assert!(
            !r.calls().iter().any(|(c, _)| c.starts_with("ip6tables")),
            "{:?}",
            r.calls()
        );
        let calls = r.calls().len();
        let mut unlogged = bl();
        unlogged.log_group = None;
        assert_eq!(ipt.shared_state(&unlogged), None);
        assert_eq!(r.calls().len(), calls, "no log rules, no hashlimit table: nothing read");
    }

    #[test]
    fn a_save_that_fails_makes_the_look_incomplete() {
        let r = FakeRunner::default()
            .on("iptables-nft-save", 1, "", "iptables-nft-save: killed")
            .on("iptables-legacy-save", 0, "", "");
        let mut logged = bl();
        logged.log_group = Some(1443);
        let look = Iptables::text_only(&r, Variant::Nft).shared_state(&logged).unwrap();
        assert!(look.warnings.is_empty());
        assert!(
            look.problems
                .iter()
                .any(|p| p.contains("iptables-nft-save") && p.contains("killed")),
            "{look:?}"
        );
    }

    #[test]
    fn tool_names() {
        assert_eq!(tool(Variant::Legacy, Family::V6, true), "ip6tables-legacy-restore");
        assert_eq!(tool(Variant::Nft, Family::V4, false), "iptables-nft");
    }

    #[test]
    fn fresh_apply_sends_one_restore_for_the_v4_family_only() {
        let r = FakeRunner::default()
            .on("iptables-nft-save -t filter", 0, "", "")
            .on("ip6tables-nft-save -t filter", 0, "", "")
            .on("nft list chain", 1, "", "Error: No such file or directory")
            .on("iptables-nft-restore", 0, "", "");
        assert!(Iptables::text_only(&r, Variant::Nft).apply(&bl()).unwrap());
        let restores: Vec<_> = r.calls().into_iter().filter(|(c, _)| c.contains("-restore")).collect();
        assert_eq!(restores.len(), 1);
        assert_eq!(restores[0].0, "iptables-nft-restore -w 5 --noflush");
        let payload = restores[0].1.clone().unwrap();
        assert!(
            payload.contains("-I FORWARD 1 -m comment --comment apiserver-guard -j APISERVER-GUARD"),
            "{payload}"
        );
    }

    #[test]
    fn displaced_jump_is_moved_back_to_rule_1() {
        let rules = desired(&bl(), Family::V4).unwrap().rules.join("\n");
        let save = format!(
            "*filter\n:FORWARD ACCEPT [0:0]\n:APISERVER-GUARD - [0:0]\n-A FORWARD -s 10.0.0.0/16 -j ACCEPT\n{}\n{rules}\nCOMMIT\n",
            jump_line(Hook::Forward)
        );
        let r = FakeRunner::default()
            .on("iptables-nft-save -t filter", 0, &save, "")
            .on("ip6tables-nft-save -t filter", 0, "", "")
            .on("nft list chain", 1, "", "Error: No such file or directory")
            .on("iptables-nft-restore", 0, "", "");
        let ipt = Iptables::text_only(&r, Variant::Nft);
        let drift = ipt.status(&bl()).unwrap();
        assert_eq!(drift.len(), 1, "{drift:?}");
        assert!(ipt.apply(&bl()).unwrap());
        let payload = r
            .calls()
            .into_iter()
            .find(|(c, _)| c.contains("-restore"))
            .unwrap()
            .1
            .unwrap();
        assert_eq!(
            payload,
            "*filter\n-D FORWARD -m comment --comment apiserver-guard -j APISERVER-GUARD\n\
             -I FORWARD 1 -m comment --comment apiserver-guard -j APISERVER-GUARD\nCOMMIT\n"
        );
    }

    #[test]
    fn a_failing_second_family_rolls_the_first_back() {
        let b = Blocklist::from_policy(&policy(
            &["10.0.0.0/16", "fd00::/48"],
            &[],
            &["192.168.0.10:5443", "[fd01::1]:5443"],
            Mode::Tunnel,
            Action::Reject,
        ));
        let rules = desired(&b, Family::V4).unwrap().rules.join("\n");
        let installed = format!(
            "*filter\n:FORWARD ACCEPT [0:0]\n:APISERVER-GUARD - [0:0]\n{}\n{rules}\nCOMMIT\n",
            jump_line(Hook::Forward)
        );
        let r = FakeRunner::default()
            .on("iptables-nft-save -t filter", 0, "", "") // before the install
            .on("iptables-nft-save -t filter", 0, &installed, "") // read back for the roll back
            .on("ip6tables-nft-save -t filter", 0, "", "")
            .on("iptables-nft-restore", 0, "", "")
            .on(
                "ip6tables-nft-restore",
                1,
                "",
                "ip6tables-restore: unable to initialize table 'filter'",
            );
        let e = Iptables::text_only(&r, Variant::Nft).apply(&b).unwrap_err().to_string();
        assert!(
            e.contains("unable to initialize") && e.contains("iptables-nft rolled back"),
            "{e}"
        );
        let v4: Vec<String> = r
            .calls()
            .into_iter()
            .filter(|(c, _)| c.starts_with("iptables-nft-restore"))
            .map(|(_, stdin)| stdin.unwrap())
            .collect();
        assert_eq!(v4.len(), 2, "install, then roll back: {v4:?}");
        assert!(v4[0].contains("-I FORWARD 1"));
        assert_eq!(
            v4[1],
            "*filter\n-D FORWARD -m comment --comment apiserver-guard -j APISERVER-GUARD\n-X FORWARD\n\
             -F APISERVER-GUARD\n-X APISERVER-GUARD\nCOMMIT\n",
            "back to nothing of ours"
        );
    }

    #[test]
    fn permission_denied_is_an_error_not_absence() {
        let r = FakeRunner::default().on(
            "iptables-nft-save",
            1,
            "",
            "iptables-nft-save v1.8.9 (nf_tables): Could not fetch rule set generation id: Permission denied (you must be root)",
        );
        let e = Iptables::text_only(&r, Variant::Nft)
            .status(&bl())
            .unwrap_err()
            .to_string();
        assert!(e.contains("CAP_NET_ADMIN"), "{e}");
    }

    #[test]
    fn render_is_the_fresh_install_payload() {
        let r = FakeRunner::default();
        let s = Iptables::new(&r, Variant::Legacy).render(&bl());
        assert!(
            s.starts_with("# sent to: iptables-legacy-restore -w 5 --noflush\n*filter\n:APISERVER-GUARD - [0:0]\n"),
            "{s}"
        );
        assert!(r.calls().is_empty(), "render touches nothing");
    }
}
