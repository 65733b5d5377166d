//! `kiln test -- ARGS`: go test's test flags, as the test binary takes them.
//!
//! `-run X`, `-short`, `-count 2` … become `-test.run=X`, `-test.short`, `-test.count=2`
//! for every test binary (they enter the run's key, so a result with other flags is
//! another result); `-v` only changes what is shown (every run records its whole
//! output); `-timeout` replaces the target's. Anything after `-args` goes to the
//! binaries as it is.

/// go test's flags that the test binary takes as `-test.NAME`: name, and whether it
/// takes a value.
const FLAGS: &[(&str, bool)] = &[
    ("run", true),
    ("skip", true),
    ("short", false),
    ("v", false),
    ("count", true),
    ("cpu", true),
    ("parallel", true),
    ("failfast", false),
    ("timeout", true),
    ("bench", true),
    ("benchtime", true),
    ("benchmem", false),
    ("shuffle", true),
    ("list", true),
    ("fullpath", false),
];

/// The command line's test arguments, sorted out.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TestArgs {
    /// What every test binary gets, in order.
    pub binary: Vec<String>,
    pub verbose: bool,
    pub timeout: Option<String>,
}

impl TestArgs {
    pub fn parse(args: &[String]) -> Result<TestArgs, String> {
        let mut out = TestArgs::default();
        let mut rest = args.iter();
        while let Some(arg) = rest.next() {
            if arg == "-args" || arg == "--args" {
                out.binary.extend(rest.by_ref().cloned());
                break;
            }
            let flag = arg.trim_start_matches('-');
            let (name, inline) = match flag.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (flag, None),
            };
            let name = name.strip_prefix("test.").unwrap_or(name);
            let Some(&(_, takes_value)) = FLAGS.iter().find(|(n, _)| *n == name) else {
                return Err(unknown(arg));
            };
            if !arg.starts_with('-') {
                return Err(unknown(arg));
            }
            let value = match (takes_value, inline) {
                (true, Some(v)) => Some(v),
                (true, None) => Some(
                    rest.next()
                        .cloned()
                        .ok_or(format!("`{arg}` needs a value"))?,
                ),
                (false, v) => v,
            };
            out.add(name, value);
        }
        Ok(out)
    }

    fn add(&mut self, name: &str, value: Option<String>) {
        match (name, value) {
            ("v", v) => self.verbose = v.is_none_or(|v| v != "false"),
            ("timeout", Some(v)) => self.timeout = Some(v),
            (name, Some(v)) => self.binary.push(format!("-test.{name}={v}")),
            (name, None) => self.binary.push(format!("-test.{name}")),
        }
    }
}

fn unknown(arg: &str) -> String {
    let names: Vec<String> = FLAGS.iter().map(|(n, _)| format!("-{n}")).collect();
    format!(
        "`{arg}` is not one of go test's test flags ({}); put a test binary's own flags after -args",
        names.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<TestArgs, String> {
        TestArgs::parse(&args.iter().map(|a| a.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn go_test_flags_become_the_binary_s() {
        let a = parse(&[
            "-run", "TestX", "-short", "-v", "-count=2", "-timeout", "30s",
        ])
        .unwrap();
        assert_eq!(
            a.binary,
            ["-test.run=TestX", "-test.short", "-test.count=2"]
        );
        assert!(a.verbose);
        assert_eq!(a.timeout.as_deref(), Some("30s"));
        let a = parse(&["-test.run=^TestY$", "-args", "-update", "x"]).unwrap();
        assert_eq!(a.binary, ["-test.run=^TestY$", "-update", "x"]);
        assert!(!a.verbose);
    }

    #[test]
    fn unknown_flags_and_missing_values_are_errors() {
        assert!(parse(&["-update"]).unwrap_err().contains("after -args"));
        assert!(parse(&["-run"]).unwrap_err().contains("needs a value"));
        assert!(parse(&["TestX"]).is_err());
    }
}
