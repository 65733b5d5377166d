//! A small builder for test workspaces and a runner for the kiln binary, in the manner
//! of cargo's `project().file(..).build()`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const KILN: &str = env!("CARGO_BIN_EXE_kiln");

/// Two genrules whose outputs tests check byte for byte: an executable script and an
/// action with two outputs.
pub const SCRIPT_AND_PAIR: &str = r#"
[genrule.script]
outs = ["hello.sh"]
cmd = "printf '#!/bin/sh\\necho hi\\n' > $OUT && chmod 755 $OUT"
tools = ["chmod"]

[genrule.pair]
outs = ["x.txt", "y.txt"]
cmd = "set -- $OUTS; echo x > $1; echo y > $2"
"#;

/// A workspace in a temporary directory, with its own cache directory.
pub struct Workspace {
    _tmp: tempfile::TempDir,
    pub root: PathBuf,
    pub cache: PathBuf,
}

pub fn workspace() -> Builder {
    Builder {
        files: vec![("kiln.toml".into(), "[workspace]\nname = \"test\"\n".into())],
    }
}

#[derive(Clone)]
pub struct Builder {
    files: Vec<(String, String)>,
}

impl Builder {
    pub fn file(mut self, path: &str, content: &str) -> Builder {
        self.files.retain(|(p, _)| p != path);
        self.files.push((path.to_string(), content.to_string()));
        self
    }

    pub fn build(self) -> Workspace {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("ws");
        let cache = tmp.path().join("cache");
        for (path, content) in &self.files {
            write(&root.join(path), content);
        }
        Workspace {
            _tmp: tmp,
            root,
            cache,
        }
    }
}

pub fn write(path: &Path, content: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, content).unwrap();
}

/// What a kiln run did.
pub struct Run {
    pub status: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn from(out: Output) -> Run {
        Run {
            status: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// The summary line: `kiln: N actions: X cached (R remote), Y executed (E remote), Z failed in T`.
    fn summary(&self) -> &str {
        self.stderr
            .lines()
            .rev()
            .find(|l| l.starts_with("kiln: ") && l.contains(" actions: "))
            .unwrap_or_else(|| panic!("no summary line in:\n{}", self.stderr))
    }

    /// The number before `word` in the summary line, and the remote count after it.
    fn count(&self, word: &str) -> (usize, Option<usize>) {
        let line = self.summary();
        let words: Vec<&str> = line
            .split([' ', ',', ':', '(', ')'])
            .filter(|w| !w.is_empty())
            .collect();
        let at = words
            .iter()
            .position(|w| *w == word)
            .unwrap_or_else(|| panic!("no `{word}` in {line}"));
        let n = words[at - 1].parse().unwrap();
        let remote = match words.get(at + 2) {
            Some(&"remote") => words[at + 1].parse().ok(),
            _ => None,
        };
        (n, remote)
    }

    /// (total, cached, executed, failed) from the summary line.
    pub fn counts(&self) -> (usize, usize, usize, usize) {
        (
            self.count("actions").0,
            self.count("cached").0,
            self.count("executed").0,
            self.count("failed").0,
        )
    }

    /// (cached from a remote, executed on a remote) from the summary line.
    pub fn remote_counts(&self) -> (usize, usize) {
        let cached = self.count("cached").1.unwrap_or(0);
        let executed = self.count("executed").1.unwrap_or(0);
        (cached, executed)
    }

    pub fn executed(&self) -> usize {
        self.counts().2
    }

    /// The run's one `kiln: error` line, after checking its exit status.
    #[track_caller]
    pub fn the_error(&self, status: i32) -> &str {
        assert_eq!(self.status, status, "{}", self.stderr);
        let errors: Vec<&str> = self
            .stderr
            .lines()
            .filter(|l| l.starts_with("kiln: error"))
            .collect();
        assert_eq!(errors.len(), 1, "{}", self.stderr);
        errors[0]
    }

    /// The actions that ran, as the plain progress lines name them.
    pub fn ran(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .stderr
            .lines()
            .filter(|l| {
                l.starts_with("kiln: ")
                    && !l.contains(" actions: ")
                    && !l.starts_with("kiln: error")
                    && !l.starts_with("kiln: warning")
                    && !l.starts_with("kiln: nothing changed")
            })
            .map(|l| l.trim_start_matches("kiln: ").to_string())
            .collect();
        v.sort();
        v
    }

    #[track_caller]
    pub fn assert_ok(&self) -> &Run {
        assert_eq!(
            self.status, 0,
            "kiln failed:\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }
}

impl Workspace {
    pub fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    pub fn write(&self, rel: &str, content: &str) {
        write(&self.path(rel), content);
    }

    pub fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.path(rel)).unwrap_or_else(|e| panic!("read {rel}: {e}"))
    }

    /// A kiln command in this workspace with this workspace's cache.
    pub fn cmd(&self, args: &[&str]) -> Command {
        kiln_cmd(&self.root, &self.cache, args)
    }

    pub fn kiln(&self, args: &[&str]) -> Run {
        Run::from(self.cmd(args).output().unwrap())
    }

    /// A copy of the workspace at another path (sources only), with a new cache.
    pub fn copy(&self) -> Workspace {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("elsewhere").join("ws");
        copy_tree(&self.root, &root);
        Workspace {
            cache: tmp.path().join("cache"),
            _tmp: tmp,
            root,
        }
    }
}

pub fn kiln_cmd(dir: &Path, cache: &Path, args: &[&str]) -> Command {
    kiln_cmd_at(Path::new(KILN), dir, cache, args)
}

/// [`kiln_cmd`] with another kiln binary.
pub fn kiln_cmd_at(kiln: &Path, dir: &Path, cache: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(kiln);
    cmd.args(args)
        .current_dir(dir)
        .env("KILN_CACHE", cache)
        .env("KILN_GO_CACHE", shared_go_cache())
        .env_remove("KILN_REMOTE_CACHE")
        .env_remove("KILN_REMOTE_EXECUTOR");
    cmd
}

/// One store for Go's compile cache, shared by every test (compiled packages are keyed
/// by all their inputs, so sharing them cannot change a result; it only saves the
/// minutes of compiling the standard library in each test).
pub fn shared_go_cache() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("kiln-go-cache")
}

/// The Go toolchain's GOROOT (`go env GOROOT`, once).
pub fn go_root() -> &'static str {
    static ROOT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    ROOT.get_or_init(|| {
        let out = Command::new("go")
            .args(["env", "GOROOT"])
            .output()
            .expect("the Go toolchain is needed: run .ci/install-deps");
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    })
}

/// The host platform as go_binary names its output directory (`linux_amd64`).
pub fn host_go_platform() -> String {
    let arch = match std::env::consts::ARCH {
        "aarch64" => "arm64",
        _ => "amd64",
    };
    format!("linux_{arch}")
}

/// A workspace whose root is the Go module `example.com/m`, with `[go] root` set.
pub fn go_workspace() -> Builder {
    workspace()
        .file(
            "kiln.toml",
            &format!(
                "[workspace]\nname = \"gotest\"\n\n[go]\nroot = \"{}\"\n",
                go_root()
            ),
        )
        .file("go.mod", "module example.com/m\n\ngo 1.23\n")
}

pub fn copy_tree(from: &Path, to: &Path) {
    for entry in walk(from) {
        let rel = entry.strip_prefix(from).unwrap();
        if rel.starts_with("kiln-out") {
            continue;
        }
        let dest = to.join(rel);
        if entry.is_dir() {
            std::fs::create_dir_all(&dest).unwrap();
        } else {
            std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
            std::fs::copy(&entry, &dest).unwrap();
        }
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![dir.to_path_buf()];
    let mut i = 0;
    while i < out.len() {
        if out[i].is_dir() {
            let mut entries: Vec<PathBuf> = std::fs::read_dir(&out[i])
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect();
            entries.sort();
            out.extend(entries);
        }
        i += 1;
    }
    out
}

/// A `kiln serve` process on a free loopback port, with its cache in a temp dir; stopped
/// on drop.
pub struct KilnServe {
    tmp: tempfile::TempDir,
    child: Option<Child>,
    addr: SocketAddr,
}

impl KilnServe {
    pub fn start() -> KilnServe {
        KilnServe::start_with(&[], &[])
    }

    pub fn start_with(args: &[&str], env: &[(&str, &str)]) -> KilnServe {
        let tmp = tempfile::tempdir().unwrap();
        let log = std::fs::File::create(tmp.path().join("serve.log")).unwrap();
        let child = Command::new(KILN)
            .args(["serve", "--listen", "127.0.0.1:0", "--dir"])
            .arg(tmp.path().join("cache"))
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut server = KilnServe {
            tmp,
            child: Some(child),
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        };
        server.addr = server.wait_for_address();
        server
    }

    /// Reads the address from `kiln serve: listening on http://ADDR (cache in …)`.
    fn wait_for_address(&self) -> SocketAddr {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let log = self.log();
            let addr = log
                .lines()
                .find_map(|l| l.strip_prefix("kiln serve: listening on http://"))
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|addr| addr.parse().ok());
            if let Some(addr) = addr {
                return addr;
            }
            assert!(Instant::now() < deadline, "kiln serve did not start: {log}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The directory holding `cas/` and `ac/`.
    pub fn root(&self) -> PathBuf {
        self.tmp.path().join("cache")
    }

    /// What the server printed so far (one line per request).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.tmp.path().join("serve.log")).unwrap_or_default()
    }

    /// Stops the server as an outage would.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for KilnServe {
    fn drop(&mut self) {
        self.stop();
    }
}
