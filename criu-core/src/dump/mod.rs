//! `criu-rs dump`: freeze a process, collect its state and write the images.
//!
//! - [`model`]: the collected state as plain structs.
//! - [`collect`]: gathering it from `/proc`, ptrace and injected syscalls.
//! - [`vmas`], [`memory`], [`injected`]: the pieces of collection (files:
//!   [`crate::files`]).
//! - [`write`]: writing the collected state as CRIU images.
//! - [`remote`]: pages sent to a page server or held for post-copy.
//! - [`failpoint`]: test knobs (`CRIU_RS_FAIL_AT`, `CRIU_RS_PATCH_CODE`).
//! - [`tree`]: taking the root and all its descendants (freezing, zombies,
//!   sessions, killing); [`shared`]: what the tasks' collections share.
//!
//! Order: check the pid (missing, ourselves, kernel thread, zombie, thread
//! id), prepare the directory (stale inventory removed, pages
//! image created), freeze every thread of every task of the tree, then for
//! each task: read registers and signal state, inject the queries (scratch
//! page mapped and unmapped again), read the address space and copy memory,
//! collect files; write the images with the inventory last, then resume
//! (`--leave-running`) or kill every task and wait for them to go.
//!
//! With `--page-server` ([`remote::PagesTo::PageServer`]) the server is
//! connected before the freeze and the private pages go there (from a
//! memfd, after collection, before the inventory is written); with
//! `--lazy-pages` ([`dump_keeping_memory`]) the pages of lazy areas stay in
//! this process, flagged `LAZY` in the pagemap. See [`remote`].
//!
//! Whatever fails, the process is left running as it was: every thread is
//! detached with its registers (general and FPU), signal mask and code
//! restored, and nothing injected stays mapped. Without an inventory, a
//! failed dump's directory is never taken for a complete one. TCP
//! connections put in repair mode and locked ([`crate::net::dump_state`])
//! leave repair mode and are unlocked then too (and with
//! `--leave-running`); after a successful dump they die silently and stay
//! locked for the restore.
//!
//! Not dumped yet (refused with a clear error where it matters):
//! raw/ping/MPTCP sockets,
//! anonymous-inode files other than eventfd, epoll, timerfd, signalfd,
//! inotify, fanotify and pidfd (userfaultfd, io_uring, ...), namespaces,
//! cgroups, file locks; tasks sharing an address
//! space without being threads (`CLONE_VM`, e.g. a vfork child: its parent
//! cannot be frozen anyway).

pub mod boost;
pub mod collect;
pub mod failpoint;
pub mod injected;
pub mod live;
pub mod memory;
pub mod model;
pub mod remote;
pub mod rseq;
pub mod shared;
pub mod sysv;
pub mod track;
pub mod tracker;
pub mod tree;
pub mod vmas;
pub mod write;

use crate::proc::ProcError;
use crate::ptrace::PtraceError;
use std::path::{Path, PathBuf};

/// Why a dump failed.
#[derive(Debug, thiserror::Error)]
pub enum DumpError {
    /// No process with that pid.
    #[error("no process with pid {0}")]
    NoProcess(i32),
    /// We were asked to dump ourselves.
    #[error("pid {0} is criu-rs itself; cannot dump our own process")]
    OwnProcess(i32),
    /// Kernel threads have no user state to dump.
    #[error("pid {0} is a kernel thread; only user processes can be dumped")]
    KernelThread(i32),
    /// A thread id was given instead of a process id.
    #[error("{tid} is a thread of process {tgid}; dump the process")]
    Thread {
        /// The thread.
        tid: i32,
        /// Its process.
        tgid: i32,
    },
    /// A thread's scheduling cannot be dumped.
    #[error("thread {tid}: unsupported: {what}")]
    Sched {
        /// The thread.
        tid: i32,
        /// What is wrong.
        what: String,
    },
    /// A thread's rseq state cannot be dumped.
    #[error("thread {tid}: unsupported: rseq {what}")]
    Rseq {
        /// The thread.
        tid: i32,
        /// What is wrong.
        what: String,
    },
    /// A SIGTRAP is pending: running calls in the thread traps, which
    /// would take (or, blocked, reset the handler of) that signal.
    #[error("thread {tid}: unsupported: a pending SIGTRAP ({queue} queue)")]
    PendingSigtrap {
        /// The thread (the process for its shared queue).
        tid: i32,
        /// "thread" or "shared".
        queue: &'static str,
    },
    /// A thread's seccomp state cannot be dumped.
    #[error("thread {tid}: unsupported: seccomp {what}")]
    Seccomp {
        /// The thread.
        tid: i32,
        /// What is wrong.
        what: String,
    },
    /// A live memory copy can no longer be exact (an area was unmapped or
    /// moved before it was copied, a page could not be read); the dump is
    /// made again frozen ([`tree::dump_tree`]).
    #[error("live memory copy abandoned: {0}")]
    LiveBroken(String),
    /// Dirty-page tracking could not be set up or carried on.
    #[error("dirty-page tracking: {0}")]
    Track(String),
    /// A zombie has no state left to dump.
    #[error("pid {0} is a zombie (exited, not yet reaped)")]
    Zombie(i32),
    /// The process belongs to a session or group led from outside.
    #[error("pid {pid} is in session {sid} / group {pgid} led by a process outside the dump; pass --shell-job (-j)")]
    ShellJob {
        /// The process.
        pid: i32,
        /// Its session.
        sid: i32,
        /// Its process group.
        pgid: i32,
    },
    /// The images directory cannot be used.
    #[error("images directory {path}: {source}")]
    ImagesDir {
        /// The directory or file.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// Reading `/proc` failed.
    #[error(transparent)]
    Proc(#[from] ProcError),
    /// A ptrace operation failed.
    #[error(transparent)]
    Ptrace(#[from] PtraceError),
    /// Reading the process's memory failed.
    #[error("reading memory at {addr:#x}: {errno}")]
    Memory {
        /// Address.
        addr: u64,
        /// Error.
        errno: nix::errno::Errno,
    },
    /// Writing the pages image failed.
    #[error("writing the pages image: {0}")]
    WritePages(std::io::Error),
    /// A file cannot be dumped.
    #[error(transparent)]
    Files(#[from] crate::files::FileDumpError),
    /// A memory area cannot be dumped.
    #[error("unsupported memory area {0}")]
    UnsupportedVma(String),
    /// A state of the process criu-rs cannot restore exactly.
    #[error("pid {pid}: unsupported: {what}")]
    Unsupported {
        /// The process.
        pid: i32,
        /// The state, named.
        what: String,
    },
    /// Writing an image failed.
    #[error("writing images: {0}")]
    Image(#[from] crate::images::ImageError),
    /// A failure forced by `CRIU_RS_FAIL_AT`.
    #[error("forced failure at {0} (CRIU_RS_FAIL_AT)")]
    Forced(&'static str),
    /// The process tree cannot be dumped as it is.
    #[error("process tree: {0}")]
    Tree(String),
    /// Sending pages to the page server failed.
    #[error("page server: {0}")]
    PageServer(#[from] crate::pageserver::PageServerError),
    /// An option asks for something criu-rs does not do yet.
    #[error("not supported: {0}")]
    NotSupported(String),
    /// An action hook (`--action-script`) failed.
    #[error("{0}")]
    Action(#[from] crate::actions::ActionFailed),
    /// A bug.
    #[error("internal error: {0}")]
    Internal(&'static str),
}

/// What to dump and how.
#[derive(Debug, Clone)]
pub struct DumpOptions {
    /// The process.
    pub pid: i32,
    /// Where the images go (must exist).
    pub dir: PathBuf,
    /// Resume the process after the dump instead of killing it.
    pub leave_running: bool,
    /// Allow a process whose session/group leader is not dumped, or that
    /// has a terminal open.
    pub shell_job: bool,
    /// Longest time to wait for every thread to stop.
    pub freeze_timeout: std::time::Duration,
    /// Where the private pages go (`--page-server`, `--lazy-pages`).
    pub pages_to: remote::PagesTo,
    /// `--prev-images-dir`: the parent dump, relative to `dir` (as the
    /// `parent` link made in `dir` holds it) or absolute. Pages unchanged
    /// since are left there when its dirty tracking still runs.
    pub parent: Option<PathBuf>,
    /// `--track-mem`: keep tracking written pages for a later dump.
    pub track_mem: bool,
    /// `pre-dump`: only memory, the tree always left running, tracking kept.
    pub pre_dump: bool,
    /// Copy private memory while the tree runs where the dump lets it run
    /// on (`pre-dump`, `--leave-running`; see [`live`]); `--no-live-copy`
    /// turns it off (memory copied frozen, as CRIU does).
    pub live: bool,
    /// `--leave-stopped` (`-s`): leave every task stopped after the dump
    /// (not implemented yet: refused before the tree is touched).
    pub leave_stopped: bool,
    /// `--ext-unix-sk` (`-x`): a unix socket whose peer is outside the dump
    /// may be dumped, its peer marked external. `Some(empty)`: any such
    /// socket; `Some(inodes)`: only those (`-xINODE,...`); `None`: refuse.
    pub ext_unix_sk: Option<Vec<u64>>,
    /// `--tcp-established`: established TCP connections may be dumped.
    pub tcp_established: bool,
    /// `--skip-in-flight`: TCP connections not yet accepted are left out
    /// instead of failing the dump.
    pub tcp_skip_in_flight: bool,
    /// `--tcp-close`: TCP connections are dumped as closed.
    pub tcp_close: bool,
    /// `--network-lock`: how connections are locked while the tree is down.
    pub network_lock: crate::net::lock::LockMethod,
    /// `--file-locks` (`-l`): file locks held by the tree may be dumped.
    pub file_locks: bool,
    /// `--link-remap`: unlinked files may be linked back at restore.
    pub link_remap: bool,
    /// `--ghost-limit`: the largest deleted file carried in the images, in
    /// bytes on disk (holes are free); a larger one fails the dump by name.
    pub ghost_limit: u64,
    /// `--external TYPE[ID]:VALUE` as given: resources outside the dump.
    pub external: Vec<String>,
    /// The caller's action hook ([`crate::actions`]): called at
    /// `post-dump`, once the images are complete.
    pub actions: Option<crate::actions::ActionHook>,
}

impl DumpOptions {
    /// A dump of the tree rooted at `pid` into `dir` with CRIU's defaults:
    /// killed afterwards, 10 s to freeze, pages written locally, nothing
    /// external allowed; deleted files up to [`crate::files::reg::GHOST_LIMIT`] (CRIU's
    /// default is 1 MiB).
    pub fn new(pid: i32, dir: impl Into<PathBuf>) -> Self {
        DumpOptions {
            pid,
            dir: dir.into(),
            leave_running: false,
            shell_job: false,
            freeze_timeout: std::time::Duration::from_secs(10),
            pages_to: remote::PagesTo::Local,
            parent: None,
            track_mem: false,
            pre_dump: false,
            live: true,
            leave_stopped: false,
            ext_unix_sk: None,
            tcp_established: false,
            tcp_skip_in_flight: false,
            tcp_close: false,
            network_lock: Default::default(),
            file_locks: false,
            link_remap: false,
            ghost_limit: crate::files::reg::GHOST_LIMIT,
            external: Vec::new(),
            actions: None,
        }
    }

    /// What the file kinds' socket side was asked for.
    pub fn socket_opts(&self) -> crate::net::dump_state::SocketDumpOptions {
        crate::net::dump_state::SocketDumpOptions {
            tcp_established: self.tcp_established,
            skip_in_flight: self.tcp_skip_in_flight,
            tcp_close: self.tcp_close,
            lock: self.network_lock,
        }
    }
}

/// Refuses what the options ask for and the engine cannot do yet, before
/// anything is touched (CRIU option names in the message).
pub fn check_supported(opts: &DumpOptions) -> Result<(), DumpError> {
    let refuse = |what: String| Err(DumpError::NotSupported(what));
    if opts.leave_stopped {
        return refuse("--leave-stopped (leaving the dumped tree stopped)".into());
    }
    if let Some(e) = opts.external.iter().find(|e| crate::files::unix::external_unix_inode(e).is_none() && !crate::files::reg::external_file_key(e)) {
        return refuse(format!("--external {e} (only unix[INODE] and file[MNT:INO] can be marked external yet)"));
    }
    Ok(())
}

/// Summary of a successful dump.
#[derive(Debug, Clone)]
pub struct DumpSummary {
    /// The collected state (what the images hold).
    pub process: model::ProcessDump,
    /// Memory counters.
    pub mem: memory::MemStats,
    /// Time taken to freeze the tree.
    pub freezing_time: std::time::Duration,
    /// Time spent frozen.
    pub frozen_time: std::time::Duration,
    /// Time spent copying memory.
    pub memdump_time: std::time::Duration,
    /// Live tasks dumped (the root and its descendants).
    pub tasks: usize,
    /// Zombies recorded.
    pub zombies: usize,
    /// The private pages went to a page server (no local pagemaps).
    pub pages_remote: bool,
}

/// Name of the completeness marker.
pub const INVENTORY: &str = "inventory.img";
/// The link from an images directory to its parent dump's.
pub const PARENT_LINK: &str = "parent";
/// Id of the pages image (`pages-<id>.img`).
pub const PAGES_ID: u32 = 1;

/// Refuses pids that cannot be dumped, with a clear reason.
pub fn check_target(pid: i32) -> Result<crate::proc::stat::ProcStat, DumpError> {
    if pid <= 0 {
        return Err(DumpError::NoProcess(pid));
    }
    if pid == std::process::id() as i32 {
        return Err(DumpError::OwnProcess(pid));
    }
    let stat = match crate::proc::stat::read_stat(pid) {
        Ok(s) => s,
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) || e.raw_os_error() == Some(libc::ESRCH) => {
            return Err(DumpError::NoProcess(pid))
        }
        Err(e) => return Err(e.into()),
    };
    if stat.flags & crate::proc::stat::PF_KTHREAD != 0 {
        return Err(DumpError::KernelThread(pid));
    }
    if matches!(stat.state, 'Z' | 'X') {
        return Err(DumpError::Zombie(pid));
    }
    // A thread id that is not a thread group leader.
    let status = crate::proc::status::read_status(pid)?;
    if status.tgid != pid {
        return Err(DumpError::Thread { tid: pid, tgid: status.tgid });
    }
    Ok(stat)
}

/// Opens the images directory for writing: checks it, removes a stale
/// inventory and creates the pages image (`None` when `pages_to` is a page
/// server, which writes it; a stale local one and the pagemap of `pid` are
/// removed then).
fn prepare_dir(dir: &Path, pid: i32, pages_to: &remote::PagesTo) -> Result<Option<std::fs::File>, DumpError> {
    let err = |path: &Path| {
        let path = path.to_owned();
        move |source| DumpError::ImagesDir { path, source }
    };
    let md = std::fs::metadata(dir).map_err(err(dir))?;
    if !md.is_dir() {
        return Err(DumpError::ImagesDir { path: dir.into(), source: std::io::Error::from_raw_os_error(libc::ENOTDIR) });
    }
    remove_stale(&dir.join(INVENTORY))?;
    remove_stale(&dir.join(tracker::RECORD))?;
    remove_stale(&dir.join(PARENT_LINK))?;
    if matches!(pages_to, remote::PagesTo::PageServer(_)) {
        remove_served(dir, pid, PAGES_ID)?;
        return Ok(None);
    }
    create_pages_image(dir, PAGES_ID).map(Some)
}

/// Removes `path` if it is there.
fn remove_stale(path: &Path) -> Result<(), DumpError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(DumpError::ImagesDir { path: path.to_owned(), source }),
    }
}

/// Removes a stale local `pagemap-PID.img` and `pages-<pages_id>.img` of a
/// task whose pages go to a page server (which writes them; when it writes
/// into this same directory it does so only after this task's OPEN).
fn remove_served(dir: &Path, pid: i32, pages_id: u32) -> Result<(), DumpError> {
    remove_stale(&dir.join(format!("pages-{pages_id}.img")))?;
    remove_stale(&dir.join(format!("pagemap-{pid}.img")))
}

/// Creates (truncating) `pages-<id>.img` in `dir` for page data.
pub fn create_pages_image(dir: &Path, id: u32) -> Result<std::fs::File, DumpError> {
    let pages = dir.join(format!("pages-{id}.img"));
    let open = |direct: bool| {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .custom_flags(if direct { libc::O_DIRECT } else { 0 })
            .open(&pages)
    };
    let err = |source| DumpError::ImagesDir { path: pages.clone(), source };
    // Page data goes straight to the device where the file system allows it:
    // no second copy through the page cache (buffers are page-aligned).
    match open(true) {
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => open(false).map_err(err),
        r => r.map_err(err),
    }
}

/// Dumps a process and all its descendants. See the module documentation
/// for the guarantees and [`tree`] for how the tree is taken.
/// With [`remote::PagesTo::Held`], use [`dump_keeping_memory`].
pub fn dump(opts: &DumpOptions) -> Result<DumpSummary, DumpError> {
    if opts.pages_to == remote::PagesTo::Held {
        return Err(DumpError::Internal("held pages need dump_keeping_memory"));
    }
    tree::dump_tree(opts).map(|(s, _)| s)
}

/// Dumps a tree keeping the pages of its lazy areas in this process
/// (`dump --lazy-pages`): the images get `LAZY` entries for them and no
/// data; serve the returned pages with [`remote::serve_held`].
pub fn dump_keeping_memory(opts: &DumpOptions) -> Result<(DumpSummary, remote::HeldPages), DumpError> {
    let mut opts = opts.clone();
    opts.pages_to = remote::PagesTo::Held;
    let (s, held) = tree::dump_tree(&opts)?;
    Ok((s, held.ok_or(DumpError::Internal("no held pages"))?))
}
