//! Test entries running restore stages inside a loader process (natively
//! and under qemu-user), on a [`RestoreArgs`](crate::abi::RestoreArgs)
//! block the loader builds:
//!
//! - [`memory`]: check + planned remap + file maps + protections + staging
//!   cleanup (no parking, no unmapping of the old world);
//! - [`vdso`]: planned remap (which brings the dumped vDSO copy home) and
//!   the vDSO stage (the loader sets `park` around its running vDSO so
//!   nothing moves it, and hands a copy as the dumped one);
//! - [`sigreturn`]: the final stage: sigframe from thread 0 and
//!   `rt_sigreturn` into the loader's landing code.
//!
//! Each returns 0 or the failure's error code (the status field holds
//! stage, error and detail).

use crate::restore::ctx::{Ctx, Fail, Step};
use crate::restore::{finish, memory};
use crate::abi::{ThreadArg, ERR_BAD_ARRAY, STAGE_PROTECT, STAGE_REMAP, STAGE_SIGFRAME, STAGE_VDSO};

fn report(ctx: &Ctx, r: Step) -> i64 {
    match r {
        Ok(()) => 0,
        Err(f) => {
            ctx.record(f);
            f.error
        }
    }
}

/// Runs `f` on the checked block at `base`.
///
/// # Safety
/// `base` must be a mapped argument block (see [`Ctx::new`]).
unsafe fn with_ctx(base: *mut u8, f: impl FnOnce(&Ctx) -> Step) -> i64 {
    // SAFETY: the caller's promise.
    match unsafe { Ctx::new(base) } {
        Ok(ctx) => {
            let r = f(&ctx);
            report(&ctx, r)
        }
        Err((_, e)) => e.error,
    }
}

/// Memory stages on the block at `base`.
///
/// # Safety
/// `base` must be a mapped argument block whose VMAs the caller owns.
pub unsafe fn memory(base: *mut u8) -> i64 {
    // SAFETY: the caller's promise.
    unsafe {
        with_ctx(base, |ctx| {
            let vmas = memory::check(ctx)?;
            ctx.stage(STAGE_REMAP);
            memory::move_premapped(ctx, vmas)?;
            memory::map_files(vmas)?;
            ctx.stage(STAGE_PROTECT);
            memory::protect(vmas)?;
            memory::drop_staging(ctx, vmas)
        })
    }
}

/// The vDSO stage on the block at `base`.
///
/// # Safety
/// As for [`memory`]; the vDSO copy and its destination are the caller's.
pub unsafe fn vdso(base: *mut u8) -> i64 {
    // SAFETY: the caller's promise.
    unsafe {
        with_ctx(base, |ctx| {
            let vmas = memory::check(ctx)?;
            ctx.stage(STAGE_REMAP);
            memory::move_premapped(ctx, vmas)?;
            ctx.stage(STAGE_VDSO);
            memory::place_vdso(ctx, vmas)
        })
    }
}

/// The final stage: frame + `rt_sigreturn` into thread 0's registers.
/// Returns only if the frame cannot be built.
///
/// # Safety
/// `base` must be a mapped argument block whose thread 0 registers lead to
/// code that can run on the state they describe.
pub unsafe fn sigreturn(base: *mut u8) -> i64 {
    // SAFETY: the caller's promise.
    let ctx = match unsafe { Ctx::new(base) } {
        Ok(ctx) => ctx,
        Err((_, e)) => return e.error,
    };
    ctx.stage(STAGE_SIGFRAME);
    let t = match ctx.array::<ThreadArg>(ctx.args.threads).map(|t| t.first()) {
        Ok(Some(t)) => t,
        _ => return report(&ctx, Err(Fail::new(ERR_BAD_ARRAY, 0, b"no thread"))),
    };
    match finish::build_frame(&ctx, t) {
        Ok(rsp) => finish::sigreturn(&ctx, t, rsp),
        Err(f) => report(&ctx, Err(f)),
    }
}
