//! The final-stage check: the blob builds an rt_sigframe from thread 0 of
//! the block (registers of our choosing, an XSAVE or FXSAVE image with
//! patterned vector registers, a signal mask, a sigaltstack) and enters
//! `rt_sigreturn`; the landing code here stores what it received and
//! `landed` compares it with what was asked for.

use super::block::Block;
use super::call;
use criu_core::abi::{gpreg, ThreadArg, GPREGS_WORDS, RESTORE_F_NO_TRAP, THREAD_STACK_RESERVE};
use criu_core::pie::Loaded;
use std::arch::asm;
use std::sync::OnceLock;

/// What the landing code must find.
struct Expect {
    regs: [u64; GPREGS_WORDS],
    ymm: bool,
    sigmask: u64,
    altstack: (u64, u64),
}

static EXPECT: OnceLock<Expect> = OnceLock::new();

/// Vector save area + 17 words (rsp, r15..r8, rbp, rdi, rsi, rdx, rcx, rbx, rax, rflags).
const LANDED_LEN: usize = 512 + 17 * 8;

include!("../../../../restorer-pie/src/restore/sigframe/landing.rs");
sigreturn_landing!("pie_restore_check_landing_sse", "movdqu [rsp + 32*\\i], xmm\\i", landed);
sigreturn_landing!("pie_restore_check_landing_avx", "vmovdqu [rsp + 32*\\i], ymm\\i", landed);

extern "C" {
    fn pie_restore_check_landing_sse();
    fn pie_restore_check_landing_avx();
}

fn vec_byte(i: usize, j: usize) -> u8 {
    (i * 32 + j) as u8 ^ 0x3c
}

/// Runs on the restored context (our own stack, TLS and code): checks and exits.
extern "C" fn landed(saved: *const u8) -> ! {
    // SAFETY: the landing code stored LANDED_LEN bytes at `saved`.
    let s = unsafe { std::slice::from_raw_parts(saved, LANDED_LEN) };
    let word = |k: usize| u64::from_le_bytes(s[512 + 8 * k..520 + 8 * k].try_into().unwrap());
    let e = EXPECT.get().unwrap();
    let mut errors = Vec::new();
    if word(0) != e.regs[gpreg::RSP] {
        errors.push(format!("rsp {:#x}", word(0)));
    }
    let order = [
        gpreg::R15, gpreg::R14, gpreg::R13, gpreg::R12, gpreg::R11, gpreg::R10, gpreg::R9, gpreg::R8, gpreg::RBP,
        gpreg::RDI, gpreg::RSI, gpreg::RDX, gpreg::RCX, gpreg::RBX, gpreg::RAX,
    ];
    for (k, idx) in order.iter().enumerate() {
        if word(1 + k) != e.regs[*idx] {
            errors.push(format!("gpreg {idx}: {:#x} want {:#x}", word(1 + k), e.regs[*idx]));
        }
    }
    if word(16) & 0xcd5 != e.regs[gpreg::EFLAGS] & 0xcd5 {
        errors.push(format!("rflags {:#x}", word(16)));
    }
    for i in 0..16 {
        let n = if e.ymm { 32 } else { 16 };
        for j in 0..n {
            if s[32 * i + j] != vec_byte(i, j) {
                errors.push(format!("vector register {i} byte {j}: {:#x}", s[32 * i + j]));
                break;
            }
        }
    }
    let mut mask = 0u64;
    let mut ss = libc::stack_t { ss_sp: std::ptr::null_mut(), ss_flags: 0, ss_size: 0 };
    // SAFETY: reading the current mask and altstack into locals.
    unsafe {
        libc::syscall(libc::SYS_rt_sigprocmask, 0, 0, &mut mask, 8);
        libc::sigaltstack(std::ptr::null(), &mut ss);
    }
    if mask != e.sigmask {
        errors.push(format!("signal mask {mask:#x} want {:#x}", e.sigmask));
    }
    if (ss.ss_sp as u64, ss.ss_size as u64) != e.altstack {
        errors.push(format!("sigaltstack {:?}+{:#x}", ss.ss_sp, ss.ss_size));
    }
    if errors.is_empty() {
        println!("ok: sigreturn: registers, {} state, mask and sigaltstack restored", if e.ymm { "AVX (xsave)" } else { "SSE (fxsave)" });
        std::process::exit(0);
    }
    eprintln!("FAIL: after rt_sigreturn: {}", errors.join("; "));
    std::process::exit(1);
}

fn cpuid(leaf: u32, sub: u32) -> std::arch::x86_64::CpuidResult {
    #[allow(unused_unsafe)]
    // SAFETY: cpuid exists on every x86_64 CPU.
    unsafe {
        std::arch::x86_64::__cpuid_count(leaf, sub)
    }
}

/// This thread's FPU state as an XSAVE image (x87+SSE+AVX) if the CPU and
/// OS support XSAVE with AVX, else as a 512-byte FXSAVE image; vector
/// registers are then overwritten with a pattern.
fn fpu_image() -> (Vec<u8>, bool) {
    let c1 = cpuid(1, 0);
    let osxsave = c1.ecx & (1 << 27) != 0;
    let xcr0 = if osxsave {
        let (lo, hi): (u32, u32);
        // SAFETY: xgetbv(0) is valid when OSXSAVE is set.
        unsafe { asm!("xgetbv", in("ecx") 0, out("eax") lo, out("edx") hi, options(nomem, nostack)) };
        (hi as u64) << 32 | lo as u64
    } else {
        0
    };
    let avx = xcr0 & 0b110 == 0b110;
    let mut raw = vec![0u8; 4096 + 64];
    let off = raw.as_ptr().align_offset(64);
    let ymm_off = cpuid(0xd, 2).ebx as usize;
    let size = if avx { (ymm_off + 256).max(576) } else { 512 };
    let img = &mut raw[off..off + size];
    // SAFETY: `img` is 64-byte aligned and large enough for the features
    // requested (x87, SSE and, with AVX, the YMM_Hi128 component).
    unsafe {
        if avx {
            asm!("xsave64 [{p}]", p = in(reg) img.as_mut_ptr(), in("eax") 7u32, in("edx") 0u32, options(nostack));
        } else {
            asm!("fxsave64 [{p}]", p = in(reg) img.as_mut_ptr(), options(nostack));
        }
    }
    for i in 0..16 {
        for j in 0..16 {
            img[160 + 16 * i + j] = vec_byte(i, j);
            if avx {
                img[ymm_off + 16 * i + j] = vec_byte(i, 16 + j);
            }
        }
    }
    if avx {
        let bv = u64::from_le_bytes(img[512..520].try_into().unwrap()) | 0b110;
        img[512..520].copy_from_slice(&bv.to_le_bytes());
    }
    (img.to_vec(), avx)
}

pub fn run(loaded: &Loaded) -> Result<String, String> {
    let (fpu, ymm) = fpu_image();
    let landing_stack: &'static mut [u8] = Box::leak(vec![0u8; 256 * 1024].into_boxed_slice());
    let altstack: &'static mut [u8] = Box::leak(vec![0u8; 64 * 1024].into_boxed_slice());
    let mut fs_base = 0u64;
    // SAFETY: ARCH_GET_FS writes the fs base into `fs_base`.
    unsafe { libc::syscall(libc::SYS_arch_prctl, 0x1003, &mut fs_base) };

    let mut regs = [0u64; GPREGS_WORDS];
    for (i, r) in regs.iter_mut().enumerate() {
        *r = 0x5a5a_0000_0000_0000 | (i as u64) << 16 | 0x1234;
    }
    regs[gpreg::RSP] = (landing_stack.as_ptr() as u64 + landing_stack.len() as u64) & !15;
    regs[gpreg::RIP] =
        if ymm { pie_restore_check_landing_avx as *const () as u64 } else { pie_restore_check_landing_sse as *const () as u64 };
    regs[gpreg::EFLAGS] = 0x202 | 0x1 | 0x40 | 0x800;
    regs[gpreg::CS] = 0x33;
    regs[gpreg::SS] = 0x2b;
    regs[gpreg::FS_BASE] = fs_base;
    regs[gpreg::GS_BASE] = 0;
    for r in [gpreg::DS, gpreg::ES, gpreg::FS, gpreg::GS] {
        regs[r] = 0;
    }
    let sigmask = (1u64 << (libc::SIGUSR2 - 1)) | (1 << (libc::SIGRTMIN() + 3 - 1));
    let altstack = (altstack.as_ptr() as u64, altstack.len() as u64);
    EXPECT.set(Expect { regs, ymm, sigmask, altstack }).map_err(|_| "set twice")?;

    let mut block = Block::new(1 << 18);
    let xsave = block.push(&fpu);
    let stack = block.area(THREAD_STACK_RESERVE as usize + 16 * 1024, 16);
    let t = ThreadArg {
        tid: 0,
        gpregs: regs,
        xsave: criu_core::abi::ArgArray { off: xsave.off, count: fpu.len() as u64 },
        sigmask,
        sas_sp: altstack.0,
        sas_size: altstack.1,
        stack,
        ..Default::default()
    };
    let threads = block.push(&[t]);
    let h = block.header_mut();
    h.threads = threads;
    h.flags = RESTORE_F_NO_TRAP;
    call(loaded, "restore_test_sigreturn", &mut block)?;
    Err("restore_test_sigreturn returned".into())
}
