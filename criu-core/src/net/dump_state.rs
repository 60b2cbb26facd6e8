//! What a dump holds for the sockets of the whole tree while it runs: the
//! sock_diag tables of each network namespace (read once, after the
//! freeze), the TCP connections it put in repair mode and the network lock.
//!
//! A connection is locked, then put in repair mode ([`DumpSockets::repair`]),
//! and stays so until the dump ends:
//! - the dump succeeded and the tree was killed ([`DumpSockets::keep`]):
//!   the sockets die in repair mode (no FIN, no RST) and the lock stays
//!   for the restore to lift;
//! - the dump failed, or `--leave-running` ([`DumpSockets::release`], also
//!   on drop): repair mode off (the kernel clears `SO_REUSEADDR` on the way:
//!   it is set back), locks lifted. Nothing was consumed: the sockets carry
//!   on as before.

use super::diag::{DiagError, DiagSocket};
use super::inet_diag::{self, InetSockInfo};
use super::lock::{Conn, LockError, LockMethod, NetLock};
use super::packet::{self, PacketSocket};
use super::tcp_repair::{self, RepairError};
use rustix::fd::OwnedFd;
use std::collections::HashMap;

/// What the dump was asked to do with sockets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SocketDumpOptions {
    /// `--tcp-established`: dump established connections (repair mode).
    pub tcp_established: bool,
    /// `--skip-in-flight`: leave out connections not accepted yet (and
    /// datagrams waiting) instead of refusing.
    pub skip_in_flight: bool,
    /// `--tcp-close`: dump connections as closed ones (no repair; the peer
    /// sees them close when the tree is killed).
    pub tcp_close: bool,
    /// `--network-lock`.
    pub lock: LockMethod,
}

/// A connection put in repair mode by this dump.
#[derive(Debug)]
struct Repaired {
    /// criu-rs's copy of the socket.
    fd: OwnedFd,
    conn: Conn,
    /// `SO_REUSEADDR` before repair mode (leaving it clears the option).
    reuseaddr: bool,
}

/// sock_diag tables of one network namespace.
#[derive(Debug)]
struct NsTables {
    diag: DiagSocket,
    inet: HashMap<(i32, i32), HashMap<u32, InetSockInfo>>,
    packet: Option<HashMap<u32, PacketSocket>>,
}

/// Error type for [`DumpSockets::repair`].
#[derive(Debug, thiserror::Error)]
pub enum RepairSocketError {
    /// Locking the connection failed.
    #[error("locking the connection {}→{}: {source}", .conn.local, .conn.peer)]
    Lock {
        /// The connection.
        conn: Conn,
        /// Why.
        source: LockError,
    },
    /// Repair mode could not be turned on.
    #[error(transparent)]
    Repair(#[from] RepairError),
}

/// The sockets' part of one dump (see the module documentation).
#[derive(Debug)]
pub struct DumpSockets {
    /// What the dump was asked for.
    pub opts: SocketDumpOptions,
    run_id: String,
    lock: NetLock,
    tables: HashMap<u64, NsTables>,
    repaired: Vec<Repaired>,
}

impl DumpSockets {
    /// The sockets' part of a dump with run id `run_id` (the inventory's
    /// `dump_criu_run_id`, which names the nftables table).
    pub fn new(opts: SocketDumpOptions, run_id: String) -> DumpSockets {
        let lock = NetLock::new(opts.lock, &run_id);
        DumpSockets { opts, run_id, lock, tables: HashMap::new(), repaired: Vec::new() }
    }

    /// The run id.
    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    fn tables(&mut self, pid: i32) -> Result<&mut NsTables, DiagError> {
        let ns = super::netns::netns_ino(pid).map_err(|errno| DiagError::Netns { pid, errno })?;
        if !self.tables.contains_key(&ns) {
            let diag = DiagSocket::open_for(pid)?;
            self.tables.insert(ns, NsTables { diag, inet: HashMap::new(), packet: None });
        }
        Ok(self.tables.get_mut(&ns).expect("inserted above"))
    }

    /// What sock_diag says of internet socket `ino` of task `pid` (`None`:
    /// not listed, e.g. neither bound nor connected).
    pub fn inet_info(&mut self, pid: i32, family: i32, proto: i32, ino: u32) -> Result<Option<InetSockInfo>, DiagError> {
        let t = self.tables(pid)?;
        if !t.inet.contains_key(&(family, proto)) {
            let all = inet_diag::sockets(&mut t.diag, family, proto)?;
            t.inet.insert((family, proto), all);
        }
        Ok(t.inet[&(family, proto)].get(&ino).copied())
    }

    /// What sock_diag says of packet socket `ino` of task `pid`.
    pub fn packet_info(&mut self, pid: i32, ino: u32) -> Result<Option<PacketSocket>, DiagError> {
        let t = self.tables(pid)?;
        if t.packet.is_none() {
            t.packet = Some(packet::sockets(&mut t.diag)?);
        }
        Ok(t.packet.as_ref().and_then(|p| p.get(&ino)).cloned())
    }

    /// Locks connection `conn` and puts socket `fd` (criu-rs's copy) in
    /// repair mode, until the dump ends. `reuseaddr` is its
    /// `SO_REUSEADDR`, set back when repair mode is left.
    pub fn repair(&mut self, fd: OwnedFd, conn: Conn, reuseaddr: bool) -> Result<&OwnedFd, RepairSocketError> {
        self.lock.lock(&conn).map_err(|source| RepairSocketError::Lock { conn, source })?;
        if let Err(e) = tcp_repair::repair_on(&fd) {
            if let Err(u) = self.lock.unlock(&conn) {
                tracing::warn!("unlocking {}→{}: {u}", conn.local, conn.peer);
            }
            return Err(e.into());
        }
        tracing::debug!(local = %conn.local, peer = %conn.peer, "TCP connection locked, in repair mode");
        self.repaired.push(Repaired { fd, conn, reuseaddr });
        Ok(&self.repaired.last().expect("pushed").fd)
    }

    /// The connections in repair mode.
    pub fn repaired(&self) -> usize {
        self.repaired.len()
    }

    /// The dump succeeded and the tree is dead: the sockets close in
    /// repair mode, the connections stay locked for the restore.
    pub fn keep(mut self) {
        self.repaired.clear();
        self.lock = NetLock::new(LockMethod::Skip, &self.run_id);
    }

    /// Turns repair mode off on every connection and lifts the locks
    /// (failed dump, `--leave-running`). Problems are logged: the sockets
    /// are put back as far as possible.
    pub fn release(mut self) {
        self.undo();
    }

    /// [`Self::release`] in place, before the tree runs on while the dump
    /// goes on (a live memory copy); dropping or releasing later is a no-op.
    pub fn release_now(&mut self) {
        self.undo();
    }

    fn undo(&mut self) {
        for r in self.repaired.drain(..) {
            if let Err(e) = tcp_repair::repair_off(&r.fd) {
                tracing::error!("turning repair mode off on {}→{}: {e}", r.conn.local, r.conn.peer);
            }
            if let Err(e) = super::inet::set_reuseaddr(&r.fd, r.reuseaddr) {
                tracing::error!("SO_REUSEADDR back on {}→{}: {e}", r.conn.local, r.conn.peer);
            }
            if let Err(e) = self.lock.unlock(&r.conn) {
                tracing::error!("unlocking {}→{}: {e}", r.conn.local, r.conn.peer);
            }
        }
        if let Err(e) = self.lock.unlock_all(false) {
            tracing::error!("removing the network lock: {e}");
        }
    }
}

impl Drop for DumpSockets {
    fn drop(&mut self) {
        self.undo();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};

    fn conn(a: &TcpStream) -> Conn {
        Conn { local: a.local_addr().unwrap(), peer: a.peer_addr().unwrap() }
    }

    /// Released, a repaired connection works again, reuseaddr as before.
    #[test]
    fn release_puts_connections_back() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut a = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (mut b, _) = l.accept().unwrap();
        super::super::inet::set_reuseaddr(&a, true).unwrap();
        let mut d = DumpSockets::new(SocketDumpOptions { tcp_established: true, lock: LockMethod::Iptables, ..Default::default() }, super::super::lock::new_run_id());
        let copy = rustix::io::dup(&a).unwrap();
        let fd = d.repair(copy, conn(&a), true).unwrap();
        let saved = tcp_repair::save(fd).unwrap();
        assert_eq!(saved.state, tcp_repair::state::ESTABLISHED);
        assert_eq!(d.repaired(), 1);
        // In repair mode the connection is frozen: a write is refused.
        assert!(a.write_all(b"x").is_err());
        d.release();
        assert!(rustix::net::sockopt::socket_reuseaddr(&a).unwrap());
        a.write_all(b"y").unwrap();
        let mut buf = [0u8; 1];
        b.set_read_timeout(Some(std::time::Duration::from_secs(30))).unwrap();
        b.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"y");
    }

    #[test]
    fn diag_tables_answer_by_inode() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let ino = rustix::fs::fstat(&l).unwrap().st_ino as u32;
        let mut d = DumpSockets::new(SocketDumpOptions::default(), "x".into());
        let me = std::process::id() as i32;
        let i = d.inet_info(me, libc::AF_INET, libc::IPPROTO_TCP, ino).unwrap().unwrap();
        assert_eq!(i.local, l.local_addr().unwrap());
        assert_eq!(d.inet_info(me, libc::AF_INET, libc::IPPROTO_TCP, 1).unwrap(), None);
        d.keep();
    }
}
