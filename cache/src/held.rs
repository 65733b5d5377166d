//! Directories a running kiln holds in a store's `tmp/`: action sandboxes and views of
//! Go's compile cache.
//!
//! Each `NAME` lies beside `NAME.lock`, which the kiln that made it keeps locked
//! (flock) for as long as it uses the directory. A kiln killed outright (`kill -9`, the
//! OOM killer, a CI runner's hard timeout) leaves both behind; [`remove_abandoned`]
//! tells them from those of a kiln still running by taking the lock, and removes them.
//! An interrupted kiln (SIGINT, SIGTERM) removes its own before it exits
//! ([`remove_all`]), since `exit` runs no destructor.

use std::collections::HashSet;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::error::{Error, Result};

/// A directory this process holds in `tmp/`. Removed, with its lock, when dropped.
#[derive(Debug)]
pub struct HeldDir {
    path: Option<PathBuf>,
    lock: Option<(fs::File, PathBuf)>,
}

impl HeldDir {
    /// A new, empty directory in `tmp` whose name starts with `prefix`.
    pub fn create(tmp: &Path, prefix: &str) -> Result<HeldDir> {
        let failed = |e| Error::io("create a directory in", tmp, e);
        let (lock, lock_path) = tempfile::Builder::new()
            .prefix(prefix)
            .suffix(".lock")
            .tempfile_in(tmp)
            .map_err(failed)?
            .keep()
            .map_err(|e| failed(e.error))?;
        // SAFETY: flock(2) on a descriptor this process owns.
        unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&lock), libc::LOCK_EX) };
        let path = PathBuf::from(lock_path.to_string_lossy().trim_end_matches(".lock"));
        let mut held = HeldDir {
            path: None,
            lock: Some((lock, lock_path)),
        };
        fs::create_dir(&path).map_err(|e| Error::io("create", &path, e))?;
        add(&path);
        held.path = Some(path);
        Ok(held)
    }

    pub fn path(&self) -> &Path {
        self.path
            .as_ref()
            .expect("a held directory has its path until kept or dropped")
    }

    /// Leaves the directory in place (for debugging a failed action); returns its path.
    pub fn keep(mut self) -> PathBuf {
        let path = self
            .path
            .take()
            .expect("a held directory has its path until kept or dropped");
        remove(&path);
        path
    }
}

impl Drop for HeldDir {
    fn drop(&mut self) {
        if let Some(path) = self.path.take() {
            remove_tree(&path);
            remove(&path);
        }
        if let Some((lock, path)) = self.lock.take() {
            let _ = fs::remove_file(path);
            drop(lock);
        }
    }
}

/// Removes the directories in `tmp` that no running kiln holds (left by one that was
/// killed): those whose lock can be taken. Cheap when there are none.
pub fn remove_abandoned(tmp: &Path) {
    let Ok(entries) = fs::read_dir(tmp) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(dir) = name.strip_suffix(".lock") else {
            continue;
        };
        let lock_path = entry.path();
        let Ok(lock) = fs::File::open(&lock_path) else {
            continue;
        };
        let fd = std::os::fd::AsRawFd::as_raw_fd(&lock);
        // SAFETY: flock(2) on a descriptor this process owns.
        if unsafe { libc::flock(fd, libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            continue;
        }
        remove_tree(&tmp.join(dir));
        let _ = fs::remove_file(&lock_path);
    }
}

/// Removes a directory tree, making read-only directories writable on the way.
pub fn remove_tree(dir: &Path) {
    if fs::remove_dir_all(dir).is_ok() || !dir.exists() {
        return;
    }
    for entry in walkdir::WalkDir::new(dir).into_iter().flatten() {
        if entry.file_type().is_dir() {
            let _ = fs::set_permissions(entry.path(), fs::Permissions::from_mode(0o755));
        }
    }
    let _ = fs::remove_dir_all(dir);
}

/// The directories this process holds, for [`remove_all`].
static HELD: Mutex<Option<HashSet<PathBuf>>> = Mutex::new(None);

/// Counts a directory as this process's, to be removed by [`remove_all`] (with a
/// `.lock` beside it, if there is one).
pub fn add(path: &Path) {
    let mut set = HELD.lock().unwrap();
    set.get_or_insert_with(HashSet::new)
        .insert(path.to_path_buf());
}

/// No longer counts a directory as this process's.
pub fn remove(path: &Path) {
    if let Some(set) = HELD.lock().unwrap().as_mut() {
        set.remove(path);
    }
}

/// Removes every directory this process holds, for a kiln about to exit on a signal
/// (the processes using them killed first).
pub fn remove_all() {
    let paths: Vec<PathBuf> = HELD
        .lock()
        .unwrap()
        .as_ref()
        .map(|s| s.iter().cloned().collect())
        .unwrap_or_default();
    for path in paths {
        remove_tree(&path);
        let _ = fs::remove_file(format!("{}.lock", path.display()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_what_no_running_process_holds_is_removed() {
        let tmp = tempfile::tempdir().unwrap();
        let held = HeldDir::create(tmp.path(), "view-").unwrap();
        std::fs::write(held.path().join("blob"), b"x").unwrap();
        // A killed kiln's: its lock file is there, no process holds it.
        let abandoned = tmp.path().join("sandbox-gone");
        std::fs::create_dir_all(abandoned.join("ro")).unwrap();
        std::fs::set_permissions(abandoned.join("ro"), fs::Permissions::from_mode(0o555)).unwrap();
        std::fs::write(tmp.path().join("sandbox-gone.lock"), b"").unwrap();
        // A blob's temporary file is not a held directory's.
        std::fs::write(tmp.path().join(".tmpAbC"), b"").unwrap();

        remove_abandoned(tmp.path());
        assert!(held.path().join("blob").exists(), "a held directory stays");
        assert!(!abandoned.exists(), "an abandoned one is removed");
        assert!(!tmp.path().join("sandbox-gone.lock").exists());
        assert!(tmp.path().join(".tmpAbC").exists());

        drop(held);
        assert_eq!(
            std::fs::read_dir(tmp.path()).unwrap().count(),
            1,
            "and goes when dropped"
        );
    }
}
