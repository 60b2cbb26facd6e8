//! The holder of the tracking userfaultfds between two dumps, and the
//! record that lets the next dump find it.
//!
//! After a pre-dump (or a `--track-mem --leave-running` dump) criu-rs
//! forks a small detached process, named `criu-rs-track`, that keeps every
//! task's tracking descriptor ([`super::track`]) open and waits on the
//! tasks' pidfds; it exits when they are all gone, or when the next dump
//! has taken the descriptors over and kills it. It runs no Rust code that
//! allocates: it is forked from a process that may have threads.
//!
//! `DIR/dirty-track` (text, not an image) names it:
//!
//! ```text
//! criu-rs dirty-track 1
//! tracker PID STARTTIME
//! task PID STARTTIME FD
//! ...
//! ```
//!
//! STARTTIME is field 22 of `/proc/PID/stat`: a pid reused by another
//! process does not match. FD is the descriptor's number in the tracker.

use super::DumpError;
use crate::uffd::Uffd;
use rustix::fd::{AsRawFd, OwnedFd};
use std::collections::BTreeMap;
use std::path::Path;

/// Name of the record in an images directory.
pub const RECORD: &str = "dirty-track";
/// The tracker's `comm`.
const COMM: &[u8] = b"criu-rs-track\0";
/// First line of the record.
const HEADER: &str = "criu-rs dirty-track 1";

/// The tracking descriptors taken over from a parent dump's tracker.
#[derive(Debug)]
pub struct Adopted {
    /// Per task pid, its descriptor.
    pub uffds: BTreeMap<i32, Uffd>,
    /// The old tracker, killed once the dump has used its descriptors.
    tracker: OwnedFd,
}

impl Adopted {
    /// Ends the old tracker: its descriptors are ours (or, after a failed
    /// dump, tracking restarts from scratch next time, which is safe).
    pub fn retire(self) {
        let _ = rustix::process::pidfd_send_signal(&self.tracker, rustix::process::Signal::KILL);
    }
}

/// The start time of `pid` (field 22 of `/proc/PID/stat`), if it runs.
fn starttime(pid: i32) -> Option<u64> {
    crate::proc::stat::read_stat(pid).ok().map(|st| st.start_time)
}

/// Takes over the descriptors recorded in `parent/dirty-track`, if its
/// tracker still runs and each task is still the process that was tracked.
/// `None` (with the reason logged) means no tracking: dump every page.
pub fn adopt(parent: &Path) -> Option<Adopted> {
    let path = parent.join(RECORD);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!("no dirty tracking from {}: {e}; every page is dumped", path.display());
            return None;
        }
    };
    let mut lines = text.lines();
    if lines.next() != Some(HEADER) {
        tracing::warn!("{}: not a criu-rs dirty-track record; every page is dumped", path.display());
        return None;
    }
    let mut tracker = None;
    let mut tasks = Vec::new();
    for l in lines {
        let f: Vec<&str> = l.split(' ').collect();
        let num = |i: usize| f.get(i).and_then(|s| s.parse::<u64>().ok());
        match (f.first().copied(), num(1), num(2), num(3)) {
            (Some("tracker"), Some(pid), Some(st), None) => tracker = Some((pid as i32, st)),
            (Some("task"), Some(pid), Some(st), Some(fd)) => tasks.push((pid as i32, st, fd as i32)),
            _ => {
                tracing::warn!("{}: bad line {l:?}; every page is dumped", path.display());
                return None;
            }
        }
    }
    let (tpid, tstart) = tracker?;
    let alive = crate::proc::stat::read_stat(tpid).is_ok_and(|st| st.start_time == tstart && st.comm == "criu-rs-track");
    if !alive {
        tracing::warn!("the dirty tracker of {} (pid {tpid}) is gone; every page is dumped", parent.display());
        return None;
    }
    let tracker = rustix::process::Pid::from_raw(tpid).and_then(|p| rustix::process::pidfd_open(p, rustix::process::PidfdFlags::empty()).ok())?;
    // The pidfd is of the process checked above unless it exited in between:
    // check once more now that it is held.
    if starttime(tpid) != Some(tstart) {
        return None;
    }
    let mut uffds = BTreeMap::new();
    for (pid, st, fd) in tasks {
        if starttime(pid) != Some(st) {
            tracing::info!(pid, "task tracked by {} is gone; not tracked", parent.display());
            continue;
        }
        let got = rustix::process::pidfd_getfd(&tracker, fd, rustix::process::PidfdGetfdFlags::empty());
        match got {
            Ok(fd) if is_uffd(&fd) => {
                uffds.insert(pid, Uffd::from_fd(fd));
            }
            Ok(_) => tracing::warn!(pid, "descriptor {fd} of the tracker is no userfaultfd"),
            Err(e) => tracing::warn!(pid, "pidfd_getfd from the tracker: {e}"),
        }
    }
    Some(Adopted { uffds, tracker })
}

/// Whether `fd` is a userfaultfd (by its `/proc/self/fd` link).
fn is_uffd(fd: &OwnedFd) -> bool {
    std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).is_ok_and(|l| l.as_os_str() == "anon_inode:[userfaultfd]")
}

/// Starts a tracker holding `tasks`' descriptors (pid, descriptor) and
/// writes `dir/dirty-track` naming it.
pub fn spawn(dir: &Path, tasks: &[(i32, &Uffd)]) -> Result<(), DumpError> {
    let err = |what: &str, e: std::io::Error| DumpError::Track(format!("starting the dirty tracker: {what}: {e}"));
    let mut keep: Vec<i32> = Vec::new();
    let mut pidfds = Vec::new();
    let mut record = format!("{HEADER}\n");
    let mut lines = Vec::new();
    for &(pid, uffd) in tasks {
        let p = rustix::process::Pid::from_raw(pid).ok_or_else(|| DumpError::Track(format!("bad pid {pid}")))?;
        let pidfd = rustix::process::pidfd_open(p, rustix::process::PidfdFlags::empty()).map_err(|e| err("pidfd_open", e.into()))?;
        let st = starttime(pid).ok_or_else(|| DumpError::Track(format!("pid {pid} is gone")))?;
        let fd = rustix::fd::AsFd::as_fd(uffd).as_raw_fd();
        keep.push(fd);
        keep.push(pidfd.as_raw_fd());
        lines.push(format!("task {pid} {st} {fd}\n"));
        pidfds.push(pidfd);
    }
    keep.sort_unstable();
    let mut polls: Vec<libc::pollfd> = pidfds.iter().map(|p| libc::pollfd { fd: p.as_raw_fd(), events: libc::POLLIN, revents: 0 }).collect();
    let (rx, tx) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).map_err(|e| err("pipe", e.into()))?;
    // SAFETY: fork; the child only makes async-signal-safe calls on memory
    // prepared before the fork (`keep`, `polls`), then `_exit`s.
    let middle = unsafe { libc::fork() };
    if middle < 0 {
        return Err(err("fork", std::io::Error::last_os_error()));
    }
    if middle == 0 {
        // SAFETY: only raw syscalls on prepared memory; never returns.
        unsafe { hold(tx.as_raw_fd(), &keep, &mut polls) }
    }
    drop(tx);
    let mut pid_bytes = [0u8; 4];
    let got = rustix::io::read(&rx, &mut pid_bytes).map_err(|e| err("reading its pid", e.into()));
    let mut status = 0;
    // SAFETY: waitpid on our own child.
    unsafe { libc::waitpid(middle, &mut status, 0) };
    if got? != 4 {
        return Err(DumpError::Track("the dirty tracker did not start".into()));
    }
    let tpid = i32::from_ne_bytes(pid_bytes);
    // Its comm is set before it reports its pid; its start time is fixed.
    let st = starttime(tpid).ok_or_else(|| DumpError::Track("the dirty tracker died at once".into()))?;
    record += &format!("tracker {tpid} {st}\n");
    for l in lines {
        record += &l;
    }
    let path = dir.join(RECORD);
    std::fs::write(&path, record).map_err(|source| DumpError::ImagesDir { path, source })?;
    tracing::info!(tracker = tpid, tasks = tasks.len(), "dirty tracking goes on");
    Ok(())
}

/// The forked side: a new session, a second fork (the tracker is nobody's
/// child to wait for), every descriptor but `keep` closed, then waiting
/// until every pidfd in `polls` has reported its task's exit.
///
/// # Safety
/// Must run in a freshly forked child; uses no allocation.
unsafe fn hold(report: i32, keep: &[i32], polls: &mut [libc::pollfd]) -> ! {
    // SAFETY (whole body): raw syscalls on memory prepared before the fork.
    unsafe {
        libc::setsid();
        let pid = libc::fork();
        if pid != 0 {
            libc::_exit(if pid < 0 { 1 } else { 0 });
        }
        libc::prctl(libc::PR_SET_NAME, COMM.as_ptr() as libc::c_ulong, 0, 0, 0);
        let me = libc::getpid();
        libc::write(report, (&me as *const i32).cast(), 4);
        // Close everything else (stdio included; nothing is printed).
        let mut from = 0u32;
        for &k in keep {
            if k as u32 > from {
                libc::syscall(libc::SYS_close_range, from, k as u32 - 1, 0);
            }
            from = k as u32 + 1;
        }
        libc::syscall(libc::SYS_close_range, from, u32::MAX, 0);
        let mut left = polls.len();
        while left > 0 {
            if libc::poll(polls.as_mut_ptr(), polls.len() as libc::nfds_t, -1) < 0 {
                continue;
            }
            for p in polls.iter_mut() {
                if p.fd >= 0 && p.revents != 0 {
                    p.fd = -1;
                    left -= 1;
                }
            }
        }
        libc::_exit(0)
    }
}
