//! `[server] pid_file`: which process is the serving slotproxy, for
//! `kill -USR2 $(cat <pid_file>)` and friends.
//!
//! Written once the proxy serves (`readiness`), durably — a temporary file
//! in the same directory, fsync, rename, fsync of the directory — so a
//! reader never sees it half written. Removed when the process exits, but
//! only while it still names this process: after an upgrade the new
//! process has written its own pid there, and the old one, exiting later,
//! must leave it alone.

use std::io::Write;
use std::path::Path;

/// Write `pid` to `path` atomically and durably.
pub fn write(path: &Path, pid: u32) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "slotproxy.pid".into());
    // per process, so an old and a new slotproxy never write the same one
    let tmp = dir.join(format!(".{name}.{pid}.tmp"));
    let written = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(format!("{pid}\n").as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// The pid `path` names, if it holds one.
pub fn read(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Remove `path` if it names `pid`; whether it did.
pub fn remove_if_ours(path: &Path, pid: u32) -> bool {
    read(path) == Some(pid) && std::fs::remove_file(path).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_whole_and_removed_only_by_its_process() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("slotproxy.pid");
        write(&path, 41).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "41\n");
        // the successor writes over it; the old process then leaves it
        write(&path, 42).unwrap();
        assert!(!remove_if_ours(&path, 41));
        assert_eq!(read(&path), Some(42));
        assert!(remove_if_ours(&path, 42));
        assert!(!path.exists());
        // no temporary file is left behind
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn a_missing_directory_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        assert!(write(&dir.path().join("no/such/dir/x.pid"), 1).is_err());
    }
}
