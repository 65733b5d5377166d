//! Engine errors: what failed, where (file:line:column or label), and a hint.

use std::fmt;
use std::path::{Path, PathBuf};

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A place in a BUILD.toml or kiln.toml file, 1-based.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
}

impl Location {
    /// The location of byte `offset` in `source` (an offset inside a character counts
    /// as that character). Scans the text before it: for many locations in one large
    /// file, use [`LineIndex`].
    pub fn at(file: &Path, source: &str, offset: usize) -> Location {
        LineIndex::new(source).location(file, source, offset)
    }

    /// The location of byte `offset` of a file whose bytes are valid UTF-8 up to it,
    /// as a decoding error reports it.
    pub fn in_bytes(file: &Path, bytes: &[u8], offset: usize) -> Location {
        let offset = offset.min(bytes.len());
        let valid = match std::str::from_utf8(&bytes[..offset]) {
            Ok(text) => text,
            Err(e) => std::str::from_utf8(&bytes[..e.valid_up_to()]).unwrap_or_default(),
        };
        Location::at(file, valid, valid.len())
    }
}

/// Where each line of a text starts, so that a location costs a binary search and a
/// scan of its own line, not of the whole text before it.
#[derive(Debug, Clone)]
pub struct LineIndex {
    starts: Vec<usize>,
}

impl LineIndex {
    pub fn new(text: &str) -> LineIndex {
        let newlines = text.bytes().enumerate().filter(|&(_, b)| b == b'\n');
        let starts = std::iter::once(0).chain(newlines.map(|(i, _)| i + 1));
        LineIndex {
            starts: starts.collect(),
        }
    }

    /// The location of byte `offset` of `text`, the text this index was made of.
    pub fn location(&self, file: &Path, text: &str, offset: usize) -> Location {
        let mut offset = offset.min(text.len());
        while !text.is_char_boundary(offset) {
            offset -= 1;
        }
        let line = self.starts.partition_point(|&start| start <= offset);
        let line_start = self.starts[line - 1];
        Location {
            file: file.to_path_buf(),
            line,
            column: text[line_start..offset].chars().count() + 1,
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file.display(), self.line, self.column)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// A BUILD.toml or kiln.toml file is malformed or holds an unknown rule or field.
    Config,
    /// A label does not parse or names no target.
    Label,
    /// The target graph has a cycle.
    Cycle,
    /// A file a target names is missing.
    MissingFile,
    /// An action failed (non-zero exit, missing outputs, sandbox trouble).
    Action,
    /// The cache failed.
    Cache,
    /// Anything else touching the file system.
    Io,
    /// A remote executor could not be reached or failed to run an action (not the
    /// action's own failure).
    Remote,
}

/// An engine error. Displayed as `LOCATION: MESSAGE` followed by an indented hint.
#[derive(Debug, Clone)]
pub struct Error {
    pub kind: ErrorKind,
    pub message: String,
    pub location: Option<Location>,
    pub hint: Option<String>,
}

impl Error {
    /// An error of `kind`. A message is one line: control characters that user text
    /// brings into it (a newline in a path) are escaped, but for an action's errors,
    /// which may carry the action's output on the lines after the first.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Error {
        let message = message.into();
        Error {
            kind,
            message: match kind {
                ErrorKind::Action => message,
                _ => one_line(message),
            },
            location: None,
            hint: None,
        }
    }

    pub fn at(mut self, location: Location) -> Error {
        self.location = Some(location);
        self
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Error {
        self.hint = Some(hint.into());
        self
    }

    pub fn io(what: &str, path: &Path, err: std::io::Error) -> Error {
        Error::new(ErrorKind::Io, format!("{what} {}: {err}", path.display()))
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(loc) = &self.location {
            write!(f, "{loc}: ")?;
        }
        write!(f, "{}", self.message)?;
        if let Some(hint) = &self.hint {
            write!(f, "\n  hint: {hint}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {}

impl From<kiln_cache::Error> for Error {
    fn from(err: kiln_cache::Error) -> Error {
        Error::new(ErrorKind::Cache, err.to_string())
    }
}

/// `text` with its control characters escaped (`\n`, `\u{1b}`).
fn one_line(text: String) -> String {
    if !text.chars().any(char::is_control) {
        return text;
    }
    text.chars()
        .map(|c| match c.is_control() {
            true => c.escape_default().to_string(),
            false => c.to_string(),
        })
        .collect()
}

/// "did you mean `x`?" for the closest candidate, if any is close.
pub fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<String> {
    candidates
        .into_iter()
        .map(|c| (strsim::jaro_winkler(word, c), c))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| format!("did you mean `{c}`?"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn location_counts_lines_and_columns() {
        let src = "a = 1\n[genrule.x]\n  srcs = 2\n";
        let loc = Location::at(Path::new("BUILD.toml"), src, src.find("srcs").unwrap());
        assert_eq!((loc.line, loc.column), (3, 3));
        let end = Location::at(Path::new("BUILD.toml"), src, src.len());
        assert_eq!((end.line, end.column), (4, 1));
        let first = Location::at(Path::new("BUILD.toml"), src, 0);
        assert_eq!((first.line, first.column), (1, 1));
    }

    #[test]
    fn location_inside_a_character_is_that_character() {
        let src = "a = \"é\"\n";
        let loc = Location::at(Path::new("f"), src, src.find('é').unwrap() + 1);
        assert_eq!((loc.line, loc.column), (1, 6));
    }

    #[test]
    fn location_in_bytes_is_the_first_bad_byte() {
        let bytes = b"[a]\nx = \"ab\xffc\"\n";
        let bad = bytes.iter().position(|&b| b == 0xff).unwrap();
        let loc = Location::in_bytes(Path::new("f"), bytes, bad);
        assert_eq!((loc.line, loc.column), (2, 8));
    }

    #[test]
    fn messages_are_one_line_but_an_actions() {
        let e = Error::new(ErrorKind::MissingFile, "file `a\nb\t` is gone");
        assert_eq!(e.message, "file `a\\nb\\t` is gone");
        let e = Error::new(ErrorKind::Action, "failed\nstderr");
        assert_eq!(e.message, "failed\nstderr");
    }

    #[test]
    fn suggests_close_names() {
        assert_eq!(
            did_you_mean("genrul", ["genrule", "filegroup"]).as_deref(),
            Some("did you mean `genrule`?")
        );
        assert_eq!(did_you_mean("zzz", ["genrule"]), None);
    }
}
