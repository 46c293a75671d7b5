//! How finely the iptables log meter tells sources apart, chosen so its
//! table can never fill.
//!
//! The iptables log rules limit logging per source with `-m hashlimit
//! --hashlimit-mode srcip`. When a hashlimit table is full, the kernel
//! (`xt_hashlimit`, `dsthash_alloc_init`) drops the packet ("hotdrop")
//! before any target: in audit mode a pod would be blocked, in reject mode
//! it would get no reset and go unreported. A pod that can forge source
//! addresses fills a table of per-address keys in a second.
//!
//! The keys of that table are the sources our rules matched (`-s CIDR`),
//! masked to `--hashlimit-srcmask`. Giving each CIDR a mask such that all
//! keys together fit in `KEY_BUDGET` makes the table impossible to fill,
//! whatever the sources: one key per address where the CIDRs are small
//! enough (every IPv4 CIDR up to a /16 in total), one key per block of
//! addresses where they are not (IPv6; IPv4 wider than a /16). Pods in one
//! block then share one allowance. The native nftables backend does not
//! depend on this (its meter is a set: a full set stops the log rule, never
//! the packet).

use ipnet::IpNet;

/// Keys the table of one family can hold: what `--hashlimit-htable-max` is
/// set to (8 MiB of kernel memory at most, about 128 bytes a key).
pub const KEY_BUDGET: u32 = 65_536;

/// One source CIDR of a log rule and the prefix length of its keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourceKeys {
    pub cidr: IpNet,
    /// `--hashlimit-srcmask`: addresses of `cidr` that agree on this many
    /// leading bits share one key (the address length: one key per address).
    pub key_prefix: u8,
}

impl SourceKeys {
    /// log2 of the number of keys `cidr` can produce.
    fn key_bits(&self) -> u32 {
        u32::from(self.key_prefix - self.cidr.prefix_len())
    }
}

/// The key prefix of each CIDR (one family, no overlaps), the smallest
/// CIDRs first served: each gets one key per address if that fits its fair
/// share of what is left of `KEY_BUDGET`, else the largest power of two that
/// does. The sum of keys is at most `KEY_BUDGET` unless there are more
/// CIDRs than keys (then each has one key; see `table_max`).
pub fn key_prefixes(cidrs: &[IpNet]) -> Vec<SourceKeys> {
    let mut by_need: Vec<IpNet> = cidrs.to_vec();
    // Fewest addresses first; ties in address order, so the result is stable.
    by_need.sort_by_key(|c| (c.max_prefix_len() - c.prefix_len(), *c));
    by_need.dedup();
    let mut left = u64::from(KEY_BUDGET);
    let n = by_need.len() as u64;
    let mut out = Vec::with_capacity(by_need.len());
    for (i, cidr) in by_need.into_iter().enumerate() {
        let share = left / (n - i as u64);
        let need_bits = u32::from(cidr.max_prefix_len() - cidr.prefix_len());
        let take_bits = need_bits.min(share.checked_ilog2().unwrap_or(0));
        left = left.saturating_sub(1u64 << take_bits);
        out.push(SourceKeys {
            cidr,
            key_prefix: cidr.prefix_len() + take_bits as u8,
        });
    }
    out.sort_by_key(|k| k.cidr);
    out
}

/// `--hashlimit-htable-max` for these keys: `KEY_BUDGET`, or the number of
/// keys when that is larger (only with more CIDRs than `KEY_BUDGET`), so the
/// table always holds every key its rules can produce.
pub fn table_max(keys: &[SourceKeys]) -> u32 {
    let total: u64 = keys.iter().map(|k| 1u64 << k.key_bits()).sum();
    u32::try_from(total.max(u64::from(KEY_BUDGET))).unwrap_or(u32::MAX)
}

/// The key prefix of `cidr` in `keys` (the address length if absent: one
/// key per address).
pub fn key_prefix_of(keys: &[SourceKeys], cidr: &IpNet) -> u8 {
    keys.iter()
        .find(|k| k.cidr == *cidr)
        .map_or(cidr.max_prefix_len(), |k| k.key_prefix)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(s: &[&str]) -> Vec<IpNet> {
        s.iter().map(|n| n.parse().unwrap()).collect()
    }

    fn total(keys: &[SourceKeys]) -> u64 {
        keys.iter().map(|k| 1u64 << k.key_bits()).sum()
    }

    fn prefixes(s: &[&str]) -> Vec<(String, u8)> {
        key_prefixes(&nets(s))
            .into_iter()
            .map(|k| (k.cidr.to_string(), k.key_prefix))
            .collect()
    }

    #[test]
    fn an_ipv4_slash_16_gets_one_key_per_address() {
        assert_eq!(prefixes(&["10.244.0.0/16"]), vec![("10.244.0.0/16".into(), 32)]);
    }

    #[test]
    fn a_wider_ipv4_cidr_gets_blocks_that_fit() {
        assert_eq!(prefixes(&["10.0.0.0/8"]), vec![("10.0.0.0/8".into(), 24)]);
        assert_eq!(prefixes(&["10.0.0.0/15"]), vec![("10.0.0.0/15".into(), 31)]);
        assert_eq!(prefixes(&["0.0.0.0/0"]), vec![("0.0.0.0/0".into(), 16)]);
    }

    #[test]
    fn ipv6_gets_blocks_that_fit() {
        assert_eq!(prefixes(&["fd00:10::/64"]), vec![("fd00:10::/64".into(), 80)]);
        assert_eq!(prefixes(&["fd00::/8"]), vec![("fd00::/8".into(), 24)]);
        assert_eq!(prefixes(&["fd00::1/128"]), vec![("fd00::1/128".into(), 128)]);
        assert_eq!(prefixes(&["fd00::/112"]), vec![("fd00::/112".into(), 128)]);
    }

    #[test]
    fn small_cidrs_are_served_first_and_the_rest_goes_to_the_large_one() {
        // 256 + 256 keys leave 65,024 for the /16: 32,768 of them (a power of two).
        assert_eq!(
            prefixes(&["10.0.0.0/16", "10.1.0.0/24", "10.2.0.0/24"]),
            vec![
                ("10.0.0.0/16".into(), 31),
                ("10.1.0.0/24".into(), 32),
                ("10.2.0.0/24".into(), 32)
            ]
        );
        // Two /17s fill the budget exactly, one key per address.
        assert_eq!(
            prefixes(&["10.0.0.0/17", "10.0.128.0/17"]),
            vec![("10.0.0.0/17".into(), 32), ("10.0.128.0/17".into(), 32)]
        );
    }

    #[test]
    fn the_keys_never_exceed_the_table() {
        let cases: Vec<Vec<&str>> = vec![
            vec!["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"],
            vec!["fd00::/48", "fe80::/10"],
            vec!["10.0.0.0/16", "10.1.0.0/16", "10.2.0.0/16"],
            vec!["0.0.0.0/0"],
            vec!["::/0"],
            vec!["10.0.0.1/32", "10.0.0.2/32", "10.9.0.0/9"],
        ];
        for c in cases {
            let keys = key_prefixes(&nets(&c));
            assert!(total(&keys) <= u64::from(KEY_BUDGET), "{c:?}: {keys:?}");
            assert!(total(&keys) <= u64::from(table_max(&keys)), "{c:?}");
            for k in &keys {
                assert!(k.key_prefix >= k.cidr.prefix_len() && k.key_prefix <= k.cidr.max_prefix_len());
            }
        }
    }

    #[test]
    fn more_cidrs_than_keys_get_one_key_each_and_a_table_that_holds_them() {
        let many: Vec<IpNet> = (0..70_000u32)
            .map(|i| IpNet::from(std::net::IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i))))
            .collect();
        let keys = key_prefixes(&many);
        assert!(keys.iter().all(|k| k.key_prefix == 32));
        assert_eq!(table_max(&keys), 70_000);
    }

    #[test]
    fn a_cidr_not_listed_keeps_one_key_per_address() {
        let keys = key_prefixes(&nets(&["10.0.0.0/8"]));
        assert_eq!(key_prefix_of(&keys, &"10.0.0.0/8".parse().unwrap()), 24);
        assert_eq!(key_prefix_of(&keys, &"fd00::/64".parse().unwrap()), 128);
    }
}
