//! Release signing with a key made by the real minisign: SHA256SUMS verified by
//! `minisign -V`, the provenance's DSSE envelope verified by securesystemslib, the
//! build's outputs untouched (still cached, same bytes), the key only from the
//! environment.

use std::path::Path;
use std::process::Command;

use crate::release::module;
use crate::support::Workspace;

const DIR: &str = "kiln-out/release/v1.2.3";

/// A minisign key pair without a password, made by minisign itself.
fn keypair(dir: &Path) -> (String, String) {
    let (public, secret) = (dir.join("kiln.pub"), dir.join("kiln.key"));
    let out = Command::new("minisign")
        .args(["-G", "-W", "-p"])
        .arg(&public)
        .arg("-s")
        .arg(&secret)
        .output()
        .expect("minisign is needed: run .ci/install-deps");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (
        public.to_string_lossy().into_owned(),
        secret.to_string_lossy().into_owned(),
    )
}

fn run_signed(ws: &Workspace, key: Option<&str>) -> crate::support::Run {
    let mut cmd = ws.cmd(&["run", "//:release"]);
    cmd.env_remove("KILN_SIGNING_KEY");
    if let Some(key) = key {
        cmd.env("KILN_SIGNING_KEY", key);
    }
    crate::support::Run::from(cmd.output().unwrap())
}

fn minisign_verify(public: &str, file: &Path) -> std::process::Output {
    Command::new("minisign")
        .args(["-V", "-p", public, "-m"])
        .arg(file)
        .output()
        .unwrap()
}

/// securesystemslib's verdict on a DSSE envelope, with the public key from minisign's
/// public key file; prints the payload.
const VERIFY_DSSE: &str = r#"
import base64, hashlib, json, sys
from securesystemslib.dsse import Envelope
from securesystemslib.signer import SSlibKey
raw = base64.b64decode(open(sys.argv[2]).read().splitlines()[1])
public = raw[10:42]
key = SSlibKey(hashlib.sha256(public).hexdigest(), "ed25519", "ed25519", {"public": public.hex()})
envelope = Envelope.from_dict(json.load(open(sys.argv[1])))
envelope.verify([key], 1)
sys.stdout.buffer.write(envelope.payload)
"#;

fn verify_dsse(envelope: &Path, public: &str) -> std::process::Output {
    Command::new("python3")
        .args(["-c", VERIFY_DSSE])
        .arg(envelope)
        .arg(public)
        .output()
        .unwrap()
}

#[test]
fn signed_releases_verify_with_minisign_and_securesystemslib() {
    let keys = tempfile::tempdir().unwrap();
    let (public, secret) = keypair(keys.path());
    let store = keys.path().join("store");
    let ws = module().build();
    ws.write(
        "BUILD.toml",
        &format!(
            "{}sign = true\nstore = \"{}\"\n",
            ws.read("BUILD.toml"),
            store.display()
        ),
    );
    // Without the key: a clear error, nothing signed or published.
    let run = run_signed(&ws, None);
    assert_eq!(run.status, 1, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("set KILN_SIGNING_KEY to the path of a minisign secret key"),
        "{}",
        run.stderr
    );
    assert!(!store.exists());
    let sums_before = ws.read(&format!("{DIR}/SHA256SUMS"));
    let provenance_before = ws.read(&format!("{DIR}/provenance.intoto.json"));

    let run = run_signed(&ws, Some(&secret));
    run.assert_ok();
    assert!(
        run.stdout
            .contains("signed SHA256SUMS and the provenance of v1.2.3"),
        "{}",
        run.stdout
    );
    let sums = ws.path(&format!("{DIR}/SHA256SUMS"));
    let out = minisign_verify(&public, &sums);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        said.contains("Trusted comment: file:SHA256SUMS version:v1.2.3"),
        "{said}"
    );

    let out = verify_dsse(
        &ws.path(&format!("{DIR}/provenance.intoto.dsse.json")),
        &public,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), provenance_before);

    // The signed files are the build's, unchanged; the build is still all cached.
    assert_eq!(ws.read(&format!("{DIR}/SHA256SUMS")), sums_before);
    let again = ws.kiln(&["build", "//:release"]);
    again.assert_ok();
    assert_eq!(again.executed(), 0, "{}", again.stderr);
    // Signing again gives the same signatures (ed25519 is deterministic, no time).
    let first = ws.read(&format!("{DIR}/SHA256SUMS.minisig"));
    run_signed(&ws, Some(&secret)).assert_ok();
    assert_eq!(ws.read(&format!("{DIR}/SHA256SUMS.minisig")), first);

    // The store's copy carries the signatures, and they verify there.
    let published = store.join("v1.2.3");
    assert!(minisign_verify(&public, &published.join("SHA256SUMS"))
        .status
        .success());
    assert!(
        verify_dsse(&published.join("provenance.intoto.dsse.json"), &public)
            .status
            .success()
    );

    // A changed SHA256SUMS (or envelope payload) no longer verifies.
    let tampered = keys.path().join("SHA256SUMS");
    std::fs::write(&tampered, format!("{sums_before}0000  extra\n")).unwrap();
    std::fs::copy(
        ws.path(&format!("{DIR}/SHA256SUMS.minisig")),
        keys.path().join("SHA256SUMS.minisig"),
    )
    .unwrap();
    assert!(!minisign_verify(&public, &tampered).status.success());
    let envelope = ws.read(&format!("{DIR}/provenance.intoto.dsse.json"));
    let forged = keys.path().join("forged.json");
    let mut value: serde_json::Value = serde_json::from_str(&envelope).unwrap();
    value["payload"] = serde_json::Value::String("e30=".into());
    std::fs::write(&forged, value.to_string()).unwrap();
    assert!(!verify_dsse(&forged, &public).status.success());

    // The key's path is nowhere in the build's records.
    let graph = ws.kiln(&["graph", "--format", "json", "//:release"]);
    assert!(!graph.stdout.contains("kiln.key"), "{}", graph.stdout);
}

#[test]
fn a_damaged_key_a_key_with_a_password_or_a_bad_variable_name_is_named() {
    let keys = tempfile::tempdir().unwrap();
    let (_, secret) = keypair(keys.path());
    let text = std::fs::read_to_string(&secret).unwrap();
    let damaged = keys.path().join("damaged.key");
    let mut lines: Vec<String> = text.lines().map(String::from).collect();
    let line = &mut lines[1];
    let flip = if line.as_bytes()[100] == b'A' {
        "B"
    } else {
        "A"
    };
    line.replace_range(100..101, flip);
    std::fs::write(&damaged, lines.join("\n")).unwrap();
    let ws = module().build();
    ws.write(
        "BUILD.toml",
        &format!("{}sign = true\n", ws.read("BUILD.toml")),
    );
    let run = run_signed(&ws, Some(damaged.to_str().unwrap()));
    assert_eq!(run.status, 1, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("the signing key file that KILN_SIGNING_KEY names"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("checksum does not match"),
        "{}",
        run.stderr
    );

    // A key minisign protected with a password (given on its standard input): kiln
    // cannot ask for it, and says how to make one it can use.
    let protected = keys.path().join("protected.key");
    let mut child = Command::new("minisign")
        .args(["-G", "-p"])
        .arg(keys.path().join("protected.pub"))
        .arg("-s")
        .arg(&protected)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"a password\na password\n")
        .unwrap();
    assert!(child.wait().unwrap().success());
    let run = run_signed(&ws, Some(protected.to_str().unwrap()));
    assert_eq!(run.status, 1, "{}", run.stderr);
    assert!(
        run.stderr.contains("protected by a password") && run.stderr.contains("minisign -G -W"),
        "{}",
        run.stderr
    );

    ws.write(
        "BUILD.toml",
        &format!(
            "{}sign = true\nsign_key_env = \"my key\"\n",
            module_build(&ws)
        ),
    );
    let run = ws.kiln(&["build", "//:release"]);
    assert_eq!(run.status, 2, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("`my key` is not an environment variable name"),
        "{}",
        run.stderr
    );
}

/// The BUILD.toml of the release module, without the lines this test added.
fn module_build(ws: &Workspace) -> String {
    ws.read("BUILD.toml").replace("sign = true\n", "")
}
