//! Restore: bring a dumped process back from its image files.
//!
//! The host side, in order:
//! - [`load`] reads and validates the images into a [`plan::TaskPlan`] per
//!   task, [`tree`] into the whole tree;
//! - [`shared`] creates what tasks share (file descriptions, shared memory);
//! - [`tree`] forks every task with its dumped pid (a fork of criu-rs,
//!   [`clone`]), sessions and groups first, zombies included; each task
//!   builds its memory before it forks its children, so that pages they
//!   share copy-on-write stay shared ([`cow`]);
//! - in each task, [`premap`] builds the memory in a reserved area, [`fill`]
//!   fills it from the pages file, [`fds`] and [`fs`] rebuild files, [`args`]
//!   fills the blob's argument block and [`jump`] enters the blob
//!   ([`child`]);
//! - in criu-rs, [`barrier`] holds every thread at the blob's last stop
//!   until the whole tree is there, then ([`finalize`]) removes the blob
//!   from each task and lets them all run.
//!
//! [`barrier::TreeGuard`] kills every task if anything fails.

pub mod args;
pub mod barrier;
pub mod child;
pub mod clone;
pub mod cow;
pub mod creds;
pub mod error;
pub mod fds;
pub mod finalize;
pub mod fill;
pub mod fs;
pub mod helper_thread;
pub mod hole;
pub mod hugefill;
pub mod jump;
pub mod lazy;
pub mod load;
pub mod maps;
pub mod parent;
pub mod plan;
pub mod premap;
pub mod shared;
pub mod tree;
pub mod validate;
pub mod vdso;
pub mod xsave;

pub use error::{RestoreError, Result};

use error::SysContext;
use rustix::fd::OwnedFd;
use std::path::PathBuf;

/// What `criu-rs restore` was asked to do.
#[derive(Debug, Clone)]
pub struct RestoreOptions {
    /// The images directory.
    pub dir: PathBuf,
    /// `--shell-job`: terminal fds are taken over from criu-rs.
    pub shell_job: bool,
    /// `--lazy-pages`: the lazy-pages daemon's socket (see [`lazy`]).
    pub lazy_pages: Option<PathBuf>,
}

/// A task brought back and running (detached from criu-rs's ptrace; still
/// criu-rs's child).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Restored {
    pub pid: i32,
}

/// Restores the dump in `opts.dir`: every task of its tree with its
/// threads ([`tree::restore_tree`]). Validates every image first; if
/// anything fails once a task exists, every task created is killed.
///
/// Must be called from a single-threaded process (the tasks are forks).
pub fn restore(opts: &RestoreOptions) -> Result<Restored> {
    tree::restore_tree(opts)
}

/// `pipe2(O_CLOEXEC)`.
fn pipe(what: &str) -> Result<(OwnedFd, OwnedFd)> {
    rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).sys(|| format!("pipe2 ({what})"))
}

/// Waits for a restored task (a child of this process) to end; returns its
/// exit code, or 128 + signal number if a signal killed it.
pub fn wait_exit(pid: i32) -> Result<i32> {
    use nix::sys::wait::{waitpid, WaitStatus};
    loop {
        match waitpid(nix::unistd::Pid::from_raw(pid), None) {
            Ok(WaitStatus::Exited(_, code)) => return Ok(code),
            Ok(WaitStatus::Signaled(_, sig, _)) => return Ok(128 + sig as i32),
            Ok(_) => continue,
            Err(e) => return Err(RestoreError::sys(format!("waitpid({pid})"), rustix::io::Errno::from_raw_os_error(e as i32))),
        }
    }
}
