//! Copying the populated pages of private areas into the pages image.
//!
//! For each area, `/proc/PID/pagemap` tells which pages were ever touched
//! (present or swapped); those are read in large batches with one
//! `process_vm_readv` per batch (many iovecs), all-zero anonymous pages are
//! dropped and the pagemap entries recorded; writer threads put each batch
//! at its place in the pages file (`pwritev` from page-aligned buffers)
//! while the next batch is being read: through the page cache while that
//! is measured to be faster than the device and the kernel's dirty budget
//! allows, else with `O_DIRECT` ([`WriteWays`]); a task with little memory
//! has it written through the page cache by the reading thread alone. Areas without read permission are read through
//! `/proc/PID/mem`, which may read them on behalf of a tracer.

use super::model::{PagemapEntry, Vma, PE_PARENT, PE_PRESENT};
use super::DumpError;
use crate::proc::pagemap::{is_file_page, is_populated, Pagemap, PAGE_SIZE};
use std::io::{IoSlice, IoSliceMut, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicU64, Ordering};

/// Bytes of pagemap read at a time, and most bytes of a shared memory
/// object read at a time.
const BATCH: usize = 32 << 20;
/// Fewest and most bytes of one batch of private pages. The batch buffers
/// are fresh memory for every dump (its first touch costs about as much as
/// writing the data on a VM whose free memory goes back to the host), so
/// they are kept small beside what is copied: see [`batch_pages`].
const BATCH_MIN: usize = 1 << 20;
const BATCH_MAX: usize = 8 << 20;
/// Batch buffers in flight between the reader and the writers.
const BUFFERS: usize = 3;
/// Threads writing batches to the pages image.
const WRITERS: usize = 2;
/// Most iovecs in one `process_vm_readv` call (`IOV_MAX`).
const IOV_MAX: usize = 1024;
/// A task with fewer bytes of pages than this has them copied by the
/// calling thread alone (no writer threads) and written through the page
/// cache: for small amounts, starting threads and waiting for the device
/// (`O_DIRECT`) cost more than the copy, and a restore soon after reads
/// them back from the cache. Trees of many small tasks pay it per task.
const SMALL: u64 = 8 << 20;

/// Counters for the stats image and the log.
#[derive(Debug, Clone, Copy, Default)]
pub struct MemStats {
    /// Pages looked at (populated).
    pub pages_scanned: u64,
    /// Pages left out because they were all zeros.
    pub pages_skipped_zero: u64,
    /// Pages written.
    pub pages_written: u64,
    /// Pages left to lazy restore (held by the dump, not in the images).
    pub pages_lazy: u64,
    /// Pages unchanged since the parent dump, left in its images.
    pub pages_in_parent: u64,
    /// Time spent reading the process's memory.
    pub read_time: std::time::Duration,
    /// Time spent writing the pages image (including zero checks).
    pub write_time: std::time::Duration,
}

/// A run of populated pages: (address, number of pages).
pub type Run = (u64, usize);

/// The runs of populated pages of `[start, end)`: present or swapped, (with
/// `PAGEMAP_SCAN`) not the shared zero page, and with `skip_file` not a
/// page-cache page (a private file mapping's pages not yet copied on write
/// are read from the file again at restore, as CRIU does).
fn populated_runs(pm: &Pagemap, start: u64, end: u64, skip_file: bool) -> Result<Vec<Run>, DumpError> {
    let mut ranges = Vec::new();
    if pm.scan(start, end, skip_file, &mut ranges)? {
        return Ok(ranges.into_iter().map(|(a, b)| (a, ((b - a) / PAGE_SIZE) as usize)).collect());
    }
    // Older kernels: read the entries, a batch at a time.
    let mut runs = Vec::new();
    let mut entries = Vec::new();
    let mut from = start;
    while from < end {
        let to = (from + BATCH as u64).min(end);
        pm.read(from, to, &mut entries)?;
        let wanted = |e: u64| is_populated(e) && !(skip_file && is_file_page(e));
        let mut i = 0;
        while i < entries.len() {
            if !wanted(entries[i]) {
                i += 1;
                continue;
            }
            let j = entries[i..].iter().position(|e| !wanted(*e)).map_or(entries.len(), |p| i + p);
            match runs.last_mut() {
                Some((a, n)) if *a + *n as u64 * PAGE_SIZE == from + i as u64 * PAGE_SIZE => *n += j - i,
                _ => runs.push((from + i as u64 * PAGE_SIZE, j - i)),
            }
            i = j;
        }
        from = to;
    }
    Ok(runs)
}

/// What an incremental dump knows: per tracked area (by start address)
/// the ranges written since the parent dump, and the ranges whose pages
/// the parent images hold (sorted, disjoint). Areas not in `written` are
/// dumped whole.
#[derive(Debug, Default)]
pub struct Incremental {
    pub written: std::collections::BTreeMap<u64, Vec<(u64, u64)>>,
    pub in_parent: Vec<(u64, u64)>,
}

/// Splits populated runs into those to dump (written since the parent, or
/// not in the parent images) and those left in the parent images.
fn split_runs(runs: &[Run], written: &[(u64, u64)], parent: &[(u64, u64)]) -> (Vec<Run>, Vec<Run>) {
    fn push(out: &mut Vec<Run>, addr: u64) {
        match out.last_mut() {
            Some((a, n)) if *a + *n as u64 * PAGE_SIZE == addr => *n += 1,
            _ => out.push((addr, 1)),
        }
    }
    // Whether `addr` lies in `ranges`, moving the cursor `i` forward only.
    fn inside(ranges: &[(u64, u64)], i: &mut usize, addr: u64) -> bool {
        while *i < ranges.len() && ranges[*i].1 <= addr {
            *i += 1;
        }
        *i < ranges.len() && ranges[*i].0 <= addr
    }
    let (mut dump, mut keep) = (Vec::new(), Vec::new());
    let (mut wi, mut pi) = (0usize, 0usize);
    for &(addr, n) in runs {
        for p in 0..n as u64 {
            let a = addr + p * PAGE_SIZE;
            let written = inside(written, &mut wi, a);
            if !written && inside(parent, &mut pi, a) {
                push(&mut keep, a);
            } else {
                push(&mut dump, a);
            }
        }
    }
    (dump, keep)
}

/// Pages per batch for a copy of `total` pages: a 32nd of it, between
/// [`BATCH_MIN`] and [`BATCH_MAX`] bytes (the [`BUFFERS`] buffers then
/// hold about a tenth of what is copied: 3 MiB at least, 24 MiB at most).
fn batch_pages(total: u64) -> usize {
    let bytes = (total * PAGE_SIZE / 32).clamp(BATCH_MIN as u64, BATCH_MAX as u64);
    (bytes / PAGE_SIZE) as usize
}

/// Splits runs into batches of at most `max` pages (splitting long runs).
fn batches(runs: Vec<Run>, max: usize) -> Vec<Vec<Run>> {
    let mut out: Vec<Vec<Run>> = Vec::new();
    let mut cur: Vec<Run> = Vec::new();
    let mut pages = 0usize;
    for (mut addr, mut n) in runs {
        while n > 0 {
            let take = n.min(max - pages);
            cur.push((addr, take));
            pages += take;
            addr += take as u64 * PAGE_SIZE;
            n -= take;
            if pages == max {
                out.push(std::mem::take(&mut cur));
                pages = 0;
            }
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

fn is_zero(page: &[u8]) -> bool {
    let (pre, mid, post) = {
        // SAFETY: u64 has no invalid bit patterns; align_to gives the aligned middle part.
        unsafe { page.align_to::<u64>() }
    };
    // 64 bytes at a time (vectorised), stopping at the first that is not
    // zero: a page of data is told apart in its first bytes.
    pre.iter().all(|b| *b == 0) && post.iter().all(|b| *b == 0) && mid.chunks(8).all(|c| c.iter().fold(0, |a, w| a | w) == 0)
}

/// Merges a run of `nr` pages at `vaddr` into the last entry when adjacent
/// and in the same area (an entry never spans two VMAs: restore requires
/// each inside one), else appends it.
fn record(entries: &mut Vec<PagemapEntry>, vma_start: u64, vaddr: u64, nr: usize) {
    if let Some(last) = entries.last_mut() {
        if last.vaddr >= vma_start
            && last.vaddr + last.nr_pages as u64 * PAGE_SIZE == vaddr
            && (last.nr_pages as usize + nr) <= u32::MAX as usize
        {
            last.nr_pages += nr as u32;
            return;
        }
    }
    entries.push(PagemapEntry { vaddr, nr_pages: nr as u32, flags: PE_PRESENT });
}

/// Reads the runs into `buf` (large enough) with `process_vm_readv`, or
/// through `/proc/PID/mem` for areas without read permission.
pub(super) fn read_runs(pid: i32, mem: &mut Option<std::fs::File>, buf: &mut [u8], runs: &[Run], readable: bool) -> Result<(), DumpError> {
    let mut done = 0usize;
    if readable {
        for chunk in runs.chunks(IOV_MAX) {
            let bytes: usize = chunk.iter().map(|r| r.1 * PAGE_SIZE as usize).sum();
            let remote: Vec<nix::sys::uio::RemoteIoVec> =
                chunk.iter().map(|r| nix::sys::uio::RemoteIoVec { base: r.0 as usize, len: r.1 * PAGE_SIZE as usize }).collect();
            let n = nix::sys::uio::process_vm_readv(
                nix::unistd::Pid::from_raw(pid),
                &mut [IoSliceMut::new(&mut buf[done..done + bytes])],
                &remote,
            )
            .map_err(|e| DumpError::Memory { addr: chunk[0].0, errno: e })?;
            if n != bytes {
                // A short read: a page vanished, impossible while frozen
                // unless the area was not readable after all.
                return Err(DumpError::Memory { addr: chunk[0].0, errno: nix::errno::Errno::EFAULT });
            }
            done += bytes;
        }
        return Ok(());
    }
    if mem.is_none() {
        let path = crate::proc::path(pid, "mem");
        *mem = Some(std::fs::File::open(&path).map_err(|source| crate::proc::ProcError::Io { path, source })?);
    }
    let mem = mem.as_ref().ok_or(DumpError::Internal("no /proc/PID/mem"))?;
    for &(addr, nr) in runs {
        let len = nr * PAGE_SIZE as usize;
        mem.read_exact_at(&mut buf[done..done + len], addr)
            .map_err(|e| DumpError::Memory { addr, errno: nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)) })?;
        done += len;
    }
    Ok(())
}

/// One page-aligned page of a batch buffer (page alignment lets the pages
/// image be written with `O_DIRECT`).
#[repr(C, align(4096))]
#[derive(Clone, Copy)]
struct AlignedPage([u8; PAGE_SIZE as usize]);

/// A page-aligned buffer of whole pages.
#[derive(Default)]
struct PageBuf(Vec<AlignedPage>);

impl PageBuf {
    /// Grows the buffer to at least `bytes` (a multiple of the page size).
    fn reserve_bytes(&mut self, bytes: usize) {
        let pages = bytes.div_ceil(PAGE_SIZE as usize);
        if self.0.len() < pages {
            self.0.resize(pages, AlignedPage([0; PAGE_SIZE as usize]));
        }
    }

    fn bytes(&self) -> &[u8] {
        // SAFETY: AlignedPage is a repr(C) array of bytes without padding, so
        // the Vec's pages are len*4096 initialised, contiguous bytes.
        unsafe { std::slice::from_raw_parts(self.0.as_ptr().cast::<u8>(), self.0.len() * PAGE_SIZE as usize) }
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `bytes`; the exclusive borrow of self covers the slice.
        unsafe { std::slice::from_raw_parts_mut(self.0.as_mut_ptr().cast::<u8>(), self.0.len() * PAGE_SIZE as usize) }
    }
}

/// A batch read from the process, on its way to a writer thread: the
/// non-zero stretches of `buf` go to the pages image at `file_off`.
struct Batch {
    buf: PageBuf,
    /// (offset in `buf`, length) of each stretch, in file order.
    pieces: Vec<(usize, usize)>,
    file_off: u64,
}

/// Picks the pages of a freshly read buffer to keep (all, or the non-zero
/// ones when `skip_zero`), records their pagemap entries (for the area
/// starting at `vma_start`) and returns the stretches of the buffer to write.
fn select_pages(
    buf: &[u8],
    runs: &[Run],
    skip_zero: bool,
    vma_start: u64,
    entries: &mut Vec<PagemapEntry>,
    stats: &mut MemStats,
) -> Vec<(usize, usize)> {
    let ps = PAGE_SIZE as usize;
    let mut pieces: Vec<(usize, usize, u64)> = Vec::new();
    let mut off = 0usize;
    for &(addr, nr) in runs {
        for p in 0..nr {
            let o = off + p * ps;
            stats.pages_scanned += 1;
            if skip_zero && is_zero(&buf[o..o + ps]) {
                stats.pages_skipped_zero += 1;
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
        record(entries, vma_start, va, len / ps);
        stats.pages_written += (len / ps) as u64;
    }
    pieces.into_iter().map(|(o, l, _)| (o, l)).collect()
}

/// Writes one batch with `pwritev` at its file offset.
fn write_batch(out: &std::fs::File, b: &Batch) -> Result<(), DumpError> {
    let buf = b.buf.bytes();
    let mut file_off = b.file_off;
    for group in b.pieces.chunks(IOV_MAX) {
        let mut slices: Vec<IoSlice> = group.iter().map(|&(o, l)| IoSlice::new(&buf[o..o + l])).collect();
        let mut slices = &mut slices[..];
        while !slices.is_empty() {
            let n = nix::sys::uio::pwritev(out, slices, file_off as libc::off_t)
                .map_err(|e| DumpError::WritePages(std::io::Error::from_raw_os_error(e as i32)))?;
            if n == 0 {
                return Err(DumpError::WritePages(std::io::ErrorKind::WriteZero.into()));
            }
            file_off += n as u64;
            IoSlice::advance_slices(&mut slices, n);
        }
    }
    Ok(())
}

/// One private area's share of a memory dump: the runs of pages to copy.
#[derive(Debug, Clone)]
pub struct AreaCopy {
    /// The area.
    pub start: u64,
    /// Its end (exclusive).
    pub end: u64,
    /// Readable (else read through `/proc/PID/mem`).
    pub readable: bool,
    /// All-zero pages may be left out (anonymous memory).
    pub skip_zero: bool,
    /// The runs of pages to copy, sorted.
    pub runs: Vec<Run>,
}

/// What to copy of a task's private memory, decided while it is frozen
/// ([`plan_private`]), copied then or later ([`copy_private`]).
#[derive(Debug, Default)]
pub struct PrivatePlan {
    /// The areas with pages to copy, in address order.
    pub areas: Vec<AreaCopy>,
    /// Entries for pages left in the parent images.
    in_parent: Vec<PagemapEntry>,
    /// Counters of what was left in the parent.
    stats: MemStats,
}

impl PrivatePlan {
    /// Pages to copy.
    pub fn pages(&self) -> u64 {
        self.areas.iter().flat_map(|a| &a.runs).map(|r| r.1 as u64).sum()
    }
}

/// Decides which pages of every private area of `vmas` a dump copies: the
/// populated ones, less (with `inc`, a dump against a parent) those of
/// tracked areas neither written since nor missing from the parent, which
/// get `PE_PARENT` entries. Reads only the pagemap.
#[tracing::instrument(level = "debug", skip_all)]
pub fn plan_private(pm: &Pagemap, vmas: &[Vma], inc: Option<&Incremental>) -> Result<PrivatePlan, DumpError> {
    let mut plan = PrivatePlan::default();
    for v in vmas.iter().filter(|v| v.dumps_private_pages()) {
        let runs = populated_runs(pm, v.map.start, v.map.end, v.file_pages_implicit())?;
        let runs = match inc.and_then(|i| Some((i.written.get(&v.map.start)?, &i.in_parent))) {
            Some((written, parent)) => {
                let (dump, keep) = split_runs(&runs, written, parent);
                for (vaddr, n) in keep {
                    plan.stats.pages_scanned += n as u64;
                    plan.stats.pages_in_parent += n as u64;
                    plan.in_parent.push(PagemapEntry { vaddr, nr_pages: n as u32, flags: PE_PARENT });
                }
                dump
            }
            None => runs,
        };
        if !runs.is_empty() {
            plan.areas.push(AreaCopy { start: v.map.start, end: v.map.end, readable: v.map.read, skip_zero: v.zero_pages_implicit(), runs });
        }
    }
    Ok(plan)
}

/// Dumps the populated pages of every private area of `vmas` into `out`
/// (the pages image): [`plan_private`], then [`copy_private`] at once.
/// `on_batch` runs after each batch is read; an error from it aborts the
/// dump. Returns the pagemap entries and counters.
#[tracing::instrument(level = "debug", skip_all, fields(pid, vmas = vmas.len()))]
pub fn dump_private(
    pid: i32,
    pm: &Pagemap,
    vmas: &[Vma],
    out: &std::fs::File,
    inc: Option<&Incremental>,
    on_batch: impl FnMut() -> Result<(), DumpError>,
) -> Result<(Vec<PagemapEntry>, MemStats), DumpError> {
    let plan = plan_private(pm, vmas, inc)?;
    copy_private(pid, plan, out, None, on_batch)
}

/// Copies the pages `plan` names into `out` (the pages image). This thread
/// reads batches and picks the pages to keep; [`WRITERS`] threads write
/// finished batches at their offsets meanwhile (below [`SMALL`] bytes this
/// thread writes them itself, through the page cache). With `live` (the task runs:
/// [`super::live`]) each batch is read through it. `on_batch` runs after
/// each batch is read; an error from it aborts the dump. Returns the
/// pagemap entries and counters (`write_time` is summed over the writers).
#[tracing::instrument(level = "debug", skip_all, fields(pid, pages = plan.pages()))]
pub fn copy_private(
    pid: i32,
    plan: PrivatePlan,
    out: &std::fs::File,
    live: Option<&super::live::TaskLive>,
    mut on_batch: impl FnMut() -> Result<(), DumpError>,
) -> Result<(Vec<PagemapEntry>, MemStats), DumpError> {
    use std::sync::mpsc::sync_channel;
    use std::sync::Mutex;
    let (full_tx, full_rx) = sync_channel::<Batch>(1);
    let full_rx = Mutex::new(full_rx);
    let (free_tx, free_rx) = sync_channel::<PageBuf>(BUFFERS);
    for _ in 0..BUFFERS {
        free_tx.send(PageBuf::default()).map_err(|_| DumpError::Internal("buffer channel"))?;
    }
    let small = plan.pages() * PAGE_SIZE < SMALL;
    if small {
        write_through_cache(out)?;
    }
    // Up to `cached` bytes of the pages may go through the page cache (a
    // restore soon after reads them from memory), the rest to the device.
    let cached = if small { 0 } else { dirty_budget(&DirtyState::now()) };
    let ways = WriteWays::new(if cached > 0 { reopen_buffered(out) } else { None }, cached);
    let PrivatePlan { areas, in_parent, mut stats } = plan;
    let result = std::thread::scope(|s| {
        let writers: Vec<_> = (0..if small { 0 } else { WRITERS })
            .map(|_| {
                let (free_tx, full_rx, ways) = (free_tx.clone(), &full_rx, &ways);
                s.spawn(move || -> Result<std::time::Duration, DumpError> {
                    let mut busy = std::time::Duration::ZERO;
                    loop {
                        let next = full_rx.lock().map_err(|_| DumpError::Internal("writer queue"))?.recv();
                        let Ok(b) = next else { return Ok(busy) };
                        let t = std::time::Instant::now();
                        ways.write(out, &b)?;
                        busy += t.elapsed();
                        // The reader may be gone already; then nobody needs the buffer.
                        let _ = free_tx.send(b.buf);
                    }
                })
            })
            .collect();
        let free_tx = small.then_some(free_tx);
        let mut entries = Vec::new();
        let reader = (|| -> Result<(), DumpError> {
            let mut mem = None;
            let mut file_off = 0u64;
            let total = areas.iter().flat_map(|a| &a.runs).map(|r| r.1 as u64).sum();
            let per_batch = batch_pages(total);
            let _phase = crate::progress::Phase::start("dumping memory", total, std::io::stderr().as_fd());
            for area in &areas {
                let all = batches(area.runs.clone(), per_batch);
                let n = all.len();
                for (i, runs) in all.into_iter().enumerate() {
                    let bytes = runs.iter().map(|r| r.1).sum::<usize>() * PAGE_SIZE as usize;
                    // A closed channel means the writers failed; their error is reported below.
                    let Ok(mut buf) = free_rx.recv() else { return Ok(()) };
                    buf.reserve_bytes(bytes);
                    let t = std::time::Instant::now();
                    match live {
                        None => read_runs(pid, &mut mem, buf.bytes_mut(), &runs, area.readable)?,
                        Some(l) => l.read_batch(&mut mem, &mut buf.bytes_mut()[..bytes], &runs, area, i + 1 == n)?,
                    }
                    stats.read_time += t.elapsed();
                    let pieces = select_pages(buf.bytes(), &runs, area.skip_zero, area.start, &mut entries, &mut stats);
                    let len: usize = pieces.iter().map(|p| p.1).sum();
                    let batch = Batch { buf, pieces, file_off };
                    if small {
                        // No writer threads: written here, the buffer reused.
                        let t = std::time::Instant::now();
                        write_batch(out, &batch)?;
                        stats.write_time += t.elapsed();
                        if let Some(tx) = &free_tx {
                            let _ = tx.send(batch.buf);
                        }
                    } else if full_tx.send(batch).is_err() {
                        return Ok(());
                    }
                    file_off += len as u64;
                    crate::progress::advance(runs.iter().map(|r| r.1 as u64).sum());
                    on_batch()?;
                }
            }
            Ok(())
        })();
        drop(full_tx);
        let mut first_err = None;
        for w in writers {
            match w.join().map_err(|_| DumpError::Internal("a page writer thread panicked")).and_then(|r| r) {
                Ok(busy) => stats.write_time += busy,
                Err(e) => first_err = first_err.or(Some(e)),
            }
        }
        reader?;
        if let Some(e) = first_err {
            return Err(e);
        }
        if !in_parent.is_empty() {
            // Present entries keep their order (it is the pages file's).
            entries.extend(in_parent);
            entries.sort_by_key(|e| e.vaddr);
        }
        Ok((entries, stats))
    });
    if !small {
        tracing::debug!(
            budget = cached,
            cached = ways.cached_bytes.load(Ordering::Relaxed),
            direct = ways.direct_bytes.load(Ordering::Relaxed),
            "pages image written: through the page cache, to the device"
        );
    }
    result
}

/// Bytes per second a buffered write of a batch is assumed to beat an
/// `O_DIRECT` one by until an `O_DIRECT` write was timed.
const DIRECT_GUESS: f64 = 1.5e9;
/// Writes shorter than this are not timed (a few pages say more about the
/// syscall than about the way).
const TIMED_MIN: u64 = 1 << 20;
/// While buffered writes are the slower way, one batch in this many is
/// written buffered all the same, to see whether that changed.
const PROBE_EVERY: u64 = 8;

/// How the writer threads put batches into the pages image: through the
/// page cache (a restore soon after then reads them from memory: several
/// times faster than from the device) while that is not slower than
/// writing them to the device with `O_DIRECT`, and while the dirty budget
/// lasts. Each write is timed: the page cache is fast while the kernel has
/// warm free memory at hand, but on a VM whose free memory went back to the
/// host it is slower than the device (fresh memory costs 2-4 s per GiB to
/// touch there), and then batches go to the device until a buffered probe
/// is fast again.
struct WriteWays {
    /// The pages image without `O_DIRECT` (None: everything direct).
    buffered: Option<std::fs::File>,
    /// Most bytes written through the page cache.
    budget: u64,
    /// Buffered writes one at a time (they take the inode's lock anyway;
    /// a second writer spinning on it wastes a core).
    lock: std::sync::Mutex<()>,
    /// Bytes per second of the last timed write each way (`f64` bits).
    buffered_rate: AtomicU64,
    direct_rate: AtomicU64,
    batches: AtomicU64,
    cached_bytes: AtomicU64,
    direct_bytes: AtomicU64,
}

impl WriteWays {
    fn new(buffered: Option<std::fs::File>, budget: u64) -> Self {
        WriteWays {
            buffered,
            budget,
            lock: std::sync::Mutex::new(()),
            buffered_rate: AtomicU64::new(f64::INFINITY.to_bits()),
            direct_rate: AtomicU64::new(DIRECT_GUESS.to_bits()),
            batches: AtomicU64::new(0),
            cached_bytes: AtomicU64::new(0),
            direct_bytes: AtomicU64::new(0),
        }
    }

    /// Whether batch number `n` goes through the page cache.
    fn through_cache(&self, n: u64) -> bool {
        let rate = |r: &AtomicU64| f64::from_bits(r.load(Ordering::Relaxed));
        self.buffered.is_some()
            && self.cached_bytes.load(Ordering::Relaxed) < self.budget
            && (rate(&self.buffered_rate) >= rate(&self.direct_rate) || n % PROBE_EVERY == 0)
    }

    /// Writes batch `b` one way or the other (`out`: the `O_DIRECT` file).
    fn write(&self, out: &std::fs::File, b: &Batch) -> Result<(), DumpError> {
        let n = self.batches.fetch_add(1, Ordering::Relaxed);
        let len: u64 = b.pieces.iter().map(|p| p.1 as u64).sum();
        let timed = |f: &dyn Fn() -> Result<(), DumpError>, rate: &AtomicU64, bytes: &AtomicU64| {
            let t = std::time::Instant::now();
            f()?;
            let secs = t.elapsed().as_secs_f64().max(1e-9);
            if len >= TIMED_MIN {
                rate.store((len as f64 / secs).to_bits(), Ordering::Relaxed);
            }
            tracing::trace!(n, len, us = (secs * 1e6) as u64, cached = std::ptr::eq(rate, &self.buffered_rate), "batch written");
            bytes.fetch_add(len, Ordering::Relaxed);
            Ok(())
        };
        match &self.buffered {
            Some(c) if self.through_cache(n) => {
                let _one = self.lock.lock().map_err(|_| DumpError::Internal("buffered write lock"))?;
                timed(&|| write_batch(c, b), &self.buffered_rate, &self.cached_bytes)
            }
            _ => timed(&|| write_batch(out, b), &self.direct_rate, &self.direct_bytes),
        }
    }
}

/// What the kernel lets be dirty (`/proc/vmstat`, in pages).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct DirtyState {
    /// `nr_dirty_threshold`, `nr_dirty_background_threshold`.
    threshold: u64,
    background: u64,
    /// `nr_dirty` + `nr_writeback`.
    dirty: u64,
}

impl DirtyState {
    /// The kernel's figures now (zeros where it does not tell).
    fn now() -> Self {
        let text = std::fs::read_to_string("/proc/vmstat").unwrap_or_default();
        Self::parse(&text)
    }

    fn parse(vmstat: &str) -> Self {
        let mut d = DirtyState::default();
        for line in vmstat.lines() {
            let Some((k, v)) = line.split_once(' ') else { continue };
            let Ok(v) = v.trim().parse::<u64>() else { continue };
            match k {
                "nr_dirty_threshold" => d.threshold = v,
                "nr_dirty_background_threshold" => d.background = v,
                "nr_dirty" | "nr_writeback" => d.dirty += v,
                _ => {}
            }
        }
        d
    }
}

/// Bytes of pages a dump may write through the page cache now: what keeps
/// the dirty pages below the ceiling under which the kernel never slows a
/// writer down (halfway between the background and the hard threshold),
/// less an eighth of it left to other writers. Written that way the pages
/// cost a copy into memory and a restore soon after reads them from there
/// (a buffered write is several times faster than the device); beyond it
/// the kernel would throttle the dump to the device's speed anyway, and
/// the rest goes to the device directly (`O_DIRECT`, no copy). Zero when
/// the kernel does not tell.
fn dirty_budget(d: &DirtyState) -> u64 {
    let ceiling = (d.threshold + d.background) / 2;
    ceiling.saturating_sub(ceiling / 8).saturating_sub(d.dirty) * PAGE_SIZE
}

/// The pages image `out` opened again without `O_DIRECT` (through
/// `/proc/self/fd`), for the part written through the page cache; None if
/// that fails (then everything goes to the device).
fn reopen_buffered(out: &std::fs::File) -> Option<std::fs::File> {
    use std::os::fd::AsRawFd;
    std::fs::OpenOptions::new().write(true).open(format!("/proc/self/fd/{}", out.as_raw_fd())).ok()
}

/// Clears `O_DIRECT` on the pages image `out` (`fcntl(F_SETFL)`): its
/// writes go through the page cache from here on.
fn write_through_cache(out: &std::fs::File) -> Result<(), DumpError> {
    let flags = rustix::fs::fcntl_getfl(out).map_err(|e| DumpError::WritePages(e.into()))?;
    if flags.contains(rustix::fs::OFlags::DIRECT) {
        rustix::fs::fcntl_setfl(out, flags - rustix::fs::OFlags::DIRECT).map_err(|e| DumpError::WritePages(e.into()))?;
    }
    Ok(())
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
    dump_shmem_path(&path, size, out, stats)
}

/// Dumps the first `size` bytes of the shared memory object (a shmem or
/// memfd file) that `path` (`/proc/PID/map_files/..`, `/proc/PID/fd/N`)
/// opens, as [`dump_shmem`] does.
pub fn dump_shmem_path(path: &std::path::Path, size: u64, out: &mut std::fs::File, stats: &mut MemStats) -> Result<Vec<PagemapEntry>, DumpError> {
    let f = std::fs::File::open(path).map_err(|source| crate::proc::ProcError::Io { path: path.to_owned(), source })?;
    let io = |e: std::io::Error| DumpError::Memory { addr: 0, errno: nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)) };
    let mut entries: Vec<PagemapEntry> = Vec::new();
    let mut buf = vec![0u8; BATCH.min(size.next_multiple_of(PAGE_SIZE) as usize).max(PAGE_SIZE as usize)];
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
            let len = len.min(buf.len() as u64) as usize;
            // A last page the object only partly covers (a memfd's size need
            // not be page-aligned) is read as far as it goes, zeros after.
            let avail = len.min((size - pos) as usize);
            f.read_exact_at(&mut buf[..avail], pos).map_err(io)?;
            buf[avail..len].fill(0);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dirty_budget_stays_under_the_free_run_ceiling() {
        let d = DirtyState::parse("nr_dirty 1000\nnr_writeback 24\nnr_dirty_threshold 1102444\nnr_dirty_background_threshold 550549\nnr_free_pages 5\n");
        assert_eq!(d, DirtyState { threshold: 1102444, background: 550549, dirty: 1024 });
        let ceiling = (1102444 + 550549) / 2;
        assert_eq!(dirty_budget(&d), (ceiling - ceiling / 8 - 1024) * PAGE_SIZE);
        // Already past it, or a kernel that does not say: nothing cached.
        assert_eq!(dirty_budget(&DirtyState { dirty: 900_000, ..d }), 0);
        assert_eq!(dirty_budget(&DirtyState::parse("")), 0);
    }

    #[test]
    fn slow_buffered_writes_give_way_to_direct_ones() {
        let f = std::fs::File::open("/dev/null").unwrap();
        let w = WriteWays::new(Some(f), 1 << 30);
        assert!(w.through_cache(1), "buffered first");
        w.buffered_rate.store(0.3e9f64.to_bits(), Ordering::Relaxed);
        assert!(!w.through_cache(1), "slower than the device");
        assert!(w.through_cache(PROBE_EVERY), "probed now and then");
        w.direct_rate.store(0.2e9f64.to_bits(), Ordering::Relaxed);
        assert!(w.through_cache(1), "the device is slower still");
        w.cached_bytes.store(1 << 30, Ordering::Relaxed);
        assert!(!w.through_cache(1), "budget spent");
    }

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

    #[test]
    fn incremental_split() {
        let pg = |n: u64| 0x10_0000 + n * PAGE_SIZE;
        // Pages 0..10 populated; 2..4 written; the parent holds 0..6 and 8..9.
        let runs = [(pg(0), 10usize)];
        let (dump, keep) = split_runs(&runs, &[(pg(2), pg(4))], &[(pg(0), pg(6)), (pg(8), pg(9))]);
        assert_eq!(keep, vec![(pg(0), 2), (pg(4), 2), (pg(8), 1)]);
        assert_eq!(dump, vec![(pg(2), 2), (pg(6), 2), (pg(9), 1)]);
        // Nothing written, nothing in the parent: everything is dumped.
        let (dump, keep) = split_runs(&runs, &[], &[]);
        assert_eq!((dump, keep), (vec![(pg(0), 10)], vec![]));
    }

    #[test]
    fn batching_splits_long_runs() {
        let max = 2048;
        let b = batches(vec![(0x1000, 3), (0x10_0000, max), (0x9000_0000, 1)], max);
        assert_eq!(b.len(), 2);
        assert_eq!(b[0], vec![(0x1000, 3), (0x10_0000, max - 3)]);
        assert_eq!(b[1], vec![(0x10_0000 + (max - 3) as u64 * PAGE_SIZE, 3), (0x9000_0000, 1)]);
        assert!(batches(Vec::new(), max).is_empty());
        // 16 MiB: 1 MiB batches; 1 GiB: 8 MiB ones (a 32nd would be 32).
        assert_eq!(batch_pages(4096) * PAGE_SIZE as usize, BATCH_MIN);
        assert_eq!(batch_pages(1 << 18) * PAGE_SIZE as usize, BATCH_MAX);
        assert_eq!(batch_pages(1 << 14), 512);
    }

    #[test]
    fn populated_runs_skip_untouched_and_zero_pages() {
        let len = 64 * PAGE_SIZE as usize;
        // SAFETY: anonymous private mapping, unmapped at the end of the test.
        let p = unsafe { libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0) };
        assert_ne!(p, libc::MAP_FAILED);
        let base = p as u64;
        for i in [1usize, 2, 3, 10] {
            // SAFETY: page i is inside the mapping.
            unsafe { *(p as *mut u8).add(i * PAGE_SIZE as usize) = 7 };
        }
        // SAFETY: reading page 20 maps the shared zero page.
        let z = unsafe { std::ptr::read_volatile((p as *const u8).add(20 * PAGE_SIZE as usize)) };
        assert_eq!(z, 0);
        let pm = Pagemap::open(std::process::id() as i32).unwrap();
        let runs = populated_runs(&pm, base, base + len as u64, false).unwrap();
        assert_eq!(runs, vec![(base + PAGE_SIZE, 3), (base + 10 * PAGE_SIZE, 1)]);
        // SAFETY: unmapping what we mapped.
        unsafe { libc::munmap(p, len) };
    }
}
