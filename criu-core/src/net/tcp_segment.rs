//! Forged TCP segments, for the parts of a connection's state that
//! `TCP_REPAIR` cannot set: the peer's FIN in a socket's receive queue and
//! the peer's acknowledgement of our FIN.
//!
//! [`inject`] builds one segment as the peer would have sent it (from the
//! peer's address and port to the socket's) and hands it to the stack
//! through a raw socket (`IPPROTO_RAW`: the IP header is ours, IPv4 or
//! IPv6; v4-mapped IPv6 connections travel as IPv4). The raw socket carries
//! CRIU's mark `0xC114`, which the network lock lets through, and the
//! receiving socket processes it as any segment, in repair mode or not.
//!
//! ```text
//!  | IPv4 (20) or IPv6 (40) header | TCP header (20, no options) |
//!     src = peer, dst = local        sport = peer port, dport = local port
//!                                    seq, ack, flags, window, checksum
//! ```

use super::sockopt;
use rustix::io::Errno;
use std::net::{IpAddr, SocketAddr};

/// `TH_FIN`.
pub const FIN: u8 = 0x01;
/// `TH_ACK`.
pub const ACK: u8 = 0x10;

/// CRIU's `SOCCR_MARK`, as a number (see [`super::lock::SOCCR_MARK`]).
const MARK: u32 = 0xC114;

const TCP_HDR: usize = 20;

/// One segment to forge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    /// The receiving socket's address.
    pub local: SocketAddr,
    /// Its peer (the segment's source).
    pub peer: SocketAddr,
    /// Sequence number (the receiver's `rcv_nxt`).
    pub seq: u32,
    /// Acknowledgement number.
    pub ack: u32,
    /// `FIN`, `ACK`...
    pub flags: u8,
    /// Advertised window, already scaled down.
    pub window: u16,
}

/// An address as IPv4 when it is one or a v4-mapped IPv6 one.
fn as_v4(a: &IpAddr) -> Option<std::net::Ipv4Addr> {
    match a {
        IpAddr::V4(v4) => Some(*v4),
        IpAddr::V6(v6) => v6.to_ipv4_mapped(),
    }
}

/// The ones' complement sum of `data` as 16-bit big-endian words.
fn sum16(mut acc: u32, data: &[u8]) -> u32 {
    for c in data.chunks(2) {
        acc += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
    }
    acc
}

fn fold(mut acc: u32) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !(acc as u16)
}

impl Segment {
    /// The TCP header, checksum included, for addresses `src`/`dst` (4 or
    /// 16 bytes each, as the packet carries them).
    fn tcp_header(&self, src: &[u8], dst: &[u8]) -> [u8; TCP_HDR] {
        let mut h = [0u8; TCP_HDR];
        h[0..2].copy_from_slice(&self.peer.port().to_be_bytes());
        h[2..4].copy_from_slice(&self.local.port().to_be_bytes());
        h[4..8].copy_from_slice(&self.seq.to_be_bytes());
        h[8..12].copy_from_slice(&self.ack.to_be_bytes());
        h[12] = ((TCP_HDR / 4) as u8) << 4;
        h[13] = self.flags;
        h[14..16].copy_from_slice(&self.window.to_be_bytes());
        // Pseudo-header: addresses, protocol, TCP length.
        let mut acc = sum16(0, src);
        acc = sum16(acc, dst);
        acc += libc::IPPROTO_TCP as u32 + TCP_HDR as u32;
        let csum = fold(sum16(acc, &h));
        h[16..18].copy_from_slice(&csum.to_be_bytes());
        h
    }

    /// The whole packet and where to send it.
    fn packet(&self) -> (Vec<u8>, SocketAddr) {
        match (as_v4(&self.peer.ip()), as_v4(&self.local.ip())) {
            (Some(src), Some(dst)) => {
                let mut p = vec![0u8; 20];
                p[0] = 0x45;
                p[2..4].copy_from_slice(&((20 + TCP_HDR) as u16).to_be_bytes());
                p[6] = 0x40; // don't fragment
                p[8] = 64;
                p[9] = libc::IPPROTO_TCP as u8;
                p[12..16].copy_from_slice(&src.octets());
                p[16..20].copy_from_slice(&dst.octets());
                p.extend_from_slice(&self.tcp_header(&src.octets(), &dst.octets()));
                (p, SocketAddr::new(IpAddr::V4(dst), 0))
            }
            _ => {
                let to16 = |a: IpAddr| match a {
                    IpAddr::V6(v6) => v6.octets(),
                    IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
                };
                let (src, dst) = (to16(self.peer.ip()), to16(self.local.ip()));
                let mut p = vec![0u8; 40];
                p[0] = 0x60;
                p[4..6].copy_from_slice(&(TCP_HDR as u16).to_be_bytes());
                p[6] = libc::IPPROTO_TCP as u8;
                p[7] = 64;
                p[8..24].copy_from_slice(&src);
                p[24..40].copy_from_slice(&dst);
                p.extend_from_slice(&self.tcp_header(&src, &dst));
                let to = match self.local {
                    SocketAddr::V6(a) => SocketAddr::V6(std::net::SocketAddrV6::new(*a.ip(), 0, 0, a.scope_id())),
                    SocketAddr::V4(a) => SocketAddr::new(IpAddr::V6(a.ip().to_ipv6_mapped()), 0),
                };
                (p, to)
            }
        }
    }
}

/// Sends `seg` to the socket at `seg.local` as if its peer had: a raw
/// `IPPROTO_RAW` socket in criu-rs's network namespace (needs
/// `CAP_NET_RAW`, and `CAP_NET_ADMIN` for the mark).
pub fn inject(seg: &Segment) -> Result<(), Errno> {
    use rustix::net::{AddressFamily, Protocol, SocketFlags, SocketType};
    let (packet, to) = seg.packet();
    let family = if to.is_ipv4() { AddressFamily::INET } else { AddressFamily::INET6 };
    let proto = std::num::NonZeroU32::new(libc::IPPROTO_RAW as u32).map(Protocol::from_raw);
    let raw = rustix::net::socket_with(family, SocketType::RAW, SocketFlags::CLOEXEC, proto)?;
    sockopt::set_u32(&raw, libc::SOL_SOCKET as u32, libc::SO_MARK as u32, MARK)?;
    let n = rustix::net::sendto(&raw, &packet, rustix::net::SendFlags::empty(), &to)?;
    if n != packet.len() {
        return Err(Errno::MSGSIZE);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_of_a_known_segment() {
        // A segment whose checksum, folded over the pseudo-header and the
        // header with its checksum in place, must come out as zero.
        let s = Segment {
            local: "10.0.0.2:80".parse().unwrap(),
            peer: "10.0.0.1:40000".parse().unwrap(),
            seq: 0x1234_5678,
            ack: 0x9abc_def0,
            flags: FIN | ACK,
            window: 512,
        };
        let (p, to) = s.packet();
        assert_eq!(to, "10.0.0.2:0".parse().unwrap());
        assert_eq!(p.len(), 40);
        let mut acc = sum16(0, &p[12..20]);
        acc += 6 + 20;
        assert_eq!(fold(sum16(acc, &p[20..])), 0);
        assert_eq!(&p[20..22], &40000u16.to_be_bytes());
        assert_eq!(p[33], FIN | ACK);
        // v4-mapped IPv6 travels as IPv4; IPv6 with a 40-byte header.
        let m = Segment { local: "[::ffff:127.0.0.1]:5".parse().unwrap(), peer: "[::ffff:127.0.0.1]:6".parse().unwrap(), ..s };
        assert_eq!(m.packet().0.len(), 40);
        let v6 = Segment { local: "[::1]:5".parse().unwrap(), peer: "[::1]:6".parse().unwrap(), ..s };
        let (p6, _) = v6.packet();
        assert_eq!((p6.len(), p6[0] >> 4), (60, 6));
        let mut acc = sum16(0, &p6[8..40]);
        acc += 6 + 20;
        assert_eq!(fold(sum16(acc, &p6[40..])), 0);
    }
}
