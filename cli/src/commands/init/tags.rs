//! The build tags a main needs when every one of its files is excluded from the default
//! build (`//go:build docsgen`). Only a tag or a conjunction of tags (`a && b`) is
//! understood; platform and release names in it (`linux`, `go1.21`) are not tags one
//! sets, so they are left to the platform.

/// Names Go sets itself: operating systems, architectures and the like.
const PLATFORM: &[&str] = &[
    "aix",
    "android",
    "darwin",
    "dragonfly",
    "freebsd",
    "hurd",
    "illumos",
    "ios",
    "js",
    "linux",
    "nacl",
    "netbsd",
    "openbsd",
    "plan9",
    "solaris",
    "wasip1",
    "windows",
    "zos",
    "386",
    "amd64",
    "arm",
    "arm64",
    "loong64",
    "mips",
    "mipsle",
    "mips64",
    "mips64le",
    "ppc64",
    "ppc64le",
    "riscv64",
    "s390x",
    "sparc64",
    "wasm",
    "unix",
    "cgo",
    "gc",
    "gccgo",
];

/// The tags that select files with these `//go:build` expressions (`None`: a file with
/// no such line, excluded by its name or by needing cgo), or why there are none.
pub fn needed(constraints: &[Option<String>]) -> Result<Vec<String>, String> {
    let exprs: Vec<&String> = constraints.iter().flatten().collect();
    let Some(first) = exprs.first() else {
        return Err("its files are excluded by their names (_windows.go) or need cgo".into());
    };
    let mut tags = Vec::new();
    for expr in &exprs {
        tags.extend(conjunction(expr)?);
    }
    if tags.iter().any(|t| t == "ignore") {
        return Err("its files are marked `//go:build ignore` (scripts for `go run`)".into());
    }
    tags.retain(|t| !is_platform(t));
    tags.sort();
    tags.dedup();
    if tags.is_empty() {
        return Err(format!("`//go:build {first}` is not met on this platform"));
    }
    Ok(tags)
}

/// The names of `a && b && …`, or why the expression is not one.
fn conjunction(expr: &str) -> Result<Vec<String>, String> {
    let names: Vec<String> = expr.split("&&").map(|n| n.trim().to_string()).collect();
    if names.iter().all(|n| is_name(n)) {
        Ok(names)
    } else {
        Err(format!(
            "`//go:build {expr}` is more than a tag or `a && b`"
        ))
    }
}

fn is_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
}

fn is_platform(name: &str) -> bool {
    PLATFORM.contains(&name) || is_release(name)
}

/// `go1.21` and the like, set by the toolchain's version.
fn is_release(name: &str) -> bool {
    name.strip_prefix("go1.")
        .is_some_and(|v| v.chars().all(|c| c.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::needed;

    fn of(exprs: &[&str]) -> Result<Vec<String>, String> {
        needed(
            &exprs
                .iter()
                .map(|e| Some(e.to_string()))
                .collect::<Vec<_>>(),
        )
    }

    #[test]
    fn tags_are_the_names_one_sets() {
        assert_eq!(of(&["docsgen"]).unwrap(), ["docsgen"]);
        assert_eq!(of(&["docsgen && linux", "docsgen"]).unwrap(), ["docsgen"]);
        assert_eq!(of(&["a && b"]).unwrap(), ["a", "b"]);
    }

    #[test]
    fn other_expressions_are_not_guessed() {
        assert!(of(&["a || b"]).unwrap_err().contains("more than a tag"));
        assert!(of(&["!windows"]).is_err());
        assert!(of(&["ignore"]).unwrap_err().contains("go run"));
        assert!(of(&["windows"]).unwrap_err().contains("not met"));
        assert!(needed(&[None]).is_err());
    }
}
