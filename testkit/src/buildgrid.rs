//! [`BuildGrid`]: a small build fleet on loopback — PostgreSQL, a BuildGrid server,
//! buildbox-casd as the fleet's CAS, and N workers — for the remote execution tests that
//! need a distributed scheduler.
//!
//! ```text
//!   kiln ──REAPI──▶ BuildGrid (instance `main`) ──SQL──▶ PostgreSQL (scheduler state)
//!                     │  CAS, ByteStream: !remote-storage
//!                     ▼
//!                   buildbox-casd ◀──LocalCAS── buildbox-run ◀── worker × N ──Bots API──▶ BuildGrid
//! ```
//!
//! - PostgreSQL: a cluster made with `initdb` in the fixture's directory, on a free port
//!   with its socket there too; as the `postgres` user (or `nobody`) when the tests run as
//!   root, since PostgreSQL refuses root. BuildGrid's scheduler refuses SQLite.
//! - BuildGrid 0.4.4 (`.ci/install-deps` puts it in a virtualenv and `bgd` on PATH), with
//!   instance `main`, SHA-256, the platform properties `OSFamily` and `ISA` (it refuses
//!   properties it was not configured with), a 6 s bot keepalive so a lost worker's job is
//!   queued again within seconds, and its CAS, ByteStream and ActionCache blobs kept in
//!   buildbox-casd, as buildbox fleets do: the workers stage inputs from casd with hard
//!   links instead of fetching every blob (kiln itself is one, ~80 MB) through Python.
//! - Workers: `fixtures/bgd_worker.py` (no PyPI release ships a BuildGrid worker), each a
//!   bot with [`CAPACITY`] leases at a time, running every action with buildbox-run under
//!   bubblewrap with the host's /usr as the base system, as the [`crate::Casd`] fixture.
//!
//! Bring-up takes a few seconds, most of it Python importing BuildGrid; the fixture
//! starts everything at once and BuildGrid's launcher waits for PostgreSQL.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{free_port, runner_args, which};

/// Leases each worker runs at once (BuildGrid's `capacity` bot config).
pub const CAPACITY: usize = 4;

/// The platform properties every worker advertises and BuildGrid matches on.
pub const PLATFORM: [(&str, &str); 2] = [("ISA", "x86-64"), ("OSFamily", "linux")];

const WORKER_PY: &str = include_str!("../fixtures/bgd_worker.py");
const SERVER_PY: &str = include_str!("../fixtures/bgd_server.py");

/// How long bring-up may take before the fixture gives up with every log.
const BRING_UP: Duration = Duration::from_secs(90);

/// The fleet; every process is stopped on drop, or when the thread that started it ends.
pub struct BuildGrid {
    tmp: tempfile::TempDir,
    port: u16,
    /// In start order; workers are `worker-0`…
    procs: Vec<(String, Option<Child>)>,
}

impl BuildGrid {
    /// Starts PostgreSQL, casd, BuildGrid and `workers` workers, and waits until every
    /// worker holds a bot session. Panics, naming what is missing, if BuildGrid,
    /// PostgreSQL or buildbox are not installed (`.ci/install-deps` installs them).
    pub fn start(workers: usize) -> BuildGrid {
        let python = venv_python();
        let pg_bin = postgres_bin();
        let tmp = tempfile::tempdir().unwrap();
        open_for_others(tmp.path());
        let (pg_port, cas_port, port) = (free_port(), free_port(), free_port());
        let mut grid = BuildGrid {
            tmp,
            port,
            procs: Vec::new(),
        };
        let dir = grid.dir().to_path_buf();
        std::fs::write(dir.join("worker.py"), WORKER_PY).unwrap();
        std::fs::write(dir.join("server.py"), SERVER_PY).unwrap();
        std::fs::write(dir.join("bgd.yml"), config(port, cas_port, pg_port)).unwrap();
        grid.spawn("casd", casd(&dir, cas_port));
        let mut server = guarded(&python, "KILL");
        server
            .arg(dir.join("server.py"))
            .arg(postgres_url(pg_port))
            .arg(dir.join("bgd.yml"));
        grid.spawn("buildgrid", server);
        for i in 0..workers {
            grid.spawn(
                &format!("worker-{i}"),
                worker(&python, &dir, i, port, cas_port),
            );
        }
        // Python imports BuildGrid meanwhile; its launcher waits for PostgreSQL.
        init_postgres(&pg_bin, &dir);
        grid.spawn("postgres", postgres(&pg_bin, &dir, pg_port));
        grid.wait_until_up(workers);
        grid
    }

    /// `grpc://127.0.0.1:PORT` of BuildGrid's REAPI services.
    pub fn url(&self) -> String {
        format!("grpc://127.0.0.1:{}", self.port)
    }

    /// The REAPI instance name.
    pub fn instance(&self) -> &'static str {
        "main"
    }

    /// A kiln.toml `[remote]` section for this fleet: instance and platform properties.
    pub fn kiln_toml(&self) -> String {
        let platform: Vec<String> = PLATFORM
            .iter()
            .map(|(k, v)| format!("{k} = \"{v}\""))
            .collect();
        format!(
            "[workspace]\nname = \"test\"\n\n[remote]\ninstance = \"{}\"\nplatform = {{ {} }}\n",
            self.instance(),
            platform.join(", ")
        )
    }

    /// Waits (up to `timeout`) until some worker runs a lease, then kills that worker
    /// with SIGKILL (its buildbox-run and the action die with it). Returns the worker's
    /// name and the lease's id.
    pub fn kill_a_busy_worker(&mut self, timeout: Duration) -> (String, String) {
        let deadline = Instant::now() + timeout;
        loop {
            let busy = self
                .workers(true)
                .find_map(|(name, log)| running_lease(&log).map(|lease| (name.to_string(), lease)));
            if let Some((name, lease)) = busy {
                self.kill(&name);
                return (name, lease);
            }
            assert!(
                Instant::now() < deadline,
                "no worker ran a lease:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The names of the workers whose log says they ran the lease `id`.
    pub fn ran(&self, id: &str) -> Vec<String> {
        let line = format!("running {id}");
        self.workers(false)
            .filter(|(_, log)| log.lines().any(|l| l.ends_with(&line)))
            .map(|(name, _)| name.to_string())
            .collect()
    }

    /// The tail of every process's log, for a failure message.
    pub fn logs(&self) -> String {
        let mut all = String::new();
        for (name, _) in &self.procs {
            let log = self.log(name);
            let start = log.len().saturating_sub(4000);
            let start = (start..log.len())
                .find(|&i| log.is_char_boundary(i))
                .unwrap_or(0);
            all += &format!("==== {name} ====\n{}\n", &log[start..]);
        }
        all
    }

    /// What one process logged.
    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir().join(format!("{name}.log"))).unwrap_or_default()
    }

    fn dir(&self) -> &Path {
        self.tmp.path()
    }

    /// Each worker's name and log; `alive`: only those not killed.
    fn workers(&self, alive: bool) -> impl Iterator<Item = (&str, String)> {
        self.procs
            .iter()
            .filter(move |(name, child)| name.starts_with("worker-") && (child.is_some() || !alive))
            .map(|(name, _)| (name.as_str(), self.log(name)))
    }

    fn spawn(&mut self, name: &str, mut cmd: Command) {
        let log = std::fs::File::create(self.dir().join(format!("{name}.log"))).unwrap();
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({cmd:?}): {e}"));
        self.procs.push((name.to_string(), Some(child)));
    }

    fn kill(&mut self, name: &str) {
        let found = self.procs.iter_mut().find(|(n, _)| n == name);
        if let Some(mut child) = found.and_then(|(_, c)| c.take()) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn wait_until_up(&mut self, workers: usize) {
        let deadline = Instant::now() + BRING_UP;
        loop {
            let sessions = self
                .workers(true)
                .filter(|(_, log)| log.contains(": session "))
                .count();
            if sessions == workers {
                return;
            }
            if let Some(name) = self.exited() {
                panic!("{name} exited during bring-up:\n{}", self.logs());
            }
            assert!(
                Instant::now() < deadline,
                "BuildGrid was not up after {BRING_UP:?}:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A process that has already exited.
    fn exited(&mut self) -> Option<String> {
        self.procs.iter_mut().find_map(|(name, child)| {
            let child = child.as_mut()?;
            matches!(child.try_wait(), Ok(Some(_))).then(|| name.clone())
        })
    }
}

impl Drop for BuildGrid {
    fn drop(&mut self) {
        // Workers first, so none reports to a server that is gone; PostgreSQL last.
        let names: Vec<String> = self.procs.iter().map(|(n, _)| n.clone()).collect();
        for name in names.iter().filter(|n| n.starts_with("worker-")) {
            self.kill(name);
        }
        self.kill("buildgrid");
        self.kill("casd");
        if let Some((_, Some(pg))) = self.procs.iter_mut().find(|(n, _)| n == "postgres") {
            // SIGQUIT: PostgreSQL's immediate shutdown, which ends its backends too.
            unsafe { libc::kill(pg.id() as i32, libc::SIGQUIT) };
            let _ = pg.wait();
        }
    }
}

/// The lease a worker's log says it runs and has not completed.
fn running_lease(log: &str) -> Option<String> {
    let started = log
        .lines()
        .filter_map(|l| l.split_once(": running ")?.1.into());
    let mut open: Vec<&str> = started.collect();
    for line in log.lines() {
        if let Some((_, rest)) = line.split_once(": completed ") {
            let id = rest.split(' ').next().unwrap_or_default();
            open.retain(|l| *l != id);
        }
    }
    open.first().map(|s| s.to_string())
}

/// The Python of BuildGrid's virtualenv: beside the `bgd` on PATH.
fn venv_python() -> PathBuf {
    let missing = "BuildGrid is required for this test (run .ci/install-deps)";
    let bgd = which("bgd").unwrap_or_else(|| panic!("{missing}: no `bgd` on PATH"));
    let bgd = std::fs::canonicalize(&bgd).unwrap_or(bgd);
    let python = bgd.with_file_name("python");
    assert!(python.exists(), "{missing}: no {}", python.display());
    python
}

/// PostgreSQL's programs: Debian keeps them in /usr/lib/postgresql/VERSION/bin.
fn postgres_bin() -> PathBuf {
    if let Some(initdb) = which("initdb") {
        let initdb = std::fs::canonicalize(&initdb).unwrap_or(initdb);
        return initdb.parent().unwrap().to_path_buf();
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|bin| bin.join("initdb").exists())
        .collect();
    found.sort();
    found.pop().unwrap_or_else(|| {
        panic!("PostgreSQL is required for this test (run .ci/install-deps): no initdb")
    })
}

/// Lets the unprivileged user PostgreSQL runs as into the fixture's directory.
fn open_for_others(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// A command run as the user PostgreSQL runs as: this one, or `postgres` (else
/// `nobody`) when this one is root.
fn as_postgres_user(program: &Path, dir: &Path) -> Command {
    if unsafe { libc::geteuid() } != 0 {
        return guarded(program, "QUIT");
    }
    let (uid, gid) = ["postgres", "nobody"]
        .iter()
        .find_map(|name| user_ids(name))
        .expect("a `postgres` or `nobody` user");
    let pg = dir.join("pg");
    std::fs::create_dir_all(&pg).unwrap();
    std::os::unix::fs::chown(&pg, Some(uid), Some(gid)).unwrap();
    let mut cmd = Command::new("setpriv");
    cmd.arg("--pdeathsig=QUIT")
        .arg(format!("--reuid={uid}"))
        .arg(format!("--regid={gid}"))
        .arg("--clear-groups")
        .arg(program);
    cmd
}

fn user_ids(name: &str) -> Option<(u32, u32)> {
    let name = std::ffi::CString::new(name).unwrap();
    let pw = unsafe { libc::getpwnam(name.as_ptr()) };
    (!pw.is_null()).then(|| unsafe { ((*pw).pw_uid, (*pw).pw_gid) })
}

fn init_postgres(bin: &Path, dir: &Path) {
    let pg = dir.join("pg");
    std::fs::create_dir_all(&pg).unwrap();
    let out = as_postgres_user(&bin.join("initdb"), dir)
        .arg("-D")
        .arg(pg.join("data"))
        .args(["-A", "trust", "-U", "bgd", "-E", "UTF8", "--no-sync"])
        .output()
        .unwrap_or_else(|e| panic!("cannot run initdb: {e}"));
    assert!(
        out.status.success(),
        "initdb failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The server, tuned for a throwaway cluster: nothing is synced to disk.
fn postgres(bin: &Path, dir: &Path, port: u16) -> Command {
    let pg = dir.join("pg");
    let mut cmd = as_postgres_user(&bin.join("postgres"), dir);
    cmd.arg("-D")
        .arg(pg.join("data"))
        .arg("-k")
        .arg(&pg)
        .args(["-p", &port.to_string(), "-c", "listen_addresses=127.0.0.1"])
        .args(["-c", "fsync=off", "-c", "synchronous_commit=off"])
        .args(["-c", "full_page_writes=off", "-c", "max_connections=200"]);
    cmd
}

fn postgres_url(port: u16) -> String {
    format!("postgresql+psycopg2://bgd@127.0.0.1:{port}/postgres")
}

/// `program`, sent `signal` when the thread that started it ends: a test process that
/// is killed (so never drops the fleet) leaves nothing running. PostgreSQL takes QUIT,
/// its immediate shutdown.
fn guarded(program: &Path, signal: &str) -> Command {
    let mut cmd = Command::new("setpriv");
    cmd.arg(format!("--pdeathsig={signal}")).arg(program);
    cmd
}

/// buildbox-casd as a plain CAS server (it runs nothing itself here).
fn casd(dir: &Path, port: u16) -> Command {
    let mut cmd = guarded(Path::new("buildbox-casd"), "KILL");
    cmd.arg(format!("--bind=127.0.0.1:{port}"))
        .arg(dir.join("cas"));
    cmd
}

fn worker(python: &Path, dir: &Path, i: usize, port: u16, cas_port: u16) -> Command {
    let run = which("buildbox-run")
        .unwrap_or_else(|| panic!("buildbox-run is required for this test (run .ci/install-deps)"));
    let mut cmd = guarded(python, "KILL");
    cmd.arg(dir.join("worker.py"))
        .arg(format!("--server=grpc://127.0.0.1:{port}"))
        .arg("--instance=main")
        .arg(format!("--cas=grpc://127.0.0.1:{cas_port}"))
        .arg(format!("--name=worker-{i}"))
        .arg(format!(
            "--workdir={}",
            dir.join(format!("work-{i}")).display()
        ))
        .arg(format!("--capacity={CAPACITY}"))
        .arg(format!("--runner={}", run.display()));
    for (key, value) in PLATFORM {
        cmd.arg(format!("--property={key}={value}"));
    }
    cmd.arg("--").args(runner_args());
    cmd
}

/// BuildGrid's configuration: one instance, `main`, with every REAPI service and the
/// Bots service; blobs in casd; a scheduler that assigns and reports within 0.1 s.
fn config(port: u16, cas_port: u16, pg_port: u16) -> String {
    let url = postgres_url(pg_port);
    let keys: Vec<&str> = PLATFORM.iter().map(|(k, _)| *k).collect();
    format!(
        r#"server:
  - !channel
    address: "127.0.0.1:{port}"
    insecure-mode: true

authorization:
  method: none

connections:
  - !sql-connection &sql
    connection-string: {url}
    pool-size: 20
    max-overflow: 20

storages:
  - !remote-storage &cas
    url: http://127.0.0.1:{cas_port}
    instance-name: ""

caches:
  - !lru-action-cache &ac
    storage: *cas
    max-cached-refs: 100000
    allow-updates: true
    cache-failed-actions: false

schedulers:
  - !sql-scheduler &scheduler
    sql: *sql
    storage: *cas
    action-cache: *ac
    property-set: !dynamic-property-set
      match-property-keys: [{keys}]
      wildcard-property-keys: []
    bot-session-keepalive-timeout: 6
    session-expiry-timer-interval: 0.5
    poll-interval: 0.1
    bot-poll-interval: 0.1
    max-job-attempts: 5
    assigners:
      - !priority-age-assigner
        count: 1
        interval: 0.1
        priority-assignment-percentage: 100

instances:
  - name: main
    services:
      - !action-cache
        cache: *ac
      - !execution
        scheduler: *scheduler
        operation-stream-keepalive-timeout: 5
      - !cas
        storage: *cas
      - !bytestream
        storage: *cas

thread-pool-size: 64
"#,
        keys = keys.join(", ")
    )
}
