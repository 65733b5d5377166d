//! The rule interface: how a rule (in kiln-rules) turns a target into actions.
//!
//! The engine loads BUILD.toml files into [`TargetDecl`]s, asks each target's [`Rule`]
//! for its dependencies, walks the target graph in dependency order, and calls
//! [`Rule::analyze`] with an [`Analysis`] through which the rule reads its dependencies'
//! [`TargetInfo`]s and adds actions. The engine knows nothing of Go or images.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use kiln_cache::{ActionResult, Digest};

use crate::action::{Action, ActionGraph, ActionId, Artifact, Tool};
use crate::error::{Error, ErrorKind, Result};
use crate::executor::{Done, Executor, Status};
use crate::key::{KeyInput, KeyRecord};
use crate::label::Label;
use crate::value::{Spanned, Table};
use crate::workspace::{TargetDecl, Workspace, OUT_DIR};

/// What a target gives the targets that depend on it.
#[derive(Debug, Clone, Default)]
pub struct TargetInfo {
    /// The files it produces (or, for a filegroup, names).
    pub files: Vec<Artifact>,
    /// Rule-specific facts (e.g. a Go binary's name).
    pub meta: BTreeMap<String, String>,
    /// What `kiln run LABEL` does once the target is built (a side effect, never cached).
    pub run: Option<Runner>,
}

/// What a runner sees: the workspace root (outputs are materialized at
/// `root/<artifact path>`), the stamp values, and the arguments after `--`.
pub struct RunCtx<'a> {
    pub root: &'a Path,
    pub stamp: &'a BTreeMap<String, String>,
    pub args: &'a [String],
}

pub type RunFn = dyn Fn(&RunCtx) -> std::result::Result<String, String> + Send + Sync;

/// The action of `kiln run`: returns a line to show (e.g. a pushed digest) or an error.
#[derive(Clone)]
pub struct Runner(pub std::sync::Arc<RunFn>);

impl std::fmt::Debug for Runner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Runner")
    }
}

pub trait Rule: Send + Sync {
    /// The table name in BUILD.toml, e.g. `genrule`.
    fn name(&self) -> &'static str;

    /// Checks the attributes and returns the labels the target depends on.
    fn deps(&self, target: &TargetDecl) -> Result<Vec<Spanned<Label>>>;

    /// Adds the target's actions and says what it provides.
    fn analyze(&self, target: &TargetDecl, ctx: &mut Analysis<'_>) -> Result<TargetInfo>;

    /// Whether targets of this rule are tests: `kiln test` runs them, `kiln build` with a
    /// recursive pattern leaves them out.
    fn is_test(&self) -> bool {
        false
    }

    /// kiln.toml sections this rule reads.
    fn config_sections(&self) -> &'static [&'static str] {
        &[]
    }
}

/// The rules a build knows, by name.
#[derive(Default)]
pub struct RuleSet {
    rules: BTreeMap<&'static str, Box<dyn Rule>>,
}

impl RuleSet {
    pub fn add(&mut self, rule: Box<dyn Rule>) {
        self.rules.insert(rule.name(), rule);
    }

    pub fn get(&self, name: &str) -> Option<&dyn Rule> {
        self.rules.get(name).map(|r| r.as_ref())
    }

    pub fn names(&self) -> Vec<&'static str> {
        self.rules.keys().copied().collect()
    }

    /// Every kiln.toml section some rule or the engine reads.
    pub fn sections(&self) -> Vec<&'static str> {
        let mut s: Vec<&'static str> = crate::ENGINE_SECTIONS.to_vec();
        for rule in self.rules.values() {
            s.extend(rule.config_sections());
        }
        s.sort_unstable();
        s.dedup();
        s
    }
}

/// The labels among the strings of `attr` (those starting with `:` or `//`).
pub fn labels_in(table: &Table, attr: &str, package: &str) -> Result<Vec<Spanned<Label>>> {
    let mut out = Vec::new();
    for s in table.str_list(attr)? {
        if s.value.starts_with(':') || s.value.starts_with("//") {
            out.push(parse_label(table, &s, package)?);
        }
    }
    Ok(out)
}

/// Parses a label written in a table, with the error at its location.
pub fn parse_label(table: &Table, s: &Spanned<String>, package: &str) -> Result<Spanned<Label>> {
    let label = Label::parse(&s.value, package)
        .map_err(|e| Error::new(ErrorKind::Label, e).at(table.location(s.span.start)))?;
    Ok(Spanned {
        value: label,
        span: s.span.clone(),
    })
}

/// What a rule sees while it analyzes one target.
pub struct Analysis<'a> {
    pub workspace: &'a Workspace,
    pub target: &'a TargetDecl,
    pub exec: &'a Executor,
    pub(crate) infos: &'a HashMap<Label, TargetInfo>,
    pub(crate) graph: &'a mut ActionGraph,
    pub(crate) done: &'a mut HashMap<ActionId, Done>,
    /// The keys of the actions in `done`.
    pub(crate) run_keys: &'a mut HashMap<ActionId, Digest>,
}

/// Why the source file `path` (workspace-relative) that `target` names at `offset` of
/// its BUILD.toml cannot be used, if it cannot: missing, a directory, not a regular file.
fn source_problem(root: &Path, target: &TargetDecl, path: &str, offset: usize) -> Option<Error> {
    let label = &target.label;
    let err = |kind, message: String| Error::new(kind, message).at(target.attrs.location(offset));
    match std::fs::metadata(root.join(path)) {
        Ok(meta) if meta.is_file() => None,
        Ok(meta) if meta.is_dir() => {
            let rel = match label.package.as_str() {
                "" => path,
                package => &path[package.len() + 1..],
            };
            Some(
                err(
                    ErrorKind::Config,
                    format!("source `{path}` of {label} is a directory, not a file"),
                )
                .hint(format!(
                    "name its files with a glob (`{rel}/**`) or a filegroup"
                )),
            )
        }
        Ok(_) => Some(err(
            ErrorKind::Config,
            format!("source `{path}` of {label} is not a regular file"),
        )),
        Err(_) => Some(err(
            ErrorKind::MissingFile,
            format!("source file `{path}` of {label} does not exist"),
        )),
    }
}

impl Analysis<'_> {
    pub fn package(&self) -> &str {
        &self.target.label.package
    }

    pub fn label(&self) -> &Label {
        &self.target.label
    }

    pub fn attrs(&self) -> &Table {
        &self.target.attrs
    }

    /// The info of a dependency (one returned by [`Rule::deps`]).
    pub fn dep(&self, label: &Label) -> &TargetInfo {
        &self.infos[label]
    }

    /// The workspace-relative path of a file of this package.
    pub fn package_path(&self, rel: &str) -> String {
        join_rel(self.package(), rel)
    }

    /// `kiln-out/<package>/<rel>`.
    pub fn out_path(&self, rel: &str) -> String {
        format!("{OUT_DIR}/{}", self.package_path(rel))
    }

    /// The files named by a list attribute: labels expand to their targets' files,
    /// other strings are files of this package (globs allowed).
    pub fn files(&self, attr: &str) -> Result<Vec<Artifact>> {
        let mut out = Vec::new();
        for s in self.attrs().str_list(attr)? {
            if s.value.starts_with(':') || s.value.starts_with("//") {
                let label = parse_label(self.attrs(), &s, self.package())?.value;
                out.extend(self.dep(&label).files.iter().cloned());
            } else if s.value.contains(['*', '?', '[']) {
                out.extend(self.glob(&s)?);
            } else {
                out.push(self.source_file(&s)?);
            }
        }
        Ok(out)
    }

    /// A source file of this package, checked to exist and to be a regular file.
    pub fn source_file(&self, rel: &Spanned<String>) -> Result<Artifact> {
        let at = || self.attrs().location(rel.span.start);
        check_relative(&rel.value).map_err(|e| Error::new(ErrorKind::Config, e).at(at()))?;
        let path = self.package_path(&rel.value);
        // Checked here, at its entry: rules may read a source during analysis.
        if let Some(problem) =
            source_problem(&self.workspace.root, self.target, &path, rel.span.start)
        {
            return Err(problem);
        }
        Ok(Artifact::source(path))
    }

    /// The files a target declares it writes in the list attribute `attr`, as paths
    /// `kiln-out/<package>/<entry>` with the entry's span. Each entry is a relative file
    /// path (no `.`, `..` or empty component, no final `/`), none listed twice; an
    /// error is at the entry.
    pub fn declared_outputs(&self, attr: &str) -> Result<Vec<Spanned<String>>> {
        let mut seen: HashMap<&str, usize> = HashMap::new();
        let entries = self.attrs().str_list(attr)?;
        for entry in &entries {
            let at = || self.attrs().location(entry.span.start);
            check_output(&entry.value).map_err(|problem| {
                let message = format!("`{attr}` entry `{}` {problem}", entry.value);
                Error::new(ErrorKind::Config, message).at(at())
            })?;
            if let Some(first) = seen.insert(&entry.value, entry.span.start) {
                let first = self.attrs().location(first);
                let message = format!(
                    "`{}` is listed twice in `{attr}` (first at {}:{})",
                    entry.value, first.line, first.column
                );
                return Err(Error::new(ErrorKind::Config, message).at(at()));
            }
        }
        Ok(entries
            .into_iter()
            .map(|e| Spanned {
                value: self.out_path(&e.value),
                span: e.span,
            })
            .collect())
    }

    /// Files of this package matching a glob (not descending into sub-packages).
    pub fn glob(&self, pattern: &Spanned<String>) -> Result<Vec<Artifact>> {
        let at = self.attrs().location(pattern.span.start);
        let glob = globset::GlobBuilder::new(&pattern.value)
            .literal_separator(true)
            .build()
            .map_err(|e| {
                Error::new(ErrorKind::Config, format!("invalid glob: {e}")).at(at.clone())
            })?
            .compile_matcher();
        let dir = self.workspace.root.join(self.package());
        let mut out = Vec::new();
        let walker = walkdir::WalkDir::new(&dir)
            .sort_by_file_name()
            .into_iter()
            .filter_entry(|e| {
                e.depth() == 0
                    || !(e.file_type().is_dir()
                        && (e.path().join(crate::workspace::BUILD_FILE).exists()
                            || e.file_name().to_string_lossy().starts_with('.')
                            || e.file_name() == OUT_DIR))
            });
        for entry in walker.flatten() {
            let rel = entry.path().strip_prefix(&dir).unwrap_or(entry.path());
            if entry.file_type().is_file() && glob.is_match(rel) {
                out.push(Artifact::source(self.package_path(&rel.to_string_lossy())));
            }
        }
        if out.is_empty() {
            return Err(Error::new(
                ErrorKind::MissingFile,
                format!("glob `{}` matches no file", pattern.value),
            )
            .at(at)
            .hint("check the pattern; globs are relative to the package directory"));
        }
        Ok(out)
    }

    /// A host tool found on PATH (or an absolute path), declared by name.
    pub fn host_tool(&self, name: &Spanned<String>) -> Result<Tool> {
        let path = crate::sandbox::find_on_path(&name.value).ok_or_else(|| {
            let what = match name.value.contains('/') {
                true => "is not an executable file",
                false => "is not on PATH",
            };
            Error::new(ErrorKind::Config, format!("tool `{}` {what}", name.value))
                .at(self.attrs().location(name.span.start))
                .hint("install it, or name it by absolute path")
        })?;
        let tool_name = Path::new(&name.value)
            .file_name()
            .map_or(name.value.clone(), |n| n.to_string_lossy().into_owned());
        Ok(Tool {
            name: tool_name,
            path,
            tree: false,
        })
    }

    /// Everything that went into `artifacts`: the source files and tools of every action
    /// that (transitively) produced them, each once, sorted (for provenance).
    pub fn transitive(&self, artifacts: &[Artifact]) -> (Vec<Artifact>, Vec<Tool>) {
        let roots: Vec<ActionId> = artifacts.iter().filter_map(|a| a.producer).collect();
        let mut sources: Vec<Artifact> = artifacts
            .iter()
            .filter(|a| a.producer.is_none())
            .cloned()
            .collect();
        let mut tools: Vec<Tool> = Vec::new();
        for id in self.graph.closure(&roots) {
            let action = &self.graph.actions[id];
            sources.extend(
                action
                    .inputs
                    .iter()
                    .filter(|a| a.producer.is_none())
                    .cloned(),
            );
            let action_tools = match &action.kind {
                crate::action::ActionKind::Exec(spec) => &spec.tools,
                crate::action::ActionKind::Builtin(b) => &b.tools,
            };
            for tool in action_tools {
                if !tools
                    .iter()
                    .any(|t| t.name == tool.name && t.path == tool.path)
                {
                    tools.push(tool.clone());
                }
            }
        }
        sources.sort_by(|a, b| a.path.cmp(&b.path));
        sources.dedup_by(|a, b| a.path == b.path);
        tools.sort_by(|a, b| a.name.cmp(&b.name));
        (sources, tools)
    }

    /// Adds an action. An output it shares with another action stops the plan after
    /// this target's analysis (see [`crate::outputs`]).
    pub fn add(&mut self, action: Action) -> ActionId {
        self.graph.add(action)
    }

    /// Adds an action that several targets may need once (a tool built from a
    /// toolchain, say), or returns the one added before that writes the same outputs.
    pub fn add_shared(&mut self, action: Action) -> ActionId {
        match self.same_outputs(&action) {
            Some(id) => id,
            None => self.graph.add(action),
        }
    }

    /// The action added before with the mnemonic and outputs of `action`.
    fn same_outputs(&self, action: &Action) -> Option<ActionId> {
        let id = self.graph.writer(action.outputs.first()?)?;
        let found = &self.graph.actions[id];
        (found.mnemonic == action.mnemonic && found.outputs == action.outputs).then_some(id)
    }

    /// The artifact for an output of an action added earlier.
    pub fn output(&self, id: ActionId, path: &str) -> Artifact {
        self.graph.actions[id].output_artifact(id, path)
    }

    /// Adds an action and runs it now, during analysis, for rules whose actions depend
    /// on an action's output (e.g. `go list`). Its inputs must be source files or
    /// outputs of actions already run this way. The same action (outputs and key) asked
    /// for by another target is run once: its first run is returned.
    pub fn run_now(&mut self, action: Action) -> Result<(ActionId, ActionResult)> {
        let inputs = self.analysis_inputs(&action)?;
        let keys = inputs.iter().map(|(_, k)| k.clone()).collect();
        let record = self.exec.key_record(&action, keys)?;
        let key = record.digest();
        let ran_before = self.same_outputs(&action);
        if let Some(id) = ran_before.filter(|id| self.run_keys.get(id) == Some(&key)) {
            return Ok((id, self.done[&id].result.clone()));
        }
        // Added before it runs, so that an output another action writes stops it here.
        let id = self.graph.add(action);
        if let Some(problem) = self.graph.take_problem() {
            return Err(problem.error(self.workspace, self.graph));
        }
        let action = &self.graph.actions[id];
        let done = run_or_replay(self.exec, action, &inputs, &key, &record)?;
        self.exec.materialize(&done.result)?;
        self.run_keys.insert(id, key);
        let result = done.result.clone();
        self.done.insert(id, done);
        Ok((id, result))
    }

    /// [`Analysis::run_now`] for an action whose outputs a target provides as they came
    /// out (a directory output gives each file it held): their artifacts.
    pub fn run_now_files(&mut self, action: Action) -> Result<Vec<Artifact>> {
        let (id, result) = self.run_now(action)?;
        Ok(result
            .outputs
            .iter()
            .map(|o| self.output(id, &o.path))
            .collect())
    }

    /// The inputs of an action run during analysis, as they enter its key.
    fn analysis_inputs(&self, action: &Action) -> Result<Vec<(Artifact, KeyInput)>> {
        let mut inputs = Vec::new();
        for artifact in &action.inputs {
            let key = match artifact.producer {
                None => self.exec.source_input(&artifact.path)?,
                Some(p) => {
                    let out = self
                        .done
                        .get(&p)
                        .and_then(|d| d.result.output(&artifact.path))
                        .ok_or_else(|| {
                            Error::new(
                                ErrorKind::Action,
                                format!("{} is not available during analysis", artifact.path),
                            )
                        })?;
                    KeyInput {
                        path: out.path.clone(),
                        digest: out.digest,
                        executable: out.executable,
                    }
                }
            };
            inputs.push((artifact.clone(), key));
        }
        Ok(inputs)
    }

    /// An error located at this target's attribute `attr`.
    pub fn error_at(&self, attr: &str, message: impl Into<String>) -> Error {
        self.attrs().error_at(attr, message)
    }
}

/// The cached result of an action run during analysis, or the result of running it.
fn run_or_replay(
    exec: &Executor,
    action: &Action,
    inputs: &[(Artifact, KeyInput)],
    key: &Digest,
    record: &KeyRecord,
) -> Result<Done> {
    if let Some(found) = exec.lookup(action, key, record)? {
        let cached = kiln_cache::KeyOutcome::Cached;
        exec.note_key(action, &found.key, &found.record, cached);
        return Ok(Done {
            result: found.result,
            status: Status::Cached,
            remote: found.remote,
        });
    }
    let ran = exec.execute(action, inputs).map_err(|f| {
        exec.note_failure(action, key, record, &f);
        let stderr = String::from_utf8_lossy(&f.stderr).trim().to_string();
        let mut e = f.error;
        if !stderr.is_empty() {
            e.message = format!("{}\n{stderr}", e.message);
        }
        e
    })?;
    exec.store_ran(action, key, record, &ran)?;
    Ok(Done {
        result: ran.result,
        status: Status::Executed,
        remote: false,
    })
}

fn join_rel(package: &str, rel: &str) -> String {
    if package.is_empty() {
        rel.to_string()
    } else {
        format!("{package}/{rel}")
    }
}

/// A file a target writes, relative to its package: not empty, not absolute, without
/// `.`, `..` or empty components, not ending in `/` (a directory). The error says
/// what is wrong with it.
pub fn check_output(path: &str) -> std::result::Result<(), &'static str> {
    let has = |component: &str| path.split('/').any(|c| c == component);
    Err(if path.is_empty() {
        "is empty"
    } else if path.starts_with('/') {
        "must be relative to the package, not absolute"
    } else if path.ends_with('/') {
        "ends in `/`, naming a directory: outputs here are files"
    } else if has("..") {
        "has a `..` component"
    } else if has(".") {
        "has a `.` component"
    } else if has("") {
        "has an empty component"
    } else if path.contains('\0') {
        "holds a NUL character"
    } else {
        return Ok(());
    })
}

/// A relative path with no `..` and no leading `/`.
pub fn check_relative(path: &str) -> std::result::Result<(), String> {
    if path.is_empty()
        || path.starts_with('/')
        || path.split('/').any(|c| c == ".." || c.is_empty())
    {
        return Err(format!(
            "`{path}` must be a relative path inside the package, without `..`"
        ));
    }
    Ok(())
}
