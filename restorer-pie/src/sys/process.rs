//! Process and thread syscalls: exit_group, getpid, gettid, prctl,
//! set_tid_address, arch_prctl, setitimer, clock_gettime.

use core::arch::asm;
use syscalls::{syscall, Errno, Sysno};

/// `exit_group(code)`: ends every thread of the process.
pub fn exit_group(code: i32) -> ! {
    // SAFETY: exit_group does not return, so no state is left to corrupt.
    unsafe {
        asm!(
            "syscall",
            in("rax") Sysno::exit_group as usize,
            in("rdi") code as isize,
            options(noreturn, nostack)
        )
    }
}

/// `clock_gettime(CLOCK_MONOTONIC, &ts)` in nanoseconds (0 if the call
/// fails): a raw syscall, since the blob runs while the vDSO is moved.
pub fn monotonic_ns() -> u64 {
    let mut ts = [0i64; 2];
    // SAFETY: the kernel writes one struct timespec (two longs) to `ts`.
    match unsafe { syscall!(Sysno::clock_gettime, 1usize, ts.as_mut_ptr()) } {
        Ok(_) => (ts[0] as u64).wrapping_mul(1_000_000_000).wrapping_add(ts[1] as u64),
        Err(_) => 0,
    }
}

/// `getpid()`.
pub fn getpid() -> Result<usize, Errno> {
    // SAFETY: no arguments, no memory touched.
    unsafe { syscall!(Sysno::getpid) }
}

/// `gettid()`.
pub fn gettid() -> Result<usize, Errno> {
    // SAFETY: no arguments, no memory touched.
    unsafe { syscall!(Sysno::gettid) }
}

/// `prctl(option, arg2, arg3, arg4, arg5)`.
///
/// # Safety
/// Depending on `option` the arguments are addresses the kernel reads or
/// writes, or change the process in ways (e.g. `PR_SET_MM`) its code relies on.
pub unsafe fn prctl(option: u32, arg2: usize, arg3: usize, arg4: usize, arg5: usize) -> Result<usize, Errno> {
    // SAFETY: the caller vouches for the arguments.
    unsafe { syscall!(Sysno::prctl, option, arg2, arg3, arg4, arg5) }
}

/// `set_tid_address(tidptr)`; returns the caller's tid.
///
/// # Safety
/// The kernel writes 0 to `tidptr` (and futex-wakes it) when the thread exits.
pub unsafe fn set_tid_address(tidptr: usize) -> Result<usize, Errno> {
    // SAFETY: the caller vouches for tidptr.
    unsafe { syscall!(Sysno::set_tid_address, tidptr) }
}

/// `arch_prctl(code, addr)`.
///
/// # Safety
/// `ARCH_SET_FS`/`ARCH_SET_GS` change the thread's TLS base; `ARCH_GET_*`
/// write through `addr`.
pub unsafe fn arch_prctl(code: u32, addr: usize) -> Result<usize, Errno> {
    // SAFETY: the caller vouches for addr.
    unsafe { syscall!(Sysno::arch_prctl, code, addr) }
}

/// `setitimer(which, new_value, old_value)`.
///
/// # Safety
/// `new_value` must point to a readable `itimerval`, and `old_value` be null
/// or point to a writable one.
pub unsafe fn setitimer(
    which: i32,
    new_value: *const linux_raw_sys::general::itimerval,
    old_value: *mut linux_raw_sys::general::itimerval,
) -> Result<usize, Errno> {
    // SAFETY: the caller vouches for both pointers.
    unsafe { syscall!(Sysno::setitimer, which as isize, new_value, old_value) }
}
