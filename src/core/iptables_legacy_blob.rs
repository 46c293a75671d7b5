//! The wire format of one iptables-legacy table as the kernel hands it out
//! (`IPT_SO_GET_INFO` + `IPT_SO_GET_ENTRIES`, `IP6T_` for IPv6) and takes it
//! back (`IPT_SO_SET_REPLACE`): a blob of entries, each an `ipt_entry` /
//! `ip6t_entry` header, its matches, its target. Parsing, the bytes an entry
//! is compared by, the bytes iptables writes for our jump, and the blob
//! without some entries (offsets of jumps and hooks fixed). Pure: the
//! sockets live in `backend::iptables_legacy_raw`.

use super::model::Family;
use super::policy::Hook;
use super::render_iptables::COMMENT;

/// Number of netfilter hooks in `hook_entry` / `underflow`.
pub const HOOKS: usize = 5;

/// Size of `struct ipt_getinfo` (the same for IPv6).
pub const GETINFO_LEN: usize = 84;

/// Where the fields of one family's entry header are.
#[derive(Debug, Clone, Copy)]
struct Layout {
    /// Where `iniface`, `outiface`, `iniface_mask`, `outiface_mask` start
    /// (16 bytes each) and where `invflags` is.
    iface: usize,
    invflags: usize,
    /// `sizeof(struct ipt_entry)`: where the first match starts.
    header: usize,
    target_offset: usize,
    next_offset: usize,
    comefrom: usize,
    counters: usize,
}

fn layout(fam: Family) -> Layout {
    match fam {
        // struct ipt_ip is 84 bytes, then nfcache.
        Family::V4 => Layout {
            iface: 16,
            invflags: 83,
            header: 112,
            target_offset: 88,
            next_offset: 90,
            comefrom: 92,
            counters: 96,
        },
        // struct ip6t_ip6 is 136 bytes, then nfcache.
        Family::V6 => Layout {
            iface: 64,
            invflags: 132,
            header: 168,
            target_offset: 140,
            next_offset: 142,
            comefrom: 144,
            counters: 152,
        },
    }
}

/// `struct xt_entry_match` / `xt_entry_target` header: size, name, revision.
const XT_HEADER: usize = 32;
/// Length of the name field in that header.
const XT_NAME: usize = 29;
/// Size of the standard target as iptables writes it (header, verdict, padding).
const STANDARD_TARGET: usize = 40;
/// Size of `struct xt_comment_info`.
const COMMENT_LEN: usize = 256;

/// One entry: where it starts in the blob and how long it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    pub offset: u32,
    pub len: u32,
}

/// What an entry does, as far as chains are concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// The standard target: a verdict (negative) or a jump to an offset.
    Standard(i32),
    /// `ERROR`: the head of a user-defined chain, or the table's end.
    Error(String),
    /// Any other target (REJECT, NFLOG, ...).
    Other(String),
}

/// One family's table as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LegacyTable {
    pub family: Family,
    pub valid_hooks: u32,
    pub hook_entry: [u32; HOOKS],
    pub underflow: [u32; HOOKS],
    pub entries: Vec<Entry>,
    /// The entries, one after the other, as the kernel handed them out.
    pub blob: Vec<u8>,
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn name_at(b: &[u8], at: usize) -> Option<String> {
    let raw = b.get(at..at + XT_NAME)?;
    let end = raw.iter().position(|c| *c == 0).unwrap_or(raw.len());
    Some(String::from_utf8_lossy(&raw[..end]).into_owned())
}

/// The `struct ipt_getinfo` fields: valid hooks, hook entries, underflows,
/// number of entries, blob size.
pub type Info = (u32, [u32; HOOKS], [u32; HOOKS], u32, u32);

/// Reads `struct ipt_getinfo`.
pub fn parse_info(info: &[u8]) -> Option<Info> {
    let five = |at: usize| -> Option<[u32; HOOKS]> {
        let mut out = [0; HOOKS];
        for (i, v) in out.iter_mut().enumerate() {
            *v = u32_at(info, at + 4 * i)?;
        }
        Some(out)
    };
    Some((
        u32_at(info, 32)?,
        five(36)?,
        five(56)?,
        u32_at(info, 76)?,
        u32_at(info, 80)?,
    ))
}

/// Splits a blob into entries; an error names what does not add up.
pub fn parse(fam: Family, info: &Info, blob: &[u8]) -> Result<LegacyTable, String> {
    let l = layout(fam);
    let (valid_hooks, hook_entry, underflow, count, size) = *info;
    if blob.len() != size as usize {
        return Err(format!("blob of {} bytes, table says {size}", blob.len()));
    }
    let mut entries = Vec::new();
    let mut at = 0usize;
    while at < blob.len() {
        let next = u16_at(blob, at + l.next_offset).ok_or("entry header cut short")? as usize;
        let target = u16_at(blob, at + l.target_offset).ok_or("entry header cut short")? as usize;
        if next < l.header + XT_HEADER || target < l.header || target + XT_HEADER > next || at + next > blob.len() {
            return Err(format!(
                "entry at {at} does not fit (target at {target}, next at {next})"
            ));
        }
        entries.push(Entry {
            offset: at as u32,
            len: next as u32,
        });
        at += next;
    }
    if entries.len() != count as usize {
        return Err(format!("{} entries, table says {count}", entries.len()));
    }
    Ok(LegacyTable {
        family: fam,
        valid_hooks,
        hook_entry,
        underflow,
        entries,
        blob: blob.to_vec(),
    })
}

impl LegacyTable {
    fn layout(&self) -> Layout {
        layout(self.family)
    }

    /// The bytes of entry `e`.
    pub fn bytes(&self, e: &Entry) -> &[u8] {
        &self.blob[e.offset as usize..(e.offset + e.len) as usize]
    }

    /// What entry `e` does.
    pub fn target(&self, e: &Entry) -> Target {
        let b = self.bytes(e);
        let t = u16_at(b, self.layout().target_offset).unwrap_or_default() as usize;
        let name = name_at(b, t + 2).unwrap_or_default();
        match name.as_str() {
            "" => Target::Standard(u32_at(b, t + XT_HEADER).unwrap_or_default() as i32),
            "ERROR" => Target::Error(
                b.get(t + XT_HEADER..)
                    .map(|b| {
                        let end = b.iter().position(|c| *c == 0).unwrap_or(b.len());
                        String::from_utf8_lossy(&b[..end]).into_owned()
                    })
                    .unwrap_or_default(),
            ),
            _ => Target::Other(name),
        }
    }

    fn index_at(&self, offset: u32) -> Option<usize> {
        self.entries.binary_search_by_key(&offset, |e| e.offset).ok()
    }

    /// The rules of built-in chain `hook` (its policy entry left out), as
    /// entry indices; None when the table has no such hook.
    pub fn builtin_rules(&self, hook: Hook) -> Option<std::ops::Range<usize>> {
        let h = hook.number() as usize;
        if self.valid_hooks & (1 << h) == 0 {
            return None;
        }
        Some(self.index_at(self.hook_entry[h])?..self.index_at(self.underflow[h])?)
    }

    /// User-defined chain `name`: the offset jumps to it carry and its rules
    /// (its closing RETURN entry left out), as entry indices.
    pub fn user_chain(&self, name: &str) -> Option<(u32, std::ops::Range<usize>)> {
        let head = self
            .entries
            .iter()
            .position(|e| self.target(e) == Target::Error(name.to_string()))?;
        let end = self.entries[head + 1..]
            .iter()
            .position(|e| matches!(self.target(e), Target::Error(_)))
            .map(|p| head + 1 + p)?;
        // The entry before the next chain's head is this chain's RETURN.
        let start = self.entries.get(head + 1)?.offset;
        Some((start, head + 1..end.checked_sub(1)?.max(head + 1)))
    }

    /// Entry `e` as compared: counters and the kernel's `comefrom` zeroed,
    /// and a jump's offset (which moves with every rule above it) zeroed.
    pub fn normalised(&self, e: &Entry) -> Vec<u8> {
        let l = self.layout();
        let mut b = self.bytes(e).to_vec();
        b[l.comefrom..l.comefrom + 4].fill(0);
        b[l.counters..l.counters + 16].fill(0);
        if let Target::Standard(v) = self.target(e) {
            if v >= 0 {
                let t = u16_at(&b, l.target_offset).unwrap_or_default() as usize + XT_HEADER;
                b[t..t + 4].fill(0);
            }
        }
        b
    }

    /// Whether entry `e` carries our mark: a `comment` match whose text is
    /// ours (whatever follows the text's end).
    pub fn marked_ours(&self, e: &Entry) -> bool {
        let l = self.layout();
        let b = self.bytes(e);
        let t = u16_at(b, l.target_offset).unwrap_or_default() as usize;
        let mut at = l.header;
        while at + XT_HEADER <= t {
            let size = u16_at(b, at).unwrap_or_default() as usize;
            if size < XT_HEADER {
                return false;
            }
            if name_at(b, at + 2).as_deref() == Some("comment") {
                let text = b.get(at + XT_HEADER..at + size).unwrap_or_default();
                let mut want = COMMENT.as_bytes().to_vec();
                want.push(0);
                if text.starts_with(&want) {
                    return true;
                }
            }
            at += size;
        }
        false
    }

    /// The blob without the entries at `drop` (indices): offsets of the
    /// remaining entries, of jumps and of hook entries and underflows moved
    /// to match. A jump to a dropped entry lands on the entry after it. None
    /// when a hook's entry or underflow would be dropped.
    pub fn without(&self, drop: &[usize]) -> Option<Edited> {
        let l = self.layout();
        let mut new_offset = Vec::with_capacity(self.entries.len() + 1);
        let mut at = 0u32;
        for (i, e) in self.entries.iter().enumerate() {
            new_offset.push(at);
            if !drop.contains(&i) {
                at += e.len;
            }
        }
        let end = at;
        let moved = |old: u32| -> Option<u32> {
            match self.index_at(old) {
                Some(i) => Some(new_offset[i]),
                None if old == self.entries.last().map_or(0, |e| e.offset + e.len) => Some(end),
                None => None,
            }
        };
        let mut hook_entry = self.hook_entry;
        let mut underflow = self.underflow;
        for h in 0..HOOKS {
            if self.valid_hooks & (1 << h) == 0 {
                continue;
            }
            // A hook's first rule may go (the hook then starts at the next
            // entry); its policy entry may not.
            if self.index_at(self.hook_entry[h]).is_none()
                || self.index_at(self.underflow[h]).is_none_or(|u| drop.contains(&u))
            {
                return None;
            }
            hook_entry[h] = moved(self.hook_entry[h])?;
            underflow[h] = moved(self.underflow[h])?;
        }
        let mut blob = Vec::with_capacity(end as usize);
        let mut kept = Vec::new();
        for (i, e) in self.entries.iter().enumerate() {
            if drop.contains(&i) {
                continue;
            }
            let mut b = self.bytes(e).to_vec();
            if let Target::Standard(v) = self.target(e) {
                if v >= 0 {
                    let t = u16_at(&b, l.target_offset)? as usize + XT_HEADER;
                    b[t..t + 4].copy_from_slice(&moved(v as u32)?.to_ne_bytes());
                }
            }
            blob.extend_from_slice(&b);
            kept.push(i);
        }
        Some(Edited {
            hook_entry,
            underflow,
            blob,
            kept,
        })
    }
}

/// A table blob ready for `IPT_SO_SET_REPLACE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edited {
    pub hook_entry: [u32; HOOKS],
    pub underflow: [u32; HOOKS],
    pub blob: Vec<u8>,
    /// Indices (in the table read) of the entries kept, in order: whose
    /// counters go to which new entry.
    pub kept: Vec<usize>,
}

/// `IPT_INV_VIA_IN` / `IPT_INV_VIA_OUT` (the same bits for IPv6).
const INV_VIA: [u8; 2] = [0x01, 0x02];
/// `IFNAMSIZ`.
const IFNAME: usize = 16;

/// Whether an interface name and mask are as iptables writes them, so that
/// what `iptables-save` prints is all the kernel matches: the mask is 0xff
/// for a prefix and zero after it, nothing of the name lies beyond the
/// mask but a wildcard's `+`, and an inverted match names something. (`!
/// -i +` masks nothing and prints nothing, yet never matches; a mask byte
/// past a zero one prints nothing and stops every match.)
fn canonical_iface(name: &[u8], mask: &[u8], inverted: bool) -> bool {
    let n = mask.iter().take_while(|b| **b == 0xff).count();
    if mask[n..].iter().any(|b| *b != 0) || n == 0 && inverted {
        return false;
    }
    let rest = &name[n..];
    rest.iter().all(|b| *b == 0) || rest[0] == b'+' && rest[1..].iter().all(|b| *b == 0)
}

impl LegacyTable {
    /// Whether entry `e`'s interface matches are as iptables writes them
    /// (`canonical_iface`), for both directions.
    pub fn canonical_header(&self, e: &Entry) -> bool {
        let l = self.layout();
        let b = self.bytes(e);
        let inv = b[l.invflags];
        (0..2).all(|dir| {
            let name = &b[l.iface + IFNAME * dir..l.iface + IFNAME * (dir + 1)];
            let mask = &b[l.iface + IFNAME * (2 + dir)..l.iface + IFNAME * (3 + dir)];
            canonical_iface(name, mask, inv & INV_VIA[dir] != 0)
        })
    }
}

/// `XT_RETURN` as a standard verdict.
const RETURN: i32 = -5;

/// The normalised bytes iptables writes at the end of a user-defined chain:
/// an empty `ipt_ip`, no match, the standard target returning.
pub fn chain_end(fam: Family) -> Vec<u8> {
    let l = layout(fam);
    let next = l.header + STANDARD_TARGET;
    let mut b = vec![0u8; next];
    b[l.target_offset..l.target_offset + 2].copy_from_slice(&(l.header as u16).to_ne_bytes());
    b[l.next_offset..l.next_offset + 2].copy_from_slice(&(next as u16).to_ne_bytes());
    b[l.header..l.header + 2].copy_from_slice(&(STANDARD_TARGET as u16).to_ne_bytes());
    b[l.header + XT_HEADER..l.header + XT_HEADER + 4].copy_from_slice(&RETURN.to_ne_bytes());
    b
}

/// The normalised bytes iptables writes for our jump
/// (`-m comment --comment apiserver-guard -j APISERVER-GUARD`): an empty
/// `ipt_ip`, one `comment` match (revision 0) and the standard target.
pub fn our_jump(fam: Family) -> Vec<u8> {
    let l = layout(fam);
    let matches = XT_HEADER + COMMENT_LEN;
    let target = l.header + matches;
    let next = target + STANDARD_TARGET;
    let mut b = vec![0u8; next];
    b[l.target_offset..l.target_offset + 2].copy_from_slice(&(target as u16).to_ne_bytes());
    b[l.next_offset..l.next_offset + 2].copy_from_slice(&(next as u16).to_ne_bytes());
    let m = l.header;
    b[m..m + 2].copy_from_slice(&(matches as u16).to_ne_bytes());
    b[m + 2..m + 2 + "comment".len()].copy_from_slice(b"comment");
    b[m + XT_HEADER..m + XT_HEADER + COMMENT.len()].copy_from_slice(COMMENT.as_bytes());
    b[target..target + 2].copy_from_slice(&(STANDARD_TARGET as u16).to_ne_bytes());
    b
}

/// Tables the kernel handed out (tests/fixtures/legacy: made with
/// iptables-legacy 1.8.9, with the `-save` text of each next to it).
#[cfg(test)]
pub(crate) mod fixture {
    use super::*;

    /// FORWARD: our jump, `-s <foreign> -j ACCEPT`, `-j FOO`; OUTPUT: our jump;
    /// our chain: one REJECT rule; chain FOO: one ACCEPT rule.
    pub fn table(fam: Family) -> LegacyTable {
        let text = match fam {
            Family::V4 => include_str!("../../tests/fixtures/legacy/filter-v4.hex"),
            Family::V6 => include_str!("../../tests/fixtures/legacy/filter-v6.hex"),
        };
        let mut lines = text.lines().map(|l| {
            (0..l.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&l[i..i + 2], 16).unwrap())
                .collect::<Vec<u8>>()
        });
        let info = parse_info(&lines.next().unwrap()).unwrap();
        parse(fam, &info, &lines.next().unwrap()).unwrap()
    }

    /// The table `e` made of `t`, as the kernel would hand it out.
    pub fn reparse(t: &LegacyTable, e: &Edited) -> LegacyTable {
        let info = (
            t.valid_hooks,
            e.hook_entry,
            e.underflow,
            e.kept.len() as u32,
            e.blob.len() as u32,
        );
        parse(t.family, &info, &e.blob).unwrap()
    }
}

#[cfg(test)]
#[path = "iptables_legacy_blob_tests.rs"]
mod tests;
