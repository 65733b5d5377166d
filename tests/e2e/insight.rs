//! Understanding a build: `kiln explain`, `--profile`, `--json`, and `kiln verify-repro`.

use crate::support::{workspace, Workspace};

fn two_step() -> Workspace {
    workspace()
        .file("in.txt", "hello\n")
        .file("other.txt", "other\n")
        .file(
            "BUILD.toml",
            r#"
[genrule.upper]
srcs = ["in.txt"]
outs = ["upper.txt"]
cmd = "tr a-z A-Z < $SRCS > $OUT"
tools = ["tr"]
env = { MODE = "loud" }

[genrule.copy]
srcs = [":upper", "other.txt"]
outs = ["copy.txt"]
cmd = "cat $SRCS > $OUT"
tools = ["cat"]
"#,
        )
        .build()
}

#[test]
fn explain_says_first_build_then_names_what_changed() {
    let ws = two_step();
    let run = ws.kiln(&["explain", "//:upper"]);
    run.assert_ok();
    assert!(run.stdout.contains("first build"), "{}", run.stdout);
    ws.kiln(&["build"]).assert_ok();
    let run = ws.kiln(&["explain", "//:upper"]);
    assert!(
        run.stdout
            .contains("//:upper Genrule: executed: first build"),
        "{}",
        run.stdout
    );

    ws.write("in.txt", "goodbye\n");
    ws.kiln(&["build"]).assert_ok();
    let run = ws.kiln(&["explain", "//:upper"]);
    assert!(run.stdout.contains("executed because"), "{}", run.stdout);
    assert!(
        run.stdout.contains("input changed: in.txt ("),
        "{}",
        run.stdout
    );
    let run = ws.kiln(&["explain", "//:copy"]);
    assert!(
        run.stdout.contains("input changed: kiln-out/upper.txt"),
        "{}",
        run.stdout
    );
    assert!(!run.stdout.contains("other.txt"), "{}", run.stdout);

    ws.write(
        "BUILD.toml",
        &ws.read("BUILD.toml")
            .replace("MODE = \"loud\"", "MODE = \"quiet\""),
    );
    ws.kiln(&["build"]).assert_ok();
    let run = ws.kiln(&["explain", "//:upper"]);
    assert!(
        run.stdout.contains("env changed: MODE (loud -> quiet)"),
        "{}",
        run.stdout
    );

    ws.kiln(&["build"]).assert_ok();
    let run = ws.kiln(&["explain", "//:upper"]);
    assert!(
        run.stdout.contains("cached in the last build"),
        "{}",
        run.stdout
    );
}

#[test]
fn profile_is_trace_event_json_with_one_span_per_action() {
    let ws = two_step();
    let profile = ws.path("trace.json");
    ws.kiln(&["build", "--profile", profile.to_str().unwrap()])
        .assert_ok();
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&profile).unwrap()).unwrap();
    let spans: Vec<&serde_json::Value> = doc["traceEvents"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["ph"] == "X")
        .collect();
    assert_eq!(spans.len(), 2);
    for span in &spans {
        assert!(
            span["ts"].is_u64() && span["dur"].is_u64() && span["tid"].is_u64(),
            "{span}"
        );
        assert_eq!(span["args"]["cache"], "miss");
    }
    ws.kiln(&["build", "--profile", profile.to_str().unwrap()])
        .assert_ok();
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&profile).unwrap()).unwrap();
    let hits = doc["traceEvents"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["args"]["cache"] == "hit")
        .count();
    assert_eq!(hits, 2);
}

#[test]
fn json_events_stream_one_object_per_line() {
    let ws = two_step();
    let path = ws.path("events.jsonl");
    ws.kiln(&["build", "--json", path.to_str().unwrap()])
        .assert_ok();
    let events: Vec<serde_json::Value> = std::fs::read_to_string(&path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(kinds.first(), Some(&"build_started"));
    assert_eq!(kinds.last(), Some(&"build_finished"));
    assert_eq!(kinds.iter().filter(|k| **k == "action_executed").count(), 2);
    let copy = events
        .iter()
        .find(|e| e["event"] == "target_finished" && e["target"] == "//:copy")
        .unwrap();
    assert_eq!(copy["ok"], true);
    let digest = copy["outputs"][0]["digest"].as_str().unwrap();
    let expected = kiln_digest(&ws.read("kiln-out/copy.txt"));
    assert_eq!(digest, expected);
}

fn kiln_digest(text: &str) -> String {
    // BLAKE3 via b3sum, the reference implementation's command.
    let out = std::process::Command::new("b3sum")
        .arg("--no-names")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(text.as_bytes())?;
            c.wait_with_output()
        })
        .expect("b3sum is installed by .ci/install-deps");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[test]
fn verify_repro_passes_on_deterministic_outputs_and_names_a_clock() {
    let ws = two_step();
    let run = ws.kiln(&["verify-repro"]);
    run.assert_ok();
    assert!(
        run.stderr.contains("2 outputs compared, all identical"),
        "{}",
        run.stderr
    );

    ws.write(
        "BUILD.toml",
        &format!(
            "{}\n[genrule.stamped]\nsrcs = [\"in.txt\"]\nouts = [\"stamped.txt\"]\ncmd = \"cat $SRCS > $OUT; date +%s%N >> $OUT\"\ntools = [\"cat\", \"date\"]\n",
            ws.read("BUILD.toml")
        ),
    );
    let run = ws.kiln(&["verify-repro"]);
    assert_eq!(run.status, 1, "{}", run.stderr);
    let line = run
        .stderr
        .lines()
        .find(|l| l.contains("kiln-out/stamped.txt: differs at byte "))
        .unwrap_or_else(|| panic!("{}", run.stderr));
    let offset: usize = line
        .split("differs at byte ")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        offset >= 6,
        "the copied input is identical; the clock is not: {line}"
    );
    assert!(
        run.stderr.contains("1 of 3 outputs differ"),
        "{}",
        run.stderr
    );
}

#[test]
fn verify_repro_names_the_first_differing_archive_entry() {
    let ws = workspace()
        .file("a.txt", "a\n")
        .file(
            "BUILD.toml",
            r#"
[genrule.archive]
srcs = ["a.txt"]
outs = ["out.tar"]
cmd = "mkdir d && cp $SRCS d/a.txt && date +%s%N > d/b.txt && tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -cf $OUT d"
tools = ["mkdir", "cp", "date", "tar"]
"#,
        )
        .build();
    let run = ws.kiln(&["verify-repro"]);
    assert_eq!(run.status, 1, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("first differing archive entry: d/b.txt"),
        "{}",
        run.stderr
    );
}
