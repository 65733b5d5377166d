//! A TCP proxy on loopback that drops the first connections it accepts (closes them
//! after reading the start of a request, as a load balancer restarting would) and
//! forwards the rest to a target port: a flaky network between a client and a server.
//! It keeps what clients sent (plain http only), so a test can see which headers
//! reached it.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

pub struct DroppingProxy {
    port: u16,
    accepted: Arc<AtomicUsize>,
    seen: Arc<Mutex<Vec<u8>>>,
}

/// What the proxy does to the first connections.
#[derive(Debug, Clone, Copy)]
pub enum Fault {
    /// Closes them after reading the start of a request.
    Drop,
    /// Answers `503 Service Unavailable` and closes them.
    Unavailable,
}

impl DroppingProxy {
    /// Forwards to `127.0.0.1:target`, dropping the first `drop_first` connections.
    pub fn start(target: u16, drop_first: usize) -> DroppingProxy {
        DroppingProxy::start_with(target, drop_first, Fault::Drop)
    }

    /// Forwards to `127.0.0.1:target` after doing `fault` to the first `n` connections.
    pub fn start_with(target: u16, drop_first: usize, fault: Fault) -> DroppingProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let kept = seen.clone();
        std::thread::spawn(move || {
            for mut conn in listener.incoming().flatten() {
                let n = count.fetch_add(1, Ordering::SeqCst);
                if n < drop_first {
                    let mut buf = [0; 64];
                    let _ = conn.read(&mut buf);
                    if let Fault::Unavailable = fault {
                        let _ = conn.write_all(
                            b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                        );
                    }
                    let _ = conn.shutdown(Shutdown::Both);
                    continue;
                }
                let kept = kept.clone();
                std::thread::spawn(move || forward(conn, target, &kept));
            }
        });
        DroppingProxy {
            port,
            accepted,
            seen,
        }
    }

    /// Everything clients sent through the proxy so far (bodies included).
    pub fn seen(&self) -> String {
        String::from_utf8_lossy(&self.seen.lock().unwrap()).into_owned()
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Connections accepted so far (dropped ones included).
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

fn forward(client: TcpStream, target: u16, seen: &Arc<Mutex<Vec<u8>>>) {
    let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else {
        return;
    };
    let (mut c2, mut s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
    let kept = seen.clone();
    let up = std::thread::spawn(move || {
        pipe(&mut c2, &mut s2, Some(&kept));
    });
    let (mut s, mut c) = (server, client);
    pipe(&mut s, &mut c, None);
    let _ = up.join();
}

fn pipe(from: &mut TcpStream, to: &mut TcpStream, keep: Option<&Mutex<Vec<u8>>>) {
    let mut buf = [0; 64 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if let Some(kept) = keep {
                    kept.lock().unwrap().extend_from_slice(&buf[..n]);
                }
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}
