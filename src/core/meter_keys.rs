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
//! masked to `--hashlimit-srcmask`. The kernel keeps one table per name and
//! family and keys it with the mask and size of the rule that created it
//! (`hashlimit_init_dst` reads `hinfo->cfg`), whatever the other rules say:
//! so every log rule of a family carries the same mask, the finest one at
//! which the keys of all its CIDRs together fit in `KEY_BUDGET`, and the
//! table's name says the mask (`apiserver-guard-m24`; the link-local rule
//! of a local apiserver, `fe80::/10`, has a table of its own), so that a policy
//! needing another mask gets a table of its own instead of the old one,
//! which `iptables-restore --noflush` would otherwise keep (the new rules
//! take it before the old ones let it go). One key per address where the
//! CIDRs are small enough (an IPv4 /16 in total), one key per block of
//! addresses where they are not (IPv6; wider IPv4): pods in one block share
//! one allowance. The native nftables backend does not depend on this (its
//! meter is a set: a full set stops the log rule, never the packet).

use ipnet::IpNet;

/// Keys the table of one family can hold: what `--hashlimit-htable-max` is
/// set to (8 MiB of kernel memory at most, about 128 bytes a key).
pub const KEY_BUDGET: u32 = 65_536;

/// Base name of our hashlimit tables (one per family, in
/// /proc/net/ipt_hashlimit/ and ip6t_hashlimit/; the mask follows).
pub const METER_NAME: &str = "apiserver-guard";
/// The table of the link-local rule of a local apiserver (`fe80::/10`):
/// its own, so that its wide CIDR does not coarsen the container CIDRs' keys.
pub const LINK_LOCAL_METER_NAME: &str = "apiserver-guard-ll";

/// How the log rules of one family key their table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FamilyKeys {
    /// The table's name without the mask (`METER_NAME`, `LINK_LOCAL_METER_NAME`).
    pub base: &'static str,
    /// `--hashlimit-srcmask`: sources that agree on this many leading bits
    /// share one key.
    pub key_prefix: u8,
    /// The address length (32 or 128): a key prefix this long is one key per address.
    pub address_bits: u8,
    /// `--hashlimit-htable-max`: at least every key the rules can produce.
    pub table_max: u32,
}

impl FamilyKeys {
    /// `--hashlimit-name`: the base and the mask (`apiserver-guard-m32`),
    /// and the size when it is not the usual one. Always the mask: a table
    /// left by a release that keyed it otherwise (`apiserver-guard`, htable-max
    /// 65535) is never joined, and so never keeps its old size.
    pub fn table_name(&self) -> String {
        let mut name = format!("{}-m{}", self.base, self.key_prefix);
        if self.table_max != KEY_BUDGET {
            name.push_str(&format!("-x{}", self.table_max));
        }
        name
    }

    /// Whether the rules print `--hashlimit-srcmask` (only when not one key per address).
    pub fn masked(&self) -> bool {
        self.key_prefix != self.address_bits
    }
}

/// Keys the CIDRs can produce at `prefix`: each CIDR at most 2^(prefix -
/// its length), one when the prefix is shorter than the CIDR's (an upper
/// bound: CIDRs that share a block share its key).
fn keys_at(cidrs: &[IpNet], prefix: u8) -> u64 {
    cidrs
        .iter()
        .map(|c| {
            let bits = u32::from(prefix.saturating_sub(c.prefix_len()));
            1u64.checked_shl(bits).filter(|_| bits < 63).unwrap_or(u64::MAX / 2)
        })
        .fold(0u64, u64::saturating_add)
}

/// The key prefix of the log rules that share table `base` (`cidrs`: the
/// sources they match, one family): the longest at which all keys fit in
/// `KEY_BUDGET`; with more CIDRs than that (one key each at the least), the
/// shortest CIDR prefix and a table as large as the keys.
pub fn family_keys(cidrs: &[IpNet], address_bits: u8, base: &'static str) -> FamilyKeys {
    let shortest = cidrs.iter().map(IpNet::prefix_len).min().unwrap_or(address_bits);
    let budget = u64::from(KEY_BUDGET);
    let key_prefix = (shortest..=address_bits)
        .rev()
        .find(|k| keys_at(cidrs, *k) <= budget)
        .unwrap_or(shortest);
    let keys = keys_at(cidrs, key_prefix);
    FamilyKeys {
        base,
        key_prefix,
        address_bits,
        table_max: u32::try_from(keys.max(budget)).unwrap_or(u32::MAX),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(s: &[&str]) -> Vec<IpNet> {
        s.iter().map(|n| n.parse().unwrap()).collect()
    }

    fn v4(s: &[&str]) -> FamilyKeys {
        family_keys(&nets(s), 32, METER_NAME)
    }

    fn v6(s: &[&str]) -> FamilyKeys {
        family_keys(&nets(s), 128, METER_NAME)
    }

    #[test]
    fn an_ipv4_slash_16_gets_one_key_per_address_in_the_plain_table() {
        let k = v4(&["10.244.0.0/16"]);
        assert_eq!((k.key_prefix, k.table_max, k.masked()), (32, 65_536, false));
        assert_eq!(k.table_name(), "apiserver-guard-m32");
    }

    #[test]
    fn a_wider_ipv4_cidr_gets_blocks_that_fit_and_a_table_named_after_them() {
        assert_eq!(v4(&["10.0.0.0/8"]).key_prefix, 24);
        assert_eq!(v4(&["10.0.0.0/15"]).key_prefix, 31);
        assert_eq!(v4(&["10.0.0.0/15"]).table_name(), "apiserver-guard-m31");
        assert_eq!(v4(&["0.0.0.0/1"]).key_prefix, 17);
    }

    #[test]
    fn one_mask_for_all_cidrs_of_a_family_fits_them_all() {
        // Keyed per address the /15 alone would need 131,072 keys: the /24 cannot set the mask.
        let k = v4(&["10.9.0.0/24", "10.0.0.0/15"]);
        assert_eq!(k.key_prefix, 30, "{k:?}");
        assert!(keys_at(&nets(&["10.9.0.0/24", "10.0.0.0/15"]), k.key_prefix) <= 65_536);
        // Two /17s fill the budget exactly, one key per address.
        assert_eq!(v4(&["10.0.0.0/17", "10.0.128.0/17"]).key_prefix, 32);
        assert_eq!(v4(&["10.0.0.0/16", "10.1.0.0/24"]).key_prefix, 31);
    }

    #[test]
    fn ipv6_gets_blocks_that_fit() {
        assert_eq!(v6(&["fd00:10::/64"]).key_prefix, 80);
        assert_eq!(v6(&["fd00::/48"]).key_prefix, 64);
        assert_eq!(v6(&["fd00::1/128"]).key_prefix, 128);
        assert_eq!(v6(&["fd00::/112"]).key_prefix, 128);
        // Sharing a table with fe80::/10 would key the /48 at /25 (one key for all):
        // the link-local rule has a table of its own.
        assert_eq!(v6(&["fd00::/48", "fe80::/10"]).key_prefix, 25);
        let ll = family_keys(&nets(&["fe80::/10"]), 128, LINK_LOCAL_METER_NAME);
        assert_eq!(
            (ll.key_prefix, ll.table_name().as_str()),
            (26, "apiserver-guard-ll-m26")
        );
    }

    #[test]
    fn the_keys_never_exceed_the_table() {
        let cases: Vec<(Vec<&str>, u8)> = vec![
            (vec!["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"], 32),
            (vec!["fd00::/48", "fe80::/10"], 128),
            (vec!["10.0.0.0/16", "10.1.0.0/16", "10.2.0.0/16"], 32),
            (vec!["0.0.0.0/1", "128.0.0.0/1"], 32),
            (vec!["::/1"], 128),
            (vec!["10.0.0.1/32", "10.0.0.2/32", "10.9.0.0/9"], 32),
        ];
        for (c, bits) in cases {
            let n = nets(&c);
            let k = family_keys(&n, bits, METER_NAME);
            assert!(keys_at(&n, k.key_prefix) <= u64::from(k.table_max), "{c:?}: {k:?}");
            assert!(k.table_max == KEY_BUDGET, "{c:?}: {k:?}");
        }
    }

    #[test]
    fn more_cidrs_than_keys_get_one_key_each_and_a_table_that_holds_them() {
        let many: Vec<IpNet> = (0..70_000u32)
            .map(|i| IpNet::from(std::net::IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i))))
            .collect();
        let k = family_keys(&many, 32, METER_NAME);
        assert_eq!((k.key_prefix, k.table_max), (32, 70_000));
        assert_eq!(k.table_name(), "apiserver-guard-m32-x70000");
    }

    #[test]
    fn no_sources_key_every_address() {
        assert_eq!(family_keys(&[], 32, METER_NAME).key_prefix, 32);
    }
}
