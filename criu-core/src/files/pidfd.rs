//! pidfds (`FD_TYPES__PIDFD`, `pidfd_entry` in `files.img`, as CRIU 4.x
//! writes them): the process it refers to (`nspid`, from fdinfo `NSpid:`)
//! and the flags (`PIDFD_NONBLOCK`).
//!
//! Dump: a pidfd must refer to a task of the dumped tree (the process must
//! exist again after a restore), or to a process already reaped (fdinfo
//! `Pid: -1`; `nspid` -1, and the pidfs inode number tells which pidfds
//! referred to the same one). A pidfd of a process outside the tree is
//! refused by name, as CRIU does; so is a thread pidfd (`PIDFD_THREAD`).
//!
//! Restore: a pidfd of a live task is opened by the task that holds it,
//! after the tree is forked (`pidfd_open` of that pid: the task exists, or
//! is about to, with the pid it had). A pidfd of a reaped process is made
//! by criu-rs from a child that exits at once and is reaped once every
//! pidfd of the same process is open, so they read as an exited process
//! (`POLLIN`, `Pid: -1`) that is nobody's child.

use super::fdtable::set_status_flags;
use super::{CollectCtx, FdKind, FdProbe, FileDesc, FileDumpError, FilesSink, InTaskCtx, LoadCtx, OpenCtx, Opened};
use crate::images::pb::{self, FdTypes};
use crate::images::ImageError;
use crate::proc::kind_fdinfo::parse_pidfd;
use crate::restore::error::{RestoreError, Result, SysContext};
use rustix::fd::OwnedFd;
use rustix::process::{Pid, PidfdFlags};
use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::time::{Duration, Instant};

/// The kind.
pub struct Pidfd;

/// `PIDFD_THREAD` (`O_EXCL`): a pidfd of one thread.
const PIDFD_THREAD: u32 = libc::O_EXCL as u32;

/// How long a task waits for the task its pidfd names to be forked.
const WAIT_FOR_TASK: Duration = Duration::from_secs(30);

/// What a pidfd refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// A task of the tree, by pid.
    Task(i32),
    /// A process already reaped: pidfds with the same pidfs inode number
    /// referred to the same one.
    Reaped {
        /// The pidfs inode number (as the image keeps it, 32 bits).
        ino: u32,
    },
}

/// A pidfd as dumped, or how to recreate it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PidfdPlan {
    /// Open flags (`O_NONBLOCK`), without the access mode.
    pub flags: u32,
    /// Whom it refers to.
    pub target: Target,
}

/// Reaped processes made up for pidfds by pidfs inode: the child standing
/// in for it, reaped when this is dropped (every description is open then).
#[derive(Default)]
pub struct Standins {
    children: BTreeMap<u32, i32>,
}

impl Drop for Standins {
    fn drop(&mut self) {
        for &pid in self.children.values() {
            let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None);
        }
    }
}

/// `pidfd_open(pid, flags)`.
fn pidfd_open(pid: i32, flags: u32) -> std::result::Result<OwnedFd, rustix::io::Errno> {
    let pid = Pid::from_raw(pid).ok_or(rustix::io::Errno::SRCH)?;
    rustix::process::pidfd_open(pid, PidfdFlags::from_bits_retain(flags & libc::O_NONBLOCK as u32))
}

/// A child of criu-rs that exits at once (a stand-in for a reaped process).
fn exited_child() -> Result<i32> {
    // SAFETY: the child only calls _exit; criu-rs is single-threaded while
    // it opens descriptions (restore's documented requirement).
    match unsafe { libc::fork() } {
        -1 => Err(RestoreError::sys("fork (a pidfd's reaped process)", rustix::io::Errno::from_io_error(&std::io::Error::last_os_error()).unwrap_or(rustix::io::Errno::AGAIN))),
        // SAFETY: leaving the child at once, without running any handler.
        0 => unsafe { libc::_exit(0) },
        pid => Ok(pid),
    }
}

impl FdKind for Pidfd {
    const FD_TYPE: FdTypes = FdTypes::Pidfd;
    type Dumped = PidfdPlan;
    type Plan = PidfdPlan;
    type OpenState = Standins;

    fn claims(p: &FdProbe) -> bool {
        p.target == "anon_inode:[pidfd]" || p.target.starts_with("pidfd:")
    }

    fn collect(p: &FdProbe, cx: &mut CollectCtx<'_>) -> std::result::Result<PidfdPlan, FileDumpError> {
        let path = crate::proc::path(p.pid, &format!("fdinfo/{}", p.fd));
        let t = parse_pidfd(&p.fdinfo, &path)?;
        let flags = p.flags() & !(libc::O_ACCMODE as u32);
        if flags & PIDFD_THREAD != 0 {
            return Err(FileDumpError::UnsupportedState { at: p.at(), what: "a pidfd of a thread (PIDFD_THREAD)".into() });
        }
        let target = match t.pid {
            None => Target::Reaped { ino: p.md.ino() as u32 },
            Some(pid) if cx.in_tree(pid) => Target::Task(pid),
            Some(pid) => {
                return Err(FileDumpError::UnsupportedState {
                    at: p.at(),
                    what: format!("a pidfd of process {pid}, which is not in the dumped tree"),
                })
            }
        };
        Ok(PidfdPlan { flags, target })
    }

    fn write(f: &FileDesc, d: &PidfdPlan, sink: &mut FilesSink<'_>) -> std::result::Result<(), ImageError> {
        let (nspid, ino) = match d.target {
            Target::Task(pid) => (pid, 0),
            Target::Reaped { ino } => (-1, ino),
        };
        let pidfd = pb::PidfdEntry { id: Some(f.id), ino: Some(ino), flags: Some(d.flags), nspid: Some(nspid), fown: Some(f.fown.entry()) };
        sink.push(pb::FileEntry { r#type: Some(FdTypes::Pidfd as i32), id: Some(f.id), pidfd: Some(pidfd), ..Default::default() });
        Ok(())
    }

    fn load(e: &pb::FileEntry, cx: &LoadCtx<'_>) -> Result<PidfdPlan> {
        let id = e.id.unwrap_or_default();
        let p = e.pidfd.as_ref().ok_or_else(|| cx.bad(format!("file {id:#x} is PIDFD without pidfd_entry")))?;
        let flags = p.flags.unwrap_or_default();
        if flags & PIDFD_THREAD != 0 || flags & !(libc::O_NONBLOCK as u32 | PIDFD_THREAD) != 0 {
            return Err(cx.unsupported(format!("pidfd {id:#x} with flags {flags:#x}")));
        }
        let target = match p.nspid.unwrap_or_default() {
            -1 => Target::Reaped { ino: p.ino.unwrap_or_default() },
            pid if pid > 0 => Target::Task(pid),
            pid => return Err(cx.bad(format!("pidfd {id:#x} names pid {pid}"))),
        };
        Ok(PidfdPlan { flags, target })
    }

    fn open(p: &PidfdPlan, st: &mut Standins, _cx: &OpenCtx<'_>) -> Result<Opened> {
        let Target::Reaped { ino } = p.target else {
            return Ok(Opened::InTask);
        };
        let pid = match st.children.get(&ino) {
            Some(&pid) => pid,
            None => {
                let pid = exited_child()?;
                st.children.insert(ino, pid);
                pid
            }
        };
        let fd = pidfd_open(pid, p.flags).sys(|| format!("pidfd_open({pid}) for a reaped process"))?;
        Ok(Opened::Fd(fd))
    }

    fn name(p: &PidfdPlan) -> String {
        match p.target {
            Target::Task(pid) => format!("pidfd of task {pid}"),
            Target::Reaped { ino } => format!("pidfd of a reaped process (inode {ino})"),
        }
    }

    fn pids_needed(p: &PidfdPlan) -> Vec<i32> {
        match p.target {
            Target::Task(pid) => vec![pid],
            Target::Reaped { .. } => Vec::new(),
        }
    }

    fn open_in_task(p: &PidfdPlan, _cx: &InTaskCtx<'_>) -> Result<OwnedFd> {
        let Target::Task(pid) = p.target else {
            return Err(RestoreError::Prepare("a reaped process's pidfd is opened by criu-rs".into()));
        };
        // The task may be forked by another branch of the tree right now.
        let deadline = Instant::now() + WAIT_FOR_TASK;
        let fd = loop {
            match pidfd_open(pid, p.flags) {
                Err(rustix::io::Errno::SRCH) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(1)),
                r => break r.sys(|| format!("pidfd_open({pid}, {:#x})", p.flags))?,
            }
        };
        set_status_flags(&fd, p.flags as i32)?;
        Ok(fd)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustix::fd::AsRawFd;

    #[test]
    fn a_reaped_stand_in_reads_as_exited() {
        let plan = PidfdPlan { flags: libc::O_NONBLOCK as u32, target: Target::Reaped { ino: 7 } };
        let mut st = Standins::default();
        let cx = OpenCtx { floor: 3, opened: &Default::default(), memfds: &Default::default(), later: &Default::default() };
        let Opened::Fd(a) = Pidfd::open(&plan, &mut st, &cx).unwrap() else { panic!() };
        let Opened::Fd(b) = Pidfd::open(&plan, &mut st, &cx).unwrap() else { panic!() };
        assert_eq!(st.children.len(), 1, "one stand-in per reaped process");
        drop(st);
        for fd in [&a, &b] {
            let text = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.as_raw_fd())).unwrap();
            assert!(text.contains("Pid:\t-1"), "{text}");
        }
        let mut pfd = [rustix::event::PollFd::new(&a, rustix::event::PollFlags::IN)];
        assert_eq!(rustix::event::poll(&mut pfd, None).unwrap(), 1);
    }
}
