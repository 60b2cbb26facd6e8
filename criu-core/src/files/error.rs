//! Why a file could not be dumped. Each variant names where (`fd 3`, `cwd`,
//! `map_files/7f..-7f..`) and the step that failed.

use rustix::io::Errno;

/// Error type for collecting a task's files ([`super::FileKind::collect`],
/// [`super::reg::path_file`]).
#[derive(Debug, thiserror::Error)]
pub enum FileDumpError {
    /// `stat` of the `/proc` link failed.
    #[error("{at}: stat: {source}")]
    Stat {
        /// Which fd or link.
        at: String,
        /// The error.
        source: std::io::Error,
    },
    /// `kcmp(KCMP_FILE)` failed.
    #[error("{at}: kcmp: {errno}")]
    Kcmp {
        /// Which fd.
        at: String,
        /// The error.
        errno: Errno,
    },
    /// Copying a pipe's queued bytes failed.
    #[error("{at}: pipe {path}: {step}: {errno}")]
    PeekPipe {
        /// Which fd.
        at: String,
        /// Its `/proc` path.
        path: String,
        /// The failed call.
        step: &'static str,
        /// The error.
        errno: Errno,
    },
    /// A pipe's queued bytes could not be copied whole.
    #[error("{at}: pipe: {problem}")]
    PipeCopy {
        /// Which fd.
        at: String,
        /// What happened.
        problem: String,
    },
    /// An unlinked file is too large to keep in the images.
    #[error("{at}: unlinked file of {size} bytes on disk is over the {limit} limit (--ghost-limit)")]
    GhostTooBig {
        /// Which fd or link.
        at: String,
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// Reading an unlinked file's contents failed.
    #[error("{at}: reading unlinked file: {source}")]
    Ghost {
        /// Which fd or link.
        at: String,
        /// The error.
        source: std::io::Error,
    },
    /// A terminal without `--shell-job`.
    #[error("{at}: {path} is a terminal; pass --shell-job (-j)")]
    Terminal {
        /// Which fd.
        at: String,
        /// The terminal.
        path: String,
    },
    /// No kind takes this file.
    #[error("{at}: unsupported file {target:?}")]
    Unsupported {
        /// Which fd.
        at: String,
        /// Its `/proc` link text.
        target: String,
    },
    /// A lock is held and `--file-locks` was not given.
    #[error("{at}: holds a file lock ({lock}); dump with --file-locks (-l) to keep it")]
    FileLock {
        /// Which fd.
        at: String,
        /// The lock.
        lock: String,
    },
    /// A kind cannot keep this file's state exactly.
    #[error("{at}: unsupported: {what}")]
    UnsupportedState {
        /// Which fd.
        at: String,
        /// What cannot be kept.
        what: String,
    },
    /// A directory (cwd, root) was removed.
    #[error("{at} {path:?} was removed")]
    RemovedDir {
        /// `cwd` or `root`.
        at: String,
        /// Its former path.
        path: String,
    },
    /// A system call on the file failed.
    #[error("{at}: {what}: {errno}")]
    Sys {
        /// Which fd.
        at: String,
        /// The call.
        what: String,
        /// The error.
        errno: Errno,
    },
    /// Reading `/proc` failed.
    #[error(transparent)]
    Proc(#[from] crate::proc::ProcError),
    /// A unix socket cannot be dumped (the message names it and why).
    #[error(transparent)]
    UnixSocket(#[from] crate::files::unix::UnixDumpError),
}
