//! Threads other than thread 0: created by thread 0 with `clone3` and
//! `set_tid` (their dumped tids), each on its own stack area, each then
//! restoring its own per-thread state (tid address, rseq, scheduling,
//! credentials, pending signals, seccomp) and ending in its own trap + `rt_sigreturn`.

use crate::abi::{
    ThreadArg, RESTORE_F_CREDS, RESTORE_F_DUMPABLE, STAGE_CREDS, STAGE_SCHED, STAGE_SECCOMP, STAGE_SIGFRAME, STAGE_SIGNALS,
};
use crate::restore::ctx::{Ctx, Fail, Step};
use crate::restore::{finish, task};
use crate::sys;
use core::arch::asm;

const CLONE_VM: u64 = 0x100;
const CLONE_FS: u64 = 0x200;
const CLONE_FILES: u64 = 0x400;
const CLONE_SIGHAND: u64 = 0x800;
const CLONE_THREAD: u64 = 0x10000;
const CLONE_SYSVSEM: u64 = 0x40000;
const SYS_CLONE3: usize = 435;

// The kernel's `struct clone_args` (version 2, with `set_tid`).
use linux_raw_sys::general::clone_args as CloneArgs;

/// `clone3(args, size)` for a thread that starts in `entry(a0, a1)` on
/// the stack given in `args`; returns the new tid in the caller.
///
/// # Safety
/// `args.stack .. + stack_size` must be memory no one else uses, and
/// `entry` must never return.
unsafe fn clone3_thread(args: &CloneArgs, entry: extern "C" fn(u64, u64) -> !, a0: u64, a1: u64) -> Result<usize, sys::Errno> {
    let ret: usize;
    // SAFETY: in the child only callee-saved registers set here are used,
    // on the fresh stack (rsp = stack + stack_size, 16-byte aligned, so
    // after `call` the entry sees the ABI's alignment); the parent just
    // gets the syscall's result.
    unsafe {
        asm!(
            "syscall",
            "test rax, rax",
            "jnz 2f",
            "mov rdi, r12",
            "mov rsi, r13",
            "call r14",
            "ud2",
            "2:",
            inlateout("rax") SYS_CLONE3 => ret,
            in("rdi") args as *const CloneArgs,
            in("rsi") core::mem::size_of::<CloneArgs>(),
            in("r12") a0,
            in("r13") a1,
            in("r14") entry,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack)
        );
    }
    sys::decode(ret)
}

/// Creates threads 1.. with their dumped tids.
pub fn clone_threads(ctx: &Ctx, base: u64) -> Step {
    let threads = ctx.array::<ThreadArg>(ctx.args.threads)?;
    for (idx, t) in threads.iter().enumerate().skip(1) {
        let tid = t.tid as u64;
        let args = CloneArgs {
            flags: CLONE_VM | CLONE_FS | CLONE_FILES | CLONE_SIGHAND | CLONE_THREAD | CLONE_SYSVSEM,
            pidfd: 0,
            child_tid: 0,
            parent_tid: 0,
            exit_signal: 0,
            stack: t.stack.start,
            stack_size: t.stack.len,
            tls: 0,
            set_tid: &tid as *const u64 as u64,
            set_tid_size: 1,
            cgroup: 0,
        };
        // SAFETY: the thread's stack area is reserved for it in the block;
        // `thread_main` never returns.
        let got = unsafe { clone3_thread(&args, thread_main, base, idx as u64) }
            .map_err(|e| Fail::errno(e, tid, b"clone3 of a thread"))?;
        if got as u64 != tid {
            return Err(Fail::new(crate::abi::ERR_BAD_ARRAY, got as u64, b"thread got another tid"));
        }
    }
    Ok(())
}

/// Per-thread stages shared by every thread; returns the sigreturn rsp.
/// Only thread 0 (`leader`) records its stages in the status.
pub fn own_state(ctx: &Ctx, t: &ThreadArg, leader: bool) -> Step<u64> {
    let stage = |s| {
        if leader {
            ctx.stage(s)
        }
    };
    task::set_thread_state(t)?;
    stage(STAGE_SCHED);
    task::set_sched(t)?;
    if ctx.args.flags & RESTORE_F_CREDS != 0 {
        stage(STAGE_CREDS);
        task::set_creds(ctx, &t.creds)?;
    }
    if t.pdeath_sig != 0 {
        task::set_pdeath_sig(t.pdeath_sig)?;
    }
    // The dumpable flag belongs to the address space and any thread's
    // change of ids resets it: the last thread done with its credentials
    // sets it.
    let done = ctx.count_creds_done();
    if ctx.args.flags & RESTORE_F_DUMPABLE != 0 && done == ctx.args.threads.count {
        task::set_dumpable(ctx.args.dumpable)?;
    }
    stage(STAGE_SIGNALS);
    task::queue_own_signals(ctx, t)?;
    // Last, but before the capabilities that installing a filter may need
    // are dropped: whatever the filters forbid is done by now (and the
    // tracer suspends them until it lets the task go).
    stage(STAGE_SECCOMP);
    task::set_seccomp(ctx, t)?;
    if ctx.args.flags & RESTORE_F_CREDS != 0 {
        stage(STAGE_CREDS);
        task::drop_caps(&t.creds)?;
    }
    stage(STAGE_SIGFRAME);
    finish::build_frame(ctx, t)
}

/// Entry of a cloned thread: its own stages, then its own rt_sigreturn.
extern "C" fn thread_main(base: u64, idx: u64) -> ! {
    // SAFETY: `base` is the block thread 0 checked; it stays mapped.
    let ctx = match unsafe { Ctx::new(base as *mut u8) } {
        Ok(ctx) => ctx,
        Err(_) => sys::exit_group(1),
    };
    let t = match ctx.array::<ThreadArg>(ctx.args.threads).map(|t| t.get(idx as usize)) {
        Ok(Some(t)) => t,
        _ => ctx.die(Fail::new(crate::abi::ERR_BAD_ARRAY, idx, b"no such thread")),
    };
    match own_state(&ctx, t, false) {
        Ok(rsp) => finish::sigreturn(&ctx, t, rsp),
        Err(f) => ctx.die(f),
    }
}
