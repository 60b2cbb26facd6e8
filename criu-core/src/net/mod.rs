//! Sockets of the internet and netlink families: the kernel interfaces a
//! dump reads them through and a restore rebuilds them with.
//!
//! - [`sockopt`]: raw `getsockopt`/`setsockopt` for options rustix lacks.
//! - [`tcp_repair`]: established TCP connections through `TCP_REPAIR`.
//! - [`lock`]: the network lock (iptables or nftables rules per connection).

pub mod sockopt;
pub mod tcp_repair;
pub mod lock;
