//! Netlink sockets (`FD_TYPES__NETLINKSK`, `netlink_sk_entry` in
//! `files.img`, as CRIU writes them): protocol, bound port id, groups,
//! default destination, socket options ([`NetlinkSocket`]). A socket with
//! messages waiting is refused (they cannot be put back). Restore binds the
//! dumped port id, or one the kernel picks when it is taken (logged).

use super::fdtable::set_status_flags;
use super::{CollectCtx, FdKind, FdProbe, FileDesc, FileDumpError, FilesSink, LoadCtx, OpenCtx, Opened};
use crate::images::pb::{self, FdTypes};
use crate::images::ImageError;
use crate::net::netlink::{NetlinkSocket, NETLINK_CONNECTED};
use crate::net::sockopts::SockOpts;
use crate::restore::error::{RestoreError, Result};
use rustix::fd::AsFd;
use std::os::unix::fs::MetadataExt;

/// The kind.
pub struct Netlink;

/// A netlink socket as dumped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetlinkDumped {
    /// Its inode.
    pub ino: u32,
    /// What it is.
    pub sock: NetlinkSocket,
}

/// How to recreate a netlink socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetlinkPlan {
    /// File id.
    pub id: u32,
    /// What to make.
    pub sock: NetlinkSocket,
    /// Open flags.
    pub flags: i32,
}

/// The state of a netlink socket never connected (`TCP_CLOSE`, which
/// `sock_init_data` gives every socket), as CRIU writes it.
const NETLINK_NEW: u32 = 7;

/// Groups kept per socket: 32 per word, as the kernel's bitmap (CRIU
/// writes one word; a few more cover every family the kernel has).
const MAX_GROUP_WORDS: usize = 32;

impl FdKind for Netlink {
    const FD_TYPE: FdTypes = FdTypes::Netlinksk;
    type Dumped = NetlinkDumped;
    type Plan = NetlinkPlan;
    type OpenState = ();

    fn claims(p: &FdProbe) -> bool {
        p.socket_proto().as_deref() == Some("NETLINK")
    }

    fn collect(p: &FdProbe, cx: &mut CollectCtx<'_>) -> std::result::Result<NetlinkDumped, FileDumpError> {
        let fd = cx.copy_fd(p)?;
        let sock = NetlinkSocket::read(fd.as_fd()).map_err(|e| FileDumpError::Sys { at: p.at(), what: e.call, errno: e.errno })?;
        if sock.queued {
            return Err(FileDumpError::UnsupportedState {
                at: p.at(),
                what: format!("netlink socket (protocol {}, port id {}) has messages waiting to be read", sock.protocol, sock.portid),
            });
        }
        Ok(NetlinkDumped { ino: p.md.ino() as u32, sock })
    }

    fn write(f: &FileDesc, d: &NetlinkDumped, sink: &mut FilesSink<'_>) -> std::result::Result<(), ImageError> {
        let s = &d.sock;
        let e = pb::NetlinkSkEntry {
            id: Some(f.id),
            ino: Some(d.ino),
            protocol: Some(s.protocol),
            state: Some(if s.state == NETLINK_CONNECTED { NETLINK_CONNECTED } else { NETLINK_NEW }),
            flags: Some(f.flags),
            portid: Some(s.portid),
            groups: s.groups.clone(),
            dst_portid: Some(s.dst_portid),
            dst_group: Some(s.dst_group),
            fown: Some(f.fown.entry()),
            opts: Some(s.opts.to_entry()),
            ns_id: None,
        };
        sink.push(pb::FileEntry { r#type: Some(FdTypes::Netlinksk as i32), id: Some(f.id), nlsk: Some(e), ..Default::default() });
        Ok(())
    }

    fn load(e: &pb::FileEntry, cx: &LoadCtx<'_>) -> Result<NetlinkPlan> {
        let id = e.id.unwrap_or_default();
        let n = e.nlsk.as_ref().ok_or_else(|| cx.bad(format!("file {id:#x} is NETLINKSK without netlink_sk_entry")))?;
        let bad = |what: String| cx.bad(format!("netlink socket {id:#x}: {what}"));
        // sock_diag reports sk_state: NETLINK_CONNECTED (1), or what a new
        // socket starts with (TCP_CLOSE, 7), or NETLINK_UNCONNECTED (0)
        // after a disconnect.
        let state = n.state.unwrap_or_default();
        if ![0, NETLINK_CONNECTED, NETLINK_NEW].contains(&state) {
            return Err(bad(format!("state {state}")));
        }
        if n.groups.len() > MAX_GROUP_WORDS {
            return Err(bad(format!("{} words of groups", n.groups.len())));
        }
        let dst_group = n.dst_group.unwrap_or_default();
        if dst_group > 32 {
            return Err(bad(format!("destination group {dst_group}")));
        }
        let opts = SockOpts::from_entry(n.opts.as_ref().ok_or_else(|| bad("no sk_opts_entry".into()))?).map_err(bad)?;
        let sock = NetlinkSocket {
            protocol: n.protocol.unwrap_or_default(),
            portid: n.portid.unwrap_or_default(),
            groups: n.groups.clone(),
            dst_portid: n.dst_portid.unwrap_or_default(),
            dst_group,
            state,
            opts,
            queued: false,
        };
        Ok(NetlinkPlan { id, sock, flags: n.flags.unwrap_or_default() as i32 })
    }

    fn open(p: &NetlinkPlan, _st: &mut (), _cx: &OpenCtx<'_>) -> Result<Opened> {
        let (fd, moved) = p.sock.open().map_err(|e| RestoreError::sys(format!("netlink socket {:#x}: {}", p.id, e.call), e.errno))?;
        if moved {
            tracing::warn!(id = p.id, portid = p.sock.portid, "netlink port id taken; the socket got another one");
        }
        set_status_flags(&fd, p.flags)?;
        Ok(Opened::Fd(fd))
    }

    fn name(p: &NetlinkPlan) -> String {
        format!("netlink socket (protocol {}, port id {})", p.sock.protocol, p.sock.portid)
    }
}
