//! The embedded state store: `<dir>/state.json` and one
//! `<dir>/operations/<id>.json` per activity-log entry, each written to a
//! temporary file, fsynced, renamed over the old one, and the directory
//! fsynced, so a file on disk is always one whole document, old or new.

use super::{Persisted, StateStore, StoreError};
use crate::activity::Operation;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

pub struct FileStore {
    dir: PathBuf,
    /// The open, `flock`ed `<dir>/lock`: one writer per state directory.
    /// `None` once released to a successor.
    lock: std::sync::Mutex<Option<File>>,
}

const FILE: &str = "state.json";
const LOCK: &str = "lock";
/// One file per operation of the activity log.
const OPS: &str = "operations";

impl FileStore {
    /// Use `dir`, creating it if needed, as its only writer. When another
    /// process holds it, wait up to `patience` for it to let go (a graceful
    /// upgrade), then fail naming the holder.
    pub fn open(dir: &Path, patience: std::time::Duration) -> Result<FileStore, StoreError> {
        fs::create_dir_all(dir).map_err(|e| io(dir, "create directory", e))?;
        let path = dir.join(LOCK);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| io(&path, "open", e))?;
        let deadline = std::time::Instant::now() + patience;
        loop {
            // SAFETY: flock on a file descriptor we own; no memory involved.
            let r = unsafe {
                libc::flock(
                    std::os::fd::AsRawFd::as_raw_fd(&file),
                    libc::LOCK_EX | libc::LOCK_NB,
                )
            };
            if r == 0 {
                break;
            }
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::EWOULDBLOCK) {
                return Err(io(&path, "lock", err));
            }
            if std::time::Instant::now() >= deadline {
                let mut pid = String::new();
                let _ = std::io::Read::read_to_string(&mut file, &mut pid);
                let holder = match pid.trim() {
                    "" => String::new(),
                    p => format!(" (pid {p})"),
                };
                return Err(StoreError::Locked {
                    path: dir.display().to_string(),
                    holder,
                });
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let _ = file.set_len(0);
        let _ = file.write_all(std::process::id().to_string().as_bytes());
        Ok(FileStore {
            dir: dir.to_path_buf(),
            lock: std::sync::Mutex::new(Some(file)),
        })
    }

    fn check_writable(&self) -> Result<(), StoreError> {
        match self
            .lock
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
        {
            true => Ok(()),
            false => Err(StoreError::HandedOver),
        }
    }

    pub fn path(&self) -> PathBuf {
        self.dir.join(FILE)
    }
}

fn io(path: &Path, op: &'static str, source: std::io::Error) -> StoreError {
    StoreError::Io {
        path: path.display().to_string(),
        op,
        source,
    }
}

/// Replace `dir/name` with `body` so that a crash leaves the old or the new
/// file, never a torn one: temporary file, fsync, rename, fsync directory.
fn write_atomic(dir: &Path, name: &str, body: &[u8]) -> Result<(), StoreError> {
    let path = dir.join(name);
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        f.write_all(body)?;
        f.sync_all()?;
        fs::rename(&tmp, &path)?;
        File::open(dir)?.sync_all()
    };
    write().map_err(|e| {
        let _ = fs::remove_file(&tmp);
        io(&path, "write", e)
    })
}

impl StateStore for FileStore {
    fn load(&self) -> Result<Option<Persisted>, StoreError> {
        let path = self.path();
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(&path, "read", e)),
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|source| StoreError::Corrupt {
                path: path.display().to_string(),
                source,
            })
    }

    fn save(&self, doc: &Persisted) -> Result<(), StoreError> {
        self.check_writable()?;
        let body = serde_json::to_vec_pretty(doc).expect("state serializes");
        write_atomic(&self.dir, FILE, &body)
    }

    fn save_operation(&self, op: &Operation) -> Result<(), StoreError> {
        self.check_writable()?;
        let dir = self.dir.join(OPS);
        fs::create_dir_all(&dir).map_err(|e| io(&dir, "create directory", e))?;
        let body = serde_json::to_vec_pretty(op).expect("operation serializes");
        write_atomic(&dir, &format!("{}.json", op.id), &body)
    }

    fn load_operations(&self) -> Result<Vec<Operation>, StoreError> {
        let dir = self.dir.join(OPS);
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io(&dir, "list", e)),
        };
        let mut ops = Vec::new();
        for entry in entries {
            let path = entry.map_err(|e| io(&dir, "list", e))?.path();
            if path.extension().and_then(|e| e.to_str()) != Some("json") {
                continue;
            }
            let bytes = fs::read(&path).map_err(|e| io(&path, "read", e))?;
            let op = serde_json::from_slice(&bytes).map_err(|source| StoreError::Corrupt {
                path: path.display().to_string(),
                source,
            })?;
            ops.push(op);
        }
        Ok(ops)
    }

    fn delete_operation(&self, id: &str) -> Result<(), StoreError> {
        let path = self.dir.join(OPS).join(format!("{id}.json"));
        match fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(&path, "delete", e)),
            _ => Ok(()),
        }
    }

    fn release(&self) {
        // closing the descriptor drops the flock
        self.lock.lock().unwrap_or_else(|p| p.into_inner()).take();
    }

    fn describe(&self) -> String {
        self.path().display().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn round_trip_and_first_start() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::open(&dir.path().join("nested"), Duration::ZERO).unwrap();
        assert_eq!(store.load().unwrap(), None);
        let doc = Persisted {
            revision: 7,
            ..Default::default()
        };
        store.save(&doc).unwrap();
        assert_eq!(store.load().unwrap(), Some(doc));
        // no temporary file is left behind (state.json and the lock)
        let names: Vec<_> = fs::read_dir(dir.path().join("nested")).unwrap().collect();
        assert_eq!(names.len(), 2);
        let op = Operation::new("s", "staging", "production", crate::activity::Action::Swap);
        store.save_operation(&op).unwrap();
        assert_eq!(store.load_operations().unwrap(), vec![op.clone()]);
        store.delete_operation(&op.id).unwrap();
        assert_eq!(store.load_operations().unwrap(), vec![]);
    }

    #[test]
    fn an_operation_is_replaced_only_over_what_was_read() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::open(dir.path(), Duration::ZERO).unwrap();
        let read = Operation::new("s", "staging", "production", crate::activity::Action::Swap);
        store.save_operation(&read).unwrap();
        let mut ended = read.clone();
        ended.finish(
            crate::activity::Status::Failed,
            Some("by its runner".into()),
        );
        let mut interrupted = read.clone();
        interrupted.finish(
            crate::activity::Status::Interrupted,
            Some("taken over".into()),
        );
        // over what was read: written
        assert!(store.save_operation_if(&ended, &read).unwrap());
        // over a stale read: refused, the runner's record stays
        assert!(!store.save_operation_if(&interrupted, &read).unwrap());
        assert_eq!(store.load_operation(&read.id).unwrap(), Some(ended));
    }

    #[test]
    fn one_writer_per_directory_until_it_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let first = FileStore::open(dir.path(), Duration::ZERO).unwrap();
        let e = FileStore::open(dir.path(), Duration::from_millis(100))
            .err()
            .unwrap();
        let msg = e.to_string();
        assert!(
            msg.contains("in use by another slotproxy")
                && msg.contains(&format!("pid {}", std::process::id())),
            "{msg}"
        );
        first.release();
        assert!(matches!(
            first.save(&Persisted::default()),
            Err(StoreError::HandedOver)
        ));
        let second = FileStore::open(dir.path(), Duration::ZERO).unwrap();
        second.save(&Persisted::default()).unwrap();
    }

    #[test]
    fn corrupt_state_is_reported_not_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(FILE), b"{not json").unwrap();
        let store = FileStore::open(dir.path(), Duration::ZERO).unwrap();
        let e = store.load().unwrap_err().to_string();
        assert!(e.contains("not valid state"), "{e}");
    }
}
