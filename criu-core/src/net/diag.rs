//! `NETLINK_SOCK_DIAG`: asking the kernel about sockets, for every family.
//!
//! One request, one or many replies, on one netlink socket:
//!
//! ```text
//! request:  nlmsghdr { len, type = SOCK_DIAG_BY_FAMILY (20), flags = REQUEST [| DUMP], seq, pid }
//!           family request struct (unix_diag_req, inet_diag_req_v2, ...)
//! replies:  nlmsghdr { type = SOCK_DIAG_BY_FAMILY }  family reply struct  nlattr*
//!           ...                                     (one per socket, several per datagram)
//!           nlmsghdr { type = NLMSG_DONE }          (dumps)  or  NLMSG_ERROR { errno }
//! nlattr:   u16 len (header included), u16 type, payload, padded to 4 bytes
//! ```
//!
//! This module knows only that framing: [`DiagSocket::query`] sends a
//! family's request struct and hands each reply's payload (family struct
//! and attributes) to a closure; [`attrs`] walks the attributes after it.
//! The families' structs live with their users ([`super::unix_diag`] for
//! `AF_UNIX`).
//!
//! The kernel answers about the sockets of the network namespace the
//! netlink socket was created in: [`DiagSocket::open_for`] creates it in the
//! namespace of a given process (see [`super::netns`]).
//!
//! # References
//! `sock_diag(7)`, `netlink(7)`; `include/uapi/linux/sock_diag.h`.

use rustix::fd::{AsFd, OwnedFd};
use rustix::io::Errno;

/// `SOCK_DIAG_BY_FAMILY`, the request and reply message type.
pub const SOCK_DIAG_BY_FAMILY: u16 = 20;

/// Size of `struct nlmsghdr`.
const NLMSG_HDRLEN: usize = 16;
/// Size of `struct nlattr`'s header.
const NLA_HDRLEN: usize = 4;
/// `NLA_TYPE_MASK`: attribute type without the nested/byte-order flags.
const NLA_TYPE_MASK: u16 = !((1 << 15) | (1 << 14));
/// Largest reply datagram read at once (the kernel fills at most this much
/// per dump step when the reader offers it).
const RECV_BUF: usize = 64 << 10;

/// Error type for [`DiagSocket`] operations.
#[derive(Debug, thiserror::Error)]
pub enum DiagError {
    /// The netlink socket could not be created.
    #[error("socket(AF_NETLINK, NETLINK_SOCK_DIAG): {0}")]
    Socket(Errno),
    /// Entering the network namespace of the process failed.
    #[error("entering the network namespace of pid {pid}: {errno}")]
    Netns {
        /// The process.
        pid: i32,
        /// Why.
        errno: Errno,
    },
    /// Sending the request failed.
    #[error("sock_diag send: {0}")]
    Send(Errno),
    /// Receiving a reply failed.
    #[error("sock_diag recv: {0}")]
    Recv(Errno),
    /// The kernel refused the request (`NLMSG_ERROR`).
    #[error("sock_diag request refused: {0}")]
    Refused(Errno),
    /// A reply did not have the netlink layout.
    #[error("malformed sock_diag reply: {0}")]
    Malformed(String),
}

/// A `NETLINK_SOCK_DIAG` socket, bound to the network namespace it was
/// created in.
#[derive(Debug)]
pub struct DiagSocket {
    fd: OwnedFd,
    seq: u32,
}

impl DiagSocket {
    /// `socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_SOCK_DIAG)` in the
    /// caller's network namespace.
    pub fn open() -> Result<DiagSocket, DiagError> {
        use rustix::net::{socket_with, AddressFamily, SocketFlags, SocketType};
        let proto = rustix::net::Protocol::from_raw(
            std::num::NonZeroU32::new(libc::NETLINK_SOCK_DIAG as u32).ok_or(DiagError::Socket(Errno::INVAL))?,
        );
        let fd = socket_with(AddressFamily::NETLINK, SocketType::RAW, SocketFlags::CLOEXEC, Some(proto))
            .map_err(DiagError::Socket)?;
        Ok(DiagSocket { fd, seq: 0 })
    }

    /// A diag socket in the network namespace of `pid` (ours if it is the
    /// same one).
    pub fn open_for(pid: i32) -> Result<DiagSocket, DiagError> {
        super::netns::in_netns_of(pid, DiagSocket::open)
            .map_err(|errno| DiagError::Netns { pid, errno })?
    }

    /// Sends `SOCK_DIAG_BY_FAMILY` with the family request `req` (with
    /// `NLM_F_DUMP` when `dump`) and calls `each` with the payload of every
    /// reply (the family's reply struct followed by its attributes), until
    /// the kernel is done. A refused request is [`DiagError::Refused`]
    /// (`ENOENT` for an exact request about a socket that does not exist).
    pub fn query(
        &mut self,
        req: &[u8],
        dump: bool,
        mut each: impl FnMut(&[u8]) -> Result<(), DiagError>,
    ) -> Result<(), DiagError> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let flags = libc::NLM_F_REQUEST as u16 | if dump { libc::NLM_F_DUMP as u16 } else { 0 };
        let mut msg = Vec::with_capacity(NLMSG_HDRLEN + req.len());
        msg.extend_from_slice(&((NLMSG_HDRLEN + req.len()) as u32).to_ne_bytes());
        msg.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
        msg.extend_from_slice(&flags.to_ne_bytes());
        msg.extend_from_slice(&seq.to_ne_bytes());
        msg.extend_from_slice(&0u32.to_ne_bytes());
        msg.extend_from_slice(req);
        let kernel = rustix::net::netlink::SocketAddrNetlink::new(0, 0);
        let sent = rustix::net::sendto(&self.fd, &msg, rustix::net::SendFlags::empty(), &kernel).map_err(DiagError::Send)?;
        if sent != msg.len() {
            return Err(DiagError::Send(Errno::MSGSIZE));
        }
        let mut buf = vec![0u8; RECV_BUF];
        loop {
            let (n, full) = rustix::net::recv(self.fd.as_fd(), &mut buf[..], rustix::net::RecvFlags::TRUNC)
                .map_err(DiagError::Recv)?;
            if full > n {
                return Err(DiagError::Malformed(format!("a reply of {full} bytes does not fit {n}")));
            }
            if n == 0 {
                return Err(DiagError::Malformed("end of stream before NLMSG_DONE".into()));
            }
            for m in messages(&buf[..n]) {
                let (ty, mseq, payload) = m?;
                if mseq != seq {
                    continue; // a stale reply to an earlier request
                }
                match ty {
                    t if t == libc::NLMSG_DONE as u16 => return Ok(()),
                    t if t == libc::NLMSG_ERROR as u16 => {
                        let code = payload
                            .get(..4)
                            .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
                            .ok_or_else(|| DiagError::Malformed("short NLMSG_ERROR".into()))?;
                        if code == 0 {
                            return Ok(()); // an acknowledgement
                        }
                        return Err(DiagError::Refused(Errno::from_raw_os_error(-code)));
                    }
                    SOCK_DIAG_BY_FAMILY => {
                        each(payload)?;
                        if !dump {
                            return Ok(());
                        }
                    }
                    t => return Err(DiagError::Malformed(format!("unexpected message type {t}"))),
                }
            }
        }
    }
}

/// The netlink messages of one datagram: `(type, seq, payload)` each.
fn messages(mut buf: &[u8]) -> impl Iterator<Item = Result<(u16, u32, &[u8]), DiagError>> {
    std::iter::from_fn(move || {
        if buf.len() < NLMSG_HDRLEN {
            return None;
        }
        let len = u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        let ty = u16::from_ne_bytes([buf[4], buf[5]]);
        let seq = u32::from_ne_bytes([buf[8], buf[9], buf[10], buf[11]]);
        if len < NLMSG_HDRLEN || len > buf.len() {
            buf = &[];
            return Some(Err(DiagError::Malformed(format!("netlink message length {len}"))));
        }
        let payload = &buf[NLMSG_HDRLEN..len];
        buf = &buf[align4(len).min(buf.len())..];
        Some(Ok((ty, seq, payload)))
    })
}

/// Rounds up to the 4-byte netlink alignment.
const fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// The attributes of a reply payload after its `skip`-byte family struct:
/// `(type, payload)` each, type without the nested/byte-order flags. A
/// truncated attribute ends the walk with an error.
pub fn attrs(payload: &[u8], skip: usize) -> impl Iterator<Item = Result<(u16, &[u8]), DiagError>> {
    let mut buf = payload.get(align4(skip)..).unwrap_or(&[]);
    std::iter::from_fn(move || {
        if buf.len() < NLA_HDRLEN {
            return None;
        }
        let len = u16::from_ne_bytes([buf[0], buf[1]]) as usize;
        let ty = u16::from_ne_bytes([buf[2], buf[3]]) & NLA_TYPE_MASK;
        if len < NLA_HDRLEN || len > buf.len() {
            buf = &[];
            return Some(Err(DiagError::Malformed(format!("attribute {ty} of length {len}"))));
        }
        let data = &buf[NLA_HDRLEN..len];
        buf = &buf[align4(len).min(buf.len())..];
        Some(Ok((ty, data)))
    })
}

/// A `u32` attribute payload (native endian).
pub fn attr_u32(data: &[u8]) -> Result<u32, DiagError> {
    data.get(..4)
        .map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or_else(|| DiagError::Malformed(format!("u32 attribute of {} bytes", data.len())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nla(ty: u16, data: &[u8]) -> Vec<u8> {
        let mut v = ((NLA_HDRLEN + data.len()) as u16).to_ne_bytes().to_vec();
        v.extend_from_slice(&ty.to_ne_bytes());
        v.extend_from_slice(data);
        v.resize(align4(v.len()), 0);
        v
    }

    #[test]
    fn attributes_are_walked_with_padding_and_flags_masked() {
        let mut p = vec![0u8; 6]; // a 6-byte family struct, padded to 8
        p.resize(8, 0);
        p.extend(nla(0, b"abc"));
        p.extend(nla(2 | (1 << 15), &7u32.to_ne_bytes()));
        let got: Vec<_> = attrs(&p, 6).collect::<Result<_, _>>().unwrap();
        assert_eq!(got, vec![(0, &b"abc"[..]), (2, &7u32.to_ne_bytes()[..])]);
        assert_eq!(attr_u32(got[1].1).unwrap(), 7);
    }

    #[test]
    fn a_truncated_attribute_is_an_error() {
        let mut p = nla(1, b"abcdefgh");
        p.truncate(6);
        assert!(attrs(&p, 0).any(|a| a.is_err()));
        assert!(attr_u32(b"ab").is_err());
    }

    #[test]
    fn messages_split_a_datagram() {
        let mut d = Vec::new();
        for (ty, body) in [(20u16, &b"xyz"[..]), (libc::NLMSG_DONE as u16, &[0u8; 4][..])] {
            d.extend_from_slice(&((NLMSG_HDRLEN + body.len()) as u32).to_ne_bytes());
            d.extend_from_slice(&ty.to_ne_bytes());
            d.extend_from_slice(&0u16.to_ne_bytes());
            d.extend_from_slice(&9u32.to_ne_bytes());
            d.extend_from_slice(&0u32.to_ne_bytes());
            d.extend_from_slice(body);
            d.resize(align4(d.len()), 0);
        }
        let got: Vec<_> = messages(&d).collect::<Result<_, _>>().unwrap();
        assert_eq!(got, vec![(20, 9, &b"xyz"[..]), (libc::NLMSG_DONE as u16, 9, &[0u8; 4][..])]);
    }

    #[test]
    fn the_kernel_answers_a_dump_of_our_own_unix_sockets() {
        // A bound abstract socket of ours shows up in a unix dump.
        let (a, _b) = rustix::net::socketpair(
            rustix::net::AddressFamily::UNIX,
            rustix::net::SocketType::STREAM,
            rustix::net::SocketFlags::CLOEXEC,
            None,
        )
        .unwrap();
        let ino = rustix::fs::fstat(&a).unwrap().st_ino as u32;
        let mut s = DiagSocket::open().unwrap();
        // unix_diag_req: family, protocol, pad, states, ino, show, cookie[2].
        let mut req = vec![libc::AF_UNIX as u8, 0, 0, 0];
        req.extend_from_slice(&u32::MAX.to_ne_bytes());
        req.extend_from_slice(&0u32.to_ne_bytes());
        req.extend_from_slice(&0u32.to_ne_bytes());
        req.extend_from_slice(&[0u8; 8]);
        let mut seen = false;
        s.query(&req, true, |p| {
            seen |= attr_u32(&p[4..8])? == ino;
            Ok(())
        })
        .unwrap();
        assert!(seen, "socket {ino} not in the dump");
        // A process in a namespace of its own: its dump has no socket of ours.
        let mut child = std::process::Command::new("unshare").args(["-n", "sleep", "60"]).spawn().unwrap();
        let pid = child.id() as i32;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while super::super::netns::netns_ino(pid).unwrap() == super::super::netns::netns_ino(0).unwrap() {
            assert!(std::time::Instant::now() < deadline, "unshare did not enter a new namespace");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let mut other = DiagSocket::open_for(pid).unwrap();
        let mut seen = false;
        other
            .query(&req, true, |p| {
                seen |= attr_u32(&p[4..8])? == ino;
                Ok(())
            })
            .unwrap();
        let _ = child.kill();
        let _ = child.wait();
        assert!(!seen, "socket {ino} seen from another namespace");
    }
}
