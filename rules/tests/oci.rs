//! The OCI writer checked by the real tools: skopeo, umoci and GNU tar read what kiln wrote.
//!
//! Every test builds a two-platform image (linux/amd64, linux/arm64) from a distroless-like
//! base layer and an app layer holding `/app/server` (0755, owned 65532:65532) in a fresh
//! temporary directory, then asks the tools about it.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use kiln_rules::oci::{
    base_entries, find_manifest, write_docker_archive, write_image, write_index, write_layer,
    write_layout, Descriptor, EntryKind, ErrorKind, ImageConfig, LayerBlob, LayerEntry, LayerInfo,
    Platform, User,
};
use serde_json::Value;

const EPOCH: u64 = 1_714_564_800; // 2024-05-01T12:00:00Z
const ARCHES: [&str; 2] = ["amd64", "arm64"];

/// What one build produced.
struct Built {
    layout: PathBuf,
    index: Descriptor,
    manifests: Vec<Descriptor>,
    base: LayerInfo,
    apps: Vec<LayerInfo>,
}

fn config(arch: &str, entrypoint: &str) -> ImageConfig {
    ImageConfig {
        os: "linux".into(),
        architecture: arch.into(),
        user: "65532:65532".into(),
        entrypoint: vec![entrypoint.into()],
        cmd: vec!["--port=8080".into()],
        env: vec![("TZ".into(), "UTC".into()), ("PATH".into(), "/app".into())],
        labels: [("org.opencontainers.image.version".into(), "v1.2.3".into())].into(),
        exposed_ports: vec!["8080/tcp".into()],
        working_dir: "/app".into(),
        ..ImageConfig::default()
    }
}

/// The app's "binary" for one architecture, written under `sources`.
fn server_source(sources: &Path, arch: &str) -> PathBuf {
    let path = sources.join(format!("server-{arch}"));
    fs::write(&path, format!("#!/bin/sh\necho server for {arch}\n")).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
    path
}

/// Builds the two-platform image under `root`, as kiln's actions would: one base layer,
/// one app layer and one image per platform, an index, a layout.
fn build(root: &Path, entrypoint: &str) -> Built {
    let (sources, work, layout) = (root.join("src"), root.join("work"), root.join("layout"));
    fs::create_dir_all(&sources).unwrap();
    fs::create_dir_all(&work).unwrap();
    let ca = sources.join("ca.crt");
    fs::write(&ca, "-----BEGIN CERTIFICATE-----\nnot a real one\n").unwrap();
    let files = [kiln_rules::oci::BaseFile {
        path: "/etc/ssl/certs/ca-certificates.crt".into(),
        source: ca,
        mode: 0o644,
    }];
    let base_path = work.join("base.tar.gz");
    let base_entries = base_entries(&[User::nonroot()], &files).unwrap();
    let base = write_layer(&base_entries, EPOCH, &base_path).unwrap();
    let blobs = work.join("blobs");
    let (mut manifests, mut apps, mut sources_list) = (vec![], vec![], vec![base_path.clone()]);
    for arch in ARCHES {
        let app_path = work.join(format!("app-{arch}.tar.gz"));
        let server = server_source(&sources, arch);
        let entry = LayerEntry::file("/app/server", server, 0o755).owned_by(65532, 65532);
        let app = write_layer(&[entry], EPOCH, &app_path).unwrap();
        let layers = [
            blob(&base, &base_path, "kiln oci_base //base:static"),
            blob(&app, &app_path, "kiln oci_image //app:image"),
        ];
        manifests.push(write_image(&layers, &config(arch, entrypoint), EPOCH, &blobs).unwrap());
        apps.push(app);
        sources_list.push(app_path);
    }
    let index = write_index(&manifests, &blobs).unwrap();
    sources_list.push(blobs);
    write_layout(&layout, &index, "latest", &sources_list).unwrap();
    Built {
        layout,
        index,
        manifests,
        base,
        apps,
    }
}

fn blob(info: &LayerInfo, path: &Path, created_by: &str) -> LayerBlob {
    LayerBlob {
        media_type: None,
        info: info.clone(),
        path: path.to_owned(),
        created_by: created_by.into(),
    }
}

/// A tool from PATH, or a failure telling how to get it.
fn tool(name: &str) -> Command {
    let found = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).any(|dir| dir.join(name).is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "{name} is not on PATH: run `.ci/install-deps` to install it"
    );
    Command::new(name)
}

/// Runs a command, failing the test with its stderr unless it succeeds; returns stdout.
fn run(command: &mut Command) -> String {
    let output = command.output().unwrap();
    assert!(
        output.status.success(),
        "{command:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

fn skopeo() -> Command {
    let mut command = tool("skopeo");
    command.arg("--insecure-policy");
    command
}

fn skopeo_for(arch: &str) -> Command {
    let mut command = skopeo();
    command.args(["--override-os", "linux", "--override-arch", arch]);
    command
}

fn oci_ref(built: &Built) -> String {
    format!("oci:{}:latest", built.layout.display())
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap()
}

#[test]
fn skopeo_inspects_each_platform_with_its_config() {
    let tmp = tempfile::tempdir().unwrap();
    let built = build(tmp.path(), "/app/server");
    let raw = json(&run(skopeo().args(["inspect", "--raw", &oci_ref(&built)])));
    assert_eq!(raw["mediaType"], "application/vnd.oci.image.index.v1+json");
    assert_eq!(raw["manifests"].as_array().unwrap().len(), 2);
    for (arch, manifest) in ARCHES.iter().zip(&built.manifests) {
        let info = json(&run(skopeo_for(arch).args(["inspect", &oci_ref(&built)])));
        assert_eq!(info["Architecture"], *arch);
        assert_eq!(info["Os"], "linux");
        // skopeo names the digest of what the reference points at: the index.
        assert_eq!(info["Digest"], built.index.digest.as_str());
        let raw = json(&run(skopeo_for(arch).args([
            "inspect",
            "--raw",
            &oci_ref(&built),
        ])));
        assert_eq!(
            raw["manifests"][arch_index(arch)]["digest"],
            manifest.digest.as_str()
        );
        assert_eq!(
            raw["manifests"][arch_index(arch)]["platform"]["architecture"],
            *arch
        );
        assert_eq!(info["Created"], "2024-05-01T12:00:00Z");
        assert_eq!(info["Labels"]["org.opencontainers.image.version"], "v1.2.3");
        let config = json(&run(skopeo_for(arch).args([
            "inspect",
            "--config",
            &oci_ref(&built),
        ])));
        assert_eq!(config["config"]["User"], "65532:65532");
        assert_eq!(
            config["config"]["Entrypoint"],
            serde_json::json!(["/app/server"])
        );
        assert_eq!(
            config["config"]["Env"],
            serde_json::json!(["TZ=UTC", "PATH=/app"])
        );
        assert_eq!(
            config["config"]["ExposedPorts"],
            serde_json::json!({"8080/tcp": {}})
        );
        assert_eq!(config["rootfs"]["diff_ids"][0], built.base.diff_id.as_str());
        assert_eq!(config["history"][1]["created"], "2024-05-01T12:00:00Z");
    }
}

#[test]
fn skopeo_copies_each_platform_to_a_docker_archive() {
    let tmp = tempfile::tempdir().unwrap();
    let built = build(tmp.path(), "/app/server");
    for arch in ARCHES {
        let archive = tmp.path().join(format!("{arch}.tar"));
        let target = format!("docker-archive:{}:kiln.test/app:{arch}", archive.display());
        run(skopeo_for(arch).args(["copy", "--quiet", &oci_ref(&built), &target]));
        let source = format!("docker-archive:{}", archive.display());
        let info = json(&run(skopeo().args(["inspect", &source])));
        assert_eq!(info["Architecture"], arch);
        assert_eq!(info["Layers"].as_array().unwrap().len(), 2);
    }
}

#[test]
fn umoci_unpacks_the_server_with_its_mode_and_config() {
    let tmp = tempfile::tempdir().unwrap();
    let built = build(tmp.path(), "/app/server");
    let single = tmp.path().join("single");
    let target = format!("oci:{}:amd64", single.display());
    run(skopeo_for("amd64").args(["copy", "--quiet", &oci_ref(&built), &target]));
    let bundle = tmp.path().join("bundle");
    let image = format!("{}:amd64", single.display());
    run(tool("umoci")
        .args(["unpack", "--rootless", "--image", &image])
        .arg(&bundle));

    let server = bundle.join("rootfs/app/server");
    assert_eq!(
        fs::read_to_string(&server).unwrap(),
        "#!/bin/sh\necho server for amd64\n"
    );
    let mode = fs::metadata(&server).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o755);
    let tmp_mode = fs::metadata(bundle.join("rootfs/tmp"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(tmp_mode & 0o7777, 0o1777);
    let passwd = fs::read_to_string(bundle.join("rootfs/etc/passwd")).unwrap();
    assert!(passwd.contains("nonroot:x:65532:65532:"), "{passwd}");
    assert!(bundle
        .join("rootfs/etc/ssl/certs/ca-certificates.crt")
        .is_file());

    let runtime = json(&fs::read_to_string(bundle.join("config.json")).unwrap());
    let process = &runtime["process"];
    assert_eq!(
        process["args"],
        serde_json::json!(["/app/server", "--port=8080"])
    );
    assert_eq!(process["user"]["uid"], 65532);
    assert_eq!(process["user"]["gid"], 65532);
    assert_eq!(process["cwd"], "/app");
    let env: Vec<&str> = process["env"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(env.contains(&"TZ=UTC"), "{env:?}");
}

#[test]
fn gnu_tar_lists_owners_modes_order_and_fixed_mtime() {
    let tmp = tempfile::tempdir().unwrap();
    let built = build(tmp.path(), "/app/server");
    let app = blob_file(&built, &built.apps[0].digest);
    let listing = run(tool("tar")
        .args(["--numeric-owner", "--full-time", "-tvzf"])
        .arg(&app)
        .env("TZ", "UTC"));
    let lines: Vec<&str> = listing.lines().collect();
    assert_eq!(lines.len(), 2, "{listing}");
    assert!(
        lines[0].starts_with("drwxr-xr-x 0/0 ") && lines[0].ends_with(" app/"),
        "{listing}"
    );
    assert!(lines[1].starts_with("-rwxr-xr-x 65532/65532 "), "{listing}");
    assert!(
        lines[1].contains("2024-05-01 12:00:00 app/server"),
        "{listing}"
    );

    let base = run(tool("tar")
        .args(["-tzf"])
        .arg(blob_file(&built, &built.base.digest)));
    let names: Vec<&str> = base.lines().collect();
    let mut sorted = names.clone();
    sorted.sort_by_key(|name| name.trim_end_matches('/'));
    assert_eq!(names, sorted);
    assert!(
        names.contains(&"etc/ssl/certs/") && names.contains(&"home/nonroot/"),
        "{base}"
    );

    let gz = fs::read(&app).unwrap();
    assert_eq!(
        &gz[..4],
        &[0x1f, 0x8b, 8, 0],
        "gzip magic, deflate, no flags (no name)"
    );
    assert_eq!(&gz[4..8], &[0, 0, 0, 0], "gzip mtime is 0");
    assert_eq!(gz[9], 255, "gzip OS byte is 'unknown'");
}

#[test]
fn long_and_unicode_names_survive_gnu_tar() {
    let tmp = tempfile::tempdir().unwrap();
    let deep = format!("/{}/{}", "d".repeat(120), "f".repeat(60));
    let unsplittable = format!("/srv/{}", "x".repeat(130));
    let link_target = format!("/{}", "t".repeat(140));
    let entries = [
        LayerEntry::bytes(&deep, "deep", 0o644),
        LayerEntry::bytes(&unsplittable, "long", 0o644),
        LayerEntry::bytes("/srv/naïve-ü.txt", "unicode", 0o644),
        LayerEntry::new("/srv/link", EntryKind::Symlink(link_target.clone()), 0o777),
    ];
    let out = tmp.path().join("layer.tar.gz");
    write_layer(&entries, EPOCH, &out).unwrap();
    let listing = run(tool("tar").arg("-tvzf").arg(&out));
    for name in [&deep[1..], &unsplittable[1..], "srv/naïve-ü.txt"] {
        assert!(
            listing.lines().any(|l| l.ends_with(name)),
            "{name} in {listing}"
        );
    }
    assert!(
        listing.contains(&format!("srv/link -> {link_target}")),
        "{listing}"
    );
    let extract = tmp.path().join("x");
    fs::create_dir(&extract).unwrap();
    run(tool("tar").arg("-xzf").arg(&out).arg("-C").arg(&extract));
    assert_eq!(
        fs::read_to_string(extract.join(&deep[1..])).unwrap(),
        "deep"
    );
    assert_eq!(
        fs::read_to_string(extract.join(&unsplittable[1..])).unwrap(),
        "long"
    );
}

#[test]
fn the_same_inputs_in_two_places_give_the_same_digests() {
    let (one, two) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let first = build(one.path(), "/app/server");
    let second = build(two.path(), "/app/server");
    assert_eq!(first.index, second.index);
    assert_eq!(first.base, second.base);
    assert_eq!(first.apps, second.apps);
    assert_eq!(
        tree(&first.layout),
        tree(&second.layout),
        "whole layouts are identical"
    );
}

#[test]
fn changing_the_entrypoint_changes_config_and_manifest_not_layers() {
    let (one, two) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let first = build(one.path(), "/app/server");
    let second = build(two.path(), "/app/other");
    assert_eq!(first.base, second.base);
    assert_eq!(first.apps, second.apps);
    assert_ne!(first.index.digest, second.index.digest);
    for (a, b) in first.manifests.iter().zip(&second.manifests) {
        assert_ne!(a.digest, b.digest);
        let (ma, mb) = (read_manifest(&first, a), read_manifest(&second, b));
        assert_ne!(ma["config"]["digest"], mb["config"]["digest"]);
        assert_eq!(ma["layers"], mb["layers"]);
    }
}

#[test]
fn duplicate_relative_and_dotdot_paths_are_errors_naming_the_path() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("layer.tar.gz");
    let cases = [
        (
            vec![LayerEntry::bytes("app/server", "x", 0o755)],
            ErrorKind::InvalidPath,
            "app/server",
        ),
        (
            vec![LayerEntry::bytes("/app/../etc/x", "x", 0o644)],
            ErrorKind::InvalidPath,
            "/app/../etc/x",
        ),
        (
            vec![
                LayerEntry::bytes("/app/server", "x", 0o755),
                LayerEntry::dir("/app/server", 0o755),
            ],
            ErrorKind::DuplicatePath,
            "/app/server",
        ),
    ];
    for (entries, kind, path) in cases {
        let err = write_layer(&entries, EPOCH, &out).unwrap_err();
        assert_eq!(err.kind(), kind, "{err}");
        assert!(err.to_string().contains(&format!("`{path}`")), "{err}");
    }
    assert!(!out.exists(), "a failed layer leaves no output");
    let missing = LayerEntry::file("/app/server", tmp.path().join("nope"), 0o755);
    let err = write_layer(&[missing], EPOCH, &out).unwrap_err();
    assert!(err.to_string().contains("nope"), "{err}");
}

#[test]
fn docker_archive_is_deterministic_and_readable() {
    let tmp = tempfile::tempdir().unwrap();
    let built = build(tmp.path(), "/app/server");
    let arm64 = Platform::parse("linux/arm64").unwrap();
    let tags = ["kiln.test/app:v1".to_owned()];
    let (a, b) = (tmp.path().join("a.tar"), tmp.path().join("b.tar"));
    write_docker_archive(&built.layout, &arm64, &tags, &a).unwrap();
    write_docker_archive(&built.layout, &arm64, &tags, &b).unwrap();
    assert_eq!(fs::read(&a).unwrap(), fs::read(&b).unwrap());

    let info =
        json(&run(skopeo().args([
            "inspect",
            &format!("docker-archive:{}", a.display()),
        ])));
    assert_eq!(info["Architecture"], "arm64");
    let copy = format!("oci:{}:arm64", tmp.path().join("back").display());
    run(skopeo().args([
        "copy",
        "--quiet",
        &format!("docker-archive:{}", a.display()),
        &copy,
    ]));
    let oci_archive = json(&run(
        skopeo().args(["inspect", &format!("oci-archive:{}", a.display())])
    ));
    assert_eq!(oci_archive["Digest"], built.manifests[1].digest.as_str());

    let listing = run(tool("tar").arg("-tf").arg(&a));
    let manifest = run(tool("tar").arg("-xOf").arg(&a).arg("manifest.json"));
    let manifest = json(&manifest);
    assert_eq!(manifest[0]["RepoTags"], serde_json::json!(tags));
    let config = manifest[0]["Config"].as_str().unwrap();
    assert!(listing.lines().any(|l| l == config), "{listing}");

    let missing = Platform::parse("linux/s390x").unwrap();
    let err = write_docker_archive(&built.layout, &missing, &tags, &a).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PlatformNotFound);
}

#[test]
fn a_layout_missing_a_blob_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let built = build(tmp.path(), "/app/server");
    let partial = tmp.path().join("partial");
    let blobs = vec![tmp.path().join("work/blobs")];
    let err = write_layout(&partial, &built.index, "latest", &blobs).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Corrupt);
    assert!(err.to_string().contains(&built.base.digest), "{err}");
    assert!(!partial.join("index.json").exists());
    let (found, _) =
        find_manifest(&built.layout, &Platform::parse("linux/amd64").unwrap()).unwrap();
    assert_eq!(found, built.manifests[0]);
}

/// The Go program that writes the tar headers it reads as JSON with `archive/tar`.
const GO_TAR: &str = r#"package main

import (
	"archive/tar"
	"encoding/json"
	"os"
	"time"
)

type entry struct {
	Name, Link, Content string
	Type                byte
	Mode                int64
	Uid, Gid            int
	Mtime               int64
}

func main() {
	var entries []entry
	if err := json.NewDecoder(os.Stdin).Decode(&entries); err != nil {
		panic(err)
	}
	tw := tar.NewWriter(os.Stdout)
	for _, e := range entries {
		h := &tar.Header{Name: e.Name, Linkname: e.Link, Typeflag: e.Type, Mode: e.Mode,
			Uid: e.Uid, Gid: e.Gid, Size: int64(len(e.Content)), ModTime: time.Unix(e.Mtime, 0)}
		if err := tw.WriteHeader(h); err != nil {
			panic(err)
		}
		if _, err := tw.Write([]byte(e.Content)); err != nil {
			panic(err)
		}
	}
	if err := tw.Close(); err != nil {
		panic(err)
	}
}
"#;

/// The real `go` binary (the one on PATH may be a version-manager shim).
fn go() -> Command {
    let goroot = run(tool("go").args(["env", "GOROOT"]));
    let mut command = Command::new(Path::new(goroot.trim()).join("bin/go"));
    command
        .env("GOTOOLCHAIN", "local")
        .env("GOFLAGS", "-mod=mod")
        .env("GOPROXY", "off");
    command
}

#[test]
fn layers_are_byte_identical_to_go_archive_tar() {
    let tmp = tempfile::tempdir().unwrap();
    let deep = format!("{}/{}", "d".repeat(120), "f".repeat(60));
    let unsplittable = format!("srv/{}", "x".repeat(130));
    let target = format!("/{}", "t".repeat(140));
    let kiln = [
        LayerEntry::bytes(&format!("/{deep}"), "deep", 0o644),
        LayerEntry::bytes(&format!("/{unsplittable}"), "long", 0o600).owned_by(3_000_000, 7),
        LayerEntry::bytes("/srv/naïve-ü.txt", "unicode", 0o644),
        LayerEntry::new("/srv/link", EntryKind::Symlink(target.clone()), 0o777),
        LayerEntry::dir("/tmp", 0o1777),
        LayerEntry::bytes("/app/server", "#!/bin/sh\n", 0o755).owned_by(65532, 65532),
    ];
    let out = tmp.path().join("layer.tar.gz");
    let info = write_layer(&kiln, EPOCH, &out).unwrap();

    let dir =
        |name: &str| serde_json::json!({"Name": format!("{name}/"), "Type": b'5', "Mode": 0o755});
    let file = |name: &str, content: &str, mode: u32| serde_json::json!({"Name": name, "Type": b'0', "Mode": mode, "Content": content});
    let mut expected = vec![
        dir("app"),
        file("app/server", "#!/bin/sh\n", 0o755),
        dir(&"d".repeat(120)),
        file(&deep, "deep", 0o644),
        dir("srv"),
        serde_json::json!({"Name": "srv/link", "Type": b'2', "Mode": 0o777, "Link": target}),
        file("srv/naïve-ü.txt", "unicode", 0o644),
        file(&unsplittable, "long", 0o600),
        serde_json::json!({"Name": "tmp/", "Type": b'5', "Mode": 0o1777}),
    ];
    expected[1]["Uid"] = 65532.into();
    expected[1]["Gid"] = 65532.into();
    expected[7]["Uid"] = 3_000_000.into();
    expected[7]["Gid"] = 7.into();
    for entry in &mut expected {
        entry["Mtime"] = EPOCH.into();
    }

    let program = tmp.path().join("gotar");
    fs::create_dir(&program).unwrap();
    fs::write(program.join("go.mod"), "module gotar\n\ngo 1.21\n").unwrap();
    fs::write(program.join("main.go"), GO_TAR).unwrap();
    let mut child = go()
        .args(["run", "."])
        .current_dir(&program)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let input = serde_json::to_vec(&expected).unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), &input).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "go run: {}",
        String::from_utf8_lossy(&output.stderr)
    );

    let mut ours = Vec::new();
    let gz = fs::File::open(&out).unwrap();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(gz), &mut ours).unwrap();
    assert!(
        ours == output.stdout,
        "kiln's tar differs from Go's archive/tar"
    );
    let go_digest = run(tool("sha256sum").stdin(fs::File::open(&out).unwrap()));
    assert_eq!(format!("sha256:{}", &go_digest[..64]), info.digest);
}

fn arch_index(arch: &str) -> usize {
    ARCHES.iter().position(|a| *a == arch).unwrap()
}

fn blob_file(built: &Built, digest: &str) -> PathBuf {
    let hex = digest.strip_prefix("sha256:").unwrap();
    built.layout.join("blobs/sha256").join(hex)
}

fn read_manifest(built: &Built, descriptor: &Descriptor) -> Value {
    json(&fs::read_to_string(blob_file(built, &descriptor.digest)).unwrap())
}

/// Every file under `root` as (relative path, content), sorted.
fn tree(root: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files: Vec<_> = walkdir::WalkDir::new(root)
        .into_iter()
        .map(Result::unwrap)
        .filter(|entry| entry.file_type().is_file())
        .map(|entry| {
            let relative = entry.path().strip_prefix(root).unwrap().to_owned();
            (relative, fs::read(entry.path()).unwrap())
        })
        .collect();
    files.sort();
    files
}
