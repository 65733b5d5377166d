//! cgo for the packages that need it, in targets built without it otherwise.
//!
//! kiln builds Go without cgo (`CGO_ENABLED=0`): binaries are static and their keys
//! hold no C toolchain. But a package whose tests link code that uses cgo (`import
//! "C"`), its own or a dependency's such as github.com/mattn/go-sqlite3, does not build
//! without cgo (only cgo files) or builds a stand-in that fails every test (go-sqlite3's
//! `!cgo` files), where `go test` on a host with gcc passes. [`CgoUsers`] finds those
//! packages with one `go list -deps -test` with cgo on ([`Lister::cgo_users`]); their
//! tests and vet are then built with cgo, from a listing with cgo on, and the host's gcc,
//! as and ld as tools (hashed into their keys, as `race = true` has them for every
//! package).

use std::collections::BTreeSet;

use kiln_engine::action::Tool;
use kiln_engine::rule::Analysis;
use kiln_engine::Result;

use super::list::{Lister, Listing, Packages};
use super::{cgo_tools, Module};

/// The packages built with cgo in a target whose others are built without (no `race`):
/// those whose tests link code that uses cgo (`import "C"`), theirs or a dependency's
/// (github.com/mattn/go-sqlite3), which `go test` on a host with a C compiler builds
/// with cgo and which without cgo build but fail (or are not built at all). As `race =
/// true` does for every package, they get the host's gcc as a tool of their build.
/// `go_test` and `go_vet` ask; `go_binary` does not: binaries are built without cgo.
pub struct CgoUsers {
    dirs: BTreeSet<String>,
    /// The module listed with cgo on (cgo files are then part of their package).
    pub packages: Packages,
    /// The C toolchain: gcc, as, ld.
    pub tools: Vec<Tool>,
}

impl CgoUsers {
    /// The selected packages that need cgo, or None when none does (or all are built
    /// with cgo anyway: `listing.cgo`, as under `race`).
    pub fn read(
        ctx: &mut Analysis<'_>,
        lister: &Lister,
        module: &Module,
        listing: &Listing<'_>,
        packages: &Packages,
        selected: &[String],
    ) -> Result<Option<CgoUsers>> {
        if listing.cgo {
            return Ok(None); // `race`: every package is built with cgo.
        }
        let users = lister.cgo_users(ctx, module, listing)?;
        let dirs: BTreeSet<String> = selected
            .iter()
            .filter(|d| users.contains_key(*d))
            .cloned()
            .collect();
        let Some(first) = dirs.first() else {
            return Ok(None);
        };
        let tools = cgo_tools(ctx).map_err(|mut e| {
            let pkg = &packages.by_dir[first].import_path;
            e.hint = Some(format!(
                "{pkg} (with its tests) links code that uses cgo (import \"C\"), which kiln \
                 builds with the host's C compiler, as go does; install gcc, or leave the \
                 package out of `packages`"
            ));
            e
        })?;
        let cgo = Listing {
            cgo: true,
            ..*listing
        };
        Ok(Some(CgoUsers {
            dirs,
            packages: lister.list(ctx, module, &cgo)?,
            tools,
        }))
    }
}

impl CgoUsers {
    /// Whether the package in `dir` is built with cgo.
    pub fn uses(&self, dir: &str) -> bool {
        self.dirs.contains(dir)
    }

    /// The listing the package in `dir` is built from: `plain`, or the one with cgo
    /// files when `users` builds it with cgo.
    pub fn packages_of<'a>(
        users: Option<&'a CgoUsers>,
        plain: &'a Packages,
        dir: &str,
    ) -> &'a Packages {
        match users {
            Some(users) if users.uses(dir) => &users.packages,
            _ => plain,
        }
    }

    /// The C toolchain of the package in `dir`'s build: none unless `users` builds it
    /// with cgo.
    pub fn tools_of<'a>(users: Option<&'a CgoUsers>, dir: &str) -> &'a [Tool] {
        match users {
            Some(users) if users.uses(dir) => &users.tools,
            _ => &[],
        }
    }
}
