//! Slow clients, as an attacker would open them against a server: connections that send
//! a request head one byte a second and never finish it ("slowloris"), from any loopback
//! address (the whole of 127.0.0.0/8 reaches a server on 127.0.0.1), so a test can play
//! one attacker or many.

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::os::fd::FromRawFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// What each slow connection sends, a byte a second (it never reaches the blank line).
const HEAD: &[u8] = b"GET /cas/0000000000000000000000000000000000000000000000000000000000000000 \
HTTP/1.1\r\nHost: cache\r\nX-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

/// Slow connections, trickled by one thread until dropped.
pub struct SlowClients {
    stop: Arc<AtomicBool>,
    open: Arc<AtomicUsize>,
    thread: Option<JoinHandle<()>>,
}

impl SlowClients {
    /// Opens `per_address` connections to `server` from each of `from`, then sends one
    /// byte a second on each. Connections the server refuses or closes are dropped.
    pub fn open(server: SocketAddr, from: &[Ipv4Addr], per_address: usize) -> SlowClients {
        let mut conns = Vec::new();
        for local in from {
            for _ in 0..per_address {
                if let Ok(conn) = connect_from(*local, server) {
                    let _ = conn.set_nonblocking(true);
                    conns.push(conn);
                }
            }
        }
        let stop = Arc::new(AtomicBool::new(false));
        let open = Arc::new(AtomicUsize::new(conns.len()));
        let (stop2, open2) = (stop.clone(), open.clone());
        let thread = std::thread::spawn(move || trickle(conns, &stop2, &open2));
        SlowClients {
            stop,
            open,
            thread: Some(thread),
        }
    }

    /// How many connections the server has not closed yet (as of the last second).
    pub fn open_count(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }
}

impl Drop for SlowClients {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Sends the next byte of [`HEAD`] on every connection each second; drops a connection
/// once the server closed it (a read sees its end, or a write fails).
fn trickle(mut conns: Vec<TcpStream>, stop: &AtomicBool, open: &AtomicUsize) {
    let mut sent = 0;
    while !stop.load(Ordering::SeqCst) {
        let byte = [HEAD[sent % HEAD.len()]];
        conns.retain_mut(|conn| alive(conn) && conn.write(&byte).is_ok_and(|n| n == 1));
        open.store(conns.len(), Ordering::SeqCst);
        sent += 1;
        for _ in 0..10 {
            if stop.load(Ordering::SeqCst) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Whether the server has not closed a (non-blocking) connection: nothing to read yet.
/// Anything it sent (a 503, a 400) means it is done with it.
fn alive(conn: &mut TcpStream) -> bool {
    let mut buf = [0u8; 512];
    matches!(conn.read(&mut buf), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
}

/// A TCP connection to `to` from the local address `local` (any port).
pub fn connect_from(local: Ipv4Addr, to: SocketAddr) -> io::Result<TcpStream> {
    let SocketAddr::V4(to) = to else {
        return Err(io::Error::other("connect_from speaks IPv4 only"));
    };
    // SAFETY: a fresh socket, owned by the TcpStream at once (closed on drop); the
    // addresses passed are plain sockaddr_in values that live across each call.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let stream = TcpStream::from_raw_fd(fd);
        let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        let from = sockaddr(SocketAddrV4::new(local, 0));
        if libc::bind(fd, (&raw const from).cast(), len) != 0 {
            return Err(io::Error::last_os_error());
        }
        let to = sockaddr(to);
        if libc::connect(fd, (&raw const to).cast(), len) != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(stream)
    }
}

fn sockaddr(addr: SocketAddrV4) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: addr.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*addr.ip()).to_be(),
        },
        sin_zero: [0; 8],
    }
}
