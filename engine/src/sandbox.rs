//! Sandboxes: a fresh directory per action holding only its declared inputs.
//!
//! Layout of a sandbox root (a temporary directory inside the store's `tmp/`, so
//! outputs can be renamed into the CAS):
//!
//! ```text
//! <root>/pkg/in.txt                  inputs at their workspace-relative paths
//! <root>/kiln-out/pkg/...            outputs are written here
//! <root>/.kiln/bin/NAME -> host tool one link per declared tool (PATH)
//! <root>/.kiln/home, .kiln/tmp       HOME and TMPDIR
//! <root>/.kiln/stdout, .kiln/stderr  captured output
//! ```
//!
//! Modes ([`SandboxMode`]): `dir` runs the process directly in that directory with an
//! empty environment; `bwrap` also runs it under bubblewrap with no network (unless the
//! action is a fixed-output one), the host file system read-only, and the workspace and
//! cache directories hidden, and TMPDIR (`.kiln/tmp`) on a tmpfs. `auto` picks bwrap if
//! it works on this machine.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use crate::action::{ExecSpec, Tool};
use crate::error::{Error, ErrorKind, Result};

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
    /// The mode to use: `auto` becomes bwrap where it works.
    pub fn resolve(self) -> Result<SandboxMode> {
        match self {
            SandboxMode::Dir => Ok(SandboxMode::Dir),
            SandboxMode::Auto if bwrap_works() => Ok(SandboxMode::Bwrap),
            SandboxMode::Auto => Ok(SandboxMode::Dir),
            SandboxMode::Bwrap if bwrap_works() => Ok(SandboxMode::Bwrap),
            SandboxMode::Bwrap => Err(Error::new(
                ErrorKind::Action,
                "use bubblewrap: `bwrap` is missing or cannot create namespaces here",
            )
            .hint("install bubblewrap, or pass --sandbox=dir")),
        }
    }
}

fn bwrap_works() -> bool {
    static WORKS: OnceLock<bool> = OnceLock::new();
    *WORKS.get_or_init(|| {
        Command::new("bwrap")
            .args([
                "--ro-bind",
                "/",
                "/",
                "--unshare-net",
                "--dev",
                "/dev",
                "true",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

/// Directories a bwrap sandbox hides from the action.
#[derive(Debug, Clone, Default)]
pub struct Hidden {
    pub dirs: Vec<PathBuf>,
}

/// What an action with `store_access` sees of the shared store: the socket its
/// `kiln gocacheprog` relays to, and the blob files handed out as `DiskPath`s.
#[derive(Debug, Clone)]
pub struct StoreAccess {
    pub socket: PathBuf,
    pub socket_dir: PathBuf,
    pub blobs: PathBuf,
}

/// A prepared sandbox directory. Removed when dropped.
pub struct Sandbox {
    dir: tempfile::TempDir,
}

impl Sandbox {
    pub fn create(tmp: &Path) -> Result<Sandbox> {
        let dir = tempfile::Builder::new()
            .prefix("sandbox-")
            .tempdir_in(tmp)
            .map_err(|e| Error::io("create a sandbox in", tmp, e))?;
        for sub in [".kiln/bin", ".kiln/home", ".kiln/tmp"] {
            let p = dir.path().join(sub);
            fs::create_dir_all(&p).map_err(|e| Error::io("create", &p, e))?;
        }
        // Empty captures, so a builtin action that prints nothing has them too.
        for capture in [".kiln/stdout", ".kiln/stderr"] {
            open_capture(&dir.path().join(capture))?;
        }
        Ok(Sandbox { dir })
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

    /// Runs the process; returns its exit code (stdout and stderr go to .kiln/).
    pub fn run(
        &self,
        spec: &ExecSpec,
        mode: SandboxMode,
        hidden: &Hidden,
        access: Option<&StoreAccess>,
    ) -> Result<i32> {
        let root = self.root();
        for tool in spec.tools.iter().filter(|t| !t.tree) {
            let link = root.join(".kiln/bin").join(&tool.name);
            // A process run again in the same sandbox (a batch's retry) links anew.
            let _ = fs::remove_file(&link);
            std::os::unix::fs::symlink(&tool.path, &link)
                .map_err(|e| Error::io("link", &link, e))?;
        }
        let expand = |s: &str| expand(s, root, &spec.tools);
        let mut env: BTreeMap<String, String> = spec
            .env
            .iter()
            .map(|(k, v)| (k.clone(), expand(v)))
            .collect();
        let bin = root.join(".kiln/bin").display().to_string();
        let path = match env.get("PATH") {
            Some(p) if !p.is_empty() => format!("{bin}:{p}"),
            _ => bin,
        };
        env.insert("PATH".into(), path);
        env.insert("HOME".into(), root.join(".kiln/home").display().to_string());
        env.insert(
            "TMPDIR".into(),
            root.join(".kiln/tmp").display().to_string(),
        );
        if let Some(access) = access {
            let socket = access.socket.display().to_string();
            env.insert(kiln_cache::gocacheprog::SOCKET_ENV.into(), socket);
        }
        let argv: Vec<String> = spec.argv.iter().map(|a| expand(a)).collect();
        let program = resolve_program(&argv[0], &env["PATH"]);
        let workdir = root.join(&spec.workdir);
        let mut cmd = match mode {
            SandboxMode::Bwrap => bwrap_command(root, &workdir, spec, hidden, access, &program),
            _ => Command::new(&program),
        };
        cmd.args(&argv[1..])
            .env_clear()
            .envs(&env)
            .current_dir(&workdir)
            .stdin(Stdio::null())
            .stdout(open_capture(&root.join(".kiln/stdout"))?)
            .stderr(open_capture(&root.join(".kiln/stderr"))?);
        if std::env::var_os("KILN_DEBUG_SANDBOX").is_some() {
            eprintln!("kiln: sandbox command: {cmd:?}");
        }
        let status = cmd
            .status()
            .map_err(|e| Error::new(ErrorKind::Action, format!("start `{}`: {e}", argv[0])))?;
        Ok(exit_code(status))
    }
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

/// Expands `{tool:NAME}`, `{sandbox}` and `{kiln}` placeholders.
pub fn expand(s: &str, root: &Path, tools: &[Tool]) -> String {
    if !s.contains('{') {
        return s.to_string();
    }
    let mut out = s.replace("{sandbox}", &root.display().to_string());
    if out.contains("{kiln}") {
        let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("kiln"));
        // Linux names a binary replaced while it runs "<path> (deleted)"; the new one
        // at the same path serves as well.
        let exe = PathBuf::from(exe.to_string_lossy().trim_end_matches(" (deleted)"));
        out = out.replace("{kiln}", &exe.display().to_string());
    }
    for tool in tools {
        out = out.replace(
            &format!("{{tool:{}}}", tool.name),
            &tool.path.display().to_string(),
        );
    }
    out
}

/// Where `kiln gocacheprog` keeps Go's compile cache: `$KILN_GO_CACHE`, else kiln's store.
pub fn go_cache_dir() -> PathBuf {
    std::env::var_os("KILN_GO_CACHE")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(kiln_cache::default_cache_dir)
}

/// An absolute program path: as given if it contains a slash, else looked up on PATH.
fn resolve_program(name: &str, path: &str) -> PathBuf {
    if name.contains('/') {
        return PathBuf::from(name);
    }
    for dir in path.split(':') {
        let candidate = Path::new(dir).join(name);
        if candidate.exists() {
            return candidate;
        }
    }
    PathBuf::from(name)
}

fn bwrap_command(
    root: &Path,
    workdir: &Path,
    spec: &ExecSpec,
    hidden: &Hidden,
    access: Option<&StoreAccess>,
    program: &Path,
) -> Command {
    let bwrap = find_on_path("bwrap").unwrap_or_else(|| PathBuf::from("/usr/bin/bwrap"));
    let mut cmd = Command::new(bwrap);
    cmd.args([
        "--die-with-parent",
        "--ro-bind",
        "/",
        "/",
        "--dev",
        "/dev",
        "--proc",
        "/proc",
    ]);
    if !spec.network {
        cmd.arg("--unshare-net");
    }
    for dir in &hidden.dirs {
        if dir.exists() {
            cmd.arg("--tmpfs").arg(dir);
        }
    }
    // Tools that live below a hidden directory stay visible.
    for tool in &spec.tools {
        if hidden.dirs.iter().any(|d| tool.path.starts_with(d)) {
            cmd.arg("--ro-bind").arg(&tool.path).arg(&tool.path);
        }
    }
    if let Some(access) = access {
        // The shared store's blob files, read-only (writes go through the socket).
        cmd.arg("--ro-bind").arg(&access.blobs).arg(&access.blobs);
        // Read-only too: connecting needs no write access, and the action must not be
        // able to remove or replace the socket.
        let dir = &access.socket_dir;
        cmd.arg("--ro-bind").arg(dir).arg(dir);
    }
    cmd.arg("--bind").arg(root).arg(root);
    // Scratch space in memory: nothing under TMPDIR is an output.
    cmd.arg("--tmpfs").arg(root.join(".kiln/tmp"));
    cmd.arg("--chdir").arg(workdir);
    cmd.arg("--").arg(program);
    cmd
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
    if name.contains('/') {
        let p = PathBuf::from(name);
        return p.is_file().then_some(p);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file() && fs::metadata(p).is_ok_and(|m| m.permissions().mode() & 0o111 != 0))
}
