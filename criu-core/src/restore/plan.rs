//! The validated description of one task to restore.
//!
//! [`super::load`] turns the image files into a [`TaskPlan`]; everything after
//! (fds, premap, blob arguments) works from the plan only, never from raw
//! protobuf messages, so every image check happens in one place.

use std::collections::BTreeMap;
use std::path::PathBuf;

/// Page size on x86_64.
pub const PAGE_SIZE: u64 = 4096;

/// The mapping-type bits of `mmap` flags (`MAP_SHARED`, `MAP_PRIVATE`,
/// `MAP_SHARED_VALIDATE`, `MAP_DROPPABLE`).
pub const MAP_TYPE: u32 = 0x0f;
/// `MAP_DROPPABLE` (Linux 6.11): private memory the kernel may drop.
pub const MAP_DROPPABLE: u32 = 0x08;

/// Everything needed to rebuild one single-threaded task.
#[derive(Debug, Clone)]
pub struct TaskPlan {
    pub pid: i32,
    pub pgid: i32,
    pub sid: i32,
    pub fs: FsPlan,
    /// The fd table, sorted by fd number.
    pub fds: Vec<FdPlan>,
    /// Open file descriptions by image id (shared by dup'd fds).
    pub descs: BTreeMap<u32, DescPlan>,
    /// Owners (`F_SETOWN_EX`, `F_SETSIG`) of descriptions that have one,
    /// set once every task exists ([`crate::files::fdtable::set_owners`]).
    pub owners: BTreeMap<u32, crate::files::Fown>,
    /// The descriptions this task is the first of the tree to hold: it
    /// finishes them ([`crate::files::task`]); filled in with the tree.
    pub first_held: std::collections::BTreeSet<u32>,
    /// File locks it takes once its fd table is in place (`--file-locks`).
    pub locks: Vec<crate::files::locks::FileLock>,
    /// Every dumped VMA, sorted by address, non-overlapping.
    pub vmas: Vec<VmaPlan>,
    /// Guard regions (`MADV_GUARD_INSTALL`) inside them, `[start, end)`:
    /// the blob installs them once the areas are final.
    pub guards: Vec<(u64, u64)>,
    pub pages: PagesPlan,
    /// Entries of `pagemap-PID.img` flagged `LAZY`, in address order (their
    /// `PRESENT` ones are also in `pages.runs`); see [`super::lazy`].
    pub lazy: Vec<LazyRun>,
    /// Pages left in the parent dumps' images (`--prev-images-dir`), one
    /// plan per pages file they come from.
    pub parent_pages: Vec<PagesPlan>,
    /// The executable (`mm_entry.exe_file_id`), for `/proc/PID/exe`.
    pub exe: Option<PathBuf>,
    /// Registers, signal state, timers, rlimits, creds (`core-PID.img`).
    pub core: Box<crate::images::pb::CoreEntry>,
    /// The other threads, in `pstree` order: tid and `core-TID.img`.
    pub threads: Vec<(i32, crate::images::pb::CoreEntry)>,
    /// `mm-PID.img` without its VMA list (code/data/brk/stack/arg/env, auxv).
    pub mm: Box<crate::images::pb::MmEntry>,
    /// Every thread's credentials, checked: the leader first, then
    /// `threads` in order, each with its tid.
    pub creds: Vec<(i32, super::creds::Creds)>,
    /// Every thread's seccomp mode and filters, in the same order.
    pub seccomp: Vec<(i32, super::seccomp::ThreadSeccomp)>,
    /// The root of the tree: its parent is criu-rs, so its parent-death
    /// signal is not restored (criu-rs exits after a detached restore).
    pub root: bool,
}

impl TaskPlan {
    /// What the task finishes of its files ([`crate::files::task`]).
    pub fn task_files(&self) -> crate::files::task::TaskFiles<'_> {
        crate::files::task::TaskFiles { pid: self.pid, fds: &self.fds, descs: &self.descs, first_held: &self.first_held, locks: &self.locks }
    }
}

/// Root, cwd and umask.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsPlan {
    pub cwd: PathBuf,
    pub root: PathBuf,
    pub umask: u32,
}

pub use crate::files::fdtable::FdPlan;
pub use crate::files::reg::RegFile;
pub use crate::files::DescPlan;

/// One VMA: where it lives, its protection and what backs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmaPlan {
    pub start: u64,
    pub end: u64,
    /// Offset into the backing file, in bytes.
    pub pgoff: u64,
    /// `PROT_*` bits.
    pub prot: u32,
    /// `MAP_*` bits as dumped (MAP_PRIVATE/SHARED, MAP_GROWSDOWN, ...).
    pub flags: u32,
    /// `MADV_*` bits as a mask (bit n set = madvise advice n applied).
    pub madv: u64,
    /// With `MAP_LOCKED` in `flags`: locked on fault (`mlock2(MLOCK_ONFAULT)`)
    /// rather than populated and locked.
    pub lock_on_fault: bool,
    pub kind: VmaKind,
}

impl VmaPlan {
    /// Length in bytes.
    pub fn len(&self) -> u64 {
        self.end - self.start
    }

    /// Whether the VMA is empty (never, once validated).
    pub fn is_empty(&self) -> bool {
        self.end <= self.start
    }

    /// Whether the VMA is premapped and moved into place by the blob.
    pub fn is_premapped(&self) -> bool {
        matches!(self.kind, VmaKind::Anon | VmaKind::PrivateFile { .. } | VmaKind::PrivateShmem { .. } | VmaKind::Vdso)
    }

    /// The mapping type for `mmap`: `MAP_PRIVATE`, `MAP_SHARED` or
    /// `MAP_DROPPABLE` (`MAP_TYPE` bits of `flags`; private if none).
    pub fn map_type(&self) -> u32 {
        match self.flags & MAP_TYPE {
            0 => libc::MAP_PRIVATE as u32,
            t => t,
        }
    }

    /// Whether this is a grows-down (stack) VMA.
    pub fn grows_down(&self) -> bool {
        self.flags & libc::MAP_GROWSDOWN as u32 != 0
    }
}

/// What backs a VMA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VmaKind {
    /// Private anonymous memory (heap, stack, anonymous mmaps).
    Anon,
    /// A private (copy-on-write) mapping of a file.
    PrivateFile { path: PathBuf },
    /// A shared mapping, `pgoff` bytes in, of shmem object `shmid` (its
    /// contents in `pagemap-shmem-SHMID.img`): shared anonymous memory
    /// (`MAP_SHARED|MAP_ANONYMOUS`) or a memfd (an inode of `memfd.img`).
    /// Created once for the whole tree ([`super::shared`]), at least `size`
    /// bytes long (0: as long as its mappings reach), and mapped at its
    /// place by the blob.
    Shmem { shmid: u64, size: u64 },
    /// A private (copy-on-write) mapping, `pgoff` bytes in, of shmem
    /// object `shmid` (a memfd, or shared anonymous memory reopened through
    /// `/proc/PID/map_files`): premapped from the object criu-rs made
    /// ([`super::shared`]), so the pages the task never wrote keep
    /// following the object; the written ones are filled on top.
    PrivateShmem { shmid: u64 },
    /// A SysV shared memory segment attached whole (`shmat`) at its place
    /// by the blob; `read_only`: attached `SHM_RDONLY`. The segment stayed
    /// in the kernel ([`crate::dump::sysv`]).
    SysvShm { shmid: i32, read_only: bool },
    /// A shared mapping of a file, mapped in place by the blob.
    SharedFile { path: PathBuf, open_flags: i32 },
    /// The dumped `[vdso]`: premapped as an anonymous copy of its pages.
    Vdso,
    /// The dumped `[vvar]` (or `[vvar_vclock]`).
    Vvar,
    /// `[vsyscall]`: fixed by the kernel, nothing to do.
    Vsyscall,
}

/// Where the dumped page contents are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PagesPlan {
    /// `pages-N.img`.
    pub path: PathBuf,
    /// Present pages, in file order; each run is contiguous in memory and
    /// in the file.
    pub runs: Vec<PageRun>,
}

/// A `LAZY` pagemap entry: `nr_pages` pages at `vaddr`, whose data is in
/// the pages file (`present`) or only with a page server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LazyRun {
    pub vaddr: u64,
    pub nr_pages: u64,
    pub present: bool,
}

/// `nr_pages` pages at `vaddr`, stored at `file_off` in the pages file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageRun {
    pub vaddr: u64,
    pub nr_pages: u64,
    pub file_off: u64,
}

impl PageRun {
    /// Bytes covered.
    pub fn len(&self) -> u64 {
        self.nr_pages * PAGE_SIZE
    }

    /// Whether the run covers no page.
    pub fn is_empty(&self) -> bool {
        self.nr_pages == 0
    }
}
