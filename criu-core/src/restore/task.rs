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
            // Reap it; a traced child may still report stops queued before the kill.
            use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
            loop {
                match waitpid(nix::unistd::Pid::from_raw(self.pid), Some(WaitPidFlag::__WALL)) {
                    Ok(WaitStatus::Exited(..)) | Ok(WaitStatus::Signaled(..)) | Err(_) => break,
                    Ok(_) => continue,
                }
            }
        }
    }
}
