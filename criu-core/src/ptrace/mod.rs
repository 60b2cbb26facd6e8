//! Tracing other tasks: freezing a process with `PTRACE_SEIZE`, reading its
//! registers and signal state, and running syscalls inside it.
//!
//! nix covers seize/interrupt/cont/step/detach; the regset, sigmask,
//! siginfo and rseq requests are written by hand in [`raw`].

pub mod freeze;
pub mod inject;
pub mod raw;
pub mod regs;
pub mod remote;

use nix::errno::Errno;

/// A failure while tracing a task.
#[derive(Debug, thiserror::Error)]
pub enum PtraceError {
    /// A ptrace/wait call failed.
    #[error("{op} on thread {tid}: {errno}")]
    Sys {
        /// The request that failed.
        op: &'static str,
        /// The thread.
        tid: i32,
        /// The error.
        errno: Errno,
    },
    /// Another tracer (a debugger, another dump) holds the process.
    #[error("process {pid} is already traced by pid {tracer}")]
    AlreadyTraced {
        /// The traced task.
        pid: i32,
        /// Its tracer.
        tracer: i32,
    },
    /// The kernel refused to let us trace the process.
    #[error("not allowed to trace process {0} (PTRACE_SEIZE: EPERM): it runs as another user, is not dumpable, or ptrace is restricted")]
    NotPermitted(i32),
    /// The task did something we did not expect while traced.
    #[error("thread {tid}: {what}")]
    Unexpected {
        /// The thread.
        tid: i32,
        /// What happened.
        what: String,
    },
    /// Reading `/proc` failed.
    #[error(transparent)]
    Proc(#[from] crate::proc::ProcError),
}

/// Result of the ptrace helpers.
pub type Result<T> = std::result::Result<T, PtraceError>;

/// Builds a closure mapping an errno to [`PtraceError::Sys`].
pub(crate) fn sys(op: &'static str, tid: i32) -> impl Fn(Errno) -> PtraceError {
    move |errno| PtraceError::Sys { op, tid, errno }
}

/// nix's pid type for a thread id.
pub(crate) fn npid(tid: i32) -> nix::unistd::Pid {
    nix::unistd::Pid::from_raw(tid)
}
