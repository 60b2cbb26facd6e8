//! Restore: bring a dumped process back from its image files.
//!
//! The host side, in order:
//! - [`load`] reads and validates the images into a [`plan::TaskPlan`];
//! - [`clone`] creates the task with its dumped pid (a fork of criu-rs);
//! - in the child, [`fds`] and [`fs`] rebuild files, [`premap`] builds the
//!   memory in a reserved area, [`args`] fills the blob's argument block and
//!   [`jump`] enters the blob;
//! - in the parent, [`finalize`] catches the blob's last stop, removes the
//!   blob from the task and lets it run.
//!
//! [`task::TaskGuard`] kills the task if anything fails once it exists.

pub mod args;
pub mod child;
pub mod clone;
pub mod error;
pub mod fds;
pub mod finalize;
pub mod fs;
pub mod hole;
pub mod hugefill;
pub mod jump;
pub mod load;
pub mod maps;
pub mod plan;
pub mod premap;
pub mod task;
pub mod validate;
pub mod vdso;
pub mod xsave;

pub use error::{RestoreError, Result};

use clone::{clone3_set_tid, Forked};
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
}

/// A task brought back and running (detached from criu-rs's ptrace; still
/// criu-rs's child).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Restored {
    pub pid: i32,
}

/// Restores the single-process dump in `opts.dir`. Validates every image
/// first; if anything fails once the task exists, it is killed and reaped.
///
/// Must be called from a single-threaded process (the task is a fork).
pub fn restore(opts: &RestoreOptions) -> Result<Restored> {
    let plan = load::load(&opts.dir, load::LoadOptions { shell_job: opts.shell_job })?;
    tracing::info!(pid = plan.pid, vmas = plan.vmas.len(), fds = plan.fds.len(), "images loaded");
    let (go_rx, go_tx) = pipe("go")?;
    let (status_rx, status_tx) = pipe("status")?;
    // SAFETY: criu-rs is single-threaded here (documented requirement).
    match unsafe { clone3_set_tid(plan.pid)? } {
        Forked::Child => {
            drop((go_tx, status_rx));
            child::child_main(&plan, go_rx, status_tx)
        }
        Forked::Parent { child } => {
            let guard = task::TaskGuard::new(child);
            drop((go_rx, status_tx));
            finalize::seize(child)?;
            tracing::debug!(pid = child, "task created and seized");
            rustix::io::write(&go_tx, b"g").sys(|| "starting the task".into())?;
            drop(go_tx);
            rustix::fs::fcntl_setfl(&status_rx, rustix::fs::OFlags::NONBLOCK).sys(|| "F_SETFL(O_NONBLOCK)".into())?;
            let stopped = plan.core.tc.as_ref().and_then(|tc| tc.task_state) == Some(crate::images::consts::task_state::STOPPED);
            let cores = std::iter::once((plan.pid, &*plan.core)).chain(plan.threads.iter().map(|(t, c)| (*t, c)));
            let threads: Vec<finalize::ThreadEnd> = cores
                .map(|(tid, core)| {
                    let tc = core.thread_core.as_ref();
                    finalize::ThreadEnd {
                        tid,
                        robust_head: tc.and_then(|t| t.futex_rla).unwrap_or(0),
                        robust_len: tc.and_then(|t| t.futex_rla_len).unwrap_or(0) as u64,
                    }
                })
                .collect();
            finalize::finish(child, &status_rx, &threads, stopped)?;
            tracing::info!(pid = child, "restored");
            Ok(Restored { pid: guard.disarm() })
        }
    }
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
