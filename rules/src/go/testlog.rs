//! Go's test log (`-test.testlogfile`): what a test binary read, as the go command's
//! own test cache records it. The first line is `# test log`; then one entry a line:
//! `open NAME`, `stat NAME`, `chdir DIR` (absolute) or `getenv NAME`. A log that does
//! not end with a newline was cut short (the binary died before it closed it).

use kiln_engine::action::{LogEntry, ReadLog};

const MAGIC: &str = "# test log\n";

pub struct TestLog;

impl ReadLog for TestLog {
    fn entries(&self, log: &[u8]) -> Result<Vec<LogEntry>, String> {
        let text = std::str::from_utf8(log).map_err(|_| "the test log is not UTF-8")?;
        let body = text
            .strip_prefix(MAGIC)
            .ok_or("the test log has no header")?;
        if !body.is_empty() && !body.ends_with('\n') {
            return Err("the test log was cut short".into());
        }
        body.lines()
            .filter(|l| !l.is_empty())
            .map(|line| {
                let (op, name) = line
                    .split_once(' ')
                    .ok_or_else(|| format!("bad test log line `{line}`"))?;
                let name = name.to_string();
                Ok(match op {
                    "open" => LogEntry::Open(name),
                    "stat" => LogEntry::Stat(name),
                    "chdir" => LogEntry::Chdir(name),
                    "getenv" => LogEntry::Getenv(name),
                    _ => return Err(format!("bad test log line `{line}`")),
                })
            })
            .collect()
    }

    /// `output`: test2json's events (and any other lines).
    fn not_found(&self, output: &[u8]) -> Vec<String> {
        let report = super::output::parse(output);
        super::output::not_found(&format!("{}{}", report.log, report.other))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_go_writes() {
        let log = "# test log\nopen /kiln/ws/m/data.json\ngetenv USER\nstat a\nchdir /x\n";
        assert_eq!(
            TestLog.entries(log.as_bytes()).unwrap(),
            vec![
                LogEntry::Open("/kiln/ws/m/data.json".into()),
                LogEntry::Getenv("USER".into()),
                LogEntry::Stat("a".into()),
                LogEntry::Chdir("/x".into()),
            ]
        );
        assert_eq!(TestLog.entries(MAGIC.as_bytes()).unwrap(), vec![]);
    }

    #[test]
    fn finds_the_programs_a_run_could_not_start_in_its_events() {
        let events = concat!(
            r#"{"Action":"start","Package":"m/p"}"#,
            "\n",
            r#"{"Action":"output","Package":"m/p","Output":"main.go:1: exec: \"go\": executable file not found in $PATH\n"}"#,
            "\n",
            r#"{"Action":"fail","Package":"m/p","Elapsed":0.01}"#,
            "\n",
        );
        assert_eq!(TestLog.not_found(events.as_bytes()), ["go"]);
        assert!(TestLog
            .not_found(b"exec: \"git\": not allowed\n")
            .is_empty());
    }

    #[test]
    fn refuses_logs_that_are_missing_or_cut_short() {
        assert!(TestLog.entries(b"").is_err());
        assert!(TestLog.entries(b"# test log\nopen /a\nstat /b").is_err());
        assert!(TestLog.entries(b"# test log\nwrite /a\n").is_err());
    }
}
