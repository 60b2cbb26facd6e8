//! Lazy restore: the `lazy-pages` daemon that fills a restored task's memory
//! over userfaultfd, on demand when it faults and in the background
//! otherwise.
//!
//! # How a task is served
//!
//! 1. The restore side creates a userfaultfd in the task, calls
//!    `UFFDIO_API` with [`LAZY_FEATURES`](crate::uffd::LAZY_FEATURES) and
//!    hands the descriptor over with [`hello::hand_over`] (protocol in
//!    [`hello`]); the lazy ranges are registered in MISSING mode before or
//!    after that. Once the daemon answered "taken", the task may close its
//!    copy (the blob does, right after registering).
//! 2. The daemon reads `pagemap-PID.img`: entries flagged `LAZY` are the
//!    pages it owes the task ([`ranges::PageSet`]); their data is in
//!    `pages-N.img` (`PRESENT`), or on a page server (`--page-server`).
//! 3. The daemon checks in `/proc/PID/smaps` ([`smaps`]) that every lazy
//!    page is in a registered VMA (`um`); until then it copies nothing in
//!    the background, and a task not fully registered within
//!    [`Options::register_timeout`] is killed (it may be reading zeroes
//!    where its data belongs).
//! 4. One thread, one epoll over the listening socket, every task's uffd and
//!    pidfd. A fault gets the aligned block around it ([`Options::fault_chunk`])
//!    with `UFFDIO_COPY`, or a zero page where the dump had no data. When no
//!    fault is pending, one background chunk ([`Options::bg_chunk`]) of the
//!    next task is copied (faults first, but at least one chunk a
//!    millisecond however many faults come). While faults come and no
//!    background copy is pending, the daemon runs on the faulting task's
//!    CPU ([`cpu`]).
//! 5. Events: FORK adds a task for the child (a new uffd, inheriting the
//!    parent's missing pages; its pid is found among the parent's new
//!    children, or from the thread id of its first fault), REMAP moves the
//!    bookkeeping, REMOVE/UNMAP drop pages. A fill answered `EAGAIN`, or
//!    `ENOENT` (the VMA is gone but the event saying where is not read yet),
//!    is retried after the pending events are read; `ESRCH` means the task
//!    is gone.
//! 6. A task is complete when nothing is missing: its uffd is closed. Pages
//!    never dumped stay unpopulated and read as zero, as they did. The daemon
//!    exits once the expected number of tasks connected and all are complete
//!    or gone, logging its counters ([`Stats`]).
//!
//! # When the daemon dies
//!
//! Closing the last reference to a userfaultfd unregisters its ranges: a
//! task would then read zeroes where its data was never delivered. (Asking
//! for `UFFD_FEATURE_SIGBUS` instead would make every missing page a SIGBUS,
//! which rules out serving them at all.)
//!
//! So a second reference is kept by a [`guard`] process the daemon forks
//! before anything else. The daemon gives it every uffd (and the task's
//! pidfd) before answering the task, and tells it when the task is complete.
//! If the daemon ends in any way (error, panic, SIGKILL, OOM) with tasks
//! incomplete, the guard's socket reads EOF: the guard, still holding the
//! uffds, so faults keep waiting rather than zero-filling, SIGKILLs those
//! tasks and their descendants, logs it, and only then releases the uffds.
//! Faults of a task stuck on the dead daemon block killably, so the kill
//! always lands before the task can run on. The guard ignores terminal and
//! termination signals; only SIGKILL of both processes at once defeats it.
//!
//! The daemon also kills a task itself when a fill fails for a reason other
//! than the task exiting (e.g. `ENOENT` that no event explains within 2 s:
//! a lazy range unregistered behind its back), and stops with an error (the
//! guard then kills the rest) when page data cannot be read (broken
//! page-server connection, truncated images). A task it must kill before
//! knowing its pid (a fresh fork child) keeps its uffd open until the pid
//! shows; the guard also knows such a child's parent and kills the parent's
//! descendants.
//!
//! # What the restore side must do
//!
//! (`criu-rs restore --lazy-pages` does this: [`crate::restore::lazy`].)
//!
//! - Dump: flag `LAZY` (with `PRESENT` when the data is in `pages-N.img`,
//!   as every plain dump does: [`crate::dump::remote::flag_lazy`]) the
//!   pagemap entries of private anonymous VMAs that are not locked and not
//!   `[vdso]`/`[vvar]`/`[vsyscall]`, but for each thread's stack-pointer
//!   page; other pages stay eager.
//! - Start `criu-rs lazy-pages -D DIR --address SOCK` first. It expects one
//!   hand-over per process of `pstree.img` (a process without lazy pages
//!   still hands one over; it completes at once).
//! - Per process, before its blob runs: create the uffd in the process
//!   itself (a uffd belongs to the memory of its creator: the task's own
//!   code before the blob, or an injected syscall), `api(LAZY_FEATURES)`
//!   (the daemon reads the granted features from fdinfo and refuses a uffd
//!   without them), then `hand_over(SOCK, TaskHello { image_pid: pid, pid:
//!   0 }, uffd)` from the task or from criu-rs holding a copy
//!   (`pidfd_getfd`), and pass the descriptor number to the blob
//!   (`args.uffd`). The blob registers every lazy VMA in MISSING mode once
//!   it is at its final address, leaves the lazy pages unfilled, closes the
//!   uffd and must not touch registered memory before `rt_sigreturn`.
//! - A restore failing after the hand-over just kills its tasks: the daemon
//!   sees them exit (pidfd) and drops them.
//! - Restoring `LAZY` entries without `PRESENT` without a daemon is an
//!   error; the daemon itself refuses such images unless `--page-server`.
//! - Task identity: the daemon opens a pidfd for `pid` at hand-over, so the
//!   process must exist then, and `pid` is as the daemon sees it (give it
//!   explicitly when the tree lives in its own pid namespace). The kernel
//!   puts thread ids into fault messages as the faulting task sees them; the
//!   daemon uses them to find forked children, which only works when it
//!   shares their pid namespace (otherwise those children are still served,
//!   and the guard still finds them as descendants of known tasks).

pub mod cpu;
pub mod daemon;
pub mod guard;
pub mod hello;
pub mod ranges;
pub mod smaps;

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use rustix::io::Errno;

pub use daemon::{run, Options};
pub use hello::{hand_over, TaskHello};

use crate::images::ImageError;
use crate::pageserver::PageServerError;

/// Lazy-pages failures.
#[derive(Debug, thiserror::Error)]
pub enum LazyError {
    /// A system call failed.
    #[error("{what}: {source}")]
    Sys {
        /// What was being done.
        what: String,
        /// The errno.
        source: Errno,
    },
    /// The unix socket.
    #[error("lazy-pages socket {path}: {source}")]
    Socket {
        /// Socket path.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// A malformed hand-over.
    #[error("lazy-pages hand-over: {0}")]
    Hello(String),
    /// An action hook (`--action-script`, `--status-fd`) failed.
    #[error("{0}")]
    Action(#[from] crate::actions::ActionFailed),
    /// The daemon refused a task.
    #[error("lazy-pages daemon refused pid {pid}: {errno}")]
    Refused {
        /// Image pid.
        pid: u32,
        /// Its reason.
        errno: Errno,
    },
    /// A lazy entry has no data here.
    #[error("pid {pid}: lazy pages at {vaddr:#x} are not in the images (dumped with --lazy-pages? serve them with --page-server)")]
    NoPages {
        /// Image pid.
        pid: u32,
        /// Entry address.
        vaddr: u64,
    },
    /// Page data could not be read.
    #[error("pid {pid}: reading page data: {source}")]
    Source {
        /// Image pid.
        pid: u32,
        /// Cause.
        source: PageServerError,
    },
    /// Page server connection.
    #[error(transparent)]
    PageServer(#[from] PageServerError),
    /// Images.
    #[error(transparent)]
    Image(#[from] ImageError),
}

fn micros(d: Option<Duration>) -> String {
    d.map_or("n/a".into(), |d| format!("{:.1} µs", d.as_secs_f64() * 1e6))
}

/// Counters of one daemon run, logged at exit.
#[derive(Debug, Default, Clone)]
pub struct Stats {
    /// Tasks served (connected and forked).
    pub tasks: u64,
    /// Page faults answered.
    pub faults: u64,
    /// Pages copied for faults.
    pub fault_pages: u64,
    /// Zero pages mapped for faults where the dump had nothing.
    pub zero_pages: u64,
    /// Pages copied in the background.
    pub bg_pages: u64,
    /// Background copies.
    pub bg_chunks: u64,
    /// Time spent in background copies, and the part of it spent finding
    /// (mapping in) their data.
    pub bg_time: Duration,
    /// See `bg_time`.
    pub bg_data_time: Duration,
    /// Fork events.
    pub forks: u64,
    /// Remap events.
    pub remaps: u64,
    /// Remove and unmap events.
    pub removes: u64,
    /// Tasks that went away before completion.
    pub gone: u64,
    /// Pages still missing in those tasks when they went (never touched,
    /// and the background copy had not reached them yet).
    pub gone_pages: u64,
    /// Tasks the daemon killed.
    pub killed: u64,
    /// Median time to serve a fault (message read to fill done), when
    /// there were faults.
    pub fault_median: Option<Duration>,
    /// 90th percentile of the same.
    pub fault_p90: Option<Duration>,
    /// Median time of a fault's fill ioctl (`UFFDIO_COPY`, which also wakes
    /// the faulting thread).
    pub copy_median: Option<Duration>,
    /// Median time of a fault's data lookup (finding the page data).
    pub lookup_median: Option<Duration>,
    /// Times the daemon moved to a faulting thread's CPU ([`cpu`]).
    pub cpu_follows: u64,
    /// Times the daemon left idle priority because the system was busy.
    pub cpu_starved: u64,
    /// Wall time.
    pub elapsed: Duration,
    /// Time from the first task's hand-over to the end.
    pub served: Duration,
}

impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} task(s), {} faults ({} pages copied, {} zero pages, median service {}, p90 {}, data {}, copy {}, {} CPU follows, {} busy), \
             {} pages in background in {} chunks ({:.1} ms, {:.1} ms of it reading data), {} forks, {} remaps, {} removes/unmaps, \
             {} gone early ({} pages left), {} killed, served in {:.3} s, {:.3} s in all",
            self.tasks,
            self.faults,
            self.fault_pages,
            self.zero_pages,
            micros(self.fault_median),
            micros(self.fault_p90),
            micros(self.lookup_median),
            micros(self.copy_median),
            self.cpu_follows,
            self.cpu_starved,
            self.bg_pages,
            self.bg_chunks,
            self.bg_time.as_secs_f64() * 1e3,
            self.bg_data_time.as_secs_f64() * 1e3,
            self.forks,
            self.remaps,
            self.removes,
            self.gone,
            self.gone_pages,
            self.killed,
            self.served.as_secs_f64(),
            self.elapsed.as_secs_f64()
        )
    }
}
