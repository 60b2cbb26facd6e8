//! Internet sockets (TCP, UDP and UDP-Lite over IPv4 and IPv6, v4-mapped
//! addresses included): what a dump reads from one ([`InetSocket::read`],
//! on criu-rs's own copy of the task's socket) and how restore makes it
//! again ([`InetSocket::create`], [`InetSocket::bind_listen_connect`],
//! [`InetSocket::set_options`]).
//!
//! Restore order, as the kernel needs it: `socket`; `IPV6_V6ONLY`;
//! `SO_REUSEADDR` and `SO_REUSEPORT` on (so that a listener and the
//! connections it accepted, which share its port, and listeners sharing a
//! port whatever their dumped options, can all be bound, as CRIU does;
//! [`set_reuse`] puts the dumped values back once every socket is bound);
//! `SO_BINDTODEVICE` and `IP_FREEBIND`/`IPV6_FREEBIND` (both change what
//! `bind` accepts); `bind` (IPv6 with `IPV6_FREEBIND` for the time of the
//! call: an address still tentative would refuse it); `listen` with the
//! dumped backlog or `connect` (UDP); then the other options and the
//! shutdown state. Established TCP connections
//! are rebuilt by [`super::tcp_repair`] instead of bind/connect.

use super::inet_diag::InetSockInfo;
use super::sockopt;
use super::sockopts::SockOpts;
use super::tcp_repair::{self, state};
use rustix::fd::{AsFd, BorrowedFd, OwnedFd};
use rustix::io::Errno;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6};

/// `IP_*`-level options CRIU keeps in `ip_opts_entry`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IpOpts {
    /// `IP_FREEBIND` / `IPV6_FREEBIND`.
    pub freebind: bool,
    /// `IP_PKTINFO` / `IPV6_RECVPKTINFO`.
    pub pktinfo: bool,
    /// `IP_TOS` (IPv4).
    pub tos: u32,
    /// `IP_TTL` (IPv4).
    pub ttl: u32,
    /// Raw sockets' options.
    pub raw: Option<RawOpts>,
}

/// A raw socket's options, as CRIU's `ip_opts_raw_entry` keeps them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RawOpts {
    /// `IP_HDRINCL` / `IPV6_HDRINCL`: the program writes the IP header.
    pub hdrincl: bool,
    /// `IP_NODEFRAG` (IPv4).
    pub nodefrag: bool,
    /// `ICMP_FILTER` (one word, IPv4 ICMP) or `ICMPV6_FILTER` (eight
    /// words, ICMPv6); empty for other protocols.
    pub icmp_filter: Vec<u32>,
}

/// `IPV6_HDRINCL`, `IP_NODEFRAG`, `SOL_RAW`/`SOL_ICMPV6` and their
/// `ICMP_FILTER`/`ICMPV6_FILTER` (not in libc's list for every target).
const IPV6_HDRINCL: i32 = 36;
const IP_NODEFRAG: i32 = 22;
const SOL_RAW: u32 = 255;
const SOL_ICMPV6: u32 = 58;
const ICMP_FILTER: u32 = 1;

impl RawOpts {
    fn read(fd: BorrowedFd<'_>, family: i32, proto: i32) -> Result<RawOpts, InetError> {
        let mut r = RawOpts::default();
        if family == libc::AF_INET6 {
            r.hdrincl = flag(fd, libc::IPPROTO_IPV6, IPV6_HDRINCL, "IPV6_HDRINCL")?;
            if proto == libc::IPPROTO_ICMPV6 {
                r.icmp_filter = sockopt::get::<[u32; 8]>(fd, SOL_ICMPV6, ICMP_FILTER).map_err(err("getsockopt(ICMPV6_FILTER)"))?.to_vec();
            }
        } else {
            r.hdrincl = flag(fd, libc::IPPROTO_IP, libc::IP_HDRINCL, "IP_HDRINCL")?;
            r.nodefrag = flag(fd, libc::IPPROTO_IP, IP_NODEFRAG, "IP_NODEFRAG")?;
            if proto == libc::IPPROTO_ICMP {
                r.icmp_filter = vec![sockopt::get_u32(fd, SOL_RAW, ICMP_FILTER).map_err(err("getsockopt(ICMP_FILTER)"))?];
            }
        }
        Ok(r)
    }

    fn apply(&self, fd: BorrowedFd<'_>, family: i32, proto: i32) -> Result<(), InetError> {
        let v6 = family == libc::AF_INET6;
        match (v6, proto, self.icmp_filter.len()) {
            (_, _, 0) => {}
            (false, libc::IPPROTO_ICMP, 1) => sockopt::set_u32(fd, SOL_RAW, ICMP_FILTER, self.icmp_filter[0]).map_err(err("setsockopt(ICMP_FILTER)"))?,
            (true, libc::IPPROTO_ICMPV6, 8) => {
                let words: Vec<u8> = self.icmp_filter.iter().flat_map(|w| w.to_ne_bytes()).collect();
                sockopt::set_bytes(fd, SOL_ICMPV6, ICMP_FILTER, &words).map_err(err("setsockopt(ICMPV6_FILTER)"))?
            }
            (_, _, n) => return Err(InetError { call: format!("an ICMP filter of {n} words for protocol {proto}"), errno: Errno::INVAL }),
        }
        if self.nodefrag && !v6 {
            set(fd, libc::IPPROTO_IP, IP_NODEFRAG, 1, "IP_NODEFRAG")?;
        }
        if self.hdrincl {
            if v6 {
                set(fd, libc::IPPROTO_IPV6, IPV6_HDRINCL, 1, "IPV6_HDRINCL")?;
            } else {
                set(fd, libc::IPPROTO_IP, libc::IP_HDRINCL, 1, "IP_HDRINCL")?;
            }
        }
        Ok(())
    }
}

/// `TCP_*`-level options CRIU keeps in `tcp_opts_entry`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TcpOpts {
    pub nodelay: bool,
    pub cork: bool,
    pub keepcnt: u32,
    pub keepidle: u32,
    pub keepintvl: u32,
}

/// `sk_shutdown` bits (and `sk_shutdown` enum values of the image).
pub const RCV_SHUTDOWN: u8 = 1;
/// Writing was shut down.
pub const SEND_SHUTDOWN: u8 = 2;

/// One internet socket as a dump sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InetSocket {
    /// `AF_INET` or `AF_INET6`.
    pub family: i32,
    /// `SOCK_STREAM`, `SOCK_DGRAM` or `SOCK_RAW`.
    pub ty: i32,
    /// `IPPROTO_TCP`, `IPPROTO_UDP` or `IPPROTO_UDPLITE`; any protocol
    /// for a raw socket.
    pub proto: i32,
    /// TCP state; UDP: [`state::ESTABLISHED`] when connected, else
    /// [`state::CLOSE`].
    pub state: u32,
    /// Bound address (unspecified, port 0: not bound).
    pub local: SocketAddr,
    /// Peer (unspecified, port 0: not connected).
    pub peer: SocketAddr,
    /// A listener's backlog.
    pub backlog: u32,
    /// A listener's connections not accepted yet (not kept: they are
    /// refused or skipped).
    pub pending: u32,
    /// `IPV6_V6ONLY`.
    pub v6only: bool,
    /// The interface an IPv6 link-local address is bound on.
    pub ifname: Option<String>,
    /// `SOL_SOCKET` options.
    pub opts: SockOpts,
    /// `SOL_IP`/`SOL_IPV6` options.
    pub ip: IpOpts,
    /// `SOL_TCP` options (TCP only).
    pub tcp: Option<TcpOpts>,
    /// `sk_shutdown`.
    pub shutdown: u8,
    /// UDP: whether datagrams wait in the receive queue.
    pub queued: bool,
    /// `UDP_CORK` (a corked datagram waits in the send queue).
    pub udp_cork: bool,
}

/// Error type for [`InetSocket`] operations: the call that failed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{call}: {errno}")]
pub struct InetError {
    /// The call (and option).
    pub call: String,
    /// What the kernel said.
    pub errno: Errno,
}

fn err(call: impl Into<String>) -> impl FnOnce(Errno) -> InetError {
    let call = call.into();
    move |errno| InetError { call, errno }
}

/// The unspecified address of `family` with port 0.
pub fn unspecified(family: i32) -> SocketAddr {
    if family == libc::AF_INET6 {
        SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0)
    } else {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0)
    }
}

/// An address as `inet_sk_entry` keeps it: the address bytes as 32-bit
/// words in memory order (1 word for IPv4, 4 for IPv6), the port apart.
pub fn addr_words(a: &SocketAddr) -> Vec<u32> {
    let bytes: Vec<u8> = match a.ip() {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    };
    bytes.chunks(4).map(|c| u32::from_ne_bytes([c[0], c[1], c[2], c[3]])).collect()
}

/// The address of `family` from image words and a port (`None`: wrong
/// number of words, or a port above 65535). IPv4 accepts more than one
/// word (CRIU 0.1 wrote 4) and uses the first.
pub fn addr_from_words(family: i32, words: &[u32], port: u32) -> Option<SocketAddr> {
    let port = u16::try_from(port).ok()?;
    let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_ne_bytes()).collect();
    let ip = match family {
        libc::AF_INET if !words.is_empty() => IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3])),
        libc::AF_INET6 if words.len() == 4 => IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(&bytes[..]).ok()?)),
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// Whether an IPv6 address needs an interface to be bound (link-local,
/// and interface/link-local multicast), as the kernel's
/// `__ipv6_addr_needs_scope_id` decides.
fn needs_scope(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V6(v6) => {
            let s = v6.segments();
            (s[0] & 0xffc0) == 0xfe80 || ((s[0] & 0xff00) == 0xff00 && matches!(s[0] & 0x000f, 1 | 2))
        }
        IpAddr::V4(_) => false,
    }
}

fn to_std(a: rustix::net::SocketAddrAny) -> Option<SocketAddr> {
    SocketAddr::try_from(a).ok()
}

fn flag(fd: BorrowedFd<'_>, level: i32, name: i32, what: &str) -> Result<bool, InetError> {
    sockopt::get_u32(fd, level as u32, name as u32).map(|v| v != 0).map_err(err(format!("getsockopt({what})")))
}

fn int(fd: BorrowedFd<'_>, level: i32, name: i32, what: &str) -> Result<u32, InetError> {
    sockopt::get_u32(fd, level as u32, name as u32).map_err(err(format!("getsockopt({what})")))
}

fn set(fd: BorrowedFd<'_>, level: i32, name: i32, v: u32, what: &str) -> Result<(), InetError> {
    sockopt::set_u32(fd, level as u32, name as u32, v).map_err(err(format!("setsockopt({what}, {v})")))
}

impl InetSocket {
    /// Reads socket `fd` (an internet socket; criu-rs's copy of the task's).
    /// `info` is what sock_diag said about it (absent for a socket the
    /// kernel does not list, such as an unbound one).
    pub fn read(fd: BorrowedFd<'_>, info: Option<&InetSockInfo>) -> Result<InetSocket, InetError> {
        let family = int(fd, libc::SOL_SOCKET, libc::SO_DOMAIN, "SO_DOMAIN")? as i32;
        let ty = int(fd, libc::SOL_SOCKET, libc::SO_TYPE, "SO_TYPE")? as i32;
        let proto = int(fd, libc::SOL_SOCKET, libc::SO_PROTOCOL, "SO_PROTOCOL")? as i32;
        let local = rustix::net::getsockname(fd).map_err(err("getsockname"))?;
        let local = to_std(local).unwrap_or_else(|| unspecified(family));
        let peer = match rustix::net::getpeername(fd) {
            Ok(a) => a.and_then(to_std).unwrap_or_else(|| unspecified(family)),
            Err(Errno::NOTCONN) => unspecified(family),
            Err(e) => return Err(err("getpeername")(e)),
        };
        let is_tcp = proto == libc::IPPROTO_TCP && ty == libc::SOCK_STREAM;
        // A raw socket's peer has no port: getpeername says ENOTCONN even
        // after connect, and CRIU keeps it unconnected too.
        let (mut st, mut backlog, mut pending) = (if peer.port() != 0 { state::ESTABLISHED } else { state::CLOSE }, 0, 0);
        let mut tcp = None;
        if is_tcp {
            let ti = tcp_repair::tcp_info(fd).map_err(err("getsockopt(TCP_INFO)"))?;
            st = ti.state as u32;
            if st == state::LISTEN {
                backlog = ti.sacked;
                pending = ti.unacked;
            }
            tcp = Some(TcpOpts {
                nodelay: flag(fd, libc::SOL_TCP, libc::TCP_NODELAY, "TCP_NODELAY")?,
                cork: flag(fd, libc::SOL_TCP, libc::TCP_CORK, "TCP_CORK")?,
                keepcnt: int(fd, libc::SOL_TCP, libc::TCP_KEEPCNT, "TCP_KEEPCNT")?,
                keepidle: int(fd, libc::SOL_TCP, libc::TCP_KEEPIDLE, "TCP_KEEPIDLE")?,
                keepintvl: int(fd, libc::SOL_TCP, libc::TCP_KEEPINTVL, "TCP_KEEPINTVL")?,
            });
        } else if let Some(i) = info {
            st = i.state as u32;
        }
        let shutdown = match info.and_then(|i| i.shutdown) {
            Some(s) => s,
            None => shutdown_by_poll(fd, is_tcp)?,
        };
        let v6 = family == libc::AF_INET6;
        let v6only = v6 && flag(fd, libc::IPPROTO_IPV6, libc::IPV6_V6ONLY, "IPV6_V6ONLY")?;
        let opts = SockOpts::read(fd, family).map_err(|e| InetError { call: format!("getsockopt({})", e.opt), errno: e.errno })?;
        let ifname = if local.port() != 0 && needs_scope(&local.ip()) { opts.bound_dev.clone() } else { None };
        let ip = if v6 {
            IpOpts {
                freebind: flag(fd, libc::IPPROTO_IPV6, libc::IPV6_FREEBIND, "IPV6_FREEBIND")?,
                pktinfo: flag(fd, libc::IPPROTO_IPV6, libc::IPV6_RECVPKTINFO, "IPV6_RECVPKTINFO")?,
                tos: 0,
                ttl: 0,
                raw: None,
            }
        } else {
            IpOpts {
                freebind: flag(fd, libc::IPPROTO_IP, libc::IP_FREEBIND, "IP_FREEBIND")?,
                pktinfo: flag(fd, libc::IPPROTO_IP, libc::IP_PKTINFO, "IP_PKTINFO")?,
                tos: int(fd, libc::IPPROTO_IP, libc::IP_TOS, "IP_TOS")?,
                ttl: int(fd, libc::IPPROTO_IP, libc::IP_TTL, "IP_TTL")?,
                raw: None,
            }
        };
        let ip = IpOpts { raw: if ty == libc::SOCK_RAW { Some(RawOpts::read(fd, family, proto)?) } else { None }, ..ip };
        let udp = ty == libc::SOCK_DGRAM && matches!(proto, libc::IPPROTO_UDP | libc::IPPROTO_UDPLITE);
        let udp_cork = udp && flag(fd, libc::SOL_UDP, libc::UDP_CORK, "UDP_CORK")?;
        // What waits in the receive queue (a socket shut down for reading
        // polls readable without anything queued).
        let queued = udp
            && match info {
                Some(i) => i.rqueue > 0,
                None => shutdown & RCV_SHUTDOWN == 0 && readable(fd)?,
            };
        Ok(InetSocket { family, ty, proto, state: st, local, peer, backlog, pending, v6only, ifname, opts, ip, tcp, shutdown, queued, udp_cork })
    }

    /// Whether this is a TCP connection (a peer port), which restore
    /// rebuilds through repair mode.
    pub fn is_tcp_connection(&self) -> bool {
        self.proto == libc::IPPROTO_TCP && self.peer.port() != 0
    }

    /// `socket(family, type | SOCK_CLOEXEC, proto)` and what must precede
    /// `bind`: `IPV6_V6ONLY`, `SO_REUSEADDR` and `SO_REUSEPORT` on (see the
    /// module documentation), `SO_BINDTODEVICE`, `IP_FREEBIND` /
    /// `IPV6_FREEBIND`.
    pub fn create(&self) -> Result<OwnedFd, InetError> {
        use rustix::net::{AddressFamily, Protocol, SocketFlags, SocketType};
        let proto = std::num::NonZeroU32::new(self.proto as u32).map(Protocol::from_raw);
        let s = rustix::net::socket_with(AddressFamily::from_raw(self.family as u16), SocketType::from_raw(self.ty as u32), SocketFlags::CLOEXEC, proto)
            .map_err(err(format!("socket({}, {}, {})", self.family, self.ty, self.proto)))?;
        let fd = s.as_fd();
        // A raw socket has its protocol as port from the start, which
        // IPV6_V6ONLY refuses (EINVAL).
        if self.family == libc::AF_INET6 && self.ty != libc::SOCK_RAW {
            set(fd, libc::IPPROTO_IPV6, libc::IPV6_V6ONLY, self.v6only as u32, "IPV6_V6ONLY")?;
        }
        set(fd, libc::SOL_SOCKET, libc::SO_REUSEADDR, 1, "SO_REUSEADDR")?;
        set(fd, libc::SOL_SOCKET, libc::SO_REUSEPORT, 1, "SO_REUSEPORT")?;
        if let Some(dev) = &self.opts.bound_dev {
            sockopt::set_bytes(fd, libc::SOL_SOCKET as u32, libc::SO_BINDTODEVICE as u32, dev.as_bytes()).map_err(err(format!("setsockopt(SO_BINDTODEVICE, {dev:?})")))?;
        }
        if self.ip.freebind {
            let (level, name) = if self.family == libc::AF_INET6 { (libc::IPPROTO_IPV6, libc::IPV6_FREEBIND) } else { (libc::IPPROTO_IP, libc::IP_FREEBIND) };
            set(fd, level, name, 1, "IP_FREEBIND")?;
        }
        Ok(s)
    }

    /// The bound address as `bind` wants it (an IPv6 link-local address
    /// with its interface as scope id).
    pub fn bind_addr(&self) -> Result<SocketAddr, InetError> {
        match (self.local, &self.ifname) {
            (SocketAddr::V6(a), Some(dev)) => {
                let index = rustix::net::netdevice::name_to_index(
                    &rustix::net::socket(rustix::net::AddressFamily::INET6, rustix::net::SocketType::DGRAM, None).map_err(err("socket"))?,
                    dev,
                )
                .map_err(err(format!("interface {dev:?}")))?;
                Ok(SocketAddr::V6(SocketAddrV6::new(*a.ip(), a.port(), a.flowinfo(), index)))
            }
            (a, _) => Ok(a),
        }
    }

    /// `bind` (when it was bound), then `listen(backlog)` for a listener
    /// or `connect` for a connected datagram socket. Not for TCP
    /// connections (see [`super::tcp_repair`]).
    pub fn bind_listen_connect(&self, fd: BorrowedFd<'_>) -> Result<(), InetError> {
        // A ping socket's "port" is its echo id, which the kernel picks at
        // the first send; CRIU does not bind them again either.
        let ping = self.ty == libc::SOCK_DGRAM && matches!(self.proto, libc::IPPROTO_ICMP | libc::IPPROTO_ICMPV6);
        if self.local.port() != 0 && !ping {
            let addr = self.bind_addr()?;
            let v6 = self.family == libc::AF_INET6;
            if v6 && !self.ip.freebind {
                set(fd, libc::IPPROTO_IPV6, libc::IPV6_FREEBIND, 1, "IPV6_FREEBIND")?;
            }
            rustix::net::bind(fd, &addr).map_err(err(format!("bind({addr})")))?;
            if v6 && !self.ip.freebind {
                set(fd, libc::IPPROTO_IPV6, libc::IPV6_FREEBIND, 0, "IPV6_FREEBIND")?;
            }
        }
        if self.state == state::LISTEN {
            rustix::net::listen(fd, self.backlog as i32).map_err(err(format!("listen({})", self.backlog)))?;
        } else if self.peer.port() != 0 && self.proto != libc::IPPROTO_TCP && !ping {
            rustix::net::connect(fd, &self.peer).map_err(err(format!("connect({})", self.peer)))?;
        }
        Ok(())
    }

    /// Sets the options and the shutdown state (after bind/listen/connect).
    /// `SO_REUSEADDR` stays on: [`set_reuseaddr`] sets it last.
    pub fn set_options(&self, fd: BorrowedFd<'_>) -> Result<(), InetError> {
        self.opts.apply(fd).map_err(|e| InetError { call: format!("setsockopt({})", e.opt), errno: e.errno })?;
        if self.family == libc::AF_INET6 {
            if self.ip.freebind {
                set(fd, libc::IPPROTO_IPV6, libc::IPV6_FREEBIND, 1, "IPV6_FREEBIND")?;
            }
            if self.ip.pktinfo {
                set(fd, libc::IPPROTO_IPV6, libc::IPV6_RECVPKTINFO, 1, "IPV6_RECVPKTINFO")?;
            }
        } else {
            if self.ip.freebind {
                set(fd, libc::IPPROTO_IP, libc::IP_FREEBIND, 1, "IP_FREEBIND")?;
            }
            if self.ip.pktinfo {
                set(fd, libc::IPPROTO_IP, libc::IP_PKTINFO, 1, "IP_PKTINFO")?;
            }
            if self.ip.tos != 0 {
                set(fd, libc::IPPROTO_IP, libc::IP_TOS, self.ip.tos, "IP_TOS")?;
            }
            if self.ip.ttl != 0 {
                set(fd, libc::IPPROTO_IP, libc::IP_TTL, self.ip.ttl, "IP_TTL")?;
            }
        }
        if let Some(r) = &self.ip.raw {
            r.apply(fd, self.family, self.proto)?;
        }
        if let Some(t) = &self.tcp {
            if t.nodelay {
                set(fd, libc::SOL_TCP, libc::TCP_NODELAY, 1, "TCP_NODELAY")?;
            }
            if t.cork {
                set(fd, libc::SOL_TCP, libc::TCP_CORK, 1, "TCP_CORK")?;
            }
            if t.keepcnt != 0 {
                set(fd, libc::SOL_TCP, libc::TCP_KEEPCNT, t.keepcnt, "TCP_KEEPCNT")?;
            }
            if t.keepidle != 0 {
                set(fd, libc::SOL_TCP, libc::TCP_KEEPIDLE, t.keepidle, "TCP_KEEPIDLE")?;
            }
            if t.keepintvl != 0 {
                set(fd, libc::SOL_TCP, libc::TCP_KEEPINTVL, t.keepintvl, "TCP_KEEPINTVL")?;
            }
        }
        if self.shutdown != 0 && !self.is_tcp_connection() {
            let how = match self.shutdown & 3 {
                RCV_SHUTDOWN => rustix::net::Shutdown::Read,
                SEND_SHUTDOWN => rustix::net::Shutdown::Write,
                _ => rustix::net::Shutdown::Both,
            };
            // An unconnected socket answers ENOTCONN but keeps the state.
            match rustix::net::shutdown(fd, how) {
                Ok(()) | Err(Errno::NOTCONN) => {}
                Err(e) => return Err(err(format!("shutdown({how:?})"))(e)),
            }
        }
        Ok(())
    }
}

/// `setsockopt(SO_REUSEADDR, on)`: the dumped value, once every socket of
/// the restore is bound (and after repair mode is off: leaving repair mode
/// clears it).
pub fn set_reuseaddr(fd: impl AsFd, on: bool) -> Result<(), InetError> {
    set(fd.as_fd(), libc::SOL_SOCKET, libc::SO_REUSEADDR, on as u32, "SO_REUSEADDR")
}

/// `SO_REUSEADDR` and `SO_REUSEPORT` as dumped, once every socket of the
/// restore is bound (both were on for the binds).
pub fn set_reuse(fd: impl AsFd, addr: bool, port: bool) -> Result<(), InetError> {
    set_reuseaddr(&fd, addr)?;
    set(fd.as_fd(), libc::SOL_SOCKET, libc::SO_REUSEPORT, port as u32, "SO_REUSEPORT")
}

/// The shutdown state of a socket sock_diag does not list (neither bound
/// nor connected), from `poll`: `POLLRDHUP` shows the reading side shut
/// down. A closed TCP socket always polls `POLLHUP`, so only a datagram
/// socket's `POLLHUP` (both sides shut) says more.
fn shutdown_by_poll(fd: BorrowedFd<'_>, tcp: bool) -> Result<u8, InetError> {
    use rustix::event::{poll, PollFd, PollFlags};
    let mut p = [PollFd::new(&fd, PollFlags::RDHUP | PollFlags::HUP)];
    poll(&mut p, Some(&rustix::time::Timespec { tv_sec: 0, tv_nsec: 0 })).map_err(err("poll"))?;
    let r = p[0].revents();
    let mut s = 0;
    if r.contains(PollFlags::RDHUP) {
        s |= RCV_SHUTDOWN;
    }
    if !tcp && r.contains(PollFlags::HUP) {
        s |= RCV_SHUTDOWN | SEND_SHUTDOWN;
    }
    Ok(s)
}

/// Whether something waits to be read (`POLLIN`).
fn readable(fd: BorrowedFd<'_>) -> Result<bool, InetError> {
    use rustix::event::{poll, PollFd, PollFlags};
    let mut p = [PollFd::new(&fd, PollFlags::IN)];
    poll(&mut p, Some(&rustix::time::Timespec { tv_sec: 0, tv_nsec: 0 })).map_err(err("poll"))?;
    Ok(p[0].revents().contains(PollFlags::IN))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream, UdpSocket};

    fn fd_of(s: &impl AsFd) -> BorrowedFd<'_> {
        s.as_fd()
    }

    /// Reads a socket, makes it again from what was read, reads that.
    fn again(s: &InetSocket) -> (OwnedFd, InetSocket) {
        let fd = s.create().unwrap();
        s.bind_listen_connect(fd.as_fd()).unwrap();
        s.set_options(fd.as_fd()).unwrap();
        set_reuse(&fd, s.opts.reuseaddr, s.opts.reuseport).unwrap();
        let r = InetSocket::read(fd.as_fd(), None).unwrap();
        (fd, r)
    }

    #[test]
    fn words_are_memory_order_as_criu_writes_them() {
        let a: SocketAddr = "127.0.0.1:80".parse().unwrap();
        assert_eq!(addr_words(&a), vec![0x0100_007f]);
        assert_eq!(addr_from_words(libc::AF_INET, &[0x0100_007f], 80), Some(a));
        let b: SocketAddr = "[::ffff:127.0.0.1]:5".parse().unwrap();
        assert_eq!(addr_from_words(libc::AF_INET6, &addr_words(&b), 5), Some(b));
        assert_eq!(addr_from_words(libc::AF_INET6, &[1, 2], 5), None);
        assert_eq!(addr_from_words(libc::AF_INET, &[1], 70000), None);
    }

    #[test]
    fn a_listener_comes_back_listening_with_its_options() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let fd = fd_of(&l);
        set(fd, libc::SOL_SOCKET, libc::SO_KEEPALIVE, 1, "").unwrap();
        set(fd, libc::SOL_TCP, libc::TCP_NODELAY, 1, "").unwrap();
        set(fd, libc::SOL_TCP, libc::TCP_KEEPIDLE, 77, "").unwrap();
        set(fd, libc::IPPROTO_IP, libc::IP_TOS, 0x10, "").unwrap();
        let s = InetSocket::read(fd, None).unwrap();
        assert_eq!((s.state, s.backlog, s.local), (state::LISTEN, 128, l.local_addr().unwrap()));
        assert!(s.opts.reuseaddr, "std sets SO_REUSEADDR on listeners");
        drop(l);
        let (fd, r) = again(&s);
        assert_eq!(r, s);
        let c = TcpStream::connect(s.local).unwrap();
        let (a, _) = rustix::net::accept(&fd).map(|a| (a, ())).unwrap();
        assert_eq!(rustix::net::getpeername(&a).ok().flatten().and_then(to_std), Some(c.local_addr().unwrap()));
    }

    #[test]
    fn v6_only_and_mapped_listeners_and_udp_come_back() {
        let s6 = rustix::net::socket(rustix::net::AddressFamily::INET6, rustix::net::SocketType::STREAM, None).unwrap();
        set(s6.as_fd(), libc::IPPROTO_IPV6, libc::IPV6_V6ONLY, 0, "").unwrap();
        rustix::net::bind(&s6, &"[::ffff:127.0.0.1]:0".parse::<SocketAddr>().unwrap()).unwrap();
        rustix::net::listen(&s6, 3).unwrap();
        let m = InetSocket::read(s6.as_fd(), None).unwrap();
        assert!(!m.v6only);
        assert_eq!(m.backlog, 3);
        drop(s6);
        let (_fd, r) = again(&m);
        assert_eq!(r, m);
        // A v4 client reaches the mapped listener.
        let port = m.local.port();
        TcpStream::connect(("127.0.0.1", port)).unwrap();

        let u = UdpSocket::bind("[::1]:0").unwrap();
        let peer = UdpSocket::bind("[::1]:0").unwrap();
        u.connect(peer.local_addr().unwrap()).unwrap();
        set(fd_of(&u), libc::SOL_SOCKET, libc::SO_BROADCAST, 1, "").unwrap();
        let us = InetSocket::read(fd_of(&u), None).unwrap();
        assert_eq!((us.state, us.peer), (state::ESTABLISHED, peer.local_addr().unwrap()));
        assert!(!us.queued);
        drop(u);
        let (ufd, r) = again(&us);
        assert_eq!(r, us);
        rustix::net::send(&ufd, b"dgram", rustix::net::SendFlags::empty()).unwrap();
        let mut buf = [0u8; 8];
        let (n, from) = peer.recv_from(&mut buf).unwrap();
        assert_eq!((&buf[..n], from), (&b"dgram"[..], us.local));
        // Queued datagrams are seen.
        peer.send_to(b"x", us.local).unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while !InetSocket::read(ufd.as_fd(), None).unwrap().queued {
            assert!(std::time::Instant::now() < deadline);
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    /// Two listeners share a port through SO_REUSEPORT, which the first
    /// turned off after listening (zdtm socket-tcp-reuseport): both bind
    /// again (the option is on for every bind) and get their own value
    /// back after.
    #[test]
    fn listeners_sharing_a_port_come_back_whatever_their_reuseport() {
        let listen_on = |port: u16| {
            let s = rustix::net::socket(rustix::net::AddressFamily::INET, rustix::net::SocketType::STREAM, None).unwrap();
            set(s.as_fd(), libc::SOL_SOCKET, libc::SO_REUSEPORT, 1, "").unwrap();
            rustix::net::bind(&s, &SocketAddr::from(([127, 0, 0, 1], port))).unwrap();
            rustix::net::listen(&s, 5).unwrap();
            s
        };
        let a = listen_on(0);
        let port = to_std(rustix::net::getsockname(&a).unwrap()).unwrap().port();
        let b = listen_on(port);
        set(a.as_fd(), libc::SOL_SOCKET, libc::SO_REUSEPORT, 0, "").unwrap();
        let (sa, sb) = (InetSocket::read(a.as_fd(), None).unwrap(), InetSocket::read(b.as_fd(), None).unwrap());
        assert_eq!((sa.opts.reuseport, sb.opts.reuseport, sa.local), (false, true, sb.local));
        drop((a, b));
        let made: Vec<OwnedFd> = [&sa, &sb]
            .iter()
            .map(|s| {
                let fd = s.create().unwrap();
                s.bind_listen_connect(fd.as_fd()).unwrap();
                s.set_options(fd.as_fd()).unwrap();
                fd
            })
            .collect();
        for (fd, s) in made.iter().zip([&sa, &sb]) {
            set_reuse(fd, s.opts.reuseaddr, s.opts.reuseport).unwrap();
            assert_eq!(&InetSocket::read(fd.as_fd(), None).unwrap(), s);
        }
    }

    /// Raw sockets (zdtm sock_ip_opts00): protocol, bound address, IP
    /// options and raw options (header included, no defrag, ICMP filter).
    #[test]
    fn raw_sockets_come_back_with_their_options() {
        use rustix::net::{AddressFamily, Protocol, SocketType};
        let raw = |fam, proto: i32| rustix::net::socket(fam, SocketType::RAW, std::num::NonZeroU32::new(proto as u32).map(Protocol::from_raw)).unwrap();
        let udp4 = raw(AddressFamily::INET, libc::IPPROTO_UDP);
        set(udp4.as_fd(), libc::IPPROTO_IP, libc::IP_FREEBIND, 1, "").unwrap();
        set(udp4.as_fd(), libc::IPPROTO_IP, libc::IP_TTL, 32, "").unwrap();
        set(udp4.as_fd(), libc::IPPROTO_IP, libc::IP_HDRINCL, 1, "").unwrap();
        set(udp4.as_fd(), libc::IPPROTO_IP, IP_NODEFRAG, 1, "").unwrap();
        let icmp = raw(AddressFamily::INET, libc::IPPROTO_ICMP);
        rustix::net::bind(&icmp, &"127.0.0.1:0".parse::<SocketAddr>().unwrap()).unwrap();
        sockopt::set_u32(&icmp, SOL_RAW, ICMP_FILTER, 0x5).unwrap();
        let icmp6 = raw(AddressFamily::INET6, libc::IPPROTO_ICMPV6);
        sockopt::set(&icmp6, SOL_ICMPV6, ICMP_FILTER, &[1u32, 2, 3, 4, 5, 6, 7, 8]).unwrap();
        let udp6 = raw(AddressFamily::INET6, libc::IPPROTO_UDP);
        set(udp6.as_fd(), libc::IPPROTO_IPV6, libc::IPV6_RECVPKTINFO, 1, "").unwrap();
        set(udp6.as_fd(), libc::IPPROTO_IPV6, IPV6_HDRINCL, 1, "").unwrap();
        for s in [&udp4, &icmp, &icmp6, &udp6] {
            let r = InetSocket::read(s.as_fd(), None).unwrap();
            assert_eq!((r.ty, r.state), (libc::SOCK_RAW, state::CLOSE));
            assert!(r.ip.raw.is_some());
            let (_fd, again) = again(&r);
            assert_eq!(again, r);
        }
        let r = InetSocket::read(icmp.as_fd(), None).unwrap();
        assert_eq!((r.local.ip(), r.ip.raw.unwrap().icmp_filter), ("127.0.0.1".parse::<IpAddr>().unwrap(), vec![5]));
        let r = InetSocket::read(udp4.as_fd(), None).unwrap();
        assert_eq!((r.ip.ttl, r.ip.freebind, r.ip.raw.unwrap()), (32, true, RawOpts { hdrincl: true, nodefrag: true, icmp_filter: vec![] }));
    }

    /// ICMP ping sockets come back (unbound: the echo id is the kernel's
    /// pick at the first send) and can ping.
    #[test]
    fn ping_sockets_come_back_and_ping() {
        // In a network namespace of this thread's own, where ping sockets
        // are allowed (a sysctl of the namespace) and loopback is up.
        std::thread::spawn(ping_in_own_netns).join().unwrap();
    }

    fn ping_in_own_netns() {
        use rustix::net::{AddressFamily, Protocol, SocketType};
        // SAFETY: only this thread's network namespace changes; it owns
        // no socket yet and ends with the test.
        unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::NEWNET) }.unwrap();
        // net sysctls are those of the opener's namespace.
        std::fs::write("/proc/sys/net/ipv4/ping_group_range", "0 2147483647").unwrap();
        let ctl = rustix::net::socket(AddressFamily::INET, SocketType::DGRAM, None).unwrap();
        // SAFETY: ifreq is plain data; SIOCGIFFLAGS/SIOCSIFFLAGS read and
        // write its name and flags only.
        unsafe {
            let mut ifr: libc::ifreq = std::mem::zeroed();
            ifr.ifr_name[..2].copy_from_slice(&[b'l' as libc::c_char, b'o' as libc::c_char]);
            let raw = std::os::fd::AsRawFd::as_raw_fd(&ctl);
            assert_eq!(libc::ioctl(raw, libc::SIOCGIFFLAGS, &mut ifr), 0);
            ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as i16;
            assert_eq!(libc::ioctl(raw, libc::SIOCSIFFLAGS, &ifr), 0);
        }
        let icmp = std::num::NonZeroU32::new(libc::IPPROTO_ICMP as u32).map(Protocol::from_raw);
        let s = rustix::net::socket(AddressFamily::INET, SocketType::DGRAM, icmp).unwrap();
        rustix::net::sendto(&s, &[8, 0, 0, 0, 0, 0, 0, 1], rustix::net::SendFlags::empty(), &"127.0.0.1:0".parse::<SocketAddr>().unwrap()).unwrap();
        let r = InetSocket::read(s.as_fd(), None).unwrap();
        assert_eq!((r.ty, r.proto), (libc::SOCK_DGRAM, libc::IPPROTO_ICMP));
        let (fd, _) = again(&r);
        rustix::net::sendto(&fd, &[8, 0, 0, 0, 0, 0, 0, 2], rustix::net::SendFlags::empty(), &"127.0.0.1:0".parse::<SocketAddr>().unwrap()).unwrap();
        let mut buf = [0u8; 64];
        rustix::net::sockopt::set_socket_timeout(&fd, rustix::net::sockopt::Timeout::Recv, Some(std::time::Duration::from_secs(20))).unwrap();
        let n = rustix::net::recv(&fd, &mut buf, rustix::net::RecvFlags::empty()).unwrap().0;
        assert!(n >= 8 && buf[0] == 0, "an echo reply: {:?}", &buf[..n]);
    }

    #[test]
    fn an_unbound_tcp_socket_is_not_taken_for_shut_down() {
        let t = rustix::net::socket(rustix::net::AddressFamily::INET, rustix::net::SocketType::STREAM, None).unwrap();
        assert_eq!(InetSocket::read(t.as_fd(), None).unwrap().shutdown, 0);
        rustix::net::shutdown(&t, rustix::net::Shutdown::Read).unwrap_err();
        assert_eq!(InetSocket::read(t.as_fd(), None).unwrap().shutdown, RCV_SHUTDOWN);
    }

    #[test]
    fn shutdown_of_a_udp_socket_comes_back() {
        let u = UdpSocket::bind("127.0.0.1:0").unwrap();
        u.connect("127.0.0.1:9").unwrap();
        rustix::net::shutdown(&u, rustix::net::Shutdown::Read).unwrap();
        let mut d = super::super::diag::DiagSocket::open().unwrap();
        let ino = rustix::fs::fstat(&u).unwrap().st_ino as u32;
        let info = super::super::inet_diag::sockets(&mut d, libc::AF_INET, libc::IPPROTO_UDP).unwrap()[&ino];
        let s = InetSocket::read(fd_of(&u), Some(&info)).unwrap();
        assert_eq!(s.shutdown, RCV_SHUTDOWN);
        drop(u);
        let (fd, _) = again(&s);
        let ino = rustix::fs::fstat(&fd).unwrap().st_ino as u32;
        let info = super::super::inet_diag::sockets(&mut d, libc::AF_INET, libc::IPPROTO_UDP).unwrap()[&ino];
        assert_eq!(info.shutdown, Some(RCV_SHUTDOWN));
    }
}
