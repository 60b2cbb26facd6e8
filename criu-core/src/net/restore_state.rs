//! What a restore keeps for the sockets of the tree after creating them,
//! and does in three steps:
//!
//! 1. [`RestoredSockets::all_open`], once every description is open: the
//!    dumped `SO_REUSEADDR` and `SO_REUSEPORT` of each bound socket (every
//!    socket was bound with both on, so that a listener and the
//!    connections it accepted, or listeners sharing a port, can all be
//!    bound).
//! 2. [`RestoredSockets::go_live`], once every task of the tree is
//!    restored and just before any runs: each connection rebuilt in repair
//!    mode leaves it (a window probe goes out), sends what the dumped one
//!    had not sent yet (and its FIN), gets its buffer sizes,
//!    `SO_REUSEADDR` and `SO_REUSEPORT` back.
//! 3. [`RestoredSockets::unlock`], once the tree runs: the network lock the
//!    dump left is lifted (iptables rules of each connection; the nftables
//!    table of the dump's run id). The peers' retransmissions get through.
//!
//! If the restore fails before step 2, the sockets are closed in repair
//! mode (the peers see nothing) and the lock stays: the dump can be
//! restored again.

use super::inet::{set_reuse, InetError};
use super::lock::{Conn, LockMethod, NetLock};
use super::sockopt;
use super::tcp_repair::{self, RepairError};
use rustix::fd::OwnedFd;

/// A connection in repair mode, to go live with the tree.
#[derive(Debug)]
pub struct GoLive {
    /// criu-rs's copy of the socket.
    pub fd: OwnedFd,
    /// Its addresses.
    pub conn: Conn,
    /// What going live sends: unsent bytes, a FIN.
    pub finish: tcp_repair::Finish,
    /// `SO_REUSEADDR` and `SO_REUSEPORT` as dumped.
    pub reuse: (bool, bool),
    /// `SO_SNDBUF` and `SO_RCVBUF` as dumped (doubled values, as read).
    pub bufs: (u32, u32),
    /// `SO_BUF_LOCK` as dumped (setting the sizes locks both).
    pub buf_lock: Option<u32>,
}

/// The sockets' part of a restore (see the module documentation).
#[derive(Debug, Default)]
pub struct RestoredSockets {
    lock: Option<NetLock>,
    conns: Vec<Conn>,
    bound: Vec<(OwnedFd, (bool, bool))>,
    live: Vec<GoLive>,
}

/// Buffer size for rebuilding queues (`SO_*BUFFORCE`, which the kernel
/// doubles): as CRIU, as large as the kernel takes; memory is charged only
/// as the queues use it.
pub const BIG_BUF: u32 = i32::MAX as u32 / 2;

impl RestoredSockets {
    /// The lock of the dump being restored (method and run id from its
    /// inventory); the first call decides.
    pub fn set_lock(&mut self, method: LockMethod, run_id: &str) {
        if self.lock.is_none() {
            self.lock = Some(NetLock::new(method, run_id));
        }
    }

    /// A socket bound with `SO_REUSEADDR` and `SO_REUSEPORT` on, which
    /// gets `reuse` (the dumped values) back in [`Self::all_open`]. `fd` is
    /// criu-rs's copy.
    pub fn bound(&mut self, fd: OwnedFd, reuse: (bool, bool)) {
        self.bound.push((fd, reuse));
    }

    /// A connection rebuilt in repair mode, to go live with the tree.
    pub fn repaired(&mut self, g: GoLive) {
        self.conns.push(g.conn);
        self.live.push(g);
    }

    /// A connection restored closed (`--tcp-close`): only unlocked.
    pub fn closed(&mut self, conn: Conn) {
        self.conns.push(conn);
    }

    /// Step 1: the dumped `SO_REUSEADDR` and `SO_REUSEPORT` of every bound
    /// socket.
    pub fn all_open(&mut self) -> Result<(), InetError> {
        for (fd, (addr, port)) in self.bound.drain(..) {
            set_reuse(&fd, addr, port)?;
        }
        Ok(())
    }

    /// Step 2: every connection leaves repair mode, sends its unsent bytes,
    /// gets its buffers and `SO_REUSEADDR` back.
    pub fn go_live(&mut self) -> Result<(), GoLiveError> {
        for g in self.live.drain(..) {
            let at = |source| GoLiveError { local: g.conn.local.to_string(), peer: g.conn.peer.to_string(), source };
            tcp_repair::go_live(&g.fd, &g.finish).map_err(at)?;
            let set = |name: i32, v: u32, what: &'static str| {
                sockopt::set_u32(&g.fd, libc::SOL_SOCKET as u32, name as u32, v).map_err(|errno| RepairError::Call { call: what, errno })
            };
            set(libc::SO_SNDBUFFORCE, g.bufs.0 / 2, "SO_SNDBUFFORCE").map_err(at)?;
            set(libc::SO_RCVBUFFORCE, g.bufs.1 / 2, "SO_RCVBUFFORCE").map_err(at)?;
            if let Some(lock) = g.buf_lock {
                set(super::sockopts::SO_BUF_LOCK, lock, "SO_BUF_LOCK").map_err(at)?;
            }
            set(libc::SO_REUSEADDR, g.reuse.0 as u32, "SO_REUSEADDR").map_err(at)?;
            set(libc::SO_REUSEPORT, g.reuse.1 as u32, "SO_REUSEPORT").map_err(at)?;
            tracing::debug!(local = %g.conn.local, peer = %g.conn.peer, unsent = g.finish.unsent.len(), state = tcp_repair::state::name(g.finish.state), "TCP connection live");
        }
        Ok(())
    }

    /// Step 3: lifts the dump's network lock. Problems are logged (the
    /// tree is already running).
    pub fn unlock(&mut self) {
        let Some(lock) = self.lock.as_mut() else { return };
        for c in self.conns.drain(..) {
            if let Err(e) = lock.unlock(&c) {
                tracing::warn!("unlocking {}→{}: {e}", c.local, c.peer);
            }
        }
        if let Err(e) = lock.unlock_all(true) {
            tracing::warn!("removing the network lock: {e}");
        }
        self.lock = None;
    }

    /// Whether there is anything left to do after the descriptions are
    /// open.
    pub fn is_empty(&self) -> bool {
        self.live.is_empty() && self.conns.is_empty() && self.bound.is_empty() && self.lock.as_ref().is_none_or(|l| l.method() != LockMethod::Nftables)
    }
}

/// Error type for [`RestoredSockets::go_live`].
#[derive(Debug, thiserror::Error)]
#[error("TCP connection {local}→{peer}: {source}")]
pub struct GoLiveError {
    /// Local address.
    pub local: String,
    /// Peer address.
    pub peer: String,
    /// What failed.
    pub source: RepairError,
}
