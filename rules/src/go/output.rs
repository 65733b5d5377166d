//! Reading `go test -json` output back: the lines a user sees (as plain `go test` prints
//! them) and JUnit XML for CI systems.
//!
//! A passing package shows its `ok` line, or `ok  <pkg>  (cached)` when replayed from the
//! cache; a package without test files `?  <pkg>  [no test files]`; a failing one what
//! `go test` shows of it: its output outside tests and each failed test's `--- FAIL`
//! line and output (everything with `-v`), then `FAIL  <pkg>  <time>`. A package that
//! passed only on a retry (see `flaky_attempts`) is marked
//! `(flaky: passed on attempt N)`. A test that failed to start a program that is not a
//! declared tool gets a hint naming it.
//!
//! [`Split`] cuts the output of one `go test -json` run over several packages into each
//! package's own, as if it had run alone: its events, and for a package whose build
//! failed, the compiler's output for the package that failed to build.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::path::Path;

use kiln_engine::action::{BatchSplit, MemberOutput, NamedOutput};
use kiln_engine::executor::Failure;
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Event {
    action: String,
    #[serde(default)]
    package: String,
    #[serde(default)]
    test: Option<String>,
    #[serde(default)]
    output: Option<String>,
    #[serde(default)]
    elapsed: Option<f64>,
    #[serde(default)]
    attempt: Option<u32>,
    #[serde(default)]
    time: Option<String>,
}

/// One test function's outcome (of the last attempt).
#[derive(Debug, Clone, PartialEq)]
pub struct TestCase {
    pub name: String,
    pub status: String,
    pub elapsed: f64,
    pub output: String,
}

/// One package's outcome.
#[derive(Debug, Clone, Default)]
pub struct PackageReport {
    pub package: String,
    pub passed: bool,
    /// Go said `[no test files]` (or, with `-cover`, reported the package's 0.0%).
    pub no_tests: bool,
    /// The binary's `coverage: …% of statements` line, without its newline.
    pub coverage: Option<String>,
    /// The binary said `testing: warning: no tests to run` (none matched `-run`, or
    /// the package has only benchmarks or examples without output).
    pub no_tests_to_run: bool,
    pub elapsed: f64,
    pub tests: Vec<TestCase>,
    /// Every output line of the last attempt, as plain `go test -v` prints them.
    pub log: String,
    /// Each output line of the last attempt with the test it belongs to.
    lines: Vec<(Option<String>, String)>,
    /// The attempt that passed, if it was not the first.
    pub flaky_attempt: Option<u32>,
    /// Lines that were not test2json events (build errors, say).
    pub other: String,
    /// The first and last event times (RFC 3339), for runs that report no elapsed time.
    times: (Option<String>, Option<String>),
}

/// How much of a failed GoTest's whole output [`failed_stdout`] reads into memory:
/// beyond it, only the events its report needs ([`failed_events`]).
pub const WHOLE_OUTPUT: u64 = 256 << 20;

/// What a failed GoTest printed, for its report (terminal, JUnit, `--json`): the end
/// kiln keeps to show, or, when that was cut, all of it, read back from the log kept in
/// the cache; beyond [`WHOLE_OUTPUT`], the events of the package itself and of the tests
/// that failed ([`failed_events`]), so that their `--- FAIL` lines and messages still
/// show (the report of such a run lists only the tests that failed). A Go test's
/// `--- FAIL` lines come before the output of the tests that ran after it, so the end
/// alone may not hold them.
pub fn failed_stdout(f: &Failure) -> Cow<'_, [u8]> {
    let whole = f.stdout_log.as_ref().and_then(|log| {
        let meta = std::fs::symlink_metadata(log)
            .ok()
            .filter(|m| m.is_file())?;
        match meta.len() <= WHOLE_OUTPUT {
            true => std::fs::read(log).ok(),
            false => failed_events(log, WHOLE_OUTPUT as usize).ok(),
        }
    });
    whole.map_or(Cow::Borrowed(&f.stdout), Cow::Owned)
}

/// The lines of `go test -json` output in `log` that a failed package's report needs:
/// every event of the package itself (no test) and those of the tests that failed (or
/// were still running when the binary ended: a panic, a timeout), with output kept up
/// to `limit` bytes in all. Two passes over the file (the first, over every event but
/// output, finds those tests), never all of it in memory.
fn failed_events(log: &Path, limit: usize) -> std::io::Result<Vec<u8>> {
    use std::io::BufRead;
    #[derive(Deserialize)]
    struct Line {
        #[serde(rename = "Action")]
        action: String,
        #[serde(rename = "Test", default)]
        test: Option<String>,
    }
    let each_line = |each: &mut dyn FnMut(&[u8])| -> std::io::Result<()> {
        let mut reader = std::io::BufReader::new(std::fs::File::open(log)?);
        let mut line = Vec::new();
        loop {
            line.clear();
            if reader.read_until(b'\n', &mut line)? == 0 {
                return Ok(());
            }
            each(&line);
        }
    };
    const OUTPUT: &[u8] = b"\"Action\":\"output\"";
    // Tests that failed, and those that started and have not ended (yet).
    let (mut failed, mut running) = (HashSet::new(), HashSet::new());
    each_line(&mut |line| {
        if line.windows(OUTPUT.len()).any(|w| w == OUTPUT) {
            return;
        }
        if let Ok(Line {
            action,
            test: Some(test),
        }) = serde_json::from_slice(line)
        {
            match action.as_str() {
                "run" => {
                    running.insert(test);
                }
                "fail" => {
                    failed.insert(test);
                }
                "pass" | "skip" => {
                    running.remove(&test);
                }
                _ => {}
            }
        }
    })?;
    failed.extend(running);
    let mut kept = Vec::new();
    each_line(&mut |line| {
        let keep = match serde_json::from_slice::<Line>(line) {
            Ok(ev) => {
                let theirs = ev.test.as_ref().is_none_or(|t| failed.contains(t));
                theirs && (ev.action != "output" || kept.len() < limit)
            }
            Err(_) => kept.len() < limit,
        };
        if keep {
            kept.extend_from_slice(line);
        }
    })?;
    Ok(kept)
}

/// Parses the stdout of a GoTest or GoTestBuild action.
pub fn parse(stdout: &[u8]) -> PackageReport {
    let mut report = PackageReport::default();
    // Where each test is in `report.tests` (a package may have tens of thousands).
    let mut index: HashMap<String, usize> = HashMap::new();
    for line in String::from_utf8_lossy(stdout).lines() {
        let Ok(ev) = serde_json::from_str::<Event>(line) else {
            report.other.push_str(line);
            report.other.push('\n');
            continue;
        };
        if let Some(t) = &ev.time {
            report.times.0.get_or_insert_with(|| t.clone());
            report.times.1 = Some(t.clone());
        }
        match (ev.action.as_str(), &ev.test) {
            ("start", None) => {
                // A new attempt starts: forget the previous one.
                let flaky = report.flaky_attempt;
                index.clear();
                report = PackageReport {
                    package: ev.package,
                    flaky_attempt: flaky,
                    times: (ev.time.clone(), ev.time),
                    ..PackageReport::default()
                };
            }
            ("kiln-flaky", _) => report.flaky_attempt = ev.attempt,
            ("build-output", _) => report.other.push_str(&ev.output.unwrap_or_default()),
            ("output", test) => {
                let out = ev.output.unwrap_or_default();
                if let Some(&i) = test.as_ref().and_then(|name| index.get(name)) {
                    report.tests[i].output.push_str(&out);
                }
                report.no_tests |= test.is_none() && out.ends_with("[no test files]\n");
                if test.is_none() {
                    note_coverage(&mut report, &out);
                    report.no_tests_to_run |= out == "testing: warning: no tests to run\n";
                }
                report.log.push_str(&out);
                report.lines.push((test.clone(), out));
            }
            ("run", Some(name)) => {
                index.insert(name.clone(), report.tests.len());
                report.tests.push(TestCase {
                    name: name.clone(),
                    status: "run".into(),
                    elapsed: 0.0,
                    output: String::new(),
                });
            }
            ("pass" | "fail" | "skip", Some(name)) => {
                if let Some(&i) = index.get(name) {
                    let tc = &mut report.tests[i];
                    tc.status = ev.action.clone();
                    tc.elapsed = ev.elapsed.unwrap_or(0.0);
                }
            }
            ("pass" | "fail" | "skip", None) => {
                report.package = ev.package;
                report.passed = ev.action != "fail";
                report.elapsed = ev.elapsed.unwrap_or_else(|| report.span());
            }
            _ => {}
        }
    }
    report
}

impl PackageReport {
    /// Seconds between the first and the last event.
    fn span(&self) -> f64 {
        let secs = |t: &Option<String>| t.as_deref().and_then(seconds_of_day);
        match (secs(&self.times.0), secs(&self.times.1)) {
            (Some(a), Some(b)) if b >= a => b - a,
            _ => 0.0,
        }
    }

    /// What plain `go test` shows of a failed package: its output outside tests and,
    /// for each failed test, its `--- FAIL` line, then its output.
    fn failed_output(&self) -> String {
        // A test still running when the binary ended (a panic, a timeout) failed too.
        let failed: HashSet<&str> = self
            .tests
            .iter()
            .filter(|t| matches!(t.status.as_str(), "fail" | "run"))
            .map(|t| t.name.as_str())
            .collect();
        // Each failed test's lines, in order, gathered in one pass.
        let mut lines_of: HashMap<&str, Vec<&str>> = HashMap::new();
        for (test, line) in &self.lines {
            if let Some(name) = test.as_deref().filter(|n| failed.contains(n)) {
                lines_of.entry(name).or_default().push(line);
            }
        }
        let mut out = String::new();
        for (test, line) in &self.lines {
            match test.as_deref() {
                None if !is_frame(line) => out.push_str(line),
                None => {}
                // A failed test shows where it first printed: its `--- FAIL` line,
                // then what it printed.
                Some(name) => {
                    if let Some(lines) = lines_of.remove(name) {
                        let fail = lines
                            .iter()
                            .filter(|l| l.trim_start().starts_with("--- FAIL"));
                        out.extend(fail.copied());
                        let said = lines
                            .iter()
                            .filter(|l| !is_frame(l) && !l.trim_start().starts_with("--- "));
                        out.extend(said.copied());
                    }
                }
            }
        }
        out
    }
}

/// Notes a `coverage: …` line of a test binary, or go's line for a package without
/// test files under `-cover` (`\tpkg\t\tcoverage: 0.0% of statements`).
fn note_coverage(report: &mut PackageReport, line: &str) {
    let line = line.trim_end_matches('\n');
    if line.starts_with("coverage: ") {
        report.coverage = Some(line.to_string());
    } else if let Some((_, cov)) = line.strip_prefix('\t').and_then(|l| l.split_once("\t\t")) {
        if cov.starts_with("coverage: ") {
            report.no_tests = true;
            report.coverage = Some(cov.to_string());
        }
    }
}

/// A line the test framework writes around tests (`=== RUN`, `PASS`, `FAIL`, ...).
fn is_frame(line: &str) -> bool {
    let l = line.trim_start();
    l.starts_with("=== ") || l == "PASS\n" || l == "FAIL\n"
}

/// Seconds since midnight of an RFC 3339 time (enough to subtract two close ones).
fn seconds_of_day(t: &str) -> Option<f64> {
    let clock = t.split_once('T')?.1;
    let clock = clock.trim_end_matches('Z');
    let clock = clock.split(['+', '-']).next()?;
    let mut parts = clock.split(':');
    let h: f64 = parts.next()?.parse().ok()?;
    let m: f64 = parts.next()?.parse().ok()?;
    let s: f64 = parts.next()?.parse().ok()?;
    Some(h * 3600.0 + m * 60.0 + s)
}

/// Splits a `go test -json` run over several packages; members are import paths.
pub struct Split;

/// The fields of a `go test -json` line that say whose it is.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Owner {
    #[serde(default)]
    action: String,
    #[serde(default)]
    package: String,
    #[serde(default)]
    import_path: String,
    #[serde(default)]
    test: Option<String>,
    #[serde(default)]
    failed_build: String,
}

impl BatchSplit for Split {
    fn split(&self, stdout: &[u8], members: &[&str]) -> Vec<Option<MemberOutput>> {
        let mut events: HashMap<String, Vec<u8>> = HashMap::new();
        let mut builds: HashMap<String, Vec<u8>> = HashMap::new();
        let mut verdicts: HashMap<String, (bool, String)> = HashMap::new();
        let mut other = Vec::new();
        for line in stdout.split_inclusive(|b| *b == b'\n') {
            match serde_json::from_slice::<Owner>(line) {
                Ok(o) if !o.package.is_empty() => {
                    if o.test.is_none() && matches!(o.action.as_str(), "pass" | "fail" | "skip") {
                        let verdict = (o.action != "fail", o.failed_build);
                        verdicts.insert(o.package.clone(), verdict);
                    }
                    events.entry(o.package).or_default().extend_from_slice(line);
                }
                Ok(o) if !o.import_path.is_empty() => builds
                    .entry(o.import_path)
                    .or_default()
                    .extend_from_slice(line),
                _ => other.extend_from_slice(line),
            }
        }
        let part = |member: &str| {
            let lines = events.get(member)?;
            let (passed, failed_build) = verdicts.get(member).cloned().unwrap_or_default();
            // After the package's own events, since a "start" event begins a new attempt.
            let mut stdout = lines.clone();
            if !passed {
                stdout.extend_from_slice(&other);
                stdout.extend_from_slice(builds.get(&failed_build).map_or(&[][..], Vec::as_slice));
            }
            let named = named_outputs(lines);
            Some(MemberOutput {
                stdout,
                passed,
                named,
            })
        };
        members.iter().map(|m| part(m)).collect()
    }

    fn retried(&self, failed: &[Vec<u8>], passed: &[u8]) -> Vec<u8> {
        let mut out = failed.concat();
        out.extend_from_slice(passed);
        let attempt = failed.len() + 1;
        out.extend_from_slice(
            format!("{{\"Action\":\"kiln-flaky\",\"Attempt\":{attempt}}}\n").as_bytes(),
        );
        out
    }
}

/// What `kiln go-test-exec` prints when it saves a test binary: `PREFIX PATH DIGEST
/// SIZE`. Go's test cache keeps the line as the "test's" output, so when Go replays it
/// instead of linking the binary again, the line still names the binary.
pub const SAVED_BINARY: &str = "kiln: saved test binary";

/// The test binaries a package's `go test -json` events name (see [`SAVED_BINARY`]).
fn named_outputs(events: &[u8]) -> Vec<NamedOutput> {
    let mut out = Vec::new();
    for line in events.split(|b| *b == b'\n') {
        let Ok(ev) = serde_json::from_slice::<Event>(line) else {
            continue;
        };
        let text = ev.output.unwrap_or_default();
        let Some(rest) = text.trim_end().strip_prefix(SAVED_BINARY) else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if let [path, digest, size] = fields[..] {
            if let (Ok(digest), Ok(size)) = (digest.parse(), size.parse()) {
                out.push(NamedOutput {
                    path: path.to_string(),
                    digest,
                    size,
                    executable: true,
                });
            }
        }
    }
    out
}

/// What the user sees for one package: as `go test` shows it, or as `go test -v` with
/// `verbose`.
pub fn render(report: &PackageReport, cached: bool, verbose: bool) -> String {
    if report.no_tests {
        return match &report.coverage {
            Some(cov) => format!("\t{}\t\t{cov}\n", report.package),
            None => format!("?   \t{}\t[no test files]\n", report.package),
        };
    }
    let mut out = match verbose {
        true => report.log.clone(),
        false => String::new(),
    };
    if !report.passed {
        out = report.other.clone();
        let failed = report.failed_output();
        // Whatever failed outside a test the filter knows of shows in the whole log.
        let whole = verbose || !failed.contains("--- FAIL");
        out.push_str(if whole { &report.log } else { &failed });
        let built = !report.log.contains("[build failed]");
        if built && !report.package.is_empty() {
            if !out.ends_with("FAIL\n") {
                out.push_str("FAIL\n");
            }
            out.push_str(&format!(
                "FAIL\t{}\t{:.3}s\n",
                report.package, report.elapsed
            ));
        }
        out.push_str(&missing_tool_hint(&report.log));
        return out;
    }
    let timing = if cached {
        "(cached)".to_string()
    } else {
        format!("{:.3}s", report.elapsed)
    };
    let flaky = report
        .flaky_attempt
        .map(|n| format!(" (flaky: passed on attempt {n})"))
        .unwrap_or_default();
    let coverage = report
        .coverage
        .as_ref()
        .map(|c| format!("\t{c}"))
        .unwrap_or_default();
    let no_run = match report.no_tests_to_run {
        true => " [no tests to run]",
        false => "",
    };
    out.push_str(&format!(
        "ok  \t{}\t{timing}{coverage}{no_run}{flaky}\n",
        report.package
    ));
    out
}

/// The programs a test could not start, sorted: `exec: "git": executable file not found
/// in $PATH` names `git`.
pub(super) fn not_found(log: &str) -> Vec<String> {
    const NOT_FOUND: &str = "\": executable file not found in $PATH";
    let mut names: Vec<String> = log
        .match_indices(NOT_FOUND)
        .filter_map(|(at, _)| log[..at].rsplit_once("exec: \"").map(|(_, name)| name))
        .filter(|name| !name.contains(['"', '\n']))
        .map(String::from)
        .collect();
    names.sort_unstable();
    names.dedup();
    names
}

/// A hint for a test that could not start a program: `exec: "git": executable file not
/// found in $PATH` means `git` is not a declared tool of the go_test.
fn missing_tool_hint(log: &str) -> String {
    let mut names = not_found(log);
    // The toolchain's are on PATH (a remote run missing them runs again here).
    names.retain(|n| !super::TOOLCHAIN_PROGRAMS.contains(&n.as_str()));
    if names.is_empty() {
        return String::new();
    }
    let list: Vec<String> = names.iter().map(|n| format!("\"{n}\"")).collect();
    format!(
        "kiln: hint: a test ran {}, which the sandbox does not have: declare it with tools = [{}] on the go_test target\n",
        names.join(", "),
        list.join(", ")
    )
}

/// JUnit XML over several packages' reports.
pub fn junit(reports: &[PackageReport]) -> String {
    let mut xml = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites>\n");
    for r in reports {
        let failures = r.tests.iter().filter(|t| t.status == "fail").count();
        let skipped = r.tests.iter().filter(|t| t.status == "skip").count();
        xml.push_str(&format!(
            "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{failures}\" skipped=\"{skipped}\" time=\"{:.3}\">\n",
            escape(&r.package),
            r.tests.len(),
            r.elapsed
        ));
        for t in &r.tests {
            xml.push_str(&format!(
                "    <testcase classname=\"{}\" name=\"{}\" time=\"{:.3}\"",
                escape(&r.package),
                escape(&t.name),
                t.elapsed
            ));
            match t.status.as_str() {
                "fail" => xml.push_str(&format!(
                    "><failure message=\"failed\">{}</failure></testcase>\n",
                    escape(&t.output)
                )),
                "skip" => xml.push_str("><skipped/></testcase>\n"),
                _ => xml.push_str("/>\n"),
            }
        }
        if let Some(n) = r.flaky_attempt {
            xml.push_str(&format!(
                "    <properties><property name=\"flaky\" value=\"passed on attempt {n}\"/></properties>\n"
            ));
        }
        xml.push_str("  </testsuite>\n");
    }
    xml.push_str("</testsuites>\n");
    xml
}

fn escape(s: &str) -> String {
    s.chars()
        .filter(|c| !c.is_control() || *c == '\n' || *c == '\t')
        .map(|c| match c {
            '<' => "&lt;".to_string(),
            '>' => "&gt;".to_string(),
            '&' => "&amp;".to_string(),
            '"' => "&quot;".to_string(),
            c => c.to_string(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASS: &str = r#"{"Action":"start","Package":"ex/a"}
{"Action":"run","Package":"ex/a","Test":"TestX"}
{"Action":"output","Package":"ex/a","Test":"TestX","Output":"=== RUN   TestX\n"}
{"Action":"pass","Package":"ex/a","Test":"TestX","Elapsed":0.01}
{"Action":"output","Package":"ex/a","Output":"ok  \tex/a\t0.011s\n"}
{"Action":"pass","Package":"ex/a","Elapsed":0.011}
"#;

    #[test]
    fn renders_pass_and_cached() {
        let r = parse(PASS.as_bytes());
        assert!(r.passed);
        assert_eq!(render(&r, true, false), "ok  \tex/a\t(cached)\n");
        assert_eq!(render(&r, false, false), "ok  \tex/a\t0.011s\n");
        assert!(junit(&[r]).contains("<testcase classname=\"ex/a\" name=\"TestX\""));
    }

    #[test]
    fn a_run_of_no_test_says_so_as_go_test_does() {
        let out = r#"{"Action":"start","Package":"ex/a"}
{"Action":"output","Package":"ex/a","Output":"testing: warning: no tests to run\n"}
{"Action":"output","Package":"ex/a","Output":"PASS\n"}
{"Action":"pass","Package":"ex/a","Elapsed":0.004}
"#;
        let r = parse(out.as_bytes());
        assert_eq!(
            render(&r, false, false),
            "ok  \tex/a\t0.004s [no tests to run]\n"
        );
        assert_eq!(
            render(&r, true, false),
            "ok  \tex/a\t(cached) [no tests to run]\n"
        );
        assert!(!render(&parse(PASS.as_bytes()), false, false).contains("no tests"));
    }

    /// A failed run whose TestA fails first, then TestB passes printing a thousand lines,
    /// then TestC is still running when the binary times out.
    fn failed_early() -> String {
        let ev = |action: &str, test: &str, output: &str| {
            let test = match test {
                "" => String::new(),
                t => format!(r#","Test":"{t}""#),
            };
            let output = match output {
                "" => String::new(),
                o => format!(r#","Output":{}"#, serde_json::to_string(o).unwrap()),
            };
            format!("{{\"Action\":\"{action}\",\"Package\":\"ex/a\"{test}{output}}}\n")
        };
        let mut log = ev("start", "", "");
        log += &ev("run", "TestA", "");
        log += &ev("output", "TestA", "=== RUN   TestA\n");
        log += &ev("output", "TestA", "    a_test.go:9: the reason\n");
        log += &ev("output", "TestA", "--- FAIL: TestA (0.00s)\n");
        log += &ev("fail", "TestA", "");
        log += &ev("run", "TestB", "");
        for _ in 0..1000 {
            log += &ev("output", "TestB", "    b_test.go:3: chatter\n");
        }
        log += &ev("output", "TestB", "--- PASS: TestB (0.00s)\n");
        log += &ev("pass", "TestB", "");
        log += &ev("run", "TestC", "");
        log += &ev("output", "TestC", "=== RUN   TestC\n");
        log += &ev("output", "TestC", "    c_test.go:5: waiting\n");
        log += &ev("output", "", "panic: test timed out after 1s\n");
        log += &ev("output", "", "FAIL\n");
        log += &ev("fail", "", "");
        log
    }

    #[test]
    fn a_huge_log_keeps_the_failed_tests_and_the_package_s_own_events() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        std::fs::write(&log, failed_early()).unwrap();
        let kept = failed_events(&log, 1 << 20).unwrap();
        assert!(kept.len() < 2000, "{} bytes kept", kept.len());
        let r = parse(&kept);
        assert!(!r.passed);
        let shown = render(&r, false, false);
        assert!(shown.contains("--- FAIL: TestA"), "{shown}");
        assert!(shown.contains("the reason"), "{shown}");
        assert!(!shown.contains("chatter"), "{shown}");
        assert!(
            shown.contains("c_test.go:5: waiting"),
            "a test cut short failed too: {shown}"
        );
        assert!(shown.contains("test timed out"), "{shown}");
        assert!(shown.ends_with("FAIL\tex/a\t0.000s\n"), "{shown}");
        // Output beyond the limit goes; the failed test's events stay.
        let r = parse(&failed_events(&log, 10).unwrap());
        let tests: Vec<(&str, &str)> = r
            .tests
            .iter()
            .map(|t| (t.name.as_str(), t.status.as_str()))
            .collect();
        assert_eq!(tests, [("TestA", "fail"), ("TestC", "run")]);
        assert!(junit(&[r]).contains("name=\"TestA\""));
    }

    /// `go test -json ./a ./b` where b does not compile (from Go 1.27).
    const MIXED: &str = r##"{"ImportPath":"ex/b [ex/b.test]","Action":"build-output","Output":"# ex/b [ex/b.test]\n"}
{"ImportPath":"ex/b [ex/b.test]","Action":"build-output","Output":"b/b.go:4:9: undefined: nope\n"}
{"ImportPath":"ex/b [ex/b.test]","Action":"build-fail"}
{"Action":"start","Package":"ex/a"}
{"Action":"start","Package":"ex/b"}
{"Action":"output","Package":"ex/b","Output":"FAIL\tex/b [build failed]\n"}
{"Action":"fail","Package":"ex/b","Elapsed":0,"FailedBuild":"ex/b [ex/b.test]"}
{"Action":"output","Package":"ex/a","Output":"ok  \tex/a\t0.003s\n"}
{"Action":"pass","Package":"ex/a","Elapsed":0.004}
"##;

    #[test]
    fn a_shared_run_splits_into_each_package_as_if_alone() {
        let parts = Split.split(MIXED.as_bytes(), &["ex/a", "ex/b", "ex/c"]);
        let a = parts[0].as_ref().expect("a ran");
        assert!(a.passed);
        let ra = parse(&a.stdout);
        assert_eq!(render(&ra, false, false), "ok  \tex/a\t0.004s\n");
        let b = parts[1].as_ref().expect("b ran");
        assert!(!b.passed);
        let shown = render(&parse(&b.stdout), false, false);
        assert!(shown.contains("undefined: nope"), "{shown}");
        assert!(shown.contains("FAIL\tex/b [build failed]"), "{shown}");
        assert!(!String::from_utf8_lossy(&b.stdout).contains("ex/a"));
        assert_eq!(parts[2], None, "c is not in the output");
    }

    #[test]
    fn coverage_shows_as_go_test_shows_it() {
        let with = PASS.replace(
            r#"{"Action":"output","Package":"ex/a","Output":"ok"#,
            r#"{"Action":"output","Package":"ex/a","Output":"coverage: 66.7% of statements\n"}
{"Action":"output","Package":"ex/a","Output":"ok"#,
        );
        let r = parse(with.as_bytes());
        assert_eq!(
            render(&r, true, false),
            "ok  \tex/a\t(cached)\tcoverage: 66.7% of statements\n"
        );
        let none = r#"{"Action":"start","Package":"ex/b"}
{"Action":"output","Package":"ex/b","Output":"\tex/b\t\tcoverage: 0.0% of statements\n"}
{"Action":"pass","Package":"ex/b","Elapsed":0.6}
"#;
        let r = parse(none.as_bytes());
        assert_eq!(
            render(&r, false, false),
            "\tex/b\t\tcoverage: 0.0% of statements\n"
        );
    }

    #[test]
    fn a_retried_member_keeps_its_attempts_and_is_flaky() {
        let failing = PASS.replace("\"pass\"", "\"fail\"");
        let out = Split.retried(&[failing.into_bytes()], PASS.as_bytes());
        let r = parse(&out);
        assert!(r.passed);
        assert_eq!(r.flaky_attempt, Some(2));
    }

    #[test]
    fn a_retry_that_passes_is_flaky() {
        let failing = PASS.replace("\"pass\"", "\"fail\"");
        let text = format!("{failing}{PASS}{{\"Action\":\"kiln-flaky\",\"Attempt\":2}}\n");
        let r = parse(text.as_bytes());
        assert!(r.passed);
        assert!(render(&r, false, false).contains("(flaky: passed on attempt 2)"));
    }
}
