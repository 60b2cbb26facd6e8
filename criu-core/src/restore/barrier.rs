//! The host's side of the blob handshake for a whole tree: every thread of
//! every task must sit at its last trap (right before `rt_sigreturn`)
//! before any of them goes on; then each thread is stepped through its
//! `rt_sigreturn`, the blob and its arguments are removed from each task
//! from outside, and everything is detached.
//!
//! The root is seized with `PTRACE_O_TRACEFORK | PTRACE_O_TRACECLONE`, so
//! the tasks it forks (and theirs) and the threads the blob clones are
//! traced from birth; their creation events and first stops are let go as
//! they come. [`TreeGuard`] kills every task of ours if anything fails.

use super::error::Result;
use super::finalize::{blob_failure, cleanup, died, failure, log_trail, ptrace_err, read_status, stage_name, step_syscalls, BlobPlace, StatusLog, ThreadEnd, PTRACE_EVENT_STOP};
use super::watch::{signame, Area, Fault, Watch};
use crate::abi::STAGE_SIGRETURN;
use nix::sys::ptrace;
use nix::sys::signal::Signal;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use rustix::fd::OwnedFd;

/// One live task being restored, from the host's side.
#[derive(Debug)]
pub struct Tracked {
    pub pid: i32,
    /// Its threads, the leader first.
    pub threads: Vec<ThreadEnd>,
    status_rx: OwnedFd,
    /// For a task not traced from birth: it waits on this until seized.
    go: Option<OwnedFd>,
    log: StatusLog,
    place: Option<BlobPlace>,
    /// Leave it in a job-control stop, as dumped (`TASK_STOPPED`): the
    /// signal that stopped it (`stop_signo`, 0 when the image has none).
    stopped: Option<i32>,
    /// Some task of the tree enters seccomp: trace with
    /// `PTRACE_O_SUSPEND_SECCOMP`.
    suspend_seccomp: bool,
    /// Its image's VMAs, to name where a crash happened.
    areas: Vec<Area>,
    /// The last signal a thread was seen taking in the blob.
    fault: Option<Fault>,
}

impl Tracked {
    pub fn new(pid: i32, threads: Vec<ThreadEnd>, status_rx: OwnedFd, go: Option<OwnedFd>, stopped: Option<i32>) -> Self {
        Tracked {
            pid,
            threads,
            status_rx,
            go,
            log: StatusLog::default(),
            place: None,
            stopped,
            suspend_seccomp: false,
            areas: Vec::new(),
            fault: None,
        }
    }

    /// The areas of its image (named in crash reports).
    pub fn with_areas(self, areas: Vec<Area>) -> Self {
        Tracked { areas, ..self }
    }

    /// The image's areas and criu-rs's own (blob, arguments) once placed.
    fn all_areas(&self) -> Vec<Area> {
        let mut v = self.areas.clone();
        if let Some(pl) = self.log.place() {
            let own = |start: u64, len: u64, what: &str| Area { start, end: start + len, prot: String::new(), what: what.into() };
            v.push(own(pl.blob_start, pl.blob_len, "criu-rs's restorer blob"));
            v.push(own(pl.args_start, pl.args_len, "criu-rs's restorer arguments"));
        }
        v
    }

    /// How the task died in the blob: the signal a thread took there, if one.
    fn crash(&self) -> String {
        match &self.fault {
            Some(f) => format!("; thread {} took {}", f.tid, f.describe(&self.all_areas())),
            None => String::new(),
        }
    }

    /// Traces the task with its seccomp suspended (set on every task of a
    /// tree where one enters seccomp).
    pub fn suspending_seccomp(self, on: bool) -> Self {
        Tracked { suspend_seccomp: on, ..self }
    }
}

/// `PTRACE_SEIZE(pid, EXITKILL | TRACESYSGOOD | TRACEEXIT | TRACEFORK |
/// TRACECLONE)`: every task and thread created below it is ours to trace
/// (with the same options), and dies if criu-rs dies. With
/// `suspend_seccomp`, also `PTRACE_O_SUSPEND_SECCOMP`: the filters a
/// thread enters at the end of the blob do not apply to what is left of
/// it nor to our clean-up calls, only once we let it go.
fn seize_tree(pid: i32, suspend_seccomp: bool) -> Result<()> {
    use ptrace::Options as O;
    let mut opts = O::PTRACE_O_EXITKILL | O::PTRACE_O_TRACESYSGOOD | O::PTRACE_O_TRACEEXIT | O::PTRACE_O_TRACEFORK | O::PTRACE_O_TRACECLONE;
    if suspend_seccomp {
        opts |= O::from_bits_retain(libc::PTRACE_O_SUSPEND_SECCOMP);
    }
    ptrace::seize(Pid::from_raw(pid), opts).map_err(ptrace_err(pid, "PTRACE_SEIZE"))
}

/// Holds every task until all reached the trap, asks `before_release`
/// (an error there fails the restore, the guard kills the tree), steps
/// every thread through its `rt_sigreturn` (all in the same two steps)
/// and removes the blob, asks
/// `check` (every task is then as it will run, still stopped and traced:
/// `--verify` looks at it), then lets them all go: detached, or, with
/// `watch`, still traced by the returned [`Watch`] (all but tasks left
/// stopped).
#[tracing::instrument(level = "debug", skip_all, fields(tasks = tasks.len()))]
pub fn run(
    tasks: &mut [Tracked],
    guard: &mut TreeGuard,
    watch: bool,
    before_release: &mut dyn FnMut() -> Result<()>,
    check: &mut dyn FnMut() -> Result<()>,
) -> Result<Watch> {
    let mut trapped = std::collections::HashSet::new();
    for k in 0..tasks.len() {
        if let Some(go) = tasks[k].go.take() {
            // The root (our child), or a task forked by a helper (whose
            // parent has reaped the helper, so it exists by now).
            let t = &tasks[k];
            seize_tree(t.pid, t.suspend_seccomp)?;
            guard.saw(t.pid, t.pid);
            rustix::io::write(&go, b"g").map_err(|e| died(t.pid, format!("starting the task: {e}")))?;
        }
        for i in 0..tasks[k].threads.len() {
            let tid = tasks[k].threads[i].tid;
            while !trapped.contains(&tid) {
                wait_any(tasks, tid, &mut trapped, guard)?;
            }
        }
    }
    tracing::debug!(tasks = tasks.len(), "every thread of every task reached the blob's last stop");
    if tracing::enabled!(tracing::Level::DEBUG) {
        for t in tasks.iter() {
            if let Some(st) = t.place.as_ref().and_then(|pl| read_status(t.pid, pl)) {
                log_trail(t.pid, &st);
            }
        }
    }
    guard.all_trapped = true;
    before_release()?;
    let mut watched = Watch::default();
    let threads: Vec<(i32, i32)> = tasks.iter().flat_map(|t| t.threads.iter().map(move |th| (t.pid, th.tid))).collect();
    let insns = step_syscalls(&threads, libc::SYS_rt_sigreturn)?;
    for t in tasks.iter() {
        let leader = threads.iter().position(|&(_, tid)| tid == t.pid).and_then(|k| insns.get(k));
        finish(t, *leader.ok_or_else(|| died(t.pid, "no leader thread"))?)?;
    }
    check()?;
    for t in tasks.iter() {
        let_go(t, watch.then_some(&mut watched))?;
    }
    watched.start().map_err(ptrace_err(tasks.first().map_or(0, |t| t.pid), "starting the watch"))?;
    Ok(watched)
}

/// Waits for the next stop or exit of any thread of ours (while `awaited`
/// has not trapped) and handles it: a thread at the blob's trap is added
/// to `trapped` and left stopped; signals and creation events are passed
/// on. Every task runs as soon as it exists, whichever is waited for: a
/// task created while criu-rs waits for another one is not held up.
fn wait_any(tasks: &mut [Tracked], awaited: i32, trapped: &mut std::collections::HashSet<i32>, guard: &mut TreeGuard) -> Result<()> {
    let ws = match waitpid(None::<Pid>, Some(WaitPidFlag::__WALL)) {
        Ok(ws) => ws,
        Err(e) => {
            let t = tasks.iter_mut().find(|t| t.threads.iter().any(|th| th.tid == awaited)).ok_or_else(|| died(awaited, "not a task"))?;
            t.log.drain(&t.status_rx);
            return Err(match e {
                nix::errno::Errno::ECHILD => failure(t.pid, &t.log, || format!("thread {awaited} was never created")),
                e => died(t.pid, format!("waiting for thread {awaited}: waitpid: {e}")),
            });
        }
    };
    let Some(tid) = ws.pid().map(|p| p.as_raw()) else { return Ok(()) };
    let Some(t) = tasks.iter_mut().find(|t| t.threads.iter().any(|th| th.tid == tid)) else {
        // Not a thread of the plan: let it go on.
        tracing::debug!(tid, ?ws, "wait status of a thread not in the plan");
        let _ = ptrace::cont(Pid::from_raw(tid), None);
        return Ok(());
    };
    if handle_stop(t, tid, ws, guard)? {
        trapped.insert(tid);
    }
    Ok(())
}

/// Handles wait status `ws` of `tid` of task `t`; true when the thread
/// sits at the blob's trap (it stays stopped), else it was let go on.
fn handle_stop(t: &mut Tracked, tid: i32, ws: WaitStatus, guard: &mut TreeGuard) -> Result<bool> {
    let pid = t.pid;
    let p = Pid::from_raw(tid);
    guard.saw(pid, tid);
    match ws {
        WaitStatus::Stopped(_, Signal::SIGTRAP) => {
            t.log.drain(&t.status_rx);
            let place = t.log.place().ok_or_else(|| died(pid, format!("thread {tid} trapped before the blob was placed")))?;
            // status.stage is thread 0's; other threads show they
            // trapped in the blob by where they stopped.
            let st = read_status(pid, &place);
            let ready = if tid == pid {
                st.map(|s| s.stage) == Some(STAGE_SIGRETURN)
            } else {
                ptrace::getregs(p).is_ok_and(|r| (place.blob_start..place.blob_start + place.blob_len).contains(&r.rip))
            };
            if !ready {
                return Err(died(pid, format!("unexpected SIGTRAP in thread {tid}: {}", blob_failure(st))));
            }
            t.place = Some(place);
            return Ok(true);
        }
        WaitStatus::Stopped(_, sig) => {
            t.log.drain(&t.status_rx);
            let f = Fault::read(tid, sig as i32);
            tracing::debug!(pid, tid, "signal while restoring, passed on: {}", f.describe(&t.all_areas()));
            t.fault = Some(f);
            ptrace::cont(p, Some(sig)).map_err(ptrace_err(pid, "PTRACE_CONT"))?;
        }
        WaitStatus::PtraceEvent(_, _, ev) if ev == libc::PTRACE_EVENT_EXIT => {
            t.log.drain(&t.status_rx);
            let st = t.log.place().and_then(|pl| read_status(pid, &pl));
            if let Some(st) = &st {
                log_trail(pid, st);
            }
            let status = ptrace::getevent(p).unwrap_or(0) as i32;
            let _ = ptrace::cont(p, None);
            if libc::WIFSIGNALED(status) {
                let sig = libc::WTERMSIG(status);
                let stage = st.map_or_else(|| "before the blob started".to_string(), |s| format!("in the blob at stage {} ({})", s.stage, stage_name(s.stage)));
                return Err(died(pid, format!("thread {tid} died of {} {stage}{}", signame(sig), t.crash())));
            }
            return Err(failure(pid, &t.log, || blob_failure(st)));
        }
        WaitStatus::PtraceEvent(_, _, ev) => {
            if ev == libc::PTRACE_EVENT_FORK || ev == libc::PTRACE_EVENT_VFORK {
                if let Ok(child) = ptrace::getevent(p) {
                    guard.saw(child as i32, child as i32);
                }
            } else if ev == libc::PTRACE_EVENT_CLONE {
                if let Ok(thread) = ptrace::getevent(p) {
                    guard.saw(pid, thread as i32);
                }
            } else if ev != PTRACE_EVENT_STOP {
                tracing::debug!(pid, tid, ev, "ptrace event while restoring");
            }
            ptrace::cont(p, None).map_err(ptrace_err(pid, "PTRACE_CONT"))?;
        }
        WaitStatus::PtraceSyscall(_) => {
            ptrace::cont(p, None).map_err(ptrace_err(pid, "PTRACE_CONT"))?;
        }
        WaitStatus::Exited(_, code) => {
            t.log.drain(&t.status_rx);
            return Err(failure(pid, &t.log, || format!("thread {tid} exited with status {code}")));
        }
        WaitStatus::Signaled(_, sig, _) => return Err(died(pid, format!("thread {tid} killed by {sig:?}{}", t.crash()))),
        other => tracing::debug!(pid, tid, ?other, "wait status while restoring"),
    }
    Ok(false)
}

/// Removes the blob from `t` (its threads past `rt_sigreturn`, the
/// leader's `syscall` instruction at `leader_insn`); every thread stays
/// stopped and traced.
#[tracing::instrument(level = "debug", skip_all, fields(pid = t.pid, threads = t.threads.len()))]
fn finish(t: &Tracked, leader_insn: u64) -> Result<()> {
    let place = t.place.as_ref().ok_or_else(|| died(t.pid, "no blob placement"))?;
    cleanup(t.pid, leader_insn, place, &t.threads)
}

/// Detaches every thread of `t` (stopped first if it was dumped stopped),
/// or hands them to `watch`.
fn let_go(t: &Tracked, watch: Option<&mut Watch>) -> Result<()> {
    if let Some(dumped) = t.stopped {
        // Queued while every thread is still ours: each one takes it (the
        // whole group stops, the parent is told, with this signal) before
        // it runs any code.
        let sig = stop_signal(t.pid, dumped);
        nix::sys::signal::kill(Pid::from_raw(t.pid), sig).map_err(ptrace_err(t.pid, "kill(stop signal)"))?;
    }
    match watch {
        Some(w) if t.stopped.is_none() => {
            w.add(t.pid, t.threads.iter().map(|th| th.tid).collect(), t.areas.clone());
            tracing::debug!(pid = t.pid, threads = t.threads.len(), "task restored, watched as it runs");
            return Ok(());
        }
        _ => {}
    }
    for tid in t.threads.iter().rev().map(|th| th.tid) {
        ptrace::detach(Pid::from_raw(tid), None).map_err(ptrace_err(t.pid, "PTRACE_DETACH"))?;
    }
    tracing::debug!(pid = t.pid, threads = t.threads.len(), "task restored and running");
    Ok(())
}

/// The signal that puts restored task `pid` back into the job-control stop
/// it was dumped in by signal `dumped`: that one (its parent's `waitid`
/// reports it) when it surely stops the task: SIGSTOP, or SIGTSTP, SIGTTIN
/// or SIGTTOU left at its default action, not blocked by the leader, in a
/// process group that is not orphaned (the kernel discards those there).
/// Otherwise SIGSTOP.
fn stop_signal(pid: i32, dumped: i32) -> Signal {
    let sig = match Signal::try_from(dumped) {
        Ok(s @ (Signal::SIGTSTP | Signal::SIGTTIN | Signal::SIGTTOU)) => s,
        _ => return Signal::SIGSTOP,
    };
    let bit = 1u64 << (dumped - 1);
    let default_action = match crate::proc::status::read_status(pid) {
        Ok(st) => (st.sig_blk | st.sig_cgt | st.sig_ign) & bit == 0,
        Err(_) => false,
    };
    if default_action && !pgrp_orphaned(pid) {
        sig
    } else {
        Signal::SIGSTOP
    }
}

/// Whether the process group of `pid` is orphaned: no member has its parent
/// in another group of the same session (read from `/proc`; unreadable
/// counts as orphaned).
fn pgrp_orphaned(pid: i32) -> bool {
    use crate::proc::stat::read_stat;
    let Ok(me) = read_stat(pid) else { return true };
    let Ok(dir) = std::fs::read_dir("/proc") else { return true };
    let pids = dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok());
    let mut members = pids.filter_map(|p| read_stat(p).ok()).filter(|s| s.pgid == me.pgid);
    !members.any(|m| matches!(read_stat(m.ppid), Ok(p) if p.pgid != me.pgid && p.sid == me.sid))
}

/// Every task created for the restore; on drop (unless disarmed) all are
/// SIGKILLed and waited for, so a failed restore leaves nothing behind.
/// A task is ours if it is the root, if a task of ours reported forking
/// it, or if we trace it.
#[derive(Debug)]
pub struct TreeGuard {
    /// (pid, tids seen).
    tasks: Vec<(i32, Vec<i32>)>,
    all_trapped: bool,
    armed: bool,
}

impl TreeGuard {
    /// Takes charge of the root, our child.
    pub fn new(root: i32) -> Self {
        TreeGuard { tasks: vec![(root, vec![root])], all_trapped: false, armed: true }
    }

    /// Records thread `tid` of task `pid` as ours.
    fn saw(&mut self, pid: i32, tid: i32) {
        match self.tasks.iter_mut().find(|t| t.0 == pid) {
            Some(t) if !t.1.contains(&tid) => t.1.push(tid),
            Some(_) => {}
            None => self.tasks.push((pid, vec![tid])),
        }
    }

    /// Restore succeeded: leave every task alone.
    pub fn disarm(mut self) {
        self.armed = false;
    }
}

/// Whether `/proc/PID/status` names us as the tracer.
fn traced_by_us(pid: i32) -> bool {
    let me = std::process::id().to_string();
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map(|s| s.lines().any(|l| l.strip_prefix("TracerPid:").is_some_and(|v| v.trim() == me)))
        .unwrap_or(false)
}

/// Tasks of ours not seen yet: children of ours still traced (forked but
/// not waited for) found in `/proc`.
fn unseen_tracees(known: &[(i32, Vec<i32>)]) -> Vec<i32> {
    let Ok(rd) = std::fs::read_dir("/proc") else { return Vec::new() };
    rd.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| !known.iter().any(|t| t.0 == *pid) && traced_by_us(*pid))
        .collect()
}

impl Drop for TreeGuard {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let extra = unseen_tracees(&self.tasks);
        for pid in extra {
            self.tasks.push((pid, vec![pid]));
        }
        // Killed traced threads stop at PTRACE_EVENT_EXIT until let go, and
        // the leader's exit waits for them: know every one of them.
        for (pid, tids) in self.tasks.iter_mut() {
            let Ok(rd) = std::fs::read_dir(format!("/proc/{pid}/task")) else { continue };
            for tid in rd.flatten().filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok()) {
                if !tids.contains(&tid) {
                    tids.push(tid);
                }
            }
        }
        tracing::warn!(tasks = self.tasks.len(), all_trapped = self.all_trapped, "killing the half-restored tree");
        for (pid, _) in &self.tasks {
            // SAFETY: kill(2) on a task this restore created (see above).
            unsafe { libc::kill(*pid, libc::SIGKILL) };
        }
        for (pid, tids) in &self.tasks {
            for &tid in tids.iter().filter(|&&t| t != *pid).chain(std::iter::once(pid)) {
                reap(tid);
            }
        }
    }
}

/// Waits until `tid` (killed) is gone for us: exited, or not ours to wait.
fn reap(tid: i32) {
    let p = Pid::from_raw(tid);
    loop {
        match waitpid(p, Some(WaitPidFlag::__WALL)) {
            Ok(WaitStatus::Exited(..)) | Ok(WaitStatus::Signaled(..)) | Err(_) => break,
            Ok(_) => {
                let _ = ptrace::cont(p, None);
            }
        }
    }
}
