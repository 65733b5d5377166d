//! What an action of kiln run as root must not reach although its uid owns it.
//!
//! bubblewrap makes no user namespace for root: the action runs as uid 0, without
//! capabilities. File modes still let the owner in, and root owns the host's secrets
//! and settings, so without more an action of kiln run as root could
//! - write the kernel's settings in `/proc/sys` (root's files, mode 0644; bubblewrap's
//!   own cover of `/proc/sys` is skipped for root, whose `access(W_OK)` on that
//!   directory of mode 0555 fails): `vm/swappiness`, `kernel/core_pattern` and most
//!   others are the host's, not the sandbox's namespaces';
//! - read what `/etc` keeps from others (`/etc/shadow`, `/etc/ssl/private`, sudoers)
//!   and carry it into its outputs, which the remote cache shares.
//!
//! So when kiln runs as root, `/proc/sys` is bound read-only over the sandbox's own,
//! and every entry of `/etc` that others cannot read ([`private_entries`]) is covered
//! by an empty file or directory of mode 0, which the action cannot read either: it
//! sees what an unprivileged user would. The list is made once per kiln run
//! ([`covers`]), when the first action starts: a walk of `/etc` of ~1,300 entries took
//! 3 ms here. Every cover is a bind, and binds are what a sandbox costs (bench/README.md,
//! "The sandbox's cost"), so an entry the action could not read anyway (another user's
//! file, an empty lock file) is left as it is: 6 covers on a Debian host with
//! PostgreSQL and polkit, of 11 entries others cannot read.

use std::fs;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::error::{Error, ErrorKind, Result};

/// The host directory whose private entries are covered.
const ETC: &str = "/etc";

/// Whether kiln runs as root, where the covers apply.
pub fn as_root() -> bool {
    // SAFETY: geteuid(2) cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// The entries below `dir` that others cannot read: files (anything but a directory or
/// a link) without the read bit for others, directories without its read or search
/// bit. Links are not followed (what one leads to is checked where it is), and nothing
/// below a private directory is listed: covering the directory covers it. Sorted.
pub fn private_entries(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut walk = walkdir::WalkDir::new(dir)
        .min_depth(1)
        .sort_by_file_name()
        .into_iter();
    while let Some(entry) = walk.next() {
        let Ok(entry) = entry else { continue };
        let kind = entry.file_type();
        if kind.is_symlink() {
            continue;
        }
        let Ok(meta) = entry.metadata() else { continue };
        let others = meta.mode() & 0o007;
        let private = match kind.is_dir() {
            true => others & 0o005 != 0o005,
            false => others & 0o004 == 0,
        };
        if private {
            found.push(entry.into_path());
            if kind.is_dir() {
                walk.skip_current_dir();
            }
        }
    }
    found
}

/// The bwrap arguments of kiln run as root that cover `/etc`'s private entries (made
/// once per kiln run: none when kiln does not run as root), binding an empty file or
/// directory of mode 0 kept in `tmp` (the cache's) over each.
pub fn covers(tmp: &Path) -> Result<&'static [String]> {
    static COVERS: OnceLock<std::result::Result<Vec<String>, String>> = OnceLock::new();
    let made = COVERS.get_or_init(|| {
        // A link /etc (to /usr/etc, say) is followed by the mounts; its entries are
        // not walked: none is covered there.
        let etc_is_dir = fs::symlink_metadata(ETC).is_ok_and(|m| m.is_dir());
        if !(as_root() && etc_is_dir) {
            return Ok(Vec::new());
        }
        // Each bind costs every action (bubblewrap reads the mount table after each):
        // what the action could not read anyway is left as it is.
        let action = Ids::of_kiln();
        let entries: Vec<(PathBuf, fs::Metadata)> = private_entries(Path::new(ETC))
            .into_iter()
            .filter_map(|p| fs::symlink_metadata(&p).ok().map(|m| (p, m)))
            .filter(|(p, m)| action.may_read(p, m))
            .collect();
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        let (file, dir) = empty_sources(&tmp.join("cover"))?;
        let mut args = Vec::new();
        for (entry, meta) in entries {
            let source = if meta.is_dir() { &dir } else { &file };
            args.push("--ro-bind".to_string());
            args.push(source.display().to_string());
            args.push(entry.display().to_string());
        }
        Ok(args)
    });
    made.as_deref().map_err(|message| {
        Error::new(ErrorKind::Io, message.clone())
            .hint("kiln runs as root: it covers what others cannot read of /etc in each sandbox, from files it keeps in its cache directory")
    })
}

/// Whom an action of kiln run as root runs as: kiln's user and groups, without
/// capabilities (so only the files' modes let it in).
struct Ids {
    uid: u32,
    groups: Vec<u32>,
}

impl Ids {
    fn of_kiln() -> Ids {
        // SAFETY: getgroups(2) with a buffer of the size it reports.
        let groups = unsafe {
            let n = libc::getgroups(0, std::ptr::null_mut());
            let mut groups = vec![0; n.max(0) as usize];
            let got = libc::getgroups(n.max(0), groups.as_mut_ptr());
            groups.truncate(got.max(0) as usize);
            groups.push(libc::getegid());
            groups
        };
        Ids {
            // SAFETY: geteuid(2) cannot fail.
            uid: unsafe { libc::geteuid() },
            groups,
        }
    }

    /// Whether a process of these ids without capabilities may read (a directory: list
    /// or enter) the entry at `path` of metadata `meta`: with the owner's bits if it
    /// owns it, else the group's if it is in the group, else the others'. An entry
    /// with an access ACL (which may name the user) counts as readable, and so does
    /// anything but an empty file (which has nothing to read; the list is made once
    /// per kiln run, so a file filled while kiln runs stays uncovered until the next).
    fn may_read(&self, path: &Path, meta: &fs::Metadata) -> bool {
        let want = match meta.is_dir() {
            true => 0o5,
            false if meta.is_file() && meta.len() == 0 => return false,
            false => 0o4,
        };
        let mode = meta.mode();
        let bits = match () {
            () if meta.uid() == self.uid => mode >> 6,
            () if self.groups.contains(&meta.gid()) => mode >> 3,
            () => mode,
        };
        bits & want != 0 || has_acl(path)
    }
}

/// Whether `path` (not followed if a link) has an access ACL.
fn has_acl(path: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c_path) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return true;
    };
    // SAFETY: lgetxattr(2) asked for the size only, with valid C strings.
    let size = unsafe {
        libc::lgetxattr(
            c_path.as_ptr(),
            c"system.posix_acl_access".as_ptr(),
            std::ptr::null_mut(),
            0,
        )
    };
    size >= 0
}

/// An empty file and an empty directory of mode 0 in `holder`, made or checked (a
/// leftover of another mode or with content is made anew).
fn empty_sources(holder: &Path) -> std::result::Result<(PathBuf, PathBuf), String> {
    let fail =
        |what: &str, path: &Path, e: std::io::Error| format!("{what} {}: {e}", path.display());
    fs::create_dir_all(holder).map_err(|e| fail("create", holder, e))?;
    let file = holder.join("file");
    let dir = holder.join("dir");
    let is_empty_file = |m: &fs::Metadata| m.is_file() && m.len() == 0;
    let is_empty_dir = |p: &Path, m: &fs::Metadata| {
        m.is_dir() && fs::read_dir(p).is_ok_and(|mut d| d.next().is_none())
    };
    let file_ok = |p: &Path| {
        fs::symlink_metadata(p).is_ok_and(|m| is_empty_file(&m) && m.mode() & 0o7777 == 0)
    };
    let dir_ok = |p: &Path| {
        fs::symlink_metadata(p).is_ok_and(|m| is_empty_dir(p, &m) && m.mode() & 0o7777 == 0)
    };
    if !file_ok(&file) {
        remove_any(&file);
        // Made with mode 0 at once: another kiln that finds it meanwhile takes it as is.
        let made = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o000)
            .open(&file);
        if let Err(e) = made {
            if !file_ok(&file) {
                return Err(fail("create", &file, e));
            }
        }
    }
    if !dir_ok(&dir) {
        remove_any(&dir);
        let made = fs::DirBuilder::new().mode(0o000).create(&dir);
        if let Err(e) = made {
            if !dir_ok(&dir) {
                return Err(fail("create", &dir, e));
            }
        }
    }
    Ok((file, dir))
}

/// Removes whatever is at `path`, if anything; a directory with its content.
fn remove_any(path: &Path) {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => super::remove_tree(path),
        Ok(_) => drop(fs::remove_file(path)),
        Err(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{symlink, PermissionsExt};

    fn make(path: &Path, mode: u32, dir: bool) {
        match dir {
            true => fs::create_dir(path).unwrap(),
            false => fs::write(path, "x\n").unwrap(),
        }
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn private_entries_are_what_others_cannot_read() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        let at = |rel: &str| root.join(rel);
        make(&at("passwd"), 0o644, false);
        make(&at("shadow"), 0o640, false);
        make(&at("lock"), 0o600, false);
        make(&at("run-only"), 0o711, false);
        make(&at("ssl"), 0o755, true);
        make(&at("ssl/certs"), 0o755, true);
        make(&at("ssl/certs/ca.pem"), 0o644, false);
        make(&at("ssl/private"), 0o710, true);
        make(&at("ssl/private/host.key"), 0o600, false);
        make(&at("ssl/private/public.pem"), 0o644, false);
        make(&at("listable"), 0o754, true);
        make(&at("listable/inside"), 0o644, false);
        make(&at("enterable"), 0o751, true);
        make(&at("open"), 0o755, true);
        make(&at("open/sudoers"), 0o440, false);
        make(&at("open/deep"), 0o755, true);
        make(&at("open/deep/key"), 0o400, false);
        make(&at("open/deep/conf"), 0o644, false);
        // Links are not followed, wherever they lead.
        symlink("shadow", at("shadow-link")).unwrap();
        symlink("ssl/private", at("private-link")).unwrap();
        symlink("/nonexistent", at("dangling")).unwrap();
        let found: Vec<String> = private_entries(root)
            .iter()
            .map(|p| p.strip_prefix(root).unwrap().display().to_string())
            .collect();
        assert_eq!(
            found,
            [
                "enterable",
                "listable",
                "lock",
                "open/deep/key",
                "open/sudoers",
                "run-only",
                "shadow",
                "ssl/private",
            ]
        );
    }

    #[test]
    fn an_action_of_kiln_run_as_root_is_not_given_covers_for_what_it_cannot_read() {
        use std::os::unix::fs::chown;
        let tmp = tempfile::tempdir().unwrap();
        let at = |rel: &str| tmp.path().join(rel);
        // As kiln run as root: uid 0, groups 0 and 42.
        let action = Ids {
            uid: 0,
            groups: vec![0, 42],
        };
        let cases = [
            // (name, is a directory, mode, owner, group, empty, whether readable)
            ("shadow", false, 0o640, 0, 42, false, true),
            ("root-only", false, 0o600, 0, 0, false, true),
            ("group-only", false, 0o040, 7, 42, false, true),
            ("others-group", false, 0o640, 7, 8, false, false),
            ("pg_hba.conf", false, 0o600, 7, 0, false, false),
            ("no-owner-bits", false, 0o040, 0, 0, false, false),
            ("opasswd", false, 0o600, 0, 0, true, false),
            ("private", true, 0o710, 0, 42, false, true),
            ("enter-only", true, 0o100, 0, 0, false, true),
            ("rules.d", true, 0o700, 7, 0, false, false),
            ("group-enter", true, 0o710, 7, 42, false, true),
        ];
        for (name, dir, mode, uid, gid, empty, _) in cases {
            make(&at(name), mode, dir);
            if !dir && empty {
                fs::set_permissions(at(name), fs::Permissions::from_mode(0o600)).unwrap();
                fs::write(at(name), "").unwrap();
                fs::set_permissions(at(name), fs::Permissions::from_mode(mode)).unwrap();
            }
            if as_root() {
                chown(at(name), Some(uid), Some(gid)).unwrap();
            }
        }
        if !as_root() {
            eprintln!("skipped: making files of other owners needs root");
            return;
        }
        // Another user's file with an ACL entry letting root read it (`setfacl -m
        // u:root:r`): the mode alone says no.
        make(&at("acl"), 0o600, false);
        chown(at("acl"), Some(7), Some(8)).unwrap();
        set_acl_letting_root_read(&at("acl"));
        for (name, readable) in cases.iter().map(|c| (c.0, c.6)).chain([("acl", true)]) {
            let meta = fs::symlink_metadata(at(name)).unwrap();
            assert_eq!(action.may_read(&at(name), &meta), readable, "{name}");
        }
    }

    /// user::rw-, user:root:r--, group::---, mask::r--, other::--- (the kernel's
    /// `system.posix_acl_access` form: version 2, then tag, permissions and id each).
    fn set_acl_letting_root_read(path: &Path) {
        use std::os::unix::ffi::OsStrExt;
        let mut acl = 2u32.to_le_bytes().to_vec();
        for (tag, perm, id) in [
            (0x01u16, 6u16, u32::MAX),
            (0x02, 4, 0),
            (0x04, 0, u32::MAX),
            (0x10, 4, u32::MAX),
            (0x20, 0, u32::MAX),
        ] {
            acl.extend(tag.to_le_bytes());
            acl.extend(perm.to_le_bytes());
            acl.extend(id.to_le_bytes());
        }
        let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
        // SAFETY: lsetxattr(2) with valid C strings and a buffer of the given length.
        let set = unsafe {
            libc::lsetxattr(
                c_path.as_ptr(),
                c"system.posix_acl_access".as_ptr(),
                acl.as_ptr().cast(),
                acl.len(),
                0,
            )
        };
        assert_eq!(set, 0, "{}", std::io::Error::last_os_error());
    }

    #[test]
    fn the_empty_sources_are_made_anew_when_changed() {
        if !as_root() {
            eprintln!(
                "skipped: only kiln run as root makes them (and reads a directory of mode 0)"
            );
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let holder = tmp.path().join("cover");
        let (file, dir) = empty_sources(&holder).unwrap();
        let mode = |p: &Path| fs::symlink_metadata(p).unwrap().mode() & 0o7777;
        assert_eq!((mode(&file), mode(&dir)), (0, 0));
        assert_eq!(fs::metadata(&file).unwrap().len(), 0);
        // Written to and opened up (by whoever can write the cache): made empty again.
        fs::set_permissions(&file, fs::Permissions::from_mode(0o644)).unwrap();
        fs::write(&file, "secret\n").unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        fs::write(dir.join("x"), "x").unwrap();
        let again = empty_sources(&holder).unwrap();
        assert_eq!(again, (file.clone(), dir.clone()));
        assert_eq!(fs::metadata(&file).unwrap().len(), 0);
        assert_eq!((mode(&file), mode(&dir)), (0, 0));
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 0);
    }
}
