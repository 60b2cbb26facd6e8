//! The last stage: build thread 0's `rt_sigframe` in the low part of its
//! stack area, set the fs/gs bases (which `rt_sigreturn` does not restore),
//! trap for the tracer and return into the dumped registers.

use crate::abi::{gpreg, MemRange, ThreadArg, ERR_SIGFRAME, RESTORE_F_NO_TRAP, STAGE_SIGRETURN, THREAD_STACK_RESERVE};
use crate::restore::ctx::{Ctx, Fail, Step};
use crate::restore::sigframe::{build_sigframe, FrameInput, StackT};
use crate::sys;
use core::arch::asm;

const ARCH_SET_GS: u32 = 0x1001;
const ARCH_SET_FS: u32 = 0x1002;

/// Builds the frame; returns the `rsp` for `rt_sigreturn`.
pub fn build_frame(ctx: &Ctx, t: &ThreadArg) -> Step<u64> {
    let xsave = ctx.bytes(t.xsave)?;
    let low = t.stack.len.checked_sub(THREAD_STACK_RESERVE).ok_or(Fail::new(ERR_SIGFRAME, t.stack.len, b"thread stack too small"))?;
    // The blob runs in the top THREAD_STACK_RESERVE bytes; the frame goes below.
    // SAFETY: the low part of the stack area is not in use and not
    // referenced elsewhere.
    let buf = unsafe { ctx.area_mut(MemRange { start: t.stack.start, len: low }) }?;
    let input = FrameInput {
        gpregs: &t.gpregs,
        xsave,
        sigmask: t.sigmask,
        altstack: StackT { ss_sp: t.sas_sp, ss_flags: t.sas_flags, _pad: 0, ss_size: t.sas_size },
    };
    build_sigframe(buf, t.stack.start, &input)
        .map(|l| l.rsp)
        .map_err(|_| Fail::new(ERR_SIGFRAME, xsave.len() as u64, b"cannot build the sigframe"))
}

/// Sets fs/gs bases, records STAGE_SIGRETURN, traps (unless
/// RESTORE_F_NO_TRAP) and enters `rt_sigreturn` with `rsp`.
pub fn sigreturn(ctx: &Ctx, t: &ThreadArg, rsp: u64) -> ! {
    let fs = t.gpregs.get(gpreg::FS_BASE).copied().unwrap_or(0);
    let gs = t.gpregs.get(gpreg::GS_BASE).copied().unwrap_or(0);
    // SAFETY: the blob uses no TLS; the bases are the dumped ones.
    if let Err(e) = unsafe { sys::arch_prctl(ARCH_SET_FS, fs as usize) } {
        ctx.die(Fail::errno(e, fs, b"ARCH_SET_FS"));
    }
    // SAFETY: as above.
    if let Err(e) = unsafe { sys::arch_prctl(ARCH_SET_GS, gs as usize) } {
        ctx.die(Fail::errno(e, gs, b"ARCH_SET_GS"));
    }
    ctx.stage(STAGE_SIGRETURN);
    let trap = u64::from(ctx.args.flags & RESTORE_F_NO_TRAP == 0);
    // SAFETY: `rsp` points just past the pretcode of a complete frame
    // built by `build_frame`; rt_sigreturn replaces every register and the
    // mask, so nothing of this function's state is used afterwards.
    unsafe {
        asm!(
            "mov rsp, {sp}",
            "test {trap}, {trap}",
            "jz 2f",
            "int3",
            "2:",
            "mov eax, 15",
            "syscall",
            "ud2",
            sp = in(reg) rsp,
            trap = in(reg) trap,
            options(noreturn)
        )
    }
}
