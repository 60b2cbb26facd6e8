//! `/proc/PID/pagemap`: which pages of an area are present or swapped.

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

/// Whether a page with this pagemap entry holds data worth dumping.
pub fn is_populated(entry: u64) -> bool {
    entry & (PM_PRESENT | PM_SWAP) != 0
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
        // SAFETY: unmapping what we mapped.
        unsafe { libc::munmap(p, len) };
    }
}
