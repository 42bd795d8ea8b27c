//! Where a restartable server accepts: an address it binds on each start, or a listening
//! socket it inherited, adopted once and duplicated for every start after.
//!
//! Hazard: an inherited descriptor has exactly one owner. A server actor that adopted it
//! on its first start and then restarts must not adopt the number again (it is closed
//! or, worse, reused by then); the adopted socket lives in a slot shared by every start,
//! and each start gets a duplicate, so the socket (and the connections waiting in its
//! backlog) survives the restart.

use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::sync::{Arc, Mutex};

/// The inherited socket of one server across its restarts (clones share it).
#[derive(Debug, Clone, Default)]
pub struct ListenerSlot {
    inherited: Arc<Mutex<Option<std::net::TcpListener>>>,
}

impl ListenerSlot {
    /// Binds `addr` (a fresh socket each start).
    pub fn bind(&self, addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
        into_tokio(std::net::TcpListener::bind(addr)?)
    }

    /// Accepts on inherited descriptor `fd`: adopted on the first call, a duplicate of
    /// the adopted socket on every call.
    pub fn inherited(&self, fd: RawFd) -> std::io::Result<tokio::net::TcpListener> {
        let mut held = self.inherited.lock().unwrap_or_else(|p| p.into_inner());
        let adopted = match held.take() {
            Some(listener) => listener,
            None => bottle_proc::fd::adopt_listener(fd)?,
        };
        let copy = adopted.try_clone();
        *held = Some(adopted);
        into_tokio(copy?)
    }
}

fn into_tokio(listener: std::net::TcpListener) -> std::io::Result<tokio::net::TcpListener> {
    listener.set_nonblocking(true)?;
    tokio::net::TcpListener::from_std(listener)
}
