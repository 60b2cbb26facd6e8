//! Packet sockets (`FD_TYPES__PACKETSK`, `packet_sock_entry` in
//! `files.img`, as CRIU writes them): type, protocol, interface, packet
//! options, memberships, fanout group, ring geometry ([`PacketSocket`],
//! read through packet_diag). Refused: sockets whose ring is mapped (its
//! memory is part of the address space; seen in `/proc/PID/maps`).
//! `SOCK_PACKET` sockets (the obsolete interface) keep their interface and
//! socket options. Packets waiting in the
//! queue are not kept, as with CRIU: a capture loses them.

use super::fdtable::set_status_flags;
use super::{CollectCtx, FdKind, FdProbe, FileDesc, FileDumpError, FilesSink, LoadCtx, OpenCtx, Opened};
use crate::images::pb::{self, FdTypes};
use crate::images::ImageError;
use crate::net::packet::{Membership, PacketSocket, Ring};
use crate::net::sockopts::SockOpts;
use crate::restore::error::{RestoreError, Result};
use rustix::fd::AsFd;
use std::os::unix::fs::MetadataExt;

/// The kind.
pub struct Packet;

/// How to recreate a packet socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PacketPlan {
    /// File id.
    pub id: u32,
    /// What to make.
    pub sock: PacketSocket,
    /// Open flags.
    pub flags: i32,
}

impl FdKind for Packet {
    const FD_TYPE: FdTypes = FdTypes::Packetsk;
    type Dumped = PacketSocket;
    type Plan = PacketPlan;
    type OpenState = ();

    fn claims(p: &FdProbe) -> bool {
        p.socket_proto().as_deref() == Some("PACKET")
    }

    fn collect(p: &FdProbe, cx: &mut CollectCtx<'_>) -> std::result::Result<PacketSocket, FileDumpError> {
        let refuse = |what: String| FileDumpError::UnsupportedState { at: p.at(), what };
        let ino = p.md.ino() as u32;
        let mut sock = cx.sockets.packet_info(cx.pid, ino).map_err(|e| refuse(format!("packet socket: sock_diag: {e}")))?.ok_or_else(|| refuse(format!("packet socket {ino} not listed by sock_diag")))?;
        if (sock.rx_ring.is_some() || sock.tx_ring.is_some()) && ring_mapped(cx.pid, ino) {
            return Err(refuse(format!("packet socket (ifindex {}) with a mapped ring (PACKET_RX_RING/PACKET_TX_RING memory in the address space)", sock.ifindex)));
        }
        let fd = cx.copy_fd(p)?;
        sock.opts = SockOpts::read(fd.as_fd(), libc::AF_PACKET).map_err(|e| FileDumpError::Sys { at: p.at(), what: e.opt.into(), errno: e.errno })?;
        Ok(sock)
    }

    fn write(f: &FileDesc, s: &PacketSocket, sink: &mut FilesSink<'_>) -> std::result::Result<(), ImageError> {
        // One entry per membership, repeated as many times as it was made
        // (CRIU keeps single ones).
        let mclist = s
            .mclist
            .iter()
            .flat_map(|(m, count)| std::iter::repeat_n(pb::PacketMclist { index: Some(m.index), r#type: Some(m.ty), addr: Some(m.addr.clone()) }, *count as usize))
            .collect();
        let e = pb::PacketSockEntry {
            id: Some(f.id),
            r#type: Some(s.ty),
            protocol: Some(s.protocol),
            flags: Some(f.flags),
            ifindex: Some(s.ifindex),
            fown: Some(f.fown.entry()),
            opts: Some(s.opts.to_entry()),
            version: Some(s.version),
            reserve: Some(s.reserve),
            aux_data: Some(s.aux_data),
            orig_dev: Some(s.orig_dev),
            vnet_hdr: Some(s.vnet_hdr),
            loss: Some(s.loss),
            timestamp: Some(s.timestamp),
            copy_thresh: Some(s.copy_thresh),
            mclist,
            fanout: s.fanout,
            rx_ring: s.rx_ring.map(ring_entry),
            tx_ring: s.tx_ring.map(ring_entry),
            ns_id: None,
        };
        sink.push(pb::FileEntry { r#type: Some(FdTypes::Packetsk as i32), id: Some(f.id), psk: Some(e), ..Default::default() });
        Ok(())
    }

    fn load(e: &pb::FileEntry, cx: &LoadCtx<'_>) -> Result<PacketPlan> {
        let id = e.id.unwrap_or_default();
        let ps = e.psk.as_ref().ok_or_else(|| cx.bad(format!("file {id:#x} is PACKETSK without packet_sock_entry")))?;
        let bad = |what: String| cx.bad(format!("packet socket {id:#x}: {what}"));
        let ty = ps.r#type.unwrap_or_default();
        if ty != libc::SOCK_RAW as u32 && ty != libc::SOCK_DGRAM as u32 && ty != crate::net::packet::SOCK_PACKET {
            return Err(cx.unsupported(format!("packet socket {id:#x} of type {ty}")));
        }
        let mut mclist: Vec<(Membership, u32)> = Vec::new();
        for m in &ps.mclist {
            let addr = m.addr.clone().unwrap_or_default();
            if addr.len() > 32 {
                return Err(bad(format!("membership address of {} bytes", addr.len())));
            }
            let m = Membership { index: m.index.unwrap_or_default(), ty: m.r#type.unwrap_or_default(), addr };
            match mclist.iter_mut().find(|(x, _)| *x == m) {
                Some((_, n)) => *n += 1,
                None => mclist.push((m, 1)),
            }
        }
        let opts = SockOpts::from_entry(ps.opts.as_ref().ok_or_else(|| bad("no sk_opts_entry".into()))?).map_err(bad)?;
        let sock = PacketSocket {
            ty,
            protocol: ps.protocol.unwrap_or_default(),
            ifindex: ps.ifindex.unwrap_or_default(),
            version: ps.version.unwrap_or_default(),
            reserve: ps.reserve.unwrap_or_default(),
            timestamp: ps.timestamp.unwrap_or_default(),
            copy_thresh: ps.copy_thresh.unwrap_or_default(),
            aux_data: ps.aux_data.unwrap_or(false),
            orig_dev: ps.orig_dev.unwrap_or(false),
            vnet_hdr: ps.vnet_hdr.unwrap_or(false),
            loss: ps.loss.unwrap_or(false),
            mclist,
            // CRIU's default for "no fanout" is 0xffffffff.
            fanout: ps.fanout.filter(|&f| f != u32::MAX),
            rx_ring: ps.rx_ring.as_ref().map(ring_of),
            tx_ring: ps.tx_ring.as_ref().map(ring_of),
            opts,
        };
        Ok(PacketPlan { id, sock, flags: ps.flags.unwrap_or_default() as i32 })
    }

    fn open(p: &PacketPlan, _st: &mut (), _cx: &OpenCtx<'_>) -> Result<Opened> {
        let fd = p.sock.open().map_err(|e| RestoreError::Prepare(format!("packet socket {:#x}: {e}", p.id)))?;
        set_status_flags(&fd, p.flags)?;
        Ok(Opened::Fd(fd))
    }

    fn name(p: &PacketPlan) -> String {
        format!("packet socket (protocol {:#x}, ifindex {})", u16::from_be(p.sock.protocol as u16), p.sock.ifindex)
    }
}

/// Whether task `pid` maps packet socket `ino` (its ring): a line of
/// `/proc/PID/maps` naming `socket:[INO]`.
fn ring_mapped(pid: i32, ino: u32) -> bool {
    let name = format!("socket:[{ino}]");
    std::fs::read_to_string(format!("/proc/{pid}/maps")).map_or(true, |m| m.lines().any(|l| l.ends_with(&name)))
}

fn ring_entry(r: Ring) -> pb::PacketRing {
    pb::PacketRing {
        block_size: Some(r.block_size),
        block_nr: Some(r.block_nr),
        frame_size: Some(r.frame_size),
        frame_nr: Some(r.frame_nr),
        retire_tmo: Some(r.retire_tmo),
        sizeof_priv: Some(r.sizeof_priv),
        features: Some(r.features),
    }
}

fn ring_of(e: &pb::PacketRing) -> Ring {
    Ring {
        block_size: e.block_size.unwrap_or_default(),
        block_nr: e.block_nr.unwrap_or_default(),
        frame_size: e.frame_size.unwrap_or_default(),
        frame_nr: e.frame_nr.unwrap_or_default(),
        retire_tmo: e.retire_tmo.unwrap_or_default(),
        sizeof_priv: e.sizeof_priv.unwrap_or_default(),
        features: e.features.unwrap_or_default(),
    }
}
