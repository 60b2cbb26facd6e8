//! Creating the task with its dumped pid: `clone3` with `set_tid`.
//!
//! The child is a plain fork of criu-rs (no `CLONE_VM`); it goes on to
//! rebuild the task's files and memory itself, then jumps into the blob.

use super::error::{RestoreError, Result};
use rustix::io::Errno;

// The kernel's `struct clone_args` (version 2, with `set_tid`).
use linux_raw_sys::general::clone_args as CloneArgs;

/// Which side of the fork the caller is on.
#[derive(Debug, PartialEq, Eq)]
pub enum Forked {
    Parent { child: i32 },
    Child,
}

/// `clone3(&{exit_signal: SIGCHLD, set_tid: [pid]}, sizeof)`: forks a child
/// whose pid is exactly `pid`.
///
/// A taken pid is [`RestoreError::PidInUse`]; no child exists then.
///
/// # Safety
/// The process must be single-threaded (or the child must only use
/// async-signal-safe code), as after `fork`.
pub unsafe fn clone3_set_tid(pid: i32) -> Result<Forked> {
    // SAFETY: the caller's promise.
    unsafe { clone3_set_tid_flags(pid, 0) }
}

/// `clone3(&{flags, exit_signal: SIGCHLD, set_tid: [pid]}, sizeof)`: as
/// [`clone3_set_tid`] with extra `CLONE_*` flags (e.g. `CLONE_UNTRACED`).
///
/// # Safety
/// As [`clone3_set_tid`].
pub unsafe fn clone3_set_tid_flags(pid: i32, flags: u64) -> Result<Forked> {
    let tid: libc::pid_t = pid;
    let args = CloneArgs {
        flags,
        pidfd: 0,
        child_tid: 0,
        parent_tid: 0,
        exit_signal: libc::SIGCHLD as u64,
        stack: 0,
        stack_size: 0,
        tls: 0,
        set_tid: &tid as *const libc::pid_t as u64,
        set_tid_size: 1,
        cgroup: 0,
    };
    // SAFETY: args and tid outlive the call; without CLONE_VM the child gets
    // a copy of this address space and returns here with 0, like fork.
    let ret = unsafe {
        libc::syscall(libc::SYS_clone3, &args as *const CloneArgs, std::mem::size_of::<CloneArgs>())
    };
    match ret {
        0 => Ok(Forked::Child),
        r if r > 0 => Ok(Forked::Parent { child: r as i32 }),
        _ => {
            let errno = Errno::from_raw_os_error(std::io::Error::last_os_error().raw_os_error().unwrap_or(0));
            if errno == Errno::EXIST {
                Err(RestoreError::PidInUse { pid })
            } else {
                Err(RestoreError::sys(format!("clone3(set_tid={pid})"), errno))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_pid_is_in_use() {
        // Fails before any child exists, so this is safe in a threaded test.
        // SAFETY: the call fails (EEXIST); no child runs.
        let r = unsafe { clone3_set_tid(std::process::id() as i32) };
        assert!(matches!(r, Err(RestoreError::PidInUse { .. })), "{r:?}");
    }
}
