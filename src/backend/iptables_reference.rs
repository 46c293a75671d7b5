//! Where the iptables read-backs by bytes keep their reference
//! (`core::iptables_nft_read::Reference`: the bytes iptables wrote for our
//! rules) between reads: in this process, and in one file per variant,
//! network namespace and family under
//! `/run/apiserver-guard/iptables-{nft,legacy}-reference/` (tmpfs, root
//! only) so that the next `status`, another process, finds it; at most 64
//! files per variant (those of namespaces long gone would pile up: the
//! oldest go).
//! Best effort both ways: no file, a file learnt for another wanted state or
//! one that does not parse only means the next read is the text read-back
//! (and the next write learns it again). The daemon reads no file: it trusts
//! only what it learnt from its own writes.

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use super::iptables_created::netns_name;
use crate::core::iptables_nft_read::Reference;
use crate::core::model::Family;

/// Directory of one variant's files (tmpfs); `variant` is `nft` or `legacy`.
fn dir(variant: &str) -> PathBuf {
    PathBuf::from(format!("/run/apiserver-guard/iptables-{variant}-reference"))
}

/// References this process learnt or loaded, by file name.
static KNOWN: Mutex<Option<HashMap<String, Reference>>> = Mutex::new(None);

/// Whether references are also read from the files (off in the daemon).
static READ_FILES: AtomicBool = AtomicBool::new(true);

/// From now on this process trusts only what it learnt from its own writes
/// (the daemon): a file another root process forged next to a tampered rule
/// could otherwise make it call the tamper ours. It still writes the files
/// for the one-shot commands.
pub fn trust_own_writes_only() {
    READ_FILES.store(false, Ordering::Relaxed);
}

/// The file name of one family's reference in this network namespace.
fn name(fam: Family) -> Option<String> {
    let fam = match fam {
        Family::V4 => "ip",
        Family::V6 => "ip6",
    };
    Some(format!("{}-{fam}", netns_name().ok()?))
}

/// The reference learnt for the wanted state `key` in family `fam` of
/// iptables `variant` (`nft`, `legacy`), if any.
pub fn load(variant: &str, fam: Family, key: &str) -> Option<Reference> {
    let name = name(fam)?;
    let known_as = format!("{variant}/{name}");
    let mut known = KNOWN.lock().unwrap_or_else(|p| p.into_inner());
    let known = known.get_or_insert_with(HashMap::new);
    if let Some(r) = known.get(&known_as).filter(|r| r.key == key) {
        return Some(r.clone());
    }
    if !READ_FILES.load(Ordering::Relaxed) {
        return None;
    }
    // Never blocks on what is there (a FIFO put in its place hung `status`).
    let bytes = crate::regular_file::read_regular(&dir(variant).join(&name)).ok()?;
    let r = Reference::from_text(std::str::from_utf8(&bytes).ok()?)?;
    if r.key != key {
        return None;
    }
    known.insert(known_as, r.clone());
    Some(r)
}

/// Keeps `reference` for family `fam` of `variant` (memory, then the file:
/// a read-only /run, as in a container, keeps it in memory only).
pub fn store(variant: &str, fam: Family, reference: &Reference) {
    let Some(name) = name(fam) else { return };
    {
        let mut known = KNOWN.lock().unwrap_or_else(|p| p.into_inner());
        let known = known.get_or_insert_with(HashMap::new);
        let known_as = format!("{variant}/{name}");
        if known.get(&known_as) == Some(reference) {
            return;
        }
        known.insert(known_as, reference.clone());
    }
    if let Err(e) = write(&dir(variant), &name, reference) {
        log::debug!(
            "cannot keep the iptables-{variant} reference in {}: {e}",
            dir(variant).display()
        );
    }
}

fn write(dir: &std::path::Path, name: &str, reference: &Reference) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join(name);
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        // A FIFO or symlink put at that path must not block or redirect us.
        .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW)
        .open(&tmp)?;
    f.write_all(reference.to_text().as_bytes())?;
    std::fs::rename(&tmp, &path)?;
    prune(dir, name);
    Ok(())
}

/// Most reference files kept per variant: one per namespace and family
/// that ever ran a write; those of namespaces long gone would pile up.
const KEEP: usize = 64;

/// Deletes the oldest files of `dir` beyond `KEEP` (never `ours`). A file
/// deleted that was still of use only costs one text read-back and one
/// rewrite, which learns it again.
fn prune(dir: &std::path::Path, ours: &str) {
    let Ok(list) = std::fs::read_dir(dir) else { return };
    let files: Vec<(String, std::time::SystemTime)> = list
        .filter_map(|e| {
            let e = e.ok()?;
            let meta = e.metadata().ok()?;
            Some((e.file_name().into_string().ok()?, meta.modified().ok()?))
        })
        .collect();
    for name in beyond_keep(files, ours) {
        let _ = std::fs::remove_file(dir.join(name));
    }
}

/// The names to delete so that at most `KEEP` files stay: the oldest
/// first, never `ours`.
fn beyond_keep(mut files: Vec<(String, std::time::SystemTime)>, ours: &str) -> Vec<String> {
    if files.len() <= KEEP {
        return Vec::new();
    }
    files.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let excess = files.len() - KEEP;
    files
        .into_iter()
        .rev()
        .filter(|(n, _)| n != ours)
        .take(excess)
        .map(|(n, _)| n)
        .collect()
}

/// Forgets family `fam`'s reference of `variant` (our objects were removed).
pub fn forget(variant: &str, fam: Family) {
    let Some(name) = name(fam) else { return };
    if let Some(known) = KNOWN.lock().unwrap_or_else(|p| p.into_inner()).as_mut() {
        known.remove(&format!("{variant}/{name}"));
    }
    let _ = std::fs::remove_file(dir(variant).join(name));
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, SystemTime};

    fn files(n: usize) -> Vec<(String, SystemTime)> {
        (0..n)
            .map(|i| {
                (
                    format!("ns-{i}-ip"),
                    SystemTime::UNIX_EPOCH + Duration::from_secs(i as u64),
                )
            })
            .collect()
    }

    #[test]
    fn at_most_keep_files_stay_and_the_oldest_go_first() {
        assert!(beyond_keep(files(KEEP), "x").is_empty());
        let gone = beyond_keep(files(KEEP + 3), "x");
        assert_eq!(gone, vec!["ns-0-ip", "ns-1-ip", "ns-2-ip"]);
    }

    #[test]
    fn our_own_file_is_never_pruned() {
        let gone = beyond_keep(files(KEEP + 2), "ns-0-ip");
        assert_eq!(gone, vec!["ns-1-ip", "ns-2-ip"]);
    }
}
