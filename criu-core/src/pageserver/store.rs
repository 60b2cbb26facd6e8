//! Where served pages come from: a [`PageStore`] answers "the bytes of pid
//! P at image address A, length L". [`ImagesStore`] reads an image
//! directory (pagemap + `pages-N.img`), [`MemStore`] holds pages in
//! memory (a dump keeping the memory of a process that has ended).

use std::collections::{BTreeMap, HashMap};
use std::fs::File;

use super::proto::{PageServerError, Result};
use crate::images::consts::pagemap_flags;
use crate::images::pb::{MmEntry, PagemapEntry, PagemapHead, VmaEntry};
use crate::images::{pagemap_error, ImageDir, ImageError, ImageKind, PAGE_SIZE};

/// A source of page data, keyed by image pid and image address.
pub trait PageStore {
    /// The `len` bytes at image address `vaddr` of process `pid`. The range
    /// lies inside one stored entry, or the call fails.
    fn pages(&mut self, pid: u32, vaddr: u64, len: u64) -> Result<&[u8]>;

    /// How many of the `max` bytes from `vaddr` on one [`PageStore::pages`]
    /// call can give (0 when it has not the first page): a GET is answered
    /// with that many (CRIU's page server answers with fewer pages than
    /// asked for at the end of what it has).
    fn available(&mut self, pid: u32, vaddr: u64, max: u64) -> Result<u64>;
}

/// Reads `pagemap-<pid>.img`: its pages id and entries, checked for order and
/// alignment, and against `mm-<pid>.img`'s VMAs when that image exists.
pub fn read_pagemap(dir: &ImageDir, pid: u32) -> Result<(u32, Vec<PagemapEntry>)> {
    let pid64 = u64::from(pid);
    if !dir.exists(ImageKind::Pagemap, pid64) {
        return Err(PageServerError::UnknownPid(pid));
    }
    if dir.exists(ImageKind::Mm, pid64) {
        let mm: MmEntry = dir.read_mm(pid64)?;
        return Ok(dir.read_pagemap(pid64, &mm)?);
    }
    let mut r = dir.open_image(ImageKind::Pagemap, pid64)?;
    let head: PagemapHead = r.read_next()?;
    let entries: Vec<PagemapEntry> = r.read_all()?;
    let all = VmaEntry { start: Some(0), end: Some(!(PAGE_SIZE - 1)), ..Default::default() };
    if let Some(problem) = pagemap_error(std::slice::from_ref(&all), &entries) {
        return Err(ImageError::Inconsistent {
            path: dir.image_path(ImageKind::Pagemap, pid64),
            msg: "pagemap_entry",
            problem,
        }
        .into());
    }
    Ok((head.pages_id(), entries))
}

/// One process's pages in an image directory.
struct PidPages {
    /// (vaddr, len, offset in the pages file) of every PRESENT entry.
    entries: Vec<(u64, u64, u64)>,
    map: Option<Mapping>,
}

/// A read-only mapping of a whole pages file.
struct Mapping {
    ptr: *mut std::ffi::c_void,
    len: usize,
    /// One bit per [`POPULATE_BLOCK`]: its page-table entries are in.
    populated: Vec<u64>,
}

/// The mapping's page-table entries are filled this much at a time: one
/// `madvise` then serves many faults in the block.
const POPULATE_BLOCK: usize = 64 << 10;

// SAFETY: the mapping is read-only and owned; moving it to another thread
// moves the only handle.
unsafe impl Send for Mapping {}

impl Mapping {
    fn map(file: &File, len: usize) -> std::io::Result<Mapping> {
        use rustix::mm::{mmap, MapFlags, ProtFlags};
        // SAFETY: a fresh private read-only mapping of the file at a
        // kernel-chosen address; it replaces nothing.
        let ptr = unsafe { mmap(std::ptr::null_mut(), len, ProtFlags::READ, MapFlags::PRIVATE, file, 0) }?;
        Ok(Mapping { ptr, len, populated: vec![0; len.div_ceil(POPULATE_BLOCK).div_ceil(64)] })
    }

    /// `len` bytes at `off`, their page-table entries populated first (by
    /// whole [`POPULATE_BLOCK`]s, once) so a `UFFDIO_COPY` from them takes
    /// the kernel's fast path.
    fn populated(&mut self, off: usize, len: usize) -> Option<&[u8]> {
        let end = off.checked_add(len).filter(|&e| e <= self.len)?;
        let blocks = off / POPULATE_BLOCK..end.div_ceil(POPULATE_BLOCK);
        let done = |bits: &[u64], b: usize| bits.get(b / 64).is_some_and(|w| w & (1 << (b % 64)) != 0);
        if blocks.clone().any(|b| !done(&self.populated, b)) {
            let from = blocks.start * POPULATE_BLOCK;
            let to = (blocks.end * POPULATE_BLOCK).min(self.len);
            // SAFETY: MADV_POPULATE_READ only faults the range in (no change
            // to its contents); `from..to` is inside our mapping.
            let r = unsafe {
                rustix::mm::madvise((self.ptr as *mut u8).add(from).cast(), to - from, rustix::mm::Advice::LinuxPopulateRead)
            };
            if r.is_ok() {
                for b in blocks {
                    if let Some(w) = self.populated.get_mut(b / 64) {
                        *w |= 1 << (b % 64);
                    }
                }
            }
        }
        // SAFETY: `ptr` maps `self.len` readable bytes until Drop, and
        // `off..end` is inside; the image file is not written while served.
        Some(unsafe { std::slice::from_raw_parts((self.ptr as *const u8).add(off), end - off) })
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly the mapping made in `map`; no slice of it
        // outlives `self`.
        let _ = unsafe { rustix::mm::munmap(self.ptr, self.len) };
    }
}

/// Pages served from an image directory. Each pid's pagemap is read and its
/// pages file mapped on first use; data is handed out straight from the
/// mapping, whose page-table entries are populated block by block first (a
/// `UFFDIO_COPY` from file pages not mapped yet takes the kernel's slow
/// path: it drops its locks, faults the source in and starts over).
pub struct ImagesStore {
    dir: ImageDir,
    pids: HashMap<u32, PidPages>,
}

impl ImagesStore {
    /// A store over `dir`.
    pub fn new(dir: ImageDir) -> Self {
        ImagesStore { dir, pids: HashMap::new() }
    }

    /// The directory.
    pub fn dir(&self) -> &ImageDir {
        &self.dir
    }

    fn load(&mut self, pid: u32) -> Result<&PidPages> {
        if !self.pids.contains_key(&pid) {
            let (pages_id, pm) = read_pagemap(&self.dir, pid)?;
            let mut entries = Vec::new();
            let mut off = 0u64;
            for e in pm.iter().filter(|e| e.flags() & pagemap_flags::PRESENT != 0) {
                let len = e.page_count() * PAGE_SIZE;
                entries.push((e.vaddr(), len, off));
                off += len;
            }
            let path = self.dir.image_path(ImageKind::Pages, u64::from(pages_id));
            let file = self.dir.open_pages(u64::from(pages_id))?;
            let size = file.metadata().map_err(|source| ImageError::Io { path: path.clone(), op: "stat", source })?;
            if size.len() < off {
                return Err(ImageError::Inconsistent {
                    path,
                    msg: "pages",
                    problem: format!("{} bytes, the pagemap needs {off}", size.len()),
                }
                .into());
            }
            let map = if off == 0 {
                None
            } else {
                Some(Mapping::map(&file, off as usize).map_err(PageServerError::Io)?)
            };
            self.pids.insert(pid, PidPages { entries, map });
        }
        self.pids.get(&pid).ok_or(PageServerError::UnknownPid(pid))
    }
}

impl PageStore for ImagesStore {
    fn available(&mut self, pid: u32, vaddr: u64, max: u64) -> Result<u64> {
        self.load(pid)?;
        let p = self.pids.get(&pid).ok_or(PageServerError::UnknownPid(pid))?;
        let i = p.entries.partition_point(|&(v, _, _)| v <= vaddr);
        Ok(i.checked_sub(1).and_then(|i| p.entries.get(i)).map_or(0, |&(v, elen, _)| (v + elen).saturating_sub(vaddr).min(max)))
    }

    fn pages(&mut self, pid: u32, vaddr: u64, len: u64) -> Result<&[u8]> {
        let no = || PageServerError::NoData { pid, vaddr, len };
        self.load(pid)?;
        let p = self.pids.get_mut(&pid).ok_or(PageServerError::UnknownPid(pid))?;
        let i = p.entries.partition_point(|&(v, _, _)| v <= vaddr);
        let &(v, elen, off) = i.checked_sub(1).and_then(|i| p.entries.get(i)).ok_or_else(no)?;
        if vaddr.checked_add(len).is_none_or(|end| end > v + elen) {
            return Err(no());
        }
        p.map.as_mut().and_then(|m| m.populated((off + (vaddr - v)) as usize, len as usize)).ok_or_else(no)
    }
}

/// Pages held in memory, by pid and address (for a dump that keeps the
/// memory of a process to serve it later).
#[derive(Default)]
pub struct MemStore {
    pids: HashMap<u32, BTreeMap<u64, Vec<u8>>>,
}

impl MemStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds whole pages at `vaddr` for `pid` (disjoint from earlier ones).
    pub fn insert(&mut self, pid: u32, vaddr: u64, data: Vec<u8>) {
        self.pids.entry(pid).or_default().insert(vaddr, data);
    }
}

impl PageStore for MemStore {
    fn available(&mut self, pid: u32, vaddr: u64, max: u64) -> Result<u64> {
        let m = self.pids.get(&pid).ok_or(PageServerError::UnknownPid(pid))?;
        Ok(m.range(..=vaddr).next_back().map_or(0, |(&v, data)| (v + data.len() as u64).saturating_sub(vaddr).min(max)))
    }

    fn pages(&mut self, pid: u32, vaddr: u64, len: u64) -> Result<&[u8]> {
        let m = self.pids.get(&pid).ok_or(PageServerError::UnknownPid(pid))?;
        let no = || PageServerError::NoData { pid, vaddr, len };
        let (&v, data) = m.range(..=vaddr).next_back().ok_or_else(no)?;
        let start = (vaddr - v) as usize;
        data.get(start..start + len as usize).ok_or_else(no)
    }
}

/// One pagemap entry to write with [`write_pagemap`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageRun {
    /// Page-aligned start.
    pub vaddr: u64,
    /// Pages.
    pub nr_pages: u64,
    /// `pagemap_entry.flags` (PRESENT runs get their data from `fill`).
    pub flags: u32,
}

/// Writes `pagemap-<pid>.img` (head naming `pages-<pages_id>.img`) and the
/// pages file: `fill(vaddr, buf)` provides the data of PRESENT runs, in
/// blocks of at most 1 MiB.
pub fn write_pagemap(
    dir: &ImageDir,
    pid: u32,
    pages_id: u32,
    runs: &[PageRun],
    fill: &mut dyn FnMut(u64, &mut [u8]),
) -> std::result::Result<(), ImageError> {
    let mut pm = dir.create_image(ImageKind::Pagemap, u64::from(pid))?;
    pm.write_entry(&PagemapHead { pages_id: Some(pages_id) })?;
    let mut pages = dir.create_pages(u64::from(pages_id))?;
    let mut buf = vec![0u8; 1 << 20];
    for r in runs {
        pm.write_entry(&PagemapEntry::new(r.vaddr, r.nr_pages, r.flags))?;
        if r.flags & pagemap_flags::PRESENT == 0 {
            continue;
        }
        let end = r.vaddr + r.nr_pages * PAGE_SIZE;
        let mut at = r.vaddr;
        while at < end {
            let n = ((end - at) as usize).min(buf.len());
            fill(at, &mut buf[..n]);
            pages.write_raw(&buf[..n])?;
            at += n as u64;
        }
    }
    pm.finish()?;
    pages.finish()
}
