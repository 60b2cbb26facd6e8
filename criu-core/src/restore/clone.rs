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
        // The kernel refuses an exit signal with CLONE_PARENT: the child
        // takes ours (SIGCHLD for criu-rs), for its new parent.
        exit_signal: if flags & libc::CLONE_PARENT as u64 != 0 { 0 } else { libc::SIGCHLD as u64 },
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

/// How long [`wait_pids_free`] waits for a dead task to let go of a pid.
pub const PID_PATIENCE: std::time::Duration = std::time::Duration::from_secs(10);

/// `PF_EXITING` in `/proc/PID/stat`'s flags: the task is on its way out.
const PF_EXITING: u32 = 0x4;

/// Waits (at most `patience`) until none of `pids` is held by a task that
/// is dead or dying: a zombie not yet reaped (e.g. a task a dump just
/// killed, whose new parent, init, reaps it when it gets to it) or a task
/// already exiting. Each wait is logged. A pid held by a live task is
/// [`RestoreError::PidInUse`] at once; so is one still held at the end.
pub fn wait_pids_free(pids: &[i32], patience: std::time::Duration) -> Result<()> {
    let deadline = std::time::Instant::now() + patience;
    for &pid in pids {
        let mut logged = false;
        loop {
            let Ok(st) = crate::proc::stat::read_stat(pid) else { break };
            let dying = matches!(st.state, 'Z' | 'X') || st.flags & PF_EXITING != 0;
            if !dying || std::time::Instant::now() >= deadline {
                return Err(RestoreError::PidInUse { pid });
            }
            if !logged {
                tracing::info!(pid, state = %st.state, ppid = st.ppid, "pid still held by a dead task: waiting for it to be reaped");
                logged = true;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        if logged {
            tracing::info!(pid, "pid free");
        }
    }
    Ok(())
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

    #[test]
    fn a_live_pid_is_in_use_and_a_free_one_is_not() {
        let me = std::process::id() as i32;
        let r = wait_pids_free(&[me], PID_PATIENCE);
        assert!(matches!(r, Err(RestoreError::PidInUse { pid }) if pid == me), "{r:?}");
        // A child that exited and was reaped leaves its pid free.
        let child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id() as i32;
        let mut child = child;
        child.wait().unwrap();
        wait_pids_free(&[pid], PID_PATIENCE).unwrap();
    }

    #[test]
    fn a_zombie_pid_is_waited_for_until_reaped() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id() as i32;
        // Until reaped, the pid is a zombie's: the wait ends at the deadline.
        while crate::proc::stat::read_stat(pid).map(|s| s.state).unwrap_or('Z') != 'Z' {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        let r = wait_pids_free(&[pid], std::time::Duration::from_millis(50));
        assert!(matches!(r, Err(RestoreError::PidInUse { .. })), "{r:?}");
        // Reaped while waited for: free.
        let reaper = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(100));
            child.wait().unwrap();
        });
        wait_pids_free(&[pid], PID_PATIENCE).unwrap();
        reaper.join().unwrap();
    }
}
