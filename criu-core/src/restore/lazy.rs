//! Lazy restore (`restore --lazy-pages`): the restored task starts without
//! the memory of its `LAZY` pagemap entries, which `criu-rs lazy-pages`
//! (see [`crate::lazy`]) fills over a userfaultfd afterwards.
//!
//! - In criu-rs, before the fork ([`setup`]): every private anonymous VMA
//!   holding `LAZY` pages becomes a lazy VMA, and those pages are dropped
//!   from the runs the premap fills, so the VMA is premapped empty (an
//!   `mmap` whatever its size). `LAZY` pages in any other kind of VMA are
//!   refused. Without `--lazy-pages`, `LAZY` entries are restored like any
//!   other when their data is in the images (`PRESENT`); one without data
//!   (a `dump --lazy-pages`, memory left on the source) is an error.
//! - In the task, before the blob ([`hand_over_uffd`]): `userfaultfd` and
//!   `UFFDIO_API` with [`LAZY_FEATURES`] (a uffd serves the memory of the
//!   process that created it: the task is the one to call it), then
//!   [`crate::lazy::hand_over`] to the daemon. Every task hands one over,
//!   even one without lazy VMAs (the daemon counts them); such a task closes
//!   its copy at once.
//! - The blob ([`crate::abi::VMA_F_LAZY`] in `VmaArg::vflags`,
//!   `RestoreArgs::uffd`) registers the lazy VMAs in MISSING mode once they
//!   are at their final address and closes the task's copy of the uffd; from
//!   then on a fault waits for the daemon, and if the daemon dies its guard
//!   kills the task rather than letting it read zeroes.

use super::error::{RestoreError, Result};
use super::fds::move_above;
use super::plan::{PageRun, TaskPlan, VmaKind, PAGE_SIZE};
use crate::lazy::{hand_over, TaskHello};
use crate::uffd::{Uffd, LAZY_FEATURES};
use std::os::fd::{AsFd, IntoRawFd, RawFd};
use std::path::{Path, PathBuf};

/// A task restored lazily: where its daemon listens and which VMAs are lazy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LazySetup {
    /// The daemon's unix socket.
    pub socket: PathBuf,
    /// Indices (into `TaskPlan::vmas`) of the VMAs the blob registers.
    pub vmas: Vec<usize>,
}

/// Prepares `plan` for a lazy restore through the daemon at `socket`, or,
/// with `None`, checks that every `LAZY` page has its data in the images.
pub fn setup(plan: &mut TaskPlan, socket: Option<&Path>) -> Result<Option<LazySetup>> {
    let pagemap = || plan.pages.path.with_file_name(format!("pagemap-{}.img", plan.pid));
    let Some(socket) = socket else {
        if let Some(l) = plan.lazy.iter().find(|l| !l.present) {
            let lazy_pages: u64 = plan.lazy.iter().filter(|l| !l.present).map(|l| l.nr_pages).sum();
            return Err(RestoreError::bad(
                pagemap(),
                format!(
                    "{lazy_pages} lazy pages (the first at {:#x}) are not in the images (dumped with --lazy-pages): \
                     restore them with --lazy-pages from `criu-rs lazy-pages --page-server`",
                    l.vaddr
                ),
            ));
        }
        return Ok(None);
    };
    if !plan.parent_pages.is_empty() {
        return Err(RestoreError::Unsupported {
            file: pagemap(),
            what: "lazy restore of an incremental dump (pages in parent images); restore it without --lazy-pages".into(),
        });
    }
    let mut vmas = Vec::new();
    for l in &plan.lazy {
        let end = l.vaddr + l.nr_pages * PAGE_SIZE;
        let first = plan.vmas.partition_point(|v| v.end <= l.vaddr);
        for (i, v) in plan.vmas.iter().enumerate().skip(first).take_while(|(_, v)| v.start < end) {
            if v.kind != VmaKind::Anon || v.flags & libc::MAP_LOCKED as u32 != 0 {
                return Err(RestoreError::Unsupported {
                    file: pagemap(),
                    what: format!(
                        "lazy pages at {:#x} in VMA {:#x}-{:#x}, which is not unlocked private anonymous memory",
                        l.vaddr.max(v.start),
                        v.start,
                        v.end
                    ),
                });
            }
            if vmas.last() != Some(&i) {
                vmas.push(i);
            }
        }
    }
    let lazy: Vec<(u64, u64)> = plan.lazy.iter().map(|l| (l.vaddr, l.vaddr + l.nr_pages * PAGE_SIZE)).collect();
    plan.pages.runs = without(&plan.pages.runs, &lazy);
    Ok(Some(LazySetup { socket: socket.into(), vmas }))
}

/// `runs` (in address order) minus the sorted, disjoint ranges `cut`.
fn without(runs: &[PageRun], cut: &[(u64, u64)]) -> Vec<PageRun> {
    let mut out = Vec::with_capacity(runs.len());
    let mut keep = |from: u64, to: u64, r: &PageRun| {
        if to > from {
            out.push(PageRun { vaddr: from, nr_pages: (to - from) / PAGE_SIZE, file_off: r.file_off + (from - r.vaddr) });
        }
    };
    for r in runs {
        let end = r.vaddr + r.len();
        let mut at = r.vaddr;
        let first = cut.partition_point(|c| c.1 <= r.vaddr);
        for &(s, e) in cut[first..].iter().take_while(|c| c.0 < end) {
            keep(at, s.min(end), r);
            at = at.max(e);
        }
        keep(at, end, r);
    }
    out
}

/// In the task, before the blob: `userfaultfd()` + `UFFDIO_API` with
/// [`LAZY_FEATURES`], handed over to the daemon for image pid `pid`. Returns
/// the descriptor for `RestoreArgs::uffd` (moved to `floor` or above, the
/// blob closes it), or -1 when the task has no lazy VMA (then it is closed
/// here, once the daemon holds it).
pub fn hand_over_uffd(lazy: &LazySetup, pid: i32, floor: RawFd) -> Result<RawFd> {
    let uffd = Uffd::create().map_err(|e| RestoreError::sys("userfaultfd(O_CLOEXEC | O_NONBLOCK)", e))?;
    uffd.api(LAZY_FEATURES).map_err(|e| RestoreError::sys(format!("UFFDIO_API({LAZY_FEATURES:#x})"), e))?;
    let fd = move_above(uffd.into_fd(), floor)?;
    let hello = TaskHello { image_pid: pid as u32, pid: rustix::process::getpid().as_raw_nonzero().get() as u32 };
    hand_over(&lazy.socket, hello, fd.as_fd()).map_err(|e| {
        RestoreError::Prepare(format!("handing the userfaultfd to the lazy-pages daemon at {}: {e}", lazy.socket.display()))
    })?;
    if lazy.vmas.is_empty() {
        return Ok(-1);
    }
    Ok(fd.into_raw_fd())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(vaddr: u64, nr_pages: u64, file_off: u64) -> PageRun {
        PageRun { vaddr, nr_pages, file_off }
    }

    #[test]
    fn lazy_ranges_are_cut_out_of_the_runs_keeping_file_offsets() {
        let p = PAGE_SIZE;
        let runs = [run(0x10000, 8, 0), run(0x20000, 2, 8 * p)];
        // Middle of the first run, and the whole second one.
        let cut = [(0x12000, 0x14000), (0x20000, 0x22000)];
        assert_eq!(without(&runs, &cut), vec![run(0x10000, 2, 0), run(0x14000, 4, 4 * p)]);
        // A cut spanning two runs and one before everything.
        let cut = [(0x1000, 0x2000), (0x16000, 0x21000)];
        assert_eq!(without(&runs, &cut), vec![run(0x10000, 6, 0), run(0x21000, 1, 9 * p)]);
        assert_eq!(without(&runs, &[]), runs.to_vec());
        assert!(without(&runs, &[(0, u64::MAX)]).is_empty());
    }
}
