//! Paths inside an image: validated once, then used as tar names.
//!
//! A path is accepted only in its one canonical spelling: absolute, components separated by
//! single slashes, no `.` or `..`, no trailing slash, no NUL. Refusing instead of normalizing
//! means two spellings of one file can never both reach a layer, so "no duplicates" is a
//! plain string comparison.

use super::error::{Error, ErrorKind, Result};

/// Checks an absolute image path and returns its tar name (the path without the leading `/`).
pub(crate) fn tar_name(path: &str) -> Result<&str> {
    let Some(rel) = path.strip_prefix('/') else {
        return Err(invalid(path, "the path is not absolute"));
    };
    if rel.is_empty() {
        return Err(invalid(path, "the image root `/` cannot be an entry"));
    }
    if rel.contains('\0') {
        return Err(invalid(path, "the path holds a NUL byte"));
    }
    for component in rel.split('/') {
        match component {
            "" => return Err(invalid(path, "the path holds an empty component")),
            "." => return Err(invalid(path, "the path holds a `.` component")),
            ".." => return Err(invalid(path, "the path holds a `..` component")),
            _ => {}
        }
    }
    Ok(rel)
}

/// The tar names of every ancestor directory of `name`, outermost first.
pub(crate) fn ancestors(name: &str) -> impl Iterator<Item = &str> {
    name.match_indices('/').map(move |(at, _)| &name[..at])
}

fn invalid(path: &str, why: &str) -> Error {
    Error::new(
        ErrorKind::InvalidPath,
        format!("add `{path}` to the image: {why}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_canonical_absolute_paths() {
        assert_eq!(tar_name("/app/server").unwrap(), "app/server");
    }

    #[test]
    fn refuses_other_spellings() {
        for bad in ["app/server", "/", "/app/../etc", "/app//x", "/app/", "/./x"] {
            let err = tar_name(bad).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidPath, "{bad}");
            assert!(err.to_string().contains(bad), "{err}");
        }
    }

    #[test]
    fn lists_ancestors_outermost_first() {
        let all: Vec<_> = ancestors("a/b/c").collect();
        assert_eq!(all, ["a", "a/b"]);
    }
}
