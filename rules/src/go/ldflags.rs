//! go_binary's `-ldflags`: `ldflags` plus one `-X` per `x_defs` entry, and whether the
//! link they ask for runs a program of the repository's choosing.
//!
//! Go's linker runs other programs when its flags say so: `-extld` (with
//! `--linkmode=external`, which gets past go's own check that cgo is on, or `cgo =
//! true`), `-extar` (with `-buildmode=c-archive`), and the C compiler's own options
//! through `-extldflags` (gcc's `-B`, `-wrapper`, `-fplugin` run programs too). Such a
//! program inherits the go command's environment, and with it the token of the build's
//! Go compile-cache server: it could put any compiled package into the store every later
//! build trusts. So only flags that change the binary and nothing else
//! ([`LINKER_ONLY`]) let the build share the cache; any other flag gets it a view
//! (reads, and keeps what it puts to itself; see `kiln_cache::gocacheprog`). Such a build
//! still reads what was compiled before; what it compiles is not shared with other
//! builds.
//!
//! The flags are read as go reads them: `-ldflags=[pattern=]flags`, split by go's
//! `quoted.Split` (fields are separated by blanks, a field that starts with a quote runs
//! to the same quote), then parsed as Go's `flag` package does (`-name`, `--name`,
//! `-name=value`, or the value in the next field when the flag takes one).

use std::collections::BTreeMap;

use kiln_engine::rule::Analysis;
use kiln_engine::{Error, ErrorKind, Result};

/// Linker flags that change only the binary kiln gets: (name, whether it takes a value
/// when not given one with `=`). Any other flag keeps the build off the shared cache.
const LINKER_ONLY: &[(&str, bool)] = &[
    ("s", false),
    ("w", false),
    ("X", true),
    ("B", true),
    ("buildid", true),
    ("compressdwarf", false),
    ("checklinkname", false),
    ("strictdups", true),
];

/// `ldflags` plus one `-X 'name=value'` per `x_defs` entry, stamp values substituted,
/// as the value of `go build -ldflags=`.
pub fn ldflags(ctx: &Analysis<'_>) -> Result<String> {
    let attrs = ctx.attrs();
    let mut flags: Vec<String> = attrs
        .str_list("ldflags")?
        .into_iter()
        .map(|f| f.value)
        .collect();
    let x_defs = attrs.str_map("x_defs")?;
    if !x_defs.is_empty() {
        let defaults: BTreeMap<String, String> = match ctx.workspace.section("stamp")? {
            Some(t) => t.str_map_self()?,
            None => BTreeMap::new(),
        };
        let values = ctx.exec.stamp(&defaults);
        for (name, value) in x_defs {
            if name.value.contains(|c| is_blank(c) || QUOTES.contains(&c)) {
                return Err(Error::new(
                    ErrorKind::Config,
                    format!(
                        "x_defs name `{}` has a quote or a blank in it, which would end its -X flag",
                        name.value
                    ),
                )
                .at(attrs.location(name.span.start))
                .hint("an x_defs name is a Go variable's import path and name, e.g. \"main.version\""));
            }
            let stamped = kiln_engine::host::substitute(&value.value, values).map_err(|e| {
                Error::new(ErrorKind::Config, e).at(attrs.location(value.span.start))
            })?;
            flags.push(format!("-X '{}={}'", name.value, stamped.replace('\'', "")));
        }
    }
    Ok(flags.join(" "))
}

/// Whether the link `go build -ldflags=<ldflags>` asks for runs the linker alone: every
/// flag is one of [`LINKER_ONLY`]. False for anything go would read otherwise, or fail
/// on (a build that fails shares nothing it would have shared).
pub fn links_alone(ldflags: &str) -> bool {
    let ldflags = ldflags.trim();
    // go's per-package form: `pattern=flags` when the value does not start with `-`.
    let flags = match ldflags.starts_with('-') || ldflags.is_empty() {
        true => ldflags,
        false => match ldflags.split_once('=') {
            Some((_, flags)) => flags,
            None => return false,
        },
    };
    split(flags).is_some_and(|fields| only_linker_flags(&fields))
}

/// As Go's `flag` package parses `fields`: each is a flag of [`LINKER_ONLY`] or the
/// value of the one before it.
fn only_linker_flags(fields: &[String]) -> bool {
    let mut fields = fields.iter();
    while let Some(field) = fields.next() {
        // Not a flag (or `--`, which ends the flags): go's parse stops, and the link
        // gets arguments it does not take.
        let Some(flag) = field
            .strip_prefix('-')
            .filter(|f| !f.is_empty() && *f != "-")
        else {
            return false;
        };
        let flag = flag.strip_prefix('-').unwrap_or(flag);
        let (name, inline) = match flag.split_once('=') {
            Some((name, _)) => (name, true),
            None => (flag, false),
        };
        let Some(&(_, takes_value)) = LINKER_ONLY.iter().find(|(n, _)| *n == name) else {
            return false;
        };
        if takes_value && !inline && fields.next().is_none() {
            return false;
        }
    }
    true
}

/// The quotes go's `quoted.Split` knows.
const QUOTES: [char; 2] = ['"', '\''];

/// What go's `quoted.Split` counts as a field separator.
fn is_blank(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r')
}

/// go's `cmd/internal/quoted.Split`: fields separated by blanks; a field that starts
/// with `'` or `"` runs to the next same quote (no escapes). None when a quote is not
/// closed (go refuses the flags).
fn split(mut s: &str) -> Option<Vec<String>> {
    let mut fields = Vec::new();
    loop {
        s = s.trim_start_matches(is_blank);
        let Some(first) = s.chars().next() else {
            return Some(fields);
        };
        if QUOTES.contains(&first) {
            let (field, rest) = s[1..].split_once(first)?;
            fields.push(field.to_string());
            s = rest;
        } else {
            let end = s.find(is_blank).unwrap_or(s.len());
            fields.push(s[..end].to_string());
            s = &s[end..];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_split_as_go_splits_them() {
        let split = |s: &str| split(s).unwrap();
        assert_eq!(split("  -s\t-w \n"), ["-s", "-w"]);
        assert_eq!(
            split("-X 'main.v=a b' \"-extld=sh x\""),
            ["-X", "main.v=a b", "-extld=sh x"]
        );
        // A quote inside a field is part of it.
        assert_eq!(split("-X main.v='a b'"), ["-X", "main.v='a", "b'"]);
        assert_eq!(split("'-X'-s"), ["-X", "-s"]);
        assert_eq!(split(""), Vec::<String>::new());
        assert!(super::split("-X 'main.v=a").is_none());
    }

    #[test]
    fn flags_that_change_only_the_binary_link_alone() {
        for ldflags in [
            "",
            "-s -w",
            "--s -w=true -buildid= -B gobuildid",
            "-X 'main.version=v1.2 (beta)' -X main.commit=abc",
            // -X takes the next field as its value, whatever it looks like.
            "-X -extld=/bin/sh",
            "-strictdups 2 -compressdwarf=false",
            "all=-s -w",
        ] {
            assert!(links_alone(ldflags), "{ldflags}");
        }
    }

    #[test]
    fn flags_that_run_programs_or_anything_else_do_not() {
        for ldflags in [
            "--linkmode=external -extld=./link.sh",
            "-s '-extld=/bin/sh ./link.sh'",
            "-s \"--extld\" ./link.sh",
            "-buildmode=c-archive -extar=./ar.sh",
            "-linkmode external -extldflags '-B ./bin'",
            "-tmpdir /tmp",
            // go's per-package form, the pattern naming every package.
            "all=-extld=./link.sh",
            // A field go does not read as a flag stops its parse.
            "-s main.go -extld=./link.sh",
            "-s -- -extld=./link.sh",
            "-s -",
            // A flag without its value, an unclosed quote: go fails.
            "-X",
            "-X 'main.v=a",
            "'-s",
        ] {
            assert!(!links_alone(ldflags), "{ldflags}");
        }
    }
}
