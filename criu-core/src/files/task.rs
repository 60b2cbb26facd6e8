//! The task's own side of its files, once criu-rs has created the
//! descriptions it shares with the tree and the task was forked:
//! [`install`] puts them at their numbers, opens those only the task can
//! open ([`super::Opened::InTask`]: a pidfd of another task) and runs each
//! kind's [`super::FdKind::in_task`] step for the descriptions this task
//! holds first in the tree; [`before_resume`] runs the last steps (timers
//! are armed there) just before the blob.

use super::fdtable::{dup3_to, fd_floor, install_fds, move_above, FdPlan};
use super::{DescPlan, InTaskCtx, TaskStage};
use crate::restore::error::{RestoreError, Result};
use rustix::fd::{AsFd, BorrowedFd, OwnedFd, RawFd};
use std::collections::{BTreeMap, BTreeSet};

/// What a task finishes of its files.
#[derive(Debug, Clone, Copy)]
pub struct TaskFiles<'a> {
    /// Its pid.
    pub pid: i32,
    /// Its fd table.
    pub fds: &'a [FdPlan],
    /// The descriptions it refers to.
    pub descs: &'a BTreeMap<u32, DescPlan>,
    /// The descriptions it is the first task of the tree to hold.
    pub first_held: &'a BTreeSet<u32>,
    /// The file locks it takes.
    pub locks: &'a [super::locks::FileLock],
}

impl TaskFiles<'_> {
    fn cx(&self) -> InTaskCtx<'_> {
        InTaskCtx { pid: self.pid, fds: self.fds }
    }

    /// Runs `stage` for every description the task holds first, each once,
    /// at the first fd number referring to it.
    fn run(&self, stage: TaskStage) -> Result<()> {
        let mut done = BTreeSet::new();
        for f in self.fds {
            if !self.first_held.contains(&f.desc) || !done.insert(f.desc) {
                continue;
            }
            let Some(d) = self.descs.get(&f.desc) else { continue };
            // SAFETY: fd f.fd was installed in this task's table by install.
            let fd = unsafe { BorrowedFd::borrow_raw(f.fd) };
            d.in_task(fd, stage, &self.cx())?;
        }
        Ok(())
    }
}

/// Puts the task's fds in place: descriptions criu-rs created (`opened`)
/// by `dup3`, the others opened by the task now; closes every other fd but
/// `keep`; then runs the [`TaskStage::FdsInstalled`] steps and takes the
/// task's file locks ([`take_locks`]).
pub fn install(t: &TaskFiles<'_>, opened: &BTreeMap<u32, OwnedFd>, keep: &[RawFd]) -> Result<()> {
    let (ours, theirs): (Vec<FdPlan>, Vec<FdPlan>) = t.fds.iter().partition(|f| !opened.contains_key(&f.desc) && t.descs.contains_key(&f.desc));
    install_fds(&theirs, opened, keep)?;
    let mut made: BTreeMap<u32, OwnedFd> = BTreeMap::new();
    for f in &ours {
        if !made.contains_key(&f.desc) {
            let d = t.descs.get(&f.desc).ok_or(RestoreError::UnknownFileId { fd: f.fd, id: f.desc })?;
            // Above the table, so that it is never one of the numbers.
            made.insert(f.desc, move_above(d.open_in_task(&t.cx())?, fd_floor(t.fds))?);
        }
        dup3_to(made[&f.desc].as_fd(), f.fd, f.cloexec)?;
        tracing::debug!(fd = f.fd, id = f.desc, cloexec = f.cloexec, "fd installed (opened in the task)");
    }
    drop(made);
    t.run(TaskStage::FdsInstalled)?;
    take_locks(t)
}

/// Takes the task's file locks on its installed fds (after every fd is in
/// place: a POSIX lock goes when its owner closes any fd of the file).
pub fn take_locks(t: &TaskFiles<'_>) -> Result<()> {
    for l in t.locks {
        // SAFETY: the lock's fd is in the task's table (checked at load).
        super::locks::take(l, unsafe { BorrowedFd::borrow_raw(l.fd) })?;
    }
    Ok(())
}

/// The [`TaskStage::BeforeResume`] steps.
pub fn before_resume(t: &TaskFiles<'_>) -> Result<()> {
    t.run(TaskStage::BeforeResume)
}

/// For each task (in `pstree` order: `(pid, fd table, descriptions)`), the
/// descriptions it is the first to hold, which it finishes
/// ([`super::FdKind::in_task`]). Checks what those need: fd numbers open in
/// that task (an epoll set's targets), pids of tasks of the tree (`pids`;
/// a pidfd's). Errors name `files_img` and the description.
pub fn first_holders(tasks: &[(i32, &[FdPlan], &BTreeMap<u32, DescPlan>)], pids: &[i32], files_img: &std::path::Path) -> Result<Vec<BTreeSet<u32>>> {
    let mut taken: BTreeSet<u32> = BTreeSet::new();
    let mut out = Vec::with_capacity(tasks.len());
    for &(pid, fds, descs) in tasks {
        let mut mine = BTreeSet::new();
        let numbers: BTreeSet<i32> = fds.iter().map(|f| f.fd).collect();
        for f in fds {
            if !taken.insert(f.desc) {
                continue;
            }
            mine.insert(f.desc);
            let Some(d) = descs.get(&f.desc) else { continue };
            let what = || format!("file {:#x} ({}, fd {} of task {pid})", f.desc, d.name(), f.fd);
            if let Some(n) = d.fds_needed().into_iter().find(|n| !numbers.contains(n)) {
                return Err(RestoreError::bad(files_img, format!("{}: needs fd {n}, which is not in that task's fd table", what())));
            }
            if let Some(p) = d.pids_needed().into_iter().find(|p| !pids.contains(p)) {
                return Err(RestoreError::bad(files_img, format!("{}: names pid {p}, which is not a task of the dump", what())));
            }
        }
        out.push(mine);
    }
    Ok(out)
}
