//! Per-task state syscalls the restorer needs: rlimits, POSIX timers,
//! credentials and capabilities, personality, rseq, queueing signals to one
//! thread, and `ioctl` (to register userfaultfd ranges).

use linux_raw_sys::general::{__user_cap_data_struct, __user_cap_header_struct, rlimit64, siginfo_t};
use syscalls::{syscall, Errno, Sysno};

/// `prlimit64(pid, resource, new_limit, old_limit)`.
///
/// # Safety
/// `new_limit` must be null or readable, `old_limit` null or writable.
pub unsafe fn prlimit64(pid: i32, resource: u32, new_limit: *const rlimit64, old_limit: *mut rlimit64) -> Result<usize, Errno> {
    // SAFETY: the caller vouches for both pointers.
    unsafe { syscall!(Sysno::prlimit64, pid as isize, resource, new_limit, old_limit) }
}

/// `timer_create(clockid, sevp, timerid)`.
///
/// # Safety
/// `sevp` must be null or point to a readable 64-byte `sigevent`; `timerid`
/// must point to a writable `int` (read too with PR_TIMER_CREATE_RESTORE_IDS).
pub unsafe fn timer_create(clockid: i32, sevp: *const u8, timerid: *mut i32) -> Result<usize, Errno> {
    // SAFETY: the caller vouches for both pointers.
    unsafe { syscall!(Sysno::timer_create, clockid as isize, sevp, timerid) }
}

/// `timer_settime(timerid, flags, new_value, old_value)`.
///
/// # Safety
/// `new_value` must point to a readable `itimerspec` (4 × i64),
/// `old_value` be null or writable.
pub unsafe fn timer_settime(timerid: i32, flags: i32, new_value: *const i64, old_value: *mut i64) -> Result<usize, Errno> {
    // SAFETY: the caller vouches for both pointers.
    unsafe { syscall!(Sysno::timer_settime, timerid as isize, flags as isize, new_value, old_value) }
}

/// `timer_delete(timerid)`.
pub fn timer_delete(timerid: i32) -> Result<usize, Errno> {
    // SAFETY: no memory is passed.
    unsafe { syscall!(Sysno::timer_delete, timerid as isize) }
}

/// `setresuid(ruid, euid, suid)`.
pub fn setresuid(ruid: u32, euid: u32, suid: u32) -> Result<usize, Errno> {
    // SAFETY: no memory is passed.
    unsafe { syscall!(Sysno::setresuid, ruid, euid, suid) }
}

/// `setresgid(rgid, egid, sgid)`.
pub fn setresgid(rgid: u32, egid: u32, sgid: u32) -> Result<usize, Errno> {
    // SAFETY: no memory is passed.
    unsafe { syscall!(Sysno::setresgid, rgid, egid, sgid) }
}

/// `setfsuid(fsuid)`; returns the previous fsuid (never an error code).
pub fn setfsuid(fsuid: u32) -> Result<usize, Errno> {
    // SAFETY: no memory is passed.
    unsafe { syscall!(Sysno::setfsuid, fsuid) }
}

/// `setfsgid(fsgid)`; returns the previous fsgid (never an error code).
pub fn setfsgid(fsgid: u32) -> Result<usize, Errno> {
    // SAFETY: no memory is passed.
    unsafe { syscall!(Sysno::setfsgid, fsgid) }
}

/// `getresuid(&ruid, &euid, &suid)`.
pub fn getresuid() -> Result<[u32; 3], Errno> {
    let mut ids = [0u32; 3];
    // SAFETY: the kernel writes one u32 to each of the three pointers.
    unsafe { syscall!(Sysno::getresuid, &mut ids[0] as *mut u32, &mut ids[1] as *mut u32, &mut ids[2] as *mut u32) }?;
    Ok(ids)
}

/// `getresgid(&rgid, &egid, &sgid)`.
pub fn getresgid() -> Result<[u32; 3], Errno> {
    let mut ids = [0u32; 3];
    // SAFETY: the kernel writes one u32 to each of the three pointers.
    unsafe { syscall!(Sysno::getresgid, &mut ids[0] as *mut u32, &mut ids[1] as *mut u32, &mut ids[2] as *mut u32) }?;
    Ok(ids)
}

/// `getgroups(size, list)`: with an empty `list`, the number of groups.
pub fn getgroups(list: &mut [u32]) -> Result<usize, Errno> {
    // SAFETY: the kernel writes at most `list.len()` gids to the slice.
    unsafe { syscall!(Sysno::getgroups, list.len(), list.as_mut_ptr()) }
}

/// `capget(hdrp, datap)` with a v3 header (two data structs).
pub fn capget(hdr: &mut __user_cap_header_struct, data: &mut [__user_cap_data_struct; 2]) -> Result<usize, Errno> {
    // SAFETY: both pointers come from references of the right types.
    unsafe { syscall!(Sysno::capget, hdr as *mut _, data.as_mut_ptr()) }
}

/// `setgroups(size, list)`.
pub fn setgroups(list: &[u32]) -> Result<usize, Errno> {
    // SAFETY: the kernel reads `list.len()` gids from the slice.
    unsafe { syscall!(Sysno::setgroups, list.len(), list.as_ptr()) }
}

/// `capset(hdrp, datap)` with a v3 header (two data structs).
pub fn capset(hdr: &__user_cap_header_struct, data: &[__user_cap_data_struct; 2]) -> Result<usize, Errno> {
    // SAFETY: both pointers come from references of the right types.
    unsafe { syscall!(Sysno::capset, hdr as *const _, data.as_ptr()) }
}

/// `seccomp(operation, flags, args)`.
///
/// # Safety
/// `args` must be what `operation` expects: null for
/// `SECCOMP_SET_MODE_STRICT`, a readable `struct sock_fprog` whose program
/// is readable for `SECCOMP_SET_MODE_FILTER`.
pub unsafe fn seccomp(operation: u32, flags: u32, args: *const u8) -> Result<usize, Errno> {
    // SAFETY: the caller vouches for `args`.
    unsafe { syscall!(Sysno::seccomp, operation, flags, args) }
}

/// `sched_setscheduler(pid, policy, &param)` with `param` the
/// `sched_priority` (`struct sched_param` is one int).
pub fn sched_setscheduler(pid: i32, policy: i32, priority: i32) -> Result<usize, Errno> {
    let param = priority;
    // SAFETY: the kernel reads one int from `param`.
    unsafe { syscall!(Sysno::sched_setscheduler, pid as isize, policy as isize, &param as *const i32) }
}

/// `setpriority(which, who, nice)`.
pub fn setpriority(which: i32, who: i32, nice: i32) -> Result<usize, Errno> {
    // SAFETY: no memory is passed.
    unsafe { syscall!(Sysno::setpriority, which as isize, who as isize, nice as isize) }
}

/// `membarrier(cmd, flags, cpu_id)`.
pub fn membarrier(cmd: u32, flags: u32, cpu_id: i32) -> Result<usize, Errno> {
    // SAFETY: no memory is passed.
    unsafe { syscall!(Sysno::membarrier, cmd, flags, cpu_id as isize) }
}

/// `personality(persona)`; returns the previous persona.
pub fn personality(persona: u32) -> Result<usize, Errno> {
    // SAFETY: no memory is passed.
    unsafe { syscall!(Sysno::personality, persona as usize) }
}

/// `rseq(rseq, rseq_len, flags, sig)`.
///
/// # Safety
/// When registering, `rseq` must stay mapped and writable while
/// registered: the kernel writes to it on preemption.
pub unsafe fn rseq(rseq: u64, rseq_len: u32, flags: i32, sig: u32) -> Result<usize, Errno> {
    // SAFETY: the caller vouches for the area.
    unsafe { syscall!(Sysno::rseq, rseq, rseq_len, flags as isize, sig) }
}

/// `rt_tgsigqueueinfo(tgid, tid, sig, info)`.
///
/// # Safety
/// `info` must point to a readable `siginfo_t`.
pub unsafe fn rt_tgsigqueueinfo(tgid: i32, tid: i32, sig: i32, info: *const siginfo_t) -> Result<usize, Errno> {
    // SAFETY: the caller vouches for info.
    unsafe { syscall!(Sysno::rt_tgsigqueueinfo, tgid as isize, tid as isize, sig as isize, info) }
}

/// `ioctl(fd, request, arg)`.
///
/// # Safety
/// `arg` must be what `request` expects (often a pointer the kernel reads
/// and writes).
pub unsafe fn ioctl(fd: i32, request: u32, arg: usize) -> Result<usize, Errno> {
    // SAFETY: the caller vouches for the request and its argument.
    unsafe { syscall!(Sysno::ioctl, fd as isize, request, arg) }
}
