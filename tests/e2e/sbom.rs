//! go_sbom: SPDX 2.3 documents from real Go binaries' build information, validated by
//! spdx-tools (`pyspdxtools`), byte-identical across paths and caches, carried by the
//! release and its checksums.

use std::process::Command;

use serde_json::Value;

use crate::go::with_proxied_dep;
use crate::support::{go_workspace, Workspace};

const BUILD: &str = r#"
[go_binary.app]
main = "./cmd/app"
platforms = ["linux/amd64", "linux/arm64"]
ldflags = ["-s", "-w"]

[go_sbom.sbom]
binary = ":app"

[checksums.sums]
srcs = [":app", ":sbom"]

[release.release]
version = "v1.0.0"
srcs = [":sums"]
"#;

fn module(build: &str) -> (tempfile::TempDir, Workspace) {
    let builder = go_workspace()
        .file("go.mod", "module example.com/m\n\ngo 1.23\n\nrequire example.com/dep v1.0.0\n")
        .file(
            "cmd/app/main.go",
            "package main\n\nimport (\n\t\"fmt\"\n\n\t\"example.com/dep\"\n)\n\nfunc main() { fmt.Println(dep.Answer()) }\n",
        )
        .file("BUILD.toml", build);
    with_proxied_dep(builder, &[&["mod", "tidy"]])
}

const DOC: &str = "kiln-out/sbom/linux_amd64/app.spdx.json";

/// sha256 of a file, by the real sha256sum.
fn sha256(path: &std::path::Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    String::from_utf8(out.stdout).unwrap()[..64].to_string()
}

fn hex_of_h1(sum: &str) -> String {
    let out = Command::new("python3")
        .args([
            "-c",
            "import base64,sys; print(base64.b64decode(sys.argv[1][3:]).hex())",
            sum,
        ])
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[test]
fn sbom_documents_validate_name_every_module_and_are_reproducible() {
    let (_proxy, ws) = module(BUILD);
    ws.kiln(&["build", "//:release"]).assert_ok();
    for platform in ["linux_amd64", "linux_arm64"] {
        let doc = ws.path(&format!("kiln-out/sbom/{platform}/app.spdx.json"));
        let out = Command::new("pyspdxtools")
            .arg("-i")
            .arg(&doc)
            .output()
            .expect("spdx-tools is needed: run .ci/install-deps");
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{platform}: {said}");
        assert!(
            !said.to_lowercase().contains("invalid"),
            "{platform}: {said}"
        );
    }
    let doc: Value = serde_json::from_str(&ws.read(DOC)).unwrap();
    assert_eq!(doc["spdxVersion"], "SPDX-2.3");
    let packages = doc["packages"].as_array().unwrap();
    let binary = &packages[0];
    let sha = sha256(&ws.path("kiln-out/app/linux_amd64/app"));
    assert_eq!(binary["checksums"][0]["checksumValue"], sha);
    let comment = binary["comment"].as_str().unwrap();
    for part in [
        "example.com/m/cmd/app",
        "go1.",
        "GOOS=linux",
        "GOARCH=amd64",
        "-trimpath=true",
        "CGO_ENABLED=0",
    ] {
        assert!(comment.contains(part), "{part}: {comment}");
    }
    let dep = packages
        .iter()
        .find(|p| p["name"] == "example.com/dep")
        .expect("the dependency is listed");
    assert_eq!(dep["versionInfo"], "v1.0.0");
    let go_sum = ws.read("go.sum");
    let h1 = go_sum
        .lines()
        .find(|l| l.starts_with("example.com/dep v1.0.0 h1:"))
        .unwrap()
        .rsplit(' ')
        .next()
        .unwrap();
    assert_eq!(dep["checksums"][0]["checksumValue"], hex_of_h1(h1));
    assert_eq!(
        dep["externalRefs"][0]["referenceLocator"],
        "pkg:golang/example.com/dep@v1.0.0"
    );
    assert!(packages.iter().any(|p| p["name"] == "stdlib"));

    // The release carries the documents, and its checksums cover them.
    let sums = ws.read("kiln-out/release/v1.0.0/SHA256SUMS");
    let released = ws.path("kiln-out/release/v1.0.0/sbom_linux_amd64.json");
    assert_eq!(std::fs::read_to_string(&released).unwrap(), ws.read(DOC));
    assert!(
        sums.contains(&format!("{}  sbom_linux_amd64.json\n", sha256(&released))),
        "{sums}"
    );

    // The same bytes at another path with another cache.
    let copy = ws.copy();
    copy.kiln(&["build", "//:sbom"]).assert_ok();
    assert_eq!(copy.read(DOC), ws.read(DOC));
}

#[test]
fn sbom_needs_a_binary() {
    let (_proxy, ws) = module(BUILD);
    ws.write("BUILD.toml", "[go_sbom.sbom]\n");
    let run = ws.kiln(&["build", "//:sbom"]);
    assert_eq!(run.status, 2, "{}", run.stderr);
    assert!(
        run.stderr.contains("a go_sbom needs `binary`"),
        "{}",
        run.stderr
    );
}

const WITH_IMAGE: &str = r#"
[go_binary.app]
main = "./cmd/app"
platforms = ["linux/amd64", "linux/arm64"]

[go_sbom.sbom]
binary = ":app"

[oci_image.image]
files = { "/app/app" = ":app" }
sbom = ":sbom"

[oci_push.push]
image = ":image"
repository = "REPOSITORY"
tags = ["v1"]
"#;

fn blob(layout: &std::path::Path, digest: &str) -> Vec<u8> {
    std::fs::read(
        layout
            .join("blobs/sha256")
            .join(digest.trim_start_matches("sha256:")),
    )
    .unwrap()
}

#[test]
fn images_carry_their_sbom_as_a_referring_artifact_and_push_it() {
    let registry = kiln_testkit::Registry::start();
    let repository = format!("127.0.0.1:{}/hello/app", registry.port());
    let (_proxy, ws) = module(&WITH_IMAGE.replace("REPOSITORY", &repository));
    let run = ws.kiln(&["run", "//:push"]);
    run.assert_ok();
    let layout = ws.path("kiln-out/image/layout");
    let index: Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let entries = index["manifests"].as_array().unwrap();
    assert_eq!(entries.len(), 3, "{index}");
    let image: Value =
        serde_json::from_slice(&blob(&layout, entries[0]["digest"].as_str().unwrap())).unwrap();
    for entry in &entries[1..] {
        assert_eq!(entry["artifactType"], "application/spdx+json");
        let digest = entry["digest"].as_str().unwrap();
        let manifest: Value = serde_json::from_slice(&blob(&layout, digest)).unwrap();
        let subject = manifest["subject"]["digest"].as_str().unwrap();
        let platform = image["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["digest"] == subject)
            .expect("the subject is one of the image's manifests")["platform"]["architecture"]
            .as_str()
            .unwrap()
            .to_string();
        let document = blob(&layout, manifest["layers"][0]["digest"].as_str().unwrap());
        assert_eq!(
            document,
            std::fs::read(ws.path(&format!("kiln-out/sbom/linux_{platform}/app.spdx.json")))
                .unwrap(),
            "{platform}"
        );
        // Pushed with the image: the registry has it by digest.
        let out = Command::new("skopeo")
            .args(["inspect", "--raw", "--tls-verify=false"])
            .arg(format!("docker://{repository}@{digest}"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            serde_json::from_slice::<Value>(&out.stdout).unwrap(),
            manifest
        );
    }
    // The image is still found by its tag, and the same bytes come again.
    let out = Command::new("skopeo")
        .args(["inspect", "--raw"])
        .arg(format!("oci:{}:latest", layout.display()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(serde_json::from_slice::<Value>(&out.stdout).unwrap(), image);
    let copy = ws.copy();
    copy.kiln(&["build", "//:image"]).assert_ok();
    assert_eq!(
        copy.read("kiln-out/image/layout/index.json"),
        ws.read("kiln-out/image/layout/index.json")
    );
}
