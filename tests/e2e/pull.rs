//! `oci_pull` against an open registry on loopback (Debian's docker-registry), seeded by
//! skopeo from an image kiln built: only the platforms the images on it need are
//! pulled, an image needing a platform the pinned index lacks (or that `platforms`
//! leaves out) is an error, and pulled layers keep their media types (zstd, Docker's).

use std::path::Path;

use kiln_testkit::Registry;
use serde_json::Value;

use crate::support::{Run, Workspace};

const ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
const DOCKER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
const OCI_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

use crate::registry::skopeo;

/// The manifest or index the registry serves for `reference` (plain http).
fn raw(reference: &str) -> Value {
    let out = skopeo(&["inspect", "--raw", "--tls-verify=false", reference]);
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A two-platform base image built by kiln, copied into the open registry as
/// `repository:v1` by skopeo with `args` (a compression, a format); returns its digest.
pub fn seed(repository: &str, args: &[&str]) -> String {
    let src = crate::support::workspace()
        .file("base.txt", "from the base\n")
        .file(
            "BUILD.toml",
            "[oci_image.base]\nplatforms = [\"linux/amd64\", \"linux/arm64\"]\n\
             files = { \"/etc/base.txt\" = \"base.txt\" }\nuser = \"65532:65532\"\n",
        )
        .build();
    src.kiln(&["build", "//:base"]).assert_ok();
    let layout = format!("oci:{}:latest", src.path("kiln-out/base/layout").display());
    let dest = format!("docker://{repository}:v1");
    let mut copy = vec!["copy", "-q", "--dest-tls-verify=false"];
    copy.extend(args);
    copy.extend([layout.as_str(), dest.as_str()]);
    skopeo(&copy);
    let out = skopeo(&[
        "inspect",
        "--tls-verify=false",
        "--format",
        "{{.Digest}}",
        &dest,
    ]);
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The digest of each platform's manifest in the index `digest` of `repository`.
fn platform_manifest(repository: &str, digest: &str, arch: &str) -> String {
    let index = raw(&format!("docker://{repository}@{digest}"));
    let entry = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["platform"]["architecture"] == arch)
        .unwrap_or_else(|| panic!("no {arch} in {index}"));
    entry["digest"].as_str().unwrap().to_string()
}

/// A workspace with `[oci_pull.base]` of `image` (plus `pull_extra` lines) and one
/// image on it per `(name, platform)`.
fn workspace(image: &str, pull_extra: &str, images: &[(&str, &str)]) -> Workspace {
    let mut build = format!("[oci_pull.base]\nimage = \"{image}\"\n{pull_extra}\n");
    for (name, platform) in images {
        build += &format!(
            "[oci_image.{name}]\nbase = \":base\"\nplatforms = [\"{platform}\"]\n\
             files = {{ \"/app/app.txt\" = \"app.txt\" }}\n\n"
        );
    }
    crate::support::workspace()
        .file("app.txt", "the app\n")
        .file("BUILD.toml", &build)
        .build()
}

fn build(ws: &Workspace, labels: &[&str]) -> Run {
    let mut args = vec!["build"];
    args.extend(labels);
    kiln(ws, &args)
}

/// kiln without credentials (an empty docker config, no variables).
fn kiln(ws: &Workspace, args: &[&str]) -> Run {
    let config = tempfile::tempdir().unwrap();
    std::fs::write(config.path().join("config.json"), "{}").unwrap();
    let mut cmd = ws.cmd(args);
    cmd.env("DOCKER_CONFIG", config.path())
        .env_remove("KILN_REGISTRY_USER")
        .env_remove("KILN_REGISTRY_PASSWORD");
    Run::from(cmd.output().unwrap())
}

/// The manifests the registry served, as its access log shows them.
fn served_manifests(registry: &Registry) -> Vec<String> {
    registry
        .log()
        .lines()
        .filter_map(|l| l.split("GET /v2/").nth(1))
        .filter_map(|l| l.split(" HTTP").next())
        .filter(|p| p.contains("/manifests/"))
        .map(String::from)
        .collect()
}

#[test]
fn oci_pull_takes_only_the_platforms_its_images_need() {
    let registry = Registry::start();
    let repository = format!("{}/base", registry.host());
    let digest = seed(&repository, &["--all"]);
    let amd64 = platform_manifest(&repository, &digest, "amd64");
    let arm64 = platform_manifest(&repository, &digest, "arm64");
    let reference = format!("{repository}@{digest}");
    let images = [
        ("arm", "linux/arm64"),
        ("amd", "linux/amd64"),
        ("mainframe", "linux/s390x"),
    ];
    let ws = workspace(&reference, "", &images);

    // An arm64 image: the arm64 image of the index is pulled, the amd64 one is not.
    let before = served_manifests(&registry).len();
    build(&ws, &["//:arm"]).assert_ok();
    let served = served_manifests(&registry)[before..].join("\n");
    assert!(
        served.contains(&format!("base/manifests/{arm64}")),
        "{served}"
    );
    assert!(!served.contains(&amd64), "{served}");
    assert!(ws
        .path("kiln-out/base/linux_arm64/layout/index.json")
        .is_file());
    assert!(!ws.path("kiln-out/base/linux_amd64").exists());
    let base = layout_manifest(&ws.path("kiln-out/base/linux_arm64/layout"));
    let image = layout_manifest(&ws.path("kiln-out/arm/layout"));
    assert_eq!(image["layers"][0]["digest"], base["layers"][0]["digest"]);

    // Another image needs amd64: now that one is pulled too, and arm64 not again.
    let before = served_manifests(&registry).len();
    build(&ws, &["//:arm", "//:amd"]).assert_ok();
    let served = served_manifests(&registry)[before..].join("\n");
    assert!(served.contains(&amd64), "{served}");
    assert!(!served.contains(&arm64), "{served}");

    // A platform the index lacks: named with the reference, at the image's `base`.
    let run = build(&ws, &["//:mainframe"]);
    assert_ne!(run.status, 0, "{}", run.stderr);
    for text in [
        format!("{reference} has no image for linux/s390x; it has linux/amd64, linux/arm64"),
        "pull linux/s390x of `base` //:base for //:mainframe".to_string(),
        "BUILD.toml:".to_string(),
    ] {
        assert!(run.stderr.contains(&text), "{text}: {}", run.stderr);
    }

    // `platforms` overrides: those are pulled with the target itself, and an image
    // needing another is refused before anything is pulled for it.
    let ws = workspace(&reference, "platforms = [\"linux/amd64\"]", &images);
    build(&ws, &["//:base"]).assert_ok();
    assert!(ws
        .path("kiln-out/base/linux_amd64/layout/index.json")
        .is_file());
    let run = build(&ws, &["//:arm"]);
    assert_eq!(run.status, 2, "{}", run.stderr);
    for text in [
        "`base` of //:arm is //:base, which pulls linux/amd64 only; the image needs linux/arm64",
        "hint: add \"linux/arm64\" to the `platforms` of //:base",
    ] {
        assert!(run.stderr.contains(text), "{text}: {}", run.stderr);
    }
    assert!(!ws.path("kiln-out/base/linux_arm64").exists());
}

/// The image manifest of a one-platform image in the layout `dir` (its `index.json`
/// names the image index, which names the manifest).
fn layout_manifest(dir: &Path) -> Value {
    let blob = |digest: &str| -> Value {
        let hex = digest.trim_start_matches("sha256:");
        let bytes = std::fs::read(dir.join("blobs/sha256").join(hex)).unwrap();
        serde_json::from_slice(&bytes).unwrap()
    };
    let top: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("index.json")).unwrap()).unwrap();
    let mut doc = blob(top["manifests"][0]["digest"].as_str().unwrap());
    while doc.get("manifests").is_some() {
        doc = blob(doc["manifests"][0]["digest"].as_str().unwrap());
    }
    doc
}

#[test]
fn pulled_layers_keep_their_media_types() {
    let registry = Registry::start();
    let cases = [
        (
            "zstd",
            vec!["--all", "--dest-compress-format", "zstd"],
            ZSTD,
        ),
        (
            "docker",
            vec!["--override-arch=amd64", "--format", "v2s2"],
            DOCKER_GZIP,
        ),
    ];
    for (name, args, media_type) in cases {
        let repository = format!("{}/{name}", registry.host());
        let digest = seed(&repository, &args);
        let ws = workspace(
            &format!("{repository}@{digest}"),
            "",
            &[("app", "linux/amd64")],
        );
        let push = format!(
            "\n[oci_push.push]\nimage = \":app\"\nrepository = \"{}/app-{name}\"\ntags = [\"v1\"]\n",
            registry.host()
        );
        ws.write("BUILD.toml", &(ws.read("BUILD.toml") + &push));
        build(&ws, &["//:app"]).assert_ok();

        let manifest = layout_manifest(&ws.path("kiln-out/app/layout"));
        let layers = manifest["layers"].as_array().unwrap();
        assert_eq!(layers[0]["mediaType"], media_type, "{name}: {manifest}");
        assert_eq!(layers[1]["mediaType"], OCI_GZIP, "{name}: {manifest}");
        let base = layout_manifest(&ws.path("kiln-out/base/linux_amd64/layout"));
        assert_eq!(layers[0]["digest"], base["layers"][0]["digest"], "{name}");

        // Pushed, the registry serves the layer with the same type, and skopeo copies
        // the image whole (every blob checked against its descriptor).
        kiln(&ws, &["run", "//:push"]).assert_ok();
        let pushed = format!("docker://{}/app-{name}:v1", registry.host());
        let index = raw(&pushed);
        let digest = index["manifests"][0]["digest"].as_str().unwrap();
        let remote = raw(&format!("docker://{}/app-{name}@{digest}", registry.host()));
        assert_eq!(remote["layers"][0]["mediaType"], media_type, "{remote}");
        let copy = tempfile::tempdir().unwrap();
        let dest = format!("dir:{}", copy.path().display());
        skopeo(&["copy", "-q", "--src-tls-verify=false", &pushed, &dest]);
    }
}
