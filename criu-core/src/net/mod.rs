//! Sockets of the internet and netlink families: the kernel interfaces a
//! dump reads them through and a restore rebuilds them with.
//!
//! - [`sockopt`]: raw `getsockopt`/`setsockopt` for options rustix lacks.
//! - [`tcp_repair`]: established TCP connections through `TCP_REPAIR`.

pub mod sockopt;
pub mod tcp_repair;
