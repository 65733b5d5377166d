//! What a module's BUILD.toml holds: the go_test target, the mains that get a go_binary,
//! and what was left out and why.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::Result;

use super::go::{Go, Package};
use super::module::{self, Module};
use super::names;
use super::{source, tags};

/// The targets of one module's BUILD.toml.
#[derive(Default)]
pub struct Plan {
    pub test: Option<TestTarget>,
    pub binaries: Vec<names::Binary>,
    /// Module-relative directories ("" for the root) left out, and why.
    pub left_out: BTreeMap<String, String>,
}

pub struct TestTarget {
    /// Go patterns: `./...`, or the packages that load when some do not.
    pub packages: Vec<String>,
    /// Programs the tests start by name, found on PATH.
    pub tools: Vec<String>,
}

/// A main package that builds: its directory, import path and the tags it needs.
pub struct Main {
    pub dir: String,
    pub import_path: String,
    pub tags: Vec<String>,
}

/// What a package is to init.
enum Kind {
    Main,
    /// Every file is excluded from the default build; these tags may select them.
    Tagged(Vec<String>),
    LeftOut(String),
    Other,
}

impl Plan {
    pub fn of(go: &Go, module: &Module) -> Result<Plan> {
        let listed = go.list(module, &[], &["./...".to_string()])?;
        let unlisted = list_unlisted(go, module, &listed)?;
        let mut plan = Plan::default();
        plan.test = plan.test_target(module, &listed);
        let mains = plan.mains(go, module, listed.iter().chain(&unlisted))?;
        plan.binaries = names::assign(mains, plan.test.as_ref().map(|_| "unit"));
        Ok(plan)
    }

    /// The mains that build, by default or with tags; the others are left out.
    fn mains<'a>(
        &mut self,
        go: &Go,
        module: &Module,
        packages: impl Iterator<Item = &'a Package>,
    ) -> Result<Vec<Main>> {
        let mut mains = Vec::new();
        let mut tagged: BTreeMap<Vec<String>, Vec<String>> = BTreeMap::new();
        for pkg in packages {
            match kind(pkg, "") {
                Kind::Main => mains.push(main(module, pkg, Vec::new())),
                Kind::Tagged(tags) => tagged.entry(tags).or_default().push(pkg.rel(module)),
                Kind::LeftOut(why) => self.leave_out(pkg.rel(module), why),
                Kind::Other => {}
            }
        }
        for (tags, dirs) in tagged {
            mains.extend(self.check_tagged(go, module, tags, &dirs)?);
        }
        Ok(mains)
    }

    fn leave_out(&mut self, dir: String, why: String) {
        self.left_out.entry(dir).or_insert(why);
    }

    /// `./...` when every package loads; else the packages with tests that do.
    fn test_target(&mut self, module: &Module, listed: &[Package]) -> Option<TestTarget> {
        let (loaded, broken): (Vec<&Package>, Vec<&Package>) =
            listed.iter().partition(|p| p.problem().is_none());
        for pkg in &broken {
            let why = format!("does not load: {}", pkg.problem().unwrap_or_default());
            self.leave_out(pkg.rel(module), why);
        }
        let tested: Vec<&Package> = loaded.into_iter().filter(|p| p.has_tests()).collect();
        if tested.is_empty() {
            return None;
        }
        let packages = match broken.is_empty() {
            true => vec!["./...".to_string()],
            false => tested
                .iter()
                .map(|p| module::pattern(&p.rel(module)))
                .collect(),
        };
        let tools = tools(&tested);
        Some(TestTarget { packages, tools })
    }

    /// The tagged mains that `go list -tags` confirms; the others are left out.
    fn check_tagged(
        &mut self,
        go: &Go,
        module: &Module,
        tags: Vec<String>,
        dirs: &[String],
    ) -> Result<Vec<Main>> {
        let patterns: Vec<String> = dirs.iter().map(|d| module::pattern(d)).collect();
        let with = format!(" with -tags {}", tags.join(","));
        let mut mains = Vec::new();
        for pkg in go.list(module, &tags, &patterns)? {
            match kind(&pkg, &with) {
                Kind::Main => mains.push(main(module, &pkg, tags.clone())),
                Kind::LeftOut(why) => self.leave_out(pkg.rel(module), why),
                _ => self.leave_out(pkg.rel(module), format!("not a main package{with}")),
            }
        }
        Ok(mains)
    }
}

/// Lists the directories with Go files that `./...` did not report: those below `_`
/// directories and those whose every file a build constraint excludes.
fn list_unlisted(go: &Go, module: &Module, listed: &[Package]) -> Result<Vec<Package>> {
    let seen: BTreeSet<String> = listed.iter().map(|p| p.rel(module)).collect();
    let patterns: Vec<String> = module::source_dirs(module)
        .into_iter()
        .filter(|d| !seen.contains(d))
        .map(|d| module::pattern(&d))
        .collect();
    if patterns.is_empty() {
        return Ok(Vec::new());
    }
    go.list(module, &[], &patterns)
}

/// Whether `pkg` (listed `with` some tags, or "") is a main, may be one with tags, or
/// is a main left out.
fn kind(pkg: &Package, with: &str) -> Kind {
    if pkg.name == "main" {
        if let Some(why) = pkg.problem() {
            return Kind::LeftOut(format!("does not load{with}: {why}"));
        }
        if !source::defines_main(&pkg.dir, &pkg.go_files) {
            let build = if with.is_empty() {
                " in the default build"
            } else {
                with
            };
            return Kind::LeftOut(format!("package main without func main{build}"));
        }
        return Kind::Main;
    }
    if pkg.name.is_empty() && with.is_empty() && declares_main(pkg) {
        let constraints: Vec<Option<String>> = ignored_sources(pkg)
            .map(|f| source::build_constraint(&pkg.dir.join(f)))
            .collect();
        return match tags::needed(&constraints) {
            Ok(tags) => Kind::Tagged(tags),
            Err(why) => Kind::LeftOut(format!("every file is excluded from the build: {why}")),
        };
    }
    Kind::Other
}

/// The non-test files build constraints exclude.
fn ignored_sources(pkg: &Package) -> impl Iterator<Item = &String> {
    pkg.ignored_go_files
        .iter()
        .filter(|f| !f.ends_with("_test.go"))
}

fn declares_main(pkg: &Package) -> bool {
    ignored_sources(pkg).any(|f| source::package_name(&pkg.dir.join(f)).as_deref() == Some("main"))
}

fn main(module: &Module, pkg: &Package, tags: Vec<String>) -> Main {
    Main {
        dir: pkg.rel(module),
        import_path: pkg.import_path.clone(),
        tags,
    }
}

/// Programs the packages' tests start by a literal name that are on PATH, sorted; not
/// the toolchain's (`go`), which tests find on PATH from the toolchain they were built
/// with.
fn tools(tested: &[&Package]) -> Vec<String> {
    let mut names = BTreeSet::new();
    for pkg in tested {
        for file in pkg.test_go_files.iter().chain(&pkg.x_test_go_files) {
            let text = std::fs::read_to_string(pkg.dir.join(file)).unwrap_or_default();
            names.extend(source::started_programs(&text));
        }
    }
    names
        .into_iter()
        .filter(|n| !kiln_rules::go::TOOLCHAIN_PROGRAMS.contains(&n.as_str()))
        .filter(|n| kiln_engine::sandbox::find_on_path(n).is_some())
        .collect()
}
