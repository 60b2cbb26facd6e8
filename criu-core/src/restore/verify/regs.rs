//! Every thread's general registers (`PTRACE_GETREGS`: after its
//! `rt_sigreturn` they must be exactly the dumped ones) and its rseq
//! registration (`PTRACE_GET_RSEQ_CONFIGURATION`), against
//! `thread_info.gpregs` and `thread_core.rseq_entry`.

use super::{same_hex, Check, TaskImages};
use nix::sys::ptrace;
use nix::unistd::Pid;

/// The arithmetic flags and DF: what a program's state holds in
/// `eflags` (TF, RF and the fixed bits are the kernel's and ptrace's).
const FLAGS: u64 = 0xcd5;

pub fn check(t: &TaskImages) -> Check {
    for (tid, core) in &t.threads {
        if let Some(want) = core.thread_info.as_ref().and_then(|ti| ti.gpregs.as_ref()) {
            let got = ptrace::getregs(Pid::from_raw(*tid)).map_err(|e| format!("thread {tid}: PTRACE_GETREGS: {e}"))?;
            let w = |v: Option<u64>| v.unwrap_or_default();
            for (name, live, image) in [
                ("ip", got.rip, w(want.ip)),
                ("sp", got.rsp, w(want.sp)),
                ("ax", got.rax, w(want.ax)),
                ("bx", got.rbx, w(want.bx)),
                ("cx", got.rcx, w(want.cx)),
                ("dx", got.rdx, w(want.dx)),
                ("si", got.rsi, w(want.si)),
                ("di", got.rdi, w(want.di)),
                ("bp", got.rbp, w(want.bp)),
                ("r8", got.r8, w(want.r8)),
                ("r9", got.r9, w(want.r9)),
                ("r10", got.r10, w(want.r10)),
                ("r11", got.r11, w(want.r11)),
                ("r12", got.r12, w(want.r12)),
                ("r13", got.r13, w(want.r13)),
                ("r14", got.r14, w(want.r14)),
                ("r15", got.r15, w(want.r15)),
                ("flags", got.eflags & FLAGS, w(want.flags) & FLAGS),
                ("fs_base", got.fs_base, w(want.fs_base)),
                ("gs_base", got.gs_base, w(want.gs_base)),
            ] {
                same_hex(format_args!("thread {tid}: register {name}"), live, image)?;
            }
        }
        if let Some(r) = core.thread_core.as_ref().and_then(|c| c.rseq_entry.as_ref()) {
            let got = crate::ptrace::raw::ptrace_get_rseq_configuration(*tid)
                .map_err(|e| format!("thread {tid}: PTRACE_GET_RSEQ_CONFIGURATION: {e}"))?;
            let want = r.rseq_abi_pointer.unwrap_or_default();
            same_hex(format_args!("thread {tid}: rseq area"), got.rseq_abi_pointer, want)?;
            if want != 0 {
                same_hex(format_args!("thread {tid}: rseq size"), got.rseq_abi_size as u64, r.rseq_abi_size.unwrap_or_default() as u64)?;
                same_hex(format_args!("thread {tid}: rseq signature"), got.signature as u64, r.signature.unwrap_or_default() as u64)?;
            }
        }
    }
    Ok(())
}
