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
}

const FILE: &str = "state.json";
/// One file per operation of the activity log.
const OPS: &str = "operations";

impl FileStore {
    /// Use `dir`, creating it if needed.
    pub fn open(dir: &Path) -> Result<FileStore, StoreError> {
        fs::create_dir_all(dir).map_err(|e| io(dir, "create directory", e))?;
        Ok(FileStore {
            dir: dir.to_path_buf(),
        })
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
        let body = serde_json::to_vec_pretty(doc).expect("state serializes");
        write_atomic(&self.dir, FILE, &body)
    }

    fn save_operation(&self, op: &Operation) -> Result<(), StoreError> {
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

    fn describe(&self) -> String {
        self.path().display().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_first_start() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::open(&dir.path().join("nested")).unwrap();
        assert_eq!(store.load().unwrap(), None);
        let doc = Persisted {
            revision: 7,
            ..Default::default()
        };
        store.save(&doc).unwrap();
        assert_eq!(store.load().unwrap(), Some(doc));
        // no temporary file is left behind
        let names: Vec<_> = fs::read_dir(dir.path().join("nested")).unwrap().collect();
        assert_eq!(names.len(), 1);
        let op = Operation::new("s", "staging", "production", crate::activity::Action::Swap);
        store.save_operation(&op).unwrap();
        assert_eq!(store.load_operations().unwrap(), vec![op.clone()]);
        store.delete_operation(&op.id).unwrap();
        assert_eq!(store.load_operations().unwrap(), vec![]);
    }

    #[test]
    fn corrupt_state_is_reported_not_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(FILE), b"{not json").unwrap();
        let store = FileStore::open(dir.path()).unwrap();
        let e = store.load().unwrap_err().to_string();
        assert!(e.contains("not valid state"), "{e}");
    }
}
