//! The embedded state store: `<dir>/state.json`, written to a temporary file,
//! fsynced, renamed over the old one, and the directory fsynced, so the file
//! on disk is always one whole document, old or new.

use super::{Persisted, StateStore, StoreError};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

pub struct FileStore {
    dir: PathBuf,
}

const FILE: &str = "state.json";

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
        let path = self.path();
        let tmp = self.dir.join(format!(".{FILE}.{}.tmp", std::process::id()));
        let body = serde_json::to_vec_pretty(doc).expect("state serializes");
        let write = || -> std::io::Result<()> {
            let mut f = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .open(&tmp)?;
            f.write_all(&body)?;
            f.sync_all()?;
            fs::rename(&tmp, &path)?;
            // make the rename itself durable
            File::open(&self.dir)?.sync_all()
        };
        write().map_err(|e| {
            let _ = fs::remove_file(&tmp);
            io(&path, "write", e)
        })
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
