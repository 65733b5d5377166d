//! End-to-end tests: each drives the real `kiln` binary on a workspace written to a
//! temporary directory, with its own cache directory.
//!
//! Modules:
//! - `support`: the workspace builder and command runner every test uses.
//! - `core`: incremental builds, early cutoff, key stability across paths and caches,
//!   sandboxing, crash safety, concurrent builds.
//! - `errors`: messages for broken BUILD files, cycles, missing labels and files.
//! - `go`: go_test and go_binary with the real Go toolchain.
//! - `gocacheprog`: Go's compile cache served from kiln's store.
//! - `gomod`: parity with `go test` on modules shaped like real ones; what reruns.
//! - `index`: a damaged cache index is moved aside and rebuilt.
//! - `image`: strip, upx and OCI images, checked with skopeo and umoci, pushed to a registry.
//! - `input`: bad input as an attacker writes it: overlapping and malformed outputs,
//!   bad arguments, non-UTF-8 files, deep and large workspaces.
//! - `init`: `kiln init` on modules shaped like public ones, checked by building them.
//! - `insight`: explain, --profile, --json, verify-repro.
//! - `registry`: pushing to registries with credentials (config.json, helpers,
//!   variables), Basic and token auth, TLS from a private CA, retries.
//! - `release`: checksums, provenance, cache housekeeping.
//! - `pull`: oci_pull: only the platforms the images need, media types of pulled layers.
//! - `reapi`: remote execution and the gRPC cache on buildbox-casd.
//! - `reapi_tls`: `grpcs://` and the bearer token, casd behind nginx terminating TLS and
//!   checking the token; refusals without the token or the CA.
//! - `remote_go`: go_test runs on buildbox-casd: keyed by what they read as here, shared
//!   with local builds, failures shown and not cached, what runs here again and why.
//! - `buildgrid`: remote execution on BuildGrid with several workers: parallelism from the
//!   fleet, a worker lost mid-job, outputs identical to a local build, failures.
//! - `registry`: pushes and pulls against real registries with credentials and TLS.
//! - `remote`: a cache shared through `kiln serve` and nginx WebDAV, and its faults.
//! - `serve`: `kiln serve` against an attacker (slow connections, ambiguous lengths).
//! - `trust`: attacks by actions, remotes, edits and signals, and their defences.
//! - `cover`: go_test coverage: merged profiles, gates, coverpkg.
//! - `vet`: go_vet findings, per-package caching, a vet tool built from the module.
//! - `modcheck`: go_mod_check: tidy, verify, vendor/ consistency, offline.
//! - `history`: release stores, `kiln release list`, `kiln rollback` back and forth.
//! - `hostile`: a repository against the host: links checked into kiln-out/, a hostile
//!   kiln.toml, a .git of another user above the workspace; an action of kiln run as
//!   root against the kernel's settings and the secrets of /etc.
//! - `sbom`: go_sbom documents checked with spdx-tools, reproducible, released.
//! - `signing`: signed releases verified by minisign and securesystemslib.
//! - `k8s`: k8s_manifests rendered with image digests, parsed as YAML, rolled back.
//! - `service`: the example service's binary: probes, environment, graceful shutdown.

mod buildgrid;
mod core;
mod cover;
mod errors;
mod go;
mod gocacheprog;
mod gomod;
mod history;
mod hostile;
mod image;
mod index;
mod init;
mod input;
mod insight;
mod k8s;
mod modcheck;
mod pull;
mod reapi;
mod reapi_tls;
mod registry;
mod release;
mod remote;
mod remote_go;
mod sbom;
mod serve;
mod service;
mod signing;
mod support;
mod trust;
mod vet;
