//! Memory-management syscalls: mmap, munmap, mremap, mprotect, madvise,
//! mlock2, shmat.

use syscalls::{syscall, Errno, Sysno};

/// `mmap(addr, len, prot, flags, fd, offset)`; returns the mapping's address.
///
/// # Safety
/// With `MAP_FIXED` it replaces whatever was mapped there.
pub unsafe fn mmap(addr: usize, len: usize, prot: u32, flags: u32, fd: i32, offset: u64) -> Result<usize, Errno> {
    // SAFETY: the caller owns the target range.
    unsafe { syscall!(Sysno::mmap, addr, len, prot, flags, fd as isize, offset) }
}

/// `munmap(addr, len)`.
///
/// # Safety
/// Nothing may still use the range.
pub unsafe fn munmap(addr: usize, len: usize) -> Result<usize, Errno> {
    // SAFETY: the caller owns the range.
    unsafe { syscall!(Sysno::munmap, addr, len) }
}

/// `mremap(old_addr, old_len, new_len, flags, new_addr)`; returns the new address.
///
/// # Safety
/// Moves memory: nothing may use the old range afterwards, and with
/// `MREMAP_FIXED` the target range is replaced.
pub unsafe fn mremap(old_addr: usize, old_len: usize, new_len: usize, flags: u32, new_addr: usize) -> Result<usize, Errno> {
    // SAFETY: the caller owns both ranges.
    unsafe { syscall!(Sysno::mremap, old_addr, old_len, new_len, flags, new_addr) }
}

/// `mprotect(addr, len, prot)`.
///
/// # Safety
/// Removing access from memory in use faults its users.
pub unsafe fn mprotect(addr: usize, len: usize, prot: u32) -> Result<usize, Errno> {
    // SAFETY: the caller owns the range.
    unsafe { syscall!(Sysno::mprotect, addr, len, prot) }
}

/// `madvise(addr, len, advice)`.
///
/// # Safety
/// Some advice (e.g. `MADV_DONTNEED`) discards memory contents.
pub unsafe fn madvise(addr: usize, len: usize, advice: u32) -> Result<usize, Errno> {
    // SAFETY: the caller owns the range.
    unsafe { syscall!(Sysno::madvise, addr, len, advice) }
}

/// `mlock2(addr, len, flags)`.
///
/// # Safety
/// Without `MLOCK_ONFAULT` it populates the range: its contents must be
/// final (a range still to be registered with userfaultfd would be filled
/// with zeros).
pub unsafe fn mlock2(addr: usize, len: usize, flags: u32) -> Result<usize, Errno> {
    // SAFETY: the caller owns the range.
    unsafe { syscall!(Sysno::mlock2, addr, len, flags) }
}

/// `shmat(shmid, addr, flags)`; returns the attachment's address.
///
/// # Safety
/// The segment is mapped at `addr`: nothing else may be there.
pub unsafe fn shmat(shmid: i32, addr: usize, flags: u32) -> Result<usize, Errno> {
    // SAFETY: the caller owns the target range.
    unsafe { syscall!(Sysno::shmat, shmid as isize, addr, flags) }
}
