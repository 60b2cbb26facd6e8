//! Packet sockets (`AF_PACKET`, what a DHCP client or a capture tool
//! holds), as CRIU's `packet_sock_entry` keeps them: read through
//! `NETLINK_SOCK_DIAG` (`include/uapi/linux/packet_diag.h`), which reports
//! what `getsockopt` cannot (the copy threshold, the multicast list).
//!
//! ```text
//! packet_diag_req (20 bytes): u8 family = AF_PACKET, u8 protocol, u16 pad,
//!                             u32 ino, u32 show (PACKET_SHOW_*), u32 cookie[2]
//! packet_diag_msg (16 bytes): u8 family, u8 type, u16 num (protocol, host
//!                             order), u32 ino, u32 cookie[2]
//! INFO (0):    u32 index, version, reserve, copy_thresh, tstamp, flags
//! MCLIST (1):  { u32 index, u32 count, u16 type, u16 alen, u8 addr[32] }*
//! RX_RING (2), TX_RING (3): ring sizes     FANOUT (4): u32 id | type << 16
//! ```
//!
//! Rings (`PACKET_RX_RING`/`TX_RING`) are set up again with their
//! geometry; a ring mapped into the address space is refused by the file
//! kind (its memory would have to come back with it).
//! Packets waiting in the queue are not kept (a capture loses them).

use super::diag::{attr_u32, attrs, DiagError, DiagSocket};
use super::sockopt;
use super::sockopts::SockOpts;
use rustix::fd::{AsFd, OwnedFd};
use rustix::io::Errno;
use std::collections::HashMap;

/// `PACKET_SHOW_INFO | MCLIST | RING_CFG | FANOUT`.
const SHOW: u32 = 1 | 2 | 4 | 8;
/// Size of `struct packet_diag_msg`.
const MSG_LEN: usize = 16;
/// Size of `struct packet_diag_mclist`.
const MCLIST_LEN: usize = 44;
const SOL_PACKET: u32 = linux_raw_sys::net::SOL_PACKET;

/// `packet_diag_info.flags` bits.
const PDI_AUXDATA: u32 = 0x2;
const PDI_ORIGDEV: u32 = 0x4;
const PDI_VNETHDR: u32 = 0x8;
const PDI_LOSS: u32 = 0x10;

/// Packet socket options (`linux/if_packet.h`).
const PACKET_ADD_MEMBERSHIP: u32 = 1;
const PACKET_AUXDATA: u32 = 8;
const PACKET_ORIGDEV: u32 = 9;
const PACKET_VERSION: u32 = 10;
const PACKET_RESERVE: u32 = 12;
const PACKET_LOSS: u32 = 14;
const PACKET_VNET_HDR: u32 = 15;
const PACKET_TIMESTAMP: u32 = 17;
const PACKET_FANOUT: u32 = 18;
const PACKET_COPY_THRESH: u32 = 7;
const PACKET_RX_RING: u32 = 5;
const PACKET_TX_RING: u32 = 13;
/// `TPACKET_V3`: rings take a `tpacket_req3` (with the block fields).
const TPACKET_V3: u32 = 2;

/// A receive or transmit ring's geometry (`packet_diag_ring`, CRIU's
/// `packet_ring`), as `PACKET_RX_RING`/`PACKET_TX_RING` set it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ring {
    pub block_size: u32,
    pub block_nr: u32,
    pub frame_size: u32,
    pub frame_nr: u32,
    /// `TPACKET_V3` only: block retire timeout, private area, features.
    pub retire_tmo: u32,
    pub sizeof_priv: u32,
    pub features: u32,
}

/// One multicast membership (`PACKET_ADD_MEMBERSHIP`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Membership {
    /// Interface index.
    pub index: u32,
    /// `PACKET_MR_MULTICAST`, `_PROMISC`, `_ALLMULTI`, `_UNICAST`.
    pub ty: u32,
    /// Link-layer address (multicast and unicast types).
    pub addr: Vec<u8>,
}

/// One packet socket as sock_diag and `getsockopt` report it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PacketSocket {
    /// `SOCK_RAW` or `SOCK_DGRAM`.
    pub ty: u32,
    /// Protocol in network byte order, as `socket(2)` takes it.
    pub protocol: u32,
    /// Bound interface (0: any).
    pub ifindex: u32,
    /// `PACKET_VERSION`.
    pub version: u32,
    /// `PACKET_RESERVE`.
    pub reserve: u32,
    /// `PACKET_TIMESTAMP`.
    pub timestamp: u32,
    /// `PACKET_COPY_THRESH`.
    pub copy_thresh: u32,
    pub aux_data: bool,
    pub orig_dev: bool,
    pub vnet_hdr: bool,
    pub loss: bool,
    /// Multicast memberships, one per entry (the kernel counts repeats).
    pub mclist: Vec<(Membership, u32)>,
    /// `PACKET_FANOUT` (id | type << 16).
    pub fanout: Option<u32>,
    /// `PACKET_RX_RING`.
    pub rx_ring: Option<Ring>,
    /// `PACKET_TX_RING`.
    pub tx_ring: Option<Ring>,
    /// `SOL_SOCKET` options.
    pub opts: SockOpts,
}

/// Error type for [`PacketSocket`] operations.
#[derive(Debug, thiserror::Error)]
pub enum PacketError {
    /// sock_diag failed.
    #[error(transparent)]
    Diag(#[from] DiagError),
    /// A call failed.
    #[error("{call}: {errno}")]
    Call {
        /// The call.
        call: String,
        /// What the kernel said.
        errno: Errno,
    },
}

fn call(c: impl Into<String>) -> impl FnOnce(Errno) -> PacketError {
    let call = c.into();
    move |errno| PacketError::Call { call, errno }
}

/// What sock_diag says of the packet sockets of a namespace, by inode
/// (everything but the socket options).
pub fn sockets(diag: &mut DiagSocket) -> Result<HashMap<u32, PacketSocket>, DiagError> {
    let mut req = [0u8; 20];
    req[0] = libc::AF_PACKET as u8;
    req[8..12].copy_from_slice(&SHOW.to_ne_bytes());
    let mut out = HashMap::new();
    diag.query(&req, true, |p| {
        let m = p.get(..MSG_LEN).ok_or_else(|| DiagError::Malformed(format!("packet_diag_msg of {} bytes", p.len())))?;
        let ino = attr_u32(&m[4..8])?;
        let num = u16::from_ne_bytes([m[2], m[3]]);
        let mut s = PacketSocket {
            ty: m[1] as u32,
            protocol: num.to_be() as u32,
            ifindex: 0,
            version: 0,
            reserve: 0,
            timestamp: 0,
            copy_thresh: 0,
            aux_data: false,
            orig_dev: false,
            vnet_hdr: false,
            loss: false,
            mclist: Vec::new(),
            fanout: None,
            rx_ring: None,
            tx_ring: None,
            opts: SockOpts::default(),
        };
        for a in attrs(p, MSG_LEN) {
            let (ty, d) = a?;
            match ty {
                0 => {
                    let w = |i: usize| attr_u32(d.get(i * 4..).unwrap_or_default());
                    s.ifindex = w(0)?;
                    s.version = w(1)?;
                    s.reserve = w(2)?;
                    s.copy_thresh = w(3)?;
                    s.timestamp = w(4)?;
                    let f = w(5)?;
                    (s.aux_data, s.orig_dev, s.vnet_hdr, s.loss) = (f & PDI_AUXDATA != 0, f & PDI_ORIGDEV != 0, f & PDI_VNETHDR != 0, f & PDI_LOSS != 0);
                }
                1 => {
                    for mc in d.chunks_exact(MCLIST_LEN) {
                        let alen = (u16::from_ne_bytes([mc[10], mc[11]]) as usize).min(32);
                        let m = Membership { index: attr_u32(&mc[0..4])?, ty: u16::from_ne_bytes([mc[8], mc[9]]) as u32, addr: mc[12..12 + alen].to_vec() };
                        s.mclist.push((m, attr_u32(&mc[4..8])?));
                    }
                }
                2 | 3 => {
                    let w = |i: usize| attr_u32(d.get(i * 4..).unwrap_or_default());
                    let r = Ring { block_size: w(0)?, block_nr: w(1)?, frame_size: w(2)?, frame_nr: w(3)?, retire_tmo: w(4)?, sizeof_priv: w(5)?, features: w(6)? };
                    if ty == 2 {
                        s.rx_ring = Some(r);
                    } else {
                        s.tx_ring = Some(r);
                    }
                }
                4 => s.fanout = Some(attr_u32(d)?),
                _ => {}
            }
        }
        out.insert(ino, s);
        Ok(())
    })?;
    Ok(out)
}

/// The obsolete `SOCK_PACKET` type: bound by interface name, none of the
/// packet options.
pub const SOCK_PACKET: u32 = 10;

impl PacketSocket {
    /// Binds a `SOCK_PACKET` socket to its interface (a `sockaddr` whose
    /// data is the interface's name), when it had one.
    fn bind_spkt(&self, s: &OwnedFd) -> Result<(), PacketError> {
        if self.ifindex == 0 {
            return Ok(());
        }
        let name = rustix::net::netdevice::index_to_name(s, self.ifindex).map_err(call(format!("interface {}", self.ifindex)))?;
        let mut sa = [0u8; 16];
        sa[..2].copy_from_slice(&(libc::AF_PACKET as u16).to_ne_bytes());
        let n = name.len().min(13);
        sa[2..2 + n].copy_from_slice(&name.as_bytes()[..n]);
        // SAFETY: `sa` is a complete struct sockaddr of the length given.
        if unsafe { libc::bind(std::os::fd::AsRawFd::as_raw_fd(s), sa.as_ptr().cast(), sa.len() as u32) } < 0 {
            return Err(call(format!("bind(SOCK_PACKET, {name})"))(Errno::from_raw_os_error(std::io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO))));
        }
        Ok(())
    }

    /// Makes the socket again: `socket(AF_PACKET, type, protocol)` bound to
    /// its interface, its packet options, memberships, fanout group and
    /// socket options.
    pub fn open(&self) -> Result<OwnedFd, PacketError> {
        // SAFETY: plain socket(2); the result is checked and owned at once.
        let raw = unsafe { libc::socket(libc::AF_PACKET, self.ty as i32 | libc::SOCK_CLOEXEC, self.protocol as i32) };
        if raw < 0 {
            return Err(call(format!("socket(AF_PACKET, {}, {:#x})", self.ty, self.protocol))(Errno::from_raw_os_error(std::io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO))));
        }
        // SAFETY: `raw` is a new descriptor nobody else owns.
        let s = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(raw) };
        if self.ty == SOCK_PACKET {
            self.bind_spkt(&s)?;
            self.opts.apply(s.as_fd()).map_err(|e| PacketError::Call { call: format!("setsockopt({})", e.opt), errno: e.errno })?;
            return Ok(s);
        }
        // sockaddr_ll with only the family and interface (protocol 0 keeps
        // the socket's).
        let mut ll = [0u8; 20];
        ll[..2].copy_from_slice(&(libc::AF_PACKET as u16).to_ne_bytes());
        ll[4..8].copy_from_slice(&(self.ifindex as i32).to_ne_bytes());
        // SAFETY: `ll` is a complete sockaddr_ll of the length given.
        if unsafe { libc::bind(raw, ll.as_ptr().cast(), ll.len() as u32) } < 0 {
            return Err(call(format!("bind(AF_PACKET, ifindex {})", self.ifindex))(Errno::from_raw_os_error(std::io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO))));
        }
        let set = |name: u32, v: u32, what: &str| sockopt::set_u32(&s, SOL_PACKET, name, v).map_err(call(format!("setsockopt({what}, {v})")));
        set(PACKET_VERSION, self.version, "PACKET_VERSION")?;
        set(PACKET_RESERVE, self.reserve, "PACKET_RESERVE")?;
        set(PACKET_TIMESTAMP, self.timestamp, "PACKET_TIMESTAMP")?;
        set(PACKET_COPY_THRESH, self.copy_thresh, "PACKET_COPY_THRESH")?;
        for (on, name, what) in [
            (self.aux_data, PACKET_AUXDATA, "PACKET_AUXDATA"),
            (self.orig_dev, PACKET_ORIGDEV, "PACKET_ORIGDEV"),
            (self.vnet_hdr, PACKET_VNET_HDR, "PACKET_VNET_HDR"),
            (self.loss, PACKET_LOSS, "PACKET_LOSS"),
        ] {
            if on {
                set(name, 1, what)?;
            }
        }
        // Rings after the version, reserve, vnet header and loss options (all
        // refused once a ring exists).
        for (ring, name, what) in [(self.rx_ring, PACKET_RX_RING, "PACKET_RX_RING"), (self.tx_ring, PACKET_TX_RING, "PACKET_TX_RING")] {
            let Some(r) = ring else { continue };
            let req = [r.block_size, r.block_nr, r.frame_size, r.frame_nr, r.retire_tmo, r.sizeof_priv, r.features];
            let len = if self.version == TPACKET_V3 { 7 } else { 4 };
            let bytes: Vec<u8> = req[..len].iter().flat_map(|w| w.to_ne_bytes()).collect();
            sockopt::set_bytes(&s, SOL_PACKET, name, &bytes).map_err(call(format!("setsockopt({what}, {r:?})")))?;
        }
        for (m, count) in &self.mclist {
            // packet_mreq_max: int ifindex, u16 type, u16 alen, u8 addr[32].
            let mut mreq = [0u8; 40];
            mreq[..4].copy_from_slice(&(m.index as i32).to_ne_bytes());
            mreq[4..6].copy_from_slice(&(m.ty as u16).to_ne_bytes());
            mreq[6..8].copy_from_slice(&(m.addr.len() as u16).to_ne_bytes());
            mreq[8..8 + m.addr.len().min(32)].copy_from_slice(&m.addr[..m.addr.len().min(32)]);
            for _ in 0..*count {
                sockopt::set_bytes(&s, SOL_PACKET, PACKET_ADD_MEMBERSHIP, &mreq).map_err(call("setsockopt(PACKET_ADD_MEMBERSHIP)"))?;
            }
        }
        if let Some(f) = self.fanout {
            set(PACKET_FANOUT, f, "PACKET_FANOUT")?;
        }
        self.opts.apply(s.as_fd()).map_err(|e| PacketError::Call { call: format!("setsockopt({})", e.opt), errno: e.errno })?;
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ino(fd: impl AsFd) -> u32 {
        rustix::fs::fstat(fd).unwrap().st_ino as u32
    }

    #[test]
    fn a_bound_packet_socket_with_options_comes_back() {
        const ETH_P_ALL: u16 = 3;
        let lo = rustix::net::netdevice::name_to_index(
            &rustix::net::socket(rustix::net::AddressFamily::INET, rustix::net::SocketType::DGRAM, None).unwrap(),
            "lo",
        )
        .unwrap();
        let s = PacketSocket {
            ty: libc::SOCK_DGRAM as u32,
            protocol: ETH_P_ALL.to_be() as u32,
            ifindex: lo,
            version: 1,
            reserve: 16,
            timestamp: 0,
            copy_thresh: 0,
            aux_data: true,
            orig_dev: false,
            vnet_hdr: false,
            loss: true,
            mclist: vec![(Membership { index: lo, ty: 0, addr: vec![1, 0, 0x5e, 0, 0, 0xfb] }, 1)],
            fanout: Some(0x4242),
            rx_ring: Some(Ring { block_size: 4096, block_nr: 2, frame_size: 2048, frame_nr: 4, ..Ring::default() }),
            tx_ring: None,
            opts: SockOpts::default(),
        };
        let fd = s.open().unwrap();
        let mut d = DiagSocket::open().unwrap();
        let mut got = sockets(&mut d).unwrap().remove(&ino(&fd)).unwrap();
        got.opts = SockOpts::default();
        assert_eq!(got, s);
        // The obsolete SOCK_PACKET: bound by interface name.
        let spkt = PacketSocket { ty: SOCK_PACKET, version: 0, reserve: 0, aux_data: false, loss: false, mclist: vec![], fanout: None, rx_ring: None, ..s };
        let fd = spkt.open().unwrap();
        let got = sockets(&mut d).unwrap().remove(&ino(&fd)).unwrap();
        assert_eq!((got.ty, got.protocol, got.ifindex), (SOCK_PACKET, spkt.protocol, lo));
    }
}
