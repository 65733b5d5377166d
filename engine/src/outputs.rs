//! One output, one writer: every path under `kiln-out/` is written by one action.
//!
//! Two actions writing one path, or one writing inside another's output (a file below a
//! directory output `dir/`, or below a file, which cannot be a directory) would leave
//! `kiln-out/` holding whichever ran last, so its content would depend on the order and
//! on the cache. [`OutputIndex`] catches that as actions are added to the
//! [`crate::action::ActionGraph`], for every rule alike, and [`Problem::error`] names
//! both targets with the place each declared the path.
//!
//! An action that several targets share is added once ([`crate::rule::Analysis::add_shared`],
//! and actions run during analysis with the same key), so it is not an overlap.

use std::collections::BTreeMap;

use crate::action::{Action, ActionGraph, ActionId};
use crate::error::{Error, ErrorKind, Location};
use crate::value::{Table, Value};
use crate::workspace::{Workspace, OUT_DIR};

/// The outputs of every action added so far, by path (without a directory's final `/`).
#[derive(Debug, Default)]
pub struct OutputIndex {
    paths: BTreeMap<String, (ActionId, String)>,
    problem: Option<Problem>,
}

/// An output that breaks the rule of one writer per path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// `path` of `action` is not a path below `kiln-out/`.
    Outside { action: ActionId, path: String },
    /// `path` of `action` is `other_path` of `other` (perhaps the same action), lies
    /// inside it, or holds it.
    Overlap {
        action: ActionId,
        path: String,
        other: ActionId,
        other_path: String,
    },
}

impl OutputIndex {
    /// Adds the outputs of action `id`, noting the first problem found.
    pub fn insert(&mut self, id: ActionId, outputs: &[String]) {
        for path in outputs {
            let Some(key) = key(path) else {
                self.note(Problem::Outside {
                    action: id,
                    path: path.clone(),
                });
                continue;
            };
            if let Some((other, other_path)) = self.conflict(key) {
                self.note(Problem::Overlap {
                    action: id,
                    path: path.clone(),
                    other,
                    other_path,
                });
                continue;
            }
            self.paths.insert(key.to_string(), (id, path.clone()));
        }
    }

    /// The action that writes `path` (a declared output, as declared).
    pub fn writer(&self, path: &str) -> Option<ActionId> {
        self.paths.get(key(path)?).map(|(id, _)| *id)
    }

    /// The first problem noted since the last call.
    pub fn take_problem(&mut self) -> Option<Problem> {
        self.problem.take()
    }

    fn note(&mut self, problem: Problem) {
        self.problem.get_or_insert(problem);
    }

    /// An output that is `key`, holds it (a directory above it), or lies below it.
    fn conflict(&self, key: &str) -> Option<(ActionId, String)> {
        let same_or_above = key
            .match_indices('/')
            .map(|(i, _)| &key[..i])
            .chain([key])
            .find_map(|k| self.paths.get(k));
        let below = || {
            let dir = format!("{key}/");
            let (path, found) = self.paths.range(dir.clone()..).next()?;
            path.starts_with(&dir).then_some(found)
        };
        same_or_above.or_else(below).cloned()
    }
}

/// The path an output is indexed by: below `kiln-out/`, without a directory's final
/// `/`; None for a path that is not plainly below `kiln-out/`.
fn key(path: &str) -> Option<&str> {
    let key = path.strip_suffix('/').unwrap_or(path);
    let rest = key.strip_prefix(OUT_DIR)?.strip_prefix('/')?;
    let plain = rest
        .split('/')
        .all(|c| !c.is_empty() && c != "." && c != ".." && !c.contains('\0'));
    plain.then_some(key)
}

impl Problem {
    /// The error for this problem: both targets named, each with where it declared the
    /// path (or the target itself, for paths a rule derives from the target's name).
    pub fn error(&self, ws: &Workspace, graph: &ActionGraph) -> Error {
        match self {
            Problem::Outside { action, path } => {
                let owner = &graph.actions[*action].owner;
                let message =
                    format!("{owner} would write `{path}`, which is not a path below {OUT_DIR}/");
                located(
                    Error::new(ErrorKind::Config, message),
                    ws,
                    graph,
                    *action,
                    path,
                )
                .hint("outputs are relative paths without `.` or `..` components")
            }
            Problem::Overlap {
                action,
                path,
                other,
                other_path,
            } => {
                let message = overlap_message(ws, graph, (*action, path), (*other, other_path));
                let hint = match action == other {
                    true => "a file cannot also be a directory: rename one of the outputs",
                    false => "every file under kiln-out/ has one target: rename one of the outputs",
                };
                located(
                    Error::new(ErrorKind::Config, message),
                    ws,
                    graph,
                    *action,
                    path,
                )
                .hint(hint)
            }
        }
    }
}

/// What `path` of `action` does to `other_path` of `other`, the writer added before.
fn overlap_message(
    ws: &Workspace,
    graph: &ActionGraph,
    (action, path): (ActionId, &str),
    (other, other_path): (ActionId, &str),
) -> String {
    let owner = &graph.actions[action].owner;
    let (key, other_key) = (trimmed(path), trimmed(other_path));
    if action == other {
        return match key == other_key {
            true => format!("{owner} writes `{path}` twice"),
            false => format!("{owner} writes both `{other_path}` and `{path}`"),
        };
    }
    let other_owner = &graph.actions[other].owner;
    let other_at = match declared_at(ws, &graph.actions[other], other_path) {
        Some(at) => format!(" ({at})"),
        None => String::new(),
    };
    if key == other_key {
        format!("{owner} writes `{path}`, as {other_owner} does{other_at}")
    } else if key.starts_with(other_key) {
        format!(
            "{owner} writes `{path}`, inside `{other_path}`, which {other_owner} writes{other_at}"
        )
    } else {
        format!("{owner} writes `{path}`, which would hold `{other_path}`, written by {other_owner}{other_at}")
    }
}

fn trimmed(path: &str) -> &str {
    path.strip_suffix('/').unwrap_or(path)
}

fn located(err: Error, ws: &Workspace, graph: &ActionGraph, action: ActionId, path: &str) -> Error {
    match declared_at(ws, &graph.actions[action], path) {
        Some(at) => err.at(at),
        None => err,
    }
}

/// Where the target of `action` declared `path`: the attribute string naming it
/// relative to the package (a genrule's `outs`), else the target's table.
fn declared_at(ws: &Workspace, action: &Action, path: &str) -> Option<Location> {
    let target = ws.target(&action.owner)?;
    let package = &action.owner.package;
    let rel = trimmed(path).strip_prefix(OUT_DIR)?.strip_prefix('/');
    let rel = match package.is_empty() {
        true => rel,
        false => rel.and_then(|r| r.strip_prefix(package.as_str())?.strip_prefix('/')),
    };
    let offset = rel
        .and_then(|rel| string_offset(&target.attrs, rel))
        .unwrap_or(target.attrs.span.start);
    Some(target.attrs.location(offset))
}

/// The offset of the first string in `table` (at any depth) that is `rel`.
fn string_offset(table: &Table, rel: &str) -> Option<usize> {
    let mut values: Vec<_> = table.entries.iter().map(|(_, v)| v).collect();
    while let Some(v) = values.pop() {
        match &v.value {
            Value::Str(s) if trimmed(s) == rel => return Some(v.span.start),
            Value::List(items) => values.extend(items.iter().rev()),
            Value::Table(t) => values.extend(t.entries.iter().map(|(_, v)| v)),
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index(actions: &[&[&str]]) -> OutputIndex {
        let mut index = OutputIndex::default();
        for (id, outputs) in actions.iter().enumerate() {
            let outputs: Vec<String> = outputs.iter().map(|s| s.to_string()).collect();
            index.insert(id, &outputs);
        }
        index
    }

    fn overlap(action: ActionId, path: &str, other: ActionId, other_path: &str) -> Problem {
        Problem::Overlap {
            action,
            path: path.into(),
            other,
            other_path: other_path.into(),
        }
    }

    #[test]
    fn distinct_outputs_are_fine() {
        let mut i = index(&[
            &["kiln-out/a", "kiln-out/ab"],
            &["kiln-out/a.d/", "kiln-out/b/c"],
            &["kiln-out/b/cd", "kiln-out/b/c.d/x"],
        ]);
        assert_eq!(i.take_problem(), None);
        assert_eq!(i.writer("kiln-out/a.d/"), Some(1));
        assert_eq!(i.writer("kiln-out/a.d"), Some(1));
        assert_eq!(i.writer("kiln-out/zz"), None);
    }

    #[test]
    fn the_same_path_twice_is_an_overlap() {
        let mut i = index(&[&["kiln-out/x"], &["kiln-out/y", "kiln-out/x"]]);
        assert_eq!(
            i.take_problem(),
            Some(overlap(1, "kiln-out/x", 0, "kiln-out/x"))
        );
        assert_eq!(i.take_problem(), None);
        let mut i = index(&[&["kiln-out/x", "kiln-out/x"]]);
        assert_eq!(
            i.take_problem(),
            Some(overlap(0, "kiln-out/x", 0, "kiln-out/x"))
        );
    }

    #[test]
    fn a_path_inside_another_is_an_overlap_either_way() {
        let mut i = index(&[&["kiln-out/d/"], &["kiln-out/d/e/f"]]);
        assert_eq!(
            i.take_problem(),
            Some(overlap(1, "kiln-out/d/e/f", 0, "kiln-out/d/"))
        );
        let mut i = index(&[&["kiln-out/d/e/f"], &["kiln-out/d/"]]);
        assert_eq!(
            i.take_problem(),
            Some(overlap(1, "kiln-out/d/", 0, "kiln-out/d/e/f"))
        );
        let mut i = index(&[&["kiln-out/a"], &["kiln-out/a/b"]]);
        assert_eq!(
            i.take_problem(),
            Some(overlap(1, "kiln-out/a/b", 0, "kiln-out/a"))
        );
    }

    #[test]
    fn paths_outside_kiln_out_are_refused() {
        for bad in [
            "x",
            "kiln-out",
            "kiln-out/",
            "kiln-outx/y",
            "kiln-out/../x",
            "kiln-out/./x",
            "kiln-out/a//b",
            "kiln-out/a/..",
            "/kiln-out/x",
        ] {
            let mut i = index(&[&[bad]]);
            let outside = Problem::Outside {
                action: 0,
                path: bad.into(),
            };
            assert_eq!(i.take_problem(), Some(outside), "{bad}");
        }
    }
}
