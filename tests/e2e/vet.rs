//! go_vet with the real `go vet`: findings relative to the workspace failing the build,
//! one cached action per package, analyzer flags, and a vet tool built from the module.

use crate::support::{go_root, workspace, Builder};

const BAD: &str =
    "package bad\n\nimport \"fmt\"\n\nfunc Show(x string) { fmt.Printf(\"%d\\n\", x) }\n";
const FIXED: &str =
    "package bad\n\nimport \"fmt\"\n\nfunc Show(x string) { fmt.Printf(\"%s\\n\", x) }\n";

/// A module in `svc/` (so paths relative to the module and to the workspace differ):
/// `good` is clean, `bad` has a printf finding.
fn module(build: &str) -> Builder {
    workspace()
        .file(
            "kiln.toml",
            &format!("[workspace]\nname = \"vet\"\n\n[go]\nroot = \"{}\"\n", go_root()),
        )
        .file("svc/go.mod", "module example.com/svc\n\ngo 1.23\n")
        .file("svc/good/good.go", "package good\n\nfunc Two() int { return 2 }\n")
        .file(
            "svc/good/good_test.go",
            "package good\n\nimport \"testing\"\n\nfunc TestTwo(t *testing.T) {\n\tif Two() != 2 {\n\t\tt.Fatal(\"bad\")\n\t}\n}\n",
        )
        .file("svc/bad/bad.go", BAD)
        .file("svc/BUILD.toml", build)
}

fn vetted(run: &crate::support::Run) -> Vec<String> {
    run.ran()
        .into_iter()
        .filter(|l| l.starts_with("GoVet "))
        .collect()
}

#[test]
fn vet_findings_fail_the_build_relative_to_the_workspace_and_each_package_is_cached() {
    let ws = module("[go_vet.vet]\npackages = [\"./...\"]\n").build();
    let run = ws.kiln(&["test"]);
    assert_eq!(run.status, 1, "{}", run.stderr);
    assert!(
        run.stderr.contains("go vet found 1 problem in //svc:vet"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains(
            "svc/bad/bad.go:5:35: fmt.Printf format %d has arg x of wrong type string (printf)"
        ),
        "{}",
        run.stderr
    );
    assert_eq!(vetted(&run).len(), 2, "{}", run.stderr);
    // The findings are cached: the report fails again, no package is vetted again.
    let again = ws.kiln(&["test"]);
    assert_eq!(again.status, 1, "{}", again.stderr);
    assert!(vetted(&again).is_empty(), "{}", again.stderr);
    assert!(
        again.stderr.contains("svc/bad/bad.go:5:35"),
        "{}",
        again.stderr
    );
    // Fixing `bad` vets `bad` alone, and passes.
    ws.write("svc/bad/bad.go", FIXED);
    let fixed = ws.kiln(&["test"]);
    fixed.assert_ok();
    assert_eq!(vetted(&fixed), ["GoVet //svc:vet [example.com/svc/bad]"]);
    let clean = ws.kiln(&["test"]);
    clean.assert_ok();
    assert_eq!(clean.executed(), 0, "{}", clean.stderr);
}

#[test]
fn analyzer_flags_turn_checks_off_and_bad_flags_are_named() {
    let ws = module("[go_vet.vet]\nflags = [\"-printf=false\"]\n").build();
    ws.kiln(&["test"]).assert_ok();

    let ws = module("[go_vet.vet]\nflags = [\"printf\"]\n").build();
    let run = ws.kiln(&["test"]);
    assert_eq!(run.status, 2, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("BUILD.toml:2:10: `printf` is not a go vet flag kiln passes on"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("hint"), "{}", run.stderr);

    // A build flag (go vet takes them) would run a program of the repository in an
    // action that can write Go's compile cache; Go reads `--name` as `-name`.
    for flag in [
        "-toolexec=/bin/sh",
        "--toolexec=/bin/sh",
        "--vettool=/bin/sh",
        "-toolexec",
    ] {
        let ws = module(&format!("[go_vet.vet]\nflags = [{flag:?}]\n")).build();
        let run = ws.kiln(&["test"]);
        assert_eq!(run.status, 2, "{flag}: {}", run.stderr);
        let said = format!("BUILD.toml:2:10: `{flag}` is not a go vet flag kiln passes on");
        assert!(run.stderr.contains(&said), "{}", run.stderr);
    }
}

/// What the vet tool below puts into Go's compile cache, under this action ID.
const PLANTED: &str = "kiln e2e: planted by a vet tool";

#[test]
fn a_vet_tool_reads_go_s_compile_cache_but_puts_nothing_into_it() {
    // A vet tool is the repository's code. With the token of the build's Go cache
    // server it could put any compiled package (the standard library's `fmt`, say) into
    // the store every workspace of the machine builds from; without any cache, every
    // vet action compiled what it imports (about 25 s a package). It gets a view: it
    // reads, and what it puts stays its own. The tool puts an entry as a go command
    // would, through GOCACHEPROG, and checks that it was answered.
    // (Reporting only on the packages vetted, not on those it gives facts for, as tools
    // built on unitchecker do.)
    let plant = format!(
        "\tif cfgPath != \"\" {{\n\t\tplant({PLANTED:?})\n\t}}\n\tdata, err := os.ReadFile(cfgPath)"
    );
    let tool = include_str!("fixtures/todovet/main.go")
        .replacen(
            "VetxOutput string",
            "VetxOutput string\n\tVetxOnly   bool",
            1,
        )
        .replacen(
            "if len(found) > 0 {",
            "if len(found) > 0 && !cfg.VetxOnly {",
            1,
        )
        .replacen("\tdata, err := os.ReadFile(cfgPath)", &plant, 1)
        .replacen(
            "import (",
            "import (\n\t\"encoding/base64\"\n\t\"os/exec\"",
            1,
        )
        + PLANT_GO;
    let ws = module("[go_vet.vet]\npackages = [\"./good\"]\nvettool = \"./tools/plantvet\"\n")
        .file("svc/tools/plantvet/main.go", &tool)
        .build();
    let run = ws.kiln(&["test"]);
    run.assert_ok();
    let mut id = b"gocache\0".to_vec();
    id.extend_from_slice(PLANTED.as_bytes());
    let key = kiln_cache::Digest::of_bytes(&id);
    for store in [crate::support::shared_go_cache(), ws.cache.clone()] {
        let Ok(store) = kiln_cache::LocalStore::open(&store) else {
            continue;
        };
        use kiln_cache::Store;
        assert!(
            store.get_action(&key).unwrap().is_none(),
            "the vet tool's entry reached {}",
            store.root().display()
        );
    }
}

/// The put of the vet tool above: one request through `$GOCACHEPROG`, which must be
/// answered with a `DiskPath` (or the tool fails, and with it the build).
const PLANT_GO: &str = r#"
func plant(action string) {
	prog := strings.Fields(os.Getenv("GOCACHEPROG"))
	if len(prog) == 0 {
		fmt.Fprintln(os.Stderr, "vet tool: no GOCACHEPROG")
		os.Exit(3)
	}
	id := base64.StdEncoding.EncodeToString([]byte(action))
	cmd := exec.Command(prog[0], prog[1:]...)
	cmd.Stdin = strings.NewReader(`{"ID":1,"Command":"put","ActionID":"` + id + `","OutputID":"` + id + `","BodySize":5}` + "\n\"cGxhbnQ=\"\n" + `{"ID":2,"Command":"close"}` + "\n")
	out, err := cmd.Output()
	if err != nil || !strings.Contains(string(out), `"ID":1,"DiskPath"`) {
		fmt.Fprintf(os.Stderr, "vet tool: put not answered: %v %s\n", err, out)
		os.Exit(3)
	}
}
"#;

#[test]
fn a_vet_tool_built_from_the_module_reports_its_findings() {
    let build = "[go_vet.vet]\npackages = [\"./good\", \"./bad\"]\nvettool = \"./tools/todovet\"\n";
    let ws = module(build)
        .file("svc/bad/bad.go", FIXED)
        .file(
            "svc/good/good.go",
            "package good\n\n// TODO: three\nfunc Two() int { return 2 }\n",
        )
        .file(
            "svc/tools/todovet/main.go",
            include_str!("fixtures/todovet/main.go"),
        )
        .build();
    let run = ws.kiln(&["test"]);
    assert_eq!(run.status, 1, "{}", run.stderr);
    assert!(
        run.ran().contains(&"GoVetTool //svc:vet".to_string()),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains("svc/good/good.go:3:4: TODO left in the code (todo)"),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("bad.go"), "{}", run.stderr);

    let ws = module("[go_vet.vet]\nvettool = \"./good\"\n").build();
    let run = ws.kiln(&["test"]);
    assert_eq!(run.status, 2, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("`./good` is not a main package of module example.com/svc"),
        "{}",
        run.stderr
    );
}
