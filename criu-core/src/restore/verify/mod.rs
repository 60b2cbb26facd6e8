//! `criu-rs restore --verify`: before the restored tree is let go, compare
//! what the kernel shows for each task with what the images say, and fail
//! the restore (the tree is killed) on the first difference of each task.
//!
//! When: [`super::barrier`] has stepped every thread of every task through
//! its `rt_sigreturn` and removed the blob, so each task is exactly what it
//! will be when it runs, but all are still stopped and traced by criu-rs.
//!
//! What, one module per state (each compares only what the images record:
//! an optional field the dump left out is not compared):
//! - [`maps`]: `/proc/PID/smaps` areas (bounds, protection, shared or
//!   private, backing file and offset, grows-down/locked/noreserve, the
//!   madvise advice `VmFlags` shows) against `mm-PID.img`'s VMAs;
//! - [`fds`]: the fd table (numbers, close-on-exec, status flags, file
//!   positions, kinds, paths, pipe sizes) against `fdinfo-ID.img` and
//!   `files.img`; the working and root directories and the umask against
//!   `fs-PID.img`;
//! - [`locks`]: the file locks of `filelocks.img` each task holds;
//! - [`creds`]: every thread's uids, gids, groups, capability sets,
//!   `NoNewPrivs`, seccomp mode and filter count;
//! - [`signals`]: every thread's blocked mask and pending signals, the
//!   shared pending signals, ignored and caught dispositions;
//! - [`limits`]: resource limits;
//! - [`sched`]: every thread's scheduling policy, real-time priority and
//!   nice value;
//! - [`timers`]: POSIX timers (id, signal, clock, notification);
//! - [`regs`]: every thread's general registers and rseq registration;
//! - [`task`]: process group and session, the executable, the mm's
//!   bounds, thread names, personality, `oom_score_adj`, THP disable,
//!   umask;
//! - [`shared`] (across the tree): which tasks share an address space, fd
//!   table, fs context or signal handlers (`kcmp`), against the ids of
//!   `ids-PID.img`.
//!
//! Reading `/proc` costs a few files per task and thread: cheap enough to
//! run on every restore of the test suite.

pub mod creds;
pub mod fds;
pub mod limits;
pub mod locks;
pub mod maps;
pub mod regs;
pub mod sched;
pub mod shared;
pub mod signals;
pub mod task;
pub mod timers;

use super::error::{RestoreError, Result};
use crate::images::{pb, ImageDir, ImageKind};
use std::collections::BTreeMap;
use std::fmt::Display;

/// One comparison: `Err` describes the first difference ("what LIVE,
/// image IMAGE").
pub type Check = std::result::Result<(), String>;

/// What the images say about one live task.
pub struct TaskImages<'a> {
    pub pid: i32,
    /// `core-PID.img`.
    pub core: pb::CoreEntry,
    /// Every thread, the leader first: tid and its core image (the
    /// leader's again).
    pub threads: Vec<(i32, pb::CoreEntry)>,
    /// `mm-PID.img`.
    pub mm: pb::MmEntry,
    /// `fs-PID.img`, if there is one.
    pub fs: Option<pb::FsEntry>,
    /// `fdinfo-ID.img`: the fd table.
    pub fdinfo: Vec<pb::FdinfoEntry>,
    /// What the whole tree shares.
    pub tree: &'a TreeImages,
}

/// Images shared by the tasks of the tree.
pub struct TreeImages {
    /// `files.img` by id.
    pub files: BTreeMap<u32, pb::FileEntry>,
    /// `memfd.img` inodes by id.
    pub memfds: BTreeMap<u64, pb::MemfdInodeEntry>,
    /// File ids a remap names (`remap-fpath.img`: ghost or linked-back
    /// files, whose restored name is not the dumped one).
    pub remapped: std::collections::BTreeSet<u32>,
    /// `seccomp.img`, if there is one.
    pub seccomp: Option<pb::SeccompEntry>,
    /// `filelocks.img` (empty if there is none).
    pub locks: Vec<pb::FileLockEntry>,
    /// `pstree.img`.
    pub pstree: Vec<pb::PstreeEntry>,
    /// Pipe buffer sizes `pipes-data.img` records, by pipe id.
    pub pipe_sizes: BTreeMap<u32, u32>,
}

impl TreeImages {
    /// Reads what the tree shares from `images`.
    pub fn read(images: &ImageDir) -> Result<Self> {
        let files = crate::files::load::load_files(images)?;
        let memfds = super::load::load_memfd_inodes(images)?;
        let mut remapped = std::collections::BTreeSet::new();
        if images.exists(ImageKind::RemapFpath, 0) {
            for r in images.read_all::<pb::RemapFilePathEntry>(ImageKind::RemapFpath, 0)? {
                remapped.insert(r.orig_id.unwrap_or_default());
            }
        }
        let seccomp = if images.exists(ImageKind::Seccomp, 0) { Some(images.read_one(ImageKind::Seccomp, 0)?) } else { None };
        let locks = if images.exists(ImageKind::FileLocks, 0) { images.read_all(ImageKind::FileLocks, 0)? } else { Vec::new() };
        let mut pipe_sizes = BTreeMap::new();
        if images.exists(ImageKind::PipesData, 0) {
            // Each entry is followed by the bytes queued in the pipe.
            let mut r = images.open_image(ImageKind::PipesData, 0)?;
            while let Some(e) = r.read_entry::<pb::PipeDataEntry>()? {
                r.read_raw(e.bytes.unwrap_or_default() as u64)?;
                if let (Some(id), Some(size)) = (e.pipe_id, e.size) {
                    pipe_sizes.insert(id, size);
                }
            }
        }
        let pstree = images.read_all(ImageKind::Pstree, 0)?;
        Ok(TreeImages { files, memfds, remapped, seccomp, locks, pstree, pipe_sizes })
    }
}

impl<'a> TaskImages<'a> {
    /// Reads the images of live task `pid` with threads `tids` (the leader
    /// first).
    pub fn read(images: &ImageDir, tree: &'a TreeImages, pid: i32, tids: &[i32]) -> Result<Self> {
        let core = images.read_core(pid as u64, true)?;
        let mut threads = vec![(pid, core.clone())];
        for &tid in tids.iter().filter(|&&t| t != pid) {
            threads.push((tid, images.read_core(tid as u64, false)?));
        }
        let mm = images.read_mm(pid as u64)?;
        let fs = if images.exists(ImageKind::Fs, pid as u64) { Some(images.read_one(ImageKind::Fs, pid as u64)?) } else { None };
        let files_id = super::load::files_id(images, &core, pid)?;
        let fdinfo = images.read_all(ImageKind::Fdinfo, files_id as u64)?;
        Ok(TaskImages { pid, core, threads, mm, fs, fdinfo, tree })
    }

    /// `core.tc`, the task-wide part of the leader's core.
    pub fn tc(&self) -> Option<&pb::TaskCoreEntry> {
        self.core.tc.as_ref()
    }
}

/// Every check, in the order they run for a task.
const CHECKS: &[(&str, fn(&TaskImages) -> Check)] = &[
    ("creds", creds::check),
    ("task", task::check),
    ("limits", limits::check),
    ("sched", sched::check),
    ("signals", signals::check),
    ("timers", timers::check),
    ("regs", regs::check),
    ("maps", maps::check),
    ("fds", fds::check),
    ("locks", locks::check),
];

/// Compares every task of `tasks` (pid and its threads, the leader first)
/// with the images in `images`. `Err(RestoreError::Verify)` lists the first
/// difference of each task that has one.
pub fn verify_tree(images: &ImageDir, tasks: &[(i32, Vec<i32>)]) -> Result<()> {
    let start = std::time::Instant::now();
    let tree = TreeImages::read(images)?;
    let mut diffs = Vec::new();
    let mut ids = Vec::new();
    for (pid, tids) in tasks {
        let task = TaskImages::read(images, &tree, *pid, tids)?;
        if let Some(d) = verify_task(&task) {
            diffs.push((*pid, d));
        }
        ids.extend(shared::ids(images, &task.core, *pid)?.map(|i| (*pid, i)));
    }
    for (pid, d) in shared::check(&ids) {
        if !diffs.iter().any(|(p, _)| *p == pid) {
            tracing::debug!(pid, check = "shared", "verify: {d}");
            diffs.push((pid, d));
        }
    }
    diffs.sort_by_key(|(pid, _)| tasks.iter().position(|(p, _)| p == pid));
    tracing::info!(tasks = tasks.len(), differ = diffs.len(), us = start.elapsed().as_micros() as u64, "verify");
    if diffs.is_empty() {
        return Ok(());
    }
    Err(RestoreError::Verify { diffs })
}

/// The first difference of one task, if any.
pub fn verify_task(task: &TaskImages) -> Option<String> {
    for (name, check) in CHECKS {
        if let Err(d) = check(task) {
            tracing::debug!(pid = task.pid, check = name, "verify: {d}");
            return Some(d);
        }
    }
    None
}

/// `what LIVE, image IMAGE` unless they are equal.
pub fn same<T: PartialEq + Display>(what: impl Display, live: T, image: T) -> Check {
    if live == image {
        Ok(())
    } else {
        Err(format!("{what} {live}, image {image}"))
    }
}

/// [`same`] with both values as hex.
pub fn same_hex(what: impl Display, live: u64, image: u64) -> Check {
    if live == image {
        Ok(())
    } else {
        Err(format!("{what} {live:#x}, image {image:#x}"))
    }
}

/// A `/proc` read that failed: a difference too (the task should be there).
pub fn proc_err(e: crate::proc::ProcError) -> String {
    format!("cannot read the restored task: {e}")
}

/// The tid whose `/proc/PID/task/TID/NAME` holds a thread's own state.
pub fn thread_file(tid: i32, name: &str) -> String {
    format!("task/{tid}/{name}")
}
