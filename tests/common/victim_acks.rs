//! Counting, inside a pod's own namespace, the bare ACKs it sends (an nft
//! counter in a table of the test's own there): how the forged-packet tests
//! see that their forgery drew the answers they meant it to.

use super::{Listener, Netns, Topology, OTHER_POD_V4};

/// Counts, in `victim`, the bare ACKs it sends that `rule` matches (an nft
/// match, e.g. on their port).
pub fn count_acks(victim: &Netns, rule: &str) {
    victim.run_ok(&[
        "nft",
        &format!(
            "add table inet acks; add chain inet acks out {{ type filter hook output priority 0; }}; \
             add rule inet acks out {rule} tcp flags & (fin|syn|rst|psh|ack) == ack counter"
        ),
    ]);
}

/// What `count_acks` counted so far.
pub fn counted_acks(victim: &Netns) -> u64 {
    victim
        .run_ok(&["nft", "list", "chain", "inet", "acks", "out"])
        .split("counter packets ")
        .nth(1)
        .and_then(|t| t.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .expect("the victim's counter")
}

/// Makes `victim` (the topology's other pod) answer every SYN forged "from
/// the apiserver" to its listening `port` with a bare ACK, and counts those:
/// the apiserver's host drops what that port sends (no reset ever ends the
/// half-open socket the first forged SYN makes) and the victim answers every
/// out-of-window SYN at once (`net.ipv4.tcp_invalid_ratelimit` 0). Returns
/// the listener; the port listens while it lives.
pub fn answer_every_forged_syn(topo: &Topology, victim: &Netns, port: u16) -> Listener {
    victim.sysctl(&[("net.ipv4.tcp_invalid_ratelimit", "0")]);
    topo.api.run_ok(&[
        "nft",
        &format!(
            "add table inet race; add chain inet race in {{ type filter hook input priority 0; }}; \
             add rule inet race in ip saddr {OTHER_POD_V4} tcp sport {port} counter drop"
        ),
    ]);
    count_acks(victim, &format!("tcp sport {port}"));
    Listener::start(victim, OTHER_POD_V4, port)
}
