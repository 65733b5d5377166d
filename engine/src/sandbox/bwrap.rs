//! The bubblewrap command of a sandboxed process (see the parent module's table of what
//! it sees).
//!
//! The new root is a read-only tmpfs holding the host's system directories ([`SYSTEM`]:
//! `/usr`, `/etc`, `/opt`, the `/bin` and `/lib` links...), bound read-only (links as
//! links, empty directories made alike), `/proc`, `/dev`, `/tmp` and `/run`, which are
//! the sandbox's own, and `/kiln`, where the sandbox root, tree tools and the kiln
//! binary appear at fixed paths. A file tool elsewhere (a home directory) is bound at
//! its own path. The module download, which has network and runs no workspace code,
//! sees every top-level entry of the host instead, with the host's `/run` and `/tmp`.
//! The workspace and the cache, where in sight, are covered by empty tmpfs mounts (a
//! tool that lives below one is bound back, read-only). When kiln runs as root, the
//! entries of `/etc` that others cannot read are covered and `/proc/sys` is read-only
//! (`private.rs`). bwrap reads its arguments from a file descriptor, so the host paths
//! they name are not in the sandbox's `/proc/1/cmdline`.
//!
//! What a sandbox costs is mostly its binds: bubblewrap reads the whole mount table
//! after each one, under the kernel's mount lock, so concurrent sandboxes wait for each
//! other (bench/README.md, "The sandbox's cost").

use std::fs;
use std::io::{Seek, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use super::{private, view_entries, Host, StoreAccess, StoreFiles};
use crate::action::{ExecSpec, Tool};
use crate::error::Result;

/// The sandbox root, as the process sees it.
pub const ROOT: &str = "/kiln/ws";
/// The kiln binary, as the process sees it.
pub const KILN: &str = "/kiln/bin/kiln";
/// A view of Go's compile cache (`store_view`), as the process sees it.
pub const GOCACHE_VIEW: &str = "/kiln/gocache";
const TOOLS: &str = "/kiln/tools";
/// Host top-level entries the sandbox has its own of.
const OWN: &[&str] = &["proc", "dev", "tmp", "kiln"];
/// The host's top-level entries an action without network sees: where programs, their
/// libraries and their configuration live. Not home directories, `/root`, `/var`,
/// `/mnt`, `/media`, `/srv` or whatever else the host keeps at its top (a tool there is
/// bound at its own path), nor `/sys`, as in Nix's build sandbox: its dozen cgroup
/// mounts cost each action ~0.5 ms, and what reads it (Go's runtime for cgroup CPU
/// limits, `nproc --all`) falls back to what the process's own state says.
const SYSTEM: &[&str] = &[
    "bin", "etc", "lib", "lib32", "lib64", "libx32", "nix", "opt", "sbin", "usr",
];
/// Where the host's services keep their sockets: empty for an action without network
/// (a tool below them, such as NixOS's `/run/current-system/sw/bin`, is bound back).
const RUN: &[&str] = &["/run", "/var/run"];

/// The sockets of the user's agents that kiln's environment names: `SSH_AUTH_SOCK` (ssh
/// keys) and a `unix://` `DOCKER_HOST` (a rootless or remote docker), each an absolute
/// path to a socket (found once).
fn agent_sockets() -> &'static [PathBuf] {
    use std::os::unix::fs::FileTypeExt;
    static FOUND: OnceLock<Vec<PathBuf>> = OnceLock::new();
    FOUND.get_or_init(|| {
        let var = |name: &str| std::env::var(name).ok();
        let docker = var("DOCKER_HOST").and_then(|h| h.strip_prefix("unix://").map(String::from));
        [var("SSH_AUTH_SOCK"), docker]
            .into_iter()
            .flatten()
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
            // A link (~/.ssh/agent.sock, say) is followed: the socket itself is covered.
            .filter_map(|p| fs::canonicalize(p).ok())
            .filter(|p| fs::metadata(p).is_ok_and(|m| m.file_type().is_socket()))
            .collect()
    })
}

/// Where a tool is seen: a tree at `/kiln/tools/NAME`, a file where it is.
pub fn tool_path(tool: &Tool) -> PathBuf {
    match tool.tree {
        true => Path::new(TOOLS).join(&tool.name),
        false => tool.path.clone(),
    }
}

/// Whether bubblewrap can make the namespaces kiln asks for here: probed by running it
/// once, and the answer "yes" remembered in `memo` (a file of the cache) together with
/// what it depends on (the bwrap binary, the user, the boot, the kernel's user-namespace
/// switches), so that a build does not pay a probe process (~10 ms) while none of that
/// changed. "No" is never remembered: it is probed again, as it may be fixed meanwhile.
pub fn works(memo: &Path) -> bool {
    static WORKS: OnceLock<bool> = OnceLock::new();
    *WORKS.get_or_init(|| {
        let facts = probe_facts();
        if facts
            .as_deref()
            .is_some_and(|f| fs::read(memo).is_ok_and(|m| m == f.as_bytes()))
        {
            return true;
        }
        let works = probe();
        if let (true, Some(facts)) = (works, facts) {
            // A memo that cannot be written only means probing again next time.
            let _ = crate::noop::write_atomically(memo, &facts);
        }
        works
    })
}

/// What a probe's answer depends on, as one line; None if bwrap is not found.
fn probe_facts() -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let bwrap = bwrap();
    let meta = fs::metadata(&bwrap).ok()?;
    let read = |p: &str| fs::read_to_string(p).unwrap_or_default().trim().to_string();
    Some(format!(
        "{} {} {} {} uid={} boot={} userns={}/{}/{}\n",
        bwrap.display(),
        meta.len(),
        meta.mtime_nsec() + meta.mtime() * 1_000_000_000,
        meta.ino(),
        unsafe { libc::getuid() },
        read("/proc/sys/kernel/random/boot_id"),
        read("/proc/sys/kernel/unprivileged_userns_clone"),
        read("/proc/sys/user/max_user_namespaces"),
        read("/proc/sys/kernel/apparmor_restrict_unprivileged_userns"),
    ))
}

fn probe() -> bool {
    Command::new(bwrap())
        .args(["--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc"])
        .args([
            "--unshare-net",
            "--unshare-pid",
            "--unshare-ipc",
            "--unshare-uts",
        ])
        .args(["--cap-drop", "ALL", "true"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn bwrap() -> PathBuf {
    super::find_on_path("bwrap").unwrap_or_else(|| PathBuf::from("/usr/bin/bwrap"))
}

/// Arguments that add the host's top-level entries to the new root (computed once):
/// for an action with network (the module download, which runs no workspace code) all
/// of them, else those of [`SYSTEM`].
///
/// Every bind costs bubblewrap a read of the whole mount table (containers/bubblewrap
/// #384) and takes the kernel's mount lock, which concurrent sandboxes wait for: about
/// 0.1 ms of a -j2 build's wall time per bind and action (bench/README.md, "The
/// sandbox's cost"). So an entry that a bind would show as an empty directory of mode
/// 0755 (`/srv`, `/media`, `/boot` in most containers) is made as one in the new root
/// instead, which the final read-only remount of that root keeps unwritable.
fn host_root(network: bool) -> &'static [String] {
    static ALL: OnceLock<Vec<String>> = OnceLock::new();
    static SYSTEM_ONLY: OnceLock<Vec<String>> = OnceLock::new();
    let args = match network {
        true => &ALL,
        false => &SYSTEM_ONLY,
    };
    args.get_or_init(|| {
        let mut args = Vec::new();
        let mut entries: Vec<_> = fs::read_dir("/").into_iter().flatten().flatten().collect();
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let name = entry.file_name().to_string_lossy().into_owned();
            if OWN.contains(&name.as_str()) || !(network || SYSTEM.contains(&name.as_str())) {
                continue;
            }
            let path = format!("/{name}");
            match fs::read_link(&path) {
                Ok(target) => args.extend(["--symlink".into(), target.display().to_string(), path]),
                Err(_) if is_plain_empty_dir(&path) => args.extend(["--dir".into(), path]),
                Err(_) => args.extend(["--ro-bind".into(), path.clone(), path]),
            }
        }
        args
    })
}

/// Whether an action without network sees `path` of the host: below an entry of
/// [`SYSTEM`] as written (a link on the way may lead elsewhere: a tool's is followed
/// in [`command`]).
fn in_system(path: &Path) -> bool {
    let mut parts = path.components();
    parts.next() == Some(std::path::Component::RootDir)
        && matches!(parts.next(), Some(std::path::Component::Normal(n)) if SYSTEM.iter().any(|s| n == *s))
}

/// The file tools of `spec` that an action without network sees alone, at their own
/// path (outside the system directories, or leading there by a link): what a "not
/// found" in such an action may come from.
pub fn tools_seen_alone(spec: &ExecSpec) -> Vec<&Tool> {
    let alone = |p: &Path| !in_system(p) || fs::canonicalize(p).is_ok_and(|r| !in_system(&r));
    match spec.network {
        true => Vec::new(),
        false => spec
            .tools
            .iter()
            .filter(|t| !t.tree && alone(&t.path))
            .collect(),
    }
}

/// Whether `path` is a directory that bwrap's `--dir` would make alike: empty, of mode
/// 0755, owned by root (as bwrap's own directories are when kiln runs as root, and as
/// the host's look from a user namespace only if they are the user's: so this holds
/// only for root), and not a mount point (whose content can come and go).
fn is_plain_empty_dir(path: &str) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = fs::symlink_metadata(path) else {
        return false;
    };
    let root_owned = meta.uid() == 0 && meta.gid() == 0 && unsafe { libc::geteuid() } == 0;
    let same_device = fs::symlink_metadata("/").is_ok_and(|r| r.dev() == meta.dev());
    meta.is_dir()
        && meta.mode() & 0o7777 == 0o755
        && root_owned
        && same_device
        && fs::read_dir(path).is_ok_and(|mut d| d.next().is_none())
}

/// The bwrap arguments for one process.
struct Args(Vec<String>);

impl Args {
    fn add(&mut self, args: &[&str]) {
        self.0.extend(args.iter().map(|a| a.to_string()));
    }

    fn bind(&mut self, how: &str, from: &Path, to: &Path) {
        self.add(&[how, &from.display().to_string(), &to.display().to_string()]);
    }
}

/// The command that runs `program` (as the process sees it) under bubblewrap, and a
/// descriptor to keep open until it has started.
pub fn command(
    root: &Path,
    spec: &ExecSpec,
    host: &Host,
    access: Option<&StoreAccess>,
    sealed: &[String],
    program: &str,
) -> Result<(Command, Option<OwnedFd>)> {
    let mut args = Args(host_root(spec.network).to_vec());
    // Run as root, the action owns /etc's secrets and the kernel's settings (see
    // `private`): what others cannot read of /etc is covered, /proc/sys read-only.
    args.0
        .extend_from_slice(private::covers(&host.cache.join("tmp"))?);
    args.add(&["--proc", "/proc"]);
    if private::as_root() {
        args.add(&["--ro-bind", "/proc/sys", "/proc/sys"]);
    }
    args.add(&["--dev", "/dev"]);
    args.add(&["--unshare-pid", "--unshare-ipc", "--unshare-uts"]);
    args.add(&["--die-with-parent", "--new-session", "--cap-drop", "ALL"]);
    match spec.network {
        // A fixed-output action may read what the host keeps in /tmp (a `file://`
        // module mirror, say), read-only; its scratch space is the sandbox's own.
        true => args.add(&["--ro-bind", "/tmp", "/tmp"]),
        false => {
            args.add(&["--unshare-net", "--tmpfs", "/tmp"]);
            // The host's service sockets (docker.sock, the system and user buses): a
            // socket can be connected to on a read-only mount.
            // (`/var/run`, where it is not a link to `/run`, is out of sight with `/var`.)
            if fs::symlink_metadata("/run").is_ok_and(|m| m.is_dir()) {
                args.add(&["--tmpfs", "/run"]);
            }
        }
    }
    let hidden = [&host.workspace, &host.cache];
    // What is outside the system directories is out of sight already, as is what is
    // below a private /tmp.
    let in_sight = |p: &Path| spec.network || in_system(p);
    for dir in hidden {
        if dir.exists() && in_sight(dir) {
            args.add(&["--tmpfs", &dir.display().to_string()]);
        }
    }
    let in_run = |path: &Path| !spec.network && RUN.iter().any(|r| path.starts_with(r));
    // The user's agents may keep their sockets elsewhere (a home directory), where the
    // read-only host is in sight: /dev/null over each makes connecting fail.
    let private = |p: &Path| (!spec.network && p.starts_with("/tmp")) || in_run(p);
    for socket in agent_sockets() {
        if in_sight(socket) && !private(socket) && !hidden.iter().any(|d| socket.starts_with(d)) {
            args.bind("--ro-bind", Path::new("/dev/null"), socket);
        }
    }
    for tool in &spec.tools {
        let seen = tool_path(tool);
        let out_of_sight =
            |p: &Path| !in_sight(p) || hidden.iter().any(|d| p.starts_with(d)) || in_run(p);
        if tool.tree || out_of_sight(&tool.path) {
            args.bind("--ro-bind", &tool.path, &seen);
        }
        // A file tool in sight that is a link to a file out of sight (`/usr/local/bin/x`
        // to a home directory's): that file at its own path, so that the link leads there.
        if !tool.tree && !out_of_sight(&tool.path) {
            if let Ok(real) = fs::canonicalize(&tool.path) {
                if out_of_sight(&real) {
                    args.bind("--ro-bind", &real, &real);
                }
            }
        }
    }
    // Only where `{kiln}` names it (a helper such as `kiln gocacheprog`), as in a remote
    // input root: one bind less for every other action.
    if super::launch_of(spec).needs_kiln() {
        args.bind("--ro-bind", &super::kiln_exe(), Path::new(KILN));
    }
    if let Some(access) = access {
        // The shared store's blob files, read-only (writes go through the socket), or a
        // view's copies, and the socket's directory, read-only too: connecting needs no
        // write access, and the action must not be able to remove or replace the socket.
        match &access.files {
            StoreFiles::Blobs(blobs) => args.bind("--ro-bind", blobs, blobs),
            StoreFiles::View(dir) => args.bind("--ro-bind", dir, Path::new(GOCACHE_VIEW)),
        }
        args.bind("--ro-bind", &access.socket_dir, &access.socket_dir);
    }
    args.bind("--bind", root, Path::new(ROOT));
    // Scratch space in memory (Go's GOCACHE): nothing under it is an output.
    args.add(&["--tmpfs", &format!("{ROOT}/.kiln/tmp")]);
    for rel in sealed {
        let at = Path::new(ROOT).join(rel);
        args.bind("--ro-bind", &root.join(rel), &at);
    }
    if let Some(reads) = &spec.reads {
        for entry in view_entries(&host.workspace, reads).unwrap_or_default() {
            let to = Path::new(ROOT).join(&entry);
            args.bind("--ro-bind", &host.workspace.join(&entry), &to);
        }
        // At the sandbox root itself new files land in the sandbox already, and a copy
        // bound there would hide the sandbox's own files.
        if reads.scratch_workdir && !spec.workdir.is_empty() {
            scratch_workdir(&mut args, root, &host.workspace, &spec.workdir);
        }
    }
    // bwrap sets PWD to this path as given: no trailing `/` for the root itself (which
    // `join("")` would add), or a test's os.Getwd() shows it.
    let workdir = match spec.workdir.as_str() {
        "" => PathBuf::from(ROOT),
        dir => Path::new(ROOT).join(dir),
    };
    // The new root itself read-only, as the host's is (it holds the empty directories
    // made in place of binds, see `host_root`); the mounts on it keep their own modes.
    args.add(&["--remount-ro", "/"]);
    args.add(&["--chdir", &workdir.display().to_string()]);
    let (mut cmd, fd) = with_args_fd(args.0);
    cmd.args(["--", program]);
    Ok((cmd, fd))
}

/// The working directory as writable copies of its files (in the sandbox's
/// `.kiln/workdir`), its subdirectories bound back read-only from the workspace.
fn scratch_workdir(args: &mut Args, root: &Path, workspace: &Path, workdir: &str) {
    let copy = root.join(".kiln/workdir");
    let from = workspace.join(workdir);
    if fs::create_dir_all(&copy).is_err() {
        return;
    }
    let to = Path::new(ROOT).join(workdir);
    let mut subdirs = Vec::new();
    for entry in fs::read_dir(&from).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            subdirs.push(entry.file_name());
        } else if path.is_file() {
            let _ = fs::copy(&path, copy.join(entry.file_name()));
        }
    }
    args.bind("--bind", &copy, &to);
    for sub in subdirs {
        args.bind("--ro-bind", &from.join(&sub), &to.join(&sub));
    }
}

/// `bwrap --args 3`, with the arguments (NUL-separated) in an anonymous memory file on
/// descriptor 3; on the command line if no such file can be made. The returned
/// descriptor must stay open until the command has started.
fn with_args_fd(args: Vec<String>) -> (Command, Option<OwnedFd>) {
    let mut bytes = Vec::new();
    for a in &args {
        bytes.extend_from_slice(a.as_bytes());
        bytes.push(0);
    }
    let Some(fd) = memfd_with(&bytes) else {
        let mut cmd = Command::new(bwrap());
        cmd.args(args);
        return (cmd, None);
    };
    let mut cmd = Command::new(bwrap());
    cmd.args(["--args", "3"]);
    let raw = fd.as_raw_fd();
    // dup2 onto 3 clears close-on-exec for the child alone.
    unsafe {
        cmd.pre_exec(move || match libc::dup2(raw, 3) {
            -1 => Err(std::io::Error::last_os_error()),
            _ => Ok(()),
        });
    }
    (cmd, Some(fd))
}

/// An anonymous memory file holding `bytes`, positioned at its start.
fn memfd_with(bytes: &[u8]) -> Option<OwnedFd> {
    let raw = unsafe { libc::memfd_create(c"kiln-bwrap-args".as_ptr(), libc::MFD_CLOEXEC) };
    if raw < 0 {
        return None;
    }
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let mut file = fs::File::from(fd);
    file.write_all(bytes).ok()?;
    file.seek(std::io::SeekFrom::Start(0)).ok()?;
    Some(OwnedFd::from(file))
}
