//! A connection's socket as the request reader sees it: reads wait at most until a
//! deadline when one is set (the whole request head must arrive by then, however the
//! client spaces its bytes), else at most the idle timeout for each read.

use std::io::{self, Read};
use std::net::TcpStream;
use std::time::{Duration, Instant};

pub struct Conn {
    stream: TcpStream,
    deadline: Option<Instant>,
    idle: Duration,
    /// The read timeout the socket has now, so it is set only when it changes.
    timeout: Option<Duration>,
}

impl Conn {
    pub fn new(stream: TcpStream, idle: Duration) -> Conn {
        Conn {
            stream,
            deadline: None,
            idle,
            timeout: None,
        }
    }

    /// Reads must be done by `deadline` (None: each read waits up to the idle timeout).
    pub fn set_deadline(&mut self, deadline: Option<Instant>) {
        self.deadline = deadline;
    }

    /// How long each read may wait when no deadline is set.
    pub fn set_idle(&mut self, idle: Duration) {
        self.idle = idle;
    }

    fn set_timeout(&mut self, timeout: Duration) -> io::Result<()> {
        if self.timeout != Some(timeout) {
            self.stream.set_read_timeout(Some(timeout))?;
            self.timeout = Some(timeout);
        }
        Ok(())
    }
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let timeout = match self.deadline {
            None => self.idle,
            Some(deadline) => match deadline.checked_duration_since(Instant::now()) {
                // Rounded up to whole milliseconds: a zero timeout would mean "none".
                Some(left) if left >= Duration::from_millis(1) => left,
                _ => return Err(io::ErrorKind::TimedOut.into()),
            },
        };
        self.set_timeout(timeout)?;
        self.stream.read(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::net::TcpListener;

    #[test]
    fn a_deadline_bounds_all_reads_together() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        let mut conn = Conn::new(server, Duration::from_secs(30));
        let writer = std::thread::spawn(move || {
            // A byte every 100 ms: each read alone would be quick.
            for _ in 0..20 {
                if client.write_all(b"x").is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        let start = Instant::now();
        conn.set_deadline(Some(start + Duration::from_millis(500)));
        let mut got = 0;
        let err = loop {
            match conn.read(&mut [0u8; 16]) {
                Ok(n) => got += n,
                Err(e) => break e,
            }
        };
        assert!(matches!(
            err.kind(),
            io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
        ));
        assert!(got < 20, "cut off before the client was done ({got} bytes)");
        assert!(start.elapsed() < Duration::from_secs(2));
        drop(conn);
        writer.join().unwrap();
    }
}
