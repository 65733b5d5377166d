//! kiln-rules: one module per rule, each turning a target's attributes into actions.
//!
//! | rule        | module        | actions                                  |
//! |-------------|---------------|------------------------------------------|
//! | `genrule`   | [`genrule`]   | one `/bin/sh -c` action                  |
//! | `filegroup` | [`filegroup`] | none: names files                        |
//! | `go_test`   | [`go::test`]  | `go list`, then one `go test` per package |
//! | `go_binary` | [`go::binary`]| `go list`, then one `go build` per platform |
//!
//! A rule never spawns a process itself: it returns actions, and the engine runs them.
//! [`all`] builds the rule set the `kiln` binary uses.

pub mod filegroup;
pub mod genrule;
pub mod go;
pub mod oci;

use kiln_engine::rule::RuleSet;

/// Every rule kiln knows.
pub fn all() -> RuleSet {
    let mut rules = RuleSet::default();
    rules.add(Box::new(genrule::Genrule));
    rules.add(Box::new(filegroup::Filegroup));
    rules.add(Box::new(go::test::GoTest));
    rules.add(Box::new(go::binary::GoBinary));
    rules
}
