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
//! - [`sockopt`]: raw `getsockopt`/`setsockopt` at any level, for the
//!   options rustix lacks (`SOL_TCP`, `SOL_IP`, `SOL_PACKET`...).
//! - [`tcp_repair`]: established TCP connections through `TCP_REPAIR`.
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
pub mod sockopt;
pub mod tcp_repair;
pub mod tcp_stream;
