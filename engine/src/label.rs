//! Labels (`//pkg/path:name`, `:name`) and target patterns (`//pkg/...`, `//...`).

use std::fmt;

/// A target's name: the package (a directory relative to the workspace root, "" for
/// the root) and the target name inside it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Label {
    pub package: String,
    pub name: String,
}

impl fmt::Display for Label {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "//{}:{}", self.package, self.name)
    }
}

impl Label {
    pub fn new(package: &str, name: &str) -> Label {
        Label {
            package: package.to_string(),
            name: name.to_string(),
        }
    }

    /// Parses `//pkg:name`, `//pkg` (name = last path component) or, relative to
    /// `current` package, `:name`.
    pub fn parse(text: &str, current: &str) -> Result<Label, String> {
        if let Some(name) = text.strip_prefix(':') {
            check_name(name, text)?;
            return Ok(Label::new(current, name));
        }
        let Some(rest) = text.strip_prefix("//") else {
            return Err(format!(
                "`{text}` is not a label (labels look like `//pkg:name` or `:name`)"
            ));
        };
        let (package, name) = match rest.split_once(':') {
            Some((p, n)) => (p, n),
            None => (rest, rest.rsplit('/').next().unwrap_or(rest)),
        };
        check_package(package, text)?;
        check_name(name, text)?;
        Ok(Label::new(package, name))
    }
}

fn check_name(name: &str, text: &str) -> Result<(), String> {
    // `.` and `..` would name directories, not files, in outputs below the target's name.
    if name == "." || name == ".." {
        return Err(format!(
            "`{text}` has an invalid target name (`{name}` names a directory)"
        ));
    }
    let ok = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-.+".contains(c));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{text}` has an invalid target name (letters, digits, `_ - . +`)"
        ))
    }
}

fn check_package(package: &str, text: &str) -> Result<(), String> {
    let bad = package.starts_with('/')
        || package.ends_with('/')
        || package
            .split('/')
            .any(|c| c == ".." || c == "." || (c.is_empty() && !package.is_empty()));
    if bad {
        Err(format!("`{text}` has an invalid package path"))
    } else {
        Ok(())
    }
}

/// What a command line or a BUILD file may name: one target or every target below a
/// package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pattern {
    Target(Label),
    /// `//pkg/...`: every target in `pkg` and below ("" for `//...`).
    Recursive(String),
}

impl Pattern {
    pub fn parse(text: &str, current: &str) -> Result<Pattern, String> {
        if text == "//..." {
            return Ok(Pattern::Recursive(String::new()));
        }
        if let Some(pkg) = text.strip_prefix("//").and_then(|t| t.strip_suffix("/...")) {
            check_package(pkg, text)?;
            return Ok(Pattern::Recursive(pkg.to_string()));
        }
        Label::parse(text, current).map(Pattern::Target)
    }

    /// Whether the package lies under this recursive pattern.
    pub fn covers_package(prefix: &str, package: &str) -> bool {
        prefix.is_empty()
            || package == prefix
            || (package.starts_with(prefix) && package.as_bytes().get(prefix.len()) == Some(&b'/'))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_labels() {
        assert_eq!(Label::parse("//a/b:c", "").unwrap(), Label::new("a/b", "c"));
        assert_eq!(Label::parse(":c", "x").unwrap(), Label::new("x", "c"));
        assert_eq!(Label::parse("//a/b", "").unwrap(), Label::new("a/b", "b"));
        assert_eq!(Label::parse("//:c", "").unwrap(), Label::new("", "c"));
        assert!(Label::parse("a:b", "").is_err());
        assert!(Label::parse("//../x:y", "").is_err());
        assert!(Label::parse("//a:b c", "").is_err());
        assert!(Label::parse(":..", "").is_err());
        assert!(Label::parse("//a:.", "").is_err());
        assert!(Label::parse("//a/..", "").is_err());
        assert_eq!(Label::parse(":...", "").unwrap(), Label::new("", "..."));
    }

    #[test]
    fn parses_patterns() {
        assert_eq!(
            Pattern::parse("//...", "").unwrap(),
            Pattern::Recursive(String::new())
        );
        assert_eq!(
            Pattern::parse("//a/...", "").unwrap(),
            Pattern::Recursive("a".into())
        );
        assert!(Pattern::covers_package("a", "a/b"));
        assert!(!Pattern::covers_package("a", "ab"));
    }
}
