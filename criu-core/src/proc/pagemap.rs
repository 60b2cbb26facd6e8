//! `/proc/PID/pagemap`: which pages of an area are present or swapped.
//!
//! Two ways to ask: reading the 8-byte entry of every page, or the
//! `PAGEMAP_SCAN` ioctl (Linux 6.7+), which returns only the ranges that
//! match and can leave out pages mapped to the shared zero page; it makes
//! huge sparse areas cheap.

use super::{ProcError, Result};
use std::os::unix::fs::FileExt;

/// Page size (x86_64).
pub const PAGE_SIZE: u64 = 4096;
/// Pagemap entry bit: page present in RAM.
pub const PM_PRESENT: u64 = 1 << 63;
/// Pagemap entry bit: page swapped out.
pub const PM_SWAP: u64 = 1 << 62;
/// Pagemap entry bit: file page or shared anonymous page.
pub const PM_FILE: u64 = 1 << 61;
/// The page is in a guard region (`MADV_GUARD_INSTALL`; since 6.15).
pub const PM_GUARD_REGION: u64 = 1 << 58;

/// An open `/proc/PID/pagemap`.
pub struct Pagemap {
    file: std::fs::File,
    path: std::path::PathBuf,
}

impl Pagemap {
    /// Opens `/proc/PID/pagemap`.
    pub fn open(pid: i32) -> Result<Self> {
        let path = super::path(pid, "pagemap");
        let file = std::fs::File::open(&path).map_err(|source| ProcError::Io { path: path.clone(), source })?;
        Ok(Pagemap { file, path })
    }

    /// Reads the entries for the pages of `[start, end)` into `out` (cleared first).
    pub fn read(&self, start: u64, end: u64, out: &mut Vec<u64>) -> Result<()> {
        let n = ((end - start) / PAGE_SIZE) as usize;
        out.clear();
        out.resize(n, 0);
        // SAFETY: a Vec<u64> of n elements is n*8 initialised bytes; viewing
        // them as bytes is sound (u8 has no alignment or validity constraints).
        let bytes = unsafe { std::slice::from_raw_parts_mut(out.as_mut_ptr().cast::<u8>(), n * 8) };
        self.file
            .read_exact_at(bytes, start / PAGE_SIZE * 8)
            .map_err(|source| ProcError::Io { path: self.path.clone(), source })
    }
}

/// `PAGEMAP_SCAN`: `_IOWR('f', 16, struct pm_scan_arg)`.
const PAGEMAP_SCAN: libc::c_ulong = 0xc060_6610;
/// Category: written since write protection was last set (a page without
/// the userfaultfd write-protect bit).
const PAGE_IS_WRITTEN: u64 = 1 << 1;
/// `PAGEMAP_SCAN` flag: write-protect the matching pages (async uffd-wp).
const PM_SCAN_WP_MATCHING: u64 = 1 << 0;
/// `PAGEMAP_SCAN` flag: fail with `EPERM` on areas not registered for
/// async write-protection.
const PM_SCAN_CHECK_WPASYNC: u64 = 1 << 1;
/// Category: file page or shared anonymous page (not a private copy).
const PAGE_IS_FILE: u64 = 1 << 2;
/// Category: page present.
const PAGE_IS_PRESENT: u64 = 1 << 3;
/// Category: page swapped out.
const PAGE_IS_SWAPPED: u64 = 1 << 4;
/// Category: page is the shared zero page.
const PAGE_IS_PFNZERO: u64 = 1 << 5;
/// `PAGE_IS_GUARD`: a page of a guard region (`MADV_GUARD_INSTALL`, 6.14).
const PAGE_IS_GUARD: u64 = 1 << 8;

/// `struct pm_scan_arg`.
#[repr(C)]
#[derive(Default)]
struct PmScanArg {
    size: u64,
    flags: u64,
    start: u64,
    end: u64,
    walk_end: u64,
    vec: u64,
    vec_len: u64,
    max_pages: u64,
    category_inverted: u64,
    category_mask: u64,
    category_anyof_mask: u64,
    return_mask: u64,
}

/// `struct page_region`.
#[repr(C)]
#[derive(Default, Clone, Copy)]
struct PageRegion {
    start: u64,
    end: u64,
    categories: u64,
}

impl Pagemap {
    /// `ioctl(pagemap, PAGEMAP_SCAN, &arg)`: appends to `out` the ranges of
    /// `[start, end)` whose pages are present or swapped and not the shared
    /// zero page nor guard markers (nor, with `exclude_file`, page-cache
    /// pages not yet copied on write). Returns false when the kernel lacks the ioctl (then use
    /// [`Pagemap::read`]).
    pub fn scan(&self, start: u64, end: u64, exclude_file: bool, out: &mut Vec<(u64, u64)>) -> Result<bool> {
        // Guard markers are swap entries to the kernel: left out (a kernel
        // that does not know PAGE_IS_GUARD refuses the mask: then `read`).
        let not = PAGE_IS_PFNZERO | PAGE_IS_GUARD | if exclude_file { PAGE_IS_FILE } else { 0 };
        let query = PmScanArg {
            category_inverted: not,
            category_mask: not,
            category_anyof_mask: PAGE_IS_PRESENT | PAGE_IS_SWAPPED,
            return_mask: PAGE_IS_PRESENT | PAGE_IS_SWAPPED,
            ..Default::default()
        };
        self.scan_or_absent(start, end, query, out)
    }

    /// `ioctl(pagemap, PAGEMAP_SCAN, &arg)`: appends to `out` the ranges of
    /// `[start, end)` whose pages are present, not page-cache pages and not
    /// the shared zero page: in a private file mapping, the pages the
    /// process copied on write. Unlike [`Pagemap::scan`] it leaves out
    /// swap entries, which include the markers of asynchronous
    /// write-protection on unpopulated pages. Returns false when the kernel
    /// lacks the ioctl.
    pub fn scan_present_private(&self, start: u64, end: u64, out: &mut Vec<(u64, u64)>) -> Result<bool> {
        let not = PAGE_IS_PFNZERO | PAGE_IS_FILE;
        let query = PmScanArg {
            category_inverted: not,
            category_mask: not | PAGE_IS_PRESENT,
            return_mask: PAGE_IS_PRESENT,
            ..Default::default()
        };
        self.scan_or_absent(start, end, query, out)
    }

    /// `ioctl(pagemap, PAGEMAP_SCAN, &arg)` for `PAGE_IS_GUARD`: appends
    /// to `out` the guard regions (`MADV_GUARD_INSTALL`) of `[start, end)`.
    /// Returns false when the kernel cannot report them (before 6.14; it
    /// then rejects the category).
    pub fn scan_guards(&self, start: u64, end: u64, out: &mut Vec<(u64, u64)>) -> Result<bool> {
        let query = PmScanArg { category_mask: PAGE_IS_GUARD, return_mask: PAGE_IS_GUARD, ..Default::default() };
        self.scan_or_absent(start, end, query, out)
    }

    /// `ioctl(pagemap, PAGEMAP_SCAN, &arg)` with `PM_SCAN_WP_MATCHING`:
    /// appends to `out` the ranges of `[start, end)` written since their
    /// last write protection and write-protects them again, so the next
    /// call reports only what is written after this one. `Ok(false)` when
    /// part of the range is not registered for asynchronous
    /// write-protection (nothing can be said about it).
    pub fn scan_written(&self, start: u64, end: u64, out: &mut Vec<(u64, u64)>) -> Result<bool> {
        let query = PmScanArg {
            flags: PM_SCAN_WP_MATCHING | PM_SCAN_CHECK_WPASYNC,
            category_mask: PAGE_IS_WRITTEN,
            return_mask: PAGE_IS_WRITTEN,
            ..Default::default()
        };
        match self.scan_with(start, end, query, out) {
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => Ok(false),
            Err(source) => Err(ProcError::Io { path: self.path.clone(), source }),
            Ok(()) => Ok(true),
        }
    }

    /// `ioctl(pagemap, PAGEMAP_SCAN, &arg)`: appends to `out` the ranges of
    /// `[start, end)` whose pages are present or swapped, not the shared
    /// zero page, and not write-protected by a userfaultfd. `Ok(false)` when
    /// the kernel has no `PAGEMAP_SCAN`.
    pub fn scan_unprotected(&self, start: u64, end: u64, out: &mut Vec<(u64, u64)>) -> Result<bool> {
        let query = PmScanArg {
            category_inverted: PAGE_IS_PFNZERO,
            category_mask: PAGE_IS_WRITTEN | PAGE_IS_PFNZERO,
            category_anyof_mask: PAGE_IS_PRESENT | PAGE_IS_SWAPPED,
            return_mask: PAGE_IS_PRESENT | PAGE_IS_SWAPPED,
            ..Default::default()
        };
        self.scan_or_absent(start, end, query, out)
    }

    /// [`Pagemap::scan_with`], `Ok(false)` when the kernel rejects the
    /// ioctl or a category in `query` before reporting anything (it has no
    /// `PAGEMAP_SCAN`, or not that category), `Ok(true)` once scanned.
    fn scan_or_absent(&self, start: u64, end: u64, query: PmScanArg, out: &mut Vec<(u64, u64)>) -> Result<bool> {
        match self.scan_with(start, end, query, out) {
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOTTY | libc::EINVAL)) && out.is_empty() => Ok(false),
            Err(source) => Err(ProcError::Io { path: self.path.clone(), source }),
            Ok(()) => Ok(true),
        }
    }

    /// Runs `PAGEMAP_SCAN` with `query`'s flags and masks over `[start,
    /// end)`, as many calls as the result vector needs, merging adjacent
    /// ranges into `out`.
    fn scan_with(&self, start: u64, end: u64, query: PmScanArg, out: &mut Vec<(u64, u64)>) -> std::io::Result<()> {
        use std::os::fd::AsRawFd;
        let mut regions = [PageRegion::default(); 512];
        let mut from = start;
        while from < end {
            let mut arg = PmScanArg {
                size: std::mem::size_of::<PmScanArg>() as u64,
                start: from,
                end,
                vec: regions.as_mut_ptr() as u64,
                vec_len: regions.len() as u64,
                ..query
            };
            // SAFETY: arg is a valid pm_scan_arg whose vec points at `regions`
            // with vec_len entries; the kernel writes at most that many.
            let n = unsafe { libc::ioctl(self.file.as_raw_fd(), PAGEMAP_SCAN, &mut arg as *mut PmScanArg) };
            if n < 0 {
                return Err(std::io::Error::last_os_error());
            }
            for r in &regions[..(n as usize).min(regions.len())] {
                match out.last_mut() {
                    Some(last) if last.1 == r.start => last.1 = r.end,
                    _ => out.push((r.start, r.end)),
                }
            }
            if arg.walk_end <= from {
                break;
            }
            from = arg.walk_end;
        }
        Ok(())
    }
}

/// Whether a page with this pagemap entry holds data worth dumping.
pub fn is_populated(entry: u64) -> bool {
    entry & (PM_PRESENT | PM_SWAP) != 0 && entry & PM_GUARD_REGION == 0
}

/// Whether a present page is a file (page-cache) page rather than a private copy.
pub fn is_file_page(entry: u64) -> bool {
    entry & PM_SWAP == 0 && entry & PM_FILE != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sees_touched_and_untouched_pages() {
        let len = 16 * PAGE_SIZE as usize;
        // SAFETY: anonymous private mapping, unmapped at the end of the test.
        let p = unsafe { libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0) };
        assert_ne!(p, libc::MAP_FAILED);
        // SAFETY: offset 3 pages is inside the mapping.
        unsafe { *(p as *mut u8).add(3 * PAGE_SIZE as usize) = 1 };
        let pm = Pagemap::open(std::process::id() as i32).unwrap();
        let mut v = Vec::new();
        pm.read(p as u64, p as u64 + len as u64, &mut v).unwrap();
        assert_eq!(v.len(), 16);
        assert!(is_populated(v[3]));
        assert!(!is_populated(v[2]) && !is_populated(v[4]));
        // PAGEMAP_SCAN sees the same page, and not a page only read (zero page).
        // SAFETY: offset 5 pages is inside the mapping.
        let z = unsafe { std::ptr::read_volatile((p as *const u8).add(5 * PAGE_SIZE as usize)) };
        assert_eq!(z, 0);
        let mut ranges = Vec::new();
        assert!(pm.scan(p as u64, p as u64 + len as u64, true, &mut ranges).unwrap(), "PAGEMAP_SCAN (Linux 6.7+)");
        {
            let a = p as u64 + 3 * PAGE_SIZE;
            assert_eq!(ranges, vec![(a, a + PAGE_SIZE)]);
        }
        // SAFETY: unmapping what we mapped.
        unsafe { libc::munmap(p, len) };
    }
}
