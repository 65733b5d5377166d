//! Target names for mains: the name `go build` gives the binary (the last element of the
//! import path, without a `/vN` major-version suffix), so `./cmd/server` is `server`.
//! Names that clash take the directory path joined with `_` (`cmd_server`,
//! `_examples/server` → `examples_server`). Every name is a bare TOML key and a valid
//! label name.

use std::collections::{BTreeMap, BTreeSet};

use super::decide::Main;

/// A go_binary target.
pub struct Binary {
    pub name: String,
    pub main: Main,
}

/// Unique names for `mains`, none equal to `reserved` (another target's name).
pub fn assign(mut mains: Vec<Main>, reserved: Option<&str>) -> Vec<Binary> {
    mains.sort_by(|a, b| a.dir.cmp(&b.dir));
    let mut count: BTreeMap<String, usize> = BTreeMap::new();
    for name in mains.iter().map(base).chain(reserved.map(str::to_string)) {
        *count.entry(name).or_default() += 1;
    }
    let mut taken: BTreeSet<String> = reserved.into_iter().map(str::to_string).collect();
    let mut binaries = Vec::new();
    for main in mains {
        let name = match count[&base(&main)] {
            1 => base(&main),
            _ => joined(&main),
        };
        binaries.push(Binary {
            name: unique(name, &mut taken),
            main,
        });
    }
    binaries
}

/// The binary's name as `go build` gives it.
fn base(main: &Main) -> String {
    let mut parts = main.import_path.rsplit('/');
    let last = parts.next().unwrap_or_default();
    let is_major = last.len() > 1 && last.starts_with('v') && last[1..].parse::<u32>().is_ok();
    let name = match (is_major, parts.next()) {
        (true, Some(before)) => before,
        _ => last,
    };
    sanitize(name)
}

/// The directory path joined with `_`, each element without leading `_` or `.`.
fn joined(main: &Main) -> String {
    if main.dir.is_empty() {
        return base(main);
    }
    let parts: Vec<&str> = main
        .dir
        .split('/')
        .map(|p| p.trim_start_matches(['_', '.']))
        .filter(|p| !p.is_empty())
        .collect();
    sanitize(&parts.join("_"))
}

/// Letters, digits, `_` and `-` only (a bare TOML key), not starting with `_`.
fn sanitize(name: &str) -> String {
    let name: String = name
        .chars()
        .map(|c| match c.is_ascii_alphanumeric() || c == '-' {
            true => c,
            false => '_',
        })
        .collect();
    match name.trim_start_matches('_') {
        "" => "main".to_string(),
        trimmed => trimmed.to_string(),
    }
}

/// `name`, or `name_2`, `name_3`… if it is taken.
fn unique(name: String, taken: &mut BTreeSet<String>) -> String {
    let mut candidate = name.clone();
    let mut n = 1;
    while !taken.insert(candidate.clone()) {
        n += 1;
        candidate = format!("{name}_{n}");
    }
    candidate
}

#[cfg(test)]
mod tests {
    use super::*;

    fn main(dir: &str) -> Main {
        Main {
            dir: dir.to_string(),
            import_path: format!("example.com/m/{dir}")
                .trim_end_matches('/')
                .to_string(),
            tags: Vec::new(),
        }
    }

    fn names(dirs: &[&str], reserved: Option<&str>) -> Vec<String> {
        let mains = dirs.iter().map(|d| main(d)).collect();
        assign(mains, reserved)
            .into_iter()
            .map(|b| b.name)
            .collect()
    }

    #[test]
    fn names_are_base_names_until_they_clash() {
        assert_eq!(
            names(&["cmd/server", "cmd/client"], None),
            ["client", "server"]
        );
        assert_eq!(
            names(&["_examples/server", "cmd/server", "tool"], None),
            ["examples_server", "cmd_server", "tool"]
        );
        assert_eq!(names(&["", "cmd/unit"], Some("unit")), ["m", "cmd_unit"]);
        assert_eq!(names(&["_a_b/c", "a_b/c"], None), ["a_b_c", "a_b_c_2"]);
    }

    #[test]
    fn names_are_what_go_build_calls_the_binary() {
        let mut v2 = main("");
        v2.import_path = "example.com/tool/v2".into();
        assert_eq!(assign(vec![v2], None)[0].name, "tool");
        assert_eq!(names(&["cmd/my.tool"], None), ["my_tool"]);
    }
}
