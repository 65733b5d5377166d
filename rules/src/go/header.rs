//! What `go list` reads of a Go source file: its header and its `//go:embed` lines.
//!
//! `go list` (go/build's `readGoInfo`) reads a file's build constraints, package clause
//! and import declarations, and past them only `//go:embed` directives; it never parses
//! function bodies. [`skeleton`] keeps exactly those parts, so `go list` run over
//! skeletons answers as over the real files, and a listing keyed by skeletons is not
//! redone when only code changes — the common edit.
//!
//! The scanner is Go's lexical grammar cut down to what a header holds: white space,
//! comments, the `package` clause, `import` declarations (single or parenthesized, with
//! `.`, `_` or a name before the path) and string literals. Anything it does not follow
//! makes it keep the whole file, which is never wrong, only slower.

/// The header of `src` (everything through its last import declaration) with its plain
/// comments emptied, then every line that starts with a `//go:embed` directive outside
/// string literals. The whole of `src` when the header does not scan.
pub fn skeleton(src: &[u8]) -> Vec<u8> {
    let Some(end) = header_end(src) else {
        return src.to_vec();
    };
    let mut out = without_prose(&src[..end]);
    out.push(b'\n');
    for line in embed_lines(src, end) {
        out.extend_from_slice(line);
        out.push(b'\n');
    }
    out
}

/// A header with the text of its comments taken out, lines kept where they are, so that
/// editing a doc comment does not change what `go list` is keyed by. Directives stay:
/// `//go:…` lines (build constraints, embeds) and `// +build` lines. A file that imports
/// "C" keeps its header whole: cgo reads the comment before that import.
fn without_prose(header: &[u8]) -> Vec<u8> {
    if find(header, b"\"C\"").is_some() {
        return header.to_vec();
    }
    let mut out = Vec::with_capacity(header.len());
    let mut pos = 0;
    while let Some(&b) = header.get(pos) {
        let rest = &header[pos..];
        let len = match b {
            b'/' if rest.starts_with(b"//") => {
                let len = rest.iter().position(|&c| c == b'\n').unwrap_or(rest.len());
                let directive = rest.starts_with(b"//go:") || rest.starts_with(b"// +build");
                out.extend_from_slice(if directive { &rest[..len] } else { b"//" });
                len
            }
            b'/' if rest.starts_with(b"/*") => {
                let len = find(&rest[2..], b"*/").map_or(rest.len(), |n| n + 4);
                let lines = rest[..len].iter().filter(|&&c| c == b'\n').count();
                out.extend_from_slice(b"/*");
                out.extend(std::iter::repeat_n(b'\n', lines));
                out.extend_from_slice(b"*/");
                len
            }
            b'"' | b'`' => {
                let len = string_len(rest, b).unwrap_or(rest.len());
                out.extend_from_slice(&rest[..len]);
                len
            }
            _ => {
                out.push(b);
                1
            }
        };
        pos += len;
    }
    out
}

struct Scanner<'a> {
    src: &'a [u8],
    pos: usize,
}

impl Scanner<'_> {
    fn peek(&self) -> Option<u8> {
        self.src.get(self.pos).copied()
    }

    fn rest(&self) -> &[u8] {
        &self.src[self.pos..]
    }

    /// Skips white space, comments and (with `semis`) semicolons. None on an unclosed
    /// block comment.
    fn skip(&mut self, semis: bool) -> Option<()> {
        loop {
            match self.peek() {
                Some(b' ' | b'\t' | b'\r' | b'\n') => self.pos += 1,
                Some(b';') if semis => self.pos += 1,
                Some(b'/') if self.rest().starts_with(b"//") => {
                    let len = self.rest().iter().position(|&b| b == b'\n');
                    self.pos += len.unwrap_or(self.rest().len());
                }
                Some(b'/') if self.rest().starts_with(b"/*") => {
                    let close = find(&self.rest()[2..], b"*/")?;
                    self.pos += 2 + close + 2;
                }
                _ => return Some(()),
            }
        }
    }

    /// Consumes `word` if it is the next whole word.
    fn keyword(&mut self, word: &[u8]) -> bool {
        let rest = self.rest();
        let whole = rest.starts_with(word) && !rest.get(word.len()).is_some_and(|&b| is_ident(b));
        if whole {
            self.pos += word.len();
        }
        whole
    }

    fn ident(&mut self) -> Option<()> {
        let len = self.rest().iter().take_while(|&&b| is_ident(b)).count();
        (len > 0).then(|| self.pos += len)
    }

    /// An interpreted or raw string literal.
    fn string(&mut self) -> Option<()> {
        let quote = self.peek().filter(|q| matches!(q, b'"' | b'`'))?;
        self.pos += string_len(self.rest(), quote)?;
        Some(())
    }

    /// `[. | _ | name] "path"`.
    fn import_spec(&mut self) -> Option<()> {
        match self.peek()? {
            b'.' => self.pos += 1,
            b'"' | b'`' => {}
            _ => self.ident()?,
        }
        self.skip(false)?;
        self.string()
    }
}

/// Where the header ends: just after the package clause or the last import declaration.
fn header_end(src: &[u8]) -> Option<usize> {
    let mut s = Scanner { src, pos: 0 };
    s.skip(false)?;
    if !s.keyword(b"package") {
        return None;
    }
    s.skip(false)?;
    s.ident()?;
    let mut end = s.pos;
    loop {
        s.skip(true)?;
        if !s.keyword(b"import") {
            return Some(end);
        }
        s.skip(false)?;
        if s.peek() == Some(b'(') {
            s.pos += 1;
            loop {
                s.skip(true)?;
                if s.peek()? == b')' {
                    s.pos += 1;
                    break;
                }
                s.import_spec()?;
            }
        } else {
            s.import_spec()?;
        }
        end = s.pos;
    }
}

/// The lines after `from` that begin (after white space) with `//go:embed`, skipping
/// string and rune literals and block comments, as go/build's `findEmbed` does.
fn embed_lines(src: &[u8], from: usize) -> Vec<&[u8]> {
    let mut lines = Vec::new();
    let mut pos = from;
    let mut line_start = true;
    while let Some(&b) = src.get(pos) {
        let rest = &src[pos..];
        match b {
            b'\n' => {
                line_start = true;
                pos += 1;
                continue;
            }
            b' ' | b'\t' | b'\r' => {
                pos += 1;
                continue;
            }
            b'/' if rest.starts_with(b"//") => {
                let len = rest.iter().position(|&c| c == b'\n').unwrap_or(rest.len());
                if line_start && rest.starts_with(b"//go:embed") {
                    lines.push(&rest[..len]);
                }
                pos += len;
                continue;
            }
            b'/' if rest.starts_with(b"/*") => {
                pos += find(&rest[2..], b"*/").map_or(rest.len(), |n| n + 4);
            }
            b'"' | b'`' | b'\'' => pos += string_len(rest, b).unwrap_or(rest.len()),
            _ => pos += 1,
        }
        line_start = false;
    }
    lines
}

/// The length of the literal at the start of `s` (quote to quote), None if unclosed. An
/// interpreted literal ends at its line.
fn string_len(s: &[u8], quote: u8) -> Option<usize> {
    let mut i = 1;
    while let Some(&b) = s.get(i) {
        match b {
            b'\\' if quote != b'`' => i += 2,
            b'\n' if quote != b'`' => return None,
            _ if b == quote => return Some(i + 1),
            _ => i += 1,
        }
    }
    None
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn is_ident(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b >= 0x80
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sk(src: &str) -> String {
        String::from_utf8(skeleton(src.as_bytes())).unwrap()
    }

    #[test]
    fn keeps_constraints_package_and_imports_and_drops_code() {
        let src = "//go:build linux\n\n// Package a does things.\npackage a\n\nimport (\n\t\"fmt\" // printing\n\tstr \"strings\"\n\t_ \"embed\"\n\t. `os`\n)\n\nimport \"sort\"\n\nfunc F() { fmt.Println(str.ToUpper(\"x\")) }\n";
        let want = "//go:build linux\n\n//\npackage a\n\nimport (\n\t\"fmt\" //\n\tstr \"strings\"\n\t_ \"embed\"\n\t. `os`\n)\n\nimport \"sort\"\n";
        assert_eq!(sk(src), want);
        // A change below the imports, or in a comment, leaves the skeleton as it was.
        assert_eq!(sk(&src.replace("ToUpper", "ToLower")), want);
        assert_eq!(sk(&src.replace("does things", "does more")), want);
    }

    #[test]
    fn a_file_without_imports_keeps_its_package_clause() {
        assert_eq!(sk("package b\n\nvar X = 1\n"), "package b\n");
        assert_eq!(
            sk("package b; import \"os\"; var _ = os.Args"),
            "package b; import \"os\"\n"
        );
    }

    #[test]
    fn the_cgo_preamble_is_part_of_the_header() {
        let src = "package c\n\n/*\n#cgo LDFLAGS: -lm\n#include <math.h>\n*/\nimport \"C\"\n\nfunc f() {}\n";
        assert_eq!(
            sk(src),
            "package c\n\n/*\n#cgo LDFLAGS: -lm\n#include <math.h>\n*/\nimport \"C\"\n"
        );
    }

    #[test]
    fn embed_directives_are_kept_and_lookalikes_in_strings_are_not() {
        let src = "package d\n\nimport \"embed\"\n\n//go:embed static/*.html\n//go:embed  a.txt\nvar files embed.FS\n\nconst s = `\n//go:embed not/this\n`\nvar r = '/' // x //go:embed nor/this\n/* //go:embed\n nor this */\n";
        assert_eq!(
            sk(src),
            "package d\n\nimport \"embed\"\n//go:embed static/*.html\n//go:embed  a.txt\n"
        );
    }

    #[test]
    fn import_lookalikes_in_comments_and_strings_do_not_confuse_it() {
        let src = "package e\n\n/* import \"x\" ) */\nimport (\n\t\"a/b\" /* ) */\n\t\"c\\\"d\"\n)\n\nvar importer = 1\n";
        assert_eq!(
            sk(src),
            "package e\n\n/**/\nimport (\n\t\"a/b\" /**/\n\t\"c\\\"d\"\n)\n"
        );
    }

    #[test]
    fn directives_and_line_breaks_survive_and_prose_does_not() {
        let src =
            "// Copyright 2026.\n\n// +build old\n\n/* two\nlines */\npackage f // import \"x\"\n";
        assert_eq!(sk(src), "//\n\n// +build old\n\n/*\n*/\npackage f\n");
    }

    #[test]
    fn anything_it_cannot_follow_keeps_the_whole_file() {
        for src in [
            "pakage f\n",
            "package g\nimport (\n\t\"unclosed\n)\n",
            "package h\nimport \"x\" /* never closed",
            "",
        ] {
            assert_eq!(sk(src), src, "{src:?}");
        }
    }
}
