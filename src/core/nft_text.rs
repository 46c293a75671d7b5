//! A TableModel printed the way `nft list table inet apiserver_guard` prints
//! that table (sets, then chains, in the model's name order: the order our
//! netlink writer creates them in, which is the order nft lists them in).
//! Interval sets are shown as the CIDRs and ranges the kernel's start/end
//! elements describe, in ascending order. Counters are printed with their
//! values; element lists are on one line (nft wraps long ones: compare with
//! whitespace normalised), and nft prints the elements of a hash set (not
//! interval) in the kernel's hash order: compare those as sets. The
//! elements the kernel adds to a dynamic set (the meter of the log rules)
//! are state and not printed: nft lists them, with their timers.

use super::nft_model::*;
use super::nft_stmt::{duration_text, hex, rule_text};
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The whole table as nft lists it.
pub fn render(t: &TableModel) -> String {
    let mut s = format!("table {TABLE_FAMILY} {TABLE_NAME} {{\n");
    if t.flags != 0 {
        let _ = writeln!(s, "\tflags {}", table_flags_text(t.flags));
    }
    match t.comment() {
        Some(c) => {
            let _ = writeln!(s, "\tcomment \"{c}\"");
        }
        None if !t.userdata.is_empty() => {
            let _ = writeln!(s, "\t# userdata 0x{}", hex(&t.userdata));
        }
        None => {}
    }
    let mut blocks: Vec<String> = Vec::new();
    for (name, set) in &t.sets {
        blocks.push(set_text(name, set));
    }
    for (name, chain) in &t.chains {
        blocks.push(chain_text(name, chain));
    }
    s.push_str(&blocks.join("\n"));
    s.push_str("}\n");
    s
}

/// `owner,persist`.
pub fn table_flags_text(flags: u32) -> String {
    let names = [
        (TABLE_F_DORMANT, "dormant"),
        (TABLE_F_OWNER, "owner"),
        (TABLE_F_PERSIST, "persist"),
    ];
    let mut out: Vec<String> = names
        .iter()
        .filter(|(bit, _)| flags & bit != 0)
        .map(|(_, n)| n.to_string())
        .collect();
    let rest = flags & !(TABLE_F_DORMANT | TABLE_F_OWNER | TABLE_F_PERSIST);
    if rest != 0 {
        out.push(format!("0x{rest:x}"));
    }
    out.join(",")
}

/// `interval`, `constant, interval`...
pub fn set_flags_text(flags: u32) -> String {
    let names = [
        (SET_F_CONSTANT, "constant"),
        (SET_F_EVAL, "dynamic"),
        (SET_F_INTERVAL, "interval"),
        (SET_F_TIMEOUT, "timeout"),
        (SET_F_MAP, "map"),
        (SET_F_CONCAT, "concat"),
    ];
    let mut out: Vec<String> = names
        .iter()
        .filter(|(bit, _)| flags & bit != 0)
        .map(|(_, n)| n.to_string())
        .collect();
    let rest = flags & !names.iter().fold(0, |a, (b, _)| a | b);
    if rest != 0 {
        out.push(format!("0x{rest:x}"));
    }
    out.join(",")
}

fn set_text(name: &str, set: &SetModel) -> String {
    let mut s = format!("\tset {name} {{\n\t\ttype {}\n", set.key.name());
    if set.size != 0 {
        let _ = writeln!(s, "\t\tsize {}", set.size);
    }
    if set.flags != 0 {
        let _ = writeln!(s, "\t\tflags {}", set_flags_text(set.flags));
    }
    if set.timeout_ms != 0 {
        let _ = writeln!(s, "\t\ttimeout {}", duration_text(set.timeout_ms));
    }
    let elems = element_texts(set);
    if !elems.is_empty() {
        let _ = writeln!(s, "\t\telements = {{ {} }}", elems.join(", "));
    }
    s.push_str("\t}\n");
    s
}

/// The elements of a set as nft prints them: CIDRs / ranges / addresses,
/// `address . port` for concatenations, in ascending order.
pub fn element_texts(set: &SetModel) -> Vec<String> {
    let odd: Vec<String> = set
        .elements
        .iter()
        .filter(|e| !e.unknown.is_empty() || e.key.len() != set.key.key_len() as usize)
        .map(|e| format!("0x{}", hex(&e.key)))
        .collect();
    let regular = set
        .elements
        .iter()
        .filter(|e| e.unknown.is_empty() && e.key.len() == set.key.key_len() as usize);
    let mut out: Vec<String> = if set.flags & SET_F_INTERVAL != 0 && !matches!(set.key, KeyType::Concat(_)) {
        ranges(regular)
            .into_iter()
            .map(|(lo, hi)| range_text(&set.key, &lo, &hi))
            .collect()
    } else {
        regular
            .map(|e| {
                let v = key_text(&set.key, &e.key);
                if e.flags != 0 {
                    format!("{v} (flags 0x{:x})", e.flags)
                } else {
                    v
                }
            })
            .collect()
    };
    out.extend(odd);
    out
}

/// Start/end elements (ascending) into inclusive ranges of key bytes.
fn ranges<'a>(elems: impl Iterator<Item = &'a Element>) -> Vec<(Vec<u8>, Vec<u8>)> {
    // At one key, the end of a range comes before the start of the next.
    let mut elems: Vec<&Element> = elems.collect();
    elems.sort_by_key(|e| (e.key.clone(), e.flags & ELEM_F_INTERVAL_END == 0));
    let mut out = Vec::new();
    let mut open: Option<Vec<u8>> = None;
    let mut width = 0;
    for e in elems {
        width = e.key.len();
        let before = decrement(&e.key);
        if e.flags & ELEM_F_INTERVAL_END != 0 {
            if let Some(lo) = open.take() {
                out.push((lo, before));
            }
        } else if let Some(lo) = open.replace(e.key.clone()) {
            out.push((lo, before));
        }
    }
    if let Some(lo) = open {
        out.push((lo, vec![0xff; width]));
    }
    out
}

fn decrement(key: &[u8]) -> Vec<u8> {
    let mut v = key.to_vec();
    for b in v.iter_mut().rev() {
        let (n, borrow) = b.overflowing_sub(1);
        *b = n;
        if !borrow {
            break;
        }
    }
    v
}

fn as_u128(b: &[u8]) -> u128 {
    b.iter().fold(0u128, |a, x| (a << 8) | *x as u128)
}

fn range_text(key: &KeyType, lo: &[u8], hi: &[u8]) -> String {
    let (l, h) = (as_u128(lo), as_u128(hi));
    let bits = lo.len() as u32 * 8;
    let size = h.wrapping_sub(l).wrapping_add(1);
    if l == h {
        return key_text(key, lo);
    }
    let whole = size == 0 && l == 0; // the whole address space
    if whole || (size.is_power_of_two() && l & (size - 1) == 0) {
        let prefix = if whole { 0 } else { bits - size.trailing_zeros() };
        return format!("{}/{prefix}", key_text(key, lo));
    }
    format!("{}-{}", key_text(key, lo), key_text(key, hi))
}

/// One key value as nft prints it.
pub fn key_text(key: &KeyType, bytes: &[u8]) -> String {
    match (key, bytes.len()) {
        (KeyType::Ipv4Addr, 4) => IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3])).to_string(),
        (KeyType::Ipv6Addr, 16) => {
            let mut o = [0u8; 16];
            o.copy_from_slice(bytes);
            Ipv6Addr::from(o).to_string()
        }
        (KeyType::InetService, 2) => u16::from_be_bytes([bytes[0], bytes[1]]).to_string(),
        // Host byte order; shown as the number (nft names the interface when it can look it up).
        (KeyType::IfaceIndex, 4) => u32::from_ne_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]).to_string(),
        (KeyType::Concat(parts), n) if n == key.key_len() as usize => {
            let mut at = 0;
            let mut out = Vec::new();
            for p in parts {
                let len = p.key_len() as usize;
                out.push(key_text(p, &bytes[at..at + len]));
                at += len.div_ceil(4) * 4;
            }
            out.join(" . ")
        }
        _ => format!("0x{}", hex(bytes)),
    }
}

/// Hook names by number (`NF_INET_*`).
pub fn hook_name(hook: u32) -> String {
    match hook {
        0 => "prerouting".into(),
        HOOK_LOCAL_IN => "input".into(),
        HOOK_FORWARD => "forward".into(),
        HOOK_LOCAL_OUT => "output".into(),
        4 => "postrouting".into(),
        5 => "ingress".into(),
        n => format!("hook{n}"),
    }
}

/// nft's names for standard priorities (within 10 of one: `filter + 5`).
pub fn priority_text(prio: i32) -> String {
    for (name, base) in [("raw", -300), ("mangle", -150), ("filter", 0), ("security", 50)] {
        let off = prio - base;
        if off == 0 {
            return name.to_string();
        }
        if (1..=10).contains(&off.abs()) {
            return format!("{name} {} {}", if off > 0 { '+' } else { '-' }, off.abs());
        }
    }
    prio.to_string()
}

pub fn policy_text(policy: u32) -> String {
    match policy {
        NF_ACCEPT => "accept".into(),
        NF_DROP => "drop".into(),
        n => n.to_string(),
    }
}

fn chain_text(name: &str, c: &ChainModel) -> String {
    let mut s = format!("\tchain {name} {{\n");
    if let Some(b) = &c.base {
        let _ = writeln!(
            s,
            "\t\ttype {} hook {} priority {}; policy {};",
            b.chain_type,
            hook_name(b.hook),
            priority_text(b.priority),
            policy_text(b.policy)
        );
    }
    for r in &c.rules {
        let _ = writeln!(s, "\t\t{}", rule_text(r));
    }
    s.push_str("\t}\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::nft_desired::interval_elements;

    #[test]
    fn ranges_print_as_cidrs_hosts_and_spans() {
        let nets: Vec<ipnet::IpNet> = ["10.0.1.0/24", "10.0.2.0/24", "10.9.9.9/32", "0.0.0.0/8", "255.0.0.0/8"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        let set = SetModel::new(KeyType::Ipv4Addr, SET_F_INTERVAL, vec![], interval_elements(&nets));
        assert_eq!(
            element_texts(&set),
            ["0.0.0.0/8", "10.0.1.0/24", "10.0.2.0/24", "10.9.9.9", "255.0.0.0/8"]
        );
        assert_eq!(priority_text(0), "filter");
        assert_eq!(priority_text(10), "filter + 10");
        assert_eq!(priority_text(-5), "filter - 5");
        assert_eq!(priority_text(1000), "1000");
    }

    #[test]
    fn meter_keys_print_the_interface_index_and_the_address() {
        let key = KeyType::Concat(vec![KeyType::IfaceIndex, KeyType::Ipv4Addr]);
        let mut bytes = 7u32.to_ne_bytes().to_vec();
        bytes.extend([10, 0, 2, 5]);
        assert_eq!(key_text(&key, &bytes), "7 . 10.0.2.5");
        assert_eq!(key_text(&KeyType::IfaceIndex, &300u32.to_ne_bytes()), "300");
        // A key of the wrong length is shown as bytes, never misread.
        assert_eq!(key_text(&KeyType::IfaceIndex, &[1, 2]), "0x0102");
    }
}
