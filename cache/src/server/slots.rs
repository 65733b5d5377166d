//! The server's connection slots: who holds them and what each is doing, so that clients
//! slow to say what they want cannot keep the slots from clients that are not.
//!
//! Every accepted connection needs a slot ([`Slots::admit`]). There are `max` in all, and
//! at most `max_per_client` for one client: an IPv4 address, or an IPv6 /64 (which one
//! machine commonly holds whole). A connection is in one [`Phase`] at a time: reading a
//! request head (from the moment it is accepted), idle between requests, or busy with a
//! body or an answer.
//!
//! When no slot is free (in all, or for that client), the newcomer takes the slot of the
//! connection that has waited longest among those that are idle, or that have been
//! reading a head for more than [`SLOW_HEAD`] (a real client sends its head at once, in
//! one packet): that connection is shut down. A busy connection is never closed to make
//! room; when only busy ones hold the slots, the newcomer is refused. (The server's head
//! deadline cuts a slow head off in any case, room needed or not.)

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr, Shutdown, TcpStream};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a head may take before its connection may be closed to make room.
pub const SLOW_HEAD: Duration = Duration::from_secs(2);

/// What a connection is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Reading a request head, since then (a new connection: since it was accepted).
    Head(Instant),
    /// Kept alive between requests, since then.
    Idle(Instant),
    /// Reading a body or sending an answer.
    Busy,
}

impl Phase {
    /// Since when this connection may be closed to make room, if it may.
    fn waiting_since(self, now: Instant) -> Option<Instant> {
        match self {
            Phase::Idle(since) => Some(since),
            Phase::Head(since) if now.saturating_duration_since(since) >= SLOW_HEAD => Some(since),
            Phase::Head(_) | Phase::Busy => None,
        }
    }
}

/// The slots; see the module comment.
pub struct Slots {
    max: usize,
    max_per_client: usize,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    next_id: u64,
    held: HashMap<u64, Slot>,
}

struct Slot {
    client: IpAddr,
    /// A handle on the connection's socket, to shut it down from another thread.
    socket: TcpStream,
    phase: Phase,
}

impl Slots {
    pub fn new(max: usize, max_per_client: usize) -> Slots {
        Slots {
            max,
            max_per_client,
            inner: Mutex::new(Inner::default()),
        }
    }

    /// A slot for a connection from `peer` (`socket` being a handle on it), in the
    /// [`Phase::Head`] phase since `now`; None if every slot it could have is busy.
    pub fn admit(&self, socket: TcpStream, peer: IpAddr, now: Instant) -> Option<u64> {
        let client = client_of(peer);
        let mut inner = self.inner.lock().unwrap();
        let of_client = inner.held.values().filter(|s| s.client == client).count();
        if of_client >= self.max_per_client && !inner.make_room(now, |s| s.client == client) {
            return None;
        }
        if inner.held.len() >= self.max && !inner.make_room(now, |_| true) {
            return None;
        }
        let id = inner.next_id;
        inner.next_id += 1;
        let phase = Phase::Head(now);
        inner.held.insert(
            id,
            Slot {
                client,
                socket,
                phase,
            },
        );
        Some(id)
    }

    pub fn set_phase(&self, id: u64, phase: Phase) {
        if let Some(slot) = self.inner.lock().unwrap().held.get_mut(&id) {
            slot.phase = phase;
        }
    }

    /// Frees a connection's slot (if it was not taken from it already).
    pub fn release(&self, id: u64) {
        self.inner.lock().unwrap().held.remove(&id);
    }

    /// Connections holding a slot.
    pub fn held(&self) -> usize {
        self.inner.lock().unwrap().held.len()
    }

    /// Shuts every connection down, as a dying process would.
    pub fn close_all(&self) {
        for slot in self.inner.lock().unwrap().held.values() {
            let _ = slot.socket.shutdown(Shutdown::Both);
        }
    }
}

impl Inner {
    /// Closes the connection that has waited longest among those `eligible` that may be
    /// closed, and frees its slot. False if there is none.
    fn make_room(&mut self, now: Instant, eligible: impl Fn(&Slot) -> bool) -> bool {
        let oldest = self
            .held
            .iter()
            .filter(|(_, slot)| eligible(slot))
            .filter_map(|(id, slot)| Some((slot.phase.waiting_since(now)?, *id)))
            .min();
        let Some((_, id)) = oldest else {
            return false;
        };
        let slot = self.held.remove(&id).expect("the slot was just found");
        let _ = slot.socket.shutdown(Shutdown::Both);
        true
    }
}

/// Who counts as one client: an IPv4 address, an IPv6 /64 (an IPv4-mapped IPv6 address
/// is its IPv4 address).
fn client_of(peer: IpAddr) -> IpAddr {
    match peer {
        IpAddr::V4(_) => peer,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(v6.to_bits() & !u128::from(u64::MAX))),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::net::TcpListener;

    /// Connected pairs: (the server's end, the client's end).
    fn pairs(n: usize) -> Vec<(TcpStream, TcpStream)> {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        (0..n)
            .map(|_| {
                let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
                (listener.accept().unwrap().0, client)
            })
            .collect()
    }

    fn closed(client: &mut TcpStream) -> bool {
        client
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        matches!(client.read(&mut [0u8; 1]), Ok(0))
    }

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 2));

    #[test]
    fn busy_connections_keep_their_slots() {
        let slots = Slots::new(2, 2);
        let mut conns = pairs(3);
        let t0 = Instant::now();
        let a = slots.admit(conns[0].0.try_clone().unwrap(), A, t0).unwrap();
        let b = slots.admit(conns[1].0.try_clone().unwrap(), B, t0).unwrap();
        slots.set_phase(a, Phase::Busy);
        slots.set_phase(b, Phase::Busy);
        let later = t0 + Duration::from_secs(60);
        assert!(slots
            .admit(conns[2].0.try_clone().unwrap(), B, later)
            .is_none());
        assert!(!closed(&mut conns[0].1) && !closed(&mut conns[1].1));
    }

    #[test]
    fn the_longest_waiting_idle_or_slow_head_makes_room() {
        let slots = Slots::new(3, 3);
        let mut conns = pairs(5);
        let t0 = Instant::now();
        let ids: Vec<u64> = (0..3)
            .map(|i| slots.admit(conns[i].0.try_clone().unwrap(), A, t0).unwrap())
            .collect();
        slots.set_phase(ids[0], Phase::Busy);
        slots.set_phase(ids[1], Phase::Idle(t0 + Duration::from_secs(1)));
        // ids[2] is still reading its head, since t0.
        // Within SLOW_HEAD, the head is not yet slow: the idle connection goes.
        let soon = t0 + Duration::from_millis(1500);
        assert!(slots
            .admit(conns[3].0.try_clone().unwrap(), B, soon)
            .is_some());
        assert!(closed(&mut conns[1].1));
        assert!(!closed(&mut conns[2].1));
        // Later the head is slow, and older than the newcomer's: it goes.
        let later = t0 + Duration::from_secs(10);
        assert!(slots
            .admit(conns[4].0.try_clone().unwrap(), B, later)
            .is_some());
        assert!(closed(&mut conns[2].1));
        assert!(!closed(&mut conns[0].1), "busy: kept");
        assert_eq!(slots.held(), 3);
    }

    #[test]
    fn a_client_at_its_cap_makes_room_among_its_own() {
        let slots = Slots::new(10, 2);
        let mut conns = pairs(4);
        let t0 = Instant::now();
        let b = slots.admit(conns[0].0.try_clone().unwrap(), B, t0).unwrap();
        slots.set_phase(b, Phase::Idle(t0)); // another client's: never taken for A
        let a1 = slots.admit(conns[1].0.try_clone().unwrap(), A, t0).unwrap();
        let a2 = slots.admit(conns[2].0.try_clone().unwrap(), A, t0).unwrap();
        slots.set_phase(a1, Phase::Busy);
        slots.set_phase(a2, Phase::Busy);
        let later = t0 + Duration::from_secs(10);
        assert!(slots
            .admit(conns[3].0.try_clone().unwrap(), A, later)
            .is_none());
        slots.set_phase(a2, Phase::Idle(later));
        assert!(slots
            .admit(conns[3].0.try_clone().unwrap(), A, later)
            .is_some());
        assert!(closed(&mut conns[2].1));
        assert!(!closed(&mut conns[0].1));
    }

    #[test]
    fn ipv6_clients_are_their_64_prefix() {
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(client_of(a), client_of(b));
        assert_ne!(client_of(a), client_of(c));
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert_eq!(client_of(mapped), A);
    }
}
