//! Discovered inputs ([`crate::action::Reads`]): from a process's read log to the set of
//! workspace paths it read, the state of each, and the second-level key record.
//!
//! A read set is what the first-level key `K1` names (stored as a blob, JSON); the
//! states of its entries, as [`KeyInput`]s, extend the key record into `K2`
//! ([`crate::key`]). A path is named in its key input as it is (`pkg/testdata/a.json`),
//! a listed directory with a `/`, a path only looked at with ` (stat)`, and an
//! environment variable as `$NAME`.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

use kiln_cache::FileStates;
use serde::{Deserialize, Serialize};

use crate::action::{LogEntry, Reads};
use crate::key::{KeyInput, ReadState};
use crate::workspace::OUT_DIR;

/// One thing a process read.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "kind", content = "name", rename_all = "lowercase")]
pub enum Read {
    /// A workspace path opened (a file read, a directory listed).
    Open(String),
    /// A workspace path looked at.
    Stat(String),
    /// An environment variable whose value is not in `K1` (see
    /// [`crate::sandbox::is_volatile`]).
    Env(String),
}

/// What a process read, sorted, each once.
pub type ReadSet = Vec<Read>;

/// The reads of a log, as workspace-relative paths below `reads.dir`.
///
/// `root` is the sandbox root and `workdir` the process's starting directory as the
/// process saw them; `volatile` tells which environment variables count.
pub fn resolve(
    entries: &[LogEntry],
    reads: &Reads,
    root: &Path,
    workdir: &str,
    volatile: impl Fn(&str) -> bool,
) -> ReadSet {
    let mut pwd = clean(&root.join(workdir));
    let mut set = BTreeSet::new();
    let relative = |path: &str, pwd: &Path| -> Option<String> {
        let abs = clean(&pwd.join(path));
        let rel = abs.strip_prefix(root).ok()?.to_str()?.to_string();
        readable(&rel, &reads.dir).then_some(rel)
    };
    for entry in entries {
        match entry {
            LogEntry::Chdir(dir) => pwd = clean(&pwd.join(dir)),
            LogEntry::Open(path) => set.extend(relative(path, &pwd).map(Read::Open)),
            LogEntry::Stat(path) => set.extend(relative(path, &pwd).map(Read::Stat)),
            LogEntry::Getenv(name) if volatile(name) => {
                set.insert(Read::Env(name.clone()));
            }
            LogEntry::Getenv(_) => {}
        }
    }
    set.into_iter().collect()
}

/// Where a remote run's reads reach what its root did not hold as a local run's does:
/// a path below `fixed` (the local sandbox's fixed root, where paths compiled into a
/// binary point: Go's `runtime.Caller`), or an entry of `left_out` (root-relative).
/// Such a run is not the run the key would name, and runs again here.
pub fn beyond(
    entries: &[LogEntry],
    root: &Path,
    workdir: &str,
    fixed: &Path,
    left_out: &[String],
) -> Option<String> {
    let mut pwd = clean(&root.join(workdir));
    let check = |path: &str, pwd: &Path| -> Option<String> {
        let abs = clean(&pwd.join(path));
        if root != fixed && abs.starts_with(fixed) {
            return Some(abs.display().to_string());
        }
        let rel = abs.strip_prefix(root).ok()?;
        left_out
            .iter()
            .any(|l| rel.starts_with(l))
            .then(|| abs.display().to_string())
    };
    for entry in entries {
        let found = match entry {
            LogEntry::Chdir(dir) => {
                pwd = clean(&pwd.join(dir));
                check(".", &pwd)
            }
            LogEntry::Open(path) | LogEntry::Stat(path) => check(path, &pwd),
            LogEntry::Getenv(_) => None,
        };
        if found.is_some() {
            return found;
        }
    }
    None
}

/// Whether a sandbox-relative path lies in the readable directory `dir`.
fn readable(rel: &str, dir: &str) -> bool {
    if dir.is_empty() {
        let first = rel.split('/').next().unwrap_or("");
        return !rel.is_empty() && first != OUT_DIR && first != ".kiln";
    }
    rel == dir || rel.strip_prefix(dir).is_some_and(|r| r.starts_with('/'))
}

/// A path with `.` and `..` resolved by name, as Go's `filepath.Join` does.
fn clean(path: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in path.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(n) => out.push(n),
            _ => {}
        }
    }
    out
}

/// A path read during the run changed while the process ran.
#[derive(Debug)]
pub struct Changed(pub String);

/// The key inputs standing for the state of every read, from the workspace at
/// `workspace` and the process's environment `env`. With `since` (ns since the epoch,
/// when the process started), a path changed since then is an error: the process may
/// have seen another state than the one that would be keyed.
pub fn states(
    set: &[Read],
    workspace: &Path,
    files: &FileStates,
    env: &BTreeMap<String, String>,
    since: Option<i64>,
) -> Result<Vec<KeyInput>, Changed> {
    set.iter()
        .map(|read| {
            let (name, state) = match read {
                Read::Env(var) => {
                    let value = env.get(var).map_or("", String::as_str);
                    let digest = kiln_cache::Digest::of_bytes(value.as_bytes());
                    (format!("${var}"), ReadState::File(digest))
                }
                Read::Open(path) => {
                    let state = state(&workspace.join(path), true, files, since)?;
                    match state {
                        ReadState::Listing(_) => (format!("{path}/"), state),
                        _ => (path.clone(), state),
                    }
                }
                Read::Stat(path) => (
                    format!("{path} (stat)"),
                    state(&workspace.join(path), false, files, since)?,
                ),
            };
            Ok(KeyInput {
                path: name,
                digest: state.digest(),
                executable: false,
            })
        })
        .collect()
}

fn state(
    path: &Path,
    open: bool,
    files: &FileStates,
    since: Option<i64>,
) -> Result<ReadState, Changed> {
    let changed = || Changed(path.display().to_string());
    let Ok(meta) = std::fs::metadata(path) else {
        return Ok(ReadState::Missing);
    };
    let ctime = meta.ctime() * 1_000_000_000 + meta.ctime_nsec();
    if since.is_some_and(|t| ctime >= t) {
        return Err(changed());
    }
    let state = if meta.is_file() {
        ReadState::File(files.hash(path).map_err(|_| changed())?.digest)
    } else if meta.is_dir() && open {
        ReadState::Listing(listing(path))
    } else if meta.is_dir() {
        ReadState::Dir
    } else {
        ReadState::Other
    };
    // Looked at again: a change while it was being hashed or listed shows here.
    let after = std::fs::metadata(path).map_err(|_| changed())?;
    if after.ctime() != meta.ctime() || after.ctime_nsec() != meta.ctime_nsec() {
        return Err(changed());
    }
    Ok(state)
}

/// A directory's entries: name, and whether each is a directory.
fn listing(dir: &Path) -> Vec<(String, bool)> {
    let mut out: Vec<(String, bool)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| {
            let is_dir = e.path().is_dir();
            (e.file_name().to_string_lossy().into_owned(), is_dir)
        })
        .collect();
    out.sort();
    out
}

/// The bytes that store a read set.
pub fn encode(set: &[Read]) -> Vec<u8> {
    serde_json::to_vec(set).expect("read sets serialize")
}

/// A stored read set; None if it is not one.
pub fn decode(bytes: &[u8]) -> Option<ReadSet> {
    let set: ReadSet = serde_json::from_slice(bytes).ok()?;
    let valid = set.iter().all(|r| match r {
        Read::Open(p) | Read::Stat(p) => {
            p.split('/').all(|c| !c.is_empty() && c != "." && c != "..")
        }
        Read::Env(name) => !name.is_empty(),
    });
    valid.then_some(set)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    struct NoLog;
    impl crate::action::ReadLog for NoLog {
        fn entries(&self, _: &[u8]) -> Result<Vec<LogEntry>, String> {
            Ok(Vec::new())
        }
    }

    fn reads(dir: &str) -> Reads {
        Reads {
            dir: dir.into(),
            log: ".kiln/log".into(),
            parse: Arc::new(NoLog),
            scratch_workdir: false,
        }
    }

    #[test]
    fn paths_resolve_against_the_working_directory_of_the_time() {
        let log = [
            LogEntry::Open("data.json".into()),
            LogEntry::Open("../testdata/cert.pem".into()),
            LogEntry::Stat("/kiln/ws/m/pkg/x".into()),
            LogEntry::Chdir("/kiln/ws/m/other".into()),
            LogEntry::Open("y".into()),
            LogEntry::Open("/etc/hosts".into()),
            LogEntry::Open("../../outside".into()),
            LogEntry::Getenv("USER".into()),
            LogEntry::Getenv("HOME".into()),
        ];
        let set = resolve(&log, &reads("m"), Path::new("/kiln/ws"), "m/pkg", |v| {
            v == "USER"
        });
        assert_eq!(
            set,
            vec![
                Read::Open("m/other/y".into()),
                Read::Open("m/pkg/data.json".into()),
                Read::Open("m/testdata/cert.pem".into()),
                Read::Stat("m/pkg/x".into()),
                Read::Env("USER".into()),
            ]
        );
    }

    #[test]
    fn a_remote_run_reaching_the_fixed_root_or_what_was_left_out_is_beyond_its_root() {
        let fixed = Path::new("/kiln/ws");
        let left_out = [".git".to_string()];
        let root = Path::new("/w/root");
        let plain = [
            LogEntry::Open("testdata/a".into()),
            LogEntry::Open("/w/root/m/b".into()),
            LogEntry::Getenv("HOME".into()),
        ];
        assert_eq!(beyond(&plain, root, "m/pkg", fixed, &left_out), None);
        let caller = [LogEntry::Stat("/kiln/ws/m/pkg/../testdata/c".into())];
        assert_eq!(
            beyond(&caller, root, "m/pkg", fixed, &left_out),
            Some("/kiln/ws/m/testdata/c".into())
        );
        let git = [
            LogEntry::Chdir("../..".into()),
            LogEntry::Open(".git/HEAD".into()),
        ];
        assert_eq!(
            beyond(&git, root, "m/pkg", fixed, &left_out),
            Some("/w/root/.git/HEAD".into())
        );
        // A worker whose root is the fixed path itself holds what it names.
        assert_eq!(beyond(&caller, fixed, "m/pkg", fixed, &left_out), None);
    }

    #[test]
    fn the_whole_workspace_leaves_out_kiln_out_and_the_sandbox_s_own_files() {
        let log = [
            LogEntry::Open("/kiln/ws/kiln-out/x".into()),
            LogEntry::Open("/kiln/ws/.kiln/home/y".into()),
            LogEntry::Open("/kiln/ws/a.txt".into()),
            LogEntry::Open("/kiln/ws".into()),
        ];
        let set = resolve(&log, &reads(""), Path::new("/kiln/ws"), "", |_| false);
        assert_eq!(set, vec![Read::Open("a.txt".into())]);
    }

    #[test]
    fn fuzzed_stored_sets_never_panic_and_accepted_ones_are_plain_paths() {
        let base = encode(&[
            Read::Open("a/b".into()),
            Read::Stat("c".into()),
            Read::Env("USER".into()),
        ]);
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let cases: u64 = std::env::var("KILN_FUZZ_CASES")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(20_000);
        for _ in 0..cases {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let mut bytes = base.clone();
            for k in 0..(1 + x % 4) {
                let at = ((x >> (8 * k)) as usize) % bytes.len();
                bytes[at] = b"./\"0aZ{}[],:"[((x >> (16 + k)) % 12) as usize];
            }
            if let Some(set) = decode(&bytes) {
                for read in set {
                    if let Read::Open(p) | Read::Stat(p) = read {
                        assert!(crate::action::is_normal(&p), "{p:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn stored_sets_with_paths_out_of_place_are_refused() {
        let good = encode(&[Read::Open("a/b".into())]);
        assert!(decode(&good).is_some());
        assert!(decode(br#"[{"kind":"open","name":"../x"}]"#).is_none());
        assert!(decode(br#"[{"kind":"open","name":"/etc/passwd"}]"#).is_none());
        assert!(decode(b"garbage").is_none());
    }
}
