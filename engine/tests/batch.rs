//! Batched actions through the real scheduler and sandbox: misses that may share a
//! process run as one, each member keeps its own key and result, failed members are
//! retried together, and a member the output says nothing of fails.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use kiln_cache::{LocalStore, Store};
use kiln_engine::action::{
    Action, ActionGraph, ActionKind, Artifact, Batch, BatchSplit, ExecSpec, MemberOutput, Tool,
};
use kiln_engine::executor::{Executor, Status};
use kiln_engine::label::Label;
use kiln_engine::sandbox::SandboxMode;
use kiln_engine::scheduler::{self, Options, Quiet, Report};

/// For every member name given, prints `NAME pid=PID ran=NAMES ok` (or `fail`, for a
/// member named `flaky` on its first run, marked in the sandbox's HOME), after reading
/// `src/NAME`; NAMES are the members run so far in this sandbox. Prints nothing for a
/// member named `silent`.
const SCRIPT: &str = r#"for n; do
  cat "src/$n" >/dev/null || exit 2
  echo "$n" >> "$HOME/ran"
  if [ "$n" = silent ]; then continue; fi
  if [ "$n" = flaky ] && [ ! -e "$HOME/tried" ]; then : > "$HOME/tried"; echo "$n pid=$$ fail"; continue; fi
  echo "$n pid=$$ ran=$(echo $(cat "$HOME/ran")) ok"
done"#;

/// Splits `NAME ...` lines back to their members.
struct Lines;

impl BatchSplit for Lines {
    fn split(&self, stdout: &[u8], members: &[&str]) -> Vec<Option<MemberOutput>> {
        let text = String::from_utf8_lossy(stdout);
        members
            .iter()
            .map(|m| {
                let line = text.lines().find(|l| l.split(' ').next() == Some(*m))?;
                Some(MemberOutput {
                    stdout: format!("{line}\n").into_bytes(),
                    passed: line.ends_with(" ok"),
                    named: Vec::new(),
                })
            })
            .collect()
    }

    fn retried(&self, failed: &[Vec<u8>], passed: &[u8]) -> Vec<u8> {
        let mut out = failed.concat();
        out.extend_from_slice(passed);
        out.extend_from_slice(format!("retried {}\n", failed.len() + 1).as_bytes());
        out
    }
}

fn tool(name: &str, path: &str) -> Tool {
    Tool {
        name: name.into(),
        path: path.into(),
        tree: false,
    }
}

fn graph(members: &[&str], attempts: u32, script: &str) -> ActionGraph {
    let batch = Batch {
        member_args: 1,
        attempts,
        split: Arc::new(Lines),
        shared: true,
        fresh_args: Vec::new(),
    };
    let mut graph = ActionGraph::default();
    for name in members {
        graph.add(Action {
            owner: Label::new("", "t"),
            mnemonic: "Check".into(),
            discriminator: name.to_string(),
            inputs: vec![Artifact::source(format!("src/{name}"))],
            outputs: Vec::new(),
            kind: ActionKind::Exec(ExecSpec {
                argv: vec![
                    "/bin/sh".into(),
                    "-c".into(),
                    script.into(),
                    "sh".into(),
                    name.to_string(),
                ],
                tools: vec![tool("sh", "/bin/sh"), tool("cat", "/bin/cat")],
                batch: Some(batch.clone()),
                ..ExecSpec::default()
            }),
            platform: None,
            show_output: true,
        });
    }
    graph
}

struct Run {
    report: Report,
    stdout: HashMap<String, String>,
}

impl Run {
    fn status(&self, i: usize) -> Status {
        self.report.statuses[&i]
    }
}

fn build(root: &Path, members: &[&str], attempts: u32) -> Run {
    build_with(root, members, attempts, SCRIPT)
}

fn build_with(root: &Path, members: &[&str], attempts: u32, script: &str) -> Run {
    let local = Arc::new(LocalStore::open(&root.join(".cache")).unwrap());
    let store: Arc<dyn Store> = local.clone();
    let exec = Executor::new(root, local, store.clone(), SandboxMode::Dir).unwrap();
    let graph = graph(members, attempts, script);
    let wanted: Vec<usize> = (0..members.len()).collect();
    let opts = Options {
        jobs: 2,
        keep_going: true,
        lookup_threads: 0,
        rerun_tests: false,
        remote_jobs: 0,
    };
    let report = scheduler::run(&graph, &wanted, &HashMap::new(), &exec, &Quiet, opts).unwrap();
    let mut stdout = HashMap::new();
    for (i, name) in members.iter().enumerate() {
        let text = match report.results.get(&i) {
            Some(r) => store.read(&r.stdout).unwrap().unwrap(),
            None => report
                .failures
                .iter()
                .find(|(id, _)| *id == i)
                .unwrap()
                .1
                .stdout
                .clone(),
        };
        stdout.insert(name.to_string(), String::from_utf8(text).unwrap());
    }
    Run { report, stdout }
}

fn workspace(members: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("src")).unwrap();
    for name in members {
        std::fs::write(dir.path().join("src").join(name), name).unwrap();
    }
    dir
}

fn pid(stdout: &str) -> &str {
    stdout
        .split("pid=")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
}

#[test]
fn misses_share_one_process_and_are_cached_each_by_itself() {
    let members = ["a", "b", "c"];
    let dir = workspace(&members);
    let run = build(dir.path(), &members, 1);
    assert!(run.report.ok(), "{:?}", run.report.failures);
    assert_eq!(run.report.executed, 3);
    let pids: Vec<&str> = members.iter().map(|m| pid(&run.stdout[*m])).collect();
    assert!(pids.iter().all(|p| *p == pids[0]), "one process: {pids:?}");
    assert_eq!(
        run.stdout["b"],
        format!("b pid={} ran=a b ok\n", pids[0]),
        "b's part only"
    );

    let run = build(dir.path(), &members, 1);
    assert_eq!(run.report.cached, 3);

    std::fs::write(dir.path().join("src/b"), "edited").unwrap();
    let run = build(dir.path(), &members, 1);
    assert_eq!(run.report.cached, 2);
    assert_eq!(run.status(1), Status::Executed);
}

#[test]
fn failed_members_are_retried_together_and_the_rest_run_once() {
    let members = ["a", "flaky"];
    let dir = workspace(&members);
    let run = build(dir.path(), &members, 2);
    assert!(run.report.ok(), "{:?}", run.report.failures);
    let flaky = &run.stdout["flaky"];
    assert!(
        flaky.contains(" fail\n") && flaky.ends_with(" ok\nretried 2\n"),
        "{flaky}"
    );
    assert!(!run.stdout["a"].contains("retried"), "{}", run.stdout["a"]);
    assert!(
        flaky.contains(" ran=a flaky flaky ok\n"),
        "only flaky ran again: {flaky}"
    );
}

#[test]
fn a_member_the_output_does_not_mention_fails_and_the_others_pass() {
    let members = ["a", "silent"];
    let dir = workspace(&members);
    let run = build(dir.path(), &members, 1);
    assert_eq!(run.status(0), Status::Executed);
    assert_eq!(run.status(1), Status::Failed);
    let (_, failure) = &run.report.failures[0];
    assert!(
        failure.error.to_string().contains("reported no result"),
        "{}",
        failure.error
    );
    // Never cached: it runs again, alone this time.
    let run = build(dir.path(), &members, 1);
    assert_eq!(run.report.cached, 1);
    assert_eq!(run.status(1), Status::Failed);
}

#[test]
fn a_process_that_fails_although_every_member_passed_fails_them_all() {
    let members = ["a", "b"];
    let dir = workspace(&members);
    let script = format!("{SCRIPT}\nexit 3");
    let run = build_with(dir.path(), &members, 1, &script);
    assert_eq!(run.report.failed, 2, "{:?}", run.report.statuses);
    let (_, failure) = &run.report.failures[0];
    assert!(
        failure.error.to_string().contains("exit code 3"),
        "{}",
        failure.error
    );
}
