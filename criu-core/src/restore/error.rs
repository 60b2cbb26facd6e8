//! Errors of the restore path.
//!
//! Every image problem names the image file and what is wrong with it, so a
//! user can tell a corrupt or incomplete dump from a host problem.

use std::path::PathBuf;

/// Result of a restore step.
pub type Result<T, E = RestoreError> = std::result::Result<T, E>;

/// What went wrong while restoring.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// The images directory itself is unusable.
    #[error("{dir}: {problem}")]
    ImagesDir { dir: PathBuf, problem: String },
    /// An image file is missing, truncated, corrupt or inconsistent.
    #[error("{file}: {problem}")]
    BadImage { file: PathBuf, problem: String },
    /// An image file is missing, unreadable or malformed (the message names it).
    #[error(transparent)]
    Image(#[from] crate::images::ImageError),
    /// An image file could not be read.
    #[error("{file}: {source}")]
    ImageIo { file: PathBuf, #[source] source: std::io::Error },
    /// The images describe something this restorer does not handle yet.
    #[error("{file}: unsupported: {what}")]
    Unsupported { file: PathBuf, what: String },
    /// A thread's dumped credentials are more than criu-rs can give
    /// (capabilities beyond its own, ids outside its user namespace).
    #[error("task {pid}, thread {tid}: cannot restore its credentials: {what}")]
    CannotGrant { pid: i32, tid: i32, what: String },
    /// The dumped pid is taken by a running process.
    #[error("pid {pid} is already in use (EEXIST): cannot restore the task with its pid")]
    PidInUse { pid: i32 },
    /// A file the task had open differs from what the dump recorded.
    #[error("{path}: {problem}")]
    FileChanged { path: PathBuf, problem: String },
    /// A host system call failed.
    #[error("{what}: {errno}")]
    Sys { what: String, #[source] errno: rustix::io::Errno },
    /// No free address range is large enough.
    #[error("no free address range of {size:#x} bytes for {what}")]
    NoHole { size: u64, what: &'static str },
    /// An fd of the table names a description no image has.
    #[error("fd {fd} refers to unknown file id {id:#x}")]
    UnknownFileId { fd: i32, id: u32 },
    /// A pipe cannot hold the bytes that were queued in it.
    #[error("pipe {pipe_id:#x}: capacity {got} is below its {queued} queued bytes")]
    PipeTooSmall { pipe_id: u32, got: usize, queued: usize },
    /// Preparing the task (inside it, before the blob) failed.
    #[error("{0}")]
    Prepare(String),
    /// The task being restored reported an error before the blob ran.
    #[error("restoring task {pid}: {message}")]
    InTask { pid: i32, message: String },
    /// The task died or misbehaved while the blob ran.
    #[error("restoring task {pid}: {problem}")]
    TaskDied { pid: i32, problem: String },
    /// An option asks for something criu-rs does not do yet.
    #[error("not supported: {0}")]
    NotSupported(String),
    /// `--verify`: the restored tasks differ from the images (the first
    /// difference of each task that has one, by pid).
    #[error("{}", verify_report(diffs))]
    Verify { diffs: Vec<(i32, String)> },
    /// An action hook (`--action-script`) failed.
    #[error("{0}")]
    Action(#[from] crate::actions::ActionFailed),
}

impl RestoreError {
    /// Wraps a failed system call with what it was doing.
    pub fn sys(what: impl Into<String>, errno: rustix::io::Errno) -> Self {
        RestoreError::Sys { what: what.into(), errno }
    }

    /// An image-content problem in `file`.
    pub fn bad(file: impl Into<PathBuf>, problem: impl Into<String>) -> Self {
        RestoreError::BadImage { file: file.into(), problem: problem.into() }
    }
}

/// "verify: pid P: DIFF; pid Q: DIFF".
fn verify_report(diffs: &[(i32, String)]) -> String {
    let each: Vec<String> = diffs.iter().map(|(pid, d)| format!("verify: pid {pid}: {d}")).collect();
    each.join("; ")
}

/// Maps an `Errno` result into a [`RestoreError::Sys`] naming the call.
pub trait SysContext<T> {
    /// Names the failed operation.
    fn sys(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T> SysContext<T> for std::result::Result<T, rustix::io::Errno> {
    fn sys(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| RestoreError::sys(what(), e))
    }
}
