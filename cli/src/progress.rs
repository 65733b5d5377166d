//! Build progress: a redrawn status line on a terminal, plain lines otherwise, the
//! failing action's output, and the one summary line every build ends with.

use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::Instant;

use std::sync::Arc;

use kiln_cache::{ActionResult, Store};
use kiln_engine::action::Action;
use kiln_engine::executor::{Failure, Status};
use kiln_engine::scheduler::{Report, Reporter};

pub struct Progress {
    store: Arc<dyn Store>,
    tty: bool,
    /// Test output as `go test -v` shows it.
    verbose: bool,
    started: Instant,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    running: Vec<String>,
    done: usize,
}

impl Progress {
    pub fn new(store: Arc<dyn Store>, verbose: bool) -> Progress {
        Progress {
            store,
            tty: std::io::stderr().is_terminal(),
            verbose,
            started: Instant::now(),
            state: Mutex::new(State::default()),
        }
    }

    fn redraw(&self, state: &State) {
        if !self.tty {
            return;
        }
        let running = state.running.first().cloned().unwrap_or_default();
        let more = state.running.len().saturating_sub(1);
        let more = if more > 0 {
            format!(" (+{more} more)")
        } else {
            String::new()
        };
        let mut err = std::io::stderr().lock();
        let _ = write!(
            err,
            "\r\x1b[K[{} done, {} running {:.1}s] {running}{more}",
            state.done,
            state.running.len(),
            self.started.elapsed().as_secs_f64()
        );
        let _ = err.flush();
    }

    fn clear_line(&self) {
        if self.tty {
            eprint!("\r\x1b[K");
        }
    }

    /// The last line of every build.
    /// `remote`: whether a remote cache is used; `executor`: a remote executor.
    pub fn summary(&self, report: &Report, remote: bool, executor: bool) {
        self.clear_line();
        let cached = if remote {
            format!("{} cached ({} remote)", report.cached, report.remote)
        } else {
            format!("{} cached", report.cached)
        };
        let executed = if executor {
            format!(
                "{} executed ({} remote)",
                report.executed, report.remote_executed
            )
        } else {
            format!("{} executed", report.executed)
        };
        eprintln!(
            "kiln: {} actions: {cached}, {executed}, {} failed in {:.2}s",
            report.total,
            report.failed,
            self.started.elapsed().as_secs_f64()
        );
    }
}

impl Reporter for Progress {
    fn started(&self, action: &Action) {
        let mut state = self.state.lock().unwrap();
        state.running.push(action.describe());
        if self.tty {
            self.redraw(&state);
        } else {
            eprintln!("kiln: {}", action.describe());
        }
    }

    fn finished(
        &self,
        action: &Action,
        status: Status,
        result: Option<&ActionResult>,
        failure: Option<&Failure>,
    ) {
        let mut state = self.state.lock().unwrap();
        let name = action.describe();
        match state.running.iter().position(|r| *r == name) {
            Some(i) => {
                state.running.remove(i);
            }
            // Run during analysis (e.g. `go list`): say so now, as if it had started.
            None if status == Status::Executed && !self.tty => eprintln!("kiln: {name}"),
            None => {}
        }
        state.done += 1;
        if let (Status::Failed, Some(f)) = (status, failure) {
            self.clear_line();
            self.print_failure(action, f);
        } else if let (true, Some(r)) = (action.show_output, result) {
            let stdout = self
                .store
                .read(&r.stdout)
                .ok()
                .flatten()
                .unwrap_or_default();
            self.clear_line();
            eprint!(
                "{}",
                self.render_output(action, &stdout, status == Status::Cached)
            );
        }
        self.redraw(&state);
    }
}

impl Progress {
    /// An action's stdout as the user should see it: `go test` output for Go's test
    /// actions.
    pub fn render_output(&self, action: &Action, stdout: &[u8], cached: bool) -> String {
        use kiln_rules::go::output;
        if matches!(action.mnemonic.as_str(), "GoTest" | "GoTestBuild") {
            return output::render(&output::parse(stdout), cached, self.verbose);
        }
        String::from_utf8_lossy(stdout).into_owned()
    }

    fn print_failure(&self, action: &Action, f: &Failure) {
        let mut err = std::io::stderr().lock();
        let _ = writeln!(err, "kiln: error: {}", f.error);
        let rendered;
        let stdout = if is_go_test(action) {
            rendered = self
                .render_output(action, &kiln_rules::go::output::failed_stdout(f), false)
                .into_bytes();
            &rendered
        } else {
            &f.stdout
        };
        for (name, bytes) in [("stdout", stdout), ("stderr", &f.stderr)] {
            if !bytes.is_empty() {
                let _ = writeln!(err, "--- {name} ---");
                let _ = err.write_all(bytes);
                if !bytes.ends_with(b"\n") {
                    let _ = writeln!(err);
                }
            }
        }
    }
}

fn is_go_test(action: &Action) -> bool {
    matches!(action.mnemonic.as_str(), "GoTest" | "GoTestBuild")
}
