//! The engine's promises: nothing runs twice, edits rerun exactly their dependents,
//! early cutoff, keys independent of paths and caches, sandboxing, crash safety.

use std::process::Stdio;
use std::time::Duration;

use crate::support::{workspace, Workspace};

/// a.txt → upper → count, and b.txt → other (independent).
fn chain() -> Workspace {
    workspace()
        .file("text/a.txt", "hello\nworld\n")
        .file("text/b.txt", "independent\n")
        .file(
            "text/BUILD.toml",
            r#"
[genrule.upper]
srcs = ["a.txt"]
outs = ["upper.txt"]
cmd = "tr a-z A-Z < $SRCS > $OUT"
tools = ["tr"]

[genrule.first_line]
srcs = [":upper"]
outs = ["first.txt"]
cmd = "head -n 1 $SRCS > $OUT"
tools = ["head"]

[genrule.shout]
srcs = [":first_line"]
outs = ["shout.txt"]
cmd = "cat $SRCS $SRCS > $OUT"
tools = ["cat"]

[genrule.other]
srcs = ["b.txt"]
outs = ["other.txt"]
cmd = "cat $SRCS > $OUT"
tools = ["cat"]
"#,
        )
        .build()
}

#[test]
fn second_build_executes_nothing() {
    let ws = chain();
    let first = ws.kiln(&["build"]);
    first.assert_ok();
    assert_eq!(first.counts(), (4, 0, 4, 0));
    assert_eq!(ws.read("kiln-out/text/shout.txt"), "HELLO\nHELLO\n");
    let second = ws.kiln(&["build"]);
    second.assert_ok();
    assert_eq!(second.counts(), (4, 4, 0, 0));
    assert!(second.ran().is_empty(), "{:?}", second.ran());
}

#[test]
fn editing_a_source_reruns_exactly_its_dependents() {
    let ws = chain();
    ws.kiln(&["build"]).assert_ok();
    ws.write("text/a.txt", "goodbye\nworld\n");
    let run = ws.kiln(&["build"]);
    run.assert_ok();
    assert_eq!(
        run.ran(),
        vec![
            "Genrule //text:first_line",
            "Genrule //text:shout",
            "Genrule //text:upper"
        ]
    );
    assert_eq!(ws.read("kiln-out/text/shout.txt"), "GOODBYE\nGOODBYE\n");
}

#[test]
fn unchanged_output_stops_the_rebuild_early_cutoff() {
    let ws = chain();
    ws.kiln(&["build"]).assert_ok();
    // Only the second line changes: `upper` reruns, `first_line` reruns and writes the
    // same bytes, so `shout` is not run again.
    ws.write("text/a.txt", "hello\nthere\n");
    let run = ws.kiln(&["build"]);
    run.assert_ok();
    assert_eq!(
        run.ran(),
        vec!["Genrule //text:first_line", "Genrule //text:upper"]
    );
    assert_eq!(run.counts(), (4, 2, 2, 0));
}

#[test]
fn keys_are_the_same_across_workspace_paths_and_caches() {
    let ws = chain();
    ws.kiln(&["build"]).assert_ok();
    let copy = ws.copy();
    copy.kiln(&["build"]).assert_ok();
    let keys_a = ws.kiln(&["cache", "keys"]);
    let keys_b = copy.kiln(&["cache", "keys"]);
    keys_a.assert_ok();
    assert_eq!(keys_a.stdout.lines().count(), 4, "{}", keys_a.stdout);
    assert_eq!(keys_a.stdout, keys_b.stdout);
    // And the copy finds everything in the first cache.
    let shared = crate::support::kiln_cmd(&copy.root, &ws.cache, &["build"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&shared.stderr);
    assert!(
        stderr.contains("4 actions: 4 cached, 0 executed"),
        "{stderr}"
    );
}

#[test]
fn deleted_outputs_are_restored_from_the_cache() {
    let ws = chain();
    ws.kiln(&["build"]).assert_ok();
    ws.kiln(&["clean"]).assert_ok();
    assert!(!ws.path("kiln-out").exists());
    let run = ws.kiln(&["build"]);
    run.assert_ok();
    assert_eq!(run.executed(), 0);
    assert_eq!(ws.read("kiln-out/text/other.txt"), "independent\n");
}

#[test]
fn reading_an_undeclared_file_fails() {
    let ws = workspace()
        .file("secret.txt", "not declared\n")
        .file("in.txt", "declared\n")
        .file(
            "BUILD.toml",
            r#"
[genrule.sneaky]
srcs = ["in.txt"]
outs = ["out.txt"]
cmd = "cat in.txt secret.txt > $OUT"
tools = ["cat"]
"#,
        )
        .build();
    let run = ws.kiln(&["build"]);
    assert_eq!(run.status, 1, "{}", run.stderr);
    assert!(
        run.stderr.contains("secret.txt: No such file"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("Genrule //:sneaky"), "{}", run.stderr);
}

#[test]
fn bwrap_sandbox_hides_the_workspace_and_the_network() {
    let ws = workspace()
        .file("secret.txt", "not declared\n")
        .file("BUILD.toml", "")
        .build();
    let secret = ws.path("secret.txt");
    ws.write(
        "BUILD.toml",
        &format!(
            r#"
[genrule.absolute]
outs = ["out.txt"]
cmd = "cat {} > $OUT"
tools = ["cat"]

[genrule.net]
outs = ["net.txt"]
cmd = "tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ' > $OUT"
tools = ["tail", "cut", "tr"]
"#,
            secret.display()
        ),
    );
    let run = ws.kiln(&["build", "--sandbox=bwrap", "--keep-going"]);
    assert_eq!(run.status, 1, "{}", run.stderr);
    assert!(
        run.stderr.contains("Genrule //:absolute failed"),
        "{}",
        run.stderr
    );
    assert_eq!(
        ws.read("kiln-out/net.txt").trim(),
        "lo",
        "only loopback inside the sandbox"
    );
}

/// The host's top-level entries an action without network sees (the engine's
/// `bwrap::SYSTEM`): not home directories, `/root`, `/var`, `/mnt`, ...
const SYSTEM: &[&str] = &[
    "bin", "etc", "lib", "lib32", "lib64", "libx32", "nix", "opt", "sbin", "usr",
];

/// What an action sees at the top of its root: `name mode(hex) empty|full` for each
/// entry of the host's `/` but those the sandbox has its own of.
fn top_level_view(
    names: impl Iterator<Item = String>,
    meta: impl Fn(&str) -> (u32, bool),
) -> Vec<String> {
    let own = ["proc", "dev", "tmp", "run", "kiln"];
    let mut view: Vec<String> = names
        .filter(|n| !own.contains(&n.as_str()))
        .map(|n| {
            let (mode, empty) = meta(&n);
            format!("{n} {mode:x} {}", if empty { "empty" } else { "full" })
        })
        .collect();
    view.sort();
    view
}

#[test]
fn bwrap_sandbox_shows_the_host_s_system_directories_as_they_are_read_only_and_no_more() {
    use std::os::unix::fs::MetadataExt;
    let ws = workspace()
        .file(
            "BUILD.toml",
            r#"
[genrule.view]
outs = ["view.txt"]
cmd = """
out=$PWD/$OUT
cd / && for e in $(ls -A); do
  if [ -d "$e" ] && [ -n "$(ls -A "$e" 2>/dev/null | head -n 1)" ]; then f=full; else f=empty; fi
  echo "$e $(stat -c %f "$e") $f"
done > $out
"""
tools = ["ls", "stat", "head"]

[genrule.writable]
outs = ["writable.txt"]
cmd = """
for e in / /* /kiln; do touch "$e/.kiln-probe" 2>/dev/null && echo "$e"; done > $OUT; true
"""
tools = ["touch"]
"#,
        )
        .build();
    ws.kiln(&["build", "--sandbox=bwrap"]).assert_ok();
    let seen = ws.read("kiln-out/view.txt");
    let seen = top_level_view(
        seen.lines()
            .map(|l| l.split(' ').next().unwrap().to_string()),
        |name| {
            let line = seen
                .lines()
                .find(|l| l.starts_with(&format!("{name} ")))
                .unwrap();
            let mut parts = line.split(' ').skip(1);
            let mode = u32::from_str_radix(parts.next().unwrap(), 16).unwrap();
            (mode, parts.next() == Some("empty"))
        },
    );
    let host = top_level_view(
        std::fs::read_dir("/")
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| SYSTEM.contains(&n.as_str())),
        |name| {
            let path = std::path::Path::new("/").join(name);
            let mode = std::fs::symlink_metadata(&path).unwrap().mode();
            let empty =
                !path.is_dir() || std::fs::read_dir(&path).is_ok_and(|mut d| d.next().is_none());
            (mode, empty)
        },
    );
    assert_eq!(
        seen, host,
        "the sandbox's top level against the host's system entries"
    );
    // Only the sandbox's own scratch places take writes; not its root, nor any host
    // entry (an empty one made in place of a bind included).
    let writable: Vec<String> = ws
        .read("kiln-out/writable.txt")
        .lines()
        .map(String::from)
        .collect();
    assert_eq!(
        writable,
        ["/dev", "/run", "/tmp"],
        "writable top-level entries"
    );
}

#[test]
fn a_tool_outside_the_system_directories_is_in_sight_at_its_path() {
    use std::os::unix::fs::PermissionsExt;
    // Outside the workspace, /tmp and the system directories, as a tool in a home
    // directory is (cargo's target directory for tests).
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let tool = dir.path().join("greet");
    std::fs::write(&tool, "#!/bin/sh\necho hello from ${0##*/}\n").unwrap();
    std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o755)).unwrap();
    let ws = workspace().file("BUILD.toml", "").build();
    ws.write(
        "BUILD.toml",
        &format!(
            r#"
[genrule.greet]
outs = ["greet.txt"]
cmd = "greet > $OUT"
tools = ["{}"]
"#,
            tool.display()
        ),
    );
    ws.kiln(&["build", "--sandbox=bwrap"]).assert_ok();
    assert_eq!(ws.read("kiln-out/greet.txt").trim(), "hello from greet");

    // A tool there that runs a program beside it (as a version manager's shim does)
    // finds nothing: the failure names the tool and where such tools belong.
    std::fs::write(
        dir.path().join("helper"),
        "#!/bin/sh
echo helped
",
    )
    .unwrap();
    std::fs::set_permissions(
        dir.path().join("helper"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    std::fs::write(
        &tool,
        "#!/bin/sh
exec \"${KILN_TOOL_DIR}/helper\"\n",
    )
    .unwrap();
    ws.write(
        "BUILD.toml",
        &format!(
            "[genrule.greet]\nouts = [\"greet.txt\"]\ncmd = \"greet > $OUT\"\ntools = [\"{}\"]\nenv = {{ KILN_TOOL_DIR = \"{}\" }}\n",
            tool.display(),
            dir.path().display()
        ),
    );
    let run = ws.kiln(&["build", "--sandbox=bwrap"]);
    assert_eq!(run.status, 1, "{}", run.stderr);
    let hint = format!(
        "hint: the tool `greet` ({}) lives outside the host's system directories",
        tool.display()
    );
    assert!(run.stderr.contains(&hint), "{}", run.stderr);
    assert!(
        run.stderr.contains("under /usr/local or /opt"),
        "{}",
        run.stderr
    );
}

#[test]
fn the_kiln_binary_is_in_sight_only_of_actions_that_name_it() {
    let ws = workspace()
        .file(
            "BUILD.toml",
            r#"
[genrule.plain]
outs = ["plain.txt"]
cmd = "if [ -e /kiln/bin/kiln ]; then echo seen; else echo absent; fi > $OUT"

[genrule.named]
outs = ["named.txt"]
cmd = "if [ -x \"$KILN\" ] && [ -e /kiln/bin/kiln ]; then echo seen; else echo absent; fi > $OUT"
env = { KILN = "{kiln}" }
"#,
        )
        .build();
    ws.kiln(&["build", "--sandbox=bwrap"]).assert_ok();
    assert_eq!(ws.read("kiln-out/plain.txt").trim(), "absent");
    assert_eq!(ws.read("kiln-out/named.txt").trim(), "seen");
}

#[test]
fn environment_is_empty_but_for_what_the_action_declares() {
    let ws = workspace()
        .file(
            "BUILD.toml",
            r#"
[genrule.env]
outs = ["env.txt"]
cmd = "env | sort > $OUT"
tools = ["env", "sort"]
env = { GREETING = "hi" }
"#,
        )
        .build();
    let run = ws.kiln(&["build", "--sandbox=dir"]);
    run.assert_ok();
    let env = ws.read("kiln-out/env.txt");
    let names: Vec<&str> = env.lines().map(|l| l.split('=').next().unwrap()).collect();
    for name in &names {
        assert!(
            ["GREETING", "HOME", "OUT", "OUTS", "PATH", "PWD", "SHLVL", "SRCS", "TMPDIR", "_"]
                .contains(name),
            "unexpected variable {name} in:\n{env}"
        );
    }
    assert!(env.contains("GREETING=hi"));
    let path = env.lines().find(|l| l.starts_with("PATH=")).unwrap();
    assert!(
        path.ends_with("/.kiln/bin"),
        "PATH holds only the sandbox's tool directory: {path}"
    );
}

#[test]
fn missing_declared_output_is_named() {
    let ws = workspace()
        .file(
            "BUILD.toml",
            r#"
[genrule.lazy]
outs = ["a.txt", "b.txt"]
cmd = "echo a > $OUT"
"#,
        )
        .build();
    let run = ws.kiln(&["build"]);
    assert_eq!(run.status, 1);
    assert!(
        run.stderr
            .contains("did not write its declared outputs: kiln-out/b.txt"),
        "{}",
        run.stderr
    );
    // Nothing was cached: the next build runs it again.
    assert_eq!(ws.kiln(&["build"]).counts(), (1, 0, 0, 1));
}

#[test]
fn failure_stops_the_build_unless_keep_going() {
    let ws = workspace()
        .file(
            "BUILD.toml",
            r#"
[genrule.bad]
outs = ["bad.txt"]
cmd = "echo broken >&2; exit 3"

[genrule.after_bad]
srcs = [":bad"]
outs = ["after.txt"]
cmd = "cp $SRCS $OUT"
tools = ["cp"]

[genrule.good]
outs = ["good.txt"]
cmd = "echo fine > $OUT"
"#,
        )
        .build();
    let run = ws.kiln(&["build", "-j", "1"]);
    assert_eq!(run.status, 1);
    assert!(
        run.stderr
            .contains("Genrule //:bad failed with exit code 3"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("broken"),
        "the failing action's stderr is shown: {}",
        run.stderr
    );
    let run = ws.kiln(&["build", "-j", "1", "--keep-going"]);
    assert_eq!(run.status, 1);
    let (total, cached, executed, failed) = run.counts();
    assert_eq!(
        (total, cached + executed, failed),
        (3, 1, 1),
        "after_bad never runs"
    );
    assert_eq!(ws.read("kiln-out/good.txt"), "fine\n");
}

fn slow_workspace(n: usize) -> Workspace {
    let mut toml = String::new();
    for i in 0..n {
        toml.push_str(&format!(
            "[genrule.t{i}]\nsrcs = [\"in.txt\"]\nouts = [\"out{i}.txt\"]\ncmd = \"sleep 0.2; cat $SRCS > $OUT; echo {i} >> $OUT\"\ntools = [\"cat\", \"sleep\"]\n\n"
        ));
    }
    workspace()
        .file("in.txt", "payload\n")
        .file("BUILD.toml", &toml)
        .build()
}

#[test]
fn kill_during_a_build_leaves_a_usable_cache() {
    let ws = slow_workspace(12);
    let mut child = ws
        .cmd(&["build", "-j", "2"])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Kill it as soon as the first output is in place: some actions are done, others
    // are running or waiting.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !ws
        .path("kiln-out")
        .read_dir()
        .is_ok_and(|mut d| d.next().is_some())
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the build produced nothing"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    unsafe { libc_kill(child.id() as i32) };
    child.wait().unwrap();
    let run = ws.kiln(&["build"]);
    run.assert_ok();
    let (total, cached, executed, _) = run.counts();
    assert_eq!(total, 12);
    assert_eq!(cached + executed, 12);
    assert!(
        cached > 0 && executed > 0,
        "killed mid-way: some cached, some not ({cached}/{executed})"
    );
    for i in 0..12 {
        assert_eq!(
            ws.read(&format!("kiln-out/out{i}.txt")),
            format!("payload\n{i}\n")
        );
    }
}

extern "C" {
    fn kill(pid: i32, sig: i32) -> i32;
}

unsafe fn libc_kill(pid: i32) {
    kill(pid, 9);
}

#[test]
fn two_builds_at_once_on_one_cache_both_succeed() {
    let ws = slow_workspace(6);
    let a = ws.cmd(&["build"]).output().unwrap();
    let _ = a;
    ws.kiln(&["clean"]).assert_ok();
    let copy = ws.copy();
    // Fresh keys for both: edit the shared input in both workspaces the same way.
    ws.write("in.txt", "second\n");
    copy.write("in.txt", "second\n");
    let one = ws.cmd(&["build"]).stderr(Stdio::piped()).spawn().unwrap();
    let two = crate::support::kiln_cmd(&copy.root, &ws.cache, &["build"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (one, two) = (
        one.wait_with_output().unwrap(),
        two.wait_with_output().unwrap(),
    );
    assert!(
        one.status.success(),
        "{}",
        String::from_utf8_lossy(&one.stderr)
    );
    assert!(
        two.status.success(),
        "{}",
        String::from_utf8_lossy(&two.stderr)
    );
    for i in 0..6 {
        assert_eq!(
            ws.read(&format!("kiln-out/out{i}.txt")),
            format!("second\n{i}\n")
        );
        assert_eq!(
            copy.read(&format!("kiln-out/out{i}.txt")),
            format!("second\n{i}\n")
        );
    }
    assert_eq!(ws.kiln(&["build"]).counts(), (6, 6, 0, 0));
}

#[test]
fn no_op_fast_path_replays_and_notices_every_kind_of_change() {
    let ws = workspace()
        .file("text/a.txt", "a\n")
        .file(
            "BUILD.toml",
            "[filegroup.texts]\nsrcs = [\"text/*.txt\"]\n\n[genrule.all]\nsrcs = [\":texts\"]\nouts = [\"all.txt\"]\ncmd = \"cat $SRCS > $OUT\"\ntools = [\"cat\"]\n",
        )
        .build();
    const FAST: &str = "nothing changed since the last build";
    // No pause between builds: files written within the last two seconds are watched by
    // their content as well as their stamps, so replays start at once and edits made at
    // once are seen.
    ws.kiln(&["build"]).assert_ok();
    let recorded = ws.kiln(&["build"]);
    assert!(!recorded.stderr.contains(FAST), "{}", recorded.stderr);
    let fast = ws.kiln(&["build"]);
    fast.assert_ok();
    assert!(fast.stderr.contains(FAST), "{}", fast.stderr);
    assert_eq!(fast.counts(), (1, 1, 0, 0));

    // A new file matching a glob: its directory changed.
    ws.write("text/b.txt", "b\n");
    let run = ws.kiln(&["build"]);
    assert!(
        !run.stderr.contains(FAST) && run.executed() == 1,
        "{}",
        run.stderr
    );
    assert_eq!(ws.read("kiln-out/all.txt"), "a\nb\n");

    // An edited source (same size).
    ws.kiln(&["build"]).assert_ok();
    assert!(ws.kiln(&["build"]).stderr.contains(FAST));
    ws.write("text/a.txt", "A\n");
    let run = ws.kiln(&["build"]);
    assert!(
        !run.stderr.contains(FAST) && run.executed() == 1,
        "{}",
        run.stderr
    );
    assert_eq!(ws.read("kiln-out/all.txt"), "A\nb\n");

    // A deleted output, and a changed BUILD.toml.
    ws.kiln(&["build"]).assert_ok();
    assert!(ws.kiln(&["build"]).stderr.contains(FAST));
    std::fs::remove_file(ws.path("kiln-out/all.txt")).unwrap();
    let run = ws.kiln(&["build"]);
    assert!(!run.stderr.contains(FAST), "{}", run.stderr);
    assert_eq!(ws.read("kiln-out/all.txt"), "A\nb\n");
    ws.write(
        "BUILD.toml",
        &ws.read("BUILD.toml")
            .replace("cat $SRCS", "cat $SRCS $SRCS"),
    );
    let run = ws.kiln(&["build"]);
    assert!(
        !run.stderr.contains(FAST) && run.executed() == 1,
        "{}",
        run.stderr
    );
}

#[test]
fn cache_stats_counts_what_a_build_stored() {
    let ws = chain();
    ws.kiln(&["build"]).assert_ok();
    let run = ws.kiln(&["cache", "stats", "--format", "json"]);
    run.assert_ok();
    let stats: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(stats["actions"], 4, "{stats}");
    assert!(stats["blobs"].as_u64().unwrap() >= 4, "{stats}");
    let text = ws.kiln(&["cache", "stats"]);
    assert!(
        text.stdout.contains("action results:  4"),
        "{}",
        text.stdout
    );
}

#[test]
fn graph_shows_actions_and_their_edges_without_running_them() {
    let ws = chain();
    let run = ws.kiln(&["graph", "--format", "json"]);
    run.assert_ok();
    let graph: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    let actions = graph["actions"].as_array().unwrap();
    assert_eq!(actions.len(), 4);
    let shout = actions
        .iter()
        .find(|a| a["target"] == "//text:shout")
        .unwrap();
    let first = actions
        .iter()
        .find(|a| a["target"] == "//text:first_line")
        .unwrap();
    assert_eq!(shout["deps"], serde_json::json!([first["id"]]));
    assert!(!ws.path("kiln-out").exists(), "graph runs nothing");
    let dot = ws.kiln(&["graph"]);
    assert!(dot.stdout.starts_with("digraph kiln {"), "{}", dot.stdout);
    assert!(
        dot.stdout
            .contains(&format!("a{} -> a{};", first["id"], shout["id"])),
        "{}",
        dot.stdout
    );
}

#[test]
fn dash_c_runs_as_if_started_in_the_directory() {
    let ws = chain();
    let elsewhere = tempfile::tempdir().unwrap();
    let out = crate::support::kiln_cmd(
        elsewhere.path(),
        &ws.cache,
        &["-C", ws.root.to_str().unwrap(), "build", "//text:other"],
    )
    .output()
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(ws.read("kiln-out/text/other.txt"), "independent\n");
}

/// bubblewrap is probed (a `bwrap … true` process) once, and the answer kept in the
/// cache with what it depends on: a later build that runs an action starts no probe,
/// and a memo of other facts is probed again.
#[test]
fn bubblewrap_is_probed_once_and_the_answer_remembered() {
    let real = kiln_testkit::which("bwrap").expect("bubblewrap is required (run .ci/install-deps)");
    let ws = chain();
    let bin = ws.cache.parent().unwrap().join("bin");
    let log = bin.join("bwrap.log");
    crate::support::write(
        &bin.join("bwrap"),
        &format!(
            "#!/bin/sh\necho \"$*\" >> {}\nexec {} \"$@\"\n",
            log.display(),
            real.display()
        ),
    );
    std::fs::set_permissions(
        bin.join("bwrap"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let build = || {
        let out = ws
            .cmd(&["--sandbox=bwrap", "build"])
            .env("PATH", &path)
            .output()
            .unwrap();
        crate::support::Run::from(out).assert_ok().executed()
    };
    let probes = || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let probes = lines.iter().filter(|l| l.ends_with(" true")).count();
        (probes, lines.len() - probes)
    };
    assert_eq!(build(), 4);
    assert_eq!(probes(), (1, 4), "one probe, then the four actions");
    let memo = ws.cache.join("bwrap-works");
    assert!(std::fs::read_to_string(&memo).unwrap().contains("boot="));
    ws.write("text/b.txt", "edited\n");
    assert_eq!(build(), 1);
    assert_eq!(probes(), (1, 5), "the remembered answer is used");
    std::fs::write(&memo, "another bwrap, another boot\n").unwrap();
    ws.write("text/b.txt", "edited again\n");
    assert_eq!(build(), 1);
    assert_eq!(probes(), (2, 6), "a memo of other facts is probed again");
}
