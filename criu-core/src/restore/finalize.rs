//! The parent's side of the blob's last step for one task: read what the
//! task and the blob reported, step a thread through its `rt_sigreturn`,
//! remove everything of criu-rs from the task from outside (injected
//! `close`/`munmap`). [`super::barrier`] drives it for every task.
//!
//! Handshake (see `abi.rs`): the blob stops itself with `int3` once the
//! task is restored; we check `status.stage == STAGE_SIGRETURN`, step it
//! through the `rt_sigreturn` syscall with `PTRACE_SYSCALL` (entry, then
//! exit, which leaves the dumped registers in place; every thread of the
//! tree in the same two steps, [`step_syscalls`]), then inject the
//! clean-up calls on the blob's own `syscall` instruction with all signals
//! blocked, put the registers and mask back and detach.

use super::error::{RestoreError, Result};
use crate::abi::{RestoreArgs, RestoreStatus};
use crate::ptrace::inject::Injector;
use nix::sys::ptrace;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use rustix::fd::OwnedFd;

/// `PTRACE_EVENT_STOP` (group stop or interrupt under PTRACE_SEIZE).
pub(super) const PTRACE_EVENT_STOP: i32 = 128;

/// Where the child put the blob and its arguments (its `placed` line).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobPlace {
    pub blob_start: u64,
    pub blob_len: u64,
    pub args_start: u64,
    pub args_len: u64,
    /// The task's fds that belong to criu-rs (closed at the end).
    pub close_fds: Vec<i32>,
}

/// The status pipe's contents so far: the `placed` line, error lines.
#[derive(Debug, Default)]
pub(super) struct StatusLog {
    text: String,
}

impl StatusLog {
    /// Reads whatever is in the pipe without blocking.
    pub(super) fn drain(&mut self, fd: &OwnedFd) {
        let mut buf = [0u8; 4096];
        while let Ok(n @ 1..) = rustix::io::read(fd, &mut buf) {
            self.text.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    }

    pub(super) fn place(&self) -> Option<BlobPlace> {
        let line = self.text.lines().find_map(|l| l.strip_prefix(super::child::PLACED))?;
        let n: Vec<u64> = line.split_whitespace().map(|w| w.parse().ok()).collect::<Option<_>>()?;
        match n[..] {
            [blob_start, blob_len, args_start, args_len, ref fds @ ..] => Some(BlobPlace {
                blob_start,
                blob_len,
                args_start,
                args_len,
                close_fds: fds.iter().map(|&f| f as i32).collect(),
            }),
            _ => None,
        }
    }

    /// The error lines the task or the blob wrote.
    fn errors(&self) -> String {
        let lines: Vec<&str> = self.text.lines().filter(|l| !l.starts_with(super::child::PLACED)).collect();
        lines.join("; ")
    }
}

/// The error for a task that ended before the handshake: its own message
/// if it wrote one, else `otherwise()`.
pub(super) fn failure(pid: i32, log: &StatusLog, otherwise: impl FnOnce() -> String) -> RestoreError {
    let errors = log.errors();
    match errors.strip_prefix("error: ") {
        Some(msg) => RestoreError::InTask { pid, message: msg.to_string() },
        None if errors.is_empty() => died(pid, otherwise()),
        None => died(pid, format!("{}: {errors}", otherwise())),
    }
}

pub(super) fn died(pid: i32, problem: impl Into<String>) -> RestoreError {
    RestoreError::TaskDied { pid, problem: problem.into() }
}

pub(super) fn ptrace_err(pid: i32, what: &str) -> impl Fn(nix::errno::Errno) -> RestoreError + '_ {
    move |e| died(pid, format!("{what}: {e}"))
}

/// Reads the blob's [`RestoreStatus`] through `/proc/PID/mem`.
pub(super) fn read_status(pid: i32, place: &BlobPlace) -> Option<RestoreStatus> {
    let off = place.args_start + std::mem::offset_of!(RestoreArgs, status) as u64;
    let mut buf = [0u8; std::mem::size_of::<RestoreStatus>()];
    crate::ptrace::remote::read_exact(pid, off, &mut buf).ok()?;
    // SAFETY: RestoreStatus is plain integers; any bytes are a valid value.
    Some(unsafe { std::ptr::read_unaligned(buf.as_ptr().cast::<RestoreStatus>()) })
}

/// Describes a failed blob from its status block.
pub(super) fn blob_failure(st: Option<RestoreStatus>) -> String {
    match st {
        Some(s) if s.stage == crate::abi::STAGE_THREADS && s.error == -(libc::EEXIST as i64) => {
            format!("thread {} cannot get its tid: it is already in use (EEXIST)", s.detail)
        }
        Some(s) => format!(
            "the blob failed at stage {} ({}) with error {} (detail {:#x})",
            s.stage,
            stage_name(s.stage),
            s.error,
            s.detail
        ),
        None => "the blob failed (status unreadable)".to_string(),
    }
}

/// Logs (`-v4`) the blob's stages in task `pid` from its status trail:
/// each stage with the time until the next one was entered.
pub(super) fn log_trail(pid: i32, st: &RestoreStatus) {
    let n = (st.trail_len as usize).min(crate::abi::TRAIL_LEN);
    let marks = &st.trail[..n];
    for (i, m) in marks.iter().enumerate() {
        let took = marks.get(i + 1).map(|next| next.ns.saturating_sub(m.ns));
        match took {
            Some(ns) => tracing::debug!(pid, stage = m.stage, us = ns / 1000, "blob: {}", stage_name(m.stage)),
            None => tracing::debug!(pid, stage = m.stage, "blob: {} (last)", stage_name(m.stage)),
        }
    }
    if let (Some(first), Some(last)) = (marks.first(), marks.last()) {
        tracing::debug!(pid, stages = n, us = last.ns.saturating_sub(first.ns) / 1000, "blob: done");
    }
    if st.trail_len as usize > n {
        tracing::debug!(pid, dropped = st.trail_len as usize - n, "blob: more stages than its trail holds");
    }
}

/// What the blob was doing at `STAGE_*` `stage`.
pub(super) fn stage_name(stage: u32) -> &'static str {
    use crate::abi::*;
    match stage {
        STAGE_START => "start",
        STAGE_CHECK_ARGS => "checking its arguments",
        STAGE_BLOCK_SIGNALS => "blocking signals",
        STAGE_PARK_VDSO => "parking the vDSO",
        STAGE_UNMAP => "unmapping the old memory",
        STAGE_REMAP => "moving memory into place",
        STAGE_MAP_SHARED => "mapping shared files",
        STAGE_PROTECT => "setting protections",
        STAGE_MADVISE => "applying madvise",
        STAGE_VDSO => "restoring the vDSO",
        STAGE_MM => "PR_SET_MM_MAP",
        STAGE_RLIMITS => "rlimits",
        STAGE_SIGACTIONS => "sigactions",
        STAGE_ITIMERS => "interval timers",
        STAGE_POSIX_TIMERS => "POSIX timers",
        STAGE_THREAD_STATE => "thread state",
        STAGE_PERSONALITY => "personality",
        STAGE_CREDS => "credentials",
        STAGE_SIGNALS => "pending signals",
        STAGE_SIGFRAME => "building the signal frame",
        STAGE_SIGRETURN => "rt_sigreturn",
        STAGE_THREADS => "creating threads",
        STAGE_LAZY => "registering lazy memory",
        STAGE_SECCOMP => "seccomp",
        STAGE_GUARDS => "installing guard regions",
        STAGE_SCHED => "scheduling policy and nice value",
        STAGE_MEMBARRIER => "membarrier registrations",
        _ => "unknown stage",
    }
}

/// One thread to finish: its tid and its robust futex list (`head`, `len`;
/// 0 = none), which only the thread itself can set and the blob does not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThreadEnd {
    pub tid: i32,
    pub robust_head: u64,
    pub robust_len: u64,
}

/// Steps every thread of `threads` ((task pid, tid)) through system call
/// `nr`, which each is about to make: resumes them all to the call's entry
/// stop, then all to its exit stop (which leaves the registers the call
/// set). All are resumed before any is waited for, so the tree pays one
/// scheduling delay per step rather than one per thread. Returns the
/// address of each thread's `syscall` instruction.
pub(super) fn step_syscalls(threads: &[(i32, i32)], nr: i64) -> Result<Vec<u64>> {
    let mut insns = Vec::with_capacity(threads.len());
    for entry in [true, false] {
        for &(pid, tid) in threads {
            ptrace::syscall(Pid::from_raw(tid), None).map_err(ptrace_err(pid, "PTRACE_SYSCALL"))?;
        }
        for &(pid, tid) in threads {
            let regs = syscall_stop(pid, tid)?;
            if entry {
                if regs.orig_rax as i64 != nr {
                    return Err(died(pid, format!("expected syscall {nr} in thread {tid}, the blob called syscall {}", regs.orig_rax as i64)));
                }
                insns.push(regs.rip - 2);
            }
        }
    }
    Ok(insns)
}

/// Waits for thread `tid` (of task `pid`) to stop at a system call's entry
/// or exit; returns its registers there.
fn syscall_stop(pid: i32, tid: i32) -> Result<libc::user_regs_struct> {
    let p = Pid::from_raw(tid);
    match waitpid(p, Some(WaitPidFlag::__WALL)).map_err(ptrace_err(pid, "waitpid"))? {
        WaitStatus::PtraceSyscall(_) => ptrace::getregs(p).map_err(ptrace_err(pid, "PTRACE_GETREGS")),
        WaitStatus::Exited(_, code) => Err(died(pid, format!("thread {tid} exited with status {code} in rt_sigreturn"))),
        WaitStatus::Signaled(_, sig, _) => Err(died(pid, format!("thread {tid} killed by {sig:?} in rt_sigreturn"))),
        WaitStatus::PtraceEvent(_, _, ev) if ev == libc::PTRACE_EVENT_EXIT => {
            Err(died(pid, format!("thread {tid} exiting in rt_sigreturn (bad signal frame?)")))
        }
        other => Err(died(pid, format!("unexpected stop {other:?} of thread {tid} around rt_sigreturn"))),
    }
}

/// Sets each thread's robust futex list, closes criu-rs's fds in the task
/// and unmaps the blob and its arguments, running the calls on the blob's
/// `syscall` instruction (thread 0 last: the munmap removes it).
pub(super) fn cleanup(pid: i32, syscall_insn: u64, place: &BlobPlace, threads: &[ThreadEnd]) -> Result<()> {
    let inj_err = |e: crate::ptrace::PtraceError| died(pid, format!("cleaning up: {e}"));
    for t in threads.iter().filter(|t| t.tid != pid && t.robust_head != 0) {
        let mut inj = Injector::new(t.tid, Some(syscall_insn)).map_err(inj_err)?;
        inj.syscall_ok(libc::SYS_set_robust_list, &[t.robust_head, t.robust_len]).map_err(inj_err)?;
        inj.restore().map_err(inj_err)?;
    }
    let mut inj = Injector::new(pid, Some(syscall_insn)).map_err(inj_err)?;
    if let Some(t) = threads.iter().find(|t| t.tid == pid && t.robust_head != 0) {
        inj.syscall_ok(libc::SYS_set_robust_list, &[t.robust_head, t.robust_len]).map_err(inj_err)?;
    }
    for &fd in &place.close_fds {
        inj.syscall_ok(libc::SYS_close, &[fd as u64]).map_err(inj_err)?;
    }
    let (start, end) = (place.blob_start.min(place.args_start), (place.blob_start + place.blob_len).max(place.args_start + place.args_len));
    // The blob and its arguments are one contiguous range; the syscall
    // instruction lies in it, so this is the last call.
    inj.syscall_ok(libc::SYS_munmap, &[start, end - start]).map_err(inj_err)?;
    inj.restore().map_err(inj_err)
}
