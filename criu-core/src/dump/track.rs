//! Dirty-page tracking between dumps, without soft-dirty: each task gets a
//! userfaultfd in asynchronous write-protect mode (`UFFD_FEATURE_WP_ASYNC`
//! and `WP_UNPOPULATED`). Its private areas are registered and
//! write-protected while the task is frozen; from then on the kernel clears
//! a page's protection on the first write, without stopping the task, and
//! `PAGEMAP_SCAN` with `PAGE_IS_WRITTEN` ([`Pagemap::scan_written`]) lists
//! the pages written since and protects them again, in one call.
//!
//! A userfaultfd belongs to the memory of the process that created it, so
//! the task creates it (an injected `userfaultfd(2)`), we take a copy with
//! `pidfd_getfd` and close the task's own (an injected `close`): the task's
//! descriptor table ends as it was. The registration lives as long as the
//! descriptor, which must outlive this criu-rs process: a holder process
//! ([`super::tracker`]) keeps every task's descriptor until the next dump
//! takes them over, or until the tasks are gone.
//!
//! An area counts as tracked when the scan succeeds on it (it is still
//! registered with an asynchronous write-protect userfaultfd: an area
//! mapped, or moved with `mremap`, since the last dump is not, and is dumped
//! whole, then registered for the next time).

use super::DumpError;
use crate::proc::pagemap::Pagemap;
use crate::ptrace::inject::Injector;
use crate::uffd::{feature, mode, Uffd};
use rustix::fd::OwnedFd;

/// `UFFD_USER_MODE_ONLY`: lets an unprivileged task create the descriptor
/// (`vm.unprivileged_userfaultfd` is 0); asynchronous write-protection
/// never needs kernel-mode faults.
const UFFD_USER_MODE_ONLY: u64 = 1;

/// Features the tracking descriptor is opened with.
pub const TRACK_FEATURES: u64 = feature::WP_ASYNC | feature::WP_UNPOPULATED;

/// Makes the injected thread's process create a userfaultfd and returns
/// our copy of it; the task's own descriptor is closed again.
///
/// Call form in the task: `userfaultfd(O_CLOEXEC | O_NONBLOCK |
/// UFFD_USER_MODE_ONLY)`, then `close(fd)`.
pub fn take_task_uffd(inj: &mut Injector, pid: i32) -> Result<Uffd, DumpError> {
    take_uffd(inj, pid, UFFD_USER_MODE_ONLY, TRACK_FEATURES)?.ok_or_else(|| DumpError::Track(format!("pid {pid} may not create a userfaultfd")))
}

/// [`take_task_uffd`] for a descriptor that also takes kernel-mode faults
/// (`userfaultfd(O_CLOEXEC | O_NONBLOCK)`), with `features`: `None` when
/// the task may not have one (`EPERM`: no `CAP_SYS_PTRACE` and
/// `vm.unprivileged_userfaultfd` is 0).
pub fn take_kernel_uffd(inj: &mut Injector, pid: i32, features: u64) -> Result<Option<Uffd>, DumpError> {
    take_uffd(inj, pid, 0, features)
}

fn take_uffd(inj: &mut Injector, pid: i32, extra: u64, features: u64) -> Result<Option<Uffd>, DumpError> {
    let flags = (libc::O_CLOEXEC | libc::O_NONBLOCK) as u64 | extra;
    let fd = match inj.syscall(libc::SYS_userfaultfd, &[flags])? {
        r if r == -(libc::EPERM as i64) => return Ok(None),
        // Only the live copy asks for this kind: without it, memory is
        // copied frozen, as it always could be.
        r if r < 0 && extra == 0 => {
            tracing::info!(pid, "no userfaultfd in the task ({}): memory copied frozen", nix::errno::Errno::from_raw(-r as i32));
            return Ok(None);
        }
        r if r < 0 => return Err(DumpError::Track(format!("userfaultfd in pid {pid}: {}", nix::errno::Errno::from_raw(-r as i32)))),
        r => r as u64,
    };
    let copied = copy_fd(pid, fd as i32);
    // Whatever happened, the task's descriptor goes.
    let closed = inj.syscall_ok(libc::SYS_close, &[fd]);
    let ours = copied?;
    closed?;
    let uffd = Uffd::from_fd(ours);
    match uffd.api(features) {
        Ok(_) => Ok(Some(uffd)),
        Err(errno) if extra == 0 => {
            tracing::info!(pid, "UFFDIO_API with features {features:#x}: {errno}; memory copied frozen");
            Ok(None)
        }
        Err(errno) => Err(DumpError::Track(format!("UFFDIO_API with features {features:#x}: {errno}"))),
    }
}

/// `pidfd_getfd(pidfd_open(pid), fd)`: our copy of another process's descriptor.
pub fn copy_fd(pid: i32, fd: i32) -> Result<OwnedFd, DumpError> {
    use rustix::process::{pidfd_getfd, pidfd_open, Pid, PidfdFlags, PidfdGetfdFlags};
    let what = |call: &str, e: rustix::io::Errno| DumpError::Track(format!("{call} on pid {pid}: {e}"));
    let p = Pid::from_raw(pid).ok_or_else(|| DumpError::Track(format!("bad pid {pid}")))?;
    let pidfd = pidfd_open(p, PidfdFlags::empty()).map_err(|e| what("pidfd_open", e))?;
    let raw = rustix::fd::RawFd::from(fd);
    pidfd_getfd(&pidfd, raw, PidfdGetfdFlags::empty()).map_err(|e| what("pidfd_getfd", e))
}

/// Registers `[start, end)` on `uffd` for asynchronous write-protection and
/// protects every page of it (unpopulated ones too), so that the next scan
/// reports exactly the pages written from now on. False when the area
/// cannot be registered (an I/O or PFN mapping, or one another
/// userfaultfd holds): it is then dumped whole every time.
pub fn start_area(uffd: &Uffd, start: u64, end: u64) -> bool {
    let len = end - start;
    if let Err(e) = uffd.register(start, len, mode::WP) {
        tracing::debug!("area {start:#x}-{end:#x} not tracked: UFFDIO_REGISTER: {e}");
        return false;
    }
    if let Err(e) = uffd.writeprotect(start, len, mode::WRITEPROTECT) {
        tracing::debug!("area {start:#x}-{end:#x} not tracked: UFFDIO_WRITEPROTECT: {e}");
        let _ = uffd.unregister(start, len);
        return false;
    }
    true
}

/// The ranges of `[start, end)` written since the last dump (protected
/// again on the way), or `None` when the area is not tracked.
pub fn written_since(pm: &Pagemap, start: u64, end: u64) -> Result<Option<Vec<(u64, u64)>>, DumpError> {
    let mut out = Vec::new();
    Ok(pm.scan_written(start, end, &mut out)?.then_some(out))
}

/// One task's tracking state through a dump.
#[derive(Debug, Default)]
pub struct TaskTrack {
    /// Leave tracking set up for a later dump (pre-dump, `--track-mem`).
    pub want: bool,
    /// The task's descriptor: taken over from the parent's tracker, or
    /// made during this dump when `want`.
    pub uffd: Option<Uffd>,
    /// The pages the parent images hold for this task (sorted ranges):
    /// `Some` only when `uffd` has tracked writes since the parent dump.
    pub parent_pages: Option<Vec<(u64, u64)>>,
    /// Areas `uffd` was given registered and write-protected before the
    /// freeze ([`super::live::arm`]): tracked already, nothing to do frozen.
    pub armed: Vec<(u64, u64)>,
    /// Ranges moved from `uffd` (the parent's tracking) to the exact live
    /// copy's descriptor before the freeze ([`super::live::swap_areas`]).
    pub swapped: Vec<(u64, u64)>,
    /// Pages of `swapped` written since the parent dump, up to the move.
    pub written_before_swap: Vec<(u64, u64)>,
}

impl TaskTrack {
    /// While the task is frozen: scans the tracked areas of `vmas` for
    /// pages written since the parent dump (protecting them again), and
    /// (when `want`) registers the untracked ones. Returns what the memory
    /// dump needs to leave unchanged pages in the parent images.
    pub fn prepare(&mut self, pm: &Pagemap, vmas: &[super::model::Vma]) -> Result<Option<super::memory::Incremental>, DumpError> {
        let Some(uffd) = &self.uffd else { return Ok(None) };
        let mut written = std::collections::BTreeMap::new();
        for v in vmas.iter().filter(|v| v.dumps_private_pages()) {
            if self.parent_pages.is_some() {
                if covers(&self.swapped, v.map.start, v.map.end) {
                    // Written before the move, or since (un-protected).
                    let mut since = Vec::new();
                    if pm.scan_unprotected(v.map.start, v.map.end, &mut since)? {
                        let before = self.written_before_swap.iter().filter(|r| r.0 < v.map.end && v.map.start < r.1);
                        let clipped = before.map(|r| (r.0.max(v.map.start), r.1.min(v.map.end)));
                        written.insert(v.map.start, union(clipped.chain(since).collect()));
                        continue;
                    }
                }
                if let Some(w) = written_since(pm, v.map.start, v.map.end)? {
                    written.insert(v.map.start, w);
                    continue;
                }
            }
            let armed = || {
                let i = self.armed.partition_point(|a| a.1 <= v.map.start);
                self.armed.get(i).is_some_and(|a| a.0 <= v.map.start && v.map.end <= a.1)
            };
            if self.want && !armed() {
                start_area(uffd, v.map.start, v.map.end);
            }
        }
        Ok(self.parent_pages.take().map(|in_parent| super::memory::Incremental { written, in_parent }))
    }
}

/// Whether the sorted, disjoint `ranges` cover `[start, end)` whole.
pub fn covers(ranges: &[(u64, u64)], start: u64, end: u64) -> bool {
    outside(ranges, start, end).is_empty()
}

/// The parts of `[start, end)` the sorted, disjoint `ranges` leave out.
pub fn outside(ranges: &[(u64, u64)], start: u64, end: u64) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    let mut at = start;
    for &(s, e) in ranges.iter().filter(|r| r.1 > start && r.0 < end) {
        if s > at {
            out.push((at, s));
        }
        at = at.max(e);
    }
    if at < end {
        out.push((at, end));
    }
    out
}

/// `ranges` sorted and merged (overlapping or adjacent ones joined).
fn union(mut ranges: Vec<(u64, u64)>) -> Vec<(u64, u64)> {
    ranges.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::with_capacity(ranges.len());
    for (s, e) in ranges {
        match out.last_mut() {
            Some(last) if s <= last.1 => last.1 = last.1.max(e),
            _ => out.push((s, e)),
        }
    }
    out
}

/// The pages `parent/pagemap-PID.img` holds (present there, or in its own
/// parent), as sorted ranges; `None` when it cannot be read (then nothing
/// is left to the parent).
pub fn parent_pages(parent: &std::path::Path, pid: i32) -> Option<Vec<(u64, u64)>> {
    use crate::images::consts::pagemap_flags::{PARENT, PRESENT};
    use crate::images::{pb, ImageDir, ImageKind};
    let dir = ImageDir::open_unchecked(parent);
    let read = || -> Result<Vec<(u64, u64)>, String> {
        let s = |e: crate::images::ImageError| e.to_string();
        let mut r = dir.open_image(ImageKind::Pagemap, pid as u64).map_err(s)?;
        let _head: pb::PagemapHead = r.read_next().map_err(s)?;
        let mut out: Vec<(u64, u64)> = Vec::new();
        while let Some(e) = r.read_entry::<pb::PagemapEntry>().map_err(s)? {
            let flags = e.flags.unwrap_or(PRESENT) | if e.in_parent == Some(true) { PARENT } else { 0 };
            if flags & (PRESENT | PARENT) == 0 {
                continue;
            }
            let start = e.vaddr.unwrap_or_default();
            let end = start.saturating_add(e.page_count().saturating_mul(crate::proc::pagemap::PAGE_SIZE));
            match out.last_mut() {
                Some(last) if last.1 == start => last.1 = end,
                Some(last) if last.1 > start => return Err("entries out of order".into()),
                _ => out.push((start, end)),
            }
        }
        Ok(out)
    };
    match read() {
        Ok(v) => Some(v),
        Err(e) => {
            tracing::warn!(pid, "parent pagemap in {}: {e}; this task's pages are dumped whole", parent.display());
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_sets() {
        let r = [(0x1000, 0x3000), (0x5000, 0x6000)];
        assert_eq!(outside(&r, 0x0, 0x7000), vec![(0x0, 0x1000), (0x3000, 0x5000), (0x6000, 0x7000)]);
        assert_eq!(outside(&r, 0x1000, 0x3000), vec![]);
        assert!(covers(&r, 0x2000, 0x3000) && !covers(&r, 0x2000, 0x5001));
        assert_eq!(union(vec![(5, 6), (1, 3), (2, 4), (4, 5), (8, 9)]), vec![(1, 6), (8, 9)]);
    }
}
