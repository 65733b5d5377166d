//! k8s_manifests: image references rendered as the digests of the images the build
//! made (the YAML parsed by PyYAML), shipped by releases, rolled back with them.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::support::{workspace, Workspace};

const TEMPLATE: &str = "apiVersion: apps/v1
kind: Deployment
metadata:
  name: hello
spec:
  template:
    spec:
      containers:
        - name: hello
          image: {image://:image}
        - name: sidecar
          image: \"{image:////:image}\"
";

fn module(store: &Path) -> Workspace {
    workspace()
        .file("hello.txt", "hello\n")
        .file("deploy/app.yaml", TEMPLATE)
        .file(
            "BUILD.toml",
            &format!(
                r#"
[oci_image.image]
platforms = ["linux/amd64"]
files = {{ "/etc/hello.txt" = "hello.txt" }}

[k8s_manifests.deploy]
srcs = ["deploy/*.yaml"]
images = {{ ":image" = "127.0.0.1:5000/hello" }}

[release.release]
version = "{{STABLE_GIT_DESCRIBE}}"
srcs = [":deploy"]
store = "{}"
"#,
                store.display()
            ),
        )
        .file(
            "kiln.toml",
            "[workspace]\nname = \"k8s\"\n\n[stamp]\nSTABLE_GIT_DESCRIBE = \"v1\"\n",
        )
        .build()
}

/// The YAML documents of a file, as PyYAML reads them.
fn yaml(path: &Path) -> Value {
    let out = Command::new("python3")
        .args([
            "-c",
            "import json, sys, yaml; print(json.dumps(list(yaml.safe_load_all(open(sys.argv[1])))))",
        ])
        .arg(path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn images(path: &Path) -> Vec<String> {
    let docs = yaml(path);
    docs[0]["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["image"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn manifests_name_the_built_image_by_digest_and_roll_back_with_their_release() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let ws = module(&store);
    let run = ws.kiln(&["run", "//:release"]);
    run.assert_ok();
    let digest = ws.read("kiln-out/image/index.digest").trim().to_string();
    assert!(digest.starts_with("sha256:"), "{digest}");
    let first = format!("127.0.0.1:5000/hello@{digest}");
    assert_eq!(
        images(&ws.path("kiln-out/deploy/app.yaml")),
        [first.clone(), first.clone()]
    );
    // Only the references changed.
    let rendered = ws.read("kiln-out/deploy/app.yaml");
    assert_eq!(
        rendered.replace(&first, "X"),
        TEMPLATE
            .replace("{image://:image}", "X")
            .replace("{image:////:image}", "X")
    );
    assert_eq!(
        images(&store.join("v1/app.yaml")),
        [first.clone(), first.clone()]
    );

    // A new image, a new release: its manifests name the new digest.
    ws.write("hello.txt", "hello again\n");
    ws.write(
        "kiln.toml",
        &ws.read("kiln.toml").replace("\"v1\"", "\"v2\""),
    );
    ws.kiln(&["run", "//:release"]).assert_ok();
    let second = format!(
        "127.0.0.1:5000/hello@{}",
        ws.read("kiln-out/image/index.digest").trim()
    );
    assert_ne!(first, second);
    assert_eq!(images(&store.join("current/app.yaml"))[0], second);
    // Rolling back is pointing at the previous release's manifests.
    ws.kiln(&["rollback", "v1"]).assert_ok();
    assert_eq!(images(&store.join("current/app.yaml"))[0], first);
    ws.kiln(&["rollback", "v2"]).assert_ok();
    assert_eq!(images(&store.join("current/app.yaml"))[0], second);
}

#[test]
fn a_reference_to_an_unknown_image_is_named_at_its_place() {
    let tmp = tempfile::tempdir().unwrap();
    let ws = module(&tmp.path().join("store"));
    ws.write(
        "deploy/app.yaml",
        &TEMPLATE.replace("{image://:image}\n", "{image://:other}\n"),
    );
    let run = ws.kiln(&["build", "//:deploy"]);
    assert_eq!(run.status, 2, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("deploy/app.yaml:10:18: //:other is not one of the images of //:deploy"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("hint: add it to images"),
        "{}",
        run.stderr
    );

    ws.write("deploy/app.yaml", TEMPLATE);
    ws.write(
        "BUILD.toml",
        &ws.read("BUILD.toml").replace(
            "\":image\" = \"127.0.0.1:5000/hello\"",
            "\":image\" = \"Not A Repo\"",
        ),
    );
    let run = ws.kiln(&["build", "//:deploy"]);
    assert_eq!(run.status, 2, "{}", run.stderr);
    assert!(run.stderr.contains("BUILD.toml:"), "{}", run.stderr);
}
