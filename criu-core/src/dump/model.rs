//! What a dump collects, in plain Rust structs, before anything is written.
//!
//! [`super::write`] turns a [`ProcessDump`] into image files; collecting and
//! writing are kept apart so each can be tested on its own.

use crate::proc::limits::{Rlimit, RLIM_NLIMITS};
use crate::ptrace::regs::{FpState, GpRegs};
use crate::ptrace::raw::{RseqConfig, SIGINFO_SIZE};

/// Everything collected about one process (one entry of the tree).
#[derive(Debug, Clone)]
pub struct ProcessDump {
    /// Process id (thread group id).
    pub pid: i32,
    /// Parent, group and session ids.
    pub ppid: i32,
    /// Process group id.
    pub pgid: i32,
    /// Session id.
    pub sid: i32,
    /// Process-wide state (`task_core`).
    pub task: TaskState,
    /// Every thread, the leader first.
    pub threads: Vec<ThreadState>,
    /// Credentials of the leader (each thread's are in [`ThreadState::creds`]).
    pub creds: Creds,
    /// Address space layout and areas.
    pub mm: MmState,
    /// Which pages were written to the pages image, and where.
    pub pagemap: Vec<PagemapEntry>,
    /// Shared anonymous memory objects and their dumped pages.
    pub shmem: Vec<ShmemDump>,
    /// Open files and file-system context.
    pub files: FilesState,
    /// Id of its pages image (`pages-<id>.img`).
    pub pages_id: u32,
    /// Kernel objects it shares with other tasks of the dump.
    pub kobj: KobjIds,
}

/// Process-wide task state.
#[derive(Debug, Clone, Default)]
pub struct TaskState {
    /// `comm` of the leader.
    pub comm: String,
    /// `personality(2)` value.
    pub personality: u32,
    /// Kernel task flags (PF_*) from `stat`.
    pub flags: u32,
    /// Exit signal sent to the parent.
    pub exit_signal: i32,
    /// Actions for signals 1..=64 (index = signo - 1).
    pub sigactions: Vec<SigAction>,
    /// Resource limits (`RLIMIT_*` order).
    pub rlimits: [Rlimit; RLIM_NLIMITS],
    /// `ITIMER_REAL`, `ITIMER_VIRTUAL`, `ITIMER_PROF`.
    pub itimers: [ItimerVal; 3],
    /// POSIX timers.
    pub posix_timers: Vec<PosixTimer>,
    /// Signals queued for the whole process (raw `siginfo_t`).
    pub shared_pending: Vec<[u8; SIGINFO_SIZE]>,
    /// `PR_GET_DUMPABLE`.
    pub dumpable: u32,
    /// `PR_GET_PDEATHSIG` of the leader (each thread's is in
    /// [`ThreadState::pdeath_sig`]).
    pub pdeath_sig: u32,
    /// `PR_GET_CHILD_SUBREAPER`.
    pub child_subreaper: bool,
    /// `PR_GET_THP_DISABLE`.
    pub thp_disabled: bool,
    /// Seccomp mode of the leader from `status` (each thread's mode and
    /// filters are in [`ThreadState::seccomp`]).
    pub seccomp_mode: u32,
    /// `umask`.
    pub umask: u32,
    /// `/proc/PID/loginuid` (None when unreadable).
    pub loginuid: Option<u32>,
    /// `/proc/PID/oom_score_adj`.
    pub oom_score_adj: i32,
    /// The signal of the job-control stop the process was in (it is dumped
    /// as `TASK_STOPPED` and restored stopped), or None if it ran.
    pub stop_signo: Option<u32>,
    /// The membarrier commands registered for the address space
    /// (`MEMBARRIER_CMD_REGISTER_*` bits).
    pub membarrier_mask: u32,
}

/// One signal's action, as the kernel's `struct sigaction` holds it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SigAction {
    /// Handler address, or 0 (`SIG_DFL`) / 1 (`SIG_IGN`).
    pub handler: u64,
    /// `SA_*` flags.
    pub flags: u64,
    /// `sa_restorer`.
    pub restorer: u64,
    /// Signals blocked while the handler runs.
    pub mask: u64,
}

/// An interval timer value (`struct itimerval`), in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ItimerVal {
    /// Interval seconds.
    pub isec: u64,
    /// Interval microseconds.
    pub iusec: u64,
    /// Remaining seconds.
    pub vsec: u64,
    /// Remaining microseconds.
    pub vusec: u64,
}

/// One POSIX timer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PosixTimer {
    /// What `/proc/PID/timers` says.
    pub proc: crate::proc::misc::ProcTimer,
    /// Overrun count (`timer_getoverrun`).
    pub overrun: i32,
    /// Interval (sec, nsec).
    pub interval: (u64, u64),
    /// Remaining time (sec, nsec).
    pub value: (u64, u64),
}

/// Per-thread state (`thread_core` + registers).
#[derive(Debug, Clone)]
pub struct ThreadState {
    /// Thread id.
    pub tid: i32,
    /// Thread name.
    pub comm: String,
    /// General registers at the freeze (with fs/gs base); at the abort
    /// handler if it was stopped inside an rseq critical section.
    pub gpregs: GpRegs,
    /// `gpregs` were moved to an rseq abort handler (see [`super::rseq`]).
    pub rseq_aborted: bool,
    /// XSAVE (or FXSAVE) area.
    pub fpstate: FpState,
    /// Blocked signals.
    pub sigmask: u64,
    /// Signals queued for this thread only (raw `siginfo_t`).
    pub pending: Vec<[u8; SIGINFO_SIZE]>,
    /// `sigaltstack`: (sp, flags, size).
    pub altstack: (u64, i32, u64),
    /// `set_tid_address` value (`PR_GET_TID_ADDRESS`).
    pub clear_tid_addr: u64,
    /// Robust futex list head and length (`get_robust_list`).
    pub robust_list: (u64, u64),
    /// rseq registration.
    pub rseq: RseqConfig,
    /// Scheduling: (policy, static priority, nice).
    pub sched: (u32, u32, i32),
    /// The thread's credentials (threads may differ, e.g. after a raw setuid syscall).
    pub creds: Creds,
    /// `PR_GET_PDEATHSIG` of this thread.
    pub pdeath_sig: u32,
    /// The thread's seccomp mode and filters.
    pub seccomp: Seccomp,
}

/// `SECCOMP_MODE_STRICT`.
pub const SECCOMP_MODE_STRICT: u32 = 1;
/// `SECCOMP_MODE_FILTER`.
pub const SECCOMP_MODE_FILTER: u32 = 2;
/// `SECCOMP_FILTER_FLAG_TSYNC`.
pub const SECCOMP_FILTER_FLAG_TSYNC: u32 = 1;

/// A thread's seccomp state (seccomp is per thread).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Seccomp {
    /// 0 (none), [`SECCOMP_MODE_STRICT`] or [`SECCOMP_MODE_FILTER`].
    pub mode: u32,
    /// The filters, oldest (installed first) first; empty unless `mode`
    /// is [`SECCOMP_MODE_FILTER`] (or the thread's filters are installed
    /// by the leader's, see [`SECCOMP_FILTER_FLAG_TSYNC`]).
    pub filters: Vec<SeccompFilter>,
}

/// One seccomp filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeccompFilter {
    /// `SECCOMP_FILTER_FLAG_*` to install it with (LOG as the kernel
    /// reports it; TSYNC when every thread shares the chain).
    pub flags: u32,
    /// The classic BPF program (`struct sock_filter` instructions).
    pub prog: Vec<u8>,
}

/// Credentials.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Creds {
    /// Real, effective, saved, fs uid.
    pub uid: [u32; 4],
    /// Real, effective, saved, fs gid.
    pub gid: [u32; 4],
    /// Supplementary groups.
    pub groups: Vec<u32>,
    /// Inheritable, permitted, effective, bounding, ambient capabilities.
    pub caps: [u64; 5],
    /// `no_new_privs`.
    pub no_new_privs: bool,
    /// Securebits (`PR_GET_SECUREBITS`).
    pub secbits: u32,
}

/// The address space.
#[derive(Debug, Clone, Default)]
pub struct MmState {
    /// Start of text.
    pub start_code: u64,
    /// End of text.
    pub end_code: u64,
    /// Start of data.
    pub start_data: u64,
    /// End of data.
    pub end_data: u64,
    /// Start of stack.
    pub start_stack: u64,
    /// Start of the heap.
    pub start_brk: u64,
    /// Current program break.
    pub brk: u64,
    /// Start of argv.
    pub arg_start: u64,
    /// End of argv.
    pub arg_end: u64,
    /// Start of the environment.
    pub env_start: u64,
    /// End of the environment.
    pub env_end: u64,
    /// The auxiliary vector as (type, value) pairs, without `AT_NULL`.
    pub auxv: Vec<(u64, u64)>,
    /// Path of the executable (`/proc/PID/exe`).
    pub exe: String,
    /// File id of the executable.
    pub exe_file_id: u32,
    /// The memory areas, in address order.
    pub vmas: Vec<Vma>,
    /// Guard regions (`MADV_GUARD_INSTALL`): `[start, end)`, in address
    /// order, each inside the areas (not areas themselves).
    pub guards: Vec<(u64, u64)>,
}

/// One memory area.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vma {
    /// What `/proc/PID/smaps` says.
    pub map: crate::proc::maps::MapEntry,
    /// `PROT_*`.
    pub prot: u32,
    /// `MAP_*` flags (PRIVATE/SHARED, ANONYMOUS, GROWSDOWN, LOCKED, NORESERVE).
    pub mmap_flags: u32,
    /// What kind of area it is (CRIU `VMA_*` status bits).
    pub status: u32,
    /// `madvise` advice to replay, as `1 << MADV_*` bits.
    pub madv: u64,
    /// File id of the backing file (0 for anonymous areas).
    pub file_id: u32,
}

/// Pagemap entry flag: the pages are in the parent dump's images.
pub const PE_PARENT: u32 = 1 << 0;
/// Pagemap entry flag: the pages are in the pages image.
pub const PE_PRESENT: u32 = 1 << 2;

/// A run of pages written to the pages image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PagemapEntry {
    /// Address of the first page.
    pub vaddr: u64,
    /// Number of pages.
    pub nr_pages: u32,
    /// `PE_*` flags.
    pub flags: u32,
}

/// One shared anonymous memory object (`pagemap-shmem-SHMID.img`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShmemDump {
    /// Its id: the inode of the object, as in the VMAs' `shmid`.
    pub shmid: u64,
    /// Size of the object covered by mappings.
    pub size: u64,
    /// Id of its pages image (`pages-<id>.img`).
    pub pages_id: u32,
    /// Dumped runs; `vaddr` is the offset in the object.
    pub pagemap: Vec<PagemapEntry>,
}

pub use crate::files::reg::Ghost;
pub use crate::files::{FdEntry, FileDesc, FileKind, FilesState};

/// Ids of the kernel objects a task may share with others (`ids-PID.img`):
/// tasks with the same object carry the same id (the pid of the first task
/// seen holding it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KobjIds {
    /// Address space (`CLONE_VM` without a thread group).
    pub vm: u32,
    /// Descriptor table (`CLONE_FILES`); names `fdinfo-<files>.img`.
    pub files: u32,
    /// cwd/root/umask (`CLONE_FS`).
    pub fs: u32,
    /// Signal handlers (`CLONE_SIGHAND`).
    pub sighand: u32,
}

impl KobjIds {
    /// Ids of a task that shares nothing: its own pid for each.
    pub fn own(pid: i32) -> KobjIds {
        let p = pid as u32;
        KobjIds { vm: p, files: p, fs: p, sighand: p }
    }
}

/// A zombie of the tree: recorded in `pstree.img` and a `core-PID.img`
/// holding only its exit status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZombieDump {
    /// Its pid.
    pub pid: i32,
    /// Its parent (a task of the tree).
    pub ppid: i32,
    /// Process group.
    pub pgid: i32,
    /// Session.
    pub sid: i32,
    /// `comm`.
    pub comm: String,
    /// Exit status as `wait` reports it (`/proc/PID/stat` field 52).
    pub exit_code: i32,
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A thread with zeroed registers and nothing else.
    pub fn thread(tid: i32) -> ThreadState {
        ThreadState {
            tid,
            comm: String::new(),
            // SAFETY: user_regs_struct is plain integers; all-zero is valid.
            gpregs: unsafe { std::mem::zeroed() },
            rseq_aborted: false,
            fpstate: FpState { kind: crate::ptrace::regs::FpKind::Fxsave, bytes: vec![0; 512] },
            sigmask: 0,
            pending: Vec::new(),
            altstack: (0, 0, 0),
            clear_tid_addr: 0,
            robust_list: (0, 0),
            rseq: RseqConfig::default(),
            sched: (0, 0, 0),
            creds: Creds::default(),
            pdeath_sig: 0,
            seccomp: Seccomp::default(),
        }
    }

    /// A process `pid` with threads `tids` (the leader first) and nothing else.
    pub fn process(pid: i32, tids: &[i32]) -> ProcessDump {
        ProcessDump {
            pid,
            ppid: 1,
            pgid: pid,
            sid: pid,
            task: TaskState::default(),
            threads: tids.iter().map(|&t| thread(t)).collect(),
            creds: Creds::default(),
            mm: MmState::default(),
            pagemap: Vec::new(),
            shmem: Vec::new(),
            files: FilesState::default(),
            pages_id: 1,
            kobj: KobjIds::own(pid),
        }
    }
}
