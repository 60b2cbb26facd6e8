//! Freezing every thread of a process with `PTRACE_SEIZE` +
//! `PTRACE_INTERRUPT`, and letting them go again.
//!
//! A process stopped by job control (state `T`) is frozen like any other:
//! seized, its threads report `PTRACE_EVENT_STOP` with the stop signal
//! (the kernel puts the stop signal there while the group stop is in
//! effect, SIGTRAP otherwise), and [`Frozen::stop_signo`] says so. A stop
//! signal a thread dequeues while we freeze it (sent just before) is passed
//! on, so it stops as it would have; stop signals still queued for a thread
//! already stopped are taken and dropped (as CRIU does). Syscalls can still
//! be injected (a seized tracee runs when resumed, group stop or not), and
//! on detach the kernel puts every thread back into the group stop, which
//! lasts until a SIGCONT.

use super::{npid, sys, PtraceError, Result};
use crate::proc::misc::read_tasks;
use crate::proc::status::read_status_file;
use nix::errno::Errno;
use nix::sys::ptrace;
use nix::sys::signal::Signal;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use std::time::{Duration, Instant};

/// `PTRACE_EVENT_STOP`: the stop a `PTRACE_INTERRUPT` produces.
const PTRACE_EVENT_STOP: i32 = 128;

/// A process whose threads are all stopped under our ptrace.
///
/// Dropping it detaches every thread (they resume as they were); call
/// [`Frozen::detach`] to see errors, or [`Frozen::kill`] to end the process.
#[derive(Debug)]
pub struct Frozen {
    pid: i32,
    tids: Vec<i32>,
    released: bool,
    /// The signal of the job-control stop the process is in, if any.
    stop_signo: Option<i32>,
}

/// Whether a stop signal is a job-control (group) stop.
fn is_group_stop(sig: Signal) -> bool {
    matches!(sig, Signal::SIGSTOP | Signal::SIGTSTP | Signal::SIGTTIN | Signal::SIGTTOU)
}

/// Options to seize thread `tid` of `pid` with: a thread under seccomp has
/// its filters suspended while we trace it (`PTRACE_O_SUSPEND_SECCOMP`, as
/// root), so that the syscalls we inject run whatever they forbid.
fn seize_options(pid: i32, tid: i32) -> ptrace::Options {
    match read_status_file(pid, &format!("task/{tid}/status")) {
        Ok(s) if s.seccomp != 0 => ptrace::Options::from_bits_retain(libc::PTRACE_O_SUSPEND_SECCOMP),
        _ => ptrace::Options::empty(),
    }
}

/// Outcome of waiting for a seized thread.
enum Stopped {
    /// In our interrupt trap.
    Interrupted,
    /// In a job-control stop by this signal.
    Group(Signal),
    Gone,
}

/// Waits until `tid` sits in the stop our interrupt asked for, at most until
/// `deadline` (a thread in an uninterruptible wait cannot stop). Signals the
/// thread dequeued just before are handed back to it (as if they had come
/// before the dump).
fn wait_stop(tid: i32, deadline: Instant) -> Result<Stopped> {
    let mut pause = Duration::from_micros(20);
    loop {
        match waitpid(npid(tid), Some(WaitPidFlag::__WALL | WaitPidFlag::WNOHANG)).map_err(sys("waitpid", tid))? {
            WaitStatus::StillAlive => {
                if Instant::now() >= deadline {
                    let state = crate::proc::stat::read_stat_file(tid, "stat").map(|s| s.state).unwrap_or('?');
                    return Err(PtraceError::Unexpected {
                        tid,
                        what: format!("did not stop in time (state {state}; an uninterruptible wait?)"),
                    });
                }
                std::thread::sleep(pause);
                // Short: the tree is stopped from the first thread on.
                pause = (pause * 2).min(Duration::from_micros(200));
            }
            WaitStatus::PtraceEvent(_, sig, PTRACE_EVENT_STOP) if is_group_stop(sig) => return Ok(Stopped::Group(sig)),
            WaitStatus::PtraceEvent(_, _, PTRACE_EVENT_STOP) => return Ok(Stopped::Interrupted),
            WaitStatus::Stopped(_, sig) => {
                // A stop signal passed on stops the thread's group, which
                // it then reports as a group stop.
                tracing::debug!(tid, ?sig, "signal-delivery stop while freezing; passing it on");
                ptrace::cont(npid(tid), Some(sig)).map_err(sys("PTRACE_CONT", tid))?;
            }
            WaitStatus::Exited(..) | WaitStatus::Signaled(..) => return Ok(Stopped::Gone),
            other => {
                return Err(PtraceError::Unexpected { tid, what: format!("unexpected wait status {other:?} while freezing") })
            }
        }
    }
}

/// `1 << (sig - 1)`: a signal's bit in a `/proc/PID/status` mask.
fn sig_bit(sig: Signal) -> u64 {
    1 << (sig as i32 - 1)
}

/// Lets thread `tid` of a process in a job-control stop take the SIGSTOPs
/// (and unblocked SIGTSTPs) still queued for it or its group, dropping
/// them: it is stopped already, and a SIGCONT would discard them anyway.
/// Left queued, the thread would take them (and stop) as soon as it runs
/// code we inject. Each one is caught in its signal-delivery stop, then the
/// thread is interrupted again. Another unblocked signal queued with them
/// is left alone (the thread would take it first: injection then fails by
/// name).
fn drop_pending_stops(pid: i32, tid: i32, deadline: Instant) -> Result<()> {
    for _ in 0..4 {
        let st = read_status_file(pid, &format!("task/{tid}/status"))?;
        let pending = (st.sig_pnd | st.shd_pnd) & !st.sig_blk;
        let stops = sig_bit(Signal::SIGSTOP) | sig_bit(Signal::SIGTSTP);
        if pending & stops == 0 || pending & !stops != 0 {
            return Ok(());
        }
        // The first resumption may end in the group stop's trap again.
        let mut took = None;
        for _ in 0..4 {
            ptrace::cont(npid(tid), None).map_err(sys("PTRACE_CONT", tid))?;
            match waitpid(npid(tid), Some(WaitPidFlag::__WALL)).map_err(sys("waitpid", tid))? {
                WaitStatus::Stopped(_, sig) if sig_bit(sig) & stops != 0 => {
                    took = Some(sig);
                    break;
                }
                WaitStatus::PtraceEvent(_, _, PTRACE_EVENT_STOP) => {}
                other => {
                    return Err(PtraceError::Unexpected { tid, what: format!("wait status {other:?} while taking its queued stop signal") })
                }
            }
        }
        let Some(sig) = took else {
            return Err(PtraceError::Unexpected { tid, what: "its queued stop signal was never taken".into() });
        };
        tracing::debug!(tid, ?sig, "dropping a stop signal queued for a stopped task");
        // Back into a trap once the signal is suppressed.
        ptrace::interrupt(npid(tid)).map_err(sys("PTRACE_INTERRUPT", tid))?;
        ptrace::cont(npid(tid), None).map_err(sys("PTRACE_CONT", tid))?;
        if let Stopped::Gone = wait_stop(tid, deadline)? {
            return Err(PtraceError::Unexpected { tid, what: "exited while its queued stop signal was taken".into() });
        }
    }
    Ok(())
}

/// A process being frozen ([`Frozen::begin`]): its threads seized and
/// interrupted, their stops not collected yet ([`Freezing::finish`]).
/// Starting many before finishing any lets them all stop at once.
#[derive(Debug)]
pub struct Freezing {
    fr: Frozen,
    /// Threads interrupted whose stop is still to come.
    seized: Vec<i32>,
}

impl Frozen {
    /// Seizes and stops every thread of `pid`, repeating until no new thread
    /// shows up in `/proc/PID/task`; fails if that takes longer than `timeout`.
    pub fn freeze(pid: i32, timeout: Duration) -> Result<Frozen> {
        let deadline = Instant::now() + timeout;
        Frozen::begin(pid)?.finish(deadline)
    }

    /// Seizes and interrupts every thread of `pid` listed now, without
    /// waiting for them to stop.
    pub fn begin(pid: i32) -> Result<Freezing> {
        let st = read_status_file(pid, "status")?;
        if st.tracer_pid != 0 {
            return Err(PtraceError::AlreadyTraced { pid, tracer: st.tracer_pid });
        }
        let mut fr = Frozen { pid, tids: Vec::new(), released: false, stop_signo: None };
        let seized = fr.seize_new()?.unwrap_or_default();
        Ok(Freezing { fr, seized })
    }

    /// Seizes and interrupts the threads of the process not held yet; None
    /// when there is none (the ones that exited meanwhile are skipped).
    fn seize_new(&mut self) -> Result<Option<Vec<i32>>> {
        let pid = self.pid;
        let tids = read_tasks(pid)?;
        let new: Vec<i32> = tids.into_iter().filter(|t| !self.tids.contains(t)).collect();
        if new.is_empty() {
            return Ok(None);
        }
        let mut seized = Vec::new();
        for tid in new {
            match ptrace::seize(npid(tid), seize_options(pid, tid)) {
                Ok(()) => {}
                // The thread exited since the listing.
                Err(Errno::ESRCH) if tid != pid => continue,
                Err(Errno::EPERM) => {
                    match read_status_file(pid, &format!("task/{tid}/status")) {
                        Ok(s) if s.tracer_pid != 0 => return Err(PtraceError::AlreadyTraced { pid, tracer: s.tracer_pid }),
                        // A thread on its way out refuses to be attached.
                        Ok(s) if tid != pid && matches!(s.state, 'Z' | 'X') => continue,
                        Err(_) if tid != pid => continue,
                        _ if tid == pid => return Err(PtraceError::NotPermitted(pid)),
                        _ => return Err(PtraceError::Sys { op: "PTRACE_SEIZE", tid, errno: Errno::EPERM }),
                    }
                }
                Err(e) => return Err(PtraceError::Sys { op: "PTRACE_SEIZE", tid, errno: e }),
            }
            self.tids.push(tid);
            match ptrace::interrupt(npid(tid)) {
                Ok(()) => seized.push(tid),
                Err(Errno::ESRCH) if tid != pid => self.tids.retain(|t| *t != tid),
                Err(e) => return Err(PtraceError::Sys { op: "PTRACE_INTERRUPT", tid, errno: e }),
            }
        }
        Ok(Some(seized))
    }

    /// The signal that stopped the process (job control), if it was
    /// stopped when frozen.
    pub fn stop_signo(&self) -> Option<i32> {
        self.stop_signo
    }

    /// The process id.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Every frozen thread, the leader first when it is alive.
    pub fn tids(&self) -> Vec<i32> {
        let mut v = self.tids.clone();
        v.sort_by_key(|t| (*t != self.pid, *t));
        v
    }

    /// Lets every thread run on from where it stopped.
    pub fn detach(mut self) -> Result<()> {
        self.released = true;
        let mut first = Ok(());
        for &tid in &self.tids {
            if let Err(e) = ptrace::detach(npid(tid), None) {
                if e != Errno::ESRCH && first.is_ok() {
                    first = Err(PtraceError::Sys { op: "PTRACE_DETACH", tid, errno: e });
                }
            }
        }
        first
    }

    /// Gives up the hold without touching the threads (the caller has killed
    /// them and collects their exits); returns the thread ids.
    pub fn release(mut self) -> Vec<i32> {
        self.released = true;
        std::mem::take(&mut self.tids)
    }

    /// Kills the process with SIGKILL and waits until it is gone (or a
    /// zombie its parent has not reaped yet).
    pub fn kill(mut self) -> Result<()> {
        self.released = true;
        nix::sys::signal::kill(npid(self.pid), Signal::SIGKILL).map_err(sys("kill", self.pid))?;
        for &tid in &self.tids {
            let _ = ptrace::detach(npid(tid), None);
        }
        wait_gone(self.pid, std::time::Duration::from_secs(10));
        Ok(())
    }
}

/// Waits until `/proc/PID` disappears; returns early (false) at the deadline,
/// or after a grace period once it is a zombie that someone else must reap.
pub fn wait_gone(pid: i32, limit: std::time::Duration) -> bool {
    let start = std::time::Instant::now();
    let mut zombie_since = None;
    while start.elapsed() < limit {
        match crate::proc::stat::read_stat(pid) {
            Err(_) => return true,
            Ok(s) if s.state == 'Z' || s.state == 'X' => {
                let since = *zombie_since.get_or_insert_with(std::time::Instant::now);
                if since.elapsed() > std::time::Duration::from_secs(1) {
                    return false;
                }
            }
            Ok(_) => {}
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    false
}

impl Freezing {
    /// The process id.
    pub fn pid(&self) -> i32 {
        self.fr.pid
    }

    /// Waits until every interrupted thread stopped, then seizes the
    /// threads created meanwhile, until none is new; fails past `deadline`.
    pub fn finish(self, deadline: Instant) -> Result<Frozen> {
        let Freezing { mut fr, mut seized } = self;
        let pid = fr.pid;
        loop {
            for tid in seized {
                match wait_stop(tid, deadline)? {
                    Stopped::Gone if tid == pid => {
                        return Err(PtraceError::Unexpected { tid, what: "the process exited while being frozen".into() })
                    }
                    Stopped::Gone => fr.tids.retain(|t| *t != tid),
                    Stopped::Group(sig) => {
                        fr.stop_signo = Some(sig as i32);
                        drop_pending_stops(pid, tid, deadline)?;
                    }
                    Stopped::Interrupted => {}
                }
            }
            match fr.seize_new()? {
                Some(more) => seized = more,
                None => break,
            }
        }
        tracing::debug!(pid, threads = fr.tids.len(), stopped = ?fr.stop_signo, "frozen");
        Ok(fr)
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        if !self.released {
            for &tid in &self.tids {
                let _ = ptrace::detach(npid(tid), None);
            }
        }
    }
}
