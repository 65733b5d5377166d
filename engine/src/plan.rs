//! From target patterns to an action graph: expand patterns, walk the target graph
//! (reporting the whole path of any cycle), and analyze targets in dependency order.

use std::collections::HashMap;

use kiln_cache::ActionResult;

use crate::action::{ActionGraph, ActionId};
use crate::error::{Error, ErrorKind, Result};
use crate::executor::{Executor, Status};
use crate::label::{Label, Pattern};
use crate::rule::{Analysis, RuleSet, TargetInfo};
use crate::value::Spanned;
use crate::workspace::Workspace;

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
    pub done: HashMap<ActionId, (ActionResult, Status)>,
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
        };
        let info = rule.analyze(target, &mut ctx)?;
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

/// Every target reachable from `roots`, dependencies first.
pub fn target_order(ws: &Workspace, rules: &RuleSet, roots: &[Label]) -> Result<Vec<Label>> {
    let mut marks: HashMap<Label, Mark> = HashMap::new();
    let mut order = Vec::new();
    for root in roots {
        let mut stack = Vec::new();
        visit(ws, rules, root, &mut marks, &mut stack, &mut order)?;
    }
    Ok(order)
}

fn visit(
    ws: &Workspace,
    rules: &RuleSet,
    label: &Label,
    marks: &mut HashMap<Label, Mark>,
    stack: &mut Vec<Label>,
    order: &mut Vec<Label>,
) -> Result<()> {
    match marks.get(label) {
        Some(Mark::Done) => return Ok(()),
        Some(Mark::Visiting) => return Err(cycle_error(ws, stack, label)),
        None => {}
    }
    marks.insert(label.clone(), Mark::Visiting);
    stack.push(label.clone());
    let target = ws.target(label).ok_or_else(|| ws.missing_target(label))?;
    let rule = rules.get(&target.rule).expect("rules were checked at load");
    for dep in rule.deps(target)? {
        let Spanned {
            value: dep_label,
            span,
        } = dep;
        if ws.target(&dep_label).is_none() {
            let mut err = ws
                .missing_target(&dep_label)
                .at(target.attrs.location(span.start));
            err.message = format!("{}, referenced by {label}", err.message);
            return Err(err);
        }
        visit(ws, rules, &dep_label, marks, stack, order)?;
    }
    stack.pop();
    marks.insert(label.clone(), Mark::Done);
    order.push(label.clone());
    Ok(())
}

fn cycle_error(ws: &Workspace, stack: &[Label], again: &Label) -> Error {
    let start = stack.iter().position(|l| l == again).unwrap_or(0);
    let mut path: Vec<String> = stack[start..].iter().map(Label::to_string).collect();
    path.push(again.to_string());
    let mut err = Error::new(
        ErrorKind::Cycle,
        format!("dependency cycle: {}", path.join(" -> ")),
    );
    if let Some(target) = ws.target(&stack[start]) {
        err = err.at(target.attrs.location(target.attrs.span.start));
    }
    err.hint("a target cannot depend on itself, directly or through others")
}
