//! Cheap reads of Go source, without parsing it: whether a file defines `func main`, its
//! `//go:build` line and package clause, and the programs its tests start by name.

use std::path::Path;

/// Whether one of `files` in `dir` declares `func main(` at the start of a line (as
/// gofmt writes every top-level function).
pub fn defines_main(dir: &Path, files: &[String]) -> bool {
    files.iter().any(|f| {
        read(&dir.join(f))
            .lines()
            .any(|l| l.starts_with("func main("))
    })
}

/// The expression of the file's `//go:build` line (before its package clause).
pub fn build_constraint(path: &Path) -> Option<String> {
    header(&read(path))
        .find_map(|l| l.strip_prefix("//go:build "))
        .map(|e| e.trim().to_string())
}

/// The name in the file's package clause.
pub fn package_name(path: &Path) -> Option<String> {
    let text = read(path);
    let clause = text.lines().find(|l| l.starts_with("package "))?;
    let name = clause["package ".len()..].split_whitespace().next()?;
    Some(name.to_string())
}

/// The lines before the package clause.
fn header(text: &str) -> impl Iterator<Item = &str> {
    text.lines().take_while(|l| !l.starts_with("package "))
}

/// Programs started by a literal name in `text`: the first argument of
/// `exec.Command("git", …)`, the second of `exec.CommandContext(ctx, "sh", …)`. Paths
/// (a name with `/`) are not programs found on PATH and are left out.
pub fn started_programs(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    for (i, _) in text.match_indices("exec.Command") {
        let rest = &text[i + "exec.Command".len()..];
        let arg = if let Some(args) = rest.strip_prefix("Context(") {
            after_first_argument(args)
        } else {
            rest.strip_prefix('(')
        };
        names.extend(arg.and_then(string_literal).filter(|n| is_program_name(n)));
    }
    names
}

/// What follows the first argument's comma (parentheses balanced).
fn after_first_argument(args: &str) -> Option<&str> {
    let mut depth = 0;
    for (i, c) in args.char_indices() {
        match c {
            '(' => depth += 1,
            ')' if depth == 0 => return None,
            ')' => depth -= 1,
            ',' if depth == 0 => return Some(&args[i + 1..]),
            _ => {}
        }
    }
    None
}

/// The contents of a `"…"` literal at the start of `text` (after blanks), if it has no
/// escapes.
fn string_literal(text: &str) -> Option<String> {
    let text = text.trim_start().strip_prefix('"')?;
    let end = text.find(['"', '\\', '\n'])?;
    (text[end..].starts_with('"')).then(|| text[..end].to_string())
}

fn is_program_name(name: &str) -> bool {
    !name.is_empty() && !name.contains(['/', ' ', '\t']) && !name.starts_with('-')
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}
