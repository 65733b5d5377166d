//! Release history: a store directory holding every published release by version, a
//! record of them, and a `current` pointer that rollback moves.
//!
//! ```toml
//! [release.release]
//! version = "{STABLE_GIT_DESCRIBE}"
//! srcs = [":checksums"]
//! store = "/srv/releases/hello"     # absolute, or relative to the workspace root
//! ```
//!
//! ```text
//! DIR/
//!   releases.json      every release: version, publication time, digest, each file's sha256;
//!                      `current`; and the history of publications and rollbacks
//!   v1.2.0/            the release directory as built (read-only copies)
//!   v1.3.0/
//!   current -> v1.3.0  a relative symbolic link, replaced atomically
//! ```
//!
//! * `kiln run //:release` builds the release, then [`Store::publish`]es it: the files go
//!   to `DIR/.incoming-*` and are renamed to `DIR/<version>` whole, so a reader never sees
//!   half a release. A version is published once: publishing it again with the same
//!   files only points `current` at it again; with other files it is refused, naming the
//!   first file that differs (a version names one set of bytes). Publishing makes the
//!   release current.
//! * `kiln release list` ([`Store::list`]) shows versions, times, digests and which is
//!   current; `kiln rollback VERSION` ([`Store::rollback`]) builds nothing: it checks every
//!   file of that version against the sha256 recorded at publication (and its
//!   `SHA256SUMS`, if it has one), then moves `current` (a new link renamed over the old
//!   one). A damaged release is refused and `current` stays where it was.
//! * The release digest is the sha256 of the release's file list as `sha256sum` writes it
//!   (`<sha256>  <path>` lines, sorted by path), so it names the whole release.
//! * `releases.json` is written to a temporary file and renamed; `DIR/.lock`, created
//!   exclusively, keeps two publications or rollbacks from interleaving.
//!
//! * Images: with `images = { ":image" = "REGISTRY/REPO" }` on the release, publishing
//!   pushes each image (after the store has agreed to take the release, so a refused
//!   version pushes nothing) tagged with the version and with the moving `tag` (default
//!   `stable`), and records `repository`, `digest` and `tag`; rollback, after checking
//!   the files, gets each recorded manifest by digest (checked against it) and puts it
//!   under the moving tag again, before moving `current`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::release::checksums::sha256_file;

/// The record file in a store.
pub const RECORD: &str = "releases.json";
/// The pointer to the current release.
pub const CURRENT: &str = "current";

type Result<T> = std::result::Result<T, String>;

/// A release store directory.
pub struct Store {
    pub dir: PathBuf,
    /// How to reach the registries its images are in (kiln.toml's `[registries]`).
    pub registries: crate::oci::registry::Settings,
}

/// `releases.json`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Record {
    pub current: Option<String>,
    pub releases: Vec<Published>,
    pub history: Vec<Event>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Published {
    pub version: String,
    /// RFC 3339, UTC.
    pub published: String,
    /// `sha256:<hex>` of the file list (see the module comment).
    pub digest: String,
    /// Each file's path in the release and its sha256.
    pub files: BTreeMap<String, String>,
    /// Images pushed with it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<PushedImage>,
}

/// An image a release pushed: `repository@digest`, tagged with the version and with
/// `tag`, the moving tag rollback points at the current release's image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PushedImage {
    pub repository: String,
    pub digest: String,
    pub tag: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Event {
    /// `publish` or `rollback`.
    pub action: String,
    pub version: String,
    pub at: String,
}

impl Store {
    pub fn new(dir: impl Into<PathBuf>) -> Store {
        Store {
            dir: dir.into(),
            registries: Default::default(),
        }
    }

    /// The store, reaching registries with `settings`.
    pub fn with_registries(mut self, settings: crate::oci::registry::Settings) -> Store {
        self.registries = settings;
        self
    }

    /// The record, empty for a store that does not exist yet.
    pub fn record(&self) -> Result<Record> {
        let path = self.dir.join(RECORD);
        let not_record = |e: String| format!("{} is not a release record: {e}", path.display());
        match read_record(&path) {
            Ok(bytes) => {
                let record: Record =
                    serde_json::from_slice(&bytes).map_err(|e| not_record(e.to_string()))?;
                let named = record.releases.iter().map(|r| &r.version);
                if let Some(bad) = named.chain(&record.current).find(|v| !is_version(v)) {
                    return Err(not_record(format!(
                        "version `{}` cannot name a directory of the store\nhint: a version is one path component, e.g. v1.2.3; restore {RECORD} from a backup",
                        bad.escape_debug()
                    )));
                }
                let mut images = record.releases.iter().flat_map(|r| &r.images);
                if let Some((image, why)) = images.find_map(|i| bad_image(i).map(|w| (i, w))) {
                    return Err(not_record(format!(
                        "image `{}@{}` tagged `{}`: {why}\nhint: restore {RECORD} from a backup",
                        image.repository.escape_debug(),
                        image.digest.escape_debug(),
                        image.tag.escape_debug()
                    )));
                }
                Ok(record)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Record::default()),
            Err(e) => Err(format!("read {}: {e}", path.display())),
        }
    }

    /// Publishes the release directory `from` as `version` and makes it current.
    /// `push` pushes its images (once the store has agreed to take the release) and
    /// returns them.
    pub fn publish(
        &self,
        version: &str,
        from: &Path,
        push: impl FnOnce() -> Result<Vec<PushedImage>>,
    ) -> Result<String> {
        if !is_version(version) {
            return Err(format!(
                "version `{}` cannot name a directory of the store {}",
                version.escape_debug(),
                self.dir.display()
            ));
        }
        std::fs::create_dir_all(&self.dir)
            .map_err(|e| format!("create {}: {e}", self.dir.display()))?;
        let _lock = Lock::take(&self.dir)?;
        let files = hash_tree(from)?;
        let mut record = self.record()?;
        let dest = self.dir.join(version);
        let known = record.releases.iter().find(|r| r.version == version);
        let said = match known {
            Some(old) if old.files == files => {
                push()?;
                format!("{version} was published already")
            }
            Some(old) => return Err(differs(&dest, version, &old.files, &files)),
            None if dest.exists() => {
                return Err(format!(
                    "{} exists but {RECORD} does not list it; move it away to publish {version}",
                    dest.display()
                ))
            }
            None => {
                let images = push()?;
                self.copy_in(version, from, &files)?;
                record.releases.push(Published {
                    version: version.to_string(),
                    published: now_rfc3339(),
                    digest: digest(&files),
                    files,
                    images,
                });
                format!("published {version} to {}", dest.display())
            }
        };
        let was = self.point_at(&mut record, version, "publish")?;
        Ok(format!(
            "{said}; current: {version}{}",
            was_note(&was, version)
        ))
    }

    /// Points `current` at `version` after checking its files.
    pub fn rollback(&self, version: &str) -> Result<String> {
        let _lock = Lock::take(&self.dir)?;
        let mut record = self.record()?;
        let Some(release) = record.releases.iter().find(|r| r.version == version) else {
            let known: Vec<&str> = record.releases.iter().map(|r| r.version.as_str()).collect();
            return Err(format!(
                "{version} is not a published release in {} (published: {})\nhint: `kiln release list` shows them",
                self.dir.display(),
                if known.is_empty() { "none".to_string() } else { known.join(", ") }
            ));
        };
        self.verify(release)?;
        for image in &release.images {
            let repo = crate::oci::registry::Repository::for_push(
                &image.repository,
                &self.registries,
                &[],
            )?;
            repo.retag(&image.digest, &image.tag)
                .map_err(|e| format!("move {} to {version}: {e}", image.tag))?;
        }
        let was = self.point_at(&mut record, version, "rollback")?;
        Ok(format!("current: {version}{}", was_note(&was, version)))
    }

    /// The releases, oldest first, as lines for `kiln release list`.
    pub fn list(&self) -> Result<Vec<String>> {
        let record = self.record()?;
        Ok(record
            .releases
            .iter()
            .map(|r| {
                let mark = if record.current.as_deref() == Some(&r.version) {
                    "*"
                } else {
                    " "
                };
                let images: String = r
                    .images
                    .iter()
                    .map(|i| format!("  {}@{}", i.repository, i.digest))
                    .collect();
                let line = format!(
                    "{mark} {}  {}  {}  {} files{images}",
                    r.version,
                    r.published,
                    r.digest,
                    r.files.len()
                );
                // The record may have been edited by hand: no control character of it
                // reaches the terminal as such.
                line.chars()
                    .map(|c| match c.is_control() {
                        true => c.escape_default().to_string(),
                        false => c.to_string(),
                    })
                    .collect()
            })
            .collect())
    }

    /// Checks every file of a published release against its record, and the release's
    /// own SHA256SUMS if it has one.
    pub fn verify(&self, release: &Published) -> Result<()> {
        let dir = self.dir.join(&release.version);
        // Read through a link, the files checked would be wherever it points.
        if !std::fs::symlink_metadata(&dir).is_ok_and(|m| m.is_dir()) {
            return Err(format!("{} is not a directory", dir.display()));
        }
        let found = hash_tree(&dir)?;
        if found != release.files {
            return Err(differs(&dir, &release.version, &release.files, &found));
        }
        if found.contains_key("SHA256SUMS") {
            let text = std::fs::read_to_string(dir.join("SHA256SUMS"))
                .map_err(|e| format!("read {}/SHA256SUMS: {e}", dir.display()))?;
            for line in text.lines().filter(|l| !l.is_empty()) {
                let (sum, name) = line.split_once("  ").unwrap_or((line, ""));
                if found.get(name).map(String::as_str) != Some(sum) {
                    return Err(format!(
                        "{}/SHA256SUMS: `{name}` does not match its checksum",
                        dir.display()
                    ));
                }
            }
        }
        Ok(())
    }

    /// Copies `from` into `DIR/<version>`: a temporary directory renamed whole.
    fn copy_in(&self, version: &str, from: &Path, files: &BTreeMap<String, String>) -> Result<()> {
        let incoming = tempfile::Builder::new()
            .prefix(".incoming-")
            .tempdir_in(&self.dir)
            .map_err(|e| format!("create a directory in {}: {e}", self.dir.display()))?;
        for name in files.keys() {
            let to = incoming.path().join(name);
            if let Some(parent) = to.parent() {
                std::fs::create_dir_all(parent)
                    .map_err(|e| format!("create {}: {e}", parent.display()))?;
            }
            std::fs::copy(from.join(name), &to).map_err(|e| {
                format!(
                    "copy {} to {}: {e}",
                    from.join(name).display(),
                    to.display()
                )
            })?;
            let mut perms = std::fs::metadata(&to)
                .map_err(|e| e.to_string())?
                .permissions();
            perms.set_readonly(true);
            let _ = std::fs::set_permissions(&to, perms);
        }
        let dest = self.dir.join(version);
        let kept = incoming.keep();
        std::fs::rename(&kept, &dest).map_err(|e| {
            let _ = std::fs::remove_dir_all(&kept);
            format!("move the release to {}: {e}", dest.display())
        })
    }

    /// Moves `current` to `version` and records it; returns the version it was at.
    fn point_at(&self, record: &mut Record, version: &str, action: &str) -> Result<Option<String>> {
        let link = self.dir.join(CURRENT);
        let staged = self.dir.join(format!(".{CURRENT}.{}", std::process::id()));
        let _ = std::fs::remove_file(&staged);
        std::os::unix::fs::symlink(version, &staged)
            .map_err(|e| format!("link {}: {e}", staged.display()))?;
        std::fs::rename(&staged, &link).map_err(|e| format!("replace {}: {e}", link.display()))?;
        let was = record.current.replace(version.to_string());
        record.history.push(Event {
            action: action.to_string(),
            version: version.to_string(),
            at: now_rfc3339(),
        });
        self.write_record(record)?;
        Ok(was)
    }

    fn write_record(&self, record: &Record) -> Result<()> {
        let path = self.dir.join(RECORD);
        let mut json = serde_json::to_vec_pretty(record).expect("records serialize");
        json.push(b'\n');
        // A new file of a random name: a link left under a guessable one is not followed.
        let mut tmp = tempfile::Builder::new()
            .prefix(&format!(".{RECORD}."))
            .tempfile_in(&self.dir)
            .map_err(|e| format!("create a file in {}: {e}", self.dir.display()))?;
        std::io::Write::write_all(&mut tmp, &json)
            .map_err(|e| format!("write {}: {e}", tmp.path().display()))?;
        // Readable as a plain write would leave it (a temporary file is 0600).
        use std::os::unix::fs::PermissionsExt;
        let _ = tmp
            .as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o644));
        tmp.persist(&path)
            .map(|_| ())
            .map_err(|e| format!("write {}: {}", path.display(), e.error))
    }
}

/// Whether `version` can name a release directory: one printable path component, and
/// none of the store's own names (`releases.json`, `current`, hidden files).
/// What is wrong with a recorded image, which rollback would re-tag: each part goes
/// into a registry URL.
fn bad_image(image: &PushedImage) -> Option<String> {
    use crate::oci::registry::{pull::hex_of, valid_tag, RepoRef, TAG_SYNTAX};
    if let Err(e) = RepoRef::parse(&image.repository) {
        return Some(e);
    }
    if let Err(e) = hex_of(&image.digest) {
        return Some(e);
    }
    (!valid_tag(&image.tag)).then(|| format!("the tag is not {TAG_SYNTAX}"))
}

pub fn is_version(version: &str) -> bool {
    !version.is_empty()
        && !version.starts_with('.')
        && !version.contains(['/', '\\'])
        && !version.chars().any(char::is_control)
        && version != RECORD
        && version != CURRENT
}

fn was_note(was: &Option<String>, now: &str) -> String {
    match was {
        Some(w) if w != now => format!(" (was {w})"),
        _ => String::new(),
    }
}

/// Why two file lists differ: the first path that is missing, extra or changed.
fn differs(
    dir: &Path,
    version: &str,
    recorded: &BTreeMap<String, String>,
    found: &BTreeMap<String, String>,
) -> String {
    let first = recorded
        .iter()
        .find(|(name, sum)| found.get(*name) != Some(sum))
        .map(|(name, _)| match found.contains_key(name) {
            true => format!("`{name}` differs"),
            false => format!("`{name}` is missing"),
        })
        .or_else(|| {
            found
                .keys()
                .find(|n| !recorded.contains_key(*n))
                .map(|n| format!("`{n}` is not part of it"))
        })
        .unwrap_or_default();
    format!(
        "{} does not hold the release {version} recorded in {RECORD}: {first}\nhint: a version names one set of files; publish changes under a new version",
        dir.display()
    )
}

/// Every file below `dir` (relative path, sha256), links refused.
fn hash_tree(dir: &Path) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for entry in walkdir::WalkDir::new(dir).sort_by_file_name() {
        let entry = entry.map_err(|e| format!("read {}: {e}", dir.display()))?;
        if entry.file_type().is_dir() {
            continue;
        }
        let rel = entry.path().strip_prefix(dir).unwrap_or(entry.path());
        if !entry.file_type().is_file() {
            return Err(format!("{} is not a regular file", entry.path().display()));
        }
        out.insert(
            rel.to_string_lossy().into_owned(),
            sha256_file(entry.path())?,
        );
    }
    if out.is_empty() {
        return Err(format!("{} holds no files", dir.display()));
    }
    Ok(out)
}

/// `sha256:` of the file list as sha256sum writes it.
fn digest(files: &BTreeMap<String, String>) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for (name, sum) in files {
        h.update(format!("{sum}  {name}\n").as_bytes());
    }
    format!("sha256:{}", crate::release::checksums::hex(&h.finalize()))
}

/// `DIR/.lock`, held while the store changes.
struct Lock(PathBuf);

impl Lock {
    fn take(dir: &Path) -> Result<Lock> {
        let path = dir.join(".lock");
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::AlreadyExists => format!(
                    "{} is held by another publication or rollback (remove it if none is running)",
                    path.display()
                ),
                std::io::ErrorKind::NotFound => {
                    format!("release store {} does not exist", dir.display())
                }
                _ => format!("create {}: {e}", path.display()),
            })?;
        Ok(Lock(path))
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The time now as RFC 3339 in UTC, to the second.
fn now_rfc3339() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    kiln_cache::time::rfc3339(secs as i64, None)
}

/// The most a release record may hold: a store of ten thousand releases is a few MB.
const MAX_RECORD: u64 = 64 << 20;

/// The bytes of the record at `path`, read only if it is a regular file of a sane size
/// (a link to `/dev/zero` or a fifo would hang `release list` and `rollback`).
fn read_record(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let meta = std::fs::symlink_metadata(path)?;
    if !meta.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    let mut bytes = Vec::new();
    std::fs::File::open(path)?
        .take(MAX_RECORD + 1)
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_RECORD {
        return Err(std::io::Error::other(format!(
            "larger than {MAX_RECORD} bytes"
        )));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn release(dir: &Path, body: &str) {
        std::fs::create_dir_all(dir.join("linux_amd64")).unwrap();
        std::fs::write(dir.join("linux_amd64/app"), body).unwrap();
        let sum = sha256_file(&dir.join("linux_amd64/app")).unwrap();
        std::fs::write(dir.join("SHA256SUMS"), format!("{sum}  linux_amd64/app\n")).unwrap();
    }

    #[test]
    fn a_link_planted_where_the_record_is_staged_is_not_followed() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::new(tmp.path().join("store"));
        std::fs::create_dir_all(&store.dir).unwrap();
        let victim = tmp.path().join("victim");
        std::fs::write(&victim, "keep me").unwrap();
        let staged = store.dir.join(format!(".{RECORD}.{}", std::process::id()));
        std::os::unix::fs::symlink(&victim, staged).unwrap();
        release(&tmp.path().join("v1"), "v1");
        store
            .publish("v1", &tmp.path().join("v1"), || Ok(Vec::new()))
            .unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep me");
        assert_eq!(store.record().unwrap().releases.len(), 1);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(store.dir.join(RECORD))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o644);
    }

    #[test]
    fn a_record_that_is_no_regular_file_is_refused_not_read() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::new(tmp.path().join("store"));
        std::fs::create_dir_all(&store.dir).unwrap();
        std::os::unix::fs::symlink("/dev/zero", store.dir.join(RECORD)).unwrap();
        let err = store.record().unwrap_err();
        assert!(err.contains("not a regular file"), "{err}");
        std::fs::remove_file(store.dir.join(RECORD)).unwrap();
        let made = std::process::Command::new("mkfifo")
            .arg(store.dir.join(RECORD))
            .status()
            .unwrap();
        assert!(made.success());
        assert!(store.record().unwrap_err().contains("not a regular file"));
    }

    #[test]
    fn a_hand_edited_image_is_refused_before_rollback_reaches_a_registry() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::new(tmp.path().join("store"));
        release(&tmp.path().join("v1"), "v1");
        let pushed = PushedImage {
            // Nothing listens there: a rollback that got as far as the registry would
            // fail with a connection error, not a refused record.
            repository: "127.0.0.1:1/hello/app".into(),
            digest: format!("sha256:{}", "a".repeat(64)),
            tag: "stable".into(),
        };
        let image = pushed.clone();
        store
            .publish("v1", &tmp.path().join("v1"), move || Ok(vec![image]))
            .unwrap();
        let hostile = [
            // Each lands in a registry URL: another repository's manifests, another host.
            PushedImage {
                tag: "x/../../../../other/manifests/stable".into(),
                ..pushed.clone()
            },
            PushedImage {
                digest: "sha256:../../../other/manifests/stable".into(),
                ..pushed.clone()
            },
            PushedImage {
                repository: "evil.example@127.0.0.1:1/hello/app".into(),
                ..pushed.clone()
            },
            PushedImage {
                repository: "127.0.0.1:1/Hello/../app".into(),
                ..pushed.clone()
            },
        ];
        let good = store.record().unwrap();
        for image in hostile {
            let mut record = good.clone();
            record.releases[0].images = vec![image.clone()];
            std::fs::write(store.dir.join(RECORD), serde_json::to_vec(&record).unwrap()).unwrap();
            let err = store.rollback("v1").unwrap_err();
            assert!(err.contains("is not a release record"), "{image:?}: {err}");
            assert!(
                err.contains(&image.tag) && err.contains(&image.digest),
                "{err}"
            );
            assert!(store.list().is_err());
        }
    }

    #[test]
    fn a_listing_shows_no_control_character_of_a_hand_edited_record() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::new(tmp.path().join("store"));
        release(&tmp.path().join("v1"), "v1");
        store
            .publish("v1", &tmp.path().join("v1"), || Ok(Vec::new()))
            .unwrap();
        let path = store.dir.join(RECORD);
        let mut record: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        record["releases"][0]["published"] = "\u{1b}]0;owned\u{7}\u{1b}[2J".into();
        std::fs::write(&path, serde_json::to_vec(&record).unwrap()).unwrap();
        let lines = store.list().unwrap();
        assert_eq!(lines.len(), 1);
        assert!(!lines[0].chars().any(char::is_control), "{:?}", lines[0]);
        assert!(lines[0].contains("\\u{1b}]0;owned"), "{}", lines[0]);
    }

    #[test]
    fn versions_stay_inside_the_store() {
        for v in ["v1.2.3", "1.0", "release-7+g1a2b"] {
            assert!(is_version(v), "{v}");
        }
        for v in [
            "",
            ".",
            "..",
            "../x",
            "/abs",
            "a/../../b",
            "a\\b",
            "v1\n",
            ".lock",
            "current",
            "releases.json",
        ] {
            assert!(!is_version(v), "{v}");
        }
    }

    #[test]
    fn publish_rollback_and_refusals() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::new(tmp.path().join("store"));
        for v in ["v1", "v2"] {
            release(&tmp.path().join(v), v);
            store
                .publish(v, &tmp.path().join(v), || Ok(Vec::new()))
                .unwrap();
        }
        let current = |s: &Store| std::fs::read_link(s.dir.join(CURRENT)).unwrap();
        assert_eq!(current(&store), Path::new("v2"));
        assert_eq!(store.rollback("v1").unwrap(), "current: v1 (was v2)");
        assert_eq!(current(&store), Path::new("v1"));
        // Same files again: no copy, current moves forward.
        let again = store
            .publish("v2", &tmp.path().join("v2"), || Ok(Vec::new()))
            .unwrap();
        assert!(again.starts_with("v2 was published already"), "{again}");
        // Other files under a published version: refused.
        release(&tmp.path().join("v2b"), "changed");
        let err = store
            .publish("v2", &tmp.path().join("v2b"), || Ok(Vec::new()))
            .unwrap_err();
        assert!(err.contains("`SHA256SUMS` differs"), "{err}");
        let err = store.rollback("v9").unwrap_err();
        assert!(err.contains("published: v1, v2"), "{err}");
        // A damaged release is not made current.
        let app = store.dir.join("v1/linux_amd64/app");
        let mut perms = std::fs::metadata(&app).unwrap().permissions();
        #[allow(clippy::permissions_set_readonly_false)]
        perms.set_readonly(false);
        std::fs::set_permissions(&app, perms).unwrap();
        std::fs::write(&app, "tampered").unwrap();
        let err = store.rollback("v1").unwrap_err();
        assert!(err.contains("`linux_amd64/app` differs"), "{err}");
        assert_eq!(current(&store), Path::new("v2"));
        assert_eq!(store.list().unwrap().len(), 2);
        assert!(store.list().unwrap()[1].starts_with("* v2  "));
    }
}
