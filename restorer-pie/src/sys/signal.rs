//! Signal syscalls: rt_sigaction, rt_sigprocmask, rt_sigreturn, kill,
//! tgkill, rt_sigqueueinfo, sigaltstack.

use core::arch::asm;
use linux_raw_sys::general::{kernel_sigaction, kernel_sigset_t, siginfo_t, stack_t};
use syscalls::{syscall, Errno, Sysno};

/// The kernel's sigset size, passed to the `rt_sig*` calls.
pub const SIGSET_SIZE: usize = core::mem::size_of::<kernel_sigset_t>();

/// `rt_sigaction(sig, act, oldact, sizeof(sigset))`.
///
/// # Safety
/// `act` must be null or readable, `oldact` null or writable; a handler
/// installed must be valid code for as long as it stays installed.
pub unsafe fn rt_sigaction(sig: i32, act: *const kernel_sigaction, oldact: *mut kernel_sigaction) -> Result<usize, Errno> {
    // SAFETY: the caller vouches for both pointers.
    unsafe { syscall!(Sysno::rt_sigaction, sig as isize, act, oldact, SIGSET_SIZE) }
}

/// `rt_sigprocmask(how, set, oldset, sizeof(sigset))`.
///
/// # Safety
/// `set` must be null or readable, `oldset` null or writable.
pub unsafe fn rt_sigprocmask(how: u32, set: *const kernel_sigset_t, oldset: *mut kernel_sigset_t) -> Result<usize, Errno> {
    // SAFETY: the caller vouches for both pointers.
    unsafe { syscall!(Sysno::rt_sigprocmask, how, set, oldset, SIGSET_SIZE) }
}

/// `rt_sigreturn()` with the stack pointer set to `sp` first.
///
/// The kernel reads the `ucontext` + `siginfo` frame as it would after a
/// signal handler's `ret`: `sp` is the address of a `struct rt_sigframe`
/// plus 8 (just past its `pretcode` slot).
///
/// # Safety
/// `sp` must point to a complete, valid signal frame; the registers, mask
/// and stack of the thread become whatever that frame says.
pub unsafe fn rt_sigreturn(sp: usize) -> ! {
    // SAFETY: the caller provides the frame; the syscall replaces the whole
    // register state and does not come back here.
    unsafe {
        asm!(
            "mov rsp, {sp}",
            "syscall",
            sp = in(reg) sp,
            in("rax") Sysno::rt_sigreturn as usize,
            options(noreturn)
        )
    }
}

/// `kill(pid, sig)`.
pub fn kill(pid: i32, sig: i32) -> Result<usize, Errno> {
    // SAFETY: no memory is passed.
    unsafe { syscall!(Sysno::kill, pid as isize, sig as isize) }
}

/// `tgkill(tgid, tid, sig)`.
pub fn tgkill(tgid: i32, tid: i32, sig: i32) -> Result<usize, Errno> {
    // SAFETY: no memory is passed.
    unsafe { syscall!(Sysno::tgkill, tgid as isize, tid as isize, sig as isize) }
}

/// `rt_sigqueueinfo(tgid, sig, info)`.
///
/// # Safety
/// `info` must point to a readable `siginfo_t`.
pub unsafe fn rt_sigqueueinfo(tgid: i32, sig: i32, info: *const siginfo_t) -> Result<usize, Errno> {
    // SAFETY: the caller vouches for info.
    unsafe { syscall!(Sysno::rt_sigqueueinfo, tgid as isize, sig as isize, info) }
}

/// `sigaltstack(ss, old_ss)`.
///
/// # Safety
/// `ss` must be null or readable, `old_ss` null or writable; an installed
/// stack must stay mapped while it is in use.
pub unsafe fn sigaltstack(ss: *const stack_t, old_ss: *mut stack_t) -> Result<usize, Errno> {
    // SAFETY: the caller vouches for both pointers.
    unsafe { syscall!(Sysno::sigaltstack, ss, old_ss) }
}
