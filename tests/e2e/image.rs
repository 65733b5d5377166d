//! strip, upx and OCI images end to end, with the real tools: a Go binary is stripped,
//! packed and put in a two-platform image on a built base; skopeo and umoci read the
//! layout, the binaries still run, digests are reproducible across paths and caches, an
//! entrypoint change reruns no layer action, and `kiln run` pushes to Debian's
//! docker-registry on loopback.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

use crate::support::{go_root, go_workspace, Builder, Workspace};

const BUILD: &str = r#"
[go_binary.app]
main = "./cmd/app"
platforms = ["linux/amd64", "linux/arm64"]
x_defs = { "main.version" = "{STABLE_GIT_DESCRIBE}" }

[strip.app_stripped]
src = ":app"

[upx.app_packed]
src = ":app_stripped"
args = ["-1"]

[oci_base.static]
passwd = [{ name = "nonroot", uid = 65532, gid = 65532, home = "/home/nonroot" }]
files = { "/etc/ssl/certs/ca-certificates.crt" = "ca.crt" }

[oci_image.image]
base = ":static"
files = { "/app/server" = ":app_packed" }
entrypoint = ["/app/server"]
user = "65532:65532"
env = { TZ = "UTC" }
labels = { "org.opencontainers.image.version" = "{STABLE_GIT_DESCRIBE}" }
exposed_ports = ["8080/tcp"]
docker_archive = true
"#;

/// A Go module with a main package printing its stamped version, and the pipeline above.
fn pipeline() -> Builder {
    go_workspace()
        .file(
            "kiln.toml",
            &format!(
                "[workspace]\nname = \"img\"\n\n[go]\nroot = \"{}\"\n\n[stamp]\nSTABLE_GIT_DESCRIBE = \"v1.2.3\"\nSOURCE_DATE_EPOCH = \"1714564800\"\n",
                go_root()
            ),
        )
        .file(
            "cmd/app/main.go",
            "package main\n\nimport \"fmt\"\n\nvar version = \"dev\"\n\nfunc main() { fmt.Println(\"app\", version) }\n",
        )
        .file("ca.crt", "-----BEGIN CERTIFICATE-----\nnot a real one\n")
        .file("BUILD.toml", BUILD)
}

const LAYOUT: &str = "kiln-out/image/layout";

fn tool(program: &str, args: &[&str]) -> Output {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program} is needed (run .ci/install-deps): {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn json(out: Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap()
}

fn index_digest(ws: &Workspace) -> String {
    ws.read("kiln-out/image/index.digest").trim().to_string()
}

#[test]
fn pipeline_builds_an_image_skopeo_and_umoci_read() {
    let ws = pipeline().build();
    ws.kiln(&["build", "//:image"]).assert_ok();

    // The stripped and the packed amd64 binaries still run.
    for bin in ["app_stripped", "app_packed"] {
        let path = ws.path(&format!("kiln-out/{bin}/linux_amd64/app"));
        let out = tool(path.to_str().unwrap(), &[]);
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "app v1.2.3\n",
            "{bin}"
        );
    }
    let size = |p: &str| std::fs::metadata(ws.path(p)).unwrap().len();
    assert!(
        size("kiln-out/app_packed/linux_amd64/app") < size("kiln-out/app_stripped/linux_amd64/app")
    );

    let layout = ws.path(LAYOUT);
    let oci = format!("oci:{}:latest", layout.display());
    let raw = json(tool("skopeo", &["inspect", "--raw", &oci]));
    let arches: Vec<&str> = raw["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["platform"]["architecture"].as_str().unwrap())
        .collect();
    assert_eq!(arches, ["amd64", "arm64"]);
    for arch in ["amd64", "arm64"] {
        let config = json(tool(
            "skopeo",
            &["inspect", "--override-arch", arch, "--config", &oci],
        ));
        assert_eq!(config["architecture"], arch);
        assert_eq!(config["os"], "linux");
        assert_eq!(config["created"], "2024-05-01T12:00:00Z");
        assert_eq!(config["config"]["User"], "65532:65532");
        assert_eq!(config["config"]["Entrypoint"][0], "/app/server");
        assert_eq!(config["config"]["Env"][0], "TZ=UTC");
        assert_eq!(
            config["config"]["Labels"]["org.opencontainers.image.version"],
            "v1.2.3"
        );
    }

    // skopeo copies it to a docker-archive; kiln's own archive reads too.
    let tmp = tempfile::tempdir().unwrap();
    let archive = tmp.path().join("image.tar");
    tool(
        "skopeo",
        &[
            "copy",
            "--override-arch",
            "amd64",
            &oci,
            &format!("docker-archive:{}:img:v1", archive.display()),
        ],
    );
    let inspected = json(tool(
        "skopeo",
        &["inspect", &format!("docker-archive:{}", archive.display())],
    ));
    assert_eq!(inspected["Architecture"], "amd64");
    let ours = ws.path("kiln-out/image/linux_arm64.tar");
    let inspected = json(tool(
        "skopeo",
        &["inspect", &format!("docker-archive:{}", ours.display())],
    ));
    assert_eq!(inspected["Architecture"], "arm64");

    check_unpacked(&ws, &oci, tmp.path());
}

/// umoci unpacks the amd64 image: the binary is at /app/server, 0755, root-owned in the
/// layer, identical to the packed binary, and the runtime config has user, args and env.
fn check_unpacked(ws: &Workspace, oci: &str, tmp: &Path) {
    let single = tmp.join("single");
    tool(
        "skopeo",
        &[
            "copy",
            "--override-arch",
            "amd64",
            oci,
            &format!("oci:{}:amd64", single.display()),
        ],
    );
    let bundle = tmp.join("bundle");
    tool(
        "umoci",
        &[
            "unpack",
            "--rootless",
            "--image",
            &format!("{}:amd64", single.display()),
            bundle.to_str().unwrap(),
        ],
    );
    let server = bundle.join("rootfs/app/server");
    let meta = std::fs::metadata(&server).unwrap();
    assert_eq!(meta.permissions().mode() & 0o7777, 0o755);
    assert_eq!(
        std::fs::read(&server).unwrap(),
        std::fs::read(ws.path("kiln-out/app_packed/linux_amd64/app")).unwrap()
    );
    assert!(bundle.join("rootfs/etc/passwd").is_file());
    let runtime: Value =
        serde_json::from_slice(&std::fs::read(bundle.join("config.json")).unwrap()).unwrap();
    assert_eq!(runtime["process"]["user"]["uid"], 65532);
    assert_eq!(runtime["process"]["user"]["gid"], 65532);
    assert_eq!(runtime["process"]["args"][0], "/app/server");
    let env: Vec<&str> = runtime["process"]["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(env.contains(&"TZ=UTC"), "{env:?}");

    let listing = tool(
        "tar",
        &[
            "--numeric-owner",
            "-tvzf",
            ws.path("kiln-out/image/linux_amd64/layer.tar.gz")
                .to_str()
                .unwrap(),
        ],
    );
    let listing = String::from_utf8_lossy(&listing.stdout);
    let line = listing
        .lines()
        .find(|l| l.ends_with(" app/server"))
        .expect("app/server in the layer");
    assert!(line.starts_with("-rwxr-xr-x 0/0 "), "{line}");
    assert!(
        line.contains(" 2024-05-01 "),
        "mtime is SOURCE_DATE_EPOCH: {line}"
    );
    let base = tool(
        "tar",
        &[
            "--numeric-owner",
            "-tvzf",
            ws.path("kiln-out/static/layer.tar.gz").to_str().unwrap(),
        ],
    );
    let base = String::from_utf8_lossy(&base.stdout);
    assert!(
        base.lines()
            .any(|l| l.starts_with("drwx------ 65532/65532 ") && l.ends_with(" home/nonroot/")),
        "{base}"
    );
}

#[test]
fn two_paths_and_two_caches_give_the_same_index_digest() {
    let ws = pipeline().build();
    ws.kiln(&["build", "//:image"]).assert_ok();
    let other = ws.copy();
    other.kiln(&["build", "//:image"]).assert_ok();
    assert_eq!(index_digest(&ws), index_digest(&other));
    assert!(index_digest(&ws).starts_with("sha256:"));
    assert_eq!(
        ws.read(&format!("{LAYOUT}/index.json")),
        other.read(&format!("{LAYOUT}/index.json"))
    );
    assert_eq!(
        std::fs::read(ws.path("kiln-out/image/linux_amd64.tar")).unwrap(),
        std::fs::read(other.path("kiln-out/image/linux_amd64.tar")).unwrap()
    );
}

#[test]
fn changing_only_the_entrypoint_reruns_config_and_manifest_not_layers() {
    let ws = pipeline().build();
    ws.kiln(&["build", "//:image"]).assert_ok();
    let before = index_digest(&ws);
    let noop = ws.kiln(&["build", "//:image"]);
    noop.assert_ok();
    assert_eq!(noop.executed(), 0, "{}", noop.stderr);

    ws.write(
        "BUILD.toml",
        &BUILD.replace(
            r#"entrypoint = ["/app/server"]"#,
            r#"entrypoint = ["/app/server", "-v"]"#,
        ),
    );
    let run = ws.kiln(&["build", "//:image"]);
    run.assert_ok();
    // (go list reruns: BUILD.toml is a file of the Go module's root directory.)
    let ran: Vec<String> = run
        .ran()
        .into_iter()
        .filter(|a| !a.starts_with("GoList"))
        .collect();
    assert_eq!(
        ran,
        [
            "OciConfig //:image [linux/amd64]",
            "OciConfig //:image [linux/arm64]",
            "OciLayout //:image",
        ]
    );
    assert_ne!(index_digest(&ws), before);
}

#[test]
fn bad_image_paths_are_errors_naming_the_target_and_place() {
    let cases = [
        (r#""app/server" = "bin.sh""#, "must be absolute"),
        (r#""/app/../etc/passwd" = "bin.sh""#, "`..` component"),
        (r#""/app//server" = "bin.sh""#, "empty component"),
        (
            r#""/app" = "bin.sh", "/app/server" = "bin.sh""#,
            "conflicts with `/app`",
        ),
    ];
    for (files, expected) in cases {
        let ws = crate::support::workspace()
            .file("bin.sh", "#!/bin/sh\necho hi\n")
            .file(
                "BUILD.toml",
                &format!(
                    "[oci_image.image]\nplatforms = [\"linux/amd64\"]\nfiles = {{ {files} }}\n"
                ),
            )
            .build();
        let run = ws.kiln(&["build", "//:image"]);
        assert_eq!(run.status, 2, "{files}: {}", run.stderr);
        assert!(run.stderr.contains(expected), "{files}: {}", run.stderr);
        assert!(run.stderr.contains("//:image"), "{}", run.stderr);
        assert!(run.stderr.contains("BUILD.toml:3:"), "{}", run.stderr);
    }
}

#[test]
fn scratch_image_of_plain_files_and_a_layout_base() {
    let ws = crate::support::workspace()
        .file("hello.txt", "hello\n")
        .file(
            "BUILD.toml",
            "[oci_image.first]\nplatforms = [\"linux/amd64\"]\nfiles = { \"/etc/hello.txt\" = \"hello.txt\" }\n",
        )
        .build();
    ws.kiln(&["build", "//:first"]).assert_ok();
    // The first image's layout, copied into the workspace, is the base of a second one.
    crate::support::copy_tree(&ws.path("kiln-out/first/layout"), &ws.path("base/layout"));
    ws.write(
        "BUILD.toml",
        "[oci_image.first]\nplatforms = [\"linux/amd64\"]\nfiles = { \"/etc/hello.txt\" = \"hello.txt\" }\n\n\
         [oci_image.second]\nbase = \"base/layout\"\nplatforms = [\"linux/amd64\"]\nfiles = { \"/etc/bye.txt\" = \"hello.txt\" }\n",
    );
    ws.kiln(&["build", "//:second"]).assert_ok();
    let oci = format!("oci:{}:latest", ws.path("kiln-out/second/layout").display());
    let inspected = json(tool("skopeo", &["inspect", &oci]));
    assert_eq!(
        inspected["Layers"].as_array().unwrap().len(),
        2,
        "{inspected}"
    );
    let first = json(tool(
        "skopeo",
        &[
            "inspect",
            &format!("oci:{}:latest", ws.path("kiln-out/first/layout").display()),
        ],
    ));
    assert_eq!(inspected["Layers"][0], first["Layers"][0]);
}

#[test]
fn upx_names_a_platform_it_cannot_pack_unless_skipped() {
    let build = r#"
[go_binary.app]
main = "./cmd/app"
platforms = ["linux/amd64", "darwin/arm64"]

[strip.app_stripped]
src = ":app"

[upx.app_packed]
src = ":app_stripped"
args = ["-1"]
"#;
    let ws = pipeline().file("BUILD.toml", build).build();
    let run = ws.kiln(&["build", "//:app_packed"]);
    assert_eq!(run.status, 2, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("upx cannot pack the darwin/arm64 binary of //:app_stripped"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("skip_unsupported"), "{}", run.stderr);

    ws.write("BUILD.toml", &format!("{build}skip_unsupported = true\n"));
    let run = ws.kiln(&["build", "//:app_packed"]);
    run.assert_ok();
    let ran = run.ran();
    assert!(
        ran.contains(&"Upx //:app_packed [linux/amd64]".to_string()),
        "{ran:?}"
    );
    for passed in [
        "StripPassThrough //:app_stripped [darwin/arm64]",
        "UpxPassThrough //:app_packed [darwin/arm64]",
    ] {
        assert!(ran.contains(&passed.to_string()), "{ran:?}");
    }
    assert!(!ran.iter().any(|a| a == "Upx //:app_packed [darwin/arm64]"));
    // Mach-O is neither stripped nor packed: the bytes are go build's.
    assert_eq!(
        std::fs::read(ws.path("kiln-out/app_packed/darwin_arm64/app")).unwrap(),
        std::fs::read(ws.path("kiln-out/app/darwin_arm64/app")).unwrap()
    );
}

fn pushed_digest(stdout: &str) -> String {
    stdout.trim().rsplit('@').next().unwrap().to_string()
}

#[test]
fn kiln_run_pushes_the_index_and_skopeo_pulls_the_same_digest() {
    let registry = kiln_testkit::Registry::start();
    let repository = format!("{}/hello/app", registry.host());
    let push = format!("\n[oci_push.push]\nimage = \":image\"\nrepository = \"{repository}\"\ntags = [\"latest\", \"{{STABLE_GIT_DESCRIBE}}\"]\n");
    let ws = pipeline()
        .file("BUILD.toml", &format!("{BUILD}{push}"))
        .build();
    let run = ws.kiln(&["run", "//:push"]);
    run.assert_ok();
    let digest = index_digest(&ws);
    assert_eq!(pushed_digest(&run.stdout), digest, "{}", run.stdout);
    assert!(run.stdout.contains(&repository));

    for tag in ["latest", "v1.2.3"] {
        let remote = format!("docker://{repository}:{tag}");
        let raw = tool(
            "skopeo",
            &["inspect", "--tls-verify=false", "--raw", &remote],
        );
        let sha = sha256_hex(&raw.stdout);
        assert_eq!(format!("sha256:{sha}"), digest, "{tag}");
        let inspected = json(tool(
            "skopeo",
            &[
                "inspect",
                "--tls-verify=false",
                "--override-arch",
                "arm64",
                &remote,
            ],
        ));
        assert_eq!(inspected["Architecture"], "arm64");
    }
    // A second push finds every blob in place and gives the same digest.
    let again = ws.kiln(&["run", "//:push"]);
    again.assert_ok();
    assert_eq!(pushed_digest(&again.stdout), digest);
    // skopeo copies the pushed image back into a layout with the same index.
    let back = tempfile::tempdir().unwrap();
    let dest = format!("oci:{}:back", back.path().join("l").display());
    tool(
        "skopeo",
        &[
            "copy",
            "--all",
            "--src-tls-verify=false",
            &format!("docker://{repository}:latest"),
            &dest,
        ],
    );
    let copied = json(tool("skopeo", &["inspect", "--raw", &dest]));
    let ours = json(tool(
        "skopeo",
        &[
            "inspect",
            "--raw",
            &format!("oci:{}:latest", ws.path(LAYOUT).display()),
        ],
    ));
    assert_eq!(copied, ours);
}

pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    let tmp = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(tmp.path(), bytes).unwrap();
    let out = tool("sha256sum", &[tmp.path().to_str().unwrap()]);
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

const SERVICE_MAIN: &str = r#"package main

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"time"
)

func main() {
	if loc, err := time.LoadLocation("Europe/Berlin"); err != nil {
		fmt.Println("tz error:", err)
	} else {
		fmt.Println("zone", time.Date(2024, 1, 15, 12, 0, 0, 0, time.UTC).In(loc).Format("MST -0700"))
	}
	resp, err := http.Get(os.Args[1])
	if err != nil {
		fmt.Println("tls error:", err)
		os.Exit(1)
	}
	body, _ := io.ReadAll(resp.Body)
	fmt.Println("status", resp.StatusCode, len(body))
}
"#;

const SERVICE_BUILD: &str = r#"
[go_binary.svc]
main = "./cmd/svc"
platforms = ["linux/amd64"]

[oci_base.bare]
passwd = [{ name = "nonroot", uid = 65532 }]

[oci_base.real]
passwd = [{ name = "nonroot", uid = 65532 }]
ca_certificates = "ca-certificates.crt"
zoneinfo = "zoneinfo"
nsswitch = true
os_release = { ID = "kiln-test", PRETTY_NAME = "kiln test base" }

[oci_image.bare_image]
base = ":bare"
files = { "/app/svc" = ":svc" }
entrypoint = ["/app/svc"]

[oci_image.real_image]
base = ":real"
files = { "/app/svc" = ":svc" }
entrypoint = ["/app/svc"]
"#;

/// The image's rootfs, unpacked by umoci, runs its binary under bubblewrap as the root
/// of a chroot (the host's network, so loopback reaches the test's server).
fn run_in_rootfs(ws: &Workspace, image: &str, url: &str) -> String {
    let bundle = ws.path(&format!("bundle-{image}"));
    let layout = ws.path(&format!("kiln-out/{image}/layout"));
    tool(
        "umoci",
        &[
            "unpack",
            "--rootless",
            "--image",
            &format!("{}:latest", layout.display()),
            bundle.to_str().unwrap(),
        ],
    );
    let out = Command::new("bwrap")
        .arg("--bind")
        .arg(bundle.join("rootfs"))
        .args([
            "/",
            "--dev",
            "/dev",
            "--proc",
            "/proc",
            "--unshare-pid",
            "--unshare-ipc",
        ])
        .args([
            "--die-with-parent",
            "--clearenv",
            "--chdir",
            "/",
            "/app/svc",
            url,
        ])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

#[test]
fn a_service_on_a_built_base_makes_a_tls_call_and_loads_a_time_zone() {
    let pki = kiln_testkit::Pki::new();
    // An HTTPS server on loopback whose certificate the test's CA signed.
    let server = kiln_testkit::Registry::start_with(kiln_testkit::RegistryAuth::None, Some(&pki));
    let url = format!("{}/v2/", server.url());
    let ws = go_workspace()
        .file("cmd/svc/main.go", SERVICE_MAIN)
        .file("BUILD.toml", SERVICE_BUILD)
        .build();
    std::fs::copy(pki.ca_cert(), ws.path("ca-certificates.crt")).unwrap();
    std::fs::create_dir_all(ws.path("zoneinfo/Europe")).unwrap();
    std::fs::copy(
        "/usr/share/zoneinfo/Europe/Berlin",
        ws.path("zoneinfo/Europe/Berlin"),
    )
    .expect("tzdata is needed: run .ci/install-deps");
    ws.kiln(&["build", "//:bare_image", "//:real_image"])
        .assert_ok();

    // Without them the service fails as a Go service on a passwd-only base does.
    let bare = run_in_rootfs(&ws, "bare_image", &url);
    assert!(bare.contains("tz error"), "{bare}");
    assert!(
        bare.contains("certificate signed by unknown authority"),
        "{bare}"
    );

    let real = run_in_rootfs(&ws, "real_image", &url);
    assert!(real.contains("zone CET +0100"), "{real}");
    assert!(real.contains("status 200"), "{real}");
    let rootfs = ws.path("bundle-real_image/rootfs");
    let os_release = std::fs::read_to_string(rootfs.join("etc/os-release")).unwrap();
    assert_eq!(
        os_release,
        "ID=\"kiln-test\"\nPRETTY_NAME=\"kiln test base\"\n"
    );
    let nsswitch = std::fs::read_to_string(rootfs.join("etc/nsswitch.conf")).unwrap();
    assert!(nsswitch.contains("hosts: files dns"), "{nsswitch}");
    let oci = format!(
        "oci:{}:latest",
        ws.path("kiln-out/real_image/layout").display()
    );
    let config = json(tool("skopeo", &["inspect", "--config", &oci]));
    assert_eq!(
        config["config"]["Env"][0],
        "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt"
    );
}

/// The example service's base carries Debian's CA bundle, time zones, nsswitch.conf and
/// os-release (its base layer builds without Go).
#[test]
fn the_example_base_has_ca_certificates_and_time_zones() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/hello-service");
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("hello-service");
    crate::support::copy_tree(&example, &root);
    let out = crate::support::kiln_cmd(&root, &tmp.path().join("cache"), &["build", "//:static"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let layer = root.join("kiln-out/static/layer.tar.gz");
    let listed = tool("tar", &["-tzf", layer.to_str().unwrap()]);
    let names = String::from_utf8_lossy(&listed.stdout);
    for path in [
        "etc/ssl/certs/ca-certificates.crt",
        "usr/share/zoneinfo/Europe/Berlin",
        "usr/share/zoneinfo/UTC",
        "etc/nsswitch.conf",
        "etc/os-release",
    ] {
        assert!(
            names
                .lines()
                .any(|l| l.trim_start_matches("./").trim_start_matches('/') == path),
            "{path} in {names}"
        );
    }
}
