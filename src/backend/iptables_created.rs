//! Which nf_tables `filter` tables an iptables-nft `apply` created, so that
//! `remove` can delete them again and never a table that was there before us.
//!
//! The record is one file per network namespace under
//! `/run/apiserver-guard/iptables-nft-created/` (tmpfs, cleared at boot like
//! the ruleset itself), named after the namespace's identity (device and inode
//! of `/proc/self/ns/net`), one line per family (`ip filter`, `ip6 filter`).
//! A stale record (a namespace that died and whose inode was reused) can at
//! worst let `remove` delete an EMPTY filter table: the delete is refused by
//! the kernel for a table holding anything (`nfnl::delete_table_if_empty`).

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use crate::core::model::Family;
use crate::error::{Error, Result};

/// Directory of the records (tmpfs).
const DIR: &str = "/run/apiserver-guard/iptables-nft-created";

/// nft's name of the filter table of one family, as written in the record.
pub fn table_name(fam: Family) -> &'static str {
    match fam {
        Family::V4 => "ip filter",
        Family::V6 => "ip6 filter",
    }
}

/// The record of this network namespace.
fn record_path() -> Result<PathBuf> {
    let ns = std::fs::metadata("/proc/self/ns/net").map_err(|e| {
        Error::runtime(format!(
            "cannot identify the network namespace (/proc/self/ns/net): {e}"
        ))
    })?;
    Ok(PathBuf::from(DIR).join(format!("netns-{}-{}", ns.dev(), ns.ino())))
}

/// The families whose filter table our `apply` created in this namespace.
pub fn recorded() -> Result<Vec<Family>> {
    let path = record_path()?;
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::runtime(format!("cannot read {}: {e}", path.display()))),
    };
    Ok(Family::ALL
        .into_iter()
        .filter(|f| text.lines().any(|l| l.trim() == table_name(*f)))
        .collect())
}

/// Writes the record: exactly `families` (the file is removed when none).
fn write(families: &[Family]) -> Result<()> {
    let path = record_path()?;
    let io = |e: std::io::Error| Error::runtime(format!("cannot write {}: {e}", path.display()));
    if families.is_empty() {
        return match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(e)),
            _ => Ok(()),
        };
    }
    std::fs::create_dir_all(DIR).map_err(io)?;
    let text: String = families.iter().map(|f| format!("{}\n", table_name(*f))).collect();
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).map_err(io)?;
    std::fs::rename(&tmp, &path).map_err(io)
}

/// Notes that our `apply` created the filter table of `fam`.
pub fn record(fam: Family) -> Result<()> {
    let mut fams = recorded()?;
    if !fams.contains(&fam) {
        fams.push(fam);
        write(&fams)?;
    }
    Ok(())
}

/// Forgets `fam` (its table was deleted again, or is gone).
pub fn forget(fam: Family) -> Result<()> {
    let fams: Vec<Family> = recorded()?.into_iter().filter(|f| *f != fam).collect();
    write(&fams)
}
