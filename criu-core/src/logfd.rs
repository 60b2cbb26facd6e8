//! The fd criu-rs's log goes to, kept out of the fd tables of the tasks it
//! restores.
//!
//! A restored task is a fork of criu-rs: it logs through the same fd number
//! until it jumps into the blob, but it also rebuilds its fd table, and the
//! number the log was on (fd 3 for `-o FILE`, fd 2 for stderr) becomes one of
//! the program's own files. A log line written after that went into the
//! program's file and moved its offset. So the front end writes its log
//! through [`write`]; each task [`move_above`]s the log above its fd numbers
//! before it installs them and [`detach`]es it before the jump.

use rustix::fd::{BorrowedFd, RawFd};
use std::sync::atomic::{AtomicI32, Ordering};

/// The log's fd; -1: logging is off in this process.
static FD: AtomicI32 = AtomicI32::new(libc::STDERR_FILENO);

/// Sends the log to `fd` (the front end, once, before anything logs); the
/// fd stays open for the life of the process.
pub fn set(fd: rustix::fd::OwnedFd) {
    use rustix::fd::IntoRawFd;
    FD.store(fd.into_raw_fd(), Ordering::SeqCst);
}

/// The fd the log goes to now, or -1.
pub fn current() -> RawFd {
    FD.load(Ordering::SeqCst)
}

/// `write(2)` of `buf` to the log; after [`detach`], the bytes are dropped.
pub fn write(buf: &[u8]) -> std::io::Result<usize> {
    let fd = current();
    if fd < 0 {
        return Ok(buf.len());
    }
    // SAFETY: `fd` stays open while it is the log fd: `set` leaks it,
    // `move_above` stores the new fd before anything may close the old one,
    // `detach` stores -1 before it closes.
    let fd = unsafe { BorrowedFd::borrow_raw(fd) };
    Ok(rustix::io::write(fd, buf)?)
}

/// In a task about to rebuild its fd table: `fcntl(log, F_DUPFD_CLOEXEC,
/// floor)`, and the log goes there from now on. Returns the new fd, to keep
/// open while the table is rebuilt (the old number is closed or replaced
/// with it), or -1 when logging is off.
pub fn move_above(floor: RawFd) -> Result<RawFd, rustix::io::Errno> {
    let fd = current();
    if fd < 0 || fd >= floor {
        return Ok(fd);
    }
    // SAFETY: as in `write`.
    let old = unsafe { BorrowedFd::borrow_raw(fd) };
    let new = rustix::io::fcntl_dupfd_cloexec(old, floor)?;
    use rustix::fd::IntoRawFd;
    let new = new.into_raw_fd();
    FD.store(new, Ordering::SeqCst);
    Ok(new)
}

/// In a task about to become the restored program: logging stops and the
/// log's fd is closed, so the program does not inherit it.
pub fn detach() {
    let fd = FD.swap(-1, Ordering::SeqCst);
    if fd >= 0 {
        // SAFETY: the log fd is ours (leaked by `set` or made by
        // `move_above`); nothing uses it after the swap above.
        unsafe { libc::close(fd) };
    }
}

/// Before forking a task that shares this one's fd table (`CLONE_FILES`):
/// a copy of the log fd at or above `floor` for that task to [`adopt`], so
/// that each task closes its own at [`detach`]. -1 when logging is off.
pub fn copy_above(floor: RawFd) -> Result<RawFd, rustix::io::Errno> {
    let fd = current();
    if fd < 0 {
        return Ok(-1);
    }
    // SAFETY: as in `write`.
    let old = unsafe { BorrowedFd::borrow_raw(fd) };
    use rustix::fd::IntoRawFd;
    Ok(rustix::io::fcntl_dupfd_cloexec(old, floor)?.into_raw_fd())
}

/// In a task forked sharing its parent's fd table: the log goes to `fd`
/// (made for it by [`copy_above`]) from now on.
pub fn adopt(fd: RawFd) {
    FD.store(fd, Ordering::SeqCst);
}
