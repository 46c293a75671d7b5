//! The foreign commands that remove the block (`nft flush ruleset`, `iptables-nft -F`, ...) and
//! the foreign kube-proxy-like rules loaded next to it.

use crate::shared::R;

use crate::netns::Netns;

#[derive(Debug, Clone, Copy)]
pub enum Flush {
    NftRuleset,
    NftDeleteTable,
    IptFlushAll,
    /// `-F APISERVER-GUARD` and `-D FORWARD <our jump>` in one iptables-nft-restore transaction.
    IptChainAndJump,
}

impl Flush {
    pub fn label(self) -> &'static str {
        match self {
            Flush::NftRuleset => "`nft flush ruleset`",
            Flush::NftDeleteTable => "`nft delete table inet apiserver_guard`",
            Flush::IptFlushAll => "`iptables-nft -F`",
            Flush::IptChainAndJump => {
                "`-F APISERVER-GUARD` + `-D FORWARD` our jump (one `iptables-nft-restore --noflush`)"
            }
        }
    }

    pub fn run(self, node: &Netns) -> R<()> {
        match self {
            Flush::NftRuleset => node.run("nft", &["flush", "ruleset"]).map(|_| ()),
            Flush::NftDeleteTable => node
                .run("nft", &["delete", "table", "inet", "apiserver_guard"])
                .map(|_| ()),
            Flush::IptFlushAll => node.run("iptables-nft", &["-F"]).map(|_| ()),
            Flush::IptChainAndJump => node.run_stdin(
                "iptables-nft-restore",
                &["--noflush"],
                "*filter\n-F APISERVER-GUARD\n-D FORWARD -m comment --comment apiserver-guard -j APISERVER-GUARD\nCOMMIT\n"
                    .into(),
            ),
        }
    }
}
