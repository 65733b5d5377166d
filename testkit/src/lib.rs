//! kiln-testkit: real servers for kiln's tests, started on loopback with free ports and
//! stopped when dropped. Used by kiln-cache's and the kiln binary's tests alike. Also
//! [`SlowClients`], an attacker's slow connections against such a server.
//!
//! For registries: [`Registry`] (Debian's docker-registry, open, htpasswd or token
//! auth, plain or TLS), [`TokenIssuer`] (signs the tokens it checks), [`Pki`] (a CA made
//! with openssl) and [`DroppingProxy`] (drops the first connections).
//!
//! For remote execution: [`Casd`] (buildbox-casd, one machine's REAPI engine) and
//! [`BuildGrid`] (a scheduler with PostgreSQL, a CAS and several workers), and
//! [`GrpcTlsProxy`] (nginx putting TLS and a bearer token check in front of one).

mod buildgrid;
mod grpc_proxy;
mod pki;
mod proxy;
mod registry;
mod slow;
pub mod token;

pub use buildgrid::BuildGrid;
pub use grpc_proxy::GrpcTlsProxy;
pub use pki::Pki;
pub use proxy::{DroppingProxy, Fault};
pub use registry::{Registry, RegistryAuth};
pub use slow::{connect_from, SlowClients};
pub use token::TokenIssuer;

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// nginx with WebDAV PUT (the remote cache shape kiln speaks), configured and started in
/// a temporary directory; stopped on drop.
pub struct Nginx {
    tmp: tempfile::TempDir,
    child: Option<Child>,
    port: u16,
}

impl Nginx {
    /// Starts nginx; panics if it is not installed (`.ci/install-deps` installs it).
    pub fn start() -> Nginx {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(tmp.path().join("root")).unwrap();
        let port = free_port();
        let conf = tmp.path().join("nginx.conf");
        std::fs::write(&conf, nginx_conf(tmp.path(), port)).unwrap();
        let child = spawn_nginx(tmp.path(), &conf, "stderr");
        let nginx = Nginx {
            tmp,
            child: Some(child),
            port,
        };
        wait_for_port(port);
        nginx
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The directory nginx serves and stores uploads in.
    pub fn root(&self) -> PathBuf {
        self.tmp.path().join("root")
    }

    /// nginx's access log: one line per request.
    pub fn access_log(&self) -> PathBuf {
        self.tmp.path().join("access.log")
    }

    /// Stops nginx as an outage would: SIGTERM to the master, which ends its workers.
    pub fn stop(&mut self) {
        stop_nginx(&mut self.child);
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        self.stop();
    }
}

fn nginx_conf(tmp: &Path, port: u16) -> String {
    use std::os::unix::fs::MetadataExt;
    let t = tmp.display();
    // The owner of /proc/self is this process's effective user.
    let root = std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0);
    let user = if root { "user root root;" } else { "" };
    format!(
        "{user}
worker_processes 1;
events {{ worker_connections 256; }}
http {{
  access_log {t}/access.log;
  client_body_temp_path {t}/client_body;
  proxy_temp_path {t}/proxy;
  fastcgi_temp_path {t}/fastcgi;
  uwsgi_temp_path {t}/uwsgi;
  scgi_temp_path {t}/scgi;
  server {{
    listen 127.0.0.1:{port};
    root {t}/root;
    location / {{
      dav_methods PUT;
      create_full_put_path on;
      dav_access user:rw group:r all:r;
      client_max_body_size 0;
      log_not_found off;
    }}
  }}
}}
"
    )
}

/// buildbox-casd: a real Remote Execution API engine (CAS, ActionCache, ByteStream,
/// Capabilities, Execution running each action with buildbox-run under bubblewrap),
/// started on a free loopback port with its storage in a temporary directory; stopped on
/// drop. `.ci/install-deps` puts `buildbox-casd` and `buildbox-run` on PATH.
pub struct Casd {
    tmp: tempfile::TempDir,
    child: Option<Child>,
    port: u16,
}

impl Casd {
    /// Starts casd; panics if it is not installed.
    pub fn start() -> Casd {
        let tmp = tempfile::tempdir().unwrap();
        let port = free_port();
        let run = which("buildbox-run").unwrap_or_else(|| {
            panic!("buildbox-run is required for this test (run .ci/install-deps)")
        });
        let mut args = vec![
            format!("--bind=127.0.0.1:{port}"),
            format!("--buildbox-run={}", run.display()),
            "--jobs=2".into(),
            "--cache-failures=false".into(),
        ];
        args.extend(runner_args().iter().map(|a| format!("--runner-arg={a}")));
        let log = std::fs::File::create(tmp.path().join("casd.log")).unwrap();
        let child = Command::new("buildbox-casd")
            .args(&args)
            .arg(tmp.path().join("cache"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("buildbox-casd is required for this test (run .ci/install-deps): {e}")
            });
        let casd = Casd {
            tmp,
            child: Some(child),
            port,
        };
        wait_for_port(port);
        casd
    }

    pub fn url(&self) -> String {
        format!("grpc://127.0.0.1:{}", self.port)
    }

    /// casd's storage directory (its CAS and action cache).
    pub fn storage(&self) -> PathBuf {
        self.tmp.path().join("cache")
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// What casd logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.tmp.path().join("casd.log")).unwrap_or_default()
    }

    /// Stops casd as an outage would.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Casd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// buildbox-run's arguments for a worker whose base system is the host's /usr, read-only.
/// Debian's /bin and /lib are links into /usr: bound as the directories they name.
fn runner_args() -> Vec<String> {
    let mut args = vec!["--ro-bind-mount=/usr:/usr".to_string()];
    for dir in ["bin", "lib", "lib64"] {
        let host = Path::new("/").join(dir);
        let target = std::fs::canonicalize(&host).unwrap_or(host.clone());
        if host.exists() {
            args.push(format!(
                "--ro-bind-mount={}:{}",
                target.display(),
                host.display()
            ));
        }
    }
    args
}

/// A program on PATH.
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// Stops an nginx started by [`spawn_nginx`]: SIGTERM to the master, which ends its
/// workers (a SIGKILL would leave them serving).
pub(crate) fn stop_nginx(child: &mut Option<Child>) {
    if let Some(mut child) = child.take() {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let _ = child.wait();
    }
}

/// Starts nginx in the foreground with its prefix, pid file and config in `dir`;
/// `error_log` is where its errors go (`stderr` or a path).
pub(crate) fn spawn_nginx(dir: &Path, conf: &Path, error_log: &str) -> Child {
    let globals = format!(
        "daemon off; pid {}/nginx.pid; error_log {error_log};",
        dir.display()
    );
    Command::new("nginx")
        .arg("-p")
        .arg(format!("{}/", dir.display()))
        .arg("-c")
        .arg(conf)
        .args(["-g", &globals])
        .stdin(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("nginx is required for this test (run .ci/install-deps): {e}"))
}

/// Waits (up to 10 s) until something accepts connections on the port.
pub fn wait_for_port(port: u16) {
    wait_for(std::net::Ipv4Addr::LOCALHOST.into(), port);
}

/// Waits (up to 10 s) until something accepts connections on `ip`'s port.
pub fn wait_for(ip: std::net::IpAddr, port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect((ip, port)).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on port {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A server that accepts connections and never answers (a hung remote).
pub fn silent_server() -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in listener.incoming().flatten() {
            held.push(conn);
        }
    });
    addr
}

/// An IPv4 address of one of this machine's interfaces that is up and not loopback (a
/// server bound there is reached without leaving the machine, under a name that is not
/// loopback), or None if the machine has none.
pub fn own_address() -> Option<std::net::Ipv4Addr> {
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `list` with a linked list that freeifaddrs releases;
    // each entry's address is read only when it is an AF_INET sockaddr_in.
    unsafe {
        if libc::getifaddrs(&mut list) != 0 {
            return None;
        }
        let mut found = None;
        let mut entry = list;
        while !entry.is_null() && found.is_none() {
            let e = &*entry;
            let up = e.ifa_flags & libc::IFF_UP as u32 != 0;
            let addr = e.ifa_addr;
            if up && !addr.is_null() && i32::from((*addr).sa_family) == libc::AF_INET {
                let sin = &*(addr as *const libc::sockaddr_in);
                let ip = std::net::Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
                found = Some(ip).filter(|ip| !ip.is_loopback());
            }
            entry = e.ifa_next;
        }
        libc::freeifaddrs(list);
        found
    }
}
