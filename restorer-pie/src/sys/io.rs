//! File-descriptor syscalls: read, write, openat, close.

use core::ffi::CStr;
use syscalls::{syscall, Errno, Sysno};

/// `read(fd, buf, len)`; returns the number of bytes read.
pub fn read(fd: i32, buf: &mut [u8]) -> Result<usize, Errno> {
    // SAFETY: the kernel writes at most buf.len() bytes into buf.
    unsafe { syscall!(Sysno::read, fd as isize, buf.as_mut_ptr(), buf.len()) }
}

/// `write(fd, buf, len)`; returns the number of bytes written.
pub fn write(fd: i32, buf: &[u8]) -> Result<usize, Errno> {
    // SAFETY: the kernel reads at most buf.len() bytes from buf.
    unsafe { syscall!(Sysno::write, fd as isize, buf.as_ptr(), buf.len()) }
}

/// `openat(dirfd, path, flags, mode)`; returns the new fd.
pub fn openat(dirfd: i32, path: &CStr, flags: u32, mode: u32) -> Result<usize, Errno> {
    // SAFETY: path is NUL-terminated and outlives the call.
    unsafe { syscall!(Sysno::openat, dirfd as isize, path.as_ptr(), flags, mode) }
}

/// `close(fd)`.
pub fn close(fd: i32) -> Result<usize, Errno> {
    // SAFETY: closing a descriptor touches no memory of ours.
    unsafe { syscall!(Sysno::close, fd as isize) }
}
