//! Turning a local dump into one for lazy restore: the pagemap entries of
//! memory that may be served lazily are flagged `LAZY` and keep `PRESENT`
//! (their data stays in `pages-N.img`, where `criu-rs lazy-pages` reads it).
//! Which memory qualifies is what `dump --lazy-pages` holds back: private
//! anonymous, not locked, not `[vdso]`/`[vvar]`/`[vsyscall]`.
//!
//! This rewrites `pagemap-PID.img` in place; benchmarks and tests use it to
//! get lazy images from a plain dump.

use crate::images::consts::{pagemap_flags, vma_status as st};
use crate::images::pb::{MmEntry, PagemapEntry, PagemapHead, VmaEntry};
use crate::images::{ImageDir, ImageError, ImageKind, PAGE_SIZE};

/// `MAP_LOCKED` in `vma_entry.flags`.
const MAP_LOCKED: u32 = 0x2000;

/// Whether the pages of `v` may be restored lazily.
pub fn vma_can_be_lazy(v: &VmaEntry) -> bool {
    let status = v.status.unwrap_or_default();
    status & st::ANON_PRIVATE != 0
        && status & (st::AREA_VDSO | st::AREA_VVAR | st::AREA_VSYSCALL) == 0
        && v.flags.unwrap_or_default() & MAP_LOCKED == 0
}

/// Flags `LAZY` every entry of `pagemap-PID.img` in `dir` that lies in
/// memory that may be lazy (an entry spanning VMAs only if all qualify).
/// Returns the number of lazy pages.
pub fn mark_lazy(dir: &ImageDir, pid: u32) -> Result<u64, ImageError> {
    let id = u64::from(pid);
    let mm: MmEntry = dir.read_mm(id)?;
    let (pages_id, mut entries) = dir.read_pagemap(id, &mm)?;
    let mut lazy = 0;
    for e in &mut entries {
        let start = e.vaddr.unwrap_or_default();
        let end = start + e.page_count() * PAGE_SIZE;
        let mut vmas = mm.vmas.iter().filter(|v| v.start.unwrap_or_default() < end && v.end.unwrap_or_default() > start);
        if vmas.all(vma_can_be_lazy) {
            e.flags = Some(e.flags.unwrap_or(pagemap_flags::PRESENT) | pagemap_flags::LAZY);
            lazy += e.page_count();
        }
    }
    let mut w = dir.create_image(ImageKind::Pagemap, id)?;
    w.write_entry(&PagemapHead { pages_id: Some(pages_id) })?;
    for e in &entries {
        w.write_entry::<PagemapEntry>(e)?;
    }
    w.finish()?;
    Ok(lazy)
}
