//! A repository kiln builds but does not control (a contributor's branch in CI, a
//! dependency): what it checks in (links in kiln-out/, a kiln.toml, a .git of someone
//! else above it) must not make kiln write, chmod or run anything of the host. Each
//! attack here succeeded on kiln before its defence.

use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;

use crate::support::{kiln_cmd, workspace, Run};

/// A file of the host outside the workspace, with its content and mode.
fn victim(dir: &Path, mode: u32) -> std::path::PathBuf {
    let path = dir.join("victim");
    std::fs::write(&path, "host file\n").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    path
}

#[test]
fn a_checked_in_link_where_kiln_copies_an_output_is_not_followed() {
    // With the store on another file system, an output reaches kiln-out/ as a copy
    // through a temporary file beside it; that file's name was fixed, so a link of that
    // name in a checked-in kiln-out/ took the output's bytes to the host file.
    let store = tempfile::tempdir_in("/dev/shm").unwrap();
    let ws = workspace()
        .file(
            "BUILD.toml",
            "[genrule.g]\nouts = [\"sub/out.txt\"]\ncmd = \"echo planted > $OUT\"\n",
        )
        .build();
    assert_ne!(
        dev_of(store.path()),
        dev_of(&ws.root),
        "/dev/shm is not another file system"
    );
    let host = tempfile::tempdir().unwrap();
    let victim = victim(host.path(), 0o644);
    std::fs::create_dir_all(ws.path("kiln-out/sub")).unwrap();
    symlink(&victim, ws.path("kiln-out/sub/out.kiln-tmp")).unwrap();
    let run = Run::from(
        kiln_cmd(&ws.root, &store.path().join("cache"), &["build"])
            .output()
            .unwrap(),
    );
    run.assert_ok();
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "host file\n");
    let out = ws.path("kiln-out/sub/out.txt");
    assert!(std::fs::symlink_metadata(&out).unwrap().is_file());
    assert_eq!(ws.read("kiln-out/sub/out.txt"), "planted\n");
}

fn dev_of(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).unwrap().dev()
}

#[test]
fn kiln_clean_removes_a_checked_in_kiln_out_link_without_touching_its_target() {
    // `kiln clean` made kiln-out/ and every directory below it writable before removing
    // it, following a kiln-out/ that is a link: a private directory of the host became
    // 0755.
    let ws = workspace().build();
    let host = tempfile::tempdir().unwrap();
    let private = host.path().join("private");
    std::fs::create_dir_all(private.join("sub")).unwrap();
    for dir in [&private, &private.join("sub")] {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    }
    std::fs::create_dir_all(&ws.root).unwrap();
    symlink(&private, ws.path("kiln-out")).unwrap();
    ws.kiln(&["clean"]).assert_ok();
    assert!(std::fs::symlink_metadata(ws.path("kiln-out")).is_err());
    for dir in [&private, &private.join("sub")] {
        let mode = std::fs::metadata(dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "{}", dir.display());
    }
}

#[test]
fn a_git_config_of_another_user_above_the_workspace_runs_nothing() {
    // kiln asked git for its stamp values with `safe.directory=*`, so a .git that another
    // user planted above the workspace (CVE-2022-24765's setting) had its
    // `core.fsmonitor` run by kiln, on the host, as the user running kiln.
    let tmp = tempfile::tempdir().unwrap();
    let shared = tmp.path().join("shared");
    let marker = tmp.path().join("ran");
    std::fs::create_dir_all(&shared).unwrap();
    let git = |args: &[&str]| {
        let out = std::process::Command::new("git")
            .args(args)
            .current_dir(&shared)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    git(&["init", "-q", "."]);
    git(&[
        "-c",
        "user.email=a@b",
        "-c",
        "user.name=a",
        "commit",
        "-q",
        "--allow-empty",
        "-m",
        "x",
    ]);
    let hook = format!("touch {}; false #", marker.display());
    git(&["config", "core.fsmonitor", &hook]);
    let chown = std::process::Command::new("chown")
        .args(["-R", "65534:65534"])
        .arg(&shared)
        .status()
        .unwrap();
    assert!(chown.success());
    let root = shared.join("ws");
    crate::support::write(
        &root.join("kiln.toml"),
        "[stamp]\nSTABLE_GIT_DESCRIBE = \"v0\"\n",
    );
    crate::support::write(&root.join("BUILD.toml"), "[oci_base.base]\n");
    let run = Run::from(
        kiln_cmd(&root, &tmp.path().join("cache"), &["build"])
            .output()
            .unwrap(),
    );
    run.assert_ok();
    assert!(
        !marker.exists(),
        "kiln ran the fsmonitor of another user's .git"
    );
}

#[test]
fn a_go_root_inside_the_workspace_is_refused_before_it_gets_the_network() {
    // `[go] root` in a hostile kiln.toml named a "toolchain" of the repository, which
    // kiln ran as `go mod download`: the one action with the network, the host's /run
    // (docker's socket) and /tmp. A link outside the workspace to it is no way round.
    let fake = "#!/bin/sh\necho fake go ran with the network >&2\nexit 1\n";
    let ws = workspace()
        .file("evil/bin/go", fake)
        .file("evil/src/runtime/x.go", "package runtime\n")
        .file(
            "go.mod",
            "module example.com/m\n\ngo 1.23\n\nrequire example.com/dep v1.0.0\n",
        )
        .file("go.sum", "example.com/dep v1.0.0 h1:AAAA=\n")
        .file("m.go", "package m\n")
        .file("BUILD.toml", "[go_test.unit]\npackages = [\"./...\"]\n")
        .build();
    let go = ws.path("evil/bin/go");
    std::fs::set_permissions(&go, std::fs::Permissions::from_mode(0o755)).unwrap();
    let host = tempfile::tempdir().unwrap();
    let link = host.path().join("go");
    symlink(ws.path("evil"), &link).unwrap();
    for root in [ws.path("evil"), link] {
        ws.write(
            "kiln.toml",
            &format!(
                "[workspace]\nname = \"m\"\n\n[go]\nroot = \"{}\"\n",
                root.display()
            ),
        );
        let run = ws.kiln(&["test"]);
        assert!(!run.stderr.contains("fake go ran"), "{}", run.stderr);
        assert_eq!(run.status, 2, "{}", run.stderr);
        assert!(
            run.stderr.contains("kiln.toml:5:8:") && run.stderr.contains("inside the workspace"),
            "{}",
            run.stderr
        );
    }
}

#[test]
fn an_action_gets_no_descriptor_kiln_inherited() {
    // kiln's own caller (a CI runner, make) may leave descriptors open; every process
    // kiln started got them, bubblewrap's sandbox included.
    use std::os::unix::process::CommandExt;
    for mode in ["--sandbox=bwrap", "--sandbox=dir"] {
        let ws = workspace()
            .file(
                "BUILD.toml",
                "[genrule.fds]\nouts = [\"fds.txt\"]\ncmd = \"ls /proc/self/fd > $OUT\"\ntools = [\"ls\"]\n",
            )
            .build();
        let (read, write) = std::io::pipe().unwrap();
        let raw = std::os::fd::AsRawFd::as_raw_fd(&write);
        let mut cmd = ws.cmd(&["build", mode]);
        // SAFETY: dup2 in the child before exec; 9 does not keep close-on-exec.
        unsafe {
            cmd.pre_exec(move || match libc::dup2(raw, 9) {
                -1 => Err(std::io::Error::last_os_error()),
                _ => Ok(()),
            });
        }
        let run = Run::from(cmd.output().unwrap());
        drop((read, write));
        run.assert_ok();
        let fds: Vec<String> = ws
            .read("kiln-out/fds.txt")
            .lines()
            .map(String::from)
            .collect();
        assert!(!fds.iter().any(|fd| fd == "9"), "{mode}: {fds:?}");
    }
}

#[test]
fn a_toolchain_line_of_go_mod_does_not_switch_the_host_s_go() {
    // With a `go` on PATH that is a shim (pyenv, asdf), kiln asks it `go env GOROOT` in
    // the workspace; go then honoured the repository's `toolchain` line, downloading
    // that toolchain and running it on the host (and kiln took it as the toolchain).
    let tmp = tempfile::tempdir().unwrap();
    let shim = tmp.path().join("shim");
    let real = format!("{}/bin/go", crate::support::go_root());
    crate::support::write(
        &shim.join("go"),
        &format!("#!/bin/sh\nexec {real} \"$@\"\n"),
    );
    std::fs::set_permissions(shim.join("go"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let ws = workspace()
        .file("go.mod", "module example.com/m\n\ngo 1.23\n\ntoolchain go1.99.0\n")
        .file("m.go", "package m\n\nfunc F() int { return 1 }\n")
        .file(
            "m_test.go",
            "package m\n\nimport \"testing\"\n\nfunc TestF(t *testing.T) {\n\tif F() != 1 {\n\t\tt.Fatal()\n\t}\n}\n",
        )
        .file("BUILD.toml", "[go_test.unit]\npackages = [\"./...\"]\n")
        .build();
    let path = format!("{}:{}", shim.display(), std::env::var("PATH").unwrap());
    let run = Run::from(
        ws.cmd(&["test"])
            .env("PATH", path)
            .env_remove("GOTOOLCHAIN")
            .output()
            .unwrap(),
    );
    assert!(!run.stderr.contains("go1.99.0"), "{}", run.stderr);
    run.assert_ok();
}

#[test]
fn kiln_init_runs_no_go_root_of_the_repository_on_the_host() {
    // `kiln init` runs `go list` on the host; with the repository's kiln.toml naming a
    // `[go] root` of its own, that was the repository's program, unsandboxed.
    let tmp = tempfile::tempdir().unwrap();
    let marker = tmp.path().join("ran");
    let fake = format!("#!/bin/sh\ntouch {}\nexit 1\n", marker.display());
    let ws = workspace()
        .file(
            "kiln.toml",
            "[workspace]\nname = \"m\"\n\n[go]\nroot = \"evil\"\n",
        )
        .file("evil/bin/go", &fake)
        .file("go.mod", "module example.com/m\n\ngo 1.23\n")
        .file("m.go", "package m\n")
        .build();
    std::fs::set_permissions(
        ws.path("evil/bin/go"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    let run = ws.kiln(&["init"]);
    assert!(
        !marker.exists(),
        "kiln init ran the repository's go: {}",
        run.stderr
    );
    assert_eq!(run.status, 2, "{}", run.stderr);
    assert!(run.stderr.contains("is inside it"), "{}", run.stderr);
}

#[test]
fn a_source_that_links_out_of_the_workspace_is_refused() {
    // A checked-in link to a file of the host made that file an input: its bytes went
    // into the key, the sandbox and a remote executor's store, and into binaries through
    // `//go:embed`, which go itself refuses for links ("cannot embed irregular file").
    let host = tempfile::tempdir().unwrap();
    let secret = host.path().join("secret");
    std::fs::write(&secret, "host secret\n").unwrap();
    let ws = crate::support::go_workspace()
        .file(
            "BUILD.toml",
            "[genrule.copy]\nsrcs = [\"link.txt\"]\nouts = [\"copy.txt\"]\ncmd = \"cat $SRCS > $OUT\"\ntools = [\"cat\"]\n\n[go_binary.app]\nmain = \"./cmd/app\"\nplatforms = [\"linux/amd64\"]\n",
        )
        .file(
            "cmd/app/main.go",
            "package main\n\nimport (\n\t_ \"embed\"\n\t\"fmt\"\n)\n\n//go:embed secret.txt\nvar s string\n\nfunc main() { fmt.Print(s) }\n",
        )
        .build();
    symlink(&secret, ws.path("link.txt")).unwrap();
    symlink(&secret, ws.path("cmd/app/secret.txt")).unwrap();
    for (target, link) in [("//:copy", "link.txt"), ("//:app", "cmd/app/secret.txt")] {
        let run = ws.kiln(&["build", target]);
        assert_eq!(run.status, 2, "{target}: {}", run.stderr);
        let said = format!("source file `{link}` is a link to");
        assert!(run.stderr.contains(&said), "{target}: {}", run.stderr);
        assert!(
            run.stderr.contains("outside the workspace"),
            "{}",
            run.stderr
        );
    }
    // A link inside the workspace is a source like any other.
    std::fs::remove_file(ws.path("link.txt")).unwrap();
    ws.write("real.txt", "in the workspace\n");
    symlink("real.txt", ws.path("link.txt")).unwrap();
    ws.kiln(&["build", "//:copy"]).assert_ok();
    assert_eq!(ws.read("kiln-out/copy.txt"), "in the workspace\n");
}

/// A server on a free loopback port that records what each connection sends first and
/// answers `answer`: (its port, what it heard).
fn listen(answer: &'static [u8]) -> (u16, std::sync::Arc<std::sync::Mutex<String>>) {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let heard = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let sink = heard.clone();
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            conn.set_read_timeout(Some(std::time::Duration::from_millis(500)))
                .unwrap();
            let mut buf = [0u8; 8192];
            let n = conn.read(&mut buf).unwrap_or(0);
            sink.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&buf[..n]));
            let _ = conn.write_all(answer);
        }
    });
    (port, heard)
}

#[test]
fn kiln_toml_cannot_send_a_secret_of_the_environment_to_its_remote() {
    // `[remote] token_env` named any variable, and `[remote] cache` any server: kiln sent
    // that variable's value (AWS_SECRET_ACCESS_KEY, a CI's tokens) as the bearer token
    // of every request, reads under --remote-read-only included.
    let (port, heard) = listen(b"");
    let ws = workspace()
        .file(
            "kiln.toml",
            &format!(
                "[workspace]\nname = \"m\"\n\n[remote]\ncache = \"http://127.0.0.1:{port}\"\ntoken_env = \"AWS_SECRET_ACCESS_KEY\"\n"
            ),
        )
        .file("BUILD.toml", "[genrule.g]\nouts = [\"o.txt\"]\ncmd = \"echo x > $OUT\"\n")
        .build();
    let run = Run::from(
        ws.cmd(&["build", "--remote-read-only"])
            .env("AWS_SECRET_ACCESS_KEY", "aws-secret-value")
            .output()
            .unwrap(),
    );
    let heard = heard.lock().unwrap().clone();
    assert!(
        !heard.contains("aws-secret-value"),
        "the remote heard: {heard}"
    );
    assert_eq!(run.status, 2, "{}", run.stderr);
    assert!(
        run.stderr.contains(
            "kiln.toml:6:13: [remote] token_env `AWS_SECRET_ACCESS_KEY` does not start with KILN_"
        ),
        "{}",
        run.stderr
    );
}

#[test]
fn a_tool_named_by_path_must_be_a_program() {
    // A tool named by path could be any file of the host, a private key say: its bytes
    // went into the sandbox and, with a remote executor, into the remote's store.
    let host = tempfile::tempdir().unwrap();
    let key = host.path().join("id_ed25519");
    std::fs::write(&key, "-----BEGIN OPENSSH PRIVATE KEY-----\n").unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let build = |tool: &Path| {
        format!(
            "[genrule.g]\nouts = [\"o.txt\"]\ncmd = \"echo x > $OUT\"\ntools = [{:?}]\n",
            tool.display().to_string()
        )
    };
    let ws = workspace().file("BUILD.toml", &build(&key)).build();
    let run = ws.kiln(&["build"]);
    assert_eq!(run.status, 2, "{}", run.stderr);
    let said = format!(
        "BUILD.toml:4:10: tool `{}` is not an executable file",
        key.display()
    );
    assert!(run.stderr.contains(&said), "{}", run.stderr);
    ws.write("BUILD.toml", &build(Path::new("/bin/cat")));
    ws.kiln(&["build"]).assert_ok();
}

#[test]
fn a_go_mod_linked_to_a_device_is_refused_not_read_without_end() {
    // go.mod (and go.sum, a template) are read by kiln itself while it analyzes; one
    // checked in as a link to /dev/zero was read until memory ran out.
    use std::os::unix::process::CommandExt;
    let ws = crate::support::go_workspace()
        .file("m.go", "package m\n")
        .file("BUILD.toml", "[go_test.unit]\npackages = [\"./...\"]\n")
        .build();
    std::fs::remove_file(ws.path("go.mod")).unwrap();
    symlink("/dev/zero", ws.path("go.mod")).unwrap();
    let mut cmd = ws.cmd(&["test"]);
    // SAFETY: setrlimit in the child before exec: 2 GiB of address space, so that the
    // unbounded read fails here instead of taking the machine's memory.
    unsafe {
        cmd.pre_exec(|| {
            let limit = libc::rlimit {
                rlim_cur: 2 << 30,
                rlim_max: 2 << 30,
            };
            match libc::setrlimit(libc::RLIMIT_AS, &limit) {
                0 => Ok(()),
                _ => Err(std::io::Error::last_os_error()),
            }
        });
    }
    let run = Run::from(cmd.output().unwrap());
    assert_eq!(run.status, 2, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("read go.mod: a link to /dev/zero, outside the workspace"),
        "{}",
        run.stderr
    );
}

#[test]
fn kiln_init_writes_through_no_checked_in_link() {
    // kiln init wrote BUILD.toml through a checked-in link to nothing (creating a file of
    // the host) and appended to .gitignore through a link to a host file.
    let host = tempfile::tempdir().unwrap();
    let rc = victim(host.path(), 0o644);
    let planted = host.path().join("planted");
    for (name, target) in [("BUILD.toml", &planted), (".gitignore", &rc)] {
        let ws = crate::support::go_workspace()
            .file("m.go", "package m\n")
            .build();
        symlink(target, ws.path(name)).unwrap();
        let run = ws.kiln(&["init"]);
        assert_eq!(run.status, 2, "{name}: {}", run.stderr);
        let said = format!("{name} is a link or not a regular file");
        assert!(run.stderr.contains(&said), "{}", run.stderr);
        assert!(!planted.exists(), "{name}");
        assert_eq!(
            std::fs::read_to_string(&rc).unwrap(),
            "host file\n",
            "{name}"
        );
    }
}

#[test]
fn an_action_cannot_reach_the_ssh_agent_of_the_user_outside_tmp() {
    // A read-only mount does not stop a connection: an agent socket kept outside /tmp
    // and /run (a home directory) was reachable by any action, and with it every key
    // the agent holds.
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let socket = dir.path().join("agent.sock");
    let _agent = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    let script = format!(
        "import socket; s = socket.socket(socket.AF_UNIX); s.connect('{}'); print('connected')",
        socket.display()
    );
    let cmd = format!("/usr/bin/python3 -c \"{script}\" > $OUT 2>&1 || echo refused >> $OUT");
    let ws = workspace()
        .file(
            "BUILD.toml",
            &format!("[genrule.g]\nouts = [\"o.txt\"]\ncmd = {cmd:?}\n"),
        )
        .build();
    let run = Run::from(
        ws.cmd(&["build", "--sandbox=bwrap"])
            .env("SSH_AUTH_SOCK", &socket)
            .output()
            .unwrap(),
    );
    run.assert_ok();
    let out = ws.read("kiln-out/o.txt");
    assert!(
        out.contains("refused") && !out.contains("connected"),
        "{out}"
    );
}

#[test]
fn registry_variables_without_a_host_go_to_no_registry_a_pull_names() {
    // KILN_REGISTRY_USER/PASSWORD without KILN_REGISTRY_HOST went to any registry that
    // answered 401, and an oci_pull (fetched by any `kiln build`) names its registry.
    let (port, heard) = listen(
        b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"r\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    );
    let digest = "a".repeat(64);
    let ws = workspace()
        .file(
            "BUILD.toml",
            &format!(
                "[oci_pull.base]\nimage = \"127.0.0.1:{port}/app@sha256:{digest}\"\nplatforms = [\"linux/amd64\"]\n\n\
                 [oci_image.app]\nbase = \":base\"\nplatforms = [\"linux/amd64\"]\nentrypoint = [\"/app\"]\n"
            ),
        )
        .build();
    let run = Run::from(
        ws.cmd(&["build"])
            .env("KILN_REGISTRY_USER", "ci")
            .env("KILN_REGISTRY_PASSWORD", "registry-password")
            .env_remove("KILN_REGISTRY_HOST")
            .env("DOCKER_CONFIG", ws.path("no-docker-config"))
            .output()
            .unwrap(),
    );
    assert_ne!(run.status, 0, "{}", run.stderr);
    let heard = heard.lock().unwrap().clone();
    assert!(
        heard.contains("GET /v2/"),
        "the registry heard nothing: {}",
        run.stderr
    );
    use base64::Engine;
    let secret = base64::engine::general_purpose::STANDARD.encode("ci:registry-password");
    assert!(
        !heard.contains(&secret),
        "the registry got the password: {heard}"
    );
}

/// Whether kiln runs as root here; if not, says that `test` is skipped.
fn as_root(test: &str) -> bool {
    // SAFETY: geteuid(2) cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        eprintln!("{test}: skipped: kiln does not run as root here");
    }
    root
}

#[test]
fn an_action_of_kiln_run_as_root_writes_no_kernel_setting() {
    // Run as root, an action keeps uid 0 without capabilities, and bubblewrap's /proc
    // left /proc/sys writable to it: the files are root's, mode 0644, and the host's
    // kernel settings (swappiness, core_pattern) are not per namespace. Each write below
    // puts back the value just read whole (`cat`: the shell's `read` takes one byte at a
    // time, and /proc/sys answers a read at an offset with nothing), so the host is
    // unchanged even where it succeeds.
    if !as_root("an_action_of_kiln_run_as_root_writes_no_kernel_setting") {
        return;
    }
    let settings = [
        "/proc/sys/vm/swappiness",
        "/proc/sys/kernel/printk_ratelimit",
    ];
    let mut cmd = String::new();
    for file in settings {
        cmd += &format!(
            "v=$(cat {file}) && [ -n \"$v\" ] && if echo \"$v\" > {file}; then echo \"wrote {file}\"; else echo \"refused {file}\"; fi >> $OUT 2>&1; "
        );
    }
    // Where bubblewrap covers them itself: never written, only asked about.
    for file in ["/proc/sysrq-trigger", "/proc/irq/default_smp_affinity"] {
        cmd += &format!("if [ -w {file} ]; then echo \"writable {file}\" >> $OUT; fi; ");
    }
    let ws = workspace()
        .file(
            "BUILD.toml",
            &format!("[genrule.g]\nouts = [\"o.txt\"]\ncmd = {cmd:?}\ntools = [\"cat\"]\n"),
        )
        .build();
    ws.kiln(&["build", "--sandbox=bwrap"]).assert_ok();
    let out = ws.read("kiln-out/o.txt");
    for file in settings {
        assert!(out.contains(&format!("refused {file}")), "{out}");
    }
    assert!(!out.contains("wrote") && !out.contains("writable"), "{out}");
}

#[test]
fn an_action_of_kiln_run_as_root_reads_no_secret_of_etc() {
    // /etc is bound read-only, and an action of kiln run as root is uid 0 in it: it read
    // /etc/shadow and /etc/ssl/private (root's, mode 0640 and 0710), and could carry
    // them to the remote cache in its outputs. An unprivileged user reads neither.
    use std::os::unix::fs::MetadataExt;
    if !as_root("an_action_of_kiln_run_as_root_reads_no_secret_of_etc") {
        return;
    }
    let private = |p: &str| std::fs::metadata(p).is_ok_and(|m| m.mode() & 0o004 == 0);
    assert!(
        private("/etc/shadow"),
        "/etc/shadow is missing or readable by others here"
    );
    let mut cmd = String::from(
        "(while read line; do echo \"shadow: $line\"; done < /etc/shadow) > $OUT 2>&1; \
         while read line; do echo \"passwd: $line\"; done < /etc/passwd >> $OUT; ",
    );
    let key_dir = private("/etc/ssl/private");
    if key_dir {
        cmd += "for f in /etc/ssl/private/*; do echo \"key dir: $f\"; done >> $OUT 2>&1; ";
    }
    let ws = workspace()
        .file(
            "BUILD.toml",
            &format!("[genrule.g]\nouts = [\"o.txt\"]\ncmd = {cmd:?}\n"),
        )
        .build();
    ws.kiln(&["build", "--sandbox=bwrap"]).assert_ok();
    let out = ws.read("kiln-out/o.txt");
    assert!(!out.contains("shadow: root:"), "{out}");
    assert!(out.contains("Permission denied"), "{out}");
    // What others can read is still there.
    assert!(out.contains("passwd: root:"), "{out}");
    if key_dir {
        // The directory cannot be listed: the pattern stays as written.
        assert!(out.contains("key dir: /etc/ssl/private/*"), "{out}");
        for entry in std::fs::read_dir("/etc/ssl/private").unwrap() {
            let name = entry.unwrap().file_name().to_string_lossy().into_owned();
            assert!(!out.contains(&name), "{out}");
        }
    }
}

/// A Go action ID no build ever made: what a planted entry is put under, new in each
/// run (the tests share one Go compile cache, which outlives them).
fn planted_action_id(by: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("kiln e2e: planted by {by}, {nanos} {}", std::process::id())
}

/// Whether the Go compile cache of `ws` (its own store, or the tests' shared one) holds
/// an entry for the Go action ID `action`.
fn in_go_cache(ws: &crate::support::Workspace, action: &str) -> bool {
    use kiln_cache::Store;
    let mut id = b"gocache\0".to_vec();
    id.extend_from_slice(action.as_bytes());
    let key = kiln_cache::Digest::of_bytes(&id);
    [crate::support::shared_go_cache(), ws.cache.clone()]
        .iter()
        .filter_map(|dir| kiln_cache::LocalStore::open(dir).ok())
        .any(|store| store.get_action(&key).unwrap().is_some())
}

#[test]
fn a_go_binary_s_external_linker_puts_nothing_into_go_s_compile_cache() {
    // go_binary's ldflags go to Go's linker, which runs `-extld` (`--linkmode=external`
    // gets past go's own check that cgo is on; `-extar` with `-buildmode=c-archive` too).
    // That program is the repository's and inherits the go command's environment: with
    // the token of the build's Go cache server it could put any compiled package into
    // the store every later build trusts. The linker here (embedded, so an input of the
    // build) puts an entry through $GOCACHEPROG, says what it was answered, and links
    // with the host's C compiler: the binary builds, and the entry stays out of the store.
    use base64::Engine;
    let planted = planted_action_id("an external linker");
    let id = base64::engine::general_purpose::STANDARD.encode(&planted);
    let link = format!(
        "#!/bin/sh\nanswer=$(printf '%s\\n' \
         '{{\"ID\":1,\"Command\":\"put\",\"ActionID\":\"{id}\",\"OutputID\":\"{id}\",\"BodySize\":5}}' \
         '\"cGxhbnQ=\"' '{{\"ID\":2,\"Command\":\"close\"}}' | $GOCACHEPROG 2>&1)\n\
         case \"$answer\" in *'\"ID\":1,\"DiskPath\"'*) ;; *) echo \"put not answered: $answer\" >&2; exit 3;; esac\n\
         PATH=/usr/bin:/bin exec gcc \"$@\"\n"
    );
    let ws = crate::support::go_workspace()
        .file(
            "main.go",
            "package main\n\nimport _ \"embed\"\n\n//go:embed link.sh\nvar linker string\n\nfunc main() { println(len(linker)) }\n",
        )
        .file("link.sh", &link)
        .file(
            "BUILD.toml",
            "[go_binary.app]\nmain = \".\"\nldflags = [\"--linkmode=external\", \"'-extld=/bin/sh ./link.sh'\"]\n",
        )
        .build();
    assert!(!in_go_cache(&ws, &planted));
    let run = ws.kiln(&["build"]);
    run.assert_ok();
    assert!(
        !in_go_cache(&ws, &planted),
        "the external linker's entry reached Go's compile cache"
    );
}

#[test]
fn an_x_defs_name_cannot_add_linker_flags() {
    // x_defs become `-X 'name=value'` in the -ldflags go splits; a quote in the name
    // would end the quoted field and start flags of the repository's choosing.
    let ws = crate::support::go_workspace()
        .file("main.go", "package main\n\nfunc main() {}\n")
        .file(
            "BUILD.toml",
            "[go_binary.app]\nmain = \".\"\nx_defs = { \"main.v=1' '--linkmode=external\" = \"x\" }\n",
        )
        .build();
    let run = ws.kiln(&["build"]);
    assert_eq!(run.status, 2, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("BUILD.toml:3:12: x_defs name `main.v=1' '--linkmode=external` has a quote"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("\"main.version\""), "{}", run.stderr);
}

/// A Go test that sends Go's compile-cache server, through the view its go commands
/// get, a request line without end (256 MiB, at most), then asks once more in a new
/// session; it fails if the server read it all or stopped answering.
const ENDLESS_LINE_TEST: &str = r#"package m

import (
	"bytes"
	"io"
	"os"
	"os/exec"
	"strings"
	"testing"
)

func relay(t *testing.T) (*exec.Cmd, io.WriteCloser, *bytes.Buffer) {
	prog := strings.Fields(os.Getenv("GOCACHEPROG"))
	if len(prog) == 0 {
		t.Fatal("no GOCACHEPROG")
	}
	cmd := exec.Command(prog[0], prog[1:]...)
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out := new(bytes.Buffer)
	cmd.Stdout = out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	return cmd, in, out
}

func TestEndlessLine(t *testing.T) {
	cmd, in, _ := relay(t)
	in.Write([]byte(`{"ID":1,"Command":"get","ActionID":"`))
	chunk := bytes.Repeat([]byte("A"), 64<<10)
	sent := 0
	for sent < 256<<20 {
		n, err := in.Write(chunk)
		sent += n
		if err != nil {
			break
		}
	}
	in.Close()
	cmd.Wait()
	if sent > 16<<20 {
		t.Fatalf("the cache server read %d bytes of one line", sent)
	}

	cmd, in, out := relay(t)
	in.Write([]byte("{\"ID\":1,\"Command\":\"get\",\"ActionID\":\"YQ==\"}\n{\"ID\":2,\"Command\":\"close\"}\n"))
	in.Close()
	cmd.Wait()
	if !strings.Contains(out.String(), `{"ID":1,"Miss":true}`) {
		t.Fatalf("a new session was not served: %q", out.String())
	}
}
"#;

#[test]
fn a_go_test_sending_a_line_without_end_to_go_s_compile_cache_is_cut_off() {
    // A test's go commands reach the build's Go cache server through a view: any
    // process of the test can send it what it likes. A request line without end was
    // read into kiln's memory until the test stopped sending; now the session ends
    // past 64 KiB and the next one is served.
    let ws = crate::support::go_workspace()
        .file("m.go", "package m\n")
        .file("m_test.go", ENDLESS_LINE_TEST)
        .file("BUILD.toml", "[go_test.unit]\npackages = [\"./...\"]\n")
        .build();
    ws.kiln(&["test"]).assert_ok();
}
