//! Images in real registries: Debian's docker-registry on loopback behind htpasswd
//! (Basic) or token auth (a testkit issuer whose signed tokens the registry checks), on
//! TLS from a CA the test makes. Credentials come from config.json `auths`, a
//! credential helper on PATH, or variables, and never show in output, --json or the
//! cache; a push without them is refused; a dropped connection is retried.

use std::path::Path;
use std::process::{Command, Output};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use kiln_testkit::{DroppingProxy, Fault, Pki, Registry, RegistryAuth, TokenIssuer};

use crate::support::{Run, Workspace};

const USER: &str = "ci-bot";
const PASSWORD: &str = "s3cret-Pa55word-xyzzy";

/// A one-platform scratch image of a text file and a push of it to `repository`.
fn image_workspace(repository: &str, kiln_toml: &str) -> Workspace {
    let push = format!(
        "[oci_image.image]\nplatforms = [\"linux/amd64\"]\nfiles = {{ \"/etc/hello.txt\" = \"hello.txt\" }}\n\n\
         [oci_push.push]\nimage = \":image\"\nrepository = \"{repository}\"\ntags = [\"latest\", \"v1\"]\n"
    );
    crate::support::workspace()
        .file(
            "kiln.toml",
            &format!("[workspace]\nname = \"reg\"\n{kiln_toml}"),
        )
        .file("hello.txt", "hello\n")
        .file("BUILD.toml", &push)
        .build()
}

/// A docker config directory holding `config` as config.json.
fn docker_config(config: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.json"), config).unwrap();
    dir
}

fn auths(host: &str, user: &str, password: &str) -> String {
    let auth = STANDARD.encode(format!("{user}:{password}"));
    format!(r#"{{"auths": {{"{host}": {{"auth": "{auth}"}}}}}}"#)
}

/// `kiln run //:push` with only the given registry variables (no KILN_REGISTRY_* of
/// the host, DOCKER_CONFIG set), plus `--json`.
fn push(ws: &Workspace, docker_config: &Path, env: &[(&str, &str)]) -> Run {
    let mut cmd = ws.cmd(&["--json", "events.json", "run", "//:push"]);
    cmd.env("DOCKER_CONFIG", docker_config)
        .env_remove("SSL_CERT_FILE")
        .env_remove("KILN_REGISTRY_USER")
        .env_remove("KILN_REGISTRY_PASSWORD")
        .env_remove("KILN_REGISTRY_HOST")
        .env_remove("REGISTRY_AUTH_FILE")
        .env_remove("XDG_RUNTIME_DIR");
    for (k, v) in env {
        cmd.env(k, v);
    }
    Run::from(cmd.output().unwrap())
}

/// The secret shows nowhere kiln writes: output, --json events, the cache, kiln-out.
fn assert_secret_hidden(ws: &Workspace, run: &Run, secret: &str) {
    assert!(!run.stdout.contains(secret), "{}", run.stdout);
    assert!(!run.stderr.contains(secret), "{}", run.stderr);
    for dir in [ws.root.clone(), ws.cache.clone()] {
        let out = Command::new("grep")
            .args(["-r", "-l", "-a", "-F", secret])
            .arg(&dir)
            .output()
            .unwrap();
        assert!(
            out.stdout.is_empty(),
            "the secret is in {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
}

pub(crate) fn skopeo(args: &[&str]) -> Output {
    let out = Command::new("skopeo").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "skopeo {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The digest of the manifest the registry serves for `reference`, read by skopeo.
fn remote_digest(pki: &Pki, reference: &str, creds: &str) -> String {
    let cert_dir = pki.cert_dir();
    let out = skopeo(&[
        "inspect",
        "--cert-dir",
        cert_dir.to_str().unwrap(),
        "--creds",
        creds,
        "--format",
        "{{.Digest}}",
        &format!("docker://{reference}"),
    ]);
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn kiln_toml_ca(registry: &Registry, ws_ca: &str) -> String {
    format!(
        "\n[registries.\"{}\"]\nca_file = \"{ws_ca}\"\n",
        registry.host()
    )
}

fn with_ca(ws: &Workspace, pki: &Pki) {
    std::fs::copy(pki.ca_cert(), ws.path("ca.pem")).unwrap();
}

/// A TLS registry with `auth: token` and its issuer, which also takes the refresh token
/// `identity_token`.
fn token_registry(identity_token: &str) -> (Pki, TokenIssuer, Registry) {
    let pki = Pki::new();
    let issuer = TokenIssuer::start(&pki, USER, PASSWORD, identity_token);
    let registry = Registry::start_with(RegistryAuth::Token(&issuer), Some(&pki));
    (pki, issuer, registry)
}

/// [`image_workspace`] pushing to `HOST/name` of a TLS registry, whose CA kiln.toml
/// names.
fn tls_workspace(registry: &Registry, pki: &Pki, name: &str) -> Workspace {
    let ws = image_workspace(
        &format!("{}/{name}", registry.host()),
        &kiln_toml_ca(registry, "ca.pem"),
    );
    with_ca(&ws, pki);
    ws
}

fn index_digest(ws: &Workspace) -> String {
    ws.read("kiln-out/image/index.digest").trim().to_string()
}

#[test]
fn push_over_tls_with_basic_auth_from_config_json_auths() {
    let (pki, registry) = basic_registry();
    let repository = format!("{}/team/app", registry.host());
    let ws = image_workspace(&repository, &kiln_toml_ca(&registry, "ca.pem"));
    with_ca(&ws, &pki);

    // No credentials: refused, with a message saying where kiln looks.
    let empty = docker_config("{}");
    let run = push(&ws, empty.path(), &[]);
    assert_ne!(run.status, 0, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("asks for credentials and kiln found none"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("KILN_REGISTRY_USER"), "{}", run.stderr);

    // A wrong password: refused, naming where the credential came from, not its value.
    let wrong = docker_config(&auths(&registry.host(), USER, "wrong-password-123"));
    let run = push(&ws, wrong.path(), &[]);
    assert_ne!(run.status, 0, "{}", run.stderr);
    assert!(
        run.stderr.contains("refused the credentials from auths in"),
        "{}",
        run.stderr
    );
    assert_secret_hidden(&ws, &run, "wrong-password-123");

    let good = docker_config(&auths(
        &format!("https://{}", registry.host()),
        USER,
        PASSWORD,
    ));
    // podman's auth file has the same shape.
    let podman = good.path().join("config.json");
    let podman = podman.to_str().unwrap();
    push(&ws, empty.path(), &[("REGISTRY_AUTH_FILE", podman)]).assert_ok();
    let run = push(&ws, good.path(), &[]);
    run.assert_ok();
    let digest = index_digest(&ws);
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(
        lines,
        [
            format!("{repository}:latest@{digest}"),
            format!("{repository}:v1@{digest}")
        ],
        "{}",
        run.stdout
    );
    let creds = format!("{USER}:{PASSWORD}");
    for tag in ["latest", "v1"] {
        assert_eq!(
            remote_digest(&pki, &format!("{repository}:{tag}"), &creds),
            digest
        );
    }
    assert_secret_hidden(&ws, &run, PASSWORD);
}

#[test]
fn push_without_the_private_ca_is_refused_by_tls() {
    let pki = Pki::new();
    let registry = Registry::start_with(RegistryAuth::None, Some(&pki));
    let repository = format!("https://{}/app", registry.host());
    let ws = image_workspace(&repository, "");
    let empty = docker_config("{}");
    let run = push(&ws, empty.path(), &[]);
    assert_ne!(run.status, 0, "{}", run.stderr);
    assert!(
        run.stderr.to_lowercase().contains("certificate"),
        "{}",
        run.stderr
    );
    // SSL_CERT_FILE with the CA makes it work, as it does for Go and OpenSSL.
    let ca = pki.ca_cert();
    let run = push(
        &ws,
        empty.path(),
        &[("SSL_CERT_FILE", ca.to_str().unwrap())],
    );
    run.assert_ok();
}

/// A credential helper script `docker-credential-kilntest` that answers for `host`.
fn helper_dir(host: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("docker-credential-kilntest");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\n[ \"$1\" = get ] || exit 1\nread host\nif [ \"$host\" = \"{host}\" ]; then\n  echo '{{\"ServerURL\":\"{host}\",\"Username\":\"{USER}\",\"Secret\":\"{PASSWORD}\"}}'\nelse\n  echo 'credentials not found in native keychain'; exit 1\nfi\n"
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

fn path_with(dir: &Path) -> String {
    format!(
        "{}:{}",
        dir.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

#[test]
fn push_with_tokens_from_a_credential_helper() {
    let (pki, issuer, registry) = token_registry("unused-identity-token");
    let repository = format!("{}/team/svc", registry.host());
    let ws = image_workspace(&repository, &kiln_toml_ca(&registry, "ca.pem"));
    with_ca(&ws, &pki);

    let helpers = helper_dir(&registry.host());
    let config = docker_config(&format!(
        r#"{{"credHelpers": {{"{}": "kilntest"}}}}"#,
        registry.host()
    ));
    let path = path_with(helpers.path());
    let run = push(&ws, config.path(), &[("PATH", &path)]);
    run.assert_ok();
    let digest = index_digest(&ws);
    assert!(
        run.stdout.contains(&format!("{repository}:v1@{digest}")),
        "{}",
        run.stdout
    );
    let granted: Vec<_> = issuer
        .requests()
        .into_iter()
        .filter(|r| r.granted)
        .collect();
    assert!(!granted.is_empty());
    assert!(
        granted.iter().all(|r| r
            .scopes
            .contains(&"repository:team/svc:pull,push".to_string())),
        "{granted:?}"
    );
    assert_eq!(
        remote_digest(
            &pki,
            &format!("{repository}:latest"),
            &format!("{USER}:{PASSWORD}")
        ),
        digest
    );
    assert_secret_hidden(&ws, &run, PASSWORD);

    // The same helper as the store for every registry (`credsStore`).
    let store = docker_config(r#"{"credsStore": "kilntest"}"#);
    let again = image_workspace(
        &format!("{}/team/other", registry.host()),
        &kiln_toml_ca(&registry, "ca.pem"),
    );
    with_ca(&again, &pki);
    push(&again, store.path(), &[("PATH", &path)]).assert_ok();

    // Without the helper's answer the token service refuses, and so does kiln.
    let none = docker_config("{}");
    let run = push(&ws, none.path(), &[]);
    assert_ne!(run.status, 0);
    assert!(run.stderr.contains("found none"), "{}", run.stderr);
}

/// A credential helper `docker-credential-kilntoken` answering with an identity token
/// (`Username` `<token>`), as helpers for OAuth registries do.
fn token_helper_dir(token: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("docker-credential-kilntoken");
    std::fs::write(
        &script,
        format!("#!/bin/sh\ncat >/dev/null\necho '{{\"Username\":\"<token>\",\"Secret\":\"{token}\"}}'\n"),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

#[test]
fn push_with_an_identity_token_from_a_credential_helper() {
    let (pki, issuer, registry) = token_registry("helper-refresh-token-77");
    let ws = tls_workspace(&registry, &pki, "app");
    let helpers = token_helper_dir("helper-refresh-token-77");
    let config = docker_config(r#"{"credsStore": "kilntoken"}"#);
    let path = path_with(helpers.path());
    let run = push(&ws, config.path(), &[("PATH", &path)]);
    run.assert_ok();
    assert!(
        issuer
            .requests()
            .iter()
            .any(|r| r.method == "POST" && r.granted),
        "{:?}",
        issuer.requests()
    );
    assert_secret_hidden(&ws, &run, "helper-refresh-token-77");
}

#[test]
fn push_with_an_identity_token_from_auths() {
    let (pki, issuer, registry) = token_registry("refresh-token-42-abcdef");
    let ws = tls_workspace(&registry, &pki, "app");
    let config = docker_config(&format!(
        r#"{{"auths": {{"{}": {{"auth": "", "identitytoken": "refresh-token-42-abcdef"}}}}}}"#,
        registry.host()
    ));
    let run = push(&ws, config.path(), &[]);
    run.assert_ok();
    let requests = issuer.requests();
    assert!(
        requests.iter().any(|r| r.method == "POST" && r.granted),
        "{requests:?}"
    );
    assert_secret_hidden(&ws, &run, "refresh-token-42-abcdef");
}

#[test]
fn push_with_variables_only_to_the_host_they_name() {
    let registry = Registry::start_with(
        RegistryAuth::Basic {
            user: USER,
            password: PASSWORD,
        },
        None,
    );
    let ws = image_workspace(&format!("{}/app", registry.host()), "");
    let empty = docker_config("{}");
    let vars = [
        ("KILN_REGISTRY_USER", USER),
        ("KILN_REGISTRY_PASSWORD", PASSWORD),
    ];
    // Restricted to another host, the variables are not sent here.
    let mut elsewhere = vars.to_vec();
    elsewhere.push(("KILN_REGISTRY_HOST", "registry.example"));
    let run = push(&ws, empty.path(), &elsewhere);
    assert_ne!(run.status, 0);
    assert!(run.stderr.contains("found none"), "{}", run.stderr);

    let run = push(&ws, empty.path(), &vars);
    run.assert_ok();
    assert_secret_hidden(&ws, &run, PASSWORD);
}

#[test]
fn a_dropped_connection_and_a_503_are_retried() {
    for fault in [Fault::Drop, Fault::Unavailable] {
        let registry = Registry::start();
        let proxy = DroppingProxy::start_with(registry.port(), 1, fault);
        let ws = image_workspace(&format!("127.0.0.1:{}/app", proxy.port()), "");
        let empty = docker_config("{}");
        let run = push(&ws, empty.path(), &[]);
        run.assert_ok();
        assert!(
            run.stderr.contains("trying again in 0.25s"),
            "{fault:?}: {}",
            run.stderr
        );
        if let Fault::Unavailable = fault {
            assert!(run.stderr.contains("answered 503"), "{}", run.stderr);
        }
        assert!(proxy.accepted() >= 2);
        let digest = index_digest(&ws);
        let out = skopeo(&[
            "inspect",
            "--tls-verify=false",
            "--format",
            "{{.Digest}}",
            &format!("docker://{}/app:v1", registry.host()),
        ]);
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), digest);
    }
}

/// A two-platform base image with a runtime config, built by kiln and copied into the
/// registry by skopeo as `repository:v1` (and its amd64 image alone as
/// `repository:single`); returns the index's digest as the registry has it.
fn seed_base(pki: &Pki, repository: &str) -> String {
    let src = crate::support::workspace()
        .file("base.txt", "from the base\n")
        .file(
            "BUILD.toml",
            "[oci_image.base]\nplatforms = [\"linux/amd64\", \"linux/arm64\"]\n\
             files = { \"/etc/base.txt\" = \"base.txt\" }\nuser = \"65532:65532\"\n\
             workdir = \"/srv\"\nentrypoint = [\"/bin/base\"]\ncmd = [\"--serve\"]\n\
             env = { LANG = \"C.UTF-8\", APP = \"base\" }\nlabels = { \"org.example.base\" = \"yes\" }\n",
        )
        .build();
    src.kiln(&["build", "//:base"]).assert_ok();
    let cert_dir = pki.cert_dir();
    let layout = src.path("kiln-out/base/layout");
    let creds = format!("{USER}:{PASSWORD}");
    let copy = |first: &str, tag: &str| {
        skopeo(&[
            "copy",
            first,
            "--dest-cert-dir",
            cert_dir.to_str().unwrap(),
            "--dest-creds",
            &creds,
            &format!("oci:{}:latest", layout.display()),
            &format!("docker://{repository}:{tag}"),
        ])
    };
    copy("--all", "v1");
    copy("--override-arch=amd64", "single");
    remote_digest(
        pki,
        &format!("{repository}:v1"),
        &format!("{USER}:{PASSWORD}"),
    )
}

/// A TLS registry behind htpasswd (USER, PASSWORD) and its CA.
fn basic_registry() -> (Pki, Registry) {
    let pki = Pki::new();
    let auth = RegistryAuth::Basic {
        user: USER,
        password: PASSWORD,
    };
    let registry = Registry::start_with(auth, Some(&pki));
    (pki, registry)
}

/// A TLS registry behind htpasswd holding a seeded base at `HOST/base`: (its CA, the
/// registry, the repository, the base's digest).
fn basic_registry_with_base() -> (Pki, Registry, String, String) {
    let (pki, registry) = basic_registry();
    let repository = format!("{}/base", registry.host());
    let digest = seed_base(&pki, &repository);
    (pki, registry, repository, digest)
}

fn pull_workspace(kiln_toml: &str, image: &str, platforms: &str) -> Workspace {
    crate::support::workspace()
        .file(
            "kiln.toml",
            &format!("[workspace]\nname = \"pull\"\n{kiln_toml}"),
        )
        .file("app.txt", "the app\n")
        .file(
            "BUILD.toml",
            &format!(
                "[oci_pull.base]\nimage = \"{image}\"\nplatforms = {platforms}\n\n\
                 [oci_image.app]\nbase = \":base\"\nplatforms = [\"linux/amd64\"]\n\
                 files = {{ \"/app/app.txt\" = \"app.txt\" }}\nenv = {{ APP = \"app\" }}\n"
            ),
        )
        .build()
}

fn build_with(ws: &Workspace, docker_config: &Path, args: &[&str]) -> Run {
    let mut cmd = ws.cmd(args);
    cmd.env("DOCKER_CONFIG", docker_config)
        .env_remove("SSL_CERT_FILE")
        .env_remove("KILN_REGISTRY_USER")
        .env_remove("KILN_REGISTRY_PASSWORD")
        .env_remove("REGISTRY_AUTH_FILE")
        .env_remove("XDG_RUNTIME_DIR");
    Run::from(cmd.output().unwrap())
}

#[test]
fn oci_pull_by_digest_gives_an_image_its_layers_and_config() {
    let (pki, _issuer, registry) = token_registry("unused");
    let repository = format!("{}/base/static", registry.host());
    let digest = seed_base(&pki, &repository);
    let toml = kiln_toml_ca(&registry, "ca.pem");
    let ws = pull_workspace(
        &toml,
        &format!("{repository}@{digest}"),
        "[\"linux/amd64\", \"linux/arm64\"]",
    );
    with_ca(&ws, &pki);
    let creds = docker_config(&auths(&registry.host(), USER, PASSWORD));
    build_with(&ws, creds.path(), &["build", "//:app"]).assert_ok();

    let oci = format!("oci:{}:latest", ws.path("kiln-out/app/layout").display());
    let config: serde_json::Value =
        serde_json::from_slice(&skopeo(&["inspect", "--config", &oci]).stdout).unwrap();
    let c = &config["config"];
    assert_eq!(c["User"], "65532:65532", "{config}");
    assert_eq!(c["WorkingDir"], "/srv");
    assert_eq!(c["Entrypoint"][0], "/bin/base");
    assert_eq!(c["Cmd"][0], "--serve");
    assert_eq!(c["Labels"]["org.example.base"], "yes");
    let env: Vec<&str> = c["Env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(env, ["LANG=C.UTF-8", "APP=app"]);
    let pulled = format!(
        "oci:{}:linux_amd64",
        ws.path("kiln-out/base/linux_amd64/layout").display()
    );
    let base: serde_json::Value =
        serde_json::from_slice(&skopeo(&["inspect", &pulled]).stdout).unwrap();
    let app: serde_json::Value =
        serde_json::from_slice(&skopeo(&["inspect", &oci]).stdout).unwrap();
    assert_eq!(app["Layers"].as_array().unwrap().len(), 2, "{app}");
    assert_eq!(app["Layers"][0], base["Layers"][0]);
    // Both platforms listed in `platforms` were pulled, each into its own layout.
    for arch in ["amd64", "arm64"] {
        let index = ws.read(&format!("kiln-out/base/linux_{arch}/layout/index.json"));
        assert!(index.contains(&format!("\"{arch}\"")), "{index}");
    }

    // Cached by digest, not by credentials: without any, the build still works.
    std::fs::remove_dir_all(ws.path("kiln-out")).unwrap();
    let none = docker_config("{}");
    let run = build_with(&ws, none.path(), &["build", "//:app"]);
    run.assert_ok();
    assert_secret_hidden(&ws, &run, PASSWORD);
}

#[test]
fn oci_pull_refuses_a_tag_a_wrong_digest_and_a_missing_platform() {
    let (pki, registry, repository, digest) = basic_registry_with_base();
    let toml = kiln_toml_ca(&registry, "ca.pem");
    let creds = docker_config(&auths(&registry.host(), USER, PASSWORD));

    let pull = |image: &str, platforms: &str| {
        let ws = pull_workspace(&toml, image, platforms);
        with_ca(&ws, &pki);
        build_with(&ws, creds.path(), &["build", "//:app"])
    };
    let wrong = format!("sha256:{}", "0".repeat(64));
    let single = remote_digest(
        &pki,
        &format!("{repository}:single"),
        &format!("{USER}:{PASSWORD}"),
    );
    let cases = [
        // A tag alone: the message prints the line to pin, at the attribute.
        (
            format!("{repository}:v1"),
            "[]",
            vec![
                "names the tag `v1` alone".to_string(),
                format!("image = \"{repository}@{digest}\""),
                "BUILD.toml:2:".to_string(),
            ],
        ),
        (
            format!("{repository}@{wrong}"),
            "[]",
            vec![wrong.clone(), "no manifest with that digest".to_string()],
        ),
        (
            format!("{repository}@{digest}"),
            "[\"linux/s390x\"]",
            vec!["has no image for linux/s390x; it has linux/amd64, linux/arm64".to_string()],
        ),
        // A digest of one image (no index) serves its own platform only.
        (
            format!("{repository}@{single}"),
            "[\"linux/arm64\"]",
            vec![format!(
                "{single} is an image for linux/amd64 only; linux/arm64 asked for"
            )],
        ),
    ];
    for (image, platforms, expected) in cases {
        let run = pull(&image, platforms);
        assert_ne!(run.status, 0, "{image}: {}", run.stderr);
        for text in expected {
            assert!(run.stderr.contains(&text), "{image}: {}", run.stderr);
        }
    }
    pull(&format!("{repository}@{single}"), "[]").assert_ok();
}

#[test]
fn oci_pull_refuses_a_blob_the_registry_altered() {
    let (pki, registry, repository, digest) = basic_registry_with_base();
    // The attack: a layer's bytes changed in the registry's storage (same size). The
    // registry serves them as they are.
    let raw = |digest: &str| -> serde_json::Value {
        let out = skopeo(&[
            "inspect",
            "--raw",
            "--cert-dir",
            pki.cert_dir().to_str().unwrap(),
            "--creds",
            &format!("{USER}:{PASSWORD}"),
            &format!("docker://{repository}@{digest}"),
        ]);
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let amd64 = raw(&digest)["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let manifest = raw(&amd64);
    let layer = manifest["layers"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let file = registry.blob_file(&layer);
    let mut bytes = std::fs::read(&file).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&file, &bytes).unwrap();
    let served = Command::new("curl")
        .args([
            "-sf",
            "--cacert",
            pki.ca_cert().to_str().unwrap(),
            "-u",
            &format!("{USER}:{PASSWORD}"),
        ])
        .arg(format!("{}/v2/base/blobs/{layer}", registry.url()))
        .output()
        .unwrap();
    assert!(served.status.success());
    assert_eq!(
        served.stdout, bytes,
        "the registry serves the altered layer"
    );

    let toml = kiln_toml_ca(&registry, "ca.pem");
    let creds = docker_config(&auths(&registry.host(), USER, PASSWORD));
    let ws = pull_workspace(
        &toml,
        &format!("{repository}@{digest}"),
        "[\"linux/amd64\"]",
    );
    with_ca(&ws, &pki);
    let run = build_with(&ws, creds.path(), &["build", "//:app"]);
    assert_ne!(run.status, 0, "{}", run.stderr);
    assert!(
        run.stderr.contains(&format!("pull blob {layer}")),
        "{}",
        run.stderr
    );
    assert!(!ws.path("kiln-out/app/layout").exists());
}

#[test]
fn push_mounts_the_pulled_base_blobs_from_its_repository() {
    let (pki, issuer, registry) = token_registry("unused");
    let base = format!("{}/base/static", registry.host());
    let digest = seed_base(&pki, &base);
    let repository = format!("{}/team/app", registry.host());
    let ws = pull_workspace(
        &kiln_toml_ca(&registry, "ca.pem"),
        &format!("{base}@{digest}"),
        "[\"linux/amd64\"]",
    );
    with_ca(&ws, &pki);
    let build = ws.read("BUILD.toml");
    ws.write(
        "BUILD.toml",
        &format!("{build}\n[oci_push.push]\nimage = \":app\"\nrepository = \"{repository}\"\ntags = [\"v2\"]\n"),
    );
    let creds = docker_config(&auths(&registry.host(), USER, PASSWORD));
    let run = build_with(&ws, creds.path(), &["run", "//:push"]);
    run.assert_ok();
    // The base layer is mounted from base/static; the app layer and config go up.
    assert!(
        run.stderr
            .contains("2 blobs uploaded (0 in chunks), 1 mounted, 0 already there"),
        "{}",
        run.stderr
    );
    assert!(
        issuer.requests().iter().any(|r| r
            .scopes
            .contains(&"repository:base/static:pull".to_string())),
        "{:?}",
        issuer.requests()
    );
    let pushed = index_digest_of(&ws, "app");
    assert_eq!(
        remote_digest(
            &pki,
            &format!("{repository}:v2"),
            &format!("{USER}:{PASSWORD}")
        ),
        pushed
    );
}

fn index_digest_of(ws: &Workspace, image: &str) -> String {
    ws.read(&format!("kiln-out/{image}/index.digest"))
        .trim()
        .to_string()
}

#[test]
fn large_blobs_go_up_in_chunks() {
    let registry = Registry::start();
    let ws = image_workspace(&format!("{}/big", registry.host()), "");
    // 40 KB that gzip cannot shrink: the layer is well above a 4 KB chunk size.
    let noise: String = (0..40_000u32)
        .map(|i| {
            let x = i.wrapping_mul(2_654_435_761).rotate_left(i % 31);
            char::from(b'!' + (x % 90) as u8)
        })
        .collect();
    ws.write("hello.txt", &noise);
    let empty = docker_config("{}");
    let run = push(&ws, empty.path(), &[("KILN_PUSH_CHUNK_SIZE", "4096")]);
    run.assert_ok();
    assert!(run.stderr.contains("(1 in chunks)"), "{}", run.stderr);
    assert!(registry.log().contains("PATCH"), "{}", registry.log());
    let out = skopeo(&[
        "inspect",
        "--tls-verify=false",
        "--format",
        "{{.Digest}}",
        &format!("docker://{}/big:latest", registry.host()),
    ]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        index_digest(&ws)
    );
}

#[test]
fn a_dropped_connection_to_the_token_service_is_retried() {
    let pki = Pki::new();
    let issuer = TokenIssuer::start(&pki, USER, PASSWORD, "unused");
    let port: u16 = issuer.url().rsplit(':').next().unwrap().parse().unwrap();
    let proxy = DroppingProxy::start(port, 1);
    let realm = format!("http://127.0.0.1:{}/token", proxy.port());
    let auth = RegistryAuth::TokenVia {
        issuer: &issuer,
        realm,
    };
    let registry = Registry::start_with(auth, Some(&pki));
    let ws = tls_workspace(&registry, &pki, "app");
    let vars = [
        ("KILN_REGISTRY_USER", USER),
        ("KILN_REGISTRY_PASSWORD", PASSWORD),
    ];
    let empty = docker_config("{}");
    let run = push(&ws, empty.path(), &vars);
    run.assert_ok();
    assert!(run.stderr.contains("get a token from"), "{}", run.stderr);
    assert!(run.stderr.contains("trying again"), "{}", run.stderr);
    assert!(proxy.accepted() >= 2);
}

#[test]
fn a_token_that_no_longer_serves_is_fetched_again_on_401() {
    let (pki, issuer, registry) = token_registry("unused");
    let ws = tls_workspace(&registry, &pki, "app");
    // The first token grants pull only: the blob checks pass, the upload gets 401.
    issuer.narrow_next(1);
    let vars = [
        ("KILN_REGISTRY_USER", USER),
        ("KILN_REGISTRY_PASSWORD", PASSWORD),
    ];
    let empty = docker_config("{}");
    let run = push(&ws, empty.path(), &vars);
    run.assert_ok();
    let granted = issuer.requests().iter().filter(|r| r.granted).count();
    assert!(granted >= 2, "{:?}", issuer.requests());
}

#[test]
fn credentials_go_only_to_the_registry_host() {
    let port = kiln_testkit::free_port();
    // A recorder on another port forwards to the registry, whose upload locations name
    // the recorder: a registry sending its clients to another host.
    let recorder = DroppingProxy::start(port, 0);
    let public = format!("http://127.0.0.1:{}", recorder.port());
    let registry = Registry::start_at(
        RegistryAuth::Basic {
            user: USER,
            password: PASSWORD,
        },
        None,
        port,
        Some(&public),
    );
    let basic = STANDARD.encode(format!("{USER}:{PASSWORD}"));
    // The attack: a client that sends its credentials wherever the registry points
    // hands them to the other host.
    let head = Command::new("curl")
        .args([
            "-s",
            "-i",
            "-X",
            "POST",
            "-u",
            &format!("{USER}:{PASSWORD}"),
        ])
        .arg(format!("{}/v2/app/blobs/uploads/", registry.url()))
        .output()
        .unwrap();
    let head = String::from_utf8_lossy(&head.stdout).to_string();
    let location = head
        .lines()
        .find_map(|l| l.strip_prefix("Location: "))
        .unwrap_or_else(|| panic!("{head}"))
        .trim()
        .to_string();
    assert!(location.starts_with(&public), "{location}");
    Command::new("curl")
        .args([
            "-s",
            "-X",
            "DELETE",
            "-u",
            &format!("{USER}:{PASSWORD}"),
            &location,
        ])
        .output()
        .unwrap();
    assert!(recorder.seen().contains(&basic), "{}", recorder.seen());

    // kiln sends them to the registry's own host only, and says why the push stops.
    let before = recorder.seen().len();
    let ws = image_workspace(&format!("{}/app", registry.host()), "");
    let empty = docker_config("{}");
    let vars = [
        ("KILN_REGISTRY_USER", USER),
        ("KILN_REGISTRY_PASSWORD", PASSWORD),
    ];
    let run = push(&ws, empty.path(), &vars);
    assert_ne!(run.status, 0, "{}", run.stderr);
    let sent = recorder.seen()[before..].to_string();
    assert!(sent.contains("PUT /v2/app/blobs/uploads/"), "{sent}");
    assert!(!sent.to_lowercase().contains("authorization"), "{sent}");
    assert!(
        run.stderr.contains(&format!(
            "sent kiln to 127.0.0.1:{}, which asks for credentials; kiln sends them only to {}",
            recorder.port(),
            registry.host()
        )),
        "{}",
        run.stderr
    );
}

#[test]
fn a_large_upload_shows_progress_on_a_terminal() {
    let registry = Registry::start();
    let ws = image_workspace(&format!("{}/big", registry.host()), "");
    // 17 MiB that gzip cannot shrink: above the 16 MiB from which progress shows.
    let mut noise = vec![0u8; 17 << 20];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for b in noise.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    std::fs::write(ws.path("hello.txt"), &noise).unwrap();
    let empty = docker_config("{}");
    // `script` gives kiln a terminal; its output is what the terminal showed.
    let command = format!(
        "DOCKER_CONFIG={} {} run //:push",
        empty.path().display(),
        crate::support::KILN
    );
    let shown = Command::new("script")
        .args(["-q", "-e", "-c", &command, "/dev/null"])
        .current_dir(&ws.root)
        .env("KILN_CACHE", &ws.cache)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&shown.stdout);
    assert!(shown.status.success(), "{text}");
    assert!(text.contains("kiln: uploading"), "{text}");
    assert!(text.contains("of 17.0 MiB"), "{text}");
    // Without a terminal, no progress (the same upload, to another registry).
    let other = Registry::start();
    let build = ws
        .read("BUILD.toml")
        .replace(&registry.host(), &other.host());
    ws.write("BUILD.toml", &build);
    let run = push(&ws, empty.path(), &[]);
    assert!(run.stderr.contains("2 blobs uploaded"), "{}", run.stderr);
    run.assert_ok();
    assert!(!run.stderr.contains("uploading"), "{}", run.stderr);
}

#[test]
fn a_pulled_base_is_shared_through_the_remote_cache() {
    let (pki, registry, repository, digest) = basic_registry_with_base();
    let ws = pull_workspace(
        &kiln_toml_ca(&registry, "ca.pem"),
        &format!("{repository}@{digest}"),
        "[\"linux/amd64\"]",
    );
    with_ca(&ws, &pki);
    let server = crate::support::KilnServe::start();
    let url = server.url();
    let creds = docker_config(&auths(&registry.host(), USER, PASSWORD));
    build_with(
        &ws,
        creds.path(),
        &["build", "--remote-cache", &url, "//:app"],
    )
    .assert_ok();
    let digest_here = index_digest_of(&ws, "app");

    // Another machine: another path and cache, no credentials, the registry gone.
    drop(registry);
    let other = ws.copy();
    let none = docker_config("{}");
    let run = build_with(
        &other,
        none.path(),
        &["build", "--remote-cache", &url, "//:app"],
    );
    run.assert_ok();
    assert!(run.stderr.contains("remote)"), "{}", run.stderr);
    assert_eq!(index_digest_of(&other, "app"), digest_here);
    assert_secret_hidden(&other, &run, PASSWORD);
    let stored = Command::new("grep")
        .args(["-r", "-l", "-a", "-F", PASSWORD])
        .arg(server.root())
        .output()
        .unwrap();
    assert!(
        stored.stdout.is_empty(),
        "the remote cache holds the password"
    );
}

#[test]
fn bad_registry_settings_are_errors_naming_kiln_toml() {
    let cases = [
        (
            "\n[registries.\"127.0.0.1:5000\"]\nca_file = \"missing.pem\"\n",
            "`ca_file` of registry `127.0.0.1:5000`",
        ),
        (
            "\n[registries.\"127.0.0.1:5000\"]\ninsecur = true\n",
            "unknown field `insecur` in registry `127.0.0.1:5000`",
        ),
        (
            "\n[registries]\nhost = \"x\"\n",
            "`registries.\"host\"` must be a table",
        ),
    ];
    for (toml, expected) in cases {
        let ws = image_workspace("127.0.0.1:5000/app", toml);
        let run = ws.kiln(&["build", "//:push"]);
        assert_eq!(run.status, 2, "{toml}: {}", run.stderr);
        assert!(run.stderr.contains(expected), "{toml}: {}", run.stderr);
        assert!(run.stderr.contains("kiln.toml:"), "{toml}: {}", run.stderr);
    }
    // A plain-http repository on another host is refused when the push starts.
    let ws = image_workspace("http://registry.example/app", "");
    let empty = docker_config("{}");
    let run = push(&ws, empty.path(), &[]);
    assert_ne!(run.status, 0);
    assert!(
        run.stderr.contains("plain http is used only for loopback"),
        "{}",
        run.stderr
    );
}

#[test]
fn the_registry_checks_the_tokens_signature() {
    let (pki, issuer, registry) = token_registry("unused");
    let ws = tls_workspace(&registry, &pki, "app");
    // From now on a key the registry does not trust signs the tokens.
    let stranger = Pki::new();
    std::fs::copy(stranger.signing_key(), pki.signing_key()).unwrap();
    let vars = [
        ("KILN_REGISTRY_USER", USER),
        ("KILN_REGISTRY_PASSWORD", PASSWORD),
    ];
    let empty = docker_config("{}");
    let run = push(&ws, empty.path(), &vars);
    assert_ne!(run.status, 0, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("refused the credentials from KILN_REGISTRY_USER/KILN_REGISTRY_PASSWORD"),
        "{}",
        run.stderr
    );
    assert!(issuer.requests().iter().any(|r| r.granted));
}

#[test]
fn plain_http_to_a_registry_that_is_not_loopback_needs_insecure() {
    // Refused before any connection: the name does not even resolve.
    let ws = image_workspace("http://registry.example:5000/app", "");
    let empty = docker_config("{}");
    let run = push(&ws, empty.path(), &[]);
    assert_ne!(run.status, 0);
    for text in [
        "registry registry.example:5000: plain http is used only for loopback hosts",
        "`insecure = true` under [registries.\"registry.example:5000\"] in kiln.toml",
    ] {
        assert!(run.stderr.contains(text), "{text}: {}", run.stderr);
    }
    assert!(!run.stderr.contains("resolve"), "{}", run.stderr);

    // A registry on this machine's own interface address: plain http reaches it, but
    // the address is not loopback (127.0.0.0/8, ::1, localhost are), so kiln refuses
    // it until kiln.toml lists it as insecure.
    let ip = kiln_testkit::own_address().expect("a non-loopback IPv4 interface address");
    let registry = Registry::start_on(ip.into());
    let host = registry.host();
    let ws = image_workspace(&format!("http://{host}/app"), "");
    let run = push(&ws, empty.path(), &[]);
    assert_ne!(run.status, 0, "{}", run.stderr);
    assert!(
        run.stderr.contains(&format!(
            "registry {host}: plain http is used only for loopback hosts and registries listed with `insecure = true` under [registries.\"{host}\"]"
        )),
        "{}",
        run.stderr
    );
    assert!(!registry.log().contains("/v2/"), "{}", registry.log());

    let insecure = format!("\n[registries.\"{host}\"]\ninsecure = true\n");
    let ws = image_workspace(&format!("http://{host}/app"), &insecure);
    push(&ws, empty.path(), &[]).assert_ok();
    let out = skopeo(&[
        "inspect",
        "--tls-verify=false",
        "--format",
        "{{.Digest}}",
        &format!("docker://{host}/app:v1"),
    ]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        index_digest(&ws)
    );
    // Without a scheme too: an insecure registry is spoken to over http.
    let ws = image_workspace(&format!("{host}/other"), &insecure);
    push(&ws, empty.path(), &[]).assert_ok();
}

/// A registry on loopback that serves `manifest` for any manifest request and, for any
/// blob, bytes without end (up to 256 MiB); returns its port and the count of blob
/// bytes it managed to send.
fn endless_blob_registry(manifest: Vec<u8>) -> (u16, std::sync::Arc<std::sync::atomic::AtomicU64>) {
    use std::io::{BufRead, BufReader, Write};
    use std::sync::atomic::{AtomicU64, Ordering};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let sent = std::sync::Arc::new(AtomicU64::new(0));
    let count = sent.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let (manifest, count) = (manifest.clone(), count.clone());
            std::thread::spawn(move || {
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut conn = conn;
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                let target = line.split(' ').nth(1).unwrap_or("").to_string();
                loop {
                    let mut header = String::new();
                    if reader.read_line(&mut header).unwrap_or(0) <= 2 {
                        break;
                    }
                }
                if target.contains("/manifests/") {
                    let head = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/vnd.oci.image.manifest.v1+json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        manifest.len()
                    );
                    let _ = conn.write_all(head.as_bytes());
                    let _ = conn.write_all(&manifest);
                    return;
                }
                let _ = conn.write_all(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n");
                let chunk = vec![b'x'; 1 << 16];
                for _ in 0..4096 {
                    if conn.write_all(&chunk).is_err() {
                        return;
                    }
                    count.fetch_add(chunk.len() as u64, Ordering::SeqCst);
                }
            });
        }
    });
    (port, sent)
}

#[test]
fn oci_pull_stops_reading_a_blob_longer_than_its_descriptor() {
    // The attack: a registry (or anyone on its path) answers a blob request with bytes
    // that never end, to fill the disk kiln downloads to.
    let config = "{}";
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:{}","size":{}}},"layers":[]}}"#,
        crate::image::sha256_hex(config.as_bytes()),
        config.len()
    );
    let digest = format!("sha256:{}", crate::image::sha256_hex(manifest.as_bytes()));
    let (port, sent) = endless_blob_registry(manifest.into_bytes());
    let ws = pull_workspace(
        "",
        &format!("127.0.0.1:{port}/base@{digest}"),
        "[\"linux/amd64\"]",
    );
    let empty = docker_config("{}");
    let run = build_with(&ws, empty.path(), &["build", "//:base"]);
    assert_ne!(run.status, 0, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("the registry served more than the 2 bytes the manifest says"),
        "{}",
        run.stderr
    );
    let sent = sent.load(std::sync::atomic::Ordering::SeqCst);
    assert!(sent < 64 << 20, "kiln read {sent} bytes of a 2-byte blob");
}
