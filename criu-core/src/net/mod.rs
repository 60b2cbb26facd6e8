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

pub mod diag;
pub mod netns;
pub mod sockopts;
pub mod unix_diag;
