//! Netlink sockets (route, generic, audit, ...: what a resolver, a JVM or
//! a network tool holds): what a dump reads from one and how restore makes
//! it again, as CRIU's `netlink_sk_entry` keeps it.
//!
//! Read with `getsockname` (port id, the first 32 groups), the
//! `NETLINK_LIST_MEMBERSHIPS` option (every group) and `getpeername` (the
//! default destination). A socket with messages waiting cannot be dumped
//! (they would be lost; the kernel keeps no way to put them back).
//! Restore binds the dumped port id, or one the kernel picks when it is
//! taken (as CRIU does: port ids are mostly derived from pids, and programs
//! rarely care), joins the groups and connects.

use super::sockopt;
use super::sockopts::SockOpts;
use linux_raw_sys::netlink as nl;
use rustix::fd::{AsFd, BorrowedFd, OwnedFd};
use rustix::io::Errno;
use rustix::net::netlink::SocketAddrNetlink;

/// `NETLINK_CONNECTED`: a default destination was set with `connect`.
pub const NETLINK_CONNECTED: u32 = 1;

/// One netlink socket as a dump sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetlinkSocket {
    /// `NETLINK_ROUTE`, `NETLINK_GENERIC`, ...
    pub protocol: u32,
    /// Bound port id (0: not bound yet).
    pub portid: u32,
    /// Group membership bitmap, 32 groups per word (group N is bit N-1).
    pub groups: Vec<u32>,
    /// Default destination port id.
    pub dst_portid: u32,
    /// Default destination group (its number, 0 for none).
    pub dst_group: u32,
    /// [`NETLINK_CONNECTED`] or 0.
    pub state: u32,
    /// `SOL_SOCKET` options.
    pub opts: SockOpts,
    /// Messages wait to be read.
    pub queued: bool,
}

/// Error type for [`NetlinkSocket`] operations: the call that failed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{call}: {errno}")]
pub struct NetlinkError {
    /// The call.
    pub call: String,
    /// What the kernel said.
    pub errno: Errno,
}

fn err(call: impl Into<String>) -> impl FnOnce(Errno) -> NetlinkError {
    let call = call.into();
    move |errno| NetlinkError { call, errno }
}

fn nl_addr(a: Option<rustix::net::SocketAddrAny>) -> SocketAddrNetlink {
    a.and_then(|a| SocketAddrNetlink::try_from(a).ok()).unwrap_or(SocketAddrNetlink::new(0, 0))
}

impl NetlinkSocket {
    /// Reads netlink socket `fd` (criu-rs's copy of the task's).
    pub fn read(fd: BorrowedFd<'_>) -> Result<NetlinkSocket, NetlinkError> {
        let protocol = sockopt::get_u32(fd, libc::SOL_SOCKET as u32, libc::SO_PROTOCOL as u32).map_err(err("getsockopt(SO_PROTOCOL)"))?;
        let me = nl_addr(Some(rustix::net::getsockname(fd).map_err(err("getsockname"))?));
        let peer = nl_addr(rustix::net::getpeername(fd).map_err(err("getpeername"))?);
        // The whole membership bitmap (getsockname shows the first 32).
        let mut buf = vec![0u8; 4096];
        let n = sockopt::get_bytes(fd, linux_raw_sys::net::SOL_NETLINK, nl::NETLINK_LIST_MEMBERSHIPS, &mut buf).map_err(err("getsockopt(NETLINK_LIST_MEMBERSHIPS)"))?;
        let mut groups: Vec<u32> = buf[..n.min(buf.len())].chunks_exact(4).map(|c| u32::from_ne_bytes([c[0], c[1], c[2], c[3]])).collect();
        while groups.last() == Some(&0) {
            groups.pop();
        }
        let dst_group = if peer.groups() == 0 { 0 } else { peer.groups().trailing_zeros() + 1 };
        let state = if peer.pid() != 0 || dst_group != 0 { NETLINK_CONNECTED } else { 0 };
        let opts = SockOpts::read(fd, libc::AF_NETLINK).map_err(|e| NetlinkError { call: format!("getsockopt({})", e.opt), errno: e.errno })?;
        let queued = {
            use rustix::event::{poll, PollFd, PollFlags};
            let mut p = [PollFd::new(&fd, PollFlags::IN)];
            poll(&mut p, Some(&rustix::time::Timespec { tv_sec: 0, tv_nsec: 0 })).map_err(err("poll"))?;
            p[0].revents().contains(PollFlags::IN)
        };
        Ok(NetlinkSocket { protocol, portid: me.pid(), groups, dst_portid: peer.pid(), dst_group, state, opts, queued })
    }

    /// Makes the socket again: `socket(AF_NETLINK, SOCK_RAW, protocol)`,
    /// bound to the dumped port id (or, when it is taken, to one the kernel
    /// picks: the returned flag says so), with its groups, destination and
    /// options.
    pub fn open(&self) -> Result<(OwnedFd, bool), NetlinkError> {
        use rustix::net::{AddressFamily, Protocol, SocketFlags, SocketType};
        let proto = std::num::NonZeroU32::new(self.protocol).map(Protocol::from_raw);
        let s = rustix::net::socket_with(AddressFamily::NETLINK, SocketType::RAW, SocketFlags::CLOEXEC, proto)
            .map_err(err(format!("socket(AF_NETLINK, SOCK_RAW, {})", self.protocol)))?;
        let mut moved = false;
        if self.portid != 0 {
            let first = self.groups.first().copied().unwrap_or(0);
            match rustix::net::bind(&s, &SocketAddrNetlink::new(self.portid, first)) {
                Ok(()) => {}
                Err(Errno::ADDRINUSE) => {
                    rustix::net::bind(&s, &SocketAddrNetlink::new(0, first)).map_err(err("bind(AF_NETLINK, any port id)"))?;
                    moved = true;
                }
                Err(e) => return Err(err(format!("bind(AF_NETLINK, port id {})", self.portid))(e)),
            }
            for (w, &bits) in self.groups.iter().enumerate().skip(1) {
                for b in (0..32).filter(|b| bits & (1 << b) != 0) {
                    let group = (w * 32 + b + 1) as u32;
                    sockopt::set_u32(&s, linux_raw_sys::net::SOL_NETLINK, nl::NETLINK_ADD_MEMBERSHIP, group).map_err(err(format!("NETLINK_ADD_MEMBERSHIP {group}")))?;
                }
            }
        }
        if self.state == NETLINK_CONNECTED {
            let mask = if self.dst_group == 0 { 0 } else { 1u32.checked_shl(self.dst_group - 1).unwrap_or(0) };
            rustix::net::connect(&s, &SocketAddrNetlink::new(self.dst_portid, mask))
                .map_err(err(format!("connect(AF_NETLINK, port id {}, group {})", self.dst_portid, self.dst_group)))?;
        }
        self.opts.apply(s.as_fd()).map_err(|e| NetlinkError { call: format!("setsockopt({})", e.opt), errno: e.errno })?;
        Ok((s, moved))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustix::net::{AddressFamily, Protocol, SocketType};

    fn route() -> OwnedFd {
        // NETLINK_ROUTE is protocol 0.
        let p = std::num::NonZeroU32::new(libc::NETLINK_ROUTE as u32).map(Protocol::from_raw);
        rustix::net::socket(AddressFamily::NETLINK, SocketType::RAW, p).unwrap()
    }

    #[test]
    fn a_bound_route_socket_with_groups_comes_back() {
        let s = route();
        // RTNLGRP_LINK (1) through the bind mask, RTNLGRP_IPV6_RULE (19)
        // and a group above 32 (RTNLGRP_NEXTHOP, 32; RTNLGRP_STATS 36).
        // A port id of our own: an autobound one (the pid first) could be
        // taken by a parallel test's socket between the drop and the open.
        let portid = 0x5e00_0000 | std::process::id();
        rustix::net::bind(&s, &SocketAddrNetlink::new(portid, 1)).unwrap();
        sockopt::set_u32(&s, linux_raw_sys::net::SOL_NETLINK, nl::NETLINK_ADD_MEMBERSHIP, 19).unwrap();
        sockopt::set_u32(&s, linux_raw_sys::net::SOL_NETLINK, nl::NETLINK_ADD_MEMBERSHIP, 36).unwrap();
        rustix::net::sockopt::set_socket_passcred(&s, true).unwrap();
        let n = NetlinkSocket::read(s.as_fd()).unwrap();
        assert_eq!(n.portid, portid);
        assert_eq!(n.groups, vec![1 | (1 << 18), 1 << 3]);
        assert!(n.opts.passcred);
        assert!(!n.queued);
        drop(s);
        let (r, moved) = n.open().unwrap();
        assert!(!moved);
        assert_eq!(NetlinkSocket::read(r.as_fd()).unwrap(), n);
        // The same port id taken: another one is picked.
        let (r2, moved) = n.open().unwrap();
        assert!(moved);
        assert_ne!(NetlinkSocket::read(r2.as_fd()).unwrap().portid, n.portid);
    }

    #[test]
    fn unbound_and_queued_sockets_are_seen() {
        let s = route();
        let n = NetlinkSocket::read(s.as_fd()).unwrap();
        assert_eq!((n.portid, n.state, n.groups.len()), (0, 0, 0));
        // Ask the kernel for the links; the answer waits unread.
        let mut req = vec![0u8; 32];
        req[..4].copy_from_slice(&32u32.to_ne_bytes());
        req[4..6].copy_from_slice(&(libc::RTM_GETLINK).to_ne_bytes());
        req[6..8].copy_from_slice(&((libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16).to_ne_bytes());
        req[16] = libc::AF_UNSPEC as u8;
        rustix::net::sendto(&s, &req, rustix::net::SendFlags::empty(), &SocketAddrNetlink::new(0, 0)).unwrap();
        let n = NetlinkSocket::read(s.as_fd()).unwrap();
        assert!(n.queued);
        assert_ne!(n.portid, 0, "sending bound it");
    }
}
