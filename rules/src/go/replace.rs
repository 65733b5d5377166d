//! `replace` directives of go.mod that point at a directory (`replace example.com/lib
//! => ../lib`, or `..`, `.`, a quoted path: whatever go takes for a directory): the
//! replacing module's files are inputs of every Go action of the
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

/// The directory replacements of go.mod's text: a target without a version that go
/// takes for a directory ([`is_directory`]), read as go reads the line (its tokens, a
/// quoted one unquoted).
pub fn local_replaces(go_mod: &str) -> Vec<LocalReplace> {
    let mut out = Vec::new();
    let mut in_block = false;
    for (i, raw) in go_mod.lines().enumerate() {
        let tokens = tokens(raw);
        let spec = match tokens.split_first() {
            Some((first, rest)) if !in_block && first == "replace" => {
                if rest.first().is_some_and(|t| t == "(") {
                    in_block = true;
                    continue;
                }
                rest
            }
            Some((first, [])) if in_block && first == ")" => {
                in_block = false;
                continue;
            }
            _ if in_block => &tokens[..],
            _ => continue,
        };
        let Some(arrow) = spec.iter().position(|t| t == "=>") else {
            continue;
        };
        let [target] = &spec[arrow + 1..] else {
            continue;
        };
        let Some(dir) = unquote(target) else {
            // go refuses the line (a bad escape, a stray quote): no build reads it.
            continue;
        };
        if is_directory(&dir) {
            out.push(LocalReplace { line: i + 1, dir });
        }
    }
    out
}

/// Whether go takes a replacement without a version for a directory rather than a
/// module path (`modfile.IsDirectoryPath`, which knows Unix and Windows paths alike).
fn is_directory(path: &str) -> bool {
    let b = path.as_bytes();
    path == "."
        || path == ".."
        || ["./", ".\\", "../", "..\\", "/", "\\"]
            .iter()
            .any(|p| path.starts_with(p))
        || (b.len() >= 2 && b[0].is_ascii_alphabetic() && b[1] == b':')
}

/// The tokens of one go.mod line, as go's lexer makes them: blank-separated words that
/// stop at a `//` comment and at punctuation (itself a token), and `"…"` strings kept
/// with their quotes.
fn tokens(line: &str) -> Vec<String> {
    const PUNCT: &[char] = &['(', ')', '[', ']', '{', '}', ','];
    let mut out = Vec::new();
    let mut rest = line;
    loop {
        rest = rest.trim_start_matches([' ', '\t', '\r']);
        let Some(c) = rest.chars().next() else {
            return out;
        };
        if rest.starts_with("//") {
            return out;
        }
        let len = if PUNCT.contains(&c) {
            1
        } else if c == '"' || c == '`' {
            string_len(rest)
        } else {
            rest.find(|c: char| c.is_whitespace() || PUNCT.contains(&c))
                .into_iter()
                .chain(rest.find("//"))
                .min()
                .unwrap_or(rest.len())
        };
        out.push(rest[..len].to_string());
        rest = &rest[len..];
    }
}

/// The length of the quoted string `s` starts with (all of `s` if it does not end).
fn string_len(s: &str) -> usize {
    let quote = s.as_bytes()[0];
    let mut i = 1;
    while let Some(&b) = s.as_bytes().get(i) {
        i += 1;
        if b == quote {
            return i;
        }
        if b == b'\\' && quote == b'"' {
            i += 1;
        }
    }
    s.len()
}

/// A token's text as go reads it (`modfile.parseString`): a `"…"` string unquoted as
/// Go unquotes it, any other token as it is. None where go fails: a bad string, or a
/// quote in a token that is not a `"…"` string.
fn unquote(token: &str) -> Option<String> {
    let Some(body) = token.strip_prefix('"') else {
        return (!token.contains(['"', '\'', '`'])).then(|| token.to_string());
    };
    let body = body.strip_suffix('"')?;
    let mut out = Vec::new();
    let mut chars = body.chars();
    while let Some(c) = chars.next() {
        if c == '"' {
            return None;
        }
        if c != '\\' {
            out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
            continue;
        }
        let escaped = chars.next()?;
        let simple = match escaped {
            'a' => Some(b'\x07'),
            'b' => Some(b'\x08'),
            'f' => Some(b'\x0c'),
            'n' => Some(b'\n'),
            'r' => Some(b'\r'),
            't' => Some(b'\t'),
            'v' => Some(b'\x0b'),
            '\\' => Some(b'\\'),
            '"' => Some(b'"'),
            _ => None,
        };
        if let Some(b) = simple {
            out.push(b);
            continue;
        }
        let (digits, radix) = match escaped {
            'x' => (2, 16),
            'u' => (4, 16),
            'U' => (8, 16),
            '0'..='7' => (2, 8),
            _ => return None,
        };
        let mut text: String = (&mut chars).take(digits).collect();
        if radix == 8 {
            text.insert(0, escaped);
        }
        if text.len() != digits + usize::from(radix == 8) {
            return None;
        }
        let n = u32::from_str_radix(&text, radix).ok()?;
        match escaped {
            'u' | 'U' => {
                out.extend_from_slice(char::from_u32(n)?.encode_utf8(&mut [0; 4]).as_bytes())
            }
            _ => out.push(u8::try_from(n).ok()?),
        }
    }
    String::from_utf8(out).ok()
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
    if r.dir.contains('\\') {
        return Err(refused("a Windows path, which go takes on Windows only"));
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

    /// go takes `.` and `..` for directories too, and reads a quoted target unquoted:
    /// each is found, so that one outside the workspace is refused.
    #[test]
    fn every_target_go_takes_for_a_directory_is_found() {
        let text = "module m\n\
            replace example.com/a => ..\n\
            replace example.com/b => .\n\
            replace example.com/c => ../c//comment\n\
            replace(\n\
            \texample.com/d => \"\\x2e\\x2e\"\n\
            \texample.com/e => \"/abs e\" // one token\n\
            )\n\
            replace example.com/f => C:\\f\n\
            replace example.com/g => ..\\g\n\
            replace example.com/h => example.com/h v1.0.0\n\
            replace example.com/i => \"..\\q\"\n\
            replace example.com/j => ..'\n\
            replace example.com/k => example.com/..\n";
        let found = local_replaces(text);
        let dirs: Vec<(usize, &str)> = found.iter().map(|r| (r.line, r.dir.as_str())).collect();
        assert_eq!(
            dirs,
            [
                (2, ".."),
                (3, "."),
                (4, "../c"),
                (6, ".."),
                (7, "/abs e"),
                (9, "C:\\f"),
                (10, "..\\g")
            ]
        );
    }

    #[test]
    fn quoted_strings_unquote_as_go_unquotes_them() {
        assert_eq!(unquote("../x").as_deref(), Some("../x"));
        assert_eq!(unquote(r#""\x2f\145tc""#).as_deref(), Some("/etc"));
        assert_eq!(unquote(r#""\u00e9\t\"""#).as_deref(), Some("\u{e9}\t\""));
        for bad in [
            r#""\q""#,
            r#""\x2""#,
            r#""\400""#,
            r#""a"b""#,
            "\"open",
            "it's",
            "`raw`",
        ] {
            assert_eq!(unquote(bad), None, "{bad}");
        }
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
        let err = resolve("", Path::new("go.mod"), &at("..")).unwrap_err();
        assert!(
            err.message
                .contains("go.mod:5: replace with ..: a directory outside the workspace"),
            "{}",
            err.message
        );
        assert_eq!(resolve("exp", go_mod, &at("..")).unwrap(), "");
        assert_eq!(resolve("exp", go_mod, &at(".")).unwrap(), "exp");
        let err = resolve("exp", go_mod, &at("..\\x")).unwrap_err();
        assert!(err.message.contains("a Windows path"), "{}", err.message);
    }
}
