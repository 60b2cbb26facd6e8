//! Tests of the sigframe builder: layout facts, and a real `rt_sigreturn`
//! into a frame built from chosen registers and XSAVE state, checked from
//! the landing code in a forked child.

use super::*;
use core::arch::asm;
use syscalls::{syscall, Sysno};

#[test]
fn layout_matches_kernel_headers() {
    assert_eq!(offset_of!(SigContext, r8), 0);
    assert_eq!(offset_of!(SigContext, rdi), 64);
    assert_eq!(offset_of!(SigContext, rsp), 120);
    assert_eq!(offset_of!(SigContext, rip), 128);
    assert_eq!(offset_of!(SigContext, eflags), 136);
    assert_eq!(offset_of!(SigContext, cs), 144);
    assert_eq!(offset_of!(SigContext, ss), 150);
    assert_eq!(offset_of!(SigContext, err), 152);
    assert_eq!(offset_of!(SigContext, cr2), 176);
    assert_eq!(offset_of!(SigContext, fpstate), 184);
    assert_eq!(offset_of!(UContext, uc_stack), 16);
    assert_eq!(offset_of!(UContext, uc_mcontext), 40);
    assert_eq!(offset_of!(UContext, uc_sigmask), 296);
    assert_eq!(offset_of!(RtSigframe, uc), 8);
    assert_eq!(offset_of!(RtSigframe, info), 312);
}

fn regs_pattern() -> [u64; GPREGS_WORDS] {
    let mut r = [0u64; GPREGS_WORDS];
    for (i, w) in r.iter_mut().enumerate() {
        *w = 0x1111_0000_0000_0000 | (i as u64) << 8 | 0x77;
    }
    r[gpreg::CS] = 0x33;
    r[gpreg::SS] = 0x2b;
    r[gpreg::FS] = 0;
    r[gpreg::GS] = 0;
    r
}

#[test]
fn builder_places_values_where_the_kernel_reads_them() {
    let regs = regs_pattern();
    let mut xsave = vec![0u8; 1000];
    for (i, b) in xsave.iter_mut().enumerate() {
        *b = (i * 7) as u8;
    }
    xsave[XSTATE_BV_OFFSET..XSTATE_BV_OFFSET + 8].copy_from_slice(&0x7u64.to_le_bytes());
    let input = FrameInput {
        gpregs: &regs,
        xsave: &xsave,
        sigmask: 0x8000_0000_0000_0201,
        altstack: StackT { ss_sp: 0x7000_0000, ss_flags: 0, _pad: 0, ss_size: 0x8000 },
    };
    let base = 0x10_0003u64; // deliberately unaligned
    let mut buf = vec![0xeeu8; 4096];
    let l = build_sigframe(&mut buf, base, &input).unwrap();
    assert_eq!(l.rsp % 16, 0);
    assert_eq!(l.rsp, l.frame + 8);
    assert_eq!(l.fpstate % 64, 0);
    assert!(l.fpstate >= l.frame + 440);
    assert_eq!(l.end, l.fpstate + 1004);
    let at = |a: u64| (a - base) as usize;
    let rd64 = |a: u64| get_u64(&buf, at(a));
    let rd32 = |a: u64| rd64(a) as u32;
    let mc = l.frame + 8 + 40;
    assert_eq!(rd64(mc), regs[gpreg::R8]);
    assert_eq!(rd64(mc + 7 * 8), regs[gpreg::R15]);
    assert_eq!(rd64(mc + 13 * 8), regs[gpreg::RAX]);
    assert_eq!(rd64(mc + 15 * 8), regs[gpreg::RSP]);
    assert_eq!(rd64(mc + 16 * 8), regs[gpreg::RIP]);
    assert_eq!(rd64(mc + 17 * 8), regs[gpreg::EFLAGS]);
    assert_eq!(rd64(mc + 144) & 0xffff, 0x33);
    assert_eq!((rd64(mc + 144) >> 48) & 0xffff, 0x2b);
    assert_eq!(rd64(mc + 184), l.fpstate);
    assert_eq!(rd64(l.frame + 8), UC_FP_XSTATE | UC_SIGCONTEXT_SS | UC_STRICT_RESTORE_SS);
    assert_eq!(rd64(l.frame + 8 + 16), 0x7000_0000);
    assert_eq!(rd64(l.frame + 8 + 32), 0x8000);
    assert_eq!(rd64(l.frame + 8 + 296), 0x8000_0000_0000_0201);
    // fpstate: copied, sw bytes, magic2, xcomp_bv cleared.
    assert_eq!(buf[at(l.fpstate) + 100], xsave[100]);
    assert_eq!(buf[at(l.fpstate) + 999], xsave[999]);
    assert_eq!(rd32(l.fpstate + 464), FP_XSTATE_MAGIC1);
    assert_eq!(rd32(l.fpstate + 468), 1004);
    assert_eq!(rd64(l.fpstate + 472), 0x7);
    assert_eq!(rd32(l.fpstate + 480), 1000);
    assert_eq!(rd64(l.fpstate + 520), 0);
    assert_eq!(rd32(l.fpstate + 1000), FP_XSTATE_MAGIC2);
    // Untouched outside [frame, end).
    assert_eq!(buf[at(l.frame) - 1], 0xee);
    assert_eq!(buf[at(l.end)], 0xee);
}

#[test]
fn builder_without_or_with_legacy_fpu_state() {
    let regs = regs_pattern();
    let mut buf = vec![0u8; 4096];
    let mut input = FrameInput { gpregs: &regs, xsave: &[], sigmask: 0, altstack: StackT::default() };
    let l = build_sigframe(&mut buf, 0x1000, &input).unwrap();
    assert_eq!(l.fpstate, 0);
    assert_eq!(get_u64(&buf, (l.frame - 0x1000) as usize + 8), UC_SIGCONTEXT_SS | UC_STRICT_RESTORE_SS);
    let fx = [0x5au8; 512];
    input.xsave = &fx;
    let l = build_sigframe(&mut buf, 0x1000, &input).unwrap();
    let fp = (l.fpstate - 0x1000) as usize;
    assert_eq!(get_u64(&buf, (l.frame - 0x1000) as usize + 8) & UC_FP_XSTATE, 0);
    assert_eq!(get_u64(&buf, fp + 464), 0, "no magic1 for FXSAVE-only state");
    assert_eq!(buf[fp + 463], 0x5a);
    input.xsave = &fx[..100];
    assert_eq!(build_sigframe(&mut buf, 0x1000, &input), Err(SigframeError::BadXsave));
    input.xsave = &fx;
    assert_eq!(build_sigframe(&mut buf[..900], 0x1000, &input), Err(SigframeError::NoRoom));
    assert_eq!(build_sigframe(&mut buf, u64::MAX - 100, &input), Err(SigframeError::NoRoom));
}

// ---- A real rt_sigreturn --------------------------------------------------

/// fd the child reports through.
const REPORT_FD: usize = 250;
/// ymm/xmm save area + 17 words (rsp, r15..r8, rbp, rdi, rsi, rdx, rcx, rbx, rax, rflags).
const LANDED_LEN: usize = 512 + 17 * 8;
const REPORT_LEN: usize = LANDED_LEN + 8 + 24;

extern "C" {
    fn sigframe_test_landing_sse();
    fn sigframe_test_landing_avx();
}

include!("landing.rs");
sigreturn_landing!("sigframe_test_landing_sse", "movdqu [rsp + 32*\\i], xmm\\i", landed);
sigreturn_landing!("sigframe_test_landing_avx", "vmovdqu [rsp + 32*\\i], ymm\\i", landed);

/// Runs on the restored context: reports registers, mask and altstack.
extern "C" fn landed(saved: *const u8) -> ! {
    let mut report = [0u8; REPORT_LEN];
    // SAFETY: the landing code stored LANDED_LEN bytes at `saved`.
    let landed = unsafe { core::slice::from_raw_parts(saved, LANDED_LEN) };
    report[..LANDED_LEN].copy_from_slice(landed);
    let (mask, sas) = report[LANDED_LEN..].split_at_mut(8);
    // SAFETY: plain syscalls writing into local buffers.
    unsafe {
        let _ = syscall!(Sysno::rt_sigprocmask, 0, 0, mask.as_mut_ptr(), 8);
        let _ = syscall!(Sysno::sigaltstack, 0, sas.as_mut_ptr());
        let _ = syscall!(Sysno::write, REPORT_FD, report.as_ptr(), REPORT_LEN);
        let _ = syscall!(Sysno::exit_group, 0);
    }
    unreachable!("exit_group returned")
}

fn cpuid(leaf: u32, sub: u32) -> core::arch::x86_64::CpuidResult {
    #[allow(unused_unsafe)]
    // SAFETY: cpuid is always available on x86_64.
    unsafe {
        core::arch::x86_64::__cpuid_count(leaf, sub)
    }
}

fn xgetbv0() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: xgetbv(0) reads XCR0; OSXSAVE is set on any kernel using XSAVE.
    unsafe { asm!("xgetbv", in("ecx") 0, out("eax") lo, out("edx") hi, options(nomem, nostack)) };
    (hi as u64) << 32 | lo as u64
}

/// Features a task has by default (XCR0 minus the AMX ones that need
/// permission) and the standard-format XSAVE size covering them.
fn user_xfeatures() -> (u64, usize) {
    let mask = xgetbv0() & !(3 << 17);
    let mut size = XSAVE_MIN_SIZE;
    for i in 2..63 {
        if mask & (1 << i) != 0 {
            let c = cpuid(0xd, i);
            size = size.max((c.ebx + c.eax) as usize);
        }
    }
    (mask, size)
}

fn pattern(i: usize, j: usize) -> u8 {
    (i * 32 + j) as u8 ^ 0xa5
}

#[test]
fn kernel_rt_sigreturn_restores_the_frame() {
    let (mask, xsize) = user_xfeatures();
    let avx = mask & 4 != 0;
    let ymm_off = cpuid(0xd, 2).ebx as usize;

    // Everything the child needs is allocated before fork.
    let mut xraw = vec![0u8; xsize + 64];
    let xoff = xraw.as_ptr().align_offset(64);
    let mut frame_buf = vec![0u8; 64 * 1024];
    let landing_stack = vec![0u8; 64 * 1024];
    let altstack = vec![0u8; 32 * 1024];
    let mut fds = [0i32; 2];
    // SAFETY: pipe2 writes two fds into `fds`.
    unsafe { syscall!(Sysno::pipe2, fds.as_mut_ptr(), 0o2000000) }.unwrap();

    let mut regs = regs_pattern();
    let stack_top = (landing_stack.as_ptr() as u64 + landing_stack.len() as u64) & !15;
    regs[gpreg::RSP] = stack_top;
    regs[gpreg::RIP] = if avx { sigframe_test_landing_avx as *const () as usize } else { sigframe_test_landing_sse as *const () as usize } as u64;
    regs[gpreg::EFLAGS] = 0x202 | 0x1 | 0x40 | 0x800; // IF, CF, ZF, OF
    let sigmask: u64 = (1 << (10 - 1)) | (1 << (40 - 1));
    let sas = StackT { ss_sp: altstack.as_ptr() as u64, ss_flags: 0, _pad: 0, ss_size: altstack.len() as u64 };

    // SAFETY: fork; the child only runs code that does not allocate or lock.
    let pid = unsafe { syscall!(Sysno::fork) }.unwrap();
    if pid == 0 {
        let x = &mut xraw[xoff..xoff + xsize];
        // SAFETY: `x` is 64-byte aligned and `xsize` bytes long, enough for
        // the features in `mask`.
        unsafe {
            asm!("xsave64 [{p}]", p = in(reg) x.as_mut_ptr(), in("eax") mask as u32, in("edx") (mask >> 32) as u32, options(nostack));
        }
        let mut bv = get_u64(x, XSTATE_BV_OFFSET) | 2;
        for i in 0..16 {
            for j in 0..16 {
                x[160 + 16 * i + j] = pattern(i, j);
                if avx {
                    x[ymm_off + 16 * i + j] = pattern(i, 16 + j);
                }
            }
        }
        if avx {
            bv |= 4;
        }
        x[XSTATE_BV_OFFSET..XSTATE_BV_OFFSET + 8].copy_from_slice(&bv.to_le_bytes());
        let base = frame_buf.as_ptr() as u64;
        let input = FrameInput { gpregs: &regs, xsave: x, sigmask, altstack: sas };
        let Ok(l) = build_sigframe(&mut frame_buf, base, &input) else {
            // SAFETY: exiting the child.
            unsafe { let _ = syscall!(Sysno::exit_group, 3); }
            unreachable!()
        };
        // SAFETY: route the report to REPORT_FD, then jump into the frame.
        unsafe {
            let _ = syscall!(Sysno::dup2, fds[1], REPORT_FD);
            asm!("mov rsp, {rsp}", "mov eax, 15", "syscall", "ud2", rsp = in(reg) l.rsp, options(noreturn));
        }
    }
    // SAFETY: closing our copy of the write end; reading into a local buffer.
    unsafe { syscall!(Sysno::close, fds[1]) }.unwrap();
    let mut report = vec![0u8; REPORT_LEN + 1];
    let mut got = 0;
    loop {
        // SAFETY: reading into the remaining part of `report`.
        let n = unsafe { syscall!(Sysno::read, fds[0], report[got..].as_mut_ptr(), report.len() - got) }.unwrap();
        if n == 0 {
            break;
        }
        got += n;
    }
    let mut status = 0i32;
    // SAFETY: waiting for our own child.
    unsafe { syscall!(Sysno::wait4, pid, &mut status as *mut i32, 0, 0) }.unwrap();
    unsafe { syscall!(Sysno::close, fds[0]) }.unwrap();
    assert_eq!(status, 0, "child wait status {status:#x}");
    assert_eq!(got, REPORT_LEN);

    let word = |k: usize| get_u64(&report, 512 + 8 * k);
    assert_eq!(word(0), stack_top, "rsp");
    let order = [
        gpreg::R15, gpreg::R14, gpreg::R13, gpreg::R12, gpreg::R11, gpreg::R10, gpreg::R9, gpreg::R8,
        gpreg::RBP, gpreg::RDI, gpreg::RSI, gpreg::RDX, gpreg::RCX, gpreg::RBX, gpreg::RAX,
    ];
    for (k, idx) in order.iter().enumerate() {
        assert_eq!(word(1 + k), regs[*idx], "gpreg index {idx}");
    }
    assert_eq!(word(16) & 0xcd5, 0x841, "rflags {:#x}", word(16));
    for i in 0..16 {
        for j in 0..16 {
            assert_eq!(report[32 * i + j], pattern(i, j), "xmm{i} byte {j}");
            if avx {
                assert_eq!(report[32 * i + 16 + j], pattern(i, 16 + j), "ymm{i} high byte {j}");
            }
        }
    }
    assert_eq!(get_u64(&report, LANDED_LEN), sigmask, "signal mask");
    assert_eq!(get_u64(&report, LANDED_LEN + 8), sas.ss_sp, "sigaltstack sp");
    assert_eq!(get_u64(&report, LANDED_LEN + 8 + 16), sas.ss_size, "sigaltstack size");
}
