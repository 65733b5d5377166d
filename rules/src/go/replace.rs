//! `replace` directives of go.mod that point at a directory (`replace example.com/lib
//! => ../lib`): the replacing module's files are inputs of every Go action of the
//! module, placed at their workspace paths in the sandbox, so `../lib` resolves there
//! as beside go.mod. Go reads only the main module's replacements, so one level is all
//! there is. A directory outside the workspace, or an absolute one, is refused: kiln
//! sees only the workspace's files.

use std::path::{Component, Path};

use kiln_engine::{Error, ErrorKind, Result};

/// One directory replacement: where go.mod says it (1-based line) and the directory as
/// written.
#[derive(Debug, PartialEq, Eq)]
pub struct LocalReplace {
    pub line: usize,
    pub dir: String,
}

/// The directory replacements of go.mod's text (a target without a version that is a
/// path: `./x`, `../x`, `/x`, as go tells paths from module paths).
pub fn local_replaces(go_mod: &str) -> Vec<LocalReplace> {
    let mut out = Vec::new();
    let mut in_block = false;
    for (i, raw) in go_mod.lines().enumerate() {
        let line = raw.split("//").next().unwrap_or_default().trim();
        let spec = if in_block {
            if line == ")" {
                in_block = false;
                continue;
            }
            line
        } else if let Some(rest) = line.strip_prefix("replace") {
            let rest = rest.trim();
            if rest == "(" {
                in_block = true;
                continue;
            }
            rest
        } else {
            continue;
        };
        let Some((_, target)) = spec.split_once("=>") else {
            continue;
        };
        let mut fields = target.split_whitespace();
        let (Some(dir), None) = (fields.next(), fields.next()) else {
            continue;
        };
        let dir = dir.trim_matches('"');
        if dir.starts_with("./") || dir.starts_with("../") || dir.starts_with('/') {
            out.push(LocalReplace {
                line: i + 1,
                dir: dir.to_string(),
            });
        }
    }
    out
}

/// The workspace-relative directory a replacement in the module at `module_dir` names
/// ("" for the workspace root), or an error naming go.mod's line.
pub fn resolve(module_dir: &str, go_mod: &Path, r: &LocalReplace) -> Result<String> {
    let refused = |why: &str| {
        Error::new(
            ErrorKind::Config,
            format!(
                "{}:{}: replace with {}: {why}",
                go_mod.display(),
                r.line,
                r.dir
            ),
        )
        .hint("kiln sees only the workspace's files: replace with a relative path to a module inside it, or vendor the dependency")
    };
    if r.dir.starts_with('/') {
        return Err(refused("an absolute directory"));
    }
    let mut parts: Vec<&str> = module_dir.split('/').filter(|p| !p.is_empty()).collect();
    for c in Path::new(&r.dir).components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                if parts.pop().is_none() {
                    return Err(refused("a directory outside the workspace"));
                }
            }
            Component::Normal(p) => parts.push(p.to_str().unwrap_or_default()),
            _ => return Err(refused("not a plain relative path")),
        }
    }
    Ok(parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directory_replacements_are_found_in_lines_and_blocks() {
        let text = "module m\n\nreplace example.com/a => ../a // local\nreplace example.com/b v1.0.0 => example.com/c v1.1.0\nreplace (\n\texample.com/d v1.2.0 => ./d\n\texample.com/e => /abs/e\n)\n";
        let found = local_replaces(text);
        let dirs: Vec<(usize, &str)> = found.iter().map(|r| (r.line, r.dir.as_str())).collect();
        assert_eq!(dirs, [(3, "../a"), (6, "./d"), (7, "/abs/e")]);
    }

    #[test]
    fn a_replacement_resolves_inside_the_workspace_or_is_refused() {
        let at = |dir: &str| LocalReplace {
            line: 5,
            dir: dir.into(),
        };
        let go_mod = Path::new("exp/go.mod");
        assert_eq!(resolve("exp", go_mod, &at("../")).unwrap(), "");
        assert_eq!(resolve("a/b", go_mod, &at("../c/./d")).unwrap(), "a/c/d");
        let err = resolve("exp", go_mod, &at("../../x")).unwrap_err();
        assert!(
            err.message
                .contains("exp/go.mod:5: replace with ../../x: a directory outside the workspace"),
            "{}",
            err.message
        );
        assert!(resolve("", go_mod, &at("/abs")).is_err());
    }
}
