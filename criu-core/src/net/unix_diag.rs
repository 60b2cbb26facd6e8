//! `AF_UNIX` sockets as `NETLINK_SOCK_DIAG` reports them (`unix_diag(7)`
//! has no man page; `include/uapi/linux/unix_diag.h` is the reference).
//!
//! ```text
//! unix_diag_req (24 bytes): u8 family = AF_UNIX, u8 protocol = 0, u16 pad,
//!                           u32 states (bit per TCP_* state), u32 ino,
//!                           u32 show (UDIAG_SHOW_*), u32 cookie[2]
//! unix_diag_msg (16 bytes): u8 family, u8 type, u8 state, u8 pad,
//!                           u32 ino, u32 cookie[2]
//! attributes:  NAME (bytes: sun_path as bound; abstract names start with 0)
//!              VFS {u32 dev, u32 ino} of a path name's socket file
//!              PEER u32 ino   ICONS u32[] (clients queued on a listener)
//!              RQLEN {u32 rqueue, u32 wqueue}   SHUTDOWN u8   UID u32
//! ```

use super::diag::{attr_u32, attrs, DiagError, DiagSocket};
use std::collections::HashMap;

/// `UDIAG_SHOW_NAME`.
const SHOW_NAME: u32 = 0x01;
/// `UDIAG_SHOW_VFS`.
const SHOW_VFS: u32 = 0x02;
/// `UDIAG_SHOW_PEER`.
const SHOW_PEER: u32 = 0x04;
/// `UDIAG_SHOW_ICONS`.
const SHOW_ICONS: u32 = 0x08;
/// `UDIAG_SHOW_RQLEN`.
const SHOW_RQLEN: u32 = 0x10;
/// `UDIAG_SHOW_UID`.
const SHOW_UID: u32 = 0x40;

/// Attribute types (`UNIX_DIAG_*`).
mod attr {
    pub const NAME: u16 = 0;
    pub const VFS: u16 = 1;
    pub const PEER: u16 = 2;
    pub const ICONS: u16 = 3;
    pub const RQLEN: u16 = 4;
    pub const SHUTDOWN: u16 = 6;
    pub const UID: u16 = 7;
}

/// Size of `struct unix_diag_msg`.
const MSG_LEN: usize = 16;

/// Socket states as the kernel reports them for `AF_UNIX` (TCP's numbers).
pub mod state {
    /// `TCP_ESTABLISHED`: connected.
    pub const ESTABLISHED: u8 = 1;
    /// `TCP_CLOSE`: not connected (and not listening).
    pub const CLOSE: u8 = 7;
    /// `TCP_LISTEN`: listening.
    pub const LISTEN: u8 = 10;
}

/// What the kernel says about one unix socket.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnixSockInfo {
    /// Socket inode (`socket:[INO]`).
    pub ino: u32,
    /// `SOCK_STREAM`, `SOCK_DGRAM` or `SOCK_SEQPACKET`.
    pub ty: u8,
    /// One of [`state`].
    pub state: u8,
    /// The bound address's `sun_path` bytes as the kernel keeps them: a path
    /// with its terminating NUL, or an abstract name starting with a NUL.
    /// An accepted socket reports its listener's name.
    pub name: Option<Vec<u8>>,
    /// `(st_dev, st_ino)` of a path name's socket file, in the kernel's
    /// device encoding (major << 20 | minor).
    pub vfs: Option<(u32, u32)>,
    /// The peer's inode, 0 if none (or a connection not yet accepted).
    pub peer: u32,
    /// On a listener: the inodes of the clients whose connections wait to
    /// be accepted (0 for a client already closed).
    pub icons: Vec<u32>,
    /// Receive queue: bytes (stream, seqpacket, datagram), or pending
    /// connections on a listener.
    pub rqlen: u32,
    /// Send side: bytes sent and not yet read by the peer, or the backlog
    /// on a listener.
    pub wqlen: u32,
    /// `RCV_SHUTDOWN` (1) and `SEND_SHUTDOWN` (2) bits.
    pub shutdown: u8,
    /// Owner uid of the socket.
    pub uid: Option<u32>,
}

impl UnixSockInfo {
    /// Whether the name is a path (not abstract).
    pub fn has_path(&self) -> bool {
        self.name.as_ref().is_some_and(|n| n.first().is_some_and(|&b| b != 0))
    }

    /// The name for messages: a path, `@abstract` (NULs shown as `@`), or
    /// `socket:[INO]` when unbound.
    pub fn display_name(&self) -> String {
        display_name(self.name.as_deref(), self.ino)
    }
}

/// A unix socket's name for messages (see [`UnixSockInfo::display_name`]).
pub fn display_name(name: Option<&[u8]>, ino: u32) -> String {
    match name {
        None | Some([]) => format!("socket:[{ino}]"),
        Some([0, rest @ ..]) => {
            let shown: Vec<u8> = rest.iter().map(|&b| if b == 0 { b'@' } else { b }).collect();
            format!("@{}", String::from_utf8_lossy(&shown))
        }
        Some(path) => String::from_utf8_lossy(path.strip_suffix(&[0]).unwrap_or(path)).into_owned(),
    }
}

/// `unix_diag_req` asking for every unix socket with everything we use.
fn request(ino: u32) -> Vec<u8> {
    let show = SHOW_NAME | SHOW_VFS | SHOW_PEER | SHOW_ICONS | SHOW_RQLEN | SHOW_UID;
    let mut req = vec![libc::AF_UNIX as u8, 0, 0, 0];
    req.extend_from_slice(&u32::MAX.to_ne_bytes()); // every state
    req.extend_from_slice(&ino.to_ne_bytes());
    req.extend_from_slice(&show.to_ne_bytes());
    // INET_DIAG_NOCOOKIE: an exact request without a known cookie.
    req.extend_from_slice(&[0xff; 8]);
    req
}

/// Parses one `unix_diag_msg` reply with its attributes.
pub fn parse(payload: &[u8]) -> Result<UnixSockInfo, DiagError> {
    if payload.len() < MSG_LEN {
        return Err(DiagError::Malformed(format!("unix_diag_msg of {} bytes", payload.len())));
    }
    let mut s = UnixSockInfo { ty: payload[1], state: payload[2], ino: attr_u32(&payload[4..8])?, ..Default::default() };
    for a in attrs(payload, MSG_LEN) {
        let (ty, data) = a?;
        match ty {
            attr::NAME => s.name = Some(data.to_vec()),
            attr::VFS => s.vfs = Some((attr_u32(data)?, attr_u32(data.get(4..).unwrap_or(&[]))?)),
            attr::PEER => s.peer = attr_u32(data)?,
            attr::ICONS => s.icons = data.chunks_exact(4).map(attr_u32).collect::<Result<_, _>>()?,
            attr::RQLEN => {
                s.rqlen = attr_u32(data)?;
                s.wqlen = attr_u32(data.get(4..).unwrap_or(&[]))?;
            }
            attr::SHUTDOWN => s.shutdown = *data.first().ok_or_else(|| DiagError::Malformed("empty SHUTDOWN".into()))?,
            attr::UID => s.uid = Some(attr_u32(data)?),
            _ => {}
        }
    }
    Ok(s)
}

/// Every unix socket of the diag socket's network namespace, by inode.
pub fn unix_sockets(diag: &mut DiagSocket) -> Result<HashMap<u32, UnixSockInfo>, DiagError> {
    let mut out = HashMap::new();
    diag.query(&request(0), true, |p| {
        let s = parse(p)?;
        out.insert(s.ino, s);
        Ok(())
    })?;
    Ok(out)
}

/// The unix socket with inode `ino`, if the namespace has one.
pub fn unix_socket(diag: &mut DiagSocket, ino: u32) -> Result<Option<UnixSockInfo>, DiagError> {
    let mut out = None;
    match diag.query(&request(ino), false, |p| {
        out = Some(parse(p)?);
        Ok(())
    }) {
        Err(DiagError::Refused(e)) if e == rustix::io::Errno::NOENT => Ok(None),
        r => r.map(|()| out),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType};

    fn ino(fd: &impl rustix::fd::AsFd) -> u32 {
        rustix::fs::fstat(fd).unwrap().st_ino as u32
    }

    #[test]
    fn a_listener_its_pending_client_and_an_accepted_pair() {
        let name = format!("criu-rs-diag-test-{}", std::process::id());
        let addr = SocketAddrUnix::new_abstract_name(name.as_bytes()).unwrap();
        let l = rustix::net::socket_with(AddressFamily::UNIX, SocketType::STREAM, SocketFlags::CLOEXEC, None).unwrap();
        rustix::net::bind(&l, &addr).unwrap();
        rustix::net::listen(&l, 7).unwrap();
        let c1 = rustix::net::socket_with(AddressFamily::UNIX, SocketType::STREAM, SocketFlags::CLOEXEC, None).unwrap();
        rustix::net::connect(&c1, &addr).unwrap();
        let a1 = rustix::net::accept(&l).unwrap();
        let c2 = rustix::net::socket_with(AddressFamily::UNIX, SocketType::STREAM, SocketFlags::CLOEXEC, None).unwrap();
        rustix::net::connect(&c2, &addr).unwrap();
        rustix::net::send(&c1, b"hello", rustix::net::SendFlags::empty()).unwrap();
        rustix::net::shutdown(&a1, rustix::net::Shutdown::Write).unwrap();

        let mut d = DiagSocket::open().unwrap();
        let all = unix_sockets(&mut d).unwrap();
        let ls = &all[&ino(&l)];
        assert_eq!((ls.state, ls.ty), (state::LISTEN, libc::SOCK_STREAM as u8));
        assert_eq!(ls.name.as_deref().unwrap()[1..], *name.as_bytes());
        assert_eq!(ls.icons, vec![ino(&c2)], "the pending client");
        assert_eq!((ls.rqlen, ls.wqlen), (1, 7), "one pending connection, backlog 7");
        let acc = &all[&ino(&a1)];
        assert_eq!(acc.peer, ino(&c1));
        assert_eq!(acc.name, ls.name, "an accepted socket reports its listener's name");
        assert_eq!(acc.rqlen, 5);
        assert_eq!(acc.shutdown, 2);
        assert_eq!(all[&ino(&c1)].peer, ino(&a1));
        assert_eq!(all[&ino(&c2)].peer, 0, "not accepted yet: no peer socket");
        assert_eq!(all[&ino(&c2)].state, state::ESTABLISHED);
        assert_eq!(ls.display_name(), format!("@{name}"));

        let one = unix_socket(&mut d, ino(&a1)).unwrap().unwrap();
        assert_eq!(&one, acc);
        drop((c1, c2, a1, l));
    }

    #[test]
    fn display_names() {
        assert_eq!(display_name(Some(b"/tmp/x\0"), 1), "/tmp/x");
        assert_eq!(display_name(Some(b"\0a\0b"), 1), "@a@b");
        assert_eq!(display_name(None, 5), "socket:[5]");
    }
}
