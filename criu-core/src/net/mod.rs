//! Sockets: asking the kernel about them and moving them between network
//! namespaces.
//!
//! - [`diag`]: `NETLINK_SOCK_DIAG` requests and replies, for any family
//!   (the family's request and reply structs live with their users).
//! - [`unix_diag`]: `AF_UNIX` sockets as sock_diag reports them.
//! - [`netns`]: running something in another process's network namespace
//!   (a diag socket answers about the namespace it was created in).
//! - [`sockopts`]: the `SOL_SOCKET` options every socket kind saves in
//!   CRIU's `sk_opts_entry`, read and set again.
//! - [`dump_state`]: a dump's sockets: diag tables, repaired connections, the lock.
//! - [`inet`]: TCP/UDP sockets: read from a socket, made again.
//! - [`inet_diag`]: TCP/UDP sockets as sock_diag reports them.
//! - [`netlink`]: netlink sockets: read from a socket, made again.
//! - [`packet`]: packet sockets as sock_diag reports them, made again.
//! - [`restore_state`]: a restore's sockets: reuseaddr once all are bound,
//!   connections out of repair mode, the lock lifted.
//! - [`sockopt`]: raw `getsockopt`/`setsockopt` at any level, for the
//!   options rustix lacks (`SOL_TCP`, `SOL_IP`, `SOL_PACKET`...).
//! - [`tcp_repair`]: established TCP connections through `TCP_REPAIR`.
//! - [`tcp_segment`]: forged TCP segments (the FINs repair mode cannot set).
//! - [`tcp_stream`]: `tcp-stream-INO.img`, a connection's state in the images.
//! - [`lock`]: the network lock (iptables or nftables rules per connection).

pub mod diag;
pub mod netns;
pub mod sockopts;
pub mod unix_diag;

pub mod dump_state;
pub mod inet;
pub mod inet_diag;
pub mod lock;
pub mod netlink;
pub mod packet;
pub mod restore_state;
pub mod sockopt;
pub mod tcp_repair;
pub mod tcp_segment;
pub mod tcp_stream;

/// The protocol name of the socket behind `path` (a `/proc/PID/fd/N`
/// link): the `system.sockprotoname` attribute of its inode, e.g.
/// `UNIX-STREAM`, `UNIX` (datagram and seqpacket), `TCP`, `UDPv6`,
/// `NETLINK`, `PACKET`. `None` if it is not a socket. One system call,
/// no copy of the descriptor: what a file kind's `claims` can afford.
pub fn sock_proto(path: &std::path::Path) -> Option<String> {
    let mut buf = [0u8; 64];
    let n = rustix::fs::getxattr(path, "system.sockprotoname", &mut buf[..]).ok()?;
    let name = buf[..n].split(|&b| b == 0).next().unwrap_or_default();
    Some(String::from_utf8_lossy(name).into_owned())
}

#[cfg(test)]
mod tests {
    #[test]
    fn protocol_names_of_sockets() {
        use rustix::net::{socket_with, AddressFamily, SocketFlags, SocketType};
        let path = |fd: &rustix::fd::OwnedFd| std::path::PathBuf::from(format!("/proc/self/fd/{}", rustix::fd::AsRawFd::as_raw_fd(fd)));
        let s = socket_with(AddressFamily::UNIX, SocketType::STREAM, SocketFlags::CLOEXEC, None).unwrap();
        assert_eq!(super::sock_proto(&path(&s)).as_deref(), Some("UNIX-STREAM"));
        let d = socket_with(AddressFamily::UNIX, SocketType::DGRAM, SocketFlags::CLOEXEC, None).unwrap();
        assert_eq!(super::sock_proto(&path(&d)).as_deref(), Some("UNIX"));
        let (r, _w) = rustix::pipe::pipe().unwrap();
        assert_eq!(super::sock_proto(&path(&r)), None);
    }
}
