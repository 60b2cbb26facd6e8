//! Restore: bring a dumped process back from its image files.
//!
//! The host side, in order:
//! - [`load`] reads and validates the images into a [`plan::TaskPlan`] per
//!   task, [`tree`] into the whole tree;
//! - [`shared`] creates what tasks share (file descriptions, shared memory);
//! - [`tree`] forks every task with its dumped pid (a fork of criu-rs,
//!   [`clone`]), sessions and groups first, zombies included; each task
//!   builds its memory before it forks its children, so that pages they
//!   share copy-on-write stay shared ([`cow`]);
//! - in each task, [`premap`] builds the memory in a reserved area, [`fill`]
//!   fills it from the pages file, [`fds`] and [`fs`] rebuild files, [`args`]
//!   fills the blob's argument block and [`jump`] enters the blob
//!   ([`child`]);
//! - in criu-rs, [`barrier`] holds every thread at the blob's last stop
//!   until the whole tree is there, then ([`finalize`]) removes the blob
//!   from each task and lets them all run; with `--verify`, [`verify`]
//!   first compares every task with the images.
//!
//! [`barrier::TreeGuard`] kills every task if anything fails.

pub mod args;
pub mod barrier;
pub mod child;
pub mod clone;
pub mod cow;
pub mod creds;
pub mod error;
pub mod failpoint;
pub mod fds;
pub mod finalize;
pub mod fill;
pub mod fs;
pub mod helper_thread;
pub mod hole;
pub mod image_map;
pub mod hugefill;
pub mod jump;
pub mod lazy;
pub mod load;
pub mod maps;
pub mod parent;
pub mod plan;
pub mod premap;
pub mod seccomp;
pub mod shared;
pub mod tree;
pub mod validate;
pub mod verify;
pub mod vdso;
pub mod watch;
pub mod xsave;

pub use error::{RestoreError, Result};

use error::SysContext;
use rustix::fd::OwnedFd;
use std::path::PathBuf;

/// What `criu-rs restore` was asked to do.
#[derive(Debug, Clone)]
pub struct RestoreOptions {
    /// The images directory.
    pub dir: PathBuf,
    /// `--shell-job`: terminal fds are taken over from criu-rs.
    pub shell_job: bool,
    /// `--lazy-pages`: the lazy-pages daemon's socket (see [`lazy`]).
    pub lazy_pages: Option<PathBuf>,
    /// `--mmap-page-image`: private anonymous memory is mapped from the
    /// pages images, to be converted afterwards ([`image_map`]).
    pub mmap_page_image: bool,
    /// `--leave-stopped` (`-s`): leave every task stopped instead of
    /// resuming it (not implemented yet: refused before anything is made).
    pub leave_stopped: bool,
    /// `--ext-unix-sk`: unix sockets dumped with an external peer may be
    /// restored (connected to whatever listens at the peer's address).
    pub ext_unix_sk: bool,
    /// `--tcp-established`: established TCP connections may be restored.
    pub tcp_established: bool,
    /// `--tcp-close`: TCP connections are restored closed.
    pub tcp_close: bool,
    /// `--file-locks` (`-l`): file locks in the images are restored.
    pub file_locks: bool,
    /// `--inherit-fd fd[N]:KEY`: descriptors of criu-rs standing for
    /// resources outside the dump, as CRIU's: `pipe:[INO]` (a pipe, reopened
    /// with the dumped end and flags, its queued bytes not put back), a
    /// regular file's path without its leading `/` (the descriptor itself
    /// is used), `tty[RDEV:DEV]` (a terminal), `socket:[INO]` (a unix
    /// socket, by its dumped inode: the descriptor is used as it is, not
    /// bound, connected or refilled) and `file[MNT:INO]` (a file CRIU
    /// dumped as external, `--external file[MNT:INO]`); keys naming
    /// nothing in the dump are ignored, as CRIU does.
    pub inherit_fd: Vec<InheritFd>,
    /// `--external TYPE[ID]:VALUE` as given (not implemented yet: refused).
    pub external: Vec<String>,
    /// `--verify`: before the tasks run, compare each with the images and
    /// fail (killing the tree) on a difference ([`verify`]).
    pub verify: bool,
    /// The caller's action hook ([`crate::actions`]): called at
    /// `post-restore` and `pre-resume`, with the root's pid.
    pub actions: Option<crate::actions::ActionHook>,
    /// Keep tracing the restored tasks after the release, in
    /// [`Restored::watch`], to report one that dies ([`watch`]).
    pub watch: bool,
    /// `--restore-sibling` (CRIU's RPC `rst_sibling`): the root is created
    /// with `CLONE_PARENT`, a child of criu-rs's parent (runc and libcriu's
    /// `criu_restore_child` wait for it) rather than of criu-rs. criu-rs
    /// cannot wait for it, so this goes with a detached restore.
    pub sibling: bool,
}

/// One `--inherit-fd fd[N]:KEY`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InheritFd {
    /// criu-rs's descriptor.
    pub fd: i32,
    /// What it stands for: `pipe:[INO]`, `socket:[INO]`, `tty[RDEV:DEV]`,
    /// `file[MNT:INO]` or a path, as in the images.
    pub key: String,
}

impl RestoreOptions {
    /// A plain restore of the dump in `dir`: eager memory, tasks resumed,
    /// nothing inherited.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        RestoreOptions {
            dir: dir.into(),
            shell_job: false,
            lazy_pages: None,
            mmap_page_image: false,
            leave_stopped: false,
            ext_unix_sk: false,
            tcp_established: false,
            tcp_close: false,
            file_locks: false,
            inherit_fd: Vec::new(),
            external: Vec::new(),
            verify: false,
            actions: None,
            watch: false,
            sibling: false,
        }
    }

    /// Refuses what these options ask for and the engine cannot do yet
    /// (CRIU option names in the message).
    fn check_supported(&self) -> Result<()> {
        let refuse = |what: String| Err(RestoreError::NotSupported(what));
        if self.leave_stopped {
            return refuse("--leave-stopped (leaving the restored tree stopped)".into());
        }
        for i in &self.inherit_fd {
            // SAFETY: F_GETFD only asks whether the number is an open descriptor.
            if unsafe { libc::fcntl(i.fd, libc::F_GETFD) } < 0 {
                return Err(RestoreError::Sys { what: format!("--inherit-fd fd[{}]:{}: fd {}", i.fd, i.key, i.fd), errno: rustix::io::Errno::BADF });
            }
        }
        if let Some(e) = self.external.first() {
            return refuse(format!("--external {e}"));
        }
        if self.mmap_page_image && self.lazy_pages.is_some() {
            return refuse("--mmap-page-image with --lazy-pages (pages are either mapped from the images or served lazily)".into());
        }
        Ok(())
    }
}

/// A task brought back and running (still criu-rs's child; detached from
/// criu-rs's ptrace, or watched with [`RestoreOptions::watch`]).
#[derive(Debug)]
pub struct Restored {
    /// The root task's pid.
    pub pid: i32,
    /// What the restore took (CRIU's `restore_stats_entry`).
    pub stats: RestoreStats,
    /// The tasks still traced for diagnosis ([`watch::Watch::run`]); empty
    /// unless [`RestoreOptions::watch`]. Dropping it lets them go.
    pub watch: watch::Watch,
}

/// Counters of one restore, as CRIU's `stats-restore` holds them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RestoreStats {
    /// From the start until the root task was created (each task forks
    /// its own children afterwards).
    pub forking_time: std::time::Duration,
    /// From the start until the tasks were let go.
    pub restore_time: std::time::Duration,
    /// Pages filled from the images before the tasks ran (not the lazy ones).
    pub pages_restored: u64,
}

/// Restores the dump in `opts.dir`: every task of its tree with its
/// threads ([`tree::restore_tree`]). Validates every image first; if
/// anything fails once a task exists, every task created is killed.
///
/// Must be called from a single-threaded process (the tasks are forks).
pub fn restore(opts: &RestoreOptions) -> Result<Restored> {
    opts.check_supported()?;
    tree::restore_tree(opts)
}

/// `pipe2(O_CLOEXEC)`.
fn pipe(what: &str) -> Result<(OwnedFd, OwnedFd)> {
    rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).sys(|| format!("pipe2 ({what})"))
}

/// Waits for a restored task (a child of this process) to end; returns its
/// exit code, or 128 + signal number if a signal killed it.
pub fn wait_exit(pid: i32) -> Result<i32> {
    use nix::sys::wait::{waitpid, WaitStatus};
    loop {
        match waitpid(nix::unistd::Pid::from_raw(pid), None) {
            Ok(WaitStatus::Exited(_, code)) => return Ok(code),
            Ok(WaitStatus::Signaled(_, sig, _)) => return Ok(128 + sig as i32),
            Ok(_) => continue,
            Err(e) => return Err(RestoreError::sys(format!("waitpid({pid})"), rustix::io::Errno::from_raw_os_error(e as i32))),
        }
    }
}
