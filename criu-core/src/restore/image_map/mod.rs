//! `restore --mmap-page-image`: the restored tasks' private anonymous
//! memory is mapped straight from the pages images, then turned into plain
//! anonymous memory while the tasks run ([`convert`]).
//!
//! # Mapping (before the tasks run)
//!
//! The pages image holds every dumped page at a page-aligned offset
//! (`pages-N.img` is a sequence of whole pages). So a stretch of pages that
//! lies contiguously in memory and in the file can be
//! `mmap(MAP_PRIVATE | MAP_FIXED, pages_fd, off)`'d over its place in the
//! premap area ([`super::premap`]) instead of being read: the restore does
//! no page I/O, and a first touch is a page-cache fault served by the
//! kernel (a write copies the page, as for any private file mapping). The
//! blob moves a premapped VMA made of several kernel VMAs (anonymous holes
//! and file pieces) with one `mremap`, which kernels from 6.17 on accept for
//! a fixed move of several VMAs.
//!
//! Mapped: stretches of at least [`MIN_MAPPED`] bytes in private anonymous
//! VMAs, at most [`MAX_MAPPED`] per task (each is a VMA; a process has at
//! most `vm.max_map_count` of them). Read as without the option
//! ([`super::fill`]): smaller stretches, file-backed private VMAs (their
//! pages are few: relocated data), grows-down VMAs (the main stack grows
//! from its VMA) and VMAs advised `MADV_WIPEONFORK` (refused on a file
//! mapping). A pages image on a filesystem that cannot be mapped (the
//! `mmap` fails) is read instead, stretch by stretch: the read fallback.
//! Images of a pre-dump chain map each page from the image that holds it
//! (the parent's `pages-N.img` too). Huge pages: a private file mapping is
//! built of small pages; the converted memory is plain anonymous memory,
//! which the kernel backs with huge pages as for any other (the VMA's
//! `MADV_HUGEPAGE` is kept).
//!
//! In a tree, each task maps its own image: children do not take their
//! parent's memory copy-on-write as they do otherwise ([`super::cow`]).
//!
//! The images must stay as they are until the conversion ends: a pages
//! image truncated under the running process (before the conversion copied
//! the truncated part) makes the process take `SIGBUS` on its next touch of
//! the cut pages, as with any mapped file, and the conversion stops with an
//! error naming the region (reading it fails). criu-rs checks the image
//! sizes before the restore (a short image is refused then, with nothing
//! made); it cannot stop someone from truncating them afterwards.
//!
//! # Conversion (while the tasks run)
//!
//! See [`convert`]: each region is copied into fresh anonymous memory in
//! the task while the task runs, the pages written meanwhile are found with
//! `PAGEMAP_SCAN`, and a short ptrace stop copies those again and `mremap`s
//! the copy over the region.

pub mod convert;

use super::error::Result;
use super::plan::{PageRun, PagesPlan, VmaKind, VmaPlan, PAGE_SIZE};
use super::premap::{segments, Premap};
use rustix::fd::OwnedFd;
use rustix::mm::{MapFlags, ProtFlags};
use std::ffi::c_void;

/// Smallest stretch mapped from the image; smaller ones are read.
pub const MIN_MAPPED: u64 = 16 * PAGE_SIZE;
/// Most stretches mapped from the images per task.
pub const MAX_MAPPED: usize = 8192;

/// What [`map_from_image`] did: the stretches left to read and the bytes
/// mapped.
#[derive(Debug)]
pub struct Mapped {
    /// The runs of the pages image still to be filled by reading.
    pub rest: PagesPlan,
    /// Stretches mapped, and their bytes.
    pub count: usize,
    pub bytes: u64,
}

/// Maps every eligible stretch of `pages` (see the module doc) from `fd`
/// over its place in the premap area; `budget` is how many more stretches
/// this task may map (lowered by the count mapped). A stretch whose `mmap`
/// fails is put back as anonymous memory and left to be read, and so is
/// every later one of this image.
pub fn map_from_image(pm: &Premap, vmas: &[VmaPlan], pages: &PagesPlan, fd: &OwnedFd, budget: &mut usize) -> Result<Mapped> {
    let mut rest = PagesPlan { path: pages.path.clone(), runs: Vec::new() };
    let (mut count, mut bytes) = (0usize, 0u64);
    let mut mappable = true;
    for s in segments(pm, vmas, pages)? {
        let v = &vmas[s.index];
        let eligible = s.anon
            && v.kind == VmaKind::Anon
            && s.len >= MIN_MAPPED
            && !v.grows_down()
            && v.madv & (1 << libc::MADV_WIPEONFORK) == 0
            && *budget > 0;
        if mappable && eligible {
            // SAFETY: the stretch lies inside a VMA premapped by this
            // restore, which nothing else uses; a private mapping never
            // writes the file.
            let got = unsafe {
                rustix::mm::mmap(s.addr as *mut c_void, s.len as usize, ProtFlags::READ | ProtFlags::WRITE, MapFlags::PRIVATE | MapFlags::FIXED, fd, s.off)
            };
            if got.is_ok() {
                *budget -= 1;
                count += 1;
                bytes += s.len;
                continue;
            }
            // A failed MAP_FIXED may have dropped the range: make it
            // anonymous memory again, then read it.
            mappable = false;
            // SAFETY: as above.
            unsafe { rustix::mm::mmap_anonymous(s.addr as *mut c_void, s.len as usize, ProtFlags::READ | ProtFlags::WRITE, MapFlags::PRIVATE | MapFlags::FIXED) }
                .map_err(|e| super::error::RestoreError::sys(format!("mapping {:#x}+{:#x} back after a failed image mmap", s.vaddr, s.len), e))?;
        }
        rest.runs.push(PageRun { vaddr: s.vaddr, nr_pages: s.len / PAGE_SIZE, file_off: s.off });
    }
    Ok(Mapped { rest, count, bytes })
}
