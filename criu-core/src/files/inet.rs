//! Internet sockets (`FD_TYPES__INETSK`): TCP, UDP and UDP-Lite over IPv4
//! and IPv6, as CRIU writes them: an `inet_sk_entry` in `files.img`
//! (addresses, state, backlog, `sk_opts_entry`, `ip_opts_entry`,
//! `tcp_opts_entry`, shutdown) and, for an established connection, its
//! sequence numbers, options, window and queues in `tcp-stream-INO.img`.
//!
//! Dump: [`InetSocket::read`] on criu-rs's `pidfd_getfd` copy of the
//! socket, with sock_diag's word on its shutdown state. Raw sockets keep
//! their protocol, bound address and options (`IP_HDRINCL`, `IP_NODEFRAG`,
//! ICMP filters), not what waits in their queues (copies of the host's
//! traffic), as CRIU. ICMP ping sockets come back unbound, as with CRIU
//! (the kernel picks their echo id at the first send). Refused by name:
//! MPTCP sockets; a listener with connections not accepted
//! yet and a UDP socket with datagrams waiting (unless `--skip-in-flight`,
//! which leaves them out, as CRIU does); a corked UDP socket; a TCP
//! connection without `--tcp-established` (or `--tcp-close`), or in a state
//! other than ESTABLISHED or half-closed (FIN_WAIT1/2, CLOSE_WAIT,
//! LAST_ACK, CLOSING: see [`tcp_repair`]). A connection is locked and put in repair mode
//! through the dump's [`DumpSockets`], which undoes both if the dump fails
//! or the tree keeps running.
//!
//! Restore: the socket is created in criu-rs with `SO_REUSEADDR` and
//! `SO_REUSEPORT` on, then
//! bound and listening or connected, or, for a connection, rebuilt in
//! repair mode ([`tcp_repair::restore`]); [`RestoredSockets`] (through
//! [`super::Later`]) puts the dumped `SO_REUSEADDR`/`SO_REUSEPORT` back once everything is
//! open, brings connections live just before the tree runs and lifts the
//! network lock after.

use super::fdtable::set_status_flags;
use super::{CollectCtx, FdKind, FdProbe, FileDesc, FileDumpError, FilesSink, LoadCtx, OpenCtx, Opened};
use crate::images::pb::{self, FdTypes};
use crate::images::ImageError;
use crate::net::inet::{addr_from_words, addr_words, InetSocket, IpOpts, RawOpts, TcpOpts};
use crate::net::lock::{Conn, LockMethod};
use crate::net::restore_state::{GoLive, BIG_BUF};
use crate::net::sockopts::SockOpts;
use crate::net::tcp_repair::{self, state, TcpStream};
use crate::restore::error::{RestoreError, Result, SysContext};
use rustix::fd::AsFd;
use std::os::unix::fs::MetadataExt;

/// The kind.
pub struct Inet;

/// The protocol names (`system.sockprotoname`) of the sockets this kind
/// takes: the ones it dumps, and those it refuses by name.
const NAMES: [&str; 12] = ["TCP", "TCPv6", "UDP", "UDPv6", "UDP-Lite", "UDPLITEv6", "RAW", "RAWv6", "PING", "PINGv6", "MPTCP", "MPTCPv6"];

/// An internet socket as dumped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InetDumped {
    /// The socket's inode (names its `tcp-stream` image).
    pub ino: u32,
    /// What the socket is.
    pub sock: InetSocket,
    /// An established connection's state (`--tcp-established`).
    pub stream: Option<TcpStream>,
}

/// How to recreate an internet socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InetPlan {
    /// File id.
    pub id: u32,
    /// The dumped socket's inode.
    pub ino: u32,
    /// What to make.
    pub sock: InetSocket,
    /// A connection to rebuild (None for one restored closed).
    pub stream: Option<TcpStream>,
    /// Open flags (`O_NONBLOCK`).
    pub flags: i32,
    /// The dump's network lock and run id (connections only).
    pub lock: (LockMethod, String),
}

fn refuse(p: &FdProbe, what: String) -> FileDumpError {
    FileDumpError::UnsupportedState { at: p.at(), what }
}

impl FdKind for Inet {
    const FD_TYPE: FdTypes = FdTypes::Inetsk;
    type Dumped = InetDumped;
    type Plan = InetPlan;
    type OpenState = ();

    fn claims(p: &FdProbe) -> bool {
        p.socket_proto().is_some_and(|n| NAMES.contains(&n.as_str()))
    }

    fn collect(p: &FdProbe, cx: &mut CollectCtx<'_>) -> std::result::Result<InetDumped, FileDumpError> {
        let name = p.socket_proto().unwrap_or_default();
        match name.as_str() {
            "MPTCP" | "MPTCPv6" => return Err(refuse(p, format!("multipath TCP socket ({name}); Go programs can do without it (GODEBUG=multipathtcp=0)"))),
            _ => {}
        }
        let fd = cx.copy_fd(p)?;
        let ino = p.md.ino() as u32;
        let sys = |what: String| move |errno| FileDumpError::Sys { at: p.at(), what, errno };
        let family = rustix::net::sockopt::socket_domain(&fd).map_err(sys("SO_DOMAIN".into()))?.as_raw() as i32;
        let proto = crate::net::sockopt::get_u32(&fd, libc::SOL_SOCKET as u32, libc::SO_PROTOCOL as u32).map_err(sys("SO_PROTOCOL".into()))? as i32;
        // sock_diag lists raw sockets by protocol only on request (CRIU's
        // net_diag_raw); what it would add (shutdown, queues) does not
        // apply to them.
        let raw = matches!(name.as_str(), "RAW" | "RAWv6" | "PING" | "PINGv6");
        let info = if raw { None } else { cx.sockets.inet_info(cx.pid, family, proto, ino).map_err(|e| refuse(p, format!("sock_diag: {e}")))? };
        let sock = InetSocket::read(fd.as_fd(), info.as_ref()).map_err(|e| FileDumpError::Sys { at: p.at(), what: e.call, errno: e.errno })?;
        let opts = cx.sockets.opts;
        let what = describe(&sock);
        if sock.state == state::LISTEN && sock.pending > 0 && !opts.skip_in_flight {
            return Err(refuse(p, format!("{what} has {} connection(s) not accepted yet; --skip-in-flight leaves them out", sock.pending)));
        }
        if sock.queued && !opts.skip_in_flight {
            return Err(refuse(p, format!("{what} has datagrams waiting to be read; --skip-in-flight leaves them out")));
        }
        if sock.udp_cork {
            return Err(refuse(p, format!("{what} is corked (UDP_CORK)")));
        }
        let mut stream = None;
        if sock.proto == libc::IPPROTO_TCP && sock.ty == libc::SOCK_STREAM {
            match sock.state {
                state::LISTEN | state::CLOSE => {}
                _ if !sock.is_tcp_connection() => return Err(refuse(p, format!("{what} (only listening, closed, established and half-closed TCP sockets are dumped)"))),
                _ if opts.tcp_close => {}
                st if state::repairable(st) && opts.tcp_established => {
                    let conn = Conn { local: sock.local, peer: sock.peer };
                    let repaired = cx.sockets.repair(fd, conn, sock.opts.reuseaddr).map_err(|e| refuse(p, format!("{what}: {e}")))?;
                    stream = Some(tcp_repair::save(repaired).map_err(|e| refuse(p, format!("{what}: {e}")))?);
                }
                st if state::repairable(st) => return Err(refuse(p, format!("{what}; pass --tcp-established to dump it"))),
                _ => return Err(refuse(p, format!("{what} (only listening, closed, established and half-closed TCP sockets are dumped)"))),
            }
        }
        tracing::debug!(pid = cx.pid, fd = p.fd, ino, "{what}");
        Ok(InetDumped { ino, sock, stream })
    }

    fn write(f: &FileDesc, d: &InetDumped, sink: &mut FilesSink<'_>) -> std::result::Result<(), ImageError> {
        let s = &d.sock;
        let v6 = s.family == libc::AF_INET6;
        let ip = pb::IpOptsEntry {
            freebind: s.ip.freebind.then_some(true),
            raw: s.ip.raw.as_ref().map(|r| pb::IpOptsRawEntry {
                hdrincl: r.hdrincl.then_some(true),
                nodefrag: r.nodefrag.then_some(true),
                checksum: None,
                icmpv_filter: r.icmp_filter.clone(),
            }),
            pktinfo: s.ip.pktinfo.then_some(true),
            tos: (s.ip.tos != 0).then_some(s.ip.tos),
            ttl: (s.ip.ttl != 0).then_some(s.ip.ttl),
        };
        let tcp_opts = s.tcp.map(|t| pb::TcpOptsEntry {
            cork: t.cork.then_some(true),
            nodelay: t.nodelay.then_some(true),
            keepcnt: (t.keepcnt != 0).then_some(t.keepcnt),
            keepidle: (t.keepidle != 0).then_some(t.keepidle),
            keepintvl: (t.keepintvl != 0).then_some(t.keepintvl),
        });
        // As CRIU: absent when not shut down (its restore would call
        // shutdown(2) with an invalid "how" for NONE).
        let shutdown = (s.shutdown & 3 != 0).then_some(s.shutdown as i32 & 3);
        let ie = pb::InetSkEntry {
            id: Some(f.id),
            ino: Some(d.ino),
            family: Some(s.family as u32),
            r#type: Some(s.ty as u32),
            proto: Some(s.proto as u32),
            state: Some(s.state),
            src_port: Some(s.local.port() as u32),
            dst_port: Some(s.peer.port() as u32),
            flags: Some(f.flags),
            backlog: Some(s.backlog),
            src_addr: addr_words(&s.local),
            dst_addr: addr_words(&s.peer),
            fown: Some(f.fown.entry()),
            opts: Some(s.opts.to_entry()),
            v6only: v6.then_some(s.v6only),
            ip_opts: Some(ip),
            ifname: s.ifname.clone(),
            ns_id: None,
            shutdown,
            tcp_opts,
        };
        sink.push(pb::FileEntry { r#type: Some(FdTypes::Inetsk as i32), id: Some(f.id), isk: Some(ie), ..Default::default() });
        if let Some(stream) = &d.stream {
            crate::net::tcp_stream::write(sink.dir, d.ino, stream)?;
        }
        Ok(())
    }

    fn load(e: &pb::FileEntry, cx: &LoadCtx<'_>) -> Result<InetPlan> {
        let id = e.id.unwrap_or_default();
        let ie = e.isk.as_ref().ok_or_else(|| cx.bad(format!("file {id:#x} is INETSK without inet_sk_entry")))?;
        let bad = |what: String| cx.bad(format!("inet socket {id:#x}: {what}"));
        let family = ie.family.unwrap_or_default() as i32;
        let (ty, proto) = (ie.r#type.unwrap_or_default() as i32, ie.proto.unwrap_or_default() as i32);
        if family != libc::AF_INET && family != libc::AF_INET6 {
            return Err(bad(format!("family {family}")));
        }
        match (ty, proto) {
            (libc::SOCK_STREAM, libc::IPPROTO_TCP) | (libc::SOCK_DGRAM, libc::IPPROTO_UDP | libc::IPPROTO_UDPLITE) => {}
            (libc::SOCK_RAW, 0..=255) => {}
            (libc::SOCK_DGRAM, libc::IPPROTO_ICMP | libc::IPPROTO_ICMPV6) => {}
            _ => return Err(bad(format!("type {ty} with protocol {proto}"))),
        }
        let local = addr_from_words(family, &ie.src_addr, ie.src_port.unwrap_or_default()).ok_or_else(|| bad(format!("source address {:?} port {:?}", ie.src_addr, ie.src_port)))?;
        let peer = addr_from_words(family, &ie.dst_addr, ie.dst_port.unwrap_or_default()).ok_or_else(|| bad(format!("destination address {:?} port {:?}", ie.dst_addr, ie.dst_port)))?;
        let st = ie.state.unwrap_or_default();
        let opts = SockOpts::from_entry(ie.opts.as_ref().ok_or_else(|| bad("no sk_opts_entry".into()))?).map_err(bad)?;
        let backlog = ie.backlog.unwrap_or_default();
        if st == state::LISTEN && (proto != libc::IPPROTO_TCP || backlog > i32::MAX as u32) {
            return Err(bad(format!("listening with protocol {proto}, backlog {backlog}")));
        }
        let ip = ie.ip_opts.as_ref().map_or(IpOpts::default(), |o| IpOpts {
            freebind: o.freebind.unwrap_or(false),
            pktinfo: o.pktinfo.unwrap_or(false),
            tos: o.tos.unwrap_or(0),
            ttl: o.ttl.unwrap_or(0),
            raw: (ty == libc::SOCK_RAW).then(|| {
                let r = o.raw.clone().unwrap_or_default();
                RawOpts { hdrincl: r.hdrincl.unwrap_or(false), nodefrag: r.nodefrag.unwrap_or(false), icmp_filter: r.icmpv_filter }
            }),
        });
        if ip.tos > 255 || ip.ttl > 255 {
            return Err(bad(format!("IP_TOS {} / IP_TTL {}", ip.tos, ip.ttl)));
        }
        let tcp = (ty == libc::SOCK_STREAM).then(|| {
            let t = ie.tcp_opts.clone().unwrap_or_default();
            TcpOpts { nodelay: t.nodelay.unwrap_or(false), cork: t.cork.unwrap_or(false), keepcnt: t.keepcnt.unwrap_or(0), keepidle: t.keepidle.unwrap_or(0), keepintvl: t.keepintvl.unwrap_or(0) }
        });
        let sock = InetSocket {
            family,
            ty,
            proto,
            state: st,
            local,
            peer,
            backlog,
            pending: 0,
            v6only: ie.v6only.unwrap_or(false),
            ifname: ie.ifname.clone().filter(|n| !n.is_empty()),
            opts,
            ip,
            tcp,
            shutdown: ie.shutdown.unwrap_or(0) as u8 & 3,
            queued: false,
            udp_cork: false,
        };
        let inv = cx.images.inventory();
        let lock = (
            LockMethod::from_inventory(inv.and_then(|i| i.network_lock_method)).ok_or_else(|| bad(format!("network lock method {:?} in the inventory", inv.and_then(|i| i.network_lock_method))))?,
            inv.and_then(|i| i.dump_criu_run_id.clone()).unwrap_or_default(),
        );
        let mut stream = None;
        if sock.is_tcp_connection() {
            let dumped_closed = inv.and_then(|i| i.tcp_close).unwrap_or(false);
            if dumped_closed && !cx.opts.tcp_close {
                return Err(cx.unsupported(format!("TCP connection {local} → {peer} dumped with --tcp-close: pass --tcp-close")));
            }
            if !cx.opts.tcp_established && !cx.opts.tcp_close {
                return Err(cx.unsupported(format!("TCP connection {local} → {peer}: pass --tcp-established to restore it")));
            }
            if !dumped_closed && !cx.opts.tcp_close {
                if !state::repairable(st) {
                    return Err(cx.unsupported(format!("TCP connection {local} → {peer} in state {}", state::name(st))));
                }
                let ino = ie.ino.unwrap_or_default();
                stream = Some(crate::net::tcp_stream::read(cx.images, ino, st).map_err(|e| match e {
                    crate::net::tcp_stream::TcpStreamImageError::Image(i) => RestoreError::from(i),
                    crate::net::tcp_stream::TcpStreamImageError::Bad { path, problem } => RestoreError::bad(path, problem),
                })?);
            }
        }
        Ok(InetPlan { id, ino: ie.ino.unwrap_or_default(), sock, stream, flags: ie.flags.unwrap_or_default() as i32, lock })
    }

    fn open(p: &InetPlan, _st: &mut (), cx: &OpenCtx<'_>) -> Result<Opened> {
        let s = &p.sock;
        let what = || format!("{} (id {:#x})", describe(s), p.id);
        let call = |e: crate::net::inet::InetError| RestoreError::sys(format!("{}: {}", what(), e.call), e.errno);
        let fd = s.create().map_err(call)?;
        let mut later = cx.later.borrow_mut();
        let sockets = &mut later.sockets;
        if s.is_tcp_connection() {
            let conn = Conn { local: s.local, peer: s.peer };
            sockets.set_lock(p.lock.0, &p.lock.1);
            match &p.stream {
                None => {
                    // --tcp-close: a socket that was never connected, shut down.
                    match rustix::net::shutdown(&fd, rustix::net::Shutdown::Both) {
                        Ok(()) | Err(rustix::io::Errno::NOTCONN) => {}
                        Err(e) => return Err(RestoreError::sys(format!("{}: shutdown", what()), e)),
                    }
                    s.set_options(fd.as_fd()).map_err(call)?;
                    sockets.closed(conn);
                }
                Some(stream) => {
                    let rep = |e: tcp_repair::RepairError| RestoreError::Prepare(format!("{}: {e}", what()));
                    tcp_repair::repair_on(&fd).map_err(rep)?;
                    // Room for the queues; the dumped sizes come back when
                    // the connection goes live.
                    for (opt, name) in [(libc::SO_SNDBUFFORCE, "SO_SNDBUFFORCE"), (libc::SO_RCVBUFFORCE, "SO_RCVBUFFORCE")] {
                        crate::net::sockopt::set_u32(&fd, libc::SOL_SOCKET as u32, opt as u32, BIG_BUF).sys(|| format!("{}: {name}", what()))?;
                    }
                    tcp_repair::restore(&fd, stream, &s.local, &s.peer).map_err(rep)?;
                    let mut big = s.clone();
                    (big.opts.sndbuf, big.opts.rcvbuf) = (BIG_BUF * 2, BIG_BUF * 2);
                    big.set_options(fd.as_fd()).map_err(call)?;
                    let copy = rustix::io::fcntl_dupfd_cloexec(&fd, cx.floor).sys(|| format!("{}: F_DUPFD_CLOEXEC", what()))?;
                    let finish = tcp_repair::Finish::of(stream, &s.local, &s.peer, s.shutdown);
                    sockets.repaired(GoLive { fd: copy, conn, finish, reuse: (s.opts.reuseaddr, s.opts.reuseport), bufs: (s.opts.sndbuf, s.opts.rcvbuf), buf_lock: s.opts.buf_lock });
                }
            }
        } else {
            match s.bind_listen_connect(fd.as_fd()) {
                // A TCP socket whose connection closed still names the
                // port it had, which the kernel released unless the
                // program bound it by hand; a TIME_WAIT of that very
                // connection may hold it now. Such a socket can do nothing
                // but close: it stays unbound.
                Err(e) if e.errno == rustix::io::Errno::ADDRINUSE && s.state == state::CLOSE && s.ty == libc::SOCK_STREAM => {
                    tracing::debug!("{}: {e}; left unbound", what());
                }
                r => r.map_err(call)?,
            }
            s.set_options(fd.as_fd()).map_err(call)?;
            let copy = rustix::io::fcntl_dupfd_cloexec(&fd, cx.floor).sys(|| format!("{}: F_DUPFD_CLOEXEC", what()))?;
            sockets.bound(copy, (s.opts.reuseaddr, s.opts.reuseport));
        }
        set_status_flags(&fd, p.flags)?;
        Ok(Opened::Fd(fd))
    }

    fn name(p: &InetPlan) -> String {
        describe(&p.sock)
    }
}

/// `TCP listener 127.0.0.1:80`, `UDP socket [::1]:53 → [::1]:9`, ...
fn describe(s: &InetSocket) -> String {
    if s.ty == libc::SOCK_RAW {
        let v = if s.family == libc::AF_INET6 { "v6" } else { "" };
        return if s.local.ip().is_unspecified() { format!("raw{v} socket (protocol {})", s.proto) } else { format!("raw{v} socket (protocol {}) {}", s.proto, s.local.ip()) };
    }
    let proto = match (s.proto, s.family) {
        (libc::IPPROTO_TCP, _) => "TCP",
        (libc::IPPROTO_UDPLITE, _) => "UDP-Lite",
        (libc::IPPROTO_ICMP | libc::IPPROTO_ICMPV6, _) => "ICMP ping",
        _ => "UDP",
    };
    let what = match s.state {
        state::LISTEN => "listener".to_string(),
        state::CLOSE if s.local.port() == 0 => "socket (not bound)".to_string(),
        state::CLOSE | state::ESTABLISHED if s.proto != libc::IPPROTO_TCP || s.peer.port() == 0 => "socket".to_string(),
        st => format!("connection ({})", state::name(st)),
    };
    if s.peer.port() != 0 {
        format!("{proto} {what} {} → {}", s.local, s.peer)
    } else if s.local.port() != 0 {
        format!("{proto} {what} {}", s.local)
    } else {
        format!("{proto} {what}")
    }
}
