//! Running system calls inside a stopped thread.
//!
//! The thread's registers are saved, `rip` is pointed at a `syscall`
//! instruction (one found in the vDSO, or two bytes patched over the code at
//! `rip` and put back afterwards), the call's registers are loaded and the
//! thread single-steps over the instruction. All signals but SIGTRAP are
//! blocked while this happens (see [`INJECT_SIGMASK`]), `orig_rax` is set to -1 so the kernel does not apply
//! syscall-restart logic to our call, and everything (registers, signal
//! mask, FPU state, code bytes) is restored exactly by [`Injector::restore`] or on drop.

use super::regs::{get_fpstate, get_gpregs, set_fpstate, set_gpregs, FpState, GpRegs};
use super::raw::{ptrace_getsigmask, ptrace_setsigmask};
use super::{npid, sys, PtraceError, Result};
use nix::sys::ptrace;
use nix::sys::signal::Signal;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};

/// The `syscall` instruction.
pub const SYSCALL_INSN: [u8; 2] = [0x0f, 0x05];

/// The signal mask while calls run: every signal but SIGTRAP. The step
/// over each call ends in a forced SIGTRAP, and the kernel resets the
/// handler of a forced signal that is blocked (and unblocks it): the
/// program's SIGTRAP handler would be lost. A pending SIGTRAP would thus
/// be taken by the step: the dump refuses such a thread beforehand.
pub const INJECT_SIGMASK: u64 = !(1u64 << (libc::SIGTRAP - 1));

/// A thread prepared for syscall injection.
pub struct Injector {
    tid: i32,
    saved: GpRegs,
    saved_fp: FpState,
    saved_mask: u64,
    syscall_ip: u64,
    /// Address and original word of a code patch, when we made one.
    patch: Option<(u64, i64)>,
    restored: bool,
}

/// Finds a `syscall` instruction in `bytes` (a copy of the vDSO mapped at `base`).
pub fn find_syscall_insn(bytes: &[u8], base: u64) -> Option<u64> {
    bytes.windows(2).position(|w| w == SYSCALL_INSN).map(|i| base + i as u64)
}

/// Finds a `syscall` instruction in process `pid`'s vDSO (`maps`: its
/// mappings).
pub fn vdso_syscall_ip(pid: i32, maps: &[crate::proc::maps::MapEntry]) -> Option<u64> {
    let v = maps.iter().find(|m| m.path == "[vdso]" && m.read && m.exec)?;
    let mut buf = vec![0u8; v.len() as usize];
    super::remote::read_exact(pid, v.start, &mut buf).ok()?;
    find_syscall_insn(&buf, v.start)
}

impl Injector {
    /// Prepares the frozen thread `tid`. With `syscall_ip` None the two bytes
    /// at the thread's `rip` are replaced by `syscall` until [`restore`](Self::restore).
    pub fn new(tid: i32, syscall_ip: Option<u64>) -> Result<Injector> {
        let saved = get_gpregs(tid)?;
        let saved_fp = get_fpstate(tid)?;
        let saved_mask = ptrace_getsigmask(tid).map_err(sys("PTRACE_GETSIGMASK", tid))?;
        let mut inj = Injector { tid, saved, saved_fp, saved_mask, syscall_ip: saved.rip, patch: None, restored: false };
        ptrace_setsigmask(tid, INJECT_SIGMASK).map_err(sys("PTRACE_SETSIGMASK", tid))?;
        match syscall_ip {
            Some(ip) => inj.syscall_ip = ip,
            None => {
                let addr = saved.rip;
                let word = ptrace::read(npid(tid), addr as ptrace::AddressType).map_err(sys("PTRACE_PEEKDATA", tid))?;
                let mut bytes = word.to_ne_bytes();
                bytes[..2].copy_from_slice(&SYSCALL_INSN);
                ptrace::write(npid(tid), addr as ptrace::AddressType, i64::from_ne_bytes(bytes))
                    .map_err(sys("PTRACE_POKEDATA", tid))?;
                inj.patch = Some((addr, word));
            }
        }
        Ok(inj)
    }

    /// The thread.
    pub fn tid(&self) -> i32 {
        self.tid
    }

    /// The registers the thread had before injection.
    pub fn saved_regs(&self) -> &GpRegs {
        &self.saved
    }

    /// The signal mask the thread had before injection.
    pub fn saved_sigmask(&self) -> u64 {
        self.saved_mask
    }

    /// Runs syscall `nr` with up to six arguments in the thread; returns the
    /// raw result (negative errno on failure).
    pub fn syscall(&mut self, nr: i64, args: &[u64]) -> Result<i64> {
        let tid = self.tid;
        let mut r = self.saved;
        r.rip = self.syscall_ip;
        r.rax = nr as u64;
        r.orig_rax = u64::MAX;
        let mut a = [0u64; 6];
        a[..args.len().min(6)].copy_from_slice(&args[..args.len().min(6)]);
        (r.rdi, r.rsi, r.rdx, r.r10, r.r8, r.r9) = (a[0], a[1], a[2], a[3], a[4], a[5]);
        set_gpregs(tid, &r)?;
        run_to_trap(tid, true, "an injected syscall")?;
        let after = get_gpregs(tid)?;
        if after.rip != self.syscall_ip + 2 {
            return Err(PtraceError::Unexpected {
                tid,
                what: format!("injected syscall {nr} stopped at {:#x}, expected {:#x}", after.rip, self.syscall_ip + 2),
            });
        }
        Ok(after.rax as i64)
    }

    /// Runs the code at `entry` in the thread (with the saved registers,
    /// `orig_rax` -1, signals blocked as for calls) until it traps on an
    /// `int3` whose next instruction is at `end`. The code must leave the
    /// stack alone and end in that `int3`.
    pub fn run_code(&mut self, entry: u64, end: u64) -> Result<()> {
        let tid = self.tid;
        let mut r = self.saved;
        r.rip = entry;
        r.orig_rax = u64::MAX;
        set_gpregs(tid, &r)?;
        run_to_trap(tid, false, "injected code")?;
        let after = get_gpregs(tid)?;
        if after.rip != end {
            return Err(PtraceError::Unexpected { tid, what: format!("injected code stopped at {:#x}, expected {end:#x}", after.rip) });
        }
        Ok(())
    }

    /// Like [`syscall`](Self::syscall) but turns a negative result into an error.
    pub fn syscall_ok(&mut self, nr: i64, args: &[u64]) -> Result<u64> {
        let r = self.syscall(nr, args)?;
        if (-4095..0).contains(&r) {
            return Err(PtraceError::Sys { op: "injected syscall", tid: self.tid, errno: nix::errno::Errno::from_raw(-r as i32) });
        }
        Ok(r as u64)
    }

    fn put_back(&mut self) -> Result<()> {
        self.restored = true;
        let tid = self.tid;
        let mut first = set_gpregs(tid, &self.saved).and(set_fpstate(tid, &self.saved_fp));
        if let Some((addr, word)) = self.patch.take() {
            let r = ptrace::write(npid(tid), addr as ptrace::AddressType, word).map_err(sys("PTRACE_POKEDATA", tid));
            first = first.and(r);
        }
        let r = ptrace_setsigmask(tid, self.saved_mask).map_err(sys("PTRACE_SETSIGMASK", tid));
        first.and(r)
    }

    /// Puts back the registers (general and FPU), code bytes and signal mask.
    pub fn restore(mut self) -> Result<()> {
        self.put_back()
    }
}

/// Resumes `tid` (one instruction with `step`, else until it traps) and
/// waits for its SIGTRAP, resuming it the same way after ptrace events.
fn run_to_trap(tid: i32, step: bool, during: &str) -> Result<()> {
    let resume = || match step {
        true => ptrace::step(npid(tid), None).map_err(sys("PTRACE_SINGLESTEP", tid)),
        false => ptrace::cont(npid(tid), None).map_err(sys("PTRACE_CONT", tid)),
    };
    resume()?;
    loop {
        match waitpid(npid(tid), Some(WaitPidFlag::__WALL)).map_err(sys("waitpid", tid))? {
            WaitStatus::Stopped(_, Signal::SIGTRAP) => return Ok(()),
            WaitStatus::Stopped(_, sig) => {
                // Only unblockable signals get here; keep them for later.
                return Err(PtraceError::Unexpected { tid, what: format!("got {sig:?} during {during}") });
            }
            WaitStatus::PtraceEvent(..) => resume()?,
            other => return Err(PtraceError::Unexpected { tid, what: format!("wait status {other:?} during {during}") }),
        }
    }
}

impl Drop for Injector {
    fn drop(&mut self) {
        if !self.restored {
            if let Err(e) = self.put_back() {
                tracing::error!(tid = self.tid, "cannot restore the thread after injection: {e}");
            }
        }
    }
}
