//! The x86_64 `rt_sigframe` the blob builds for its final `rt_sigreturn`.
//!
//! Layout facts (kernel uapi `asm/sigcontext.h`, `asm-generic/ucontext.h`,
//! `arch/x86/kernel/signal_64.c`):
//! - `struct rt_sigframe { char *pretcode; struct ucontext uc; siginfo info; }`
//! - `struct ucontext { uc_flags; uc_link; stack_t uc_stack;
//!   struct sigcontext_64 uc_mcontext; sigset_t uc_sigmask; }`
//! - `rt_sigreturn` reads the frame at `rsp - 8` (a handler's `ret` has
//!   popped `pretcode`), restores the mask from `uc_sigmask`, registers from
//!   `uc_mcontext` (not fs/gs bases: those are set separately with
//!   `arch_prctl`), the FPU state from `fpstate`, and sigaltstack from
//!   `uc_stack`.
//! - The fpstate is an XSAVE area (64-byte aligned) whose software-reserved
//!   bytes 464..512 hold `_fpx_sw_bytes` with FP_XSTATE_MAGIC1, and which is
//!   followed by FP_XSTATE_MAGIC2 at `fpstate + xstate_size`; otherwise the
//!   kernel restores only the legacy FXSAVE part.
//!
//! The builder writes bytes into a caller-supplied buffer: no pointers, no
//! unsafe, no panics.

use crate::abi::{gpreg, GPREGS_WORDS, SIGINFO_SIZE};
use core::mem::{offset_of, size_of};

/// `uc_flags`: the fpstate carries extended (XSAVE) state.
pub const UC_FP_XSTATE: u64 = 0x1;
/// `uc_flags`: the sigcontext's `ss` field is valid.
pub const UC_SIGCONTEXT_SS: u64 = 0x2;
/// `uc_flags`: restore `ss` as saved instead of forcing a valid one.
pub const UC_STRICT_RESTORE_SS: u64 = 0x4;
/// `_fpx_sw_bytes.magic1`.
pub const FP_XSTATE_MAGIC1: u32 = 0x4650_5853;
/// The word after the XSAVE area.
pub const FP_XSTATE_MAGIC2: u32 = 0x4650_5845;
/// Legacy FXSAVE region size.
pub const FXSAVE_SIZE: usize = 512;
/// FXSAVE region + XSAVE header: the smallest XSAVE area.
pub const XSAVE_MIN_SIZE: usize = 576;
/// Offset of `_fpx_sw_bytes` in the FXSAVE region.
pub const SW_RESERVED_OFFSET: usize = 464;
/// Offset of XSTATE_BV in the XSAVE area (start of the header).
pub const XSTATE_BV_OFFSET: usize = 512;
/// Offset of XCOMP_BV in the XSAVE area.
pub const XCOMP_BV_OFFSET: usize = 520;
/// x87 + SSE feature bits.
pub const XFEATURE_MASK_FPSSE: u64 = 0x3;

/// `struct sigcontext_64`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct SigContext {
    pub r8: u64,
    pub r9: u64,
    pub r10: u64,
    pub r11: u64,
    pub r12: u64,
    pub r13: u64,
    pub r14: u64,
    pub r15: u64,
    pub rdi: u64,
    pub rsi: u64,
    pub rbp: u64,
    pub rbx: u64,
    pub rdx: u64,
    pub rax: u64,
    pub rcx: u64,
    pub rsp: u64,
    pub rip: u64,
    pub eflags: u64,
    pub cs: u16,
    pub gs: u16,
    pub fs: u16,
    pub ss: u16,
    pub err: u64,
    pub trapno: u64,
    pub oldmask: u64,
    pub cr2: u64,
    pub fpstate: u64,
    pub reserved1: [u64; 8],
}

/// `stack_t`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StackT {
    pub ss_sp: u64,
    pub ss_flags: i32,
    pub _pad: u32,
    pub ss_size: u64,
}

/// `struct ucontext` (x86_64).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct UContext {
    pub uc_flags: u64,
    pub uc_link: u64,
    pub uc_stack: StackT,
    pub uc_mcontext: SigContext,
    pub uc_sigmask: u64,
}

/// `struct rt_sigframe` (x86_64).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct RtSigframe {
    pub pretcode: u64,
    pub uc: UContext,
    pub info: [u8; SIGINFO_SIZE],
}

const _: () = assert!(size_of::<SigContext>() == 256);
const _: () = assert!(size_of::<UContext>() == 304);
const _: () = assert!(size_of::<RtSigframe>() == 440);

/// What goes into the frame.
#[derive(Clone, Copy, Debug)]
pub struct FrameInput<'a> {
    /// `user_regs_struct` words.
    pub gpregs: &'a [u64; GPREGS_WORDS],
    /// Standard-format XSAVE area (or just FXSAVE, or empty for none).
    pub xsave: &'a [u8],
    /// Signal mask to install.
    pub sigmask: u64,
    /// sigaltstack to install.
    pub altstack: StackT,
}

/// Where the frame went, as target addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameLayout {
    /// Address of the `rt_sigframe` (of `pretcode`).
    pub frame: u64,
    /// Value of `rsp` for the `rt_sigreturn` syscall: `frame + 8`.
    pub rsp: u64,
    /// Address of the fpstate (0 if none).
    pub fpstate: u64,
    /// First address after everything written.
    pub end: u64,
}

/// Why a frame could not be built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SigframeError {
    /// The buffer is too small for frame + xsave area.
    NoRoom,
    /// The xsave area is shorter than the legacy FXSAVE region.
    BadXsave,
}

fn align_up(v: u64, a: u64) -> Option<u64> {
    Some(v.checked_add(a - 1)? & !(a - 1))
}

fn put(buf: &mut [u8], off: usize, bytes: &[u8]) -> Result<(), SigframeError> {
    let end = off.checked_add(bytes.len()).ok_or(SigframeError::NoRoom)?;
    buf.get_mut(off..end).ok_or(SigframeError::NoRoom)?.copy_from_slice(bytes);
    Ok(())
}

fn put_u64(buf: &mut [u8], off: usize, v: u64) -> Result<(), SigframeError> {
    put(buf, off, &v.to_le_bytes())
}

fn put_u32(buf: &mut [u8], off: usize, v: u32) -> Result<(), SigframeError> {
    put(buf, off, &v.to_le_bytes())
}

fn put_u16(buf: &mut [u8], off: usize, v: u16) -> Result<(), SigframeError> {
    put(buf, off, &v.to_le_bytes())
}

fn get_u64(buf: &[u8], off: usize) -> u64 {
    let mut w = [0u8; 8];
    if let Some(s) = buf.get(off..off.saturating_add(8)) {
        w.copy_from_slice(s);
    }
    u64::from_le_bytes(w)
}

/// (sigcontext field offset, user_regs_struct index) for the 64-bit GPRs.
const GPR_MAP: [(usize, usize); 18] = [
    (offset_of!(SigContext, r8), gpreg::R8),
    (offset_of!(SigContext, r9), gpreg::R9),
    (offset_of!(SigContext, r10), gpreg::R10),
    (offset_of!(SigContext, r11), gpreg::R11),
    (offset_of!(SigContext, r12), gpreg::R12),
    (offset_of!(SigContext, r13), gpreg::R13),
    (offset_of!(SigContext, r14), gpreg::R14),
    (offset_of!(SigContext, r15), gpreg::R15),
    (offset_of!(SigContext, rdi), gpreg::RDI),
    (offset_of!(SigContext, rsi), gpreg::RSI),
    (offset_of!(SigContext, rbp), gpreg::RBP),
    (offset_of!(SigContext, rbx), gpreg::RBX),
    (offset_of!(SigContext, rdx), gpreg::RDX),
    (offset_of!(SigContext, rax), gpreg::RAX),
    (offset_of!(SigContext, rcx), gpreg::RCX),
    (offset_of!(SigContext, rsp), gpreg::RSP),
    (offset_of!(SigContext, rip), gpreg::RIP),
    (offset_of!(SigContext, eflags), gpreg::EFLAGS),
];

/// (sigcontext field offset, user_regs_struct index) for the selectors.
const SEG_MAP: [(usize, usize); 4] = [
    (offset_of!(SigContext, cs), gpreg::CS),
    (offset_of!(SigContext, gs), gpreg::GS),
    (offset_of!(SigContext, fs), gpreg::FS),
    (offset_of!(SigContext, ss), gpreg::SS),
];

/// Builds an `rt_sigframe` (and its fpstate) at the lowest suitably
/// aligned place of `buf`, which lives at target address `buf_addr`.
/// Returns where things went; `rsp` is what `rt_sigreturn` needs.
pub fn build_sigframe(buf: &mut [u8], buf_addr: u64, input: &FrameInput) -> Result<FrameLayout, SigframeError> {
    let xlen = input.xsave.len();
    if xlen != 0 && xlen < FXSAVE_SIZE {
        return Err(SigframeError::BadXsave);
    }
    let no_room = SigframeError::NoRoom;
    // (frame + 8) 16-byte aligned, as at a handler's entry.
    let frame = align_up(buf_addr.checked_add(8).ok_or(no_room)?, 16).ok_or(no_room)? - 8;
    let frame_end = frame.checked_add(size_of::<RtSigframe>() as u64).ok_or(no_room)?;
    let (fpstate, end) = if xlen == 0 {
        (0, frame_end)
    } else {
        let fp = align_up(frame_end, 64).ok_or(no_room)?;
        (fp, fp.checked_add(xlen as u64 + 4).ok_or(no_room)?)
    };
    let buf_end = buf_addr.checked_add(buf.len() as u64).ok_or(no_room)?;
    if end > buf_end {
        return Err(no_room);
    }
    let fo = (frame - buf_addr) as usize;
    let span = (end - frame) as usize;
    buf.get_mut(fo..fo + span).ok_or(no_room)?.fill(0);

    let uc = fo + offset_of!(RtSigframe, uc);
    let mc = uc + offset_of!(UContext, uc_mcontext);
    let regs = input.gpregs;
    for (off, idx) in GPR_MAP {
        put_u64(buf, mc + off, regs.get(idx).copied().unwrap_or(0))?;
    }
    for (off, idx) in SEG_MAP {
        put_u16(buf, mc + off, regs.get(idx).copied().unwrap_or(0) as u16)?;
    }
    put_u64(buf, mc + offset_of!(SigContext, oldmask), input.sigmask)?;
    put_u64(buf, mc + offset_of!(SigContext, fpstate), fpstate)?;

    let mut flags = UC_SIGCONTEXT_SS | UC_STRICT_RESTORE_SS;
    if xlen != 0 {
        let fp = (fpstate - buf_addr) as usize;
        put(buf, fp, input.xsave)?;
        let sw = fp + SW_RESERVED_OFFSET;
        // Clear the software-reserved bytes whatever the dump left there.
        put(buf, sw, &[0u8; FXSAVE_SIZE - SW_RESERVED_OFFSET])?;
        if xlen >= XSAVE_MIN_SIZE {
            flags |= UC_FP_XSTATE;
            let xstate_bv = get_u64(input.xsave, XSTATE_BV_OFFSET);
            put_u32(buf, sw, FP_XSTATE_MAGIC1)?;
            put_u32(buf, sw + 4, (xlen + 4) as u32)?; // extended_size
            put_u64(buf, sw + 8, xstate_bv | XFEATURE_MASK_FPSSE)?; // xfeatures
            put_u32(buf, sw + 16, xlen as u32)?; // xstate_size
            put_u64(buf, fp + XCOMP_BV_OFFSET, 0)?; // standard format
            put_u32(buf, fp + xlen, FP_XSTATE_MAGIC2)?;
        }
    }
    put_u64(buf, uc + offset_of!(UContext, uc_flags), flags)?;
    let st = uc + offset_of!(UContext, uc_stack);
    put_u64(buf, st + offset_of!(StackT, ss_sp), input.altstack.ss_sp)?;
    put_u32(buf, st + offset_of!(StackT, ss_flags), input.altstack.ss_flags as u32)?;
    put_u64(buf, st + offset_of!(StackT, ss_size), input.altstack.ss_size)?;
    put_u64(buf, uc + offset_of!(UContext, uc_sigmask), input.sigmask)?;
    Ok(FrameLayout { frame, rsp: frame + 8, fpstate, end })
}

#[cfg(test)]
mod tests;
