//! Fuzzing what users write: BUILD.toml text and labels, mutated from valid ones, go
//! through loading and analysis (every rule but Go's, whose analysis runs `go list`).
//! Nothing may panic, and every error is a usage error (exit 2) of one line that names
//! its place (file:line:column) or a label.
//!
//! The suite runs 1,000 build files and 2,000 labels (about a second); run it long by
//! hand with `KILN_FUZZ_CASES=100000 cargo test -p kiln-rules --test fuzz_input`
//! (100,000 of each: about 75 s, of which about 11,000 build files analyze cleanly).

use std::path::Path;
use std::sync::Arc;

use kiln_cache::{LocalStore, Store};
use kiln_engine::executor::Executor;
use kiln_engine::label::{Label, Pattern};
use kiln_engine::plan::{expand_patterns, plan};
use kiln_engine::rule::RuleSet;
use kiln_engine::sandbox::SandboxMode;
use kiln_engine::workspace::Workspace;
use kiln_engine::{Error, ErrorKind};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

/// Valid BUILD.toml files, the starting points of mutations.
const SEEDS: &[&str] = &[
    r#"[genrule.upper]
srcs = ["in.txt", ":files", "//sub:gen"]
outs = ["upper.txt", "out/b.txt"]
cmd = "cat $SRCS > $OUT"
env = { LC_ALL = "C" }

[filegroup.files]
srcs = ["*.txt", "data/a.txt"]
"#,
    r#"[checksums.sums]
srcs = [":upper", "in.txt", "//sub:files"]

[genrule.upper]
outs = ["u.txt"]
cmd = "true"

[release.rel]
version = "{STABLE_GIT_DESCRIBE}"
srcs = [":sums"]

[strip.stripped]
src = ":upper"
"#,
    r#"[oci_base.base]
passwd = [{ name = "nonroot", uid = 65532, gid = 65532, home = "/home/nonroot" }]
files = { "/etc/in.txt" = "in.txt" }

[oci_image.img]
base = ":base"
platforms = ["linux/amd64"]
files = { "/app/in.txt" = "in.txt", "/app/gen" = "//sub:gen" }
entrypoint = ["/app/gen"]
env = { TZ = "UTC" }
docker_archive = true

[oci_push.push]
image = ":img"
repository = "127.0.0.1:5000/x"
tags = ["latest"]
"#,
    r#"[k8s_manifests.deploy]
srcs = ["data/a.txt"]
images = { ":img" = "127.0.0.1:5000/x" }

[oci_image.img]
platforms = ["linux/amd64"]
files = { "/app/in.txt" = "in.txt" }

[release.rel]
version = "{STABLE_GIT_DESCRIBE}"
srcs = [":deploy"]
images = { ":img" = "127.0.0.1:5000/x" }
store = "releases"
sign = true
"#,
];

/// What mutations insert: TOML syntax, labels, paths and bytes that are not text.
const TOKENS: &[&str] = &[
    "\"",
    "'",
    "[",
    "]",
    "{",
    "}",
    "=",
    ",",
    ".",
    "..",
    "/",
    "//",
    ":",
    "\n",
    "#",
    "\\",
    "\"\"\"",
    "\u{0}",
    " ",
    "\t",
    "\r",
    "\u{e9}",
    "*",
    "**",
    "?",
    "...",
    "-",
    "+",
    "@",
    "[genrule.x]\nouts = [\"x\"]\ncmd = \"true\"\n",
    "[filegroup.y]\nsrcs = [\":x\"]\n",
    "[genrule.upper]\n",
    "srcs = [\":upper\"]\n",
    "outs = [\"upper.txt\"]\n",
    "\":..\"",
    "\"//...\"",
    "\"//sub\"",
    "\"//sub:nope\"",
    "\"../x\"",
    "\"/abs\"",
    "\"data\"",
    "\"data/\"",
    "\"./x\"",
    "\"\"",
    "\"x\", \"x\"",
    "\"sub/g.txt\"",
    "\"u.txt/x\"",
    "\"*.nothing\"",
    "1",
    "-1",
    "true",
    "1979-05-27T07:32:00Z",
    "inf",
    "nan",
    "0x10",
    "[[genrule.z]]\n",
    "[genrule]\n",
    "genrule.q.outs = [\"q\"]\n",
];

/// What replaces the content of a string of a seed: paths, labels and patterns that
/// keep the file valid TOML but test what the rules make of them.
const VALUES: &[&str] = &[
    "",
    ".",
    "..",
    "./x",
    "x/",
    "/abs",
    "a//b",
    "../x",
    "x/../y",
    ":..",
    ":.",
    "//sub:gen",
    "//sub",
    "//...",
    "//sub:nope",
    ":upper",
    ":u",
    "*",
    "**",
    "*.txt",
    "data",
    "data/**",
    "in.txt",
    "u.txt",
    "upper.txt",
    "sub/g.txt",
    "out/b.txt",
    "out",
    "a\\nb",
    "{NOPE}",
    "{STABLE_GIT_DESCRIBE}",
    "linux/amd64",
    "darwin/arm64",
    "linux/amd46",
    "/app",
    "/app/../etc",
    "scratch",
    "base/layout",
    "65532:65532",
    "8080/tcp",
];

/// The bytes some mutations insert, besides tokens: invalid UTF-8 among them.
const BYTES: &[u8] = &[0xff, 0xc3, 0x80, 0xe2, 0x00, b'\n', b'"', b'[', b'.'];

#[derive(Debug, Clone)]
enum Mutation {
    Delete(usize),
    Insert(usize),
    Byte(u8),
    DuplicateLine,
    /// The content of a string replaced by one of [`VALUES`].
    Value(usize),
}

fn mutation() -> impl Strategy<Value = (u32, Mutation)> {
    let m = prop_oneof![
        (1..24usize).prop_map(Mutation::Delete),
        (0..TOKENS.len()).prop_map(Mutation::Insert),
        (0..BYTES.len()).prop_map(|i| Mutation::Byte(BYTES[i])),
        Just(Mutation::DuplicateLine),
        (0..VALUES.len()).prop_map(Mutation::Value),
    ];
    (any::<u32>(), m)
}

fn mutate(seed: &str, mutations: &[(u32, Mutation)]) -> Vec<u8> {
    let mut text = seed.as_bytes().to_vec();
    for (at, m) in mutations {
        let at = *at as usize % (text.len() + 1);
        match m {
            Mutation::Delete(n) => {
                text.drain(at..(at + n).min(text.len()));
            }
            Mutation::Insert(i) => {
                text.splice(at..at, TOKENS[*i].bytes());
            }
            Mutation::Byte(b) => text.insert(at, *b),
            Mutation::Value(i) => {
                let quotes: Vec<usize> = (0..text.len()).filter(|&q| text[q] == b'"').collect();
                let pairs = quotes.len() / 2;
                if pairs > 0 {
                    let k = at % pairs;
                    let (open, close) = (quotes[2 * k], quotes[2 * k + 1]);
                    text.splice(open + 1..close, VALUES[*i].bytes());
                }
            }
            Mutation::DuplicateLine => {
                let start = text[..at]
                    .iter()
                    .rposition(|&b| b == b'\n')
                    .map_or(0, |i| i + 1);
                let end = text[at..]
                    .iter()
                    .position(|&b| b == b'\n')
                    .map_or(text.len(), |i| at + i + 1);
                let line = text[start..end].to_vec();
                text.splice(end..end, line);
            }
        }
    }
    text
}

/// A BUILD.toml: a seed with a few mutations, a seed with strings replaced, or tokens
/// strung together.
fn build_file() -> impl Strategy<Value = Vec<u8>> {
    let mutated = (0..SEEDS.len(), prop::collection::vec(mutation(), 1..4))
        .prop_map(|(seed, ms)| mutate(SEEDS[seed], &ms));
    let value = (any::<u32>(), (0..VALUES.len()).prop_map(Mutation::Value));
    let valued = (0..SEEDS.len(), prop::collection::vec(value, 1..4))
        .prop_map(|(seed, ms)| mutate(SEEDS[seed], &ms));
    let strung = prop::collection::vec(0..TOKENS.len(), 0..40)
        .prop_map(|ts| ts.into_iter().flat_map(|t| TOKENS[t].bytes()).collect());
    prop_oneof![3 => mutated, 3 => valued, 1 => strung]
}

/// A label or pattern as a user might mistype it.
fn label_text() -> impl Strategy<Value = String> {
    let pieces = prop_oneof![
        Just("//".to_string()),
        Just(":".to_string()),
        Just("/".to_string()),
        Just("...".to_string()),
        Just("..".to_string()),
        Just(".".to_string()),
        Just("sub".to_string()),
        Just("upper".to_string()),
        Just("gen".to_string()),
        "[a-z_+.*? @\u{e9}\u{0}-]{1,3}",
    ];
    prop::collection::vec(pieces, 0..6).prop_map(|p| p.concat())
}

/// A workspace with a fixed sub-package, whose root BUILD.toml each case writes.
struct Fuzz {
    _tmp: tempfile::TempDir,
    root: std::path::PathBuf,
    rules: RuleSet,
    exec: Executor,
}

impl Fuzz {
    fn new() -> Fuzz {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("ws");
        let files = [
            (
                "kiln.toml",
                "[workspace]\nname = \"fuzz\"\n\n[stamp]\nSTABLE_GIT_DESCRIBE = \"v1\"\n",
            ),
            ("in.txt", "in\n"),
            ("other.txt", "other\n"),
            ("data/a.txt", "a\n"),
            ("sub/s.txt", "s\n"),
            (
                "sub/BUILD.toml",
                "[genrule.gen]\nouts = [\"g.txt\"]\ncmd = \"true\"\n\n[filegroup.files]\nsrcs = [\"s.txt\"]\n",
            ),
            ("BUILD.toml", SEEDS[0]),
        ];
        for (path, text) in files {
            let path = root.join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        let local = Arc::new(LocalStore::open(&tmp.path().join("cache")).unwrap());
        let store: Arc<dyn Store> = local.clone();
        let exec = Executor::new(&root, local, store, SandboxMode::Dir).unwrap();
        Fuzz {
            _tmp: tmp,
            root,
            rules: rules_but_go(),
            exec,
        }
    }

    fn load(&self) -> Result<Workspace, Error> {
        Workspace::load(&self.root, &self.rules.names(), &self.rules.sections())
    }

    /// Loads the workspace with `build_file` as its root BUILD.toml and analyzes `//...`.
    fn analyze(&self, build_file: &[u8]) -> Result<(), Error> {
        std::fs::write(self.root.join("BUILD.toml"), build_file).unwrap();
        let ws = self.load()?;
        let targets = expand_patterns(&ws, &["//...".to_string()])?;
        plan(&ws, &self.rules, &self.exec, targets).map(|_| ())
    }
}

fn rules_but_go() -> RuleSet {
    use kiln_rules::*;
    let mut rules = RuleSet::default();
    rules.add(Box::new(generic::genrule::Genrule));
    rules.add(Box::new(generic::filegroup::Filegroup));
    rules.add(Box::new(release::strip::Strip));
    rules.add(Box::new(release::upx::Upx));
    rules.add(Box::new(oci::rules::base::OciBase));
    rules.add(Box::new(oci::rules::image::OciImage));
    rules.add(Box::new(oci::rules::push::OciPush));
    rules.add(Box::new(release::checksums::Checksums));
    rules.add(Box::new(release::Release));
    rules.add(Box::new(release::k8s::K8sManifests));
    rules
}

/// An error a user can act on: a usage error (exit 2), one line, at a place or naming
/// a label (for a command line's `label`, as written).
fn check(err: &Error, input: &str, label: Option<&str>) -> Result<(), TestCaseError> {
    let usage = matches!(
        err.kind,
        ErrorKind::Config | ErrorKind::Label | ErrorKind::Cycle | ErrorKind::MissingFile
    );
    prop_assert!(usage, "not a usage error: {err}\n--- input:\n{input}");
    prop_assert!(
        !err.message.contains('\n'),
        "more than one line: {err}\n--- input:\n{input}"
    );
    let placed = err
        .location
        .as_ref()
        .is_some_and(|l| l.file.ends_with("BUILD.toml") || l.file.ends_with("kiln.toml"));
    // Named as written, control characters escaped.
    let escaped = |l: &str| -> String {
        l.chars()
            .map(|c| match c.is_control() {
                true => c.escape_default().to_string(),
                false => c.to_string(),
            })
            .collect()
    };
    let named = label.is_some_and(|l| err.message.contains(&format!("`{}`", escaped(l))));
    prop_assert!(
        placed || named || err.message.contains("//"),
        "neither a place nor a label: {err}\n--- input:\n{input}"
    );
    Ok(())
}

fn cases(default: u32) -> u32 {
    std::env::var("KILN_FUZZ_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(default)
}

fn runner(cases: u32) -> TestRunner {
    TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    })
}

#[test]
fn build_files_never_panic_and_every_error_is_placed() {
    let fuzz = Fuzz::new();
    let (cases, failed) = (cases(1000), std::cell::Cell::new(0));
    runner(cases)
        .run(&build_file(), |text| {
            let shown = String::from_utf8_lossy(&text).into_owned();
            match fuzz.analyze(&text) {
                Ok(()) => Ok(()),
                Err(err) => {
                    failed.set(failed.get() + 1);
                    check(&err, &shown, None)
                }
            }
        })
        .unwrap();
    assert!(
        failed.get() > 0,
        "no case was an error: the mutations do nothing"
    );
    eprintln!("{cases} build files: {} errors, each placed", failed.get());
}

#[test]
fn labels_never_panic_and_errors_name_them() {
    let fuzz = Fuzz::new();
    std::fs::write(fuzz.root.join("BUILD.toml"), SEEDS[0]).unwrap();
    let ws = fuzz.load().unwrap();
    runner(cases(2000))
        .run(&label_text(), |text| {
            let _ = Label::parse(&text, "sub");
            let _ = Pattern::parse(&text, "");
            if let Err(err) = expand_patterns(&ws, std::slice::from_ref(&text)) {
                check(&err, &text, Some(&text))?;
            }
            // The same text in a BUILD.toml, as a source or a dependency.
            let escaped = text.replace('\\', "\\\\").replace('"', "\\\"");
            let escaped = escaped.replace('\u{0}', "\\u0000");
            let build =
                format!("[genrule.x]\nsrcs = [\"{escaped}\"]\nouts = [\"x\"]\ncmd = \"true\"\n");
            if let Err(err) = fuzz.analyze(build.as_bytes()) {
                check(&err, &build, None)?;
            }
            Ok(())
        })
        .unwrap();
}

#[test]
fn the_seeds_are_valid() {
    let fuzz = Fuzz::new();
    for seed in SEEDS {
        if let Err(err) = fuzz.analyze(seed.as_bytes()) {
            // Tools a seed names may be missing from this machine; nothing else may fail.
            assert!(err.message.contains("is not on PATH"), "{err}\n{seed}");
        }
    }
    assert!(Path::new(&fuzz.root).join("sub/BUILD.toml").is_file());
}
