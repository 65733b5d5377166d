//! kiln-rules: one module per rule, each turning a target's attributes into actions,
//! grouped by domain: [`generic`], [`go`], [`oci`] (images and registries) and
//! [`release`].
//!
//! | rule        | module        | actions                                  |
//! |-------------|---------------|------------------------------------------|
//! | `genrule`   | [`generic::genrule`]   | one `/bin/sh -c` action                  |
//! | `filegroup` | [`generic::filegroup`] | none: names files                        |
//! | `go_test`   | [`go::test`]  | `go list`, then one `go test` per package (and a coverage merge, [`go::cover`]) |
//! | `go_binary` | [`go::binary`]| `go list`, then one `go build` per platform |
//! | `go_vet`    | [`go::vet`]   | one `go vet -json` per package, a report failing on findings |
//! | `go_mod_check` | [`go::modcheck`] | `go mod tidy -diff`, `go mod verify`, vendor/ against `go mod vendor` |
//! | `go_sbom`   | [`go::sbom`]  | one builtin per platform: SPDX 2.3 JSON from the binary's build info |
//! | `oci_base`  | [`oci::rules::base`]  | one base layer (builtin)                 |
//! | `oci_image` | [`oci::rules::image`] | a layer and a config/manifest per platform, one index + layout (builtins) |
//! | `oci_push`  | [`oci::rules::push`]  | a push plan; `kiln run` pushes to a registry |
//! | `oci_pull`  | [`oci::rules::pull`]  | a base image pulled by digest (a fixed-output builtin per platform) |
//! | `strip`     | [`release::strip`]     | one `strip` per ELF platform of the source |
//! | `upx`       | [`release::upx`]       | one `upx` per platform upx can pack      |
//! | `checksums` | [`release::checksums`] | one builtin: copies under stable names + `SHA256SUMS` |
//! | `release`   | [`release`]   | one builtin: files under `<version>/` + in-toto/SLSA provenance |
//! | `k8s_manifests` | [`release::k8s`]   | one builtin: templates with `{image://LABEL}` rendered as `REPO@sha256:…` |
//!
//! A rule never spawns a process itself: it returns actions, and the engine runs them.
//! [`all`] builds the rule set the `kiln` binary uses.

pub mod generic;
pub mod go;
pub mod oci;
pub mod release;

use kiln_engine::rule::RuleSet;

/// Every rule kiln knows.
pub fn all() -> RuleSet {
    let mut rules = RuleSet::default();
    rules.add(Box::new(generic::genrule::Genrule));
    rules.add(Box::new(generic::filegroup::Filegroup));
    rules.add(Box::new(go::test::GoTest));
    rules.add(Box::new(go::binary::GoBinary));
    rules.add(Box::new(release::strip::Strip));
    rules.add(Box::new(release::upx::Upx));
    rules.add(Box::new(oci::rules::base::OciBase));
    rules.add(Box::new(oci::rules::image::OciImage));
    rules.add(Box::new(oci::rules::push::OciPush));
    rules.add(Box::new(oci::rules::pull::OciPull));
    rules.add(Box::new(release::checksums::Checksums));
    rules.add(Box::new(release::Release));
    rules.add(Box::new(go::vet::GoVet));
    rules.add(Box::new(go::modcheck::GoModCheck));
    rules.add(Box::new(go::sbom::GoSbom));
    rules.add(Box::new(release::k8s::K8sManifests));
    rules
}
