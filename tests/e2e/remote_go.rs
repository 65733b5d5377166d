//! go_test runs on a real Remote Execution API engine (buildbox-casd, started by the
//! test): each package's test binary runs on the worker with its module in the input
//! root, is keyed by what the test read exactly as a local run is, and is shared with
//! later local and remote builds through the engine's cache. The compile step stays
//! here (it uses Go's compile cache through kiln's store).
//!
//! casd is required, not skipped: a test that passes without its engine proves nothing.

use std::collections::BTreeMap;

use kiln_testkit::Casd;

use crate::gomod::{go_test, test_file, verdicts};
use crate::support::{go_workspace, Builder, Run, Workspace};

/// `fixture` reads its testdata, `APP_ENV` and `USER`; `plain` reads nothing; `caller`
/// finds its data through `runtime.Caller`, as the local sandbox's fixed path allows.
fn module() -> Builder {
    go_workspace()
        .file("fixture/fixture.go", "package fixture\n\nfunc Name() string { return \"fixture\" }\n")
        .file(
            "fixture/fixture_test.go",
            &test_file(
                "fixture",
                &["os", "strings"],
                "\tb, err := os.ReadFile(\"testdata/greeting.txt\")\n\tif err != nil {\n\t\tt.Fatal(err)\n\t}\n\tif !strings.HasPrefix(string(b), \"hello\") {\n\t\tt.Fatalf(\"greeting %q\", b)\n\t}\n\tif os.Getenv(\"APP_ENV\") == \"prod\" {\n\t\tt.Fatal(\"not in prod\")\n\t}\n\tt.Logf(\"USER=%s\", os.Getenv(\"USER\"))\n\tt.Logf(\"HOME=%s TMPDIR=%s\", os.Getenv(\"HOME\"), os.Getenv(\"TMPDIR\"))",
            ),
        )
        .file("fixture/testdata/greeting.txt", "hello\n")
        .file("plain/plain.go", "package plain\n\nfunc Two() int { return 2 }\n")
        .file(
            "plain/plain_test.go",
            &test_file("plain", &[], "\tif Two() != 2 {\n\t\tt.Fatal(\"bad\")\n\t}"),
        )
        .file("caller/caller.go", "package caller\n")
        .file(
            "caller/caller_test.go",
            &test_file(
                "caller",
                &["os", "path/filepath", "runtime"],
                "\t_, file, _, _ := runtime.Caller(0)\n\tif _, err := os.ReadFile(filepath.Join(filepath.Dir(file), \"..\", \"testdata\", \"cert.pem\")); err != nil {\n\t\tt.Fatal(err)\n\t}",
            ),
        )
        .file("testdata/cert.pem", "not really a certificate\n")
        .file("BUILD.toml", "[go_test.unit]\nenv = { APP_ENV = \"test\" }\n")
}

/// The packages whose GoTest action ran (passing or failing), each with where it ran
/// ("remote" or "local"), from a `--json` event file.
fn test_runs(ws: &Workspace, json: &str) -> BTreeMap<String, String> {
    runs_of(ws, json, "GoTest")
}

/// The actions of `mnemonic` that ran, by the last word of their id, each with where.
fn runs_of(ws: &Workspace, json: &str, mnemonic: &str) -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(ws.path(json)).unwrap();
    text.lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|e| e["mnemonic"] == mnemonic)
        .filter(|e| e["event"] == "action_executed" || e["event"] == "action_failed")
        .map(|e| {
            let id = e["id"].as_str().unwrap();
            let pkg = id.rsplit(' ').next().unwrap().to_string();
            let at = e["ran_on"]["where"].as_str().unwrap_or("local").to_string();
            (pkg, at)
        })
        .collect()
}

fn kiln_json(ws: &Workspace, args: &[&str]) -> Run {
    let json = ws.path("events.json").display().to_string();
    let mut all = args.to_vec();
    all.extend(["--json", &json]);
    ws.kiln(&all)
}

fn remote_and_local(pkgs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pkgs.iter()
        .map(|(p, at)| (format!("example.com/m/{p}"), at.to_string()))
        .collect()
}

#[test]
fn go_test_runs_on_casd_agree_with_local_runs_and_go_test_and_are_shared() {
    let casd = Casd::start();
    let ws = module().build();
    let run = kiln_json(&ws, &["test", "--remote-executor", &casd.url()]);
    run.assert_ok();
    // The runs went to casd, but the one that looks for files where runtime.Caller
    // points (the local sandbox's fixed path), which ran again here.
    assert_eq!(
        test_runs(&ws, "events.json"),
        remote_and_local(&[
            ("caller", "local"),
            ("fixture", "remote"),
            ("plain", "remote")
        ]),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("/kiln/ws/testdata/cert.pem") && run.stderr.contains("running it here"),
        "{}",
        run.stderr
    );
    assert!(run.remote_counts().1 >= 2, "{}", run.stderr);
    // go list needs the whole toolchain, which a worker would stage for it: it ran here.
    let lists = runs_of(&ws, "events.json", "GoList");
    assert!(
        !lists.is_empty() && lists.values().all(|at| at == "local"),
        "{lists:?}"
    );
    let remote = verdicts(&run.stderr);
    assert_eq!(remote.len(), 3, "{}", run.stderr);
    assert!(remote.values().all(|v| v == "ok"), "{}", run.stderr);

    // The same verdicts from a local kiln on another checkout, and from go test.
    let local = ws.copy();
    let here = local.kiln(&["test"]);
    here.assert_ok();
    assert_eq!(verdicts(&here.stderr), remote);
    assert_eq!(go_test(&ws, "", &[]), remote);

    // Another machine (other path, empty cache) reading casd as a gRPC cache: every
    // test run is a remote hit, keyed by what it read as here.
    let second = ws.copy();
    let run = kiln_json(&second, &["test", "--remote-cache", &casd.url()]);
    run.assert_ok();
    assert!(
        test_runs(&second, "events.json").is_empty(),
        "{}",
        run.stderr
    );
    let (actions, cached, executed, _) = run.counts();
    // Its cache was empty: every hit is a remote one, those of analysis (go list) too.
    assert!(
        cached >= 3 && run.remote_counts().0 == cached,
        "{}",
        run.stderr
    );
    assert_eq!(executed, actions - cached, "{}", run.stderr);
    assert!(
        run.stderr.contains("ok  \texample.com/m/fixture\t(cached)"),
        "{}",
        run.stderr
    );

    // Editing the file the fixture test read reruns that test alone, on casd; the
    // others stay cached.
    second.write("fixture/testdata/greeting.txt", "hello again\n");
    let run = kiln_json(&second, &["test", "--remote-executor", &casd.url()]);
    run.assert_ok();
    assert_eq!(
        test_runs(&second, "events.json"),
        remote_and_local(&[("fixture", "remote")]),
        "{}",
        run.stderr
    );
    // And the first machine, building here, finds that result in casd too.
    ws.write("fixture/testdata/greeting.txt", "hello again\n");
    let run = kiln_json(&ws, &["test", "--remote-cache", &casd.url()]);
    run.assert_ok();
    assert!(test_runs(&ws, "events.json").is_empty(), "{}", run.stderr);
    // A change to what it read that makes it fail: run on casd, shown, not cached.
    ws.write("fixture/testdata/greeting.txt", "goodbye\n");
    let run = ws.kiln(&["test", "--remote-executor", &casd.url()]);
    assert_eq!(run.status, 1, "{}", run.stderr);
    assert!(
        run.stderr.contains("greeting \"goodbye\\n\""),
        "{}",
        run.stderr
    );
}

/// A module in a subdirectory: `bad` fails with output, `outside` reads a workspace
/// file beyond its module, which no sandbox shows, here or on a worker.
fn failing() -> Builder {
    go_workspace()
        .file("go.mod", "")
        .file("svc/go.mod", "module example.com/svc\n\ngo 1.23\n")
        .file("svc/bad/bad.go", "package bad\n")
        .file(
            "svc/bad/bad_test.go",
            &test_file("bad", &[], "\tt.Log(\"looking closely\")\n\tt.Fatalf(\"got %d\", 41)"),
        )
        .file("svc/outside/outside.go", "package outside\n")
        .file(
            "svc/outside/outside_test.go",
            &test_file("outside", &["os"], "\tif _, err := os.ReadFile(\"../../secret.txt\"); err != nil {\n\t\tt.Fatal(err)\n\t}"),
        )
        .file("svc/ok/ok.go", "package ok\n")
        .file("svc/ok/ok_test.go", &test_file("ok", &[], "\t_ = 1"))
        .file("secret.txt", "beyond the module\n")
        .file("svc/BUILD.toml", "[go_test.unit]\n")
}

#[test]
fn a_failing_remote_test_shows_its_output_like_a_local_one_and_is_not_cached() {
    let casd = Casd::start();
    let ws = failing().build();
    std::fs::remove_file(ws.path("go.mod")).unwrap();
    let args = ["test", "--keep-going", "--remote-executor", &casd.url()];
    let run = kiln_json(&ws, &args);
    assert_eq!(run.status, 1, "{}", run.stderr);
    let ran = test_runs(&ws, "events.json");
    let everywhere: Vec<&String> = ran.values().collect();
    assert_eq!(everywhere, ["remote"; 3], "{ran:?}\n{}", run.stderr);
    for want in [
        "--- FAIL: TestIt",
        "looking closely",
        "got 41",
        "../../secret.txt: no such file or directory",
    ] {
        assert!(run.stderr.contains(want), "{want}:\n{}", run.stderr);
    }
    let remote = verdicts(&run.stderr);
    let want: BTreeMap<String, String> = [("bad", "FAIL"), ("ok", "ok"), ("outside", "FAIL")]
        .iter()
        .map(|(p, v)| (format!("example.com/svc/{p}"), v.to_string()))
        .collect();
    assert_eq!(remote, want, "{}", run.stderr);

    // A local kiln fails them the same way.
    let local = ws.copy();
    let here = local.kiln(&["test", "--keep-going"]);
    assert_eq!(here.status, 1);
    assert_eq!(verdicts(&here.stderr), want, "{}", here.stderr);
    assert!(here
        .stderr
        .contains("../../secret.txt: no such file or directory"));

    // Failures are not cached, there or here: both run again (on casd), the pass
    // does not.
    let again = ws.kiln(&args);
    assert_eq!(again.status, 1);
    assert!(again.stderr.contains("got 41"), "{}", again.stderr);
    let ran: Vec<String> = again
        .ran()
        .into_iter()
        .filter(|l| l.starts_with("GoTest"))
        .collect();
    assert_eq!(ran.len(), 2, "{ran:?}\n{}", again.stderr);
    assert!(ran.iter().all(|l| !l.contains("/ok]")), "{ran:?}");
}

/// Whether casd answered each GoTest run from its own cache, from a `--json` file.
fn engine_cached(ws: &Workspace) -> Vec<bool> {
    let text = std::fs::read_to_string(ws.path("events.json")).unwrap();
    text.lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|e| e["mnemonic"] == "GoTest" && e["event"] == "action_executed")
        .map(|e| e["ran_on"]["engine_cached"].as_bool().unwrap())
        .collect()
}

/// What the test logged of the time it ran.
fn clock(run: &Run) -> String {
    let line = run.stderr.lines().find(|l| l.contains("now="));
    line.unwrap_or_else(|| panic!("no time logged:\n{}", run.stderr))
        .split("now=")
        .nth(1)
        .unwrap()
        .to_string()
}

/// `kiln test --rerun` runs a test again on the engine: kiln asks with
/// `skip_cache_lookup`, so the engine does not hand back the result it keeps under the
/// same Action digest (which it does when kiln does not insist).
#[test]
fn a_rerun_runs_on_the_engine_not_from_its_cache() {
    let casd = Casd::start();
    let ws = go_workspace()
        .file("clock/clock.go", "package clock\n")
        .file(
            "clock/clock_test.go",
            &test_file(
                "clock",
                &["time"],
                "\tt.Logf(\"now=%d\", time.Now().UnixNano())",
            ),
        )
        .file("BUILD.toml", "[go_test.unit]\n")
        .build();
    let url = casd.url();
    // --json before `--`: what follows it is go test's.
    let verbose = |ws: &Workspace, args: &[&str]| {
        let json = ws.path("events.json").display().to_string();
        let mut all = args.to_vec();
        all.extend(["--json", &json, "--remote-executor", &url, "--", "-v"]);
        ws.kiln(&all)
    };
    let first = verbose(&ws, &["test"]);
    first.assert_ok();
    assert_eq!(engine_cached(&ws), [false], "{}", first.stderr);
    let ran_at = clock(&first);

    // Another checkout whose kiln cache (local, and another casd as its remote cache)
    // is empty: kiln misses, and the engine answers the same Action from its own
    // cache (the same run, the same time).
    let elsewhere = Casd::start();
    let other = ws.copy();
    let run = verbose(&other, &["test", "--remote-cache", &elsewhere.url()]);
    run.assert_ok();
    assert_eq!(engine_cached(&other), [true], "{}", run.stderr);
    assert_eq!(clock(&run), ran_at, "{}", run.stderr);

    // --rerun: the engine runs it again, twice over.
    let again = verbose(&ws, &["test", "--rerun"]);
    again.assert_ok();
    assert_eq!(engine_cached(&ws), [false], "{}", again.stderr);
    assert_eq!(
        test_runs(&ws, "events.json").values().next().unwrap(),
        "remote"
    );
    let second = clock(&again);
    assert_ne!(second, ran_at, "the engine served its cached run");
    let third = verbose(&ws, &["test", "--rerun"]);
    third.assert_ok();
    assert_eq!(engine_cached(&ws), [false], "{}", third.stderr);
    assert_ne!(clock(&third), second);

    // Without --rerun the result kiln now holds is reused: nothing runs.
    let cached = verbose(&ws, &["test"]);
    cached.assert_ok();
    assert!(engine_cached(&ws).is_empty(), "{}", cached.stderr);
    assert_eq!(cached.executed(), 0, "{}", cached.stderr);
}

/// Tests that run the toolchain's `go` run again here, where the toolchain is (a
/// worker's root leaves it out): `intest` from a test, which Go's test log shows, and
/// `inmain` from `TestMain` before `m.Run`, which no log shows: its remote run fails
/// with `exec: "go": executable file not found in $PATH`, and kiln knows `go` from the
/// toolchain on a local sandbox's PATH.
#[test]
fn tests_that_run_go_run_here_with_a_warning_even_from_test_main() {
    let casd = Casd::start();
    let version = "\tout, err := exec.Command(\"go\", \"env\", \"GOVERSION\").CombinedOutput()\n\tif err != nil {\n\t\tlog.Fatalf(\"%v: %s\", err, out)\n\t}";
    let ws = go_workspace()
        .file("inmain/inmain.go", "package inmain\n")
        .file(
            "inmain/inmain_test.go",
            &format!("package inmain\n\nimport (\n\t\"log\"\n\t\"os\"\n\t\"os/exec\"\n\t\"testing\"\n)\n\nfunc TestMain(m *testing.M) {{\n{version}\n\tos.Exit(m.Run())\n}}\n\nfunc TestIt(t *testing.T) {{}}\n"),
        )
        .file("intest/intest.go", "package intest\n")
        .file(
            "intest/intest_test.go",
            &test_file("intest", &["log", "os/exec"], version),
        )
        .file("plain/plain.go", "package plain\n")
        .file("plain/plain_test.go", &test_file("plain", &[], "\t_ = 1"))
        .file("BUILD.toml", "[go_test.unit]\n")
        .build();
    let run = kiln_json(&ws, &["test", "--remote-executor", &casd.url()]);
    run.assert_ok();
    assert_eq!(
        test_runs(&ws, "events.json"),
        remote_and_local(&[
            ("inmain", "local"),
            ("intest", "local"),
            ("plain", "remote")
        ]),
        "{}",
        run.stderr
    );
    let warning = |pkg: &str| {
        run.stderr.lines().any(|l| {
            l.starts_with("kiln: warning: GoTest")
                && l.contains(&format!("example.com/m/{pkg}]"))
                && l.contains("/.kiln/tools/go/bin/go")
                && l.ends_with("running it here")
        })
    };
    assert!(warning("inmain") && warning("intest"), "{}", run.stderr);
    // The remote failure that led there is not shown as the package's: it passed.
    assert!(
        !run.stderr.contains("executable file not found"),
        "{}",
        run.stderr
    );
    assert!(
        !run.stderr.contains("declare it with tools"),
        "{}",
        run.stderr
    );
    assert_eq!(
        verdicts(&run.stderr),
        go_test(&ws, "", &[]),
        "{}",
        run.stderr
    );
}
