//! kiln-rules: one module per rule, each turning a target's attributes into actions.
//!
//! | rule        | module        | actions                                  |
//! |-------------|---------------|------------------------------------------|
//! | `genrule`   | [`genrule`]   | one `/bin/sh -c` action                  |
//! | `filegroup` | [`filegroup`] | none: names files                        |
//! | `go_test`   | [`go::test`]  | `go list`, then one `go test` per package (and a coverage merge, [`go::cover`]) |
//! | `go_binary` | [`go::binary`]| `go list`, then one `go build` per platform |
//! | `strip`     | [`strip`]     | one `strip` per ELF platform of the source |
//! | `upx`       | [`upx`]       | one `upx` per platform upx can pack      |
//! | `oci_base`  | [`oci_base`]  | one base layer (builtin)                 |
//! | `oci_image` | [`oci_image`] | a layer and a config/manifest per platform, one index + layout (builtins) |
//! | `oci_push`  | [`oci_push`]  | a push plan; `kiln run` pushes to a registry |
//! | `oci_pull`  | [`oci_pull`]  | a base image pulled by digest (fixed-output builtin) |
//! | `checksums` | [`checksums`] | one builtin: copies under stable names + `SHA256SUMS` |
//! | `release`   | [`release`]   | one builtin: files under `<version>/` + in-toto/SLSA provenance |
//! | `go_vet`    | [`go::vet`]   | one `go vet -json` per package, a report failing on findings |
//! | `go_mod_check` | [`go::modcheck`] | `go mod tidy -diff`, `go mod verify`, vendor/ against `go mod vendor` |
//! | `go_sbom`   | [`go::sbom`]  | one builtin per platform: SPDX 2.3 JSON from the binary's build info |
//! | `k8s_manifests` | [`k8s`]   | one builtin: templates with `{image://LABEL}` rendered as `REPO@sha256:…` |
//!
//! A rule never spawns a process itself: it returns actions, and the engine runs them.
//! [`all`] builds the rule set the `kiln` binary uses.

pub mod checksums;
pub mod filegroup;
pub mod genrule;
pub mod go;
pub mod k8s;
pub mod oci;
pub mod oci_base;
pub mod oci_image;
pub mod oci_pull;
pub mod oci_push;
pub mod oci_rules;
pub mod release;
pub mod release_store;
pub mod sign;
pub mod strip;
mod transform;
pub mod upx;

use kiln_engine::rule::RuleSet;

/// Every rule kiln knows.
pub fn all() -> RuleSet {
    let mut rules = RuleSet::default();
    rules.add(Box::new(genrule::Genrule));
    rules.add(Box::new(filegroup::Filegroup));
    rules.add(Box::new(go::test::GoTest));
    rules.add(Box::new(go::binary::GoBinary));
    rules.add(Box::new(strip::Strip));
    rules.add(Box::new(upx::Upx));
    rules.add(Box::new(oci_base::OciBase));
    rules.add(Box::new(oci_image::OciImage));
    rules.add(Box::new(oci_push::OciPush));
    rules.add(Box::new(oci_pull::OciPull));
    rules.add(Box::new(checksums::Checksums));
    rules.add(Box::new(release::Release));
    rules.add(Box::new(go::vet::GoVet));
    rules.add(Box::new(go::modcheck::GoModCheck));
    rules.add(Box::new(go::sbom::GoSbom));
    rules.add(Box::new(k8s::K8sManifests));
    rules
}
