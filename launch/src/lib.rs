//! kiln-launch: how an action's process is started, with kiln's placeholders expanded.
//!
//! One implementation for both places a process starts:
//!
//! * a local sandbox (kiln-engine's `sandbox` module): [`Seen`] holds where the process
//!   finds things in that sandbox mode, [`Seen::process`] gives its argv and environment;
//! * a remote worker's input root: the `kiln-launch` binary (a few hundred KB; a target of
//!   the `kiln` package, `cli/src/launch.rs`) is the Command an engine runs. [`run`] reads
//!   [`LAUNCH_FILE`] (a [`Launch`]: argv, environment, working directory), expands the
//!   placeholders to paths below wherever the worker staged the root
//!   ([`Seen::launched`]), and replaces itself with the process.
//!
//! | placeholder   | expands to                                             |
//! |---------------|--------------------------------------------------------|
//! | `{sandbox}`   | the sandbox root (the input root, remotely)            |
//! | `{kiln}`      | the kiln binary (`.kiln/bin/kiln` remotely)            |
//! | `{tool:NAME}` | a declared tool (`.kiln/bin/NAME`, `.kiln/tools/NAME`)  |
//! | `{user}`      | the user the process runs as ([`host_user`])           |
//!
//! The crate uses std only and has no dependencies, so that the launcher copied into
//! every remote action's input root stays small: an engine such as buildbox-casd copies
//! every input file into each action's root, and kiln itself is ~85 MB.

mod file;

pub use file::{Launch, LAUNCH_FILE, ROOT_FILE};

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The launcher's file name, beside the kiln binary that uses it.
pub const LAUNCHER: &str = "kiln-launch";

/// Where the process finds things: the placeholders' values in one place.
#[derive(Debug, Clone)]
pub struct Seen {
    /// `{sandbox}`: the root, where inputs are at their workspace paths.
    pub root: PathBuf,
    /// TMPDIR.
    pub tmp: PathBuf,
    /// `{kiln}`.
    pub kiln: PathBuf,
    /// `{tool:NAME}`, by name.
    pub tools: Vec<(String, PathBuf)>,
}

impl Seen {
    /// Where a process launched by [`run`] finds things: everything below the directory
    /// it starts in (a remote worker's input root): file tools in `.kiln/bin`, tree tools
    /// in `.kiln/tools`, kiln (when the action names it) at `.kiln/bin/kiln`.
    pub fn launched(root: &Path) -> Seen {
        let tools = [".kiln/bin", ".kiln/tools"]
            .iter()
            .flat_map(|dir| fs::read_dir(root.join(dir)).into_iter().flatten().flatten())
            .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
            .collect();
        Seen {
            root: root.to_path_buf(),
            tmp: root.join(".kiln/tmp"),
            kiln: root.join(".kiln/bin/kiln"),
            tools,
        }
    }

    /// The process's argv and environment: placeholders expanded, with PATH (the
    /// sandbox's tool directory first), HOME, TMPDIR and PWD set.
    pub fn process(
        &self,
        argv: &[String],
        env: &BTreeMap<String, String>,
        workdir: &str,
    ) -> (Vec<String>, BTreeMap<String, String>) {
        let mut env: BTreeMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.clone(), self.expand(v)))
            .collect();
        let bin = self.root.join(".kiln/bin").display().to_string();
        let path = match env.get("PATH") {
            Some(p) if !p.is_empty() => format!("{bin}:{p}"),
            _ => bin,
        };
        env.insert("PATH".into(), path);
        let at = |rel: &str| self.root.join(rel).display().to_string();
        env.insert("HOME".into(), at(".kiln/home"));
        env.insert("TMPDIR".into(), self.tmp.display().to_string());
        // The root itself for an empty workdir: `join("")` would end it with a `/`, and
        // a test comparing os.Getwd() (which returns PWD) with a path would see it.
        let pwd = match workdir {
            "" => self.root.display().to_string(),
            _ => at(workdir),
        };
        env.insert("PWD".into(), pwd);
        let argv = argv.iter().map(|a| self.expand(a)).collect();
        (argv, env)
    }

    /// Expands `{tool:NAME}`, `{sandbox}`, `{kiln}` and `{user}` placeholders.
    pub fn expand(&self, s: &str) -> String {
        if !s.contains('{') {
            return s.to_string();
        }
        let mut out = s.replace("{sandbox}", &self.root.display().to_string());
        out = out.replace("{kiln}", &self.kiln.display().to_string());
        out = out.replace("{user}", host_user());
        for (name, path) in &self.tools {
            out = out.replace(&format!("{{tool:{name}}}"), &path.display().to_string());
        }
        out
    }
}

/// Why [`run`] could not start the process.
#[derive(Debug)]
pub struct Error {
    what: String,
    cause: String,
}

impl Error {
    fn new(what: &str, cause: &dyn fmt::Display) -> Error {
        Error {
            what: what.to_string(),
            cause: cause.to_string(),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.what, self.cause)
    }
}

impl std::error::Error for Error {}

/// Runs an action's process in the current directory, a remote worker's input root laid
/// out as a sandbox (inputs at workspace paths, file tools in `.kiln/bin`, tree tools in
/// `.kiln/tools/NAME`, kiln itself at `.kiln/bin/kiln` when the action names `{kiln}`):
/// reads [`LAUNCH_FILE`], expands the placeholders to paths below this directory (a
/// worker chooses where an input root lies; REAPI commands get relative paths only),
/// sets PATH, HOME, TMPDIR and PWD as a local sandbox does, and replaces itself with the
/// process. Returns only on failure.
pub fn run() -> Error {
    let root = match std::env::current_dir() {
        Ok(root) => root,
        Err(e) => return Error::new("the working directory", &e),
    };
    let launch = match fs::read(root.join(LAUNCH_FILE)) {
        Ok(bytes) => match Launch::decode(&bytes) {
            Ok(launch) => launch,
            Err(e) => return Error::new(LAUNCH_FILE, &e),
        },
        Err(e) => return Error::new(LAUNCH_FILE, &e),
    };
    for dir in [".kiln/home", ".kiln/tmp", ".kiln/bin"] {
        let _ = fs::create_dir_all(root.join(dir));
    }
    if !launch.root_file.is_empty() {
        let file = &launch.root_file;
        if let Err(e) = fs::write(root.join(file), root.as_os_str().as_encoded_bytes()) {
            return Error::new(file, &e);
        }
    }
    let seen = Seen::launched(&root);
    let (argv, env) = seen.process(&launch.argv, &launch.env, &launch.workdir);
    let Some(program) = argv.first() else {
        return Error::new(LAUNCH_FILE, &"no argv");
    };
    let e = Command::new(resolve_program(program, &env["PATH"]))
        .args(&argv[1..])
        .env_clear()
        .envs(&env)
        .current_dir(root.join(&launch.workdir))
        .exec();
    Error::new(&format!("start `{program}`"), &e)
}

/// An absolute program path: as given if it contains a slash, else looked up on PATH.
pub fn resolve_program(name: &str, path: &str) -> PathBuf {
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

/// The name of the user the process runs as (`{user}`: USER and LOGNAME of tests, as
/// `go test` passes them on): USER, else LOGNAME, else `root` or `nobody` by user id.
pub fn host_user() -> &'static str {
    static USER: OnceLock<String> = OnceLock::new();
    USER.get_or_init(|| {
        std::env::var("USER")
            .or_else(|_| std::env::var("LOGNAME"))
            .unwrap_or_else(|_| if is_root() { "root" } else { "nobody" }.into())
    })
}

fn is_root() -> bool {
    extern "C" {
        fn getuid() -> u32;
    }
    // SAFETY: getuid(2) takes nothing and cannot fail; std links the C library.
    unsafe { getuid() == 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen() -> Seen {
        Seen {
            root: PathBuf::from("/w/root"),
            tmp: PathBuf::from("/w/root/.kiln/tmp"),
            kiln: PathBuf::from("/w/root/.kiln/bin/kiln"),
            tools: vec![("go".into(), PathBuf::from("/w/root/.kiln/tools/go"))],
        }
    }

    /// Every placeholder becomes its path; text without one is left alone.
    #[test]
    fn placeholders_expand_to_their_places() {
        let s = seen();
        assert_eq!(
            s.expand("{kiln} go-test-exec {tool:go}/bin/go {sandbox}/out"),
            "/w/root/.kiln/bin/kiln go-test-exec /w/root/.kiln/tools/go/bin/go /w/root/out"
        );
        assert_eq!(s.expand("{user}"), host_user());
        assert_eq!(s.expand("{tool:other} $OUT"), "{tool:other} $OUT");
    }

    /// PATH starts with the tool directory, HOME, TMPDIR and PWD are the sandbox's,
    /// whatever the action's environment said.
    #[test]
    fn the_process_gets_path_home_tmpdir_and_pwd() {
        let env = BTreeMap::from([
            ("PATH".to_string(), "/usr/bin".to_string()),
            ("HOME".to_string(), "/root".to_string()),
            ("GOROOT".to_string(), "{tool:go}".to_string()),
        ]);
        let argv = vec!["sh".to_string(), "{sandbox}/x".to_string()];
        let (argv, env) = seen().process(&argv, &env, "pkg");
        assert_eq!(argv, ["sh", "/w/root/x"]);
        assert_eq!(env["PATH"], "/w/root/.kiln/bin:/usr/bin");
        assert_eq!(env["HOME"], "/w/root/.kiln/home");
        assert_eq!(env["TMPDIR"], "/w/root/.kiln/tmp");
        assert_eq!(env["PWD"], "/w/root/pkg");
        assert_eq!(env["GOROOT"], "/w/root/.kiln/tools/go");
        let (_, env) = seen().process(&argv, &BTreeMap::new(), "");
        assert_eq!(env["PATH"], "/w/root/.kiln/bin");
        assert_eq!(env["PWD"], "/w/root");
    }

    /// A launched process finds the input root's file and tree tools by name.
    #[test]
    fn a_launched_process_finds_the_roots_tools() {
        let dir = std::env::temp_dir().join(format!("kiln-launch-test-{}", std::process::id()));
        fs::create_dir_all(dir.join(".kiln/bin")).unwrap();
        fs::create_dir_all(dir.join(".kiln/tools/go")).unwrap();
        fs::write(dir.join(".kiln/bin/tr"), "").unwrap();
        let seen = Seen::launched(&dir);
        let got = seen.expand("{tool:tr} {tool:go} {kiln}");
        fs::remove_dir_all(&dir).unwrap();
        let d = dir.display();
        assert_eq!(
            got,
            format!("{d}/.kiln/bin/tr {d}/.kiln/tools/go {d}/.kiln/bin/kiln")
        );
    }

    #[test]
    fn programs_are_found_on_the_given_path() {
        assert_eq!(resolve_program("./x", "/usr/bin"), PathBuf::from("./x"));
        assert_eq!(
            resolve_program("sh", "/nowhere:/bin"),
            PathBuf::from("/bin/sh")
        );
        assert_eq!(
            resolve_program("no-such-tool", "/bin"),
            PathBuf::from("no-such-tool")
        );
    }
}
