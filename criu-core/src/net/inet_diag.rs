//! TCP, UDP and UDP-Lite sockets as `NETLINK_SOCK_DIAG` reports them
//! (`include/uapi/linux/inet_diag.h`): what `getsockopt` does not say —
//! the shutdown state, queue lengths, a listener's backlog.
//!
//! ```text
//! inet_diag_req_v2 (56 bytes): u8 family, u8 protocol, u8 ext, u8 pad,
//!                              u32 states (bit per TCP_* state),
//!                              inet_diag_sockid id (48 bytes, zero: any)
//! inet_diag_sockid (48 bytes): be16 sport, be16 dport, be32 src[4],
//!                              be32 dst[4], u32 if, u32 cookie[2]
//! inet_diag_msg (72 bytes):    u8 family, u8 state, u8 timer, u8 retrans,
//!                              inet_diag_sockid id, u32 expires,
//!                              u32 rqueue, u32 wqueue, u32 uid, u32 inode
//! attributes:                  SHUTDOWN (8) u8 sk_shutdown, ...
//! ```
//!
//! `rqueue`/`wqueue` are, for a listener, the connections waiting to be
//! accepted and the backlog; for a TCP connection the bytes not read and
//! not acknowledged; for UDP the memory the queues hold.

use super::diag::{attrs, DiagError, DiagSocket};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Size of `struct inet_diag_msg`.
const MSG_LEN: usize = 72;
/// `INET_DIAG_SHUTDOWN`.
const ATTR_SHUTDOWN: u16 = 8;

/// What the kernel says about one internet socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InetSockInfo {
    /// Socket inode.
    pub ino: u32,
    /// TCP state (UDP: `ESTABLISHED` when connected, else `CLOSE`).
    pub state: u8,
    /// Local address.
    pub local: SocketAddr,
    /// Peer address (unspecified, port 0, when not connected).
    pub peer: SocketAddr,
    /// See the module documentation.
    pub rqueue: u32,
    /// See the module documentation.
    pub wqueue: u32,
    /// `sk_shutdown` (`RCV_SHUTDOWN` 1 | `SEND_SHUTDOWN` 2), when reported.
    pub shutdown: Option<u8>,
}

/// `inet_diag_req_v2` for every socket of `family` and `protocol` in every
/// state.
fn request(family: u8, protocol: u8) -> [u8; 56] {
    let mut req = [0u8; 56];
    req[0] = family;
    req[1] = protocol;
    req[4..8].copy_from_slice(&u32::MAX.to_ne_bytes());
    req
}

fn addr(family: u8, words: &[u8], port: [u8; 2]) -> SocketAddr {
    let port = u16::from_be_bytes(port);
    let ip = if family == libc::AF_INET as u8 {
        IpAddr::V4(Ipv4Addr::new(words[0], words[1], words[2], words[3]))
    } else {
        let mut b = [0u8; 16];
        b.copy_from_slice(&words[..16]);
        IpAddr::V6(Ipv6Addr::from(b))
    };
    SocketAddr::new(ip, port)
}

/// Parses one reply payload.
fn parse(payload: &[u8]) -> Result<InetSockInfo, DiagError> {
    let m = payload.get(..MSG_LEN).ok_or_else(|| DiagError::Malformed(format!("inet_diag_msg of {} bytes", payload.len())))?;
    let u32_at = |o: usize| u32::from_ne_bytes([m[o], m[o + 1], m[o + 2], m[o + 3]]);
    let family = m[0];
    let mut shutdown = None;
    for a in attrs(payload, MSG_LEN) {
        let (ty, data) = a?;
        if ty == ATTR_SHUTDOWN {
            shutdown = data.first().copied();
        }
    }
    Ok(InetSockInfo {
        ino: u32_at(68),
        state: m[1],
        local: addr(family, &m[8..24], [m[4], m[5]]),
        peer: addr(family, &m[24..40], [m[6], m[7]]),
        rqueue: u32_at(56),
        wqueue: u32_at(60),
        shutdown,
    })
}

/// Every socket of `family` (`AF_INET`/`AF_INET6`) and `protocol`
/// (`IPPROTO_TCP`, `IPPROTO_UDP`, `IPPROTO_UDPLITE`) in the diag socket's
/// network namespace, by inode (sockets without one, such as TIME_WAIT
/// ones, are left out).
pub fn sockets(diag: &mut DiagSocket, family: i32, protocol: i32) -> Result<HashMap<u32, InetSockInfo>, DiagError> {
    let mut out = HashMap::new();
    diag.query(&request(family as u8, protocol as u8), true, |p| {
        let info = parse(p)?;
        if info.ino != 0 {
            out.insert(info.ino, info);
        }
        Ok(())
    })?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream, UdpSocket};

    fn ino(fd: impl rustix::fd::AsFd) -> u32 {
        rustix::fs::fstat(fd).unwrap().st_ino as u32
    }

    #[test]
    fn listeners_connections_and_udp_are_reported() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let mut d = DiagSocket::open().unwrap();
        let tcp = sockets(&mut d, libc::AF_INET, libc::IPPROTO_TCP).unwrap();
        let li = tcp[&ino(&l)];
        assert_eq!((li.state, li.local, li.rqueue, li.wqueue), (10, l.local_addr().unwrap(), 1, 128), "{li:?}");
        let ci = tcp[&ino(&c)];
        assert_eq!((ci.state, ci.local, ci.peer, ci.shutdown), (1, c.local_addr().unwrap(), l.local_addr().unwrap(), Some(0)));
        c.shutdown(std::net::Shutdown::Write).unwrap();
        let ci = sockets(&mut d, libc::AF_INET, libc::IPPROTO_TCP).unwrap()[&ino(&c)];
        assert_eq!(ci.shutdown, Some(2));

        let u = UdpSocket::bind("[::1]:0").unwrap();
        u.connect("[::1]:9").unwrap();
        let ui = sockets(&mut d, libc::AF_INET6, libc::IPPROTO_UDP).unwrap()[&ino(&u)];
        assert_eq!((ui.state, ui.local, ui.peer), (1, u.local_addr().unwrap(), "[::1]:9".parse().unwrap()));
    }
}
