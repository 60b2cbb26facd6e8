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
//! built of small pages; the converted memory is plain anonymous memory in
//! copy areas placed at the region's offset within a 2 MiB page, and a VMA
//! advised `MADV_HUGEPAGE` is advised so again after the switch (tested:
//! `hg` in its `VmFlags`), so khugepaged collapses it as it would the
//! original. The copy goes into huge pages (made by `MADV_COLLAPSE`, so
//! the VMA's flags stay as they were) while they are the faster kind to
//! fill, small pages while the kernel must compact memory for each huge
//! page ([`convert`]'s `PageChoice`).
//!
//! In a tree, each task maps its own image: children do not take their
//! parent's memory copy-on-write as they do otherwise ([`super::cow`]).
//!
//! The images must stay as they are until the conversion ends. Bad input,
//! and what happens (each tested in `criu-cli/tests/mmap_image.rs`):
//! - a pages image shorter than its pagemap says: refused before the
//!   restore, with nothing made (the load checks the sizes);
//! - an image on a file system that cannot `mmap` it: read instead (the
//!   read fallback above, as without the option);
//! - a pages image truncated under the running process, before the
//!   conversion copied the cut part: the process takes `SIGBUS` on its next
//!   touch of a cut page, as with any mapped file (the restore's watch,
//!   `--watch`, reports it with the address and the image's VMA); the
//!   bytes are gone, so no fallback can bring them back, and a conversion
//!   running then stops with an error naming the chunk (its copy of the
//!   cut pages fails). criu-rs cannot stop someone from truncating a file
//!   after the restore.
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

/// Below this many bytes left to read after [`map_from_image`], the read
/// is done without the fill's helper thread: starting and joining a thread
/// costs more than reading a few hundred KiB (on a loaded machine the new
/// thread can wait milliseconds for a CPU), and the restore's time to
/// return is what this mode is for.
pub const READ_ALONE: u64 = 32 << 20;

/// Whether the fill of `rest` (what [`map_from_image`] left) is worth a
/// helper thread.
pub fn read_with_helper(rest: &PagesPlan) -> bool {
    rest.runs.iter().map(PageRun::len).sum::<u64>() >= READ_ALONE
}

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::restore::maps::read_maps;
    use crate::restore::premap::{finish, premap_here};

    /// The u32 at the start of page `k` of a test pages file.
    fn word(k: u64) -> u32 {
        (k as u32).wrapping_mul(2654435761) | 1
    }

    fn page(k: u64) -> Vec<u8> {
        let mut p = vec![0u8; PAGE_SIZE as usize];
        p[..4].copy_from_slice(&word(k).to_le_bytes());
        p
    }

    fn vma(start: u64, pages: u64) -> Vec<VmaPlan> {
        vec![VmaPlan { start, end: start + pages * PAGE_SIZE, pgoff: 0, prot: 3, flags: 0x22, madv: 0, lock_on_fault: false, kind: VmaKind::Anon }]
    }

    /// Page `k` of the premapped VMA holds `word(k)` (or zero).
    fn head(base: u64, k: u64) -> u32 {
        // SAFETY: reading the readable VMA the test premapped.
        unsafe { std::ptr::read((base + k * PAGE_SIZE) as *const u32) }
    }

    #[test]
    fn long_stretches_are_mapped_from_the_image_short_ones_read() {
        let dir = std::env::temp_dir().join(format!("criu-rs-image-map-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("pages-1.img");
        let t = 0x5600_0000_0000u64;
        // (first page, pages): too short to map, long enough.
        let runs_at = [(2u64, 3u64), (40, 100)];
        let (mut data, mut runs) = (Vec::new(), Vec::new());
        for &(first, n) in &runs_at {
            runs.push(PageRun { vaddr: t + first * PAGE_SIZE, nr_pages: n, file_off: data.len() as u64 });
            (first..first + n).for_each(|k| data.extend(page(k)));
        }
        std::fs::write(&path, &data).unwrap();
        let vmas = vma(t, 200);
        let pages = PagesPlan { path: path.clone(), runs };
        let (pm, fd) = premap_here(&vmas, &path);
        let mut budget = MAX_MAPPED;
        let m = map_from_image(&pm, &vmas, &pages, &fd, &mut budget).unwrap();
        assert_eq!((m.count, m.bytes, budget), (1, 100 * PAGE_SIZE, MAX_MAPPED - 1));
        assert_eq!(m.rest.runs, vec![pages.runs[0]]);
        super::super::fill::fill(&pm, &vmas, &m.rest, &fd, &[]).unwrap();
        finish(&pm, &vmas).unwrap();
        let base = pm.placed[0].addr;
        for k in 0..200 {
            let present = runs_at.iter().any(|&(first, n)| (first..first + n).contains(&k));
            assert_eq!(head(base, k), if present { word(k) } else { 0 }, "page {k}");
        }
        let maps = read_maps(None).unwrap();
        let mapped: Vec<_> = maps.iter().filter(|m| m.name == path.to_str().unwrap()).map(|m| (m.start, m.end)).collect();
        assert_eq!(mapped, vec![(base + 40 * PAGE_SIZE, base + 140 * PAGE_SIZE)]);
        // SAFETY: unmapping the area this test mapped.
        unsafe { rustix::mm::munmap(pm.base as *mut c_void, pm.len as usize) }.unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_image_that_cannot_be_mapped_is_read_instead() {
        // /proc/self/mem reads at any offset (an address) but has no mmap:
        // the "pages file" is a buffer of this process.
        let n = 64u64;
        let buf: Vec<u8> = (0..(n + 1) * PAGE_SIZE).map(|i| (i % 251) as u8 | 1).collect();
        let off = (buf.as_ptr() as u64).next_multiple_of(PAGE_SIZE);
        let first = (off - buf.as_ptr() as u64) / PAGE_SIZE;
        let path = std::path::PathBuf::from("/proc/self/mem");
        let t = 0x5700_0000_0000u64;
        let vmas = vma(t, n);
        let pages = PagesPlan { path: path.clone(), runs: vec![PageRun { vaddr: t, nr_pages: n, file_off: off }] };
        let (pm, fd) = premap_here(&vmas, &path);
        let mut budget = MAX_MAPPED;
        let m = map_from_image(&pm, &vmas, &pages, &fd, &mut budget).unwrap();
        assert_eq!((m.count, m.bytes), (0, 0));
        assert_eq!(m.rest.runs, pages.runs);
        super::super::fill::fill(&pm, &vmas, &m.rest, &fd, &[]).unwrap();
        let base = pm.placed[0].addr;
        // Page k of the VMA holds what the buffer holds at `off` + k pages
        // (never zero).
        for k in 0..n {
            // SAFETY: reading the buffer, alive until the end of the test.
            let want = unsafe { std::ptr::read((off + k * PAGE_SIZE) as *const u32) };
            assert_eq!(head(base, k), want, "page {k} (buffer page {})", first + k);
            assert_ne!(want, 0);
        }
        assert!(read_maps(None).unwrap().iter().all(|m| m.name != "/proc/self/mem"));
        drop(buf);
        // SAFETY: unmapping the area this test mapped.
        unsafe { rustix::mm::munmap(pm.base as *mut c_void, pm.len as usize) }.unwrap();
    }
}
