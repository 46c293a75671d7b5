//! nftables backend: our own `table inet apiserver_guard`, replaced whole in
//! one `nft -f` transaction and read back with `nft -j list table` (never the
//! whole ruleset). Never writes into any other table.

use super::exec::{failure, run_ok, start, Runner};
use super::Backend;
use crate::core::drift::{diff_nft, Drift};
use crate::core::model::Blocklist;
use crate::core::nft_state::{parse_table_json, Counters, NftState};
use crate::core::render_nft::{delete_script, desired_state, element_update, script, TABLE_FAMILY, TABLE_NAME};
use crate::error::Result;

pub const NFT: &str = "nft";

pub struct Nftables<'r> {
    runner: &'r dyn Runner,
}

impl<'r> Nftables<'r> {
    pub fn new(runner: &'r dyn Runner) -> Self {
        Nftables { runner }
    }

    /// Our table as read back, with its counters; None when it does not exist.
    pub fn observe(&self) -> Result<Option<(NftState, Counters)>> {
        let args = ["-j", "list", "table", TABLE_FAMILY, TABLE_NAME];
        let out = start(self.runner, NFT, &args, None)?;
        if !out.ok() {
            if out.stderr.contains("No such file or directory") {
                return Ok(None);
            }
            return Err(failure(NFT, &args, &out));
        }
        parse_table_json(&out.stdout)
            .map(Some)
            .map_err(crate::error::Error::runtime)
    }

    fn send(&self, script: &str) -> Result<()> {
        run_ok(self.runner, NFT, &["-f", "-"], Some(script)).map(|_| ())
    }

    /// Brings the table to `b`: an element update when only elements differ
    /// (falling back to the full update if it fails, e.g. because another
    /// writer changed the set meanwhile), else the full in-place update.
    fn converge(&self, b: &Blocklist, seen: Option<&NftState>) -> Result<()> {
        if let Some(update) = seen.and_then(|s| element_update(b, s)) {
            if self.send(&update).is_ok() {
                return Ok(());
            }
        }
        self.send(&script(b, seen))
    }
}

/// Differences between our table as read back (None: absent) and the blocklist.
fn drift_from(b: &Blocklist, seen: Option<&NftState>) -> Vec<Drift> {
    diff_nft(&desired_state(b), seen, &format!("{TABLE_FAMILY} {TABLE_NAME}"))
}

impl Backend for Nftables<'_> {
    fn name(&self) -> &'static str {
        "nftables"
    }

    fn render(&self, b: &Blocklist) -> String {
        script(b, None)
    }

    fn status(&self, b: &Blocklist) -> Result<Vec<Drift>> {
        Ok(drift_from(b, self.observe()?.as_ref().map(|(s, _)| s)))
    }

    fn apply(&self, b: &Blocklist) -> Result<bool> {
        let seen = self.observe()?;
        let seen = seen.as_ref().map(|(s, _)| s);
        if drift_from(b, seen).is_empty() {
            return Ok(false);
        }
        self.converge(b, seen)?;
        Ok(true)
    }

    fn install(&self, b: &Blocklist) -> Result<()> {
        let seen = self.observe()?;
        self.converge(b, seen.as_ref().map(|(s, _)| s))
    }

    fn remove(&self) -> Result<bool> {
        if !self.present()? {
            return Ok(false);
        }
        self.send(&delete_script())?;
        Ok(true)
    }

    fn blocked_counters(&self) -> Result<Option<(u64, u64)>> {
        let Some((_, counters)) = self.observe()? else {
            return Ok(None);
        };
        let blocking = counters.iter().filter(|(name, _)| name.starts_with("block-"));
        Ok(Some(blocking.fold((0, 0), |(p, b), (_, (cp, cb))| (p + cp, b + cb))))
    }

    fn present(&self) -> Result<bool> {
        let args = ["list", "table", TABLE_FAMILY, TABLE_NAME];
        let out = start(self.runner, NFT, &args, None)?;
        if out.ok() {
            Ok(true)
        } else if out.stderr.contains("No such file or directory") {
            Ok(false)
        } else {
            Err(failure(NFT, &args, &out))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::exec::fake::FakeRunner;
    use crate::core::model::tests::policy;
    use crate::core::policy::{Action, Mode};

    fn bl() -> Blocklist {
        Blocklist::from_policy(&policy(
            &["10.0.0.0/16"],
            &[],
            &["192.168.0.10:5443"],
            Mode::Tunnel,
            Action::Reject,
        ))
    }

    const ABSENT: &str = "Error: No such file or directory\nlist table inet apiserver_guard\n";

    #[test]
    fn apply_on_empty_node_sends_the_script_once() {
        let r = FakeRunner::default()
            .on("nft -j list table", 1, "", ABSENT)
            .on("nft -f -", 0, "", "");
        assert!(Nftables::new(&r).apply(&bl()).unwrap());
        let calls = r.calls();
        let sent: Vec<_> = calls.iter().filter(|(c, _)| c == "nft -f -").collect();
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].1.as_deref(), Some(script(&bl(), None).as_str()));
    }

    #[test]
    fn status_reports_missing_table() {
        let r = FakeRunner::default().on("nft -j list table", 1, "", ABSENT);
        let d = Nftables::new(&r).status(&bl()).unwrap();
        assert_eq!(d.len(), 1);
    }

    #[test]
    fn other_list_failures_are_errors() {
        let r = FakeRunner::default().on("nft -j list table", 1, "", "Error: Operation not permitted");
        let e = Nftables::new(&r).status(&bl()).unwrap_err().to_string();
        assert!(e.contains("CAP_NET_ADMIN"), "{e}");
    }

    #[test]
    fn remove_is_a_no_op_when_absent() {
        let r = FakeRunner::default().on("nft list table", 1, "", ABSENT);
        assert!(!Nftables::new(&r).remove().unwrap());
        assert!(r.calls().iter().all(|(c, _)| c != "nft -f -"));
    }
}
