//! Questions kiln asks the host, outside any sandbox and never cached: where a toolchain
//! lives (`go env GOROOT`), and the version-control facts used for stamping.
//!
//! These run with the caller's environment (a `go` on PATH may be a shim that needs it).
//! Their answers enter action keys only as content: a toolchain by the digest of its
//! tree, a stamp by its value.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::error::{Error, ErrorKind, Result};

/// Runs a host command and returns its trimmed stdout.
pub fn output(argv: &[&str], cwd: &Path) -> Result<String> {
    output_env(argv, cwd, &[])
}

/// [`output`] with variables set over the caller's environment.
pub fn output_env(argv: &[&str], cwd: &Path, env: &[(&str, &str)]) -> Result<String> {
    let out = Command::new(argv[0])
        .args(&argv[1..])
        .envs(env.iter().copied())
        .current_dir(cwd)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Error::new(ErrorKind::Config, format!("run `{}`: {e}", argv.join(" "))))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        return Err(Error::new(
            ErrorKind::Config,
            format!("run `{}`: {}", argv.join(" "), stderr.trim()),
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The workspace's stamp values: `[stamp]` entries of kiln.toml, overridden by what git
/// says when the workspace is a git checkout git trusts (see `safe.directory`).
///
/// | name                   | source                                   |
/// |------------------------|------------------------------------------|
/// | `STABLE_GIT_COMMIT`    | `git rev-parse HEAD`                     |
/// | `STABLE_GIT_DESCRIBE`  | `git describe --tags --always --dirty`   |
/// | `STABLE_COMMIT_TIME`   | `git log -1 --format=%ct` (unix seconds) |
/// | `SOURCE_DATE_EPOCH`    | the commit time, else `0`                |
pub fn stamp_values(root: &Path, defaults: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    let mut values = defaults.clone();
    let git = |args: &[&str]| {
        // git's own rule decides whether the repository is trusted (owned by this user,
        // or listed in `safe.directory`): the config of a .git planted by another user
        // above the workspace (`core.fsmonitor`, filters) runs commands.
        let mut argv = vec!["git"];
        argv.extend_from_slice(args);
        output(&argv, root).ok().filter(|s| !s.is_empty())
    };
    if let Some(commit) = git(&["rev-parse", "HEAD"]) {
        values.insert("STABLE_GIT_COMMIT".into(), commit);
        if let Some(d) = git(&["describe", "--tags", "--always", "--dirty"]) {
            values.insert("STABLE_GIT_DESCRIBE".into(), d);
        }
        if let Some(t) = git(&["log", "-1", "--format=%ct"]) {
            values.insert("STABLE_COMMIT_TIME".into(), t.clone());
            values.insert("SOURCE_DATE_EPOCH".into(), t);
        }
    }
    values
        .entry("SOURCE_DATE_EPOCH".into())
        .or_insert_with(|| "0".into());
    values
}

/// Replaces every `{NAME}` in `text` with its stamp value; names the first unknown one.
pub fn substitute(
    text: &str,
    values: &BTreeMap<String, String>,
) -> std::result::Result<String, String> {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find('{') {
        let Some(len) = rest[start..].find('}') else {
            break;
        };
        let name = &rest[start + 1..start + len];
        let value = values.get(name).ok_or_else(|| {
            let from_git = ["STABLE_GIT_COMMIT", "STABLE_GIT_DESCRIBE", "STABLE_COMMIT_TIME"];
            let why = match from_git.contains(&name) {
                true => "; git gave none: this is not a git checkout, or one git does not trust (owned by another user: `git config --global --add safe.directory DIR`); or set it under [stamp] in kiln.toml",
                false => "",
            };
            format!(
                "unknown stamp variable `{name}` (known: {}){why}",
                values.keys().cloned().collect::<Vec<_>>().join(", ")
            )
        })?;
        out.push_str(&rest[..start]);
        out.push_str(value);
        rest = &rest[start + len + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn substitutes_known_names_and_names_unknown_ones() {
        let values = BTreeMap::from([("V".to_string(), "1.2".to_string())]);
        assert_eq!(substitute("v{V}-x", &values).unwrap(), "v1.2-x");
        assert!(substitute("{NOPE}", &values)
            .unwrap_err()
            .contains("`NOPE`"));
        let err = substitute("{STABLE_GIT_COMMIT}", &values).unwrap_err();
        assert!(err.contains("safe.directory"), "{err}");
    }
}
