//! Ownership of the task being restored, from the parent's side.
//!
//! A [`TaskGuard`] SIGKILLs and reaps the task unless restore succeeded, so a
//! failure after the task exists never leaves a half-restored process.

use rustix::process::{Pid, Signal};

/// The restored task's pid; kills and reaps it on drop unless disarmed.
#[derive(Debug)]
pub struct TaskGuard {
    pid: i32,
    armed: bool,
}

impl TaskGuard {
    /// Takes charge of the child `pid`.
    pub fn new(pid: i32) -> Self {
        TaskGuard { pid, armed: true }
    }

    /// The task's pid.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Restore succeeded: leave the task alone from now on.
    pub fn disarm(mut self) -> i32 {
        self.armed = false;
        self.pid
    }
}

impl Drop for TaskGuard {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        tracing::warn!(pid = self.pid, "killing the half-restored task");
        if let Some(pid) = Pid::from_raw(self.pid) {
            let _ = rustix::process::kill_process(pid, Signal::KILL);
            // Reap it. Its traced threads stop at PTRACE_EVENT_EXIT even
            // when killed and wait for us to let them go; the leader's exit
            // comes only after they are gone. So resume whatever stops and
            // wait for any child until the leader itself is reaped.
            use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
            loop {
                match waitpid(nix::unistd::Pid::from_raw(-1), Some(WaitPidFlag::__WALL)) {
                    Ok(WaitStatus::Exited(p, _)) | Ok(WaitStatus::Signaled(p, _, _)) if p.as_raw() == self.pid => break,
                    Err(_) => break,
                    Ok(status) => {
                        if let Some(p) = status.pid() {
                            let _ = nix::sys::ptrace::cont(p, None);
                        }
                    }
                }
            }
        }
    }
}
