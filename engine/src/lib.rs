//! kiln-engine: from BUILD.toml files to executed, cached actions.
//!
//! # Overview
//!
//! ```text
//!  Workspace::load ──▶ plan::expand_patterns ──▶ plan::plan ──────────▶ scheduler::run
//!  (kiln.toml,         (//pkg/..., :name)        (target graph, cycle    (keys, cache lookups,
//!   BUILD.toml →                                  check, Rule::analyze    sandboxed execution,
//!   TargetDecl)                                   → ActionGraph)          kiln-out/)
//! ```
//!
//! * [`workspace`]: finds the root, parses kiln.toml and every BUILD.toml into
//!   [`workspace::TargetDecl`]s whose attributes keep their source spans ([`value`]).
//! * [`label`]: `//pkg:name`, `:name`, `//pkg/...`, `//...`.
//! * [`rule`]: the [`rule::Rule`] trait that kiln-rules implements, and the
//!   [`rule::Analysis`] context through which a rule adds [`action::Action`]s.
//! * [`outputs`]: one writer per path under `kiln-out/`, checked as actions are added.
//! * [`key`]: the action key, a BLAKE3 digest of a canonical [`key::KeyRecord`].
//! * [`executor`]: runs one action in a [`sandbox`], stores and materializes outputs.
//! * [`scheduler`]: parallel DAG walk with early cutoff, fail-fast or keep-going.
//!
//! The engine knows actions, not Go: rules live in kiln-rules.

pub mod action;
pub mod error;
pub mod executor;
pub mod host;
pub mod key;
pub mod label;
pub mod noop;
pub mod outputs;
pub mod plan;
pub mod reads;
pub mod remote;
pub mod rule;
pub mod sandbox;
pub mod scheduler;
pub mod tree;
pub mod value;
pub mod workspace;

pub use error::{Error, ErrorKind, Location, Result};

/// kiln.toml sections the engine itself reads.
pub const ENGINE_SECTIONS: &[&str] = &["workspace", "sandbox", "remote", "stamp"];
