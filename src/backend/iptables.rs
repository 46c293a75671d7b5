//! iptables backend, legacy or nft variant, IPv4 and IPv6: our own chain
//! `APISERVER-GUARD` in `filter`, one jump at rule 1 of OUTPUT/FORWARD,
//! written with `iptables-restore --noflush` (one transaction per family,
//! waiting on the xtables lock). Reads back our chain and rule 1 of each
//! built-in chain only; whole built-in chains are read just when a jump must move.

use super::exec::{failure, run_ok, start, Runner};
use super::Backend;
use crate::core::drift::{diff_iptables, Drift};
use crate::core::model::{Blocklist, Family};
use crate::core::policy::Hook;
use crate::core::render_iptables::{desired, jump_line, plan, IptObserved, JumpState, CHAIN};
use crate::error::Result;

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

    fn suffix(self) -> &'static str {
        match self {
            Variant::Legacy => "legacy",
            Variant::Nft => "nft",
        }
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

/// Legacy tables exist in this network namespace only once the kernel
/// module made them; reading them through the tool would create them, so
/// look at /proc first.
pub fn legacy_filter_loaded(fam: Family) -> bool {
    let file = match fam {
        Family::V4 => "/proc/net/ip_tables_names",
        Family::V6 => "/proc/net/ip6_tables_names",
    };
    std::fs::read_to_string(file).is_ok_and(|s| s.lines().any(|l| l.trim() == "filter"))
}

pub struct Iptables<'r> {
    runner: &'r dyn Runner,
    variant: Variant,
}

impl<'r> Iptables<'r> {
    pub fn new(runner: &'r dyn Runner, variant: Variant) -> Self {
        Iptables { runner, variant }
    }

    fn readable(&self, fam: Family) -> bool {
        self.variant == Variant::Nft || legacy_filter_loaded(fam)
    }

    /// `-S <chain> [n]`; None when the chain does not exist (exit 1).
    fn list(&self, fam: Family, chain: &str, rule: Option<&str>) -> Result<Option<Vec<String>>> {
        let prog = tool(self.variant, fam, false);
        let mut args = vec!["-w", LOCK_WAIT, "-t", "filter", "-S", chain];
        args.extend(rule);
        let out = start(self.runner, &prog, &args, None)?;
        match out.code {
            0 => Ok(Some(out.stdout.lines().map(str::to_string).collect())),
            1 if !super::exec::is_permission_error(&out.stderr) => Ok(None),
            _ => Err(failure(&prog, &args, &out)),
        }
    }

    /// Our objects in one family; `full` also counts every jump in the built-in chains.
    pub fn observe(&self, fam: Family, full: bool) -> Result<IptObserved> {
        let mut seen = IptObserved::default();
        if !self.readable(fam) {
            return Ok(seen);
        }
        seen.chain = self
            .list(fam, CHAIN, None)?
            .map(|lines| lines.into_iter().filter(|l| l.starts_with("-A ")).collect());
        for hook in Hook::ALL {
            let first = self.list(fam, hook.iptables_chain(), Some("1"))?.unwrap_or_default();
            let first = first.into_iter().find(|l| l.starts_with("-A "));
            let at_top = first.as_deref() == Some(jump_line(hook).as_str());
            if let (false, Some(rule)) = (at_top, first) {
                seen.top_rule.insert(hook, rule);
            }
            let count = if full && seen.chain.is_some() {
                let all = self.list(fam, hook.iptables_chain(), None)?.unwrap_or_default();
                Some(all.iter().filter(|l| **l == jump_line(hook)).count())
            } else if seen.chain.is_none() {
                Some(0) // a jump cannot exist without its target chain
            } else {
                None
            };
            seen.jumps.insert(hook, JumpState { at_top, count });
        }
        Ok(seen)
    }

    fn restore(&self, fam: Family, payload: &str) -> Result<()> {
        let prog = tool(self.variant, fam, true);
        run_ok(self.runner, &prog, &["-w", LOCK_WAIT, "--noflush"], Some(payload)).map(|_| ())
    }

    /// Brings one family to `b` (or removes ours when `b` is None).
    fn converge(&self, fam: Family, b: Option<&Blocklist>) -> Result<bool> {
        let want = b.and_then(|b| desired(b, fam));
        let mut seen = self.observe(fam, false)?;
        if plan(want.as_ref(), &seen).is_none() {
            return Ok(false);
        }
        if want.is_none() || seen.needs_full_count(want.as_ref()) {
            seen = self.observe(fam, true)?;
        }
        match plan(want.as_ref(), &seen) {
            Some(payload) => self.restore(fam, &payload).map(|_| true),
            None => Ok(false),
        }
    }
}

impl Backend for Iptables<'_> {
    fn name(&self) -> &'static str {
        self.variant.name()
    }

    fn render(&self, b: &Blocklist) -> String {
        let mut out = String::new();
        for fam in Family::ALL {
            let want = desired(b, fam);
            if let Some(payload) = plan(want.as_ref(), &IptObserved::default()) {
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
            let seen = self.observe(fam, false)?;
            drift.extend(diff_iptables(want.as_ref(), &seen, &tool(self.variant, fam, false)));
        }
        Ok(drift)
    }

    fn apply(&self, b: &Blocklist) -> Result<bool> {
        let mut changed = false;
        for fam in Family::ALL {
            changed |= self.converge(fam, Some(b))?;
        }
        Ok(changed)
    }

    fn remove(&self) -> Result<bool> {
        let mut changed = false;
        for fam in Family::ALL {
            changed |= self.converge(fam, None)?;
        }
        Ok(changed)
    }

    fn present(&self) -> Result<bool> {
        for fam in Family::ALL {
            if self.readable(fam) && self.list(fam, CHAIN, None)?.is_some() {
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

    #[test]
    fn tool_names() {
        assert_eq!(tool(Variant::Legacy, Family::V6, true), "ip6tables-legacy-restore");
        assert_eq!(tool(Variant::Nft, Family::V4, false), "iptables-nft");
    }

    #[test]
    fn fresh_apply_sends_one_restore_for_the_v4_family_only() {
        let r = FakeRunner::default()
            .on(
                "iptables-nft -w 5 -t filter -S APISERVER-GUARD",
                1,
                "",
                "iptables: No chain/target/match by that name.",
            )
            .on(
                "ip6tables-nft -w 5 -t filter -S APISERVER-GUARD",
                1,
                "",
                "ip6tables: No chain/target/match by that name.",
            )
            .on("iptables-nft -w 5 -t filter -S", 0, "", "")
            .on("ip6tables-nft -w 5 -t filter -S", 0, "", "")
            .on("iptables-nft-restore", 0, "", "");
        assert!(Iptables::new(&r, Variant::Nft).apply(&bl()).unwrap());
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
    fn displaced_jump_triggers_a_full_count_then_a_move() {
        let rules = desired(&bl(), Family::V4).unwrap().rules.join("\n");
        let chain = format!("-N APISERVER-GUARD\n{rules}\n");
        let accept = "-A FORWARD -s 10.0.0.0/16 -j ACCEPT\n";
        let full = format!("-P FORWARD ACCEPT\n{accept}{}\n", jump_line(Hook::Forward));
        let r = FakeRunner::default()
            .on("iptables-nft -w 5 -t filter -S APISERVER-GUARD", 0, &chain, "")
            .on("iptables-nft -w 5 -t filter -S FORWARD 1", 0, accept, "")
            .on("iptables-nft -w 5 -t filter -S FORWARD", 0, &full, "")
            .on("iptables-nft -w 5 -t filter -S OUTPUT", 0, "-P OUTPUT ACCEPT\n", "")
            .on("ip6tables-nft -w 5 -t filter -S APISERVER-GUARD", 1, "", "No chain")
            .on("ip6tables-nft -w 5 -t filter -S", 0, "", "")
            .on("iptables-nft-restore", 0, "", "");
        let ipt = Iptables::new(&r, Variant::Nft);
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
    fn permission_denied_is_an_error_not_absence() {
        let r = FakeRunner::default().on(
            "iptables-nft",
            1,
            "",
            "iptables v1.8.9 (nf_tables): Could not fetch rule set generation id: Permission denied (you must be root)",
        );
        let e = Iptables::new(&r, Variant::Nft).status(&bl()).unwrap_err().to_string();
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
