//! Reading a configuration file without ever blocking: the path must name a
//! regular file (symlinks are followed, as ConfigMap mounts need), it is
//! opened non-blocking so a FIFO or a device put in its place cannot stall
//! the caller, and it is read up to a size cap. A FIFO, socket, device or
//! directory is refused with a message that says what was found instead.
//! The one device accepted is `/dev/null` (the usual "no config" idiom in
//! scripts): it reads as empty and never blocks.

use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

/// Largest config file we read (a real one is a few hundred bytes).
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// Why a file could not be read.
#[derive(Debug)]
pub enum ReadError {
    /// Nothing at that path.
    NotFound,
    /// Something other than a regular file is there ("a FIFO", "a directory", ...).
    NotRegular(&'static str),
    /// Larger than `MAX_CONFIG_BYTES`.
    TooLarge(u64),
    Io(io::Error),
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::NotFound => write!(f, "no such file"),
            ReadError::NotRegular(what) => write!(f, "it is {what}, not a regular file"),
            ReadError::TooLarge(n) => write!(
                f,
                "it is {n} bytes, more than the {MAX_CONFIG_BYTES} a config file may have"
            ),
            ReadError::Io(e) => write!(f, "{e}"),
        }
    }
}

fn kind_of(ft: &std::fs::FileType) -> &'static str {
    if ft.is_fifo() {
        "a FIFO (named pipe)"
    } else if ft.is_socket() {
        "a socket"
    } else if ft.is_char_device() {
        "a character device"
    } else if ft.is_block_device() {
        "a block device"
    } else if ft.is_dir() {
        "a directory"
    } else {
        "not a regular file"
    }
}

/// Whether `path` is the null device (a character device 1:3 at /dev/null).
fn is_dev_null(path: &Path, meta: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    meta.file_type().is_char_device()
        && meta.rdev() == libc::makedev(1, 3)
        && std::fs::canonicalize(path).is_ok_and(|p| p == Path::new("/dev/null"))
}

/// The bytes of the regular file at `path`, never blocking on what is there.
pub fn read_regular(path: &Path) -> Result<Vec<u8>, ReadError> {
    // Look first (stat follows symlinks), so a FIFO is not even opened...
    let meta = std::fs::metadata(path).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => ReadError::NotFound,
        _ => ReadError::Io(e),
    })?;
    if is_dev_null(path, &meta) {
        return Ok(Vec::new());
    }
    if !meta.file_type().is_file() {
        return Err(ReadError::NotRegular(kind_of(&meta.file_type())));
    }
    // ...and open non-blocking, so one swapped in after the look cannot stall us either.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => ReadError::NotFound,
            _ => ReadError::Io(e),
        })?;
    let opened = file.metadata().map_err(ReadError::Io)?;
    if !opened.file_type().is_file() {
        return Err(ReadError::NotRegular(kind_of(&opened.file_type())));
    }
    if opened.len() > MAX_CONFIG_BYTES {
        return Err(ReadError::TooLarge(opened.len()));
    }
    let mut bytes = Vec::with_capacity(opened.len() as usize);
    Read::by_ref(&mut { file })
        .take(MAX_CONFIG_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(ReadError::Io)?;
    if bytes.len() as u64 > MAX_CONFIG_BYTES {
        return Err(ReadError::TooLarge(bytes.len() as u64));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;

    fn tmp(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("ag-regular-{}-{name}", std::process::id()));
        let _ = std::fs::remove_file(&dir);
        dir
    }

    #[test]
    fn a_regular_file_and_a_symlink_to_one_are_read() {
        let p = tmp("file");
        std::fs::write(&p, b"mode = \"tunnel\"\n").unwrap();
        assert_eq!(read_regular(&p).unwrap(), b"mode = \"tunnel\"\n");
        let link = tmp("link");
        std::os::unix::fs::symlink(&p, &link).unwrap();
        assert_eq!(read_regular(&link).unwrap(), b"mode = \"tunnel\"\n");
        std::fs::remove_file(link).unwrap();
        std::fs::remove_file(p).unwrap();
    }

    #[test]
    fn a_fifo_is_refused_at_once_never_waited_on() {
        let p = tmp("fifo");
        let c = CString::new(p.as_os_str().as_bytes()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let started = std::time::Instant::now();
        let err = read_regular(&p).unwrap_err();
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
        assert_eq!(err.to_string(), "it is a FIFO (named pipe), not a regular file");
        std::fs::remove_file(p).unwrap();
    }

    #[test]
    fn dev_null_reads_as_empty() {
        assert_eq!(read_regular(Path::new("/dev/null")).unwrap(), Vec::<u8>::new());
    }

    #[test]
    fn devices_directories_missing_and_huge_files_are_refused() {
        assert!(matches!(
            read_regular(Path::new("/dev/zero")),
            Err(ReadError::NotRegular("a character device"))
        ));
        assert!(matches!(
            read_regular(Path::new("/")),
            Err(ReadError::NotRegular("a directory"))
        ));
        assert!(matches!(read_regular(&tmp("absent")), Err(ReadError::NotFound)));
        let p = tmp("huge");
        std::fs::write(&p, vec![b'#'; MAX_CONFIG_BYTES as usize + 1]).unwrap();
        assert!(matches!(read_regular(&p), Err(ReadError::TooLarge(_))));
        std::fs::remove_file(p).unwrap();
    }
}
