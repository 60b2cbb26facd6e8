//! Pages shared copy-on-write between a task and its children, as fork
//! left them.
//!
//! Every task builds (premaps and fills) its private memory before it forks
//! its children ([`super::tree`]), so each child starts with its parent's
//! copy of that memory, shared copy-on-write. A child area with the same
//! bounds and kind as one of its parent's (private anonymous, or a private
//! mapping of the same file at the same offset; same mapping type,
//! grows-down and no-reserve flags) takes the inherited copy into
//! its own premap area with `mremap` (the pages stay shared) instead of a
//! fresh mapping ([`Parent::inherited`]). It is then filled by comparison
//! ([`fill_inherited`]): a dumped page equal to the one there is left
//! shared, a different one is written (the kernel copies the page first).
//! Pages the parent has where the child has none (the child's were zero,
//! never touched, or still the file's) are dropped with `MADV_DONTNEED`
//! ([`drop_unshared`]), which leaves anonymous memory reading zeros and a
//! private file mapping reading its file (zdtm `cow01`).
//! The child ends with exactly its own contents, sharing every page that
//! is the same in both tasks, as in CRIU's restore (zdtm `cow00`); a tree
//! like PostgreSQL's, whose workers inherit most of their memory, uses
//! about as much memory restored as before the dump.
//!
//! The parent's other premapped areas are unmapped in the child
//! ([`Parent::release`]). Lazy restores do not share (a lazy area's pages
//! arrive later, each task's on its own).

use super::error::{RestoreError, Result, SysContext};
use super::plan::{PageRun, PagesPlan, VmaKind, VmaPlan, MAP_TYPE, PAGE_SIZE};
use super::premap::{segments, Premap};
use super::shared::read_exact_at;
use rustix::fd::OwnedFd;
use std::ffi::c_void;

/// The parent's memory as its child inherited it: the parent's areas and
/// where its premapped copies are (the same addresses in the child).
#[derive(Debug, Clone, Copy)]
pub struct Parent<'a> {
    pub vmas: &'a [VmaPlan],
    pub premap: &'a Premap,
}

/// `MAP_*` bits that must agree for an inherited copy to stand for an area.
const SAME_FLAGS: u32 = MAP_TYPE | (libc::MAP_GROWSDOWN | libc::MAP_NORESERVE | libc::MAP_ANONYMOUS) as u32;

impl Parent<'_> {
    /// Where the inherited copy of the parent's area matching `v` is (same
    /// bounds, both private anonymous with the same mapping flags), if any.
    pub fn inherited(&self, v: &VmaPlan) -> Option<u64> {
        if !matches!(v.kind, VmaKind::Anon | VmaKind::PrivateFile { .. }) {
            return None;
        }
        let i = self.vmas.binary_search_by_key(&v.start, |p| p.start).ok()?;
        let p = &self.vmas[i];
        // A private file area: the same file at the same offset.
        let same = p.end == v.end && p.kind == v.kind && p.pgoff == v.pgoff && (p.flags ^ v.flags) & SAME_FLAGS == 0;
        if !same {
            return None;
        }
        self.premap.placed.iter().find(|pl| pl.vma == i).map(|pl| pl.addr)
    }

    /// Unmaps what is left of the parent's premap area (the copies this
    /// task did not take).
    pub fn release(&self) -> Result<()> {
        // SAFETY: the range is the parent's premap area as this fork
        // inherited it; the copies taken from it were moved out.
        unsafe { rustix::mm::munmap(self.premap.base as *mut c_void, self.premap.len as usize) }
            .sys(|| format!("unmapping the parent's premap area {:#x}+{:#x}", self.premap.base, self.premap.len))
    }
}

/// What [`fill_inherited`] and [`drop_unshared`] did, in pages.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CowStats {
    /// Dumped pages equal to the inherited one: left shared.
    pub shared: u64,
    /// Dumped pages written (different, or not there).
    pub written: u64,
    /// Inherited pages the task has no page for: dropped.
    pub dropped: u64,
}

/// Splits `pages` into the runs inside areas for which `inherited(vma
/// index)` holds and the others (runs may span areas; they are cut at
/// area bounds). Both keep the file order.
pub fn split(pages: &PagesPlan, vmas: &[VmaPlan], inherited: &dyn Fn(usize) -> bool) -> (PagesPlan, PagesPlan) {
    let mut yes = PagesPlan { path: pages.path.clone(), runs: Vec::new() };
    let mut no = PagesPlan { path: pages.path.clone(), runs: Vec::new() };
    for r in &pages.runs {
        let (mut vaddr, end) = (r.vaddr, r.vaddr + r.len());
        let mut i = vmas.partition_point(|v| v.end <= vaddr);
        while vaddr < end {
            // Validated runs lie inside areas; an address outside any goes
            // with the others (and fails there as it always did).
            let (cut, take) = match vmas.get(i).filter(|v| v.start <= vaddr) {
                Some(v) => (v.end.min(end), inherited(i)),
                None => (end, false),
            };
            let piece = PageRun { vaddr, nr_pages: (cut - vaddr) / PAGE_SIZE, file_off: r.file_off + (vaddr - r.vaddr) };
            if take { &mut yes } else { &mut no }.runs.push(piece);
            vaddr = cut;
            i += 1;
        }
    }
    (yes, no)
}

/// Bytes compared per read.
const CHUNK: usize = 1 << 20;

/// Fills inherited areas from `pages` (runs inside them only, see
/// [`split`]) by comparison: each dumped page is read and written only if
/// it differs from the page there (or none is there).
pub fn fill_inherited(pm: &Premap, vmas: &[VmaPlan], pages: &PagesPlan, fd: &OwnedFd, stats: &mut CowStats) -> Result<()> {
    let ps = PAGE_SIZE as usize;
    let segs = segments(pm, vmas, pages)?;
    // No bigger than needed: written right after a fork, every page of it
    // is a copy-on-write fault (a task inheriting little compares little).
    let most = segs.iter().map(|s| s.len as usize).max().unwrap_or(0).min(CHUNK);
    let mut buf = vec![0u8; most];
    let mut resident = vec![0u8; most.div_ceil(ps)];
    for seg in segs {
        let mut done = 0u64;
        while done < seg.len {
            let n = (seg.len - done).min(CHUNK as u64) as usize;
            let (addr, off) = (seg.addr + done, seg.off + done);
            read_exact_at(fd, &mut buf[..n], off).map_err(|e| RestoreError::ImageIo { file: pages.path.clone(), source: e.into() })?;
            // SAFETY: mincore(2) of a premapped range into a vector of one
            // byte per page.
            let r = unsafe { libc::mincore(addr as *mut c_void, n, resident.as_mut_ptr()) };
            if r != 0 {
                return Err(RestoreError::sys(format!("mincore({addr:#x}, {n})"), last_errno()));
            }
            // SAFETY: the range is a premapped area of this task, readable
            // and writable while it is filled; nothing else refers to it.
            let mem = unsafe { std::slice::from_raw_parts_mut(addr as *mut u8, n) };
            for (k, (want, have)) in buf[..n].chunks(ps).zip(mem.chunks_mut(ps)).enumerate() {
                if resident[k] & 1 != 0 && want == &*have {
                    stats.shared += 1;
                } else {
                    have.copy_from_slice(want);
                    stats.written += 1;
                }
            }
            done += n as u64;
        }
    }
    Ok(())
}

/// Drops the pages of inherited area `vma` (premapped at `addr`) that none
/// of `sources` holds a page for.
pub fn drop_unshared(addr: u64, vma: &VmaPlan, sources: &[&PagesPlan], stats: &mut CowStats) -> Result<()> {
    let pages = (vma.len() / PAGE_SIZE) as usize;
    let mut keep = vec![false; pages];
    for r in sources.iter().flat_map(|p| &p.runs) {
        let (a, b) = (r.vaddr.max(vma.start), (r.vaddr + r.len()).min(vma.end));
        for pg in (a..b).step_by(PAGE_SIZE as usize) {
            keep[((pg - vma.start) / PAGE_SIZE) as usize] = true;
        }
    }
    let mut resident = vec![0u8; pages];
    // SAFETY: mincore(2) of the premapped area into one byte per page.
    if unsafe { libc::mincore(addr as *mut c_void, vma.len() as usize, resident.as_mut_ptr()) } != 0 {
        return Err(RestoreError::sys(format!("mincore({addr:#x}, {:#x})", vma.len()), last_errno()));
    }
    let mut k = 0;
    while k < pages {
        if keep[k] || resident[k] & 1 == 0 {
            k += 1;
            continue;
        }
        let first = k;
        while k < pages && !keep[k] && resident[k] & 1 != 0 {
            k += 1;
        }
        let (at, len) = (addr + first as u64 * PAGE_SIZE, (k - first) * PAGE_SIZE as usize);
        // SAFETY: pages of this task's premapped area that must read as
        // zero or as the file (the task had no page of its own there).
        unsafe { rustix::mm::madvise(at as *mut c_void, len, rustix::mm::Advice::LinuxDontNeed) }
            .sys(|| format!("MADV_DONTNEED({at:#x}, {len:#x})"))?;
        stats.dropped += (k - first) as u64;
    }
    Ok(())
}

fn last_errno() -> rustix::io::Errno {
    rustix::io::Errno::from_io_error(&std::io::Error::last_os_error()).unwrap_or(rustix::io::Errno::INVAL)
}
