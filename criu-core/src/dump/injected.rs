//! State only the task itself can report, obtained by running syscalls in
//! it: sigactions, itimers, POSIX timer values, the program break, prctl
//! values, and per thread the alternate signal stack and the tid address.
//!
//! A one-page scratch mapping is created in the task (by an injected
//! `mmap`) for the syscalls that return data through memory, and removed
//! again before the task's memory is looked at.

use super::model::{ItimerVal, SigAction};
use super::DumpError;
use crate::ptrace::inject::Injector;
use crate::ptrace::remote;

const NR_BRK: i64 = 12;
const NR_MMAP: i64 = 9;
const NR_MUNMAP: i64 = 11;
const NR_RT_SIGACTION: i64 = 13;
const NR_GETITIMER: i64 = 36;
const NR_SIGALTSTACK: i64 = 131;
const NR_PRCTL: i64 = 157;
const NR_TIMER_GETTIME: i64 = 224;
const NR_TIMER_GETOVERRUN: i64 = 225;
const NR_MEMBARRIER: i64 = 324;
/// `MEMBARRIER_CMD_GET_REGISTRATIONS` (Linux 6.3).
const MEMBARRIER_CMD_GET_REGISTRATIONS: u64 = 1 << 9;

const PR_GET_PDEATHSIG: u64 = 2;
const PR_GET_DUMPABLE: u64 = 3;
const PR_GET_SECUREBITS: u64 = 27;
const PR_GET_CHILD_SUBREAPER: u64 = 37;
const PR_GET_TID_ADDRESS: u64 = 40;
const PR_GET_THP_DISABLE: u64 = 42;

/// Size of the scratch mapping.
pub const SCRATCH_LEN: u64 = 4096;

/// A scratch page mapped in the task; unmap it with [`Scratch::unmap`].
#[derive(Debug, Clone, Copy)]
pub struct Scratch {
    /// Its address in the task.
    pub addr: u64,
}

/// Maps a scratch page in the task.
pub fn map_scratch(inj: &mut Injector) -> Result<Scratch, DumpError> {
    let prot = (libc::PROT_READ | libc::PROT_WRITE) as u64;
    let flags = (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as u64;
    let addr = inj.syscall_ok(NR_MMAP, &[0, SCRATCH_LEN, prot, flags, u64::MAX, 0])?;
    Ok(Scratch { addr })
}

impl Scratch {
    /// Unmaps the page.
    pub fn unmap(self, inj: &mut Injector) -> Result<(), DumpError> {
        inj.syscall_ok(NR_MUNMAP, &[self.addr, SCRATCH_LEN])?;
        Ok(())
    }

    fn read(&self, pid: i32, off: u64, buf: &mut [u8]) -> Result<(), DumpError> {
        remote::read_exact(pid, self.addr + off, buf).map_err(|errno| DumpError::Memory { addr: self.addr + off, errno })
    }

    fn read_u64s<const N: usize>(&self, pid: i32, off: u64) -> Result<[u64; N], DumpError> {
        let mut b = vec![0u8; N * 8];
        self.read(pid, off, &mut b)?;
        let mut out = [0u64; N];
        for (i, c) in b.chunks_exact(8).enumerate() {
            out[i] = u64::from_ne_bytes(c.try_into().unwrap_or([0; 8]));
        }
        Ok(out)
    }
}

/// Process-wide values read by injection.
#[derive(Debug, Clone, Default)]
pub struct ProcessValues {
    /// Actions of signals 1..=64.
    pub sigactions: Vec<SigAction>,
    /// The three itimers.
    pub itimers: [ItimerVal; 3],
    /// Current program break.
    pub brk: u64,
    /// `PR_GET_DUMPABLE`.
    pub dumpable: u32,
    /// `PR_GET_PDEATHSIG`.
    pub pdeath_sig: u32,
    /// `PR_GET_CHILD_SUBREAPER`.
    pub child_subreaper: bool,
    /// `PR_GET_THP_DISABLE`.
    pub thp_disabled: bool,
    /// Per POSIX timer id asked, in order.
    pub timers: Vec<TimerValue>,
    /// `MEMBARRIER_CMD_GET_REGISTRATIONS`: the registered commands.
    pub membarrier_mask: u32,
}

/// A POSIX timer's state as `timer_gettime` + `timer_getoverrun` report it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TimerValue {
    /// Overrun count.
    pub overrun: i32,
    /// Interval (sec, nsec).
    pub interval: (u64, u64),
    /// Remaining time (sec, nsec).
    pub value: (u64, u64),
}

/// Reads the process-wide values through the leader.
pub fn process_values(inj: &mut Injector, pid: i32, s: Scratch, timer_ids: &[i32]) -> Result<ProcessValues, DumpError> {
    let mut v = ProcessValues::default();
    for sig in 1..=64u64 {
        if sig == libc::SIGKILL as u64 || sig == libc::SIGSTOP as u64 {
            v.sigactions.push(SigAction::default());
            continue;
        }
        inj.syscall_ok(NR_RT_SIGACTION, &[sig, 0, s.addr, 8])?;
        let [handler, flags, restorer, mask] = s.read_u64s::<4>(pid, 0)?;
        v.sigactions.push(SigAction { handler, flags, restorer, mask });
    }
    for which in 0..3u64 {
        inj.syscall_ok(NR_GETITIMER, &[which, s.addr])?;
        let [isec, iusec, vsec, vusec] = s.read_u64s::<4>(pid, 0)?;
        v.itimers[which as usize] = ItimerVal { isec, iusec, vsec, vusec };
    }
    for &id in timer_ids {
        inj.syscall_ok(NR_TIMER_GETTIME, &[id as u64, s.addr])?;
        let [is, ins, vs, vns] = s.read_u64s::<4>(pid, 0)?;
        let overrun = inj.syscall_ok(NR_TIMER_GETOVERRUN, &[id as u64])? as i32;
        v.timers.push(TimerValue { overrun, interval: (is, ins), value: (vs, vns) });
    }
    v.brk = inj.syscall_ok(NR_BRK, &[0])?;
    v.membarrier_mask = match inj.syscall(NR_MEMBARRIER, &[MEMBARRIER_CMD_GET_REGISTRATIONS, 0, 0])? {
        r if r >= 0 => r as u32,
        r => {
            // Before Linux 6.3 the registrations cannot be read.
            tracing::warn!(pid, errno = -r, "membarrier registrations unknown (MEMBARRIER_CMD_GET_REGISTRATIONS refused)");
            0
        }
    };
    v.dumpable = inj.syscall_ok(NR_PRCTL, &[PR_GET_DUMPABLE])? as u32;
    v.thp_disabled = match inj.syscall_ok(NR_PRCTL, &[PR_GET_THP_DISABLE, 0, 0, 0, 0])? {
        0 => false,
        1 => true,
        // Bit 1: PR_THP_DISABLE_EXCEPT_ADVISED (6.18), which CRIU's
        // thp_disabled flag cannot say.
        other => {
            let what = format!("PR_SET_THP_DISABLE mode {other:#x} (PR_THP_DISABLE_EXCEPT_ADVISED)");
            return Err(DumpError::Unsupported { pid, what });
        }
    };
    inj.syscall_ok(NR_PRCTL, &[PR_GET_PDEATHSIG, s.addr])?;
    let mut b = [0u8; 4];
    s.read(pid, 0, &mut b)?;
    v.pdeath_sig = u32::from_ne_bytes(b);
    inj.syscall_ok(NR_PRCTL, &[PR_GET_CHILD_SUBREAPER, s.addr])?;
    s.read(pid, 0, &mut b)?;
    v.child_subreaper = u32::from_ne_bytes(b) != 0;
    Ok(v)
}

/// Per-thread values read by injection.
#[derive(Debug, Clone, Copy, Default)]
pub struct ThreadValues {
    /// (sp, flags, size) of the alternate signal stack.
    pub altstack: (u64, i32, u64),
    /// `PR_GET_TID_ADDRESS`.
    pub clear_tid_addr: u64,
    /// `PR_GET_SECUREBITS` (credentials are per thread).
    pub secbits: u32,
    /// `PR_GET_PDEATHSIG` (per thread too).
    pub pdeath_sig: u32,
}

/// Reads the per-thread values through `inj` (any thread of the process).
pub fn thread_values(inj: &mut Injector, pid: i32, s: Scratch) -> Result<ThreadValues, DumpError> {
    inj.syscall_ok(NR_SIGALTSTACK, &[0, s.addr])?;
    let [sp, flags, size] = s.read_u64s::<3>(pid, 0)?;
    inj.syscall_ok(NR_PRCTL, &[PR_GET_TID_ADDRESS, s.addr + 64])?;
    let [tid_addr] = s.read_u64s::<1>(pid, 64)?;
    let secbits = inj.syscall_ok(NR_PRCTL, &[PR_GET_SECUREBITS])? as u32;
    inj.syscall_ok(NR_PRCTL, &[PR_GET_PDEATHSIG, s.addr + 128])?;
    let mut b = [0u8; 4];
    s.read(pid, 128, &mut b)?;
    Ok(ThreadValues { altstack: (sp, flags as i32, size), clear_tid_addr: tid_addr, secbits, pdeath_sig: u32::from_ne_bytes(b) })
}
