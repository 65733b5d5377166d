//! From target patterns to an action graph: expand patterns, walk the target graph
//! (reporting the whole path of any cycle), and analyze targets in dependency order.

use std::collections::HashMap;

use kiln_cache::Digest;

use crate::action::{ActionGraph, ActionId};
use crate::error::{Error, ErrorKind, Result};
use crate::executor::{Done, Executor};
use crate::label::{Label, Pattern};
use crate::rule::{Analysis, RuleSet, TargetInfo};
use crate::value::Spanned;
use crate::workspace::{TargetDecl, Workspace};

/// The analyzed build.
#[derive(Default)]
pub struct Plan {
    pub graph: ActionGraph,
    /// The targets asked for, expanded, in order.
    pub targets: Vec<Label>,
    /// Every analyzed target in dependency order.
    pub order: Vec<Label>,
    pub infos: HashMap<Label, TargetInfo>,
    /// Actions run during analysis.
    pub done: HashMap<ActionId, Done>,
    /// The keys of the actions run during analysis.
    run_keys: HashMap<ActionId, Digest>,
}

impl Plan {
    /// The actions of the requested targets.
    pub fn wanted_actions(&self) -> Vec<ActionId> {
        self.targets
            .iter()
            .flat_map(|l| self.graph.by_target.get(l).cloned().unwrap_or_default())
            .collect()
    }
}

/// Expands command-line patterns into labels.
pub fn expand_patterns(ws: &Workspace, patterns: &[String]) -> Result<Vec<Label>> {
    let mut out = Vec::new();
    for text in patterns {
        let pattern = Pattern::parse(text, "").map_err(|e| Error::new(ErrorKind::Label, e))?;
        match pattern {
            Pattern::Target(label) => {
                if ws.target(&label).is_none() {
                    return Err(ws.missing_target(&label));
                }
                out.push(label);
            }
            Pattern::Recursive(prefix) => {
                let before = out.len();
                for pkg in ws
                    .packages
                    .values()
                    .filter(|p| Pattern::covers_package(&prefix, &p.name))
                {
                    out.extend(pkg.targets.values().map(|t| t.label.clone()));
                }
                if out.len() == before && !prefix.is_empty() {
                    return Err(Error::new(
                        ErrorKind::Label,
                        format!("`{text}` matches no target"),
                    ));
                }
            }
        }
    }
    out.dedup();
    Ok(out)
}

/// Analyzes the targets and everything they depend on.
pub fn plan(ws: &Workspace, rules: &RuleSet, exec: &Executor, targets: Vec<Label>) -> Result<Plan> {
    let order = target_order(ws, rules, &targets)?;
    let mut plan = Plan {
        targets,
        ..Plan::default()
    };
    for label in &order {
        let target = ws.target(label).expect("ordered targets exist");
        let rule = rules.get(&target.rule).expect("rules were checked at load");
        let mut ctx = Analysis {
            workspace: ws,
            target,
            exec,
            infos: &plan.infos,
            graph: &mut plan.graph,
            done: &mut plan.done,
            run_keys: &mut plan.run_keys,
        };
        let info = rule.analyze(target, &mut ctx)?;
        if let Some(problem) = plan.graph.take_problem() {
            return Err(problem.error(ws, &plan.graph));
        }
        plan.infos.insert(label.clone(), info);
    }
    plan.order = order;
    Ok(plan)
}

#[derive(Clone, Copy, PartialEq)]
enum Mark {
    Visiting,
    Done,
}

/// Every target reachable from `roots`, dependencies first. The walk keeps its own
/// stack, so a chain of any depth fits.
pub fn target_order(ws: &Workspace, rules: &RuleSet, roots: &[Label]) -> Result<Vec<Label>> {
    let mut walk = Walk {
        ws,
        rules,
        marks: HashMap::new(),
        order: Vec::new(),
    };
    for root in roots {
        walk.from(root)?;
    }
    Ok(walk.order)
}

/// A depth-first walk of the target graph.
struct Walk<'a> {
    ws: &'a Workspace,
    rules: &'a RuleSet,
    marks: HashMap<Label, Mark>,
    order: Vec<Label>,
}

/// A target on the walk's path, with the dependencies still to visit.
struct Frame<'a> {
    label: Label,
    target: &'a TargetDecl,
    deps: std::vec::IntoIter<Spanned<Label>>,
}

impl<'a> Walk<'a> {
    /// Visits `root` and everything below it not visited yet.
    fn from(&mut self, root: &Label) -> Result<()> {
        let mut path: Vec<Frame<'a>> = Vec::new();
        if let Some(frame) = self.enter(root, &path)? {
            path.push(frame);
        }
        while let Some(top) = path.last_mut() {
            let Some(dep) = top.deps.next() else {
                let done = path.pop().expect("the path is not empty");
                self.marks.insert(done.label.clone(), Mark::Done);
                self.order.push(done.label);
                continue;
            };
            if self.ws.target(&dep.value).is_none() {
                let mut err = self
                    .ws
                    .missing_target(&dep.value)
                    .at(top.target.attrs.location(dep.span.start));
                err.message = format!("{}, referenced by {}", err.message, top.label);
                return Err(err);
            }
            if let Some(frame) = self.enter(&dep.value, &path)? {
                path.push(frame);
            }
        }
        Ok(())
    }

    /// The frame of a target not visited yet; None if it was; an error if it is on
    /// the path already (a cycle).
    fn enter(&mut self, label: &Label, path: &[Frame<'a>]) -> Result<Option<Frame<'a>>> {
        match self.marks.get(label) {
            Some(Mark::Done) => return Ok(None),
            Some(Mark::Visiting) => {
                let labels: Vec<&Label> = path.iter().map(|f| &f.label).collect();
                return Err(cycle_error(self.ws, &labels, label));
            }
            None => {}
        }
        let target = self
            .ws
            .target(label)
            .ok_or_else(|| self.ws.missing_target(label))?;
        let rule = self
            .rules
            .get(&target.rule)
            .expect("rules were checked at load");
        let deps = rule.deps(target)?;
        self.marks.insert(label.clone(), Mark::Visiting);
        Ok(Some(Frame {
            label: label.clone(),
            target,
            deps: deps.into_iter(),
        }))
    }
}

fn cycle_error(ws: &Workspace, stack: &[&Label], again: &Label) -> Error {
    let start = stack.iter().position(|l| *l == again).unwrap_or(0);
    let mut path: Vec<String> = stack[start..].iter().map(|l| l.to_string()).collect();
    path.push(again.to_string());
    let mut err = Error::new(
        ErrorKind::Cycle,
        format!("dependency cycle: {}", path.join(" -> ")),
    );
    if let Some(target) = ws.target(stack[start]) {
        err = err.at(target.attrs.location(target.attrs.span.start));
    }
    err.hint("a target cannot depend on itself, directly or through others")
}
