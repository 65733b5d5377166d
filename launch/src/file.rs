//! The launch file: what [`crate::run`] starts, as kiln writes it into an input root.
//!
//! NUL-terminated fields (no parser needed beyond splitting; argv and environment
//! strings cannot hold a NUL byte anyway, as exec(2) takes C strings):
//!
//! ```text
//! kiln-launch/1 \0 WORKDIR \0 ROOT_FILE \0 ARGC \0 ARG \0 … \0 ENVC \0 NAME \0 VALUE \0 … \0
//! ```
//!
//! The first field names the format, so a launcher never runs a file of another version;
//! the counts make a file cut short an error, never a process with fewer arguments.

use std::collections::BTreeMap;

/// The file of a remote input root that tells [`crate::run`] what to run.
pub const LAUNCH_FILE: &str = ".kiln/launch";

/// The format's name and version: the file's first field.
const MAGIC: &str = "kiln-launch/1";

/// What [`crate::run`] runs: the parts of an action a remote worker needs, with kiln's
/// placeholders unexpanded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Launch {
    pub argv: Vec<String>,
    pub env: BTreeMap<String, String>,
    /// Relative to the root.
    pub workdir: String,
    /// A root-relative file to write the root's absolute path into before starting the
    /// process ("" for none): for an action whose log names paths as the process saw
    /// them, below wherever the worker put the root.
    pub root_file: String,
}

/// The file of a remote input root that [`crate::run`] writes the root's path into, for
/// an action whose reads are logged ([`Launch::root_file`]).
pub const ROOT_FILE: &str = ".kiln/root";

impl Launch {
    /// Whether the process needs kiln itself in its root: its argv or environment names
    /// `{kiln}` (a helper such as `kiln go-test-exec`).
    pub fn needs_kiln(&self) -> bool {
        self.argv
            .iter()
            .chain(self.env.values())
            .any(|s| s.contains("{kiln}"))
    }

    /// The file's bytes; an error names a string holding a NUL byte, which no process can
    /// be given.
    pub fn encode(&self) -> Result<Vec<u8>, String> {
        let mut fields: Vec<&str> = vec![MAGIC, &self.workdir, &self.root_file];
        let argc = self.argv.len().to_string();
        fields.push(&argc);
        fields.extend(self.argv.iter().map(String::as_str));
        let envc = self.env.len().to_string();
        fields.push(&envc);
        for (name, value) in &self.env {
            fields.extend([name.as_str(), value.as_str()]);
        }
        let mut out = Vec::new();
        for field in fields {
            if field.contains('\0') {
                return Err(format!("`{}` holds a NUL byte", field.escape_debug()));
            }
            out.extend_from_slice(field.as_bytes());
            out.push(0);
        }
        Ok(out)
    }

    /// Reads the file's bytes.
    pub fn decode(bytes: &[u8]) -> Result<Launch, String> {
        let Some(body) = bytes.strip_suffix(b"\0") else {
            return Err("not a launch file (it does not end in a NUL byte)".into());
        };
        let mut fields = body
            .split(|&b| b == 0)
            .map(|f| std::str::from_utf8(f).map_err(|_| "a field is not UTF-8".to_string()));
        let mut next = |what: &str| {
            fields
                .next()
                .unwrap_or_else(|| Err(format!("the file ends before its {what}")))
        };
        let magic = next("format")?;
        if magic != MAGIC {
            return Err(format!("the format is `{magic}`, not `{MAGIC}`"));
        }
        let workdir = next("working directory")?.to_string();
        let root_file = next("root file")?.to_string();
        let argc = count(next("argument count")?)?;
        let argv = (0..argc)
            .map(|_| next("arguments").map(String::from))
            .collect::<Result<_, _>>()?;
        let envc = count(next("variable count")?)?;
        let mut env = BTreeMap::new();
        for _ in 0..envc {
            let name = next("variables")?.to_string();
            env.insert(name, next("variables")?.to_string());
        }
        if fields.next().is_some() {
            return Err("the file goes on after its last variable".into());
        }
        Ok(Launch {
            argv,
            env,
            workdir,
            root_file,
        })
    }
}

fn count(field: &str) -> Result<usize, String> {
    field
        .parse()
        .map_err(|_| format!("a count `{field}` that is not a number"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Launch {
        Launch {
            argv: vec![
                "/bin/sh".into(),
                "-c".into(),
                "echo \"a b\" > $OUT\n".into(),
                "".into(),
            ],
            env: BTreeMap::from([
                ("OUT".into(), "kiln-out/p/a.txt".into()),
                ("EMPTY".into(), "".into()),
                ("EQ".into(), "a=b=c".into()),
            ]),
            workdir: "p".into(),
            root_file: ROOT_FILE.into(),
        }
    }

    /// Whatever kiln writes reads back the same: spaces, newlines, `=`, empty strings.
    #[test]
    fn a_launch_reads_back_as_written() {
        for launch in [sample(), Launch::default()] {
            let bytes = launch.encode().unwrap();
            assert_eq!(Launch::decode(&bytes).unwrap(), launch);
        }
    }

    /// A string no process could get is refused when writing, not cut short.
    #[test]
    fn a_nul_byte_is_refused() {
        let mut launch = sample();
        launch.argv.push("a\0b".into());
        assert!(launch.encode().unwrap_err().contains("NUL"));
    }

    /// Truncated, foreign or malformed files are errors, never a partial process.
    #[test]
    fn damaged_files_are_refused() {
        let bytes = sample().encode().unwrap();
        for cut in 0..bytes.len() {
            assert!(Launch::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        assert!(Launch::decode(b"kiln-launch/1\0p\0\x000\x000\0").is_ok());
        assert!(Launch::decode(b"kiln-launch/2\0p\0\x000\x000\0").is_err());
        assert!(Launch::decode(b"{\"argv\": []}").is_err());
        assert!(Launch::decode(b"kiln-launch/1\0p\0\0x\x000\0").is_err());
        assert!(Launch::decode(b"kiln-launch/1\0p\0\x000\x001\0NAME\0").is_err());
        assert!(Launch::decode(b"kiln-launch/1\0p\0\x000\x000\0extra\0").is_err());
    }

    #[test]
    fn only_actions_naming_kiln_need_it() {
        assert!(!sample().needs_kiln());
        let mut launch = sample();
        launch.argv = vec!["{kiln}".into(), "go-build-each".into()];
        assert!(launch.needs_kiln());
        let mut launch = sample();
        launch
            .env
            .insert("GOCACHEPROG".into(), "{kiln} gocacheprog".into());
        assert!(launch.needs_kiln());
    }
}
