//! Coverage for `go_test`: `cover = true`, profiles, their merge and the gates.
//!
//! ```toml
//! [go_test.unit]
//! cover = true
//! covermode = "atomic"          # set (default), count or atomic (the default with race)
//! coverpkg = ["./..."]          # packages to measure, as go's -coverpkg (default: each
//!                               # package measures itself)
//! min_coverage = 80.0           # total over the target, in percent
//! min_package_coverage = 60.0   # each measured package
//! ```
//!
//! * **Build**: the test binaries are built with `-cover -covermode=M` (and
//!   `-coverpkg=` the import paths the patterns select); with `coverpkg` the build's
//!   inputs also hold those packages' files.
//! * **Run**: each binary runs with `-test.coverprofile`, and its profile is a declared
//!   output of the run (`kiln-out/<pkg>/<target>/<dir>/<name>.cover.out`), so it is cached
//!   and replayed with the run's result.
//! * **Merge** (`GoCover`, a builtin): the profiles, merged block by block (counts
//!   added, or or-ed in `set` mode, as `go tool cover` merges a block seen twice), written
//!   sorted to `kiln-out/<pkg>/<target>/coverage.out`, which `go tool cover -func` and
//!   `-html` read. It prints the total (`coverage //:unit: 84.2% of statements in 3
//!   packages`) and fails when the total is below `min_coverage` or a package below
//!   `min_package_coverage`, listing each with its figure. A package's figure is over
//!   its own statements, whichever tests ran them (with `coverpkg`, one package's tests
//!   count for another). Figures are compared as shown, to one decimal, so a gate never
//!   fails on a figure that reads as its minimum.
//!
//! * **Packages without tests** count as `go test -coverprofile ./...` counts them since
//!   Go 1.22: their build step runs alone with `-coverprofile` (one file per command, so
//!   not in a shared `go test`), and go writes their statements, none run: a package
//!   gate fails on such a package at 0.0%. A `coverpkg` package is measured when it is
//!   one of `packages` or a tested package's binary links it, which is the set go's
//!   own profile holds: go leaves out, as kiln does, a coverpkg package that is neither.
//!
//! * **What the figures mean**: covered statements over all statements of every block
//!   in the merged profile, statements weighted, one decimal. For one package that is
//!   the figure `go test -cover` prints for it; the total is that figure over all the
//!   packages. `go tool cover -func`'s `total:` on the same profile counts the blocks
//!   inside function declarations only, so it reads lower when a package-level
//!   function literal (`var t = func() …{…}()`) has statements. The tests ran where
//!   kiln ran them, in the sandbox: under bubblewrap a test sees no network interface
//!   but loopback, and code that looks at the host (`net.Interfaces`) takes other
//!   branches than on the host. google/uuid reads 87.3% under kiln and under
//!   `bwrap --unshare-net go test -cover`, 87.6% under plain `go test -cover` on a host
//!   with an Ethernet interface (its node ID comes from a hardware address there);
//!   `kiln test --sandbox=dir` gives the host's figure.

use std::collections::BTreeMap;
use std::sync::Arc;

use kiln_engine::action::{Action, ActionKind, Artifact, Builtin, BuiltinCtx};
use kiln_engine::rule::Analysis;
use kiln_engine::workspace::TargetDecl;
use kiln_engine::Result;

use super::list::Packages;
use super::Module;

/// Fields of `go_test` this module reads.
pub const FIELDS: &[&str] = &[
    "cover",
    "covermode",
    "coverpkg",
    "min_coverage",
    "min_package_coverage",
];

/// A go_test's coverage settings.
#[derive(Debug, Clone)]
pub struct Cover {
    pub mode: String,
    /// Import paths of `coverpkg`, sorted.
    pub coverpkg: Vec<String>,
    /// Their module-relative directories.
    pub coverpkg_dirs: Vec<String>,
    pub min_total: Option<f64>,
    pub min_package: Option<f64>,
    /// Where the gates are declared, for their messages.
    gates_at: String,
}

impl Cover {
    /// The coverage settings of the target, None without `cover = true`.
    pub fn read(
        ctx: &Analysis<'_>,
        packages: &Packages,
        module: &Module,
        race: bool,
    ) -> Result<Option<Cover>> {
        let attrs = ctx.attrs();
        if !attrs.bool("cover")?.unwrap_or(false) {
            if let Some(field) = FIELDS[1..].iter().find(|f| attrs.get(f).is_some()) {
                return Err(ctx
                    .error_at(field, format!("`{field}` needs `cover = true`"))
                    .hint("add cover = true to the go_test"));
            }
            return Ok(None);
        }
        let mode = match attrs.str("covermode")? {
            None if race => "atomic".to_string(),
            None => "set".to_string(),
            Some(m) => {
                if !["set", "count", "atomic"].contains(&m.value.as_str()) {
                    return Err(ctx
                        .error_at("covermode", format!("unknown covermode `{}`", m.value))
                        .hint("covermode is one of set, count, atomic"));
                }
                if race && m.value != "atomic" {
                    return Err(ctx
                        .error_at("covermode", "with race = true, covermode must be `atomic`")
                        .hint("drop covermode (race implies atomic) or set it to \"atomic\""));
                }
                m.value
            }
        };
        let min_total = percent(ctx, "min_coverage")?;
        let min_package = percent(ctx, "min_package_coverage")?;
        let mut coverpkg_dirs = Vec::new();
        for pattern in attrs.str_list("coverpkg")? {
            let matched = packages.matching(&pattern.value);
            if matched.is_empty() {
                return Err(ctx
                    .error_at(
                        "coverpkg",
                        format!(
                            "coverpkg `{}` matches no Go package in module {}",
                            pattern.value, module.path
                        ),
                    )
                    .hint("patterns are relative to go.mod's directory, e.g. ./... or ./store"));
            }
            coverpkg_dirs.extend(matched);
        }
        coverpkg_dirs.sort();
        coverpkg_dirs.dedup();
        let import_path = |d: &String| packages.by_dir[d].import_path.clone();
        let mut coverpkg: Vec<String> = coverpkg_dirs.iter().map(import_path).collect();
        coverpkg.sort();
        let key = ["min_coverage", "min_package_coverage", "cover"]
            .into_iter()
            .find_map(|k| attrs.get(k))
            .map_or(attrs.span.start, |v| v.span.start);
        Ok(Some(Cover {
            mode,
            coverpkg,
            coverpkg_dirs,
            min_total,
            min_package,
            gates_at: attrs.location(key).to_string(),
        }))
    }

    /// Arguments of `go test` building the binaries.
    pub fn build_args(&self) -> Vec<String> {
        let mut args = vec!["-cover".to_string(), format!("-covermode={}", self.mode)];
        if !self.coverpkg.is_empty() {
            args.push(format!("-coverpkg={}", self.coverpkg.join(",")));
        }
        args
    }

    /// The action merging the runs' `profiles` into `out` and applying the gates.
    pub fn merge_action(
        &self,
        target: &TargetDecl,
        profiles: Vec<Artifact>,
        out: String,
    ) -> Action {
        let gates = Gates {
            label: target.label.to_string(),
            min_total: self.min_total,
            min_package: self.min_package,
            at: self.gates_at.clone(),
        };
        let params = serde_json::json!({
            "mode": self.mode,
            "min_coverage": self.min_total,
            "min_package_coverage": self.min_package,
        });
        Action {
            owner: target.label.clone(),
            mnemonic: "GoCover".into(),
            discriminator: String::new(),
            inputs: profiles,
            outputs: vec![out],
            kind: ActionKind::Builtin(Builtin {
                name: "go-cover-merge".into(),
                version: 1,
                params,
                tools: Vec::new(),
                run: Arc::new(move |ctx| gates.merge(ctx)),
            }),
            platform: None,
            show_output: true,
        }
    }
}

/// A percentage attribute, between 0 and 100.
fn percent(ctx: &Analysis<'_>, key: &str) -> Result<Option<f64>> {
    let value = ctx.attrs().number(key)?;
    if let Some(v) = value {
        if !(0.0..=100.0).contains(&v) {
            return Err(ctx
                .error_at(
                    key,
                    format!("`{key}` must be a percentage, 0 to 100, not {v}"),
                )
                .hint(format!("for example: {key} = 80.0")));
        }
    }
    Ok(value)
}

/// The profile path of a test binary's run: `<binary without .test>.cover.out`.
pub fn profile_path(binary: &str) -> String {
    format!(
        "{}.cover.out",
        binary.strip_suffix(".test").unwrap_or(binary)
    )
}

/// What the merge checks, captured by its builtin (the location is not in the key:
/// only a failure, never cached, shows it).
struct Gates {
    label: String,
    min_total: Option<f64>,
    min_package: Option<f64>,
    at: String,
}

impl Gates {
    fn merge(&self, ctx: &BuiltinCtx<'_>) -> std::result::Result<(), String> {
        let mut merged = Profile::default();
        for input in ctx.inputs {
            let path = ctx.input(&input.path);
            let text = std::fs::read_to_string(&path)
                .map_err(|e| format!("failed to read {}: {e}", input.path))?;
            merged.add(&input.path, &text)?;
        }
        ctx.emit(ctx.outputs[0].clone(), merged.render().into_bytes());
        let packages = merged.by_package();
        let total = merged.total();
        let plural = if packages.len() == 1 { "" } else { "s" };
        ctx.print(&format!(
            "coverage {}: {} of statements in {} package{plural} ({})\n",
            self.label,
            total.shown(),
            packages.len(),
            ctx.outputs[0]
        ));
        self.check(total, &packages)
    }

    /// Fails with every figure below its gate.
    fn check(
        &self,
        total: Count,
        packages: &BTreeMap<String, Count>,
    ) -> std::result::Result<(), String> {
        let mut below = Vec::new();
        if let Some(min) = self.min_total {
            if total.percent() < min {
                below.push(format!("total {} < min_coverage {min:.1}%", total.shown()));
            }
        }
        if let Some(min) = self.min_package {
            for (pkg, count) in packages {
                if count.statements > 0 && count.percent() < min {
                    below.push(format!(
                        "{pkg} {} < min_package_coverage {min:.1}%",
                        count.shown()
                    ));
                }
            }
        }
        if below.is_empty() {
            return Ok(());
        }
        Err(format!(
            "coverage of {} is below its gates ({}):\n  {}\nhint: add tests that run these statements, or lower the gate in BUILD.toml\n",
            self.label,
            self.at,
            below.join("\n  ")
        ))
    }
}

/// Statements, and how many of them ran.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Count {
    pub statements: u64,
    pub covered: u64,
}

impl Count {
    /// The percentage as shown (one decimal), as a number.
    pub fn percent(&self) -> f64 {
        if self.statements == 0 {
            return 0.0;
        }
        let exact = 100.0 * self.covered as f64 / self.statements as f64;
        (exact * 10.0).round() / 10.0
    }

    pub fn shown(&self) -> String {
        format!("{:.1}%", self.percent())
    }
}

/// Where a block of a file stands: start line, start column, end line, end column.
type Span = (u32, u32, u32, u32);

/// A merged coverage profile: blocks of each file with statements and counts.
#[derive(Debug, Default)]
pub struct Profile {
    mode: Option<String>,
    blocks: BTreeMap<String, BTreeMap<Span, (u64, u64)>>,
}

impl Profile {
    /// Adds a profile's text (`name` for errors): a `mode:` line, then
    /// `file:sl.sc,el.ec statements count` lines.
    pub fn add(&mut self, name: &str, text: &str) -> std::result::Result<(), String> {
        let mut lines = text.lines().enumerate();
        let bad = |n: usize, why: &str| format!("{name}:{}: {why}", n + 1);
        let mode = match lines.next() {
            Some((_, l)) => l
                .strip_prefix("mode: ")
                .ok_or_else(|| bad(0, "no `mode:` line"))?,
            None => return Ok(()),
        };
        match &self.mode {
            Some(m) if m != mode => {
                return Err(bad(
                    0,
                    &format!("mode {mode} differs from {m} of the other profiles"),
                ))
            }
            _ => self.mode = Some(mode.to_string()),
        }
        for (n, line) in lines {
            if line.is_empty() {
                continue;
            }
            let (file, span, statements, count) = parse_block(line)
                .ok_or_else(|| bad(n, &format!("not a coverage block: {line}")))?;
            let entry = self
                .blocks
                .entry(file.to_string())
                .or_default()
                .entry(span)
                .or_insert((statements, 0));
            entry.1 = match mode {
                "set" => entry.1.max(count.min(1)),
                _ => entry.1 + count,
            };
        }
        Ok(())
    }

    /// The merged profile, files and blocks in order.
    pub fn render(&self) -> String {
        let mut out = format!("mode: {}\n", self.mode.as_deref().unwrap_or("set"));
        for (file, blocks) in &self.blocks {
            for ((sl, sc, el, ec), (statements, count)) in blocks {
                out.push_str(&format!(
                    "{file}:{sl}.{sc},{el}.{ec} {statements} {count}\n"
                ));
            }
        }
        out
    }

    /// Statements and covered statements of each package (a file's directory).
    pub fn by_package(&self) -> BTreeMap<String, Count> {
        let mut out: BTreeMap<String, Count> = BTreeMap::new();
        for (file, blocks) in &self.blocks {
            let pkg = file.rsplit_once('/').map_or("", |(dir, _)| dir);
            let c = out.entry(pkg.to_string()).or_default();
            for (statements, count) in blocks.values() {
                c.statements += statements;
                c.covered += if *count > 0 { *statements } else { 0 };
            }
        }
        out
    }

    pub fn total(&self) -> Count {
        self.by_package()
            .values()
            .fold(Count::default(), |a, c| Count {
                statements: a.statements + c.statements,
                covered: a.covered + c.covered,
            })
    }
}

/// `file:sl.sc,el.ec statements count`.
fn parse_block(line: &str) -> Option<(&str, Span, u64, u64)> {
    let (rest, count) = line.rsplit_once(' ')?;
    let (rest, statements) = rest.rsplit_once(' ')?;
    let (file, span) = rest.rsplit_once(':')?;
    let (start, end) = span.split_once(',')?;
    let pos = |p: &str| -> Option<(u32, u32)> {
        let (l, c) = p.split_once('.')?;
        Some((l.parse().ok()?, c.parse().ok()?))
    };
    let ((sl, sc), (el, ec)) = (pos(start)?, pos(end)?);
    Some((
        file,
        (sl, sc, el, ec),
        statements.parse().ok()?,
        count.parse().ok()?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str =
        "mode: set\nex/a/a.go:4.2,4.11 1 1\nex/a/a.go:7.2,7.10 1 0\nex/b/b.go:3.16,3.26 2 0\n";
    const B: &str = "mode: set\nex/b/b.go:3.16,3.26 2 1\nex/a/a.go:7.2,7.10 1 0\n";

    #[test]
    fn profiles_merge_block_by_block_in_order() {
        let mut p = Profile::default();
        p.add("a", A).unwrap();
        p.add("b", B).unwrap();
        assert_eq!(
            p.render(),
            "mode: set\nex/a/a.go:4.2,4.11 1 1\nex/a/a.go:7.2,7.10 1 0\nex/b/b.go:3.16,3.26 2 1\n"
        );
        let pkgs = p.by_package();
        assert_eq!(
            pkgs["ex/a"],
            Count {
                statements: 2,
                covered: 1
            }
        );
        assert_eq!(
            pkgs["ex/b"],
            Count {
                statements: 2,
                covered: 2
            }
        );
        assert_eq!(p.total().shown(), "75.0%");
    }

    #[test]
    fn counts_add_up_and_modes_must_agree() {
        let mut p = Profile::default();
        p.add("a", "mode: count\nf/x.go:1.1,2.2 1 3\n").unwrap();
        p.add("b", "mode: count\nf/x.go:1.1,2.2 1 4\n").unwrap();
        assert_eq!(p.render(), "mode: count\nf/x.go:1.1,2.2 1 7\n");
        let err = p.add("c", "mode: set\n").unwrap_err();
        assert!(err.contains("c:1: mode set differs from count"), "{err}");
        let err = p.add("d", "mode: count\nf/x.go:1.1 1\n").unwrap_err();
        assert!(err.starts_with("d:2: not a coverage block"), "{err}");
    }

    #[test]
    fn gates_list_every_figure_below() {
        let gates = Gates {
            label: "//:unit".into(),
            min_total: Some(80.0),
            min_package: Some(60.0),
            at: "BUILD.toml:3:1".into(),
        };
        let mut pkgs = BTreeMap::new();
        pkgs.insert(
            "ex/a".to_string(),
            Count {
                statements: 2,
                covered: 1,
            },
        );
        pkgs.insert(
            "ex/b".to_string(),
            Count {
                statements: 3,
                covered: 3,
            },
        );
        let err = gates
            .check(
                Count {
                    statements: 5,
                    covered: 4,
                },
                &pkgs,
            )
            .unwrap_err();
        assert!(
            err.contains("ex/a 50.0% < min_package_coverage 60.0%"),
            "{err}"
        );
        assert!(!err.contains("ex/b"), "{err}");
        assert!(!err.contains("total"), "80.0% meets 80.0: {err}");
        // 79.96% reads as 80.0%, and passes.
        let total = Count {
            statements: 10000,
            covered: 7996,
        };
        assert_eq!(total.shown(), "80.0%");
        assert!(gates.check(total, &BTreeMap::new()).is_ok());
        let err = gates
            .check(
                Count {
                    statements: 10,
                    covered: 7,
                },
                &BTreeMap::new(),
            )
            .unwrap_err();
        assert!(err.contains("total 70.0% < min_coverage 80.0%\n"), "{err}");
    }
}
