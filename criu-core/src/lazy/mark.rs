//! Turning a local dump into one for lazy restore: the pagemap entries of
//! memory that may be served lazily are flagged `LAZY` and keep `PRESENT`
//! (their data stays in `pages-N.img`, where `criu-rs lazy-pages` reads it).
//! Which memory qualifies is what `dump --lazy-pages` holds back: private
//! anonymous, not locked, not `[vdso]`/`[vvar]`/`[vsyscall]`.
//!
//! This rewrites `pagemap-PID.img` in place; benchmarks and tests use it to
//! get lazy images from a plain dump.

use crate::images::consts::pagemap_flags;
use crate::images::pb::{MmEntry, PagemapEntry, PagemapHead, VmaEntry};
use crate::images::{ImageDir, ImageError, ImageKind, PAGE_SIZE};

/// Whether the pages of `v` may be restored lazily (the dump's rule,
/// [`vma_can_be_lazy`](crate::dump::remote::vma_can_be_lazy)).
pub fn entry_can_be_lazy(v: &VmaEntry) -> bool {
    crate::dump::remote::vma_can_be_lazy(v.status.unwrap_or_default(), v.flags.unwrap_or_default())
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
        if vmas.all(entry_can_be_lazy) {
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
