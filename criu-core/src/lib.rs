//! criu-core: the checkpoint/restore engine behind the `criu-rs` command.
//!
//! - [`actions`]: the stages a dump or restore reports (CRIU's action scripts).
//! - [`pie`]: the embedded restorer blob, and placing/relocating/calling it.
//! - [`abi`]: the `#[repr(C)]` argument blocks shared with the blob.
//! - [`images`]: CRIU-compatible image files (magics, framing, protobuf).
//! - [`restore`]: bringing a dumped process back.
//! - [`check`]: probing the kernel features criu-rs relies on.
//! - [`proc`]: parsing `/proc/PID` files.
//! - [`ptrace`]: freezing tasks, reading registers, injecting syscalls.
//! - [`dump`]: collecting a process's state and writing the images.
//! - [`files`]: open files, one module per kind (dump and restore side by side).
//! - [`uffd`]: userfaultfd ioctls and messages.
//! - [`lazy`]: the lazy-pages daemon (post-copy memory over userfaultfd).
//! - [`net`]: sockets: sock_diag queries, socket options, network namespaces.
//! - [`pageserver`]: moving pages over TCP (dump to a remote host, post-copy).
//! - [`stats`]: CRIU's `stats-dump` / `stats-restore` images.
//! - [`logfd`]: the fd the log goes to, kept out of restored tasks' fd tables.
//! - [`progress`]: page counts of long dumps and restores, for a front end to draw.

pub mod actions;
pub mod check;
pub mod dump;
pub mod files;
pub mod images;
pub mod lazy;
pub mod logfd;
pub mod net;
pub mod pageserver;
pub mod pie;
pub mod proc;
pub mod progress;
pub mod ptrace;
pub mod restore;
pub mod stats;
pub mod uffd;

/// The argument ABI shared with the restorer blob. The one source file is
/// compiled into both sides so they cannot drift apart.
#[path = "../../restorer-pie/src/abi.rs"]
pub mod abi;
