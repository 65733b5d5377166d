//! Action keys: the BLAKE3 digest of a canonical record of everything that can change an
//! action's output, and nothing else.
//!
//! | component  | what                                          | why                                         |
//! |------------|-----------------------------------------------|---------------------------------------------|
//! | `schema`   | [`KEY_SCHEMA`]                                | a change in this encoding invalidates all   |
//! | `kind`     | `exec`, or `builtin:<name>`                   | different machinery, different output       |
//! | `version`  | the builtin's version (0 for exec)            | a changed builtin must rerun                |
//! | `params`   | the builtin's parameters (JSON)               | they steer the builtin                      |
//! | `tools`    | name → digest of the tool's file or tree      | a new compiler rebuilds; its path does not  |
//! | `argv`     | arguments, placeholders unexpanded            | flags change output                         |
//! | `env`      | the full declared environment                 | the sandbox has no other environment        |
//! | `workdir`  | sandbox-relative working directory            | relative paths resolve from it              |
//! | `inputs`   | (relative path, content digest, executable)   | content, not mtime: early cutoff            |
//! | `outputs`  | declared output paths                         | where the action must write                 |
//! | `platform` | target platform, if any                       | one action per platform                     |
//! | `network`  | whether the action may reach the network      | fixed-output actions are keyed apart        |
//! | `attempts` | runs in all for a failing batch member (if >1) | a retried pass is recorded as flaky        |
//! | `reads`    | the directory an action may read at will (if any) | what it can see can change its output   |
//! | `discovered` | what it read there: path → state digest (`K2` only) | only what it read (see below)         |
//! | `unisolated` | an exec action run without bubblewrap (`dir` mode) | its result is no evidence for isolated builds |
//!
//! An action with [`crate::action::Reads`] has two keys. `K1`, the record without
//! `discovered`, names the set of paths its last run read below `reads`; `K2`, the record
//! with `discovered` holding each of those paths with the digest of its state (a file's
//! content, a directory's listing, or absence: [`ReadState`]), names its result. An edit
//! to a file the action never read changes neither.
//!
//! Not in the key: the workspace's absolute path, the cache directory, the time, the
//! user, the host name. Two machines with the same inputs compute the same key.
//!
//! Not in the key either: whether the action ran alone or in a batch with others (see
//! [`crate::action::Batch`]): the key is the one the action has alone.
//!
//! The record is a plain struct serialized to JSON (struct fields in declaration order,
//! maps as `BTreeMap`s), so `kiln explain` can diff two records field by field.

use std::collections::BTreeMap;

use kiln_cache::Digest;
use serde::{Deserialize, Serialize};

/// Bump when the key encoding changes.
pub const KEY_SCHEMA: u32 = 1;

/// One input as it enters a key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyInput {
    pub path: String,
    pub digest: Digest,
    pub executable: bool,
}

/// Everything that enters an action key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyRecord {
    pub schema: u32,
    pub kind: String,
    pub version: u32,
    pub params: serde_json::Value,
    pub tools: BTreeMap<String, Digest>,
    pub argv: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub workdir: String,
    pub inputs: Vec<KeyInput>,
    pub outputs: Vec<String>,
    pub platform: Option<String>,
    pub network: bool,
    /// Left out of the encoding when 1, so actions without retries keep their keys.
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub attempts: u32,
    /// The directory the action may read at will ([`crate::action::Reads`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reads: Option<String>,
    /// What the action read there, with the digest of each path's state (`K2` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discovered: Option<Vec<KeyInput>>,
    /// Whether the process ran without isolation (`--sandbox=dir`).
    #[serde(default, skip_serializing_if = "is_false")]
    pub unisolated: bool,
}

fn is_false(b: &bool) -> bool {
    !b
}

/// The state of a path an action read, as it enters `discovered`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadState {
    /// A file (or what a link leads to): its content.
    File(Digest),
    /// A directory that was listed: its entries' names and kinds.
    Listing(Vec<(String, bool)>),
    /// A directory that was only looked at.
    Dir,
    Missing,
    /// Something else (a socket, a device): only its kind.
    Other,
}

impl ReadState {
    /// The digest that stands for the state in a key.
    pub fn digest(&self) -> Digest {
        match self {
            ReadState::File(d) => *d,
            ReadState::Listing(entries) => {
                let text: String = entries
                    .iter()
                    .map(|(name, dir)| format!("{name}{}\n", if *dir { "/" } else { "" }))
                    .collect();
                Digest::of_bytes(format!("listing\n{text}").as_bytes())
            }
            ReadState::Dir => Digest::of_bytes(b"directory"),
            ReadState::Missing => Digest::of_bytes(b"missing"),
            ReadState::Other => Digest::of_bytes(b"other"),
        }
    }
}

fn one() -> u32 {
    1
}

fn is_one(n: &u32) -> bool {
    *n == 1
}

impl KeyRecord {
    /// The canonical bytes that are hashed.
    pub fn canonical(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("key records serialize")
    }

    pub fn digest(&self) -> Digest {
        Digest::of_bytes(&self.canonical())
    }

    /// What differs between an older record and this one, in words, most telling first.
    pub fn diff(&self, old: &KeyRecord) -> Vec<String> {
        let mut out = Vec::new();
        diff_inputs(&old.inputs, &self.inputs, &mut out);
        let none = Vec::new();
        let read = |r: &KeyRecord| r.discovered.as_ref().unwrap_or(&none).clone();
        diff_inputs(&read(old), &read(self), &mut out);
        diff_maps("tool", &old.tools, &self.tools, &mut out);
        diff_maps("env", &old.env, &self.env, &mut out);
        if old.argv != self.argv {
            out.push(format!(
                "arguments changed: {:?} -> {:?}",
                old.argv, self.argv
            ));
        }
        let simple = [
            ("kind", old.kind != self.kind),
            ("builtin version", old.version != self.version),
            ("builtin parameters", old.params != self.params),
            ("working directory", old.workdir != self.workdir),
            ("declared outputs", old.outputs != self.outputs),
            ("platform", old.platform != self.platform),
            ("network access", old.network != self.network),
            ("attempts", old.attempts != self.attempts),
            ("readable directory", old.reads != self.reads),
            ("isolation", old.unisolated != self.unisolated),
            ("key schema", old.schema != self.schema),
        ];
        for (what, changed) in simple {
            if changed {
                out.push(format!("{what} changed"));
            }
        }
        out
    }
}

fn diff_inputs(old: &[KeyInput], new: &[KeyInput], out: &mut Vec<String>) {
    let old: BTreeMap<&str, &KeyInput> = old.iter().map(|i| (i.path.as_str(), i)).collect();
    let new: BTreeMap<&str, &KeyInput> = new.iter().map(|i| (i.path.as_str(), i)).collect();
    for (path, n) in &new {
        match old.get(path) {
            None => out.push(format!("input added: {path}")),
            Some(o) if o.digest != n.digest => out.push(format!(
                "input changed: {path} ({} -> {})",
                o.digest.short(),
                n.digest.short()
            )),
            Some(o) if o.executable != n.executable => {
                out.push(format!("input mode changed: {path}"))
            }
            _ => {}
        }
    }
    for path in old.keys().filter(|p| !new.contains_key(*p)) {
        out.push(format!("input removed: {path}"));
    }
}

fn diff_maps<V: PartialEq + std::fmt::Display>(
    what: &str,
    old: &BTreeMap<String, V>,
    new: &BTreeMap<String, V>,
    out: &mut Vec<String>,
) {
    for (k, v) in new {
        match old.get(k) {
            None => out.push(format!("{what} added: {k}")),
            Some(o) if o != v => out.push(format!("{what} changed: {k} ({o} -> {v})")),
            _ => {}
        }
    }
    for k in old.keys().filter(|k| !new.contains_key(*k)) {
        out.push(format!("{what} removed: {k}"));
    }
}
