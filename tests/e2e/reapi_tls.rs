//! `grpcs://` and the bearer token end to end: buildbox-casd (plain gRPC, no
//! credentials) behind Debian's nginx, which terminates TLS with a certificate from a
//! CA the test makes and refuses every call without the right `authorization: Bearer`
//! ([`kiln_testkit::GrpcTlsProxy`]). kiln trusts the CA through `SSL_CERT_FILE` and
//! reads the token from the variable `[remote] token_env` names.
//!
//! casd and nginx are required, not skipped: a test that passes without them proves
//! nothing.

use std::process::Command;

use kiln_testkit::{Casd, GrpcTlsProxy, Pki};

use crate::reapi::{dag, outputs};
use crate::support::{Run, Workspace};

const TOKEN: &str = "kiln-e2e-7c1f0a93d25b";
const TOKEN_ENV: &str = "KILN_TEAM_REAPI_TOKEN";

/// casd behind nginx, and the CA that signed nginx's certificate.
struct Engine {
    _casd: Casd,
    proxy: GrpcTlsProxy,
    pki: Pki,
}

impl Engine {
    fn start() -> Engine {
        let casd = Casd::start();
        let pki = Pki::new();
        let proxy = GrpcTlsProxy::start(casd.port(), &pki, TOKEN);
        Engine {
            _casd: casd,
            proxy,
            pki,
        }
    }
}

/// A genrule DAG whose kiln.toml names the token's variable.
fn ws() -> Workspace {
    let ws = dag(6, 3);
    ws.write(
        "kiln.toml",
        &format!("[workspace]\nname = \"test\"\n\n[remote]\ntoken_env = \"{TOKEN_ENV}\"\n"),
    );
    ws
}

/// kiln in `ws`, trusting the CA when `ca`, holding the token when `token`.
fn kiln(ws: &Workspace, engine: &Engine, ca: bool, token: bool, args: &[&str]) -> Run {
    let mut cmd: Command = ws.cmd(args);
    cmd.env_remove("SSL_CERT_DIR")
        .env_remove("SSL_CERT_FILE")
        .env_remove(TOKEN_ENV)
        .env_remove("KILN_REMOTE_TOKEN");
    if ca {
        cmd.env("SSL_CERT_FILE", engine.pki.ca_cert());
    }
    if token {
        cmd.env(TOKEN_ENV, TOKEN);
    }
    Run::from(cmd.output().unwrap())
}

#[test]
fn a_build_through_tls_with_the_token_runs_remotely_and_matches_a_local_build() {
    let engine = Engine::start();
    let url = engine.proxy.url();
    let local = ws();
    local.kiln(&["build"]).assert_ok();
    let want = outputs(&local);

    let remote = local.copy();
    let (json, profile) = (remote.path("events.json"), remote.path("trace.json"));
    let (json_arg, profile_arg) = (json.display().to_string(), profile.display().to_string());
    let args = [
        "build",
        "--remote-executor",
        &url,
        "--json",
        &json_arg,
        "--profile",
        &profile_arg,
    ];
    let run = kiln(&remote, &engine, true, true, &args);
    run.assert_ok();
    let (actions, cached, executed, _) = run.counts();
    assert_eq!((cached, executed), (0, actions), "{}", run.stderr);
    assert_eq!(run.remote_counts(), (0, actions), "{}", run.stderr);
    assert_eq!(
        outputs(&remote),
        want,
        "remote outputs differ from local ones"
    );
    // The calls went through nginx, with the token (it answers 401 to any other).
    let log = engine.proxy.access_log();
    assert!(
        log.contains("ok 200 /build.bazel.remote.execution.v2.Execution/Execute"),
        "{log}"
    );
    assert!(!log.contains("refused"), "{log}");
    // The token is in no output kiln wrote.
    for (name, text) in [
        ("stderr", run.stderr.clone()),
        ("stdout", run.stdout.clone()),
        ("--json", std::fs::read_to_string(&json).unwrap()),
        ("--profile", std::fs::read_to_string(&profile).unwrap()),
    ] {
        assert!(!text.contains(TOKEN), "the token is in {name}");
    }
}

/// A build on a new engine through the proxy, with or without the CA and the token.
fn refused_build(ca: bool, token: bool) -> (Engine, String, Workspace, Run) {
    let engine = Engine::start();
    let url = engine.proxy.url();
    let ws = ws();
    let run = kiln(
        &ws,
        &engine,
        ca,
        token,
        &["build", "--remote-executor", &url],
    );
    (engine, url, ws, run)
}

#[test]
fn without_the_token_the_engine_refuses_before_anything_is_built() {
    // The refusal happens: nginx refuses the capabilities call (UNAUTHENTICATED).
    let (engine, url, ws, run) = refused_build(true, false);
    let error = run.the_error(3);
    let log = engine.proxy.access_log();
    assert_eq!(
        log.lines().collect::<Vec<_>>(),
        ["refused 204 /build.bazel.remote.execution.v2.Capabilities/GetCapabilities"],
        "one call, refused, not retried"
    );
    assert!(
        error.contains(&url) && error.contains("refused the credentials"),
        "{}",
        run.stderr
    );
    assert!(error.contains("sent no token"), "{}", run.stderr);
    assert!(
        !run.stderr.contains("hint:"),
        "no hint about the address:\n{}",
        run.stderr
    );
    assert!(!ws.path("kiln-out").exists(), "nothing was built");
    assert!(!run.stderr.contains("Genrule"), "{}", run.stderr);

    // A wrong token: refused too, and neither token is printed.
    let mut cmd = ws.cmd(&["build", "--remote-executor", &url]);
    cmd.env("SSL_CERT_FILE", engine.pki.ca_cert())
        .env(TOKEN_ENV, "not-the-token-5e8d");
    let run = Run::from(cmd.output().unwrap());
    assert!(
        run.the_error(3).contains("refused the credentials"),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("not-the-token-5e8d"), "{}", run.stderr);
    assert!(!ws.path("kiln-out").exists());
}

#[test]
fn without_the_ca_the_certificate_is_named_and_nothing_is_sent() {
    let (engine, url, ws, run) = refused_build(false, true);
    let error = run.the_error(3);
    assert!(
        error.contains(&url)
            && error.contains("TLS")
            && error.contains("certificate is not trusted")
            && error.contains("SSL_CERT_FILE"),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains(TOKEN), "{}", run.stderr);
    assert_eq!(
        engine.proxy.access_log(),
        "",
        "no call got through the handshake"
    );
    assert!(!ws.path("kiln-out").exists());
}

#[test]
fn a_grpcs_cache_with_the_token_gives_remote_hits_on_a_second_checkout() {
    let engine = Engine::start();
    let url = engine.proxy.url();
    let first = ws();
    let run = kiln(
        &first,
        &engine,
        true,
        true,
        &["build", "--remote-cache", &url],
    );
    run.assert_ok();
    let (actions, _, executed, _) = run.counts();
    assert_eq!(executed, actions, "{}", run.stderr);
    assert_eq!(run.remote_counts(), (0, 0), "ran here:\n{}", run.stderr);

    let second = first.copy();
    let run = kiln(
        &second,
        &engine,
        true,
        true,
        &["build", "--remote-cache", &url],
    );
    run.assert_ok();
    assert_eq!(run.counts(), (actions, actions, 0, 0), "{}", run.stderr);
    assert_eq!(run.remote_counts().0, actions, "{}", run.stderr);
    assert_eq!(outputs(&second), outputs(&first));
    assert!(!run.stderr.contains(TOKEN));

    // The same cache without the token: refused, named in one warning, built here.
    let third = first.copy();
    let run = kiln(
        &third,
        &engine,
        true,
        false,
        &["build", "--remote-cache", &url],
    );
    run.assert_ok();
    assert_eq!(run.remote_counts().0, 0, "{}", run.stderr);
    assert!(
        run.stderr.contains("refused the credentials") && run.stderr.contains(&url),
        "{}",
        run.stderr
    );
}
