//! A plan as BUILD.toml text.

use super::decide::{Plan, TestTarget};
use super::module;
use super::names::Binary;

pub fn build_toml(plan: &Plan) -> String {
    let mut text = String::from("# Written by `kiln init` from what `go list` reports.\n");
    match &plan.test {
        Some(test) => text.push_str(&go_test(test)),
        None => text.push_str("\n# No go_test: no package that loads has tests.\n"),
    }
    for binary in &plan.binaries {
        text.push_str(&go_binary(binary));
    }
    if !plan.left_out.is_empty() {
        text.push_str("\n# Left out by kiln init:\n");
    }
    for (dir, why) in &plan.left_out {
        text.push_str(&format!("# {}: {why}\n", module::pattern(dir)));
    }
    text
}

fn go_test(test: &TestTarget) -> String {
    let mut text = format!("\n[go_test.unit]\npackages = {}\n", list(&test.packages));
    if !test.tools.is_empty() {
        text.push_str(&format!("tools = {}\n", list(&test.tools)));
    }
    text
}

fn go_binary(binary: &Binary) -> String {
    let main = &binary.main;
    let mut text = format!("\n[go_binary.{}]\n", binary.name);
    text.push_str(&format!("main = {}\n", string(&module::pattern(&main.dir))));
    if !main.tags.is_empty() {
        text.push_str(&format!("tags = {}\n", list(&main.tags)));
    }
    text.push_str("ldflags = [\"-s\", \"-w\"]\n");
    text
}

fn list(items: &[String]) -> String {
    let items: Vec<String> = items.iter().map(|s| string(s)).collect();
    format!("[{}]", items.join(", "))
}

/// A TOML basic string.
fn string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' | '\\' => out.extend(['\\', c]),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
