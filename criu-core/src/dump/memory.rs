//! Copying the populated pages of private areas into the pages image.
//!
//! For each area, `/proc/PID/pagemap` tells which pages were ever touched
//! (present or swapped); those are read in large batches with one
//! `process_vm_readv` per batch (many iovecs), all-zero anonymous pages are
//! dropped, and the rest is appended to the pages file while the pagemap
//! entries are recorded. Areas without read permission are read through
//! `/proc/PID/mem`, which may read them on behalf of a tracer.

use super::model::{PagemapEntry, Vma, PE_PRESENT};
use super::DumpError;
use crate::proc::pagemap::{is_populated, Pagemap, PAGE_SIZE};
use std::io::{IoSlice, IoSliceMut, Write};
use std::os::unix::fs::FileExt;

/// Bytes read per batch.
const BATCH: usize = 64 << 20;
/// Most iovecs in one `process_vm_readv` call (`IOV_MAX`).
const IOV_MAX: usize = 1024;

/// Counters for the stats image and the log.
#[derive(Debug, Clone, Copy, Default)]
pub struct MemStats {
    /// Pages looked at (populated).
    pub pages_scanned: u64,
    /// Pages left out because they were all zeros.
    pub pages_skipped_zero: u64,
    /// Pages written.
    pub pages_written: u64,
    /// Time spent reading the process's memory.
    pub read_time: std::time::Duration,
    /// Time spent writing the pages image (including zero checks).
    pub write_time: std::time::Duration,
}

/// A run of populated pages: (address, number of pages).
type Run = (u64, usize);

/// Appends runs of populated pages in `[start, end)` to `runs`.
fn populated_runs(pm: &Pagemap, start: u64, end: u64, scratch: &mut Vec<u64>, runs: &mut Vec<Run>) -> Result<(), DumpError> {
    pm.read(start, end, scratch)?;
    let mut i = 0;
    while i < scratch.len() {
        if !is_populated(scratch[i]) {
            i += 1;
            continue;
        }
        let j = scratch[i..].iter().position(|e| !is_populated(*e)).map_or(scratch.len(), |p| i + p);
        runs.push((start + i as u64 * PAGE_SIZE, j - i));
        i = j;
    }
    Ok(())
}

fn is_zero(page: &[u8]) -> bool {
    let (pre, mid, post) = {
        // SAFETY: u64 has no invalid bit patterns; align_to gives the aligned middle part.
        unsafe { page.align_to::<u64>() }
    };
    pre.iter().all(|b| *b == 0) && post.iter().all(|b| *b == 0) && mid.iter().fold(0, |a, w| a | w) == 0
}

/// The state of one dump of private memory.
pub struct MemoryDumper<'a> {
    pid: i32,
    out: &'a mut std::fs::File,
    buf: Vec<u8>,
    mem: Option<std::fs::File>,
    /// The entries written so far (adjacent runs merged).
    pub entries: Vec<PagemapEntry>,
    /// Counters.
    pub stats: MemStats,
    /// Called after each batch with the bytes written so far; an error aborts.
    pub on_batch: Option<Box<dyn FnMut(u64) -> Result<(), DumpError> + 'a>>,
}

impl<'a> MemoryDumper<'a> {
    /// Prepares to dump `pid`'s memory into `out` (the pages image).
    pub fn new(pid: i32, out: &'a mut std::fs::File) -> Self {
        MemoryDumper { pid, out, buf: Vec::new(), mem: None, entries: Vec::new(), stats: MemStats::default(), on_batch: None }
    }

    fn record(&mut self, vaddr: u64, nr: usize) {
        if let Some(last) = self.entries.last_mut() {
            if last.vaddr + last.nr_pages as u64 * PAGE_SIZE == vaddr && (last.nr_pages as usize + nr) <= u32::MAX as usize {
                last.nr_pages += nr as u32;
                return;
            }
        }
        self.entries.push(PagemapEntry { vaddr, nr_pages: nr as u32, flags: PE_PRESENT });
    }

    /// Reads the runs into the buffer (which must be large enough).
    fn read_runs(&mut self, runs: &[Run], readable: bool) -> Result<(), DumpError> {
        let total: usize = runs.iter().map(|r| r.1 * PAGE_SIZE as usize).sum();
        if readable {
            let mut done = 0usize;
            for chunk in runs.chunks(IOV_MAX) {
                let bytes: usize = chunk.iter().map(|r| r.1 * PAGE_SIZE as usize).sum();
                let remote: Vec<nix::sys::uio::RemoteIoVec> = chunk
                    .iter()
                    .map(|r| nix::sys::uio::RemoteIoVec { base: r.0 as usize, len: r.1 * PAGE_SIZE as usize })
                    .collect();
                let n = nix::sys::uio::process_vm_readv(
                    nix::unistd::Pid::from_raw(self.pid),
                    &mut [IoSliceMut::new(&mut self.buf[done..done + bytes])],
                    &remote,
                )
                .map_err(|e| DumpError::Memory { addr: chunk[0].0, errno: e })?;
                if n != bytes {
                    // A short read means a page vanished under us: not possible
                    // while frozen unless the area was unreadable after all.
                    return Err(DumpError::Memory { addr: chunk[0].0, errno: nix::errno::Errno::EFAULT });
                }
                done += bytes;
            }
        } else {
            if self.mem.is_none() {
                let path = crate::proc::path(self.pid, "mem");
                self.mem = Some(std::fs::File::open(&path).map_err(|source| crate::proc::ProcError::Io { path, source })?);
            }
            let mem = self.mem.as_ref().ok_or(DumpError::Internal("no /proc/PID/mem"))?;
            let mut done = 0usize;
            for &(addr, nr) in runs {
                let len = nr * PAGE_SIZE as usize;
                mem.read_exact_at(&mut self.buf[done..done + len], addr)
                    .map_err(|e| DumpError::Memory { addr, errno: nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)) })?;
                done += len;
            }
        }
        debug_assert_eq!(runs.iter().map(|r| r.1).sum::<usize>() * PAGE_SIZE as usize, total);
        Ok(())
    }

    /// Writes the pages of the runs now in the buffer, leaving out zero pages
    /// when `skip_zero`.
    fn write_runs(&mut self, runs: &[Run], skip_zero: bool) -> Result<(), DumpError> {
        let ps = PAGE_SIZE as usize;
        // Collect (buffer offset, len, vaddr) pieces of non-zero pages.
        let mut pieces: Vec<(usize, usize, u64)> = Vec::new();
        let mut off = 0usize;
        for &(addr, nr) in runs {
            for p in 0..nr {
                let o = off + p * ps;
                self.stats.pages_scanned += 1;
                if skip_zero && is_zero(&self.buf[o..o + ps]) {
                    self.stats.pages_skipped_zero += 1;
                    continue;
                }
                let va = addr + (p * ps) as u64;
                match pieces.last_mut() {
                    Some(last) if last.0 + last.1 == o && last.2 + last.1 as u64 == va => last.1 += ps,
                    _ => pieces.push((o, ps, va)),
                }
            }
            off += nr * ps;
        }
        for &(_, len, va) in &pieces {
            self.record(va, len / ps);
            self.stats.pages_written += (len / ps) as u64;
        }
        for group in pieces.chunks(IOV_MAX) {
            let mut slices: Vec<IoSlice> = group.iter().map(|&(o, l, _)| IoSlice::new(&self.buf[o..o + l])).collect();
            let mut slices = &mut slices[..];
            while !slices.is_empty() {
                let n = self.out.write_vectored(slices).map_err(DumpError::WritePages)?;
                if n == 0 {
                    return Err(DumpError::WritePages(std::io::ErrorKind::WriteZero.into()));
                }
                IoSlice::advance_slices(&mut slices, n);
            }
        }
        Ok(())
    }

    /// Dumps the populated pages of one area.
    pub fn dump_vma(&mut self, pm: &Pagemap, vma: &Vma) -> Result<(), DumpError> {
        if !vma.dumps_private_pages() {
            return Ok(());
        }
        let mut scratch = Vec::new();
        let mut start = vma.map.start;
        while start < vma.map.end {
            let end = (start + BATCH as u64).min(vma.map.end);
            let mut runs = Vec::new();
            populated_runs(pm, start, end, &mut scratch, &mut runs)?;
            if !runs.is_empty() {
                let bytes = runs.iter().map(|r| r.1).sum::<usize>() * PAGE_SIZE as usize;
                if self.buf.len() < bytes {
                    self.buf.resize(bytes, 0);
                }
                let t = std::time::Instant::now();
                self.read_runs(&runs, vma.map.read)?;
                let t2 = std::time::Instant::now();
                self.write_runs(&runs, vma.zero_pages_implicit())?;
                self.stats.read_time += t2 - t;
                self.stats.write_time += t2.elapsed();
                let written = self.stats.pages_written * PAGE_SIZE;
                if let Some(cb) = self.on_batch.as_mut() {
                    cb(written)?;
                }
            }
            start = end;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_detection() {
        let mut p = vec![0u8; 4096];
        assert!(is_zero(&p));
        p[4095] = 1;
        assert!(!is_zero(&p));
        p[4095] = 0;
        p[1] = 1;
        assert!(!is_zero(&p[1..]));
    }
}

/// `lseek(fd, off, whence)` for SEEK_DATA / SEEK_HOLE; None at end of file.
fn seek_data_hole(fd: &std::fs::File, off: u64, whence: libc::c_int) -> Result<Option<u64>, std::io::Error> {
    use std::os::fd::AsRawFd;
    // SAFETY: lseek on a descriptor we own; no memory is passed.
    let r = unsafe { libc::lseek(fd.as_raw_fd(), off as libc::off_t, whence) };
    if r < 0 {
        let e = std::io::Error::last_os_error();
        return if e.raw_os_error() == Some(libc::ENXIO) { Ok(None) } else { Err(e) };
    }
    Ok(Some(r as u64))
}

/// Dumps the contents of a shared anonymous memory object (read through
/// `/proc/PID/map_files/START-END`, which opens the object itself, so pages
/// other processes touched are included). Holes are skipped with
/// `SEEK_DATA`/`SEEK_HOLE`, zero pages are left out. Returns the pagemap
/// entries; as in CRIU's shmem pagemaps their `vaddr` is the offset in the
/// object, not an address.
pub fn dump_shmem(
    pid: i32,
    vma_start: u64,
    vma_end: u64,
    size: u64,
    out: &mut std::fs::File,
    stats: &mut MemStats,
) -> Result<Vec<PagemapEntry>, DumpError> {
    let path = crate::proc::path(pid, &format!("map_files/{vma_start:x}-{vma_end:x}"));
    let f = std::fs::File::open(&path).map_err(|source| crate::proc::ProcError::Io { path: path.clone(), source })?;
    let io = |e: std::io::Error| DumpError::Memory { addr: vma_start, errno: nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)) };
    let mut entries: Vec<PagemapEntry> = Vec::new();
    let mut buf = vec![0u8; BATCH.min(size as usize).max(PAGE_SIZE as usize)];
    let mut off = 0u64;
    while off < size {
        let Some(data) = seek_data_hole(&f, off, libc::SEEK_DATA).map_err(io)? else { break };
        if data >= size {
            break;
        }
        let hole = seek_data_hole(&f, data, libc::SEEK_HOLE).map_err(io)?.unwrap_or(size).min(size);
        let mut pos = data & !(PAGE_SIZE - 1);
        while pos < hole {
            let len = ((hole - pos).min(buf.len() as u64) + PAGE_SIZE - 1) & !(PAGE_SIZE - 1);
            let len = len.min(size - pos) as usize;
            f.read_exact_at(&mut buf[..len], pos).map_err(io)?;
            for p in 0..len / PAGE_SIZE as usize {
                let page = &buf[p * PAGE_SIZE as usize..(p + 1) * PAGE_SIZE as usize];
                stats.pages_scanned += 1;
                if is_zero(page) {
                    stats.pages_skipped_zero += 1;
                    continue;
                }
                out.write_all(page).map_err(DumpError::WritePages)?;
                stats.pages_written += 1;
                let va = pos + (p as u64) * PAGE_SIZE;
                match entries.last_mut() {
                    Some(l) if l.vaddr + l.nr_pages as u64 * PAGE_SIZE == va => l.nr_pages += 1,
                    _ => entries.push(PagemapEntry { vaddr: va, nr_pages: 1, flags: PE_PRESENT }),
                }
            }
            pos += len as u64;
        }
        off = hole;
    }
    Ok(entries)
}
