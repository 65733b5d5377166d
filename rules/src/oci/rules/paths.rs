//! Checks of the image paths written in BUILD.toml (`files` keys of `oci_image` and
//! `oci_base`), done at analysis so that errors name the target and file:line:col.
//!
//! A path is accepted only in its canonical spelling (absolute, single slashes, no `.` or
//! `..`, no trailing slash), so two spellings of one file cannot both be declared and
//! "no duplicates" is a string comparison. A path that is a parent directory of another
//! declared file is refused too: the first would have to be a file and a directory.

use kiln_engine::rule::Analysis;
use kiln_engine::value::Spanned;
use kiln_engine::{Error, ErrorKind, Result};

/// Checks every image path of `files`, in document order.
pub fn check_image_paths(ctx: &Analysis<'_>, paths: &[&Spanned<String>]) -> Result<()> {
    let mut seen: Vec<&str> = Vec::new();
    for path in paths {
        let at = ctx.attrs().location(path.span.start);
        let fail = |why: String| {
            Error::new(
                ErrorKind::Config,
                format!("image path `{}` of {}: {why}", path.value, ctx.label()),
            )
            .at(at.clone())
        };
        if let Some(why) = non_canonical(&path.value) {
            return Err(fail(why.into()).hint("write absolute paths such as \"/app/server\""));
        }
        for other in &seen {
            if *other == path.value {
                return Err(fail("it is declared twice".into()));
            }
            if is_parent(other, &path.value) || is_parent(&path.value, other) {
                return Err(fail(format!(
                    "it conflicts with `{other}`: one is a file inside the other"
                )));
            }
        }
        seen.push(&path.value);
    }
    Ok(())
}

/// Why `path` is not a canonical absolute path, if it is not.
pub fn non_canonical(path: &str) -> Option<&'static str> {
    let Some(rel) = path.strip_prefix('/') else {
        return Some("it must be absolute");
    };
    if rel.is_empty() {
        return Some("the image root `/` cannot be a file");
    }
    if rel.contains('\0') {
        return Some("it holds a NUL byte");
    }
    for component in rel.split('/') {
        match component {
            "" => return Some("it holds an empty component (`//` or a trailing `/`)"),
            "." => return Some("it holds a `.` component"),
            ".." => return Some("it holds a `..` component"),
            _ => {}
        }
    }
    None
}

fn is_parent(dir: &str, path: &str) -> bool {
    path.strip_prefix(dir)
        .is_some_and(|rest| rest.starts_with('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_non_canonical_paths() {
        assert_eq!(non_canonical("/app/server"), None);
        for bad in ["app", "/", "/a/../b", "/a//b", "/a/", "/./a"] {
            assert!(non_canonical(bad).is_some(), "{bad}");
        }
        assert!(is_parent("/app", "/app/server"));
        assert!(!is_parent("/app", "/application"));
    }
}
