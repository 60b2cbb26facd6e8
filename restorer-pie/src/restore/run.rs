//! The restore routine: the stages in order, from a checked argument block
//! to `rt_sigreturn`. Any failure is recorded in the status, logged, and
//! ends the process with `exit_group(1)`.

use crate::abi::*;
use crate::restore::ctx::{Ctx, Fail, Step};
use crate::restore::{memory, task, threads};
use crate::restore::finish;
use crate::sys;

/// Restores the task from the argument block at `base`; never returns.
///
/// # Safety
/// `base` must be the argument block described in `abi.rs`, mapped at
/// `args.start`, and the caller must be running on thread 0's stack area
/// (its top [`THREAD_STACK_RESERVE`] bytes).
pub unsafe fn restore(base: *mut u8) -> ! {
    // SAFETY: the caller's promise.
    let ctx = match unsafe { Ctx::new(base) } {
        Ok(ctx) => ctx,
        Err((0, _)) => sys::exit_group(1),
        Err((_, f)) => {
            // The header is readable but wrong: still report into it.
            // SAFETY: the status field lies in the header the caller mapped.
            let status = unsafe { &mut *base.add(core::mem::offset_of!(RestoreArgs, status)).cast::<RestoreStatus>() };
            status.stage = STAGE_CHECK_ARGS;
            status.error = f.error;
            status.detail = f.detail;
            sys::exit_group(1)
        }
    };
    ctx.stage(STAGE_START);
    match stages(&ctx, base as u64) {
        Ok(rsp) => {
            let Ok(threads) = ctx.array::<ThreadArg>(ctx.args.threads) else { ctx.die(Fail::new(ERR_BAD_ARRAY, 0, b"threads")) };
            match threads.first() {
                Some(t) => finish::sigreturn(&ctx, t, rsp),
                None => ctx.die(Fail::new(ERR_BAD_ARRAY, 0, b"no thread")),
            }
        }
        Err(f) => ctx.die(f),
    }
}

/// Every stage up to thread 0's built frame; returns its `rt_sigreturn`
/// rsp. Threads 1.. are cloned after the process-wide state that they
/// inherit (personality, signal mask) and before what needs them (POSIX
/// timers aimed at a thread) or drops privileges (credentials).
fn stages(ctx: &Ctx, base: u64) -> Step<u64> {
    let a = &ctx.args;
    ctx.stage(STAGE_CHECK_ARGS);
    let vmas = memory::check(ctx)?;
    let threads = ctx.array::<ThreadArg>(a.threads)?;
    let t0 = threads.first().ok_or(Fail::new(ERR_BAD_ARRAY, 0, b"no thread"))?;

    ctx.stage(STAGE_BLOCK_SIGNALS);
    task::block_all_signals()?;
    memory::drop_inherited_rseq(ctx)?;

    ctx.stage(STAGE_PARK_VDSO);
    memory::park_vdso(ctx)?;
    ctx.stage(STAGE_UNMAP);
    memory::unmap_old_world(ctx, vmas)?;
    ctx.stage(STAGE_REMAP);
    memory::move_premapped(ctx, vmas)?;
    ctx.stage(STAGE_MAP_SHARED);
    memory::map_files(vmas)?;
    memory::close_vma_fds(ctx, vmas);
    ctx.stage(STAGE_PROTECT);
    memory::protect(vmas)?;
    ctx.stage(STAGE_GUARDS);
    memory::install_guards(ctx)?;
    ctx.stage(STAGE_VDSO);
    memory::place_vdso(ctx, vmas)?;
    memory::drop_staging(ctx, vmas)?;
    ctx.stage(STAGE_LAZY);
    memory::register_lazy(ctx, vmas)?;

    if a.flags & RESTORE_F_MM != 0 {
        ctx.stage(STAGE_MM);
        task::set_mm(ctx)?;
    }
    ctx.stage(STAGE_MEMBARRIER);
    task::set_membarriers(a.membarrier_mask)?;
    ctx.stage(STAGE_RLIMITS);
    task::set_rlimits(ctx)?;
    ctx.stage(STAGE_SIGACTIONS);
    task::set_sigactions(ctx)?;
    if a.flags & RESTORE_F_TEST_CRASH != 0 {
        task::crash_for_test();
    }
    ctx.stage(STAGE_ITIMERS);
    task::set_itimers(ctx)?;
    if a.flags & RESTORE_F_PERSONALITY != 0 {
        ctx.stage(STAGE_PERSONALITY);
        task::set_personality(a.personality)?;
    }
    ctx.stage(STAGE_THREADS);
    threads::clone_threads(ctx, base)?;
    ctx.stage(STAGE_POSIX_TIMERS);
    task::set_posix_timers(ctx)?;
    ctx.stage(STAGE_SIGNALS);
    task::queue_shared_signals(ctx)?;
    ctx.stage(STAGE_THREAD_STATE);
    threads::own_state(ctx, t0, true)
}
