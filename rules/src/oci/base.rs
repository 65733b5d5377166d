//! A distroless/static-like base layer, built from a few declared values, never pulled.
//!
//! It holds what a static Go binary expects to find and nothing else, as
//! gcr.io/distroless/static does:
//! - `/etc/passwd` and `/etc/group`: `root` (0) and `nobody` (65534), then the declared
//!   users in the order given, each with a group named like it (unless its gid is already
//!   a group); every account's shell is `/sbin/nologin`;
//! - `/root` (0700 root) and each user's home (0700, owned by the user);
//! - `/tmp` with mode 1777;
//! - declared extra files (a CA bundle, a zoneinfo file...), root-owned, 0644 unless set.
//!
//! A name or uid given twice (including `root` and `nobody`) is an error: two accounts with
//! one name make `user = "name"` ambiguous.

use std::collections::HashSet;
use std::path::PathBuf;

use super::error::{Error, Result};
use super::layer::{EntryKind, LayerEntry};

/// An account of the base image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    /// Absolute home directory, created owned by the user (e.g. `/home/nonroot`).
    pub home: String,
}

impl User {
    /// distroless's `nonroot` account: 65532:65532, home `/home/nonroot`.
    pub fn nonroot() -> User {
        User {
            name: "nonroot".into(),
            uid: 65532,
            gid: 65532,
            home: "/home/nonroot".into(),
        }
    }
}

/// An extra file of the base image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseFile {
    /// Absolute path inside the image.
    pub path: String,
    pub source: PathBuf,
    pub mode: u32,
}

const NOLOGIN: &str = "/sbin/nologin";

/// The entries of a base layer for `users` plus `files`; pass them to
/// [`super::write_layer`].
pub fn base_entries(users: &[User], files: &[BaseFile]) -> Result<Vec<LayerEntry>> {
    let accounts = accounts(users)?;
    let mut entries = vec![
        LayerEntry::bytes("/etc/passwd", passwd(&accounts), 0o644),
        LayerEntry::bytes("/etc/group", group(&accounts), 0o644),
        LayerEntry::dir("/tmp", 0o1777),
        LayerEntry::dir("/root", 0o700),
    ];
    for user in users {
        entries.push(LayerEntry::dir(&user.home, 0o700).owned_by(user.uid, user.gid));
    }
    for file in files {
        let kind = EntryKind::File {
            source: file.source.clone(),
        };
        entries.push(LayerEntry::new(&file.path, kind, file.mode));
    }
    Ok(entries)
}

fn accounts(users: &[User]) -> Result<Vec<User>> {
    let builtin = [
        User {
            name: "root".into(),
            uid: 0,
            gid: 0,
            home: "/root".into(),
        },
        User {
            name: "nobody".into(),
            uid: 65534,
            gid: 65534,
            home: "/nonexistent".into(),
        },
    ];
    let all: Vec<User> = builtin.into_iter().chain(users.iter().cloned()).collect();
    let (mut names, mut uids) = (HashSet::new(), HashSet::new());
    for user in &all {
        check_name(&user.name)?;
        if !names.insert(user.name.as_str()) || !uids.insert(user.uid) {
            return Err(Error::input(format!(
                "add user `{}` ({}) to the base image: its name or uid is already taken",
                user.name, user.uid
            )));
        }
    }
    Ok(all)
}

/// Account names as useradd accepts them: `[a-z_][a-z0-9_-]*`, at most 32 bytes.
fn check_name(name: &str) -> Result<()> {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_');
    let rest_ok = chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_-".contains(c));
    if first_ok && rest_ok && name.len() <= 32 {
        return Ok(());
    }
    Err(Error::input(format!(
        "add user `{name}` to the base image: names are [a-z_][a-z0-9_-]*, 32 bytes at most"
    )))
}

fn passwd(accounts: &[User]) -> String {
    accounts
        .iter()
        .map(|u| {
            let (name, uid, gid, home) = (&u.name, u.uid, u.gid, &u.home);
            format!("{name}:x:{uid}:{gid}:{name}:{home}:{NOLOGIN}\n")
        })
        .collect()
}

fn group(accounts: &[User]) -> String {
    let mut gids = HashSet::new();
    accounts
        .iter()
        .filter(|u| gids.insert(u.gid))
        .map(|u| format!("{}:x:{}:\n", u.name, u.gid))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_passwd_and_group_like_distroless() {
        let entries = base_entries(&[User::nonroot()], &[]).unwrap();
        let EntryKind::Bytes(passwd) = &entries[0].kind else {
            panic!("passwd is in memory")
        };
        assert_eq!(
            String::from_utf8_lossy(passwd),
            "root:x:0:0:root:/root:/sbin/nologin\n\
             nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n\
             nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n"
        );
        let home = entries.iter().find(|e| e.path == "/home/nonroot").unwrap();
        assert_eq!((home.uid, home.gid, home.mode), (65532, 65532, 0o700));
    }

    #[test]
    fn refuses_taken_names_and_bad_names() {
        let mut again = User::nonroot();
        again.name = "root".into();
        assert!(base_entries(&[again], &[]).is_err());
        let mut bad = User::nonroot();
        bad.name = "no:root".into();
        assert!(base_entries(&[bad], &[]).is_err());
    }
}
