//! Bit-for-bit reproducible OCI images, written by kiln itself (no Docker daemon).
//!
//! The builtin actions of the image rules call these pure functions over files and bytes;
//! nothing here spawns a process, reads the clock or looks at the host's users.
//!
//! ```text
//! LayerEntry[] ──write_layer──▶ layer.tar.gz + LayerInfo {diff_id, digest, size}
//! LayerBlob[] + ImageConfig ──write_image──▶ config + manifest blobs ─▶ Descriptor (platform)
//! Descriptor[] ──write_index──▶ image index blob ─▶ Descriptor
//! index + ref + blobs ──write_layout──▶ oci-layout, index.json, blobs/sha256/*
//! layout + platform ──write_docker_archive──▶ docker-load-able .tar
//! ```
//!
//! What decides that a digest is reproducible, and where it is handled:
//! - tar ([`tar`], [`layer`]): USTAR headers, PAX only where USTAR cannot hold a value,
//!   lexical order with parents first, modes/owners/mtime from the entries only, no
//!   uname/gname, duplicate paths refused;
//! - gzip ([`layer`]): header mtime 0, OS byte 255, level [`GZIP_LEVEL`], flate2 and its
//!   miniz_oxide backend pinned to exact versions in the workspace manifest;
//! - JSON ([`spec`]): serde structs in the spec's field order, `BTreeMap`s for maps, compact;
//! - time: `created` and `history[].created` are the caller's SOURCE_DATE_EPOCH;
//! - digests: `rootfs.diff_ids` over the uncompressed tars, manifest layer digests over the
//!   gzip blobs, everything sha256 as the spec requires (kiln's own cache keys stay BLAKE3).
//!
//! A *blobs directory* everywhere here is shaped like a layout's `blobs/`: `sha256/<hex>`.
//! Passing a layout's `blobs/` to [`write_image`] and [`write_index`] writes blobs in place.
//!
//! Beside the writer: the image rules in [`rules`] (`oci_base`, `oci_image`, `oci_pull`,
//! `oci_push`) and the registry client in [`registry`] (pull by digest, push).

mod base;
mod blob;
mod docker;
mod error;
mod image;
mod layer;
mod layout;
mod path;
mod referrer;
pub mod registry;
pub mod rules;
mod spec;
mod tar;

pub use base::{base_entries, BaseFile, User};
pub use docker::write_docker_archive;
pub use error::{Error, ErrorKind, Result};
pub use image::{write_image, write_index, ImageConfig, LayerBlob};
pub use layer::{write_layer, EntryKind, LayerEntry, LayerInfo, GZIP_LEVEL};
pub use layout::{find_manifest, write_layout};
pub use referrer::{attach_sboms, ARTIFACT_TYPE_SPDX};
pub use spec::{
    Descriptor, Index, Manifest, Platform, ANNOTATION_REF_NAME, MEDIA_TYPE_CONFIG,
    MEDIA_TYPE_INDEX, MEDIA_TYPE_LAYER_GZIP, MEDIA_TYPE_MANIFEST,
};
