//! The no-op fast path: after a successful build, kiln records the state (size, mtime,
//! ctime, inode) of every file the build depended on; the next identical request stats
//! those files in parallel and, if none changed, replays the result without loading the
//! workspace, analyzing, or opening the cache index. That is ninja's model (one stat per
//! file), applied to the whole build.
//!
//! What is watched ([`watched_files`]): kiln.toml and every BUILD.toml; every directory
//! searched for them (a new file changes its directory's mtime, so new globs matches and
//! new packages are seen); every source input of every action; every tool (for a tree tool
//! such as GOROOT, the paths its remembered digest is checked by, `tree::fingerprint_paths`); every directory on PATH (where host tools are found);
//! every output under kiln-out/. What is in the request fingerprint (chosen by the
//! caller): the command and its patterns, the flags and environment variables that steer
//! a build, and the kiln binary itself.
//!
//! A build that used stamp values records them with the `[stamp]` defaults it used; a
//! replay first asks git again ([`crate::host::stamp_values`]: three quick git calls)
//! and replays only if every value is the same. A watched file that changed within the
//! last [`RACY_NS`] when the manifest is written is "racy": its next change might not
//! move its stamp (the kernel's clock ticks coarser than a nanosecond), so its content
//! is recorded too (a digest of the file, or of a directory's sorted entry names) and a
//! replay hashes it again; once every racy file is older than the window, the first
//! replay rewrites the manifest with stamps alone. So a build right after a build is
//! replayed too, and an edit within the same clock tick is still seen. No manifest is
//! written when anything failed. Any mismatch, missing file or unreadable manifest
//! falls back to the normal path, which is always correct.

use std::collections::HashSet;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use kiln_cache::Digest;

use crate::action::{ActionGraph, ActionKind};
use crate::scheduler::Report;
use crate::workspace::{Workspace, OUT_DIR};

const MAGIC: &str = "kiln-noop 1";

/// Files modified this recently are not trusted to show their next change.
pub const RACY_NS: i64 = 2_000_000_000;

#[derive(Debug, Clone, PartialEq, Eq)]
struct FileStamp {
    size: u64,
    mtime_ns: i64,
    ctime_ns: i64,
    ino: u64,
}

impl FileStamp {
    fn of(path: &Path) -> Option<FileStamp> {
        let m = std::fs::metadata(path).ok()?;
        Some(FileStamp {
            size: if m.is_dir() { 0 } else { m.size() },
            mtime_ns: m.mtime() * 1_000_000_000 + m.mtime_nsec(),
            ctime_ns: m.ctime() * 1_000_000_000 + m.ctime_nsec(),
            ino: m.ino(),
        })
    }

    /// Whether the file changed so recently, seen at `now`, that its next change
    /// might leave this stamp as it is.
    fn racy(&self, now: i64) -> bool {
        now - self.mtime_ns.max(self.ctime_ns) <= RACY_NS
    }
}

/// What a racy file holds: the digest of its bytes, or of a directory's entry names.
fn content_digest(path: &Path) -> Option<Digest> {
    if path.is_dir() {
        let mut names: Vec<_> = std::fs::read_dir(path)
            .ok()?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<std::io::Result<_>>()
            .ok()?;
        names.sort();
        let mut listing = Vec::new();
        for name in names {
            listing.extend_from_slice(name.as_encoded_bytes());
            listing.push(0);
        }
        Some(Digest::of_bytes(&listing))
    } else {
        Digest::of_file(path).ok()
    }
}

/// A watched file: its stamp, and its content while the stamp alone cannot be trusted.
#[derive(Debug, Clone)]
struct Watched {
    path: PathBuf,
    stamp: FileStamp,
    content: Option<Digest>,
}

impl Watched {
    fn unchanged(&self) -> bool {
        FileStamp::of(&self.path).as_ref() == Some(&self.stamp)
            && self
                .content
                .is_none_or(|d| content_digest(&self.path) == Some(d))
    }
}

/// A recorded successful build.
#[derive(Debug, Clone)]
pub struct Manifest {
    /// The summary's action count.
    pub total: usize,
    /// Whether the summary names remote hits (a remote cache was configured).
    pub remote: bool,
    /// Lines the build showed that must be shown again (test results).
    pub lines: Vec<String>,
    /// The `[stamp]` defaults and the stamp values the build used, if it used any.
    pub stamp: Option<Stamp>,
    files: Vec<Watched>,
}

/// Stamp values a recorded build used, and the defaults they were computed with.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Stamp {
    pub defaults: std::collections::BTreeMap<String, String>,
    pub values: std::collections::BTreeMap<String, String>,
}

/// Where the manifest of a request lives.
pub fn manifest_path(cache_dir: &Path, root: &Path, fingerprint: &str) -> PathBuf {
    let id = blake3::hash(format!("{}\0{fingerprint}", root.display()).as_bytes());
    cache_dir.join("noop").join(id.to_hex().as_str())
}

/// The manifest at `path`, if every file it watches is unchanged.
pub fn check(path: &Path, root: Option<&Path>) -> Option<Manifest> {
    let text = std::fs::read_to_string(path).ok()?;
    let mut manifest = parse(&text)?;
    if !manifest.files.par_iter().all(Watched::unchanged) {
        return None;
    }
    if let (Some(stamp), Some(root)) = (&manifest.stamp, root) {
        if crate::host::stamp_values(root, &stamp.defaults) != stamp.values {
            return None;
        }
    }
    // Racy files whose window has passed were just seen unchanged, bytes and all: from
    // now on their stamps are enough.
    let now = now_ns();
    let racy = |w: &Watched| w.content.is_some();
    let settled = |w: &Watched| !w.stamp.racy(now);
    if manifest.files.iter().any(racy) && manifest.files.iter().filter(|w| racy(w)).all(settled) {
        for w in &mut manifest.files {
            w.content = None;
        }
        let _ = write_atomically(path, &render(&manifest));
    }
    Some(manifest)
}

/// Records the files of a finished build at `path`; removes any old manifest when the
/// build cannot be recorded (see the module comment).
pub fn record(
    path: &Path,
    files: Vec<PathBuf>,
    total: usize,
    remote: bool,
    lines: Vec<String>,
    stamp: Option<Stamp>,
) {
    let _ = std::fs::remove_file(path);
    let now = now_ns();
    let watched: Option<Vec<Watched>> = files
        .into_par_iter()
        .map(|path| {
            let stamp = FileStamp::of(&path)?;
            let content = match stamp.racy(now) {
                true => Some(content_digest(&path)?),
                false => None,
            };
            // The stamp must still be the one the content was read under.
            if content.is_some() && FileStamp::of(&path).as_ref() != Some(&stamp) {
                return None;
            }
            Some(Watched {
                path,
                stamp,
                content,
            })
        })
        .collect();
    let Some(files) = watched else { return };
    let manifest = Manifest {
        total,
        remote,
        lines,
        stamp,
        files,
    };
    let _ = write_atomically(path, &render(&manifest));
}

/// Every file a build depended on (see the module comment).
pub fn watched_files(ws: &Workspace, graph: &ActionGraph, report: &Report) -> Vec<PathBuf> {
    let mut files: HashSet<PathBuf> = HashSet::new();
    files.insert(ws.root.join(crate::workspace::WORKSPACE_FILE));
    files.extend(ws.packages.values().map(|p| p.build_file.clone()));
    files.extend(ws.dirs.iter().cloned());
    if let Some(path) = std::env::var_os("PATH") {
        files.extend(std::env::split_paths(&path).filter(|d| d.is_dir()));
    }
    // Each distinct tool once (a thousand actions share a handful of tools).
    let mut tools_seen: HashSet<&Path> = HashSet::new();
    for (id, action) in graph.actions.iter().enumerate() {
        if !report.results.contains_key(&id) {
            continue;
        }
        files.extend(
            action
                .inputs
                .iter()
                .filter(|a| a.producer.is_none())
                .map(|a| ws.root.join(&a.path)),
        );
        let tools = match &action.kind {
            ActionKind::Exec(spec) => &spec.tools,
            ActionKind::Builtin(b) => &b.tools,
        };
        for tool in tools.iter().filter(|t| tools_seen.insert(&t.path)) {
            if tool.tree {
                // The same few paths that stand for the tree's remembered digest.
                files.extend(crate::tree::fingerprint_paths(&tool.path));
            } else {
                files.insert(std::fs::canonicalize(&tool.path).unwrap_or(tool.path.clone()));
                files.insert(tool.path.clone());
            }
        }
    }
    for result in report.results.values() {
        files.extend(
            result
                .outputs
                .iter()
                .filter(|o| o.path.starts_with(OUT_DIR))
                .map(|o| ws.root.join(&o.path)),
        );
    }
    let mut files: Vec<PathBuf> = files.into_iter().collect();
    files.sort();
    files
}

fn render(m: &Manifest) -> String {
    let mut out = format!("{MAGIC}\n{} {}\n", m.total, m.remote);
    for line in &m.lines {
        out.push_str(&format!(
            "L {}\n",
            serde_json::to_string(line).expect("strings serialize")
        ));
    }
    if let Some(stamp) = &m.stamp {
        let json = serde_json::to_string(stamp).expect("stamps serialize");
        out.push_str(&format!("S {json}\n"));
    }
    for w in &m.files {
        let s = &w.stamp;
        let kind = match &w.content {
            Some(d) => format!("R {d} "),
            None => "F ".to_string(),
        };
        out.push_str(&format!(
            "{kind}{} {} {} {} {}\n",
            s.size,
            s.mtime_ns,
            s.ctime_ns,
            s.ino,
            w.path.display()
        ));
    }
    out
}

fn parse(text: &str) -> Option<Manifest> {
    let mut lines = text.lines();
    if lines.next()? != MAGIC {
        return None;
    }
    let (total, remote) = lines.next()?.split_once(' ')?;
    let (total, remote) = (total.parse().ok()?, remote.parse().ok()?);
    let mut manifest = Manifest {
        total,
        remote,
        lines: Vec::new(),
        stamp: None,
        files: Vec::new(),
    };
    for line in lines {
        if let Some(json) = line.strip_prefix("L ") {
            manifest.lines.push(serde_json::from_str(json).ok()?);
        } else if let Some(json) = line.strip_prefix("S ") {
            manifest.stamp = Some(serde_json::from_str(json).ok()?);
        } else if let Some((content, rest)) = watched_line(line) {
            let content = match content {
                Some(d) => Some(d.parse().ok()?),
                None => None,
            };
            let mut parts = rest.splitn(5, ' ');
            let stamp = FileStamp {
                size: parts.next()?.parse().ok()?,
                mtime_ns: parts.next()?.parse().ok()?,
                ctime_ns: parts.next()?.parse().ok()?,
                ino: parts.next()?.parse().ok()?,
            };
            let path = PathBuf::from(parts.next()?);
            manifest.files.push(Watched {
                path,
                stamp,
                content,
            });
        } else {
            return None;
        }
    }
    Some(manifest)
}

/// A watched file's line, `F STAMP PATH` or `R DIGEST STAMP PATH` (a racy file), as
/// its digest, if any, and the rest.
fn watched_line(line: &str) -> Option<(Option<&str>, &str)> {
    if let Some(rest) = line.strip_prefix("F ") {
        return Some((None, rest));
    }
    let (digest, rest) = line.strip_prefix("R ")?.split_once(' ')?;
    Some((Some(digest), rest))
}

/// Writes `path` whole or not at all (a temporary file beside it, renamed over it).
pub(crate) fn write_atomically(path: &Path, text: &str) -> std::io::Result<()> {
    let dir = path.parent().expect("written files live in a directory");
    std::fs::create_dir_all(dir)?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(text.as_bytes())?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The manifest of a build that watched `files` of `dir`, kept beside `dir`.
    fn recorded(dir: &Path, files: &[&str]) -> PathBuf {
        let manifest = dir.with_extension("manifest");
        let paths = files.iter().map(|f| dir.join(f)).collect();
        record(&manifest, paths, 1, false, Vec::new(), None);
        manifest
    }

    /// The manifest with the recorded content of `name` replaced by other bytes' digest:
    /// what an edit within the clock tick of the stamp would leave (same stamp, other
    /// bytes).
    fn forge_content(manifest: &Path, name: &str) {
        let text = std::fs::read_to_string(manifest).unwrap();
        let line = text.lines().find(|l| l.ends_with(name)).unwrap();
        assert!(line.starts_with("R "), "{line}");
        let forged = line.replacen(&line[2..66], &Digest::of_bytes(b"other").to_string(), 1);
        std::fs::write(manifest, text.replace(line, &forged)).unwrap();
    }

    #[test]
    fn a_racy_file_is_replayed_only_while_its_bytes_are_the_recorded_ones() {
        let top = tempfile::tempdir().unwrap();
        let dir = top.path().join("ws");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("out.txt"), "a\n").unwrap();
        let manifest = recorded(&dir, &["out.txt", "."]);
        let text = std::fs::read_to_string(&manifest).unwrap();
        assert_eq!(
            text.lines().filter(|l| l.starts_with("R ")).count(),
            2,
            "{text}"
        );
        assert!(
            check(&manifest, None).is_some(),
            "a build right after a build replays"
        );

        forge_content(&manifest, "out.txt");
        assert!(check(&manifest, None).is_none());

        let manifest = recorded(&dir, &["out.txt", "."]);
        forge_content(&manifest, "/.");
        assert!(check(&manifest, None).is_none());

        let manifest = recorded(&dir, &["."]);
        std::fs::write(dir.join("new.txt"), "").unwrap();
        assert!(check(&manifest, None).is_none());
    }

    #[test]
    fn once_the_window_has_passed_a_replay_keeps_stamps_alone() {
        let top = tempfile::tempdir().unwrap();
        let dir = top.path().join("ws");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("out.txt"), "a\n").unwrap();
        let manifest = recorded(&dir, &["out.txt"]);
        assert!(std::fs::read_to_string(&manifest).unwrap().contains("\nR "));
        std::thread::sleep(std::time::Duration::from_nanos(
            RACY_NS as u64 + 100_000_000,
        ));
        assert!(check(&manifest, None).is_some());
        let text = std::fs::read_to_string(&manifest).unwrap();
        assert!(!text.contains("\nR ") && text.contains("\nF "), "{text}");
        assert!(check(&manifest, None).is_some());
        std::fs::write(dir.join("out.txt"), "b\n").unwrap();
        assert!(check(&manifest, None).is_none());
    }
}
