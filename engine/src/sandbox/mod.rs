//! Sandboxes: a fresh directory per action holding only its declared inputs.
//!
//! Layout of a sandbox root (a temporary directory inside the store's `tmp/`, so
//! outputs can be renamed into the CAS):
//!
//! ```text
//! <root>/pkg/in.txt                  inputs at their workspace-relative paths
//! <root>/kiln-out/pkg/...            outputs are written here
//! <root>/.kiln/bin/NAME -> host tool one link per declared tool (PATH)
//! <root>/.kiln/home, .kiln/tmp       HOME, and scratch space (TMPDIR in dir mode)
//! <root>/.kiln/stdout, .kiln/stderr  captured output
//! ```
//!
//! Modes ([`SandboxMode`]): `dir` runs the process directly in that directory with an
//! empty environment: no boundary, only a clean working directory. `bwrap` runs it under
//! bubblewrap ([`bwrap`]), where what the process sees is the same on every machine and
//! for every checkout:
//!
//! | path              | what                                                        |
//! |-------------------|-------------------------------------------------------------|
//! | `/kiln/ws`        | the sandbox root (`{sandbox}`): inputs at workspace paths    |
//! | `/kiln/tools/NAME`| a tree tool, such as the Go toolchain (`{tool:go}`)         |
//! | `/kiln/bin/kiln`  | the kiln binary (`{kiln}`), for helpers like gocacheprog; only where `{kiln}` is named |
//! | `/tmp`            | private scratch space in memory (TMPDIR)                    |
//! | `/run`            | empty (the host's service sockets are there), unless the action has network |
//! | `/usr`, `/etc`, `/opt`, `/bin`, `/sbin`, `/lib*`, `/nix` | the host's, read-only (without the workspace and the cache; when kiln runs as root, what others cannot read of `/etc` is an empty file or directory of mode 0) |
//! | `/proc`           | the sandbox's own; `/proc/sys` read-only when kiln runs as root |
//! | a file tool's path | the tool, read-only, wherever it lives on the host          |
//! | nothing else      | no home directories, `/root`, `/var`, `/mnt`, `/sys`...; the module download (network) sees the whole host read-only |
//!
//! Fixed paths are what let paths compiled into binaries (Go's test binaries keep
//! their source paths so that `runtime.Caller` finds a test's files) be the same for
//! everyone, so that the results keyed by those binaries are shared. The process has
//! its own PID, IPC, UTS and (unless the action is a fixed-output one) network
//! namespaces and no capabilities, even when kiln runs as root (where it keeps uid 0:
//! `private.rs` says what that uid still owns and how kiln keeps it out of reach).
//! `auto` picks bwrap where it works.
//!
//! An action with [`Reads`] also sees one workspace directory read-only at its place
//! under the root (see [`crate::action::Reads`]).
//!
//! The placeholders' expansion and the process's PATH, HOME, TMPDIR and PWD come from
//! the kiln-launch crate ([`kiln_launch::Seen`]), the same code the `kiln-launch` binary
//! runs in a remote worker's input root: here [`seen`] says where things are in each mode.

mod bwrap;
mod private;
mod running;

pub use bwrap::{tools_seen_alone, GOCACHE_VIEW};
use kiln_cache::held::HeldDir;
pub use kiln_cache::held::{remove_abandoned, remove_tree};
pub use kiln_launch::{host_user, Launch, LAUNCH_FILE, ROOT_FILE};
pub use running::{kill_all, Running};

use kiln_launch::{resolve_program, Seen};

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use crate::action::{ExecSpec, Reads, Tool};
use crate::error::{Error, ErrorKind, Result};
use crate::workspace::OUT_DIR;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SandboxMode {
    Auto,
    Bwrap,
    Dir,
}

impl std::str::FromStr for SandboxMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(SandboxMode::Auto),
            "bwrap" => Ok(SandboxMode::Bwrap),
            "dir" => Ok(SandboxMode::Dir),
            _ => Err(format!("unknown sandbox `{s}` (auto, bwrap or dir)")),
        }
    }
}

impl SandboxMode {
    /// The mode to use: `auto` becomes bwrap where it works (the probe's answer kept in
    /// `memo`, see [`bwrap::works`]).
    pub fn resolve(self, memo: &Path) -> Result<SandboxMode> {
        match self {
            SandboxMode::Dir => Ok(SandboxMode::Dir),
            SandboxMode::Auto if bwrap::works(memo) => Ok(SandboxMode::Bwrap),
            SandboxMode::Auto => {
                eprintln!(
                    "kiln: warning: bubblewrap is missing or cannot make namespaces here: actions run in plain directories, with no boundary (--sandbox=dir); their results are kept apart from isolated ones and not uploaded"
                );
                Ok(SandboxMode::Dir)
            }
            SandboxMode::Bwrap if bwrap::works(memo) => Ok(SandboxMode::Bwrap),
            SandboxMode::Bwrap => Err(Error::new(
                ErrorKind::Action,
                "use bubblewrap: `bwrap` is missing or cannot create namespaces here",
            )
            .hint("install bubblewrap, or pass --sandbox=dir")),
        }
    }
}

/// What of the host a sandbox hides: the workspace (whose files an action sees only as
/// its inputs, or read-only through [`Reads`]) and kiln's cache.
#[derive(Debug, Clone, Default)]
pub struct Host {
    pub workspace: PathBuf,
    pub cache: PathBuf,
}

/// What an action with `store_access` or `store_view` sees of the shared store: the
/// socket its `kiln gocacheprog` relays to, and where the files handed out as
/// `DiskPath`s are: the store's blob files, or a view's copies.
#[derive(Debug, Clone)]
pub struct StoreAccess {
    pub socket: PathBuf,
    /// What a session must start with (see [`kiln_cache::gocacheprog::TOKEN_ENV`]).
    pub token: String,
    pub socket_dir: PathBuf,
    pub files: StoreFiles,
}

#[derive(Debug, Clone)]
pub enum StoreFiles {
    /// The store's blob files (`store_access`).
    Blobs(PathBuf),
    /// A view's directory on this machine, seen by the action at [`GOCACHE_VIEW`]
    /// under bubblewrap (`store_view`).
    View(PathBuf),
}

/// Where the process of an action run in `mode` finds things: the placeholders' values.
fn seen(root: &Path, mode: SandboxMode, spec: &ExecSpec) -> Seen {
    let tools = &spec.tools;
    if mode == SandboxMode::Bwrap {
        let root = PathBuf::from(bwrap::ROOT);
        return Seen {
            // The host's /tmp, where a fixed-output action sees it, is not its own.
            tmp: match spec.network {
                true => root.join(".kiln/tmp"),
                false => PathBuf::from("/tmp"),
            },
            root,
            kiln: PathBuf::from(bwrap::KILN),
            tools: tools
                .iter()
                .map(|t| (t.name.clone(), bwrap::tool_path(t)))
                .collect(),
        };
    }
    Seen {
        root: root.to_path_buf(),
        tmp: root.join(".kiln/tmp"),
        kiln: kiln_exe(),
        tools: tools
            .iter()
            .map(|t| (t.name.clone(), t.path.clone()))
            .collect(),
    }
}

/// The fixed path at which processes see their sandbox root in `mode` (bwrap's
/// `/kiln/ws`), if there is one.
pub fn fixed_root(mode: SandboxMode) -> Option<&'static Path> {
    (mode == SandboxMode::Bwrap).then(|| Path::new(bwrap::ROOT))
}

/// What a remote worker's launcher runs for this action ([`kiln_launch::run`]); an
/// action with [`Reads`] has the root's path written to [`ROOT_FILE`] first.
pub fn launch_of(spec: &ExecSpec) -> Launch {
    Launch {
        argv: spec.argv.clone(),
        env: spec.env.clone(),
        workdir: spec.workdir.clone(),
        root_file: match spec.reads {
            Some(_) => ROOT_FILE.to_string(),
            None => String::new(),
        },
    }
}

/// The running kiln binary. Linux names a binary replaced while it runs
/// "<path> (deleted)"; the new one at the same path serves as well.
pub fn kiln_exe() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("kiln"));
    PathBuf::from(exe.to_string_lossy().trim_end_matches(" (deleted)"))
}

/// The launcher that starts actions on remote workers (`kiln-launch`, built with kiln):
/// beside the running kiln binary, if it is there.
pub fn launcher_exe() -> Option<PathBuf> {
    let launcher = kiln_exe().with_file_name(kiln_launch::LAUNCHER);
    launcher.is_file().then_some(launcher)
}

/// Whether an environment value holds a placeholder whose value is not in keys.
pub fn is_volatile(value: &str) -> bool {
    value.contains("{user}")
}

/// An environment value with the placeholders that are not in keys expanded.
pub fn expand_volatile(value: &str) -> String {
    value.replace("{user}", host_user())
}

/// kiln's own entries in a sandbox (true: a directory), which its process can write
/// but must leave as they are: the captures of its output and their directory, and the
/// directory of its tools' links (written again for a batch's retry).
const OWN: &[(&str, bool)] = &[
    (".kiln", true),
    (".kiln/bin", true),
    (".kiln/stdout", false),
    (".kiln/stderr", false),
];

/// What lies at `rel` below `root`, found without following any link: None if nothing
/// does; if something on the way is not a directory (a link a process made to a
/// directory of the host, say), an error naming that part of `rel` and what it is.
pub fn lstat_beneath(
    root: &Path,
    rel: &str,
) -> std::result::Result<Option<fs::Metadata>, (String, &'static str)> {
    let mut path = root.to_path_buf();
    let parts: Vec<&str> = rel.split('/').filter(|p| !p.is_empty()).collect();
    for (i, part) in parts.iter().enumerate() {
        path.push(part);
        let Ok(meta) = fs::symlink_metadata(&path) else {
            return Ok(None);
        };
        if i + 1 == parts.len() {
            return Ok(Some(meta));
        }
        if !meta.is_dir() {
            return Err((parts[..=i].join("/"), kind_of(&meta)));
        }
    }
    Ok(None)
}

/// What a file is, for messages: "a symbolic link", "a directory", ...
pub fn kind_of(meta: &fs::Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let t = meta.file_type();
    if t.is_symlink() {
        "a symbolic link"
    } else if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a fifo"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_block_device() || t.is_char_device() {
        "a device"
    } else {
        "a regular file"
    }
}

/// A prepared sandbox directory. Removed when dropped.
///
/// Beside it lies `<name>.lock`, locked while the sandbox is in use, so that one left
/// by a kiln that was killed is told apart from one a running build uses
/// ([`remove_abandoned`]).
pub struct Sandbox {
    dir: HeldDir,
    /// Sandbox-relative paths the process may not write (see [`Sandbox::seal`]).
    sealed: Vec<String>,
    /// The root as a remote worker's process saw it, once one ran there.
    remote_root: std::sync::Mutex<Option<PathBuf>>,
}

impl Sandbox {
    pub fn create(tmp: &Path) -> Result<Sandbox> {
        let sandbox = Sandbox {
            dir: HeldDir::create(tmp, "sandbox-")?,
            sealed: Vec::new(),
            remote_root: std::sync::Mutex::new(None),
        };
        for sub in [".kiln/bin", ".kiln/home", ".kiln/tmp"] {
            let p = sandbox.root().join(sub);
            fs::create_dir_all(&p).map_err(|e| Error::io("create", &p, e))?;
        }
        // Empty captures, so a builtin action that prints nothing has them too.
        for capture in [".kiln/stdout", ".kiln/stderr"] {
            open_capture(&sandbox.root().join(capture))?;
        }
        Ok(sandbox)
    }

    /// Paths (files or directories) that bubblewrap mounts read-only for the process:
    /// the store's files linked in as inputs.
    pub fn seal(&mut self, paths: Vec<String>) {
        self.sealed = paths;
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// The absolute path of a sandbox-relative path, creating its parent directory.
    pub fn prepare_path(&self, rel: &str) -> Result<PathBuf> {
        let path = self.root().join(rel);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(|e| Error::io("create", parent, e))?;
        }
        Ok(path)
    }

    /// Keeps the directory (for debugging a failed action); returns its path.
    pub fn keep(self) -> PathBuf {
        self.dir.keep()
    }

    /// The sandbox root as the process of an action run in `mode` sees it, or, after
    /// a run on a remote worker, as that worker's process saw it.
    pub fn seen_root(&self, mode: SandboxMode) -> PathBuf {
        if let Some(root) = self.remote_root.lock().unwrap().clone() {
            return root;
        }
        seen(self.root(), mode, &ExecSpec::default()).root
    }

    /// Notes where a remote worker's process saw the root (None: it ran here again).
    pub fn set_remote_root(&self, root: Option<PathBuf>) {
        *self.remote_root.lock().unwrap() = root;
    }

    /// Runs the process; returns its exit code (stdout and stderr go to .kiln/).
    pub fn run(
        &self,
        spec: &ExecSpec,
        mode: SandboxMode,
        host: &Host,
        access: Option<&StoreAccess>,
    ) -> Result<i32> {
        let root = self.root();
        self.link_tools(&spec.tools)?;
        let (argv, mut env) = seen(root, mode, spec).process(&spec.argv, &spec.env, &spec.workdir);
        if let Some(access) = access {
            let socket = access.socket.display().to_string();
            env.insert(kiln_cache::gocacheprog::SOCKET_ENV.into(), socket);
            let token = access.token.clone();
            env.insert(kiln_cache::gocacheprog::TOKEN_ENV.into(), token);
        }
        let (mut cmd, _args) = match mode {
            SandboxMode::Bwrap => bwrap::command(root, spec, host, access, &self.sealed, &argv[0])?,
            _ => {
                if let Some(reads) = &spec.reads {
                    link_view(root, &host.workspace, reads)?;
                }
                let mut cmd = Command::new(resolve_program(&argv[0], &env["PATH"]));
                cmd.current_dir(root.join(&spec.workdir));
                (cmd, None)
            }
        };
        cmd.args(&argv[1..])
            .env_clear()
            .envs(&env)
            .stdin(Stdio::null())
            .stdout(open_capture(&root.join(".kiln/stdout"))?)
            .stderr(open_capture(&root.join(".kiln/stderr"))?);
        if std::env::var_os("KILN_DEBUG_SANDBOX").is_some() {
            eprintln!("kiln: sandbox command: {cmd:?}");
        }
        // A group of its own, so that every process it leaves behind ends with it (under
        // bubblewrap its PID namespace does that).
        cmd.process_group(0);
        let mut child = cmd
            .spawn()
            .map_err(|e| Error::new(ErrorKind::Action, format!("start `{}`: {e}", argv[0])))?;
        let running = Running::register(child.id());
        let status = child.wait();
        running.kill_group();
        let status = status
            .map_err(|e| Error::new(ErrorKind::Action, format!("wait for `{}`: {e}", argv[0])))?;
        Ok(exit_code(status))
    }

    /// After a process ran: why not, if it replaced one of kiln's own entries
    /// ([`OWN`]), which kiln reads, moves and writes after it and must not reach a file
    /// of the host through.
    pub fn check_own(&self) -> std::result::Result<(), String> {
        for &(rel, dir) in OWN {
            let what = match lstat_beneath(self.root(), rel) {
                Ok(Some(meta)) if dir && meta.is_dir() => continue,
                Ok(Some(meta)) if !dir && meta.is_file() && meta.nlink() == 1 => continue,
                Ok(Some(meta)) if !dir && meta.is_file() => "a file with other names",
                Ok(Some(meta)) => kind_of(&meta),
                Ok(None) => "nothing",
                Err((_, what)) => what,
            };
            return Err(format!(
                "replaced kiln's own {rel} in its sandbox with {what}"
            ));
        }
        Ok(())
    }

    /// One link per declared file tool in `.kiln/bin` (PATH).
    pub fn link_tools(&self, tools: &[Tool]) -> Result<()> {
        for tool in tools.iter().filter(|t| !t.tree) {
            let link = self.root().join(".kiln/bin").join(&tool.name);
            // A process run again in the same sandbox (a batch's retry) links anew.
            let _ = fs::remove_file(&link);
            std::os::unix::fs::symlink(&tool.path, &link)
                .map_err(|e| Error::io("link", &link, e))?;
        }
        Ok(())
    }
}

/// The workspace entries that make up the directory an action may read: the directory
/// itself, or, for the whole workspace, each top-level entry but `kiln-out/` and the
/// sandbox's own `.kiln/` (so that the sandbox's outputs and captures stay its own).
fn view_entries(workspace: &Path, reads: &Reads) -> Result<Vec<String>> {
    if !reads.dir.is_empty() {
        return Ok(vec![reads.dir.clone()]);
    }
    let mut out = Vec::new();
    let entries = fs::read_dir(workspace).map_err(|e| Error::io("list", workspace, e))?;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name != OUT_DIR && name != ".kiln" {
            out.push(name);
        }
    }
    out.sort();
    Ok(out)
}

/// Entries of a readable directory left out of a remote input root: version control
/// data, which can be far larger than the files a test reads. A remote run that reads
/// one runs again here ([`crate::reads::beyond`]).
pub const REMOTE_LEFT_OUT: &[&str] = &[".git", ".hg", ".svn", ".jj"];

/// Entries of a remote input root beyond the sandbox: (root-relative path, host path).
pub type RemoteView = Vec<(String, PathBuf)>;

/// The workspace entries a remote worker's root holds for an action with [`Reads`], as
/// (root-relative path, host path): what [`view_entries`] names, with the top-level
/// entries of [`REMOTE_LEFT_OUT`] left out, and the sandbox-relative paths left out.
pub fn remote_view(workspace: &Path, reads: &Reads) -> Result<(RemoteView, Vec<String>)> {
    let top = match reads.dir.is_empty() {
        true => view_entries(workspace, reads)?,
        false => {
            let dir = workspace.join(&reads.dir);
            let mut names: Vec<String> = fs::read_dir(&dir)
                .map_err(|e| Error::io("list", &dir, e))?
                .flatten()
                .map(|e| format!("{}/{}", reads.dir, e.file_name().to_string_lossy()))
                .collect();
            names.sort();
            names
        }
    };
    let left_out = |rel: &str| REMOTE_LEFT_OUT.contains(&rel.rsplit('/').next().unwrap_or(rel));
    let (out, kept): (Vec<String>, Vec<String>) = top.into_iter().partition(|r| left_out(r));
    let view = kept
        .into_iter()
        .map(|rel| {
            let host = workspace.join(&rel);
            (rel, host)
        })
        .collect();
    Ok((view, out))
}

/// `dir` mode's view of the readable directory: links into the workspace.
fn link_view(root: &Path, workspace: &Path, reads: &Reads) -> Result<()> {
    for entry in view_entries(workspace, reads)? {
        let link = root.join(&entry);
        if link.symlink_metadata().is_ok() {
            continue;
        }
        if let Some(parent) = link.parent() {
            fs::create_dir_all(parent).map_err(|e| Error::io("create", parent, e))?;
        }
        std::os::unix::fs::symlink(workspace.join(&entry), &link)
            .map_err(|e| Error::io("link", &link, e))?;
    }
    Ok(())
}

fn open_capture(path: &Path) -> Result<fs::File> {
    fs::File::create(path).map_err(|e| Error::io("create", path, e))
}

fn exit_code(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}

/// Where `kiln gocacheprog` keeps Go's compile cache: `$KILN_GO_CACHE`, else kiln's store.
pub fn go_cache_dir() -> PathBuf {
    std::env::var_os("KILN_GO_CACHE")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(kiln_cache::default_cache_dir)
}

/// Finds a tool on the host PATH, as an absolute path (looked up once per process).
pub fn find_on_path(name: &str) -> Option<PathBuf> {
    static FOUND: OnceLock<std::sync::Mutex<std::collections::HashMap<String, Option<PathBuf>>>> =
        OnceLock::new();
    let cache = FOUND.get_or_init(Default::default);
    if let Some(found) = cache.lock().unwrap().get(name) {
        return found.clone();
    }
    let found = search_path(name);
    cache
        .lock()
        .unwrap()
        .insert(name.to_string(), found.clone());
    found
}

fn search_path(name: &str) -> Option<PathBuf> {
    let program = |p: &Path| {
        p.is_file() && fs::metadata(p).is_ok_and(|m| m.permissions().mode() & 0o111 != 0)
    };
    if name.contains('/') {
        // A program, as on PATH: a tool's file is sent to a remote executor's store, so
        // a BUILD.toml naming a key file of the host (`/home/me/.ssh/id_ed25519`) as a
        // tool would have it uploaded.
        let p = PathBuf::from(name);
        return program(&p).then_some(p);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| program(p))
}
