//! Go's compile cache served by the build itself, over a Unix socket.
//!
//! ```text
//!  go ──stdin/stdout──▶ kiln gocacheprog (relay, in the sandbox) ──socket──▶ Listener
//!                                                                (the kiln build: one
//!                                                                 thread per session,
//!                                                                 its store, its remote)
//! ```
//!
//! A sandboxed action has no network and cannot write to the store, yet Go's compile
//! cache should reach the remote cache and outlive the sandbox. So the build process,
//! which holds the store (tiered over the remote when one is configured), listens on a
//! socket in a private temporary directory; `GOCACHEPROG` runs `kiln gocacheprog`, which
//! finds the socket in `KILN_STORE_SOCKET` and only copies bytes both ways ([`relay`]).
//! The sandbox sees the socket and, read-only, the blob files handed to Go as
//! `DiskPath`s: it cannot remove or replace either, and entries arrive only through the
//! protocol. One store, opened once, serves every go process of the build.
//!
//! Other sandboxes may see the socket too (a TMPDIR outside `/tmp` is part of the host
//! they see read-only, and connecting needs no write access), so a session starts with
//! the listener's token, a random line given only to the actions with store access
//! ([`TOKEN_ENV`]); a connection that does not send it is closed unanswered.
//!
//! A [`View`] (see the parent module) has a token of its own, made by
//! [`Listener::open_view`] for one action and forgotten when its [`ViewHandle`] drops.
//!
//! Sessions do not flush the store when they close (a remote upload would hold up the
//! go command's exit); the build flushes it once, at its end ([`Listener::flush`]).

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use std::collections::HashMap;

use super::{serve_session, ServeStats, View};
use crate::error::{Error, Result};
use crate::held::{self, HeldDir};
use crate::local::LocalStore;
use crate::store::Store;

/// The environment variable that tells `kiln gocacheprog` where the socket is.
pub const SOCKET_ENV: &str = "KILN_STORE_SOCKET";

/// The environment variable that gives `kiln gocacheprog` the listener's token.
pub const TOKEN_ENV: &str = "KILN_STORE_TOKEN";

/// A GOCACHEPROG server on a Unix socket. Stops listening when dropped.
pub struct Listener {
    dir: tempfile::TempDir,
    /// The store's `tmp/`, where views are made.
    tmp: PathBuf,
    path: PathBuf,
    token: String,
    store: Arc<dyn Store>,
    stop: Arc<AtomicBool>,
    stats: Arc<Mutex<ServeStats>>,
    views: Views,
    fd: std::os::fd::RawFd,
    thread: Option<JoinHandle<()>>,
}

/// The open views, by token.
type Views = Arc<Mutex<HashMap<String, Arc<View>>>>;

/// One action's view of the cache: its token and the directory its blobs are copied
/// into. Dropping it ends the view: new sessions with its token are refused, and the
/// directory is removed.
#[derive(Debug)]
pub struct ViewHandle {
    token: String,
    dir: HeldDir,
    views: Views,
}

impl ViewHandle {
    /// The line the view's sessions start with, for [`TOKEN_ENV`].
    pub fn token(&self) -> &str {
        &self.token
    }

    /// Where the view's files are on this machine (what the sandbox sees, read-only).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for ViewHandle {
    fn drop(&mut self) {
        self.views.lock().unwrap().remove(&self.token);
    }
}

impl Listener {
    /// Listens on a socket in a new private directory under the system's temporary
    /// directory (socket paths are limited to about 100 bytes), which an interrupted
    /// kiln removes too ([`held::remove_all`]). Entries go to `store`; `DiskPath`s are
    /// blob files of `local`. Views left in `local`'s `tmp/` by a kiln that was killed
    /// are removed.
    pub fn start(store: Arc<dyn Store>, local: Arc<LocalStore>) -> Result<Listener> {
        let dir = tempfile::Builder::new()
            .prefix("kiln-gocache-")
            .tempdir()
            .map_err(|e| Error::io("create", &std::env::temp_dir(), e))?;
        let tmp = local.tmp_dir();
        held::remove_abandoned(&tmp);
        let path = dir.path().join("socket");
        let token = new_token().map_err(|e| Error::io("read", Path::new("/dev/urandom"), e))?;
        let listener = UnixListener::bind(&path).map_err(|e| Error::io("listen on", &path, e))?;
        let fd = std::os::fd::AsRawFd::as_raw_fd(&listener);
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(Mutex::new(ServeStats::default()));
        let views = Views::default();
        let thread = {
            let (store, stop, stats) = (store.clone(), stop.clone(), stats.clone());
            let sessions = Sessions {
                token: token.clone(),
                views: views.clone(),
            };
            std::thread::spawn(move || accept(listener, sessions, store, local, stop, stats))
        };
        held::add(dir.path());
        Ok(Listener {
            dir,
            tmp,
            path,
            token,
            store,
            stop,
            stats,
            views,
            fd,
            thread: Some(thread),
        })
    }

    /// A new view of the cache for one action, in a new directory in the store's
    /// `tmp/` (held, so that one a killed kiln left is removed later: see
    /// [`crate::held`]); `seen` is where the action sees that directory (None: where
    /// it is).
    pub fn open_view(&self, seen: Option<&Path>) -> Result<ViewHandle> {
        let dir = HeldDir::create(&self.tmp, "gocache-view-")?;
        let token = new_token().map_err(|e| Error::io("read", Path::new("/dev/urandom"), e))?;
        let seen = seen.unwrap_or(dir.path()).to_path_buf();
        let view = Arc::new(View::new(dir.path().to_path_buf(), seen));
        self.views.lock().unwrap().insert(token.clone(), view);
        Ok(ViewHandle {
            token,
            dir,
            views: self.views.clone(),
        })
    }

    /// The socket, for [`SOCKET_ENV`].
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The line a session must start with, for [`TOKEN_ENV`].
    pub fn token(&self) -> &str {
        &self.token
    }

    /// The private directory holding the socket (what a sandbox must see).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// What every session so far did, added up.
    pub fn stats(&self) -> ServeStats {
        *self.stats.lock().unwrap()
    }

    /// Waits for the store's background work (uploads of new entries).
    pub fn flush(&self) -> Result<()> {
        self.store.flush()
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        held::remove(self.dir.path());
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accepting thread, which then sees `stop`: shutting a listening
        // socket down makes a blocked accept return on Linux, whatever became of the
        // socket's path meanwhile. The thread still owns (and closes) the descriptor.
        // SAFETY: `fd` belongs to the listener the accepting thread holds until it
        // returns, which `join` below waits for.
        unsafe { libc::shutdown(self.fd, libc::SHUT_RDWR) };
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// What a session may start with: the listener's token (the store itself) or a view's.
#[derive(Clone)]
struct Sessions {
    token: String,
    views: Views,
}

impl Sessions {
    /// None: not a token of this listener. Some(None): the store's; Some(view): a view's.
    fn resolve(&self, given: &str) -> Option<Option<Arc<View>>> {
        if given == self.token {
            return Some(None);
        }
        self.views.lock().unwrap().get(given).cloned().map(Some)
    }
}

fn accept(
    listener: UnixListener,
    sessions: Sessions,
    store: Arc<dyn Store>,
    local: Arc<LocalStore>,
    stop: Arc<AtomicBool>,
    stats: Arc<Mutex<ServeStats>>,
) {
    loop {
        let conn = listener.accept();
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let Ok((conn, _)) = conn else {
            // E.g. out of file descriptors: try again soon rather than spin.
            std::thread::sleep(std::time::Duration::from_millis(10));
            continue;
        };
        let (store, local, stats) = (store.clone(), local.clone(), stats.clone());
        let sessions = sessions.clone();
        // A thread that cannot be started (the process's limit) drops the closure, and
        // with it the connection: the go process sees it closed, not silent.
        let _ = std::thread::Builder::new()
            .name("gocacheprog session".into())
            .spawn(move || session(conn, &sessions, &*store, &local, &stats));
    }
}

/// One connection: its token, then the session it opens, if any.
fn session(
    conn: UnixStream,
    sessions: &Sessions,
    store: &dyn Store,
    local: &LocalStore,
    stats: &Mutex<ServeStats>,
) {
    let Ok(reader) = conn.try_clone() else { return };
    let mut reader = BufReader::new(reader);
    // A process without the token (another sandbox's) gets nothing, and holds no thread
    // for long.
    let _ = conn.set_read_timeout(Some(TOKEN_TIMEOUT));
    let given = read_token(&mut reader);
    let _ = conn.set_read_timeout(None);
    if let Some(view) = given.and_then(|given| sessions.resolve(&given)) {
        // A broken session (a line or body beyond its bound too) ends the go command's
        // use of the cache; go reports it.
        if let Ok(done) = serve_session(store, local, view.as_deref(), reader, &conn) {
            stats.lock().unwrap().add(&done);
        }
    }
    let _ = conn.shutdown(std::net::Shutdown::Both);
}

/// How long a session's token may take to arrive (the relay sends it at once).
const TOKEN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// A new token: 128 random bits, in hex.
fn new_token() -> io::Result<String> {
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// The first line of a session (at most a token's length and its newline).
fn read_token(reader: &mut impl BufRead) -> Option<String> {
    let mut line = Vec::new();
    reader.take(64).read_until(b'\n', &mut line).ok()?;
    let line = String::from_utf8(line).ok()?;
    Some(line.strip_suffix('\n')?.to_string())
}

/// Copies stdin to the socket and the socket to stdout until the server closes the
/// session: the whole of `kiln gocacheprog` inside a sandbox. `token`: the listener's.
pub fn relay(socket: &Path, token: &str) -> io::Result<()> {
    let conn = UnixStream::connect(socket)?;
    (&conn).write_all(format!("{token}\n").as_bytes())?;
    let mut to_server = conn.try_clone()?;
    std::thread::spawn(move || {
        let _ = io::copy(&mut io::stdin().lock(), &mut to_server);
        let _ = to_server.shutdown(std::net::Shutdown::Write);
    });
    let mut from_server = &conn;
    let mut stdout = io::stdout().lock();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = from_server.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        // Flushed at once: go waits for each response.
        stdout.write_all(&buf[..n])?;
        stdout.flush()?;
    }
}
