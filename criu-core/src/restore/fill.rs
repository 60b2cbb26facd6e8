//! Filling the premapped VMAs from a pages file, on two cores.
//!
//! The present pages are cut into jobs, in file order. Stretches of
//! private anonymous memory that cover whole 2 MiB pages are registered
//! with a userfaultfd and filled [`STEP`] bytes at a time through a scratch
//! area ([`super::hugefill`]): read into huge pages and moved into place,
//! or, once huge pages are given up, read into a reused bounce area and
//! copied into place. Everything else is read with `preadv` into pages
//! faulted in beforehand with `MADV_POPULATE_WRITE`, in jobs of at most
//! [`PLAIN_CHUNK`] bytes. The calling thread and (from [`HELPER_MIN`]
//! bytes on) a helper thread
//! ([`super::helper_thread`]) take jobs in turn.
//!
//! Huge pages are only cheaper while the kernel has warm free ones at hand
//! (on this VM, memory the host took back costs about 4 s per GiB to touch
//! again, and free huge pages are the first it takes): the scratch area is
//! populated one huge page at a time, each timed, and once a worker saw
//! [`SLOW_ROUNDS`] in a row come slower than [`SLOW_RATE`], the rest of
//! its step and every later one is copied from the bounce area instead.
//!
//! Whether a job's part of the pages file is in the page cache decides how
//! it is read (`cachestat(2)` per job): a part mostly cached (CRIU's
//! dumps, which write through the page cache, ours while the page cache
//! was faster than the device, or a file read before) is read as above; a
//! part mostly not cached (written with `O_DIRECT`) is read with
//! `O_DIRECT`, by the same jobs: into the
//! scratch areas (huge pages then moved into place whole) and straight
//! into the premapped VMAs for plain jobs. The device writes into the
//! pages, no page-cache pages are allocated and nothing is copied (a
//! buffered read of a cold file allocates page-cache memory as well, and
//! on this VM fresh memory costs about 3-4 s per GiB, disk reads about 1-2
//! s); huge pages spare the per-4 KiB cost of allocating, charging and
//! pinning each page. A read `O_DIRECT` refuses is done the buffered way.
//!
//! The job code runs on the helper thread too, so it follows that module's
//! rules: rustix syscalls only, no allocation, no logging, no panics.

use super::error::{RestoreError, Result};
use super::helper_thread::run_pair;
use super::hugefill::{thp_available, Scratch, Uffd, BOUNCE, HUGE, STEP};
use super::plan::{PagesPlan, VmaPlan, PAGE_SIZE};
use super::premap::{segments, Premap};
use rustix::fd::{AsRawFd, OwnedFd};
use rustix::io::Errno;
use std::ffi::c_void;
use std::io::IoSliceMut;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

/// Most stretches one plain job reads with its `preadv`.
const IOV: usize = 64;
/// Most bytes of one plain job.
const PLAIN_CHUNK: u64 = 16 << 20;
/// Fewer bytes than this are filled by the calling thread alone: starting
/// a helper thread costs more than it saves (a tree of small tasks pays it
/// per task).
const HELPER_MIN: u64 = 4 << 20;
/// Below this rate (bytes per second) populating a huge-page scratch area
/// was slowed down (plain 4 KiB pages populate at 2-3 GB/s, warm huge
/// pages at about 10 GB/s, huge pages the host took back at 0.5-1 GB/s).
const SLOW_RATE: f64 = 2e9;
/// Huge pages are given up once one worker saw this many slow ones in a
/// row (a warm one takes about 0.2 ms, a cold one 4-8 ms).
const SLOW_ROUNDS: u32 = 3;

/// One unit of work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Job {
    /// At most [`STEP`] bytes of a stretch registered with the
    /// userfaultfd (premap address, length, file offset): filled through
    /// a scratch area only, with huge pages if `thp`.
    Huge { addr: u64, len: u64, off: u64, thp: bool },
    /// `plain[first..first + count]`: stretches contiguous in the file.
    Plain { first: usize, count: usize },
}

/// Why a job failed: a syscall's error (or end of file) at a file offset.
#[derive(Debug, Clone, Copy)]
struct JobError {
    what: &'static str,
    errno: Option<Errno>,
    off: u64,
}

/// Below this share of a job's part of the pages file in the page cache,
/// the job reads it with `O_DIRECT`.
const CACHED_ENOUGH: f64 = 0.5;
/// From this share of the whole file in the page cache on, every job reads
/// it the buffered way.
const ALL_CACHED: f64 = 0.99;

/// The work list and what the workers share.
struct Filler<'a> {
    fd: &'a OwnedFd,
    /// The same file opened with `O_DIRECT`, for the jobs whose part of
    /// the file is not in the page cache.
    direct: Option<OwnedFd>,
    jobs: Vec<Job>,
    /// Per job: read with `O_DIRECT` (its part of the file is cold).
    cold: Vec<bool>,
    /// Plain stretches: (premap address, length, file offset).
    plain: Vec<(u64, u64, u64)>,
    uffd: Option<Uffd>,
    /// The jobs in the order they are taken: those read from the page
    /// cache first, then the cold ones. The main thread takes from the
    /// front, the helper from the back: while one thread waits for the
    /// device, the other copies from memory.
    order: Vec<usize>,
    /// Untaken part of `order`: front index << 32 | back index (exclusive).
    untaken: AtomicU64,
    /// Bytes filled so far, and pages of them passed to the progress
    /// display.
    done: AtomicU64,
    reported: AtomicU64,
    /// Stop taking jobs: everyone / the helper only.
    quit: AtomicBool,
    quit_helper: AtomicBool,
    /// Huge pages given up.
    no_huge: AtomicBool,
    /// Bytes moved into place as huge pages.
    moved: AtomicU64,
    /// The job the helper failed on (usize::MAX: none).
    helper_failed: AtomicUsize,
}

/// What [`fill_report`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Filled {
    /// Bytes read.
    pub bytes: u64,
    /// Of them, bytes moved into place as huge pages.
    pub huge: u64,
    /// Whether a helper thread shared the work.
    pub helper: bool,
    /// Whether (part of) the file was read with `O_DIRECT` (it was not
    /// cached).
    pub direct: bool,
}

/// Reads every present page of `pages` from `fd` into the premapped VMAs;
/// returns the number of bytes read. A helper thread shares the work
/// unless its tid is one of `avoid` (ids the restore still has to create),
/// in which case it stops at once.
pub fn fill(pm: &Premap, vmas: &[VmaPlan], pages: &PagesPlan, fd: &OwnedFd, avoid: &[i32]) -> Result<u64> {
    fill_report(pm, vmas, pages, fd, avoid).map(|f| f.bytes)
}

/// Which ways of filling [`fill_with`] may use (all of them by default).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FillWays {
    /// Huge pages moved in (only where the system allows them).
    pub huge: bool,
    /// A userfaultfd (`UFFDIO_MOVE`/`UFFDIO_COPY`); without it, no huge
    /// pages either.
    pub uffd: bool,
    /// A helper thread.
    pub helper: bool,
    /// `O_DIRECT` reads of a file mostly not in the page cache.
    pub direct: bool,
}

impl Default for FillWays {
    fn default() -> Self {
        FillWays { huge: true, uffd: true, helper: true, direct: true }
    }
}

/// The share of `fd`'s file in the page cache (`cachestat(2)`, Linux 6.5);
/// 1.0 when the kernel cannot tell (then the file is read as if cached).
pub fn page_cache_share(fd: &OwnedFd) -> f64 {
    let size = rustix::fs::fstat(fd).map(|st| st.st_size as u64).unwrap_or(0);
    if size == 0 {
        return 1.0;
    }
    cached_share(fd, 0, size)
}

/// The share of bytes `off..off + len` of `fd`'s file in the page cache
/// (`cachestat(2)`); 1.0 when the kernel cannot tell.
fn cached_share(fd: &OwnedFd, off: u64, len: u64) -> f64 {
    #[repr(C)]
    struct Range {
        off: u64,
        len: u64,
    }
    #[repr(C)]
    #[derive(Default)]
    struct CacheStat {
        nr_cache: u64,
        nr_dirty: u64,
        nr_writeback: u64,
        nr_evicted: u64,
        nr_recently_evicted: u64,
    }
    const SYS_CACHESTAT: libc::c_long = 451;
    if len == 0 {
        return 1.0;
    }
    let range = Range { off, len };
    let mut cs = CacheStat::default();
    // SAFETY: cachestat(2) reads `range` and writes `cs`, both live here.
    let r = unsafe { libc::syscall(SYS_CACHESTAT, fd.as_raw_fd(), &range as *const Range, &mut cs as *mut CacheStat, 0) };
    if r != 0 {
        return 1.0;
    }
    (cs.nr_cache * PAGE_SIZE) as f64 / len as f64
}

/// `fd`'s file opened again with `O_DIRECT` (through `/proc/self/fd`);
/// None where the file system refuses it.
fn reopen_direct(fd: &OwnedFd) -> Option<OwnedFd> {
    let path = format!("/proc/self/fd/{}", fd.as_raw_fd());
    rustix::fs::open(path.as_str(), rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::CLOEXEC | rustix::fs::OFlags::DIRECT, rustix::fs::Mode::empty()).ok()
}

/// [`fill`], saying how the work was done.
pub fn fill_report(pm: &Premap, vmas: &[VmaPlan], pages: &PagesPlan, fd: &OwnedFd, avoid: &[i32]) -> Result<Filled> {
    fill_with(pm, vmas, pages, fd, avoid, FillWays::default())
}

/// [`fill_report`] using only the ways allowed (benchmarks compare them).
pub fn fill_with(pm: &Premap, vmas: &[VmaPlan], pages: &PagesPlan, fd: &OwnedFd, avoid: &[i32], ways: FillWays) -> Result<Filled> {
    let segs = segments(pm, vmas, pages)?;
    let direct = if ways.direct && page_cache_share(fd) < ALL_CACHED { reopen_direct(fd) } else { None };
    let want_uffd = ways.uffd && segs.iter().any(|s| s.anon && s.addr.next_multiple_of(HUGE) + HUGE <= s.addr + s.len);
    let uffd = if want_uffd { Uffd::open() } else { None };
    let huge = ways.huge && thp_available();
    let mut f = Filler {
        fd,
        direct,
        jobs: Vec::new(),
        cold: Vec::new(),
        plain: Vec::new(),
        uffd,
        order: Vec::new(),
        untaken: AtomicU64::new(0),
        done: AtomicU64::new(0),
        reported: AtomicU64::new(0),
        quit: AtomicBool::new(false),
        quit_helper: AtomicBool::new(false),
        no_huge: AtomicBool::new(!huge),
        moved: AtomicU64::new(0),
        helper_failed: AtomicUsize::new(usize::MAX),
    };
    let mut registered = Vec::new();
    let mut pieces: Vec<Piece> = Vec::new();
    for s in &segs {
        let (a, b) = (s.addr.next_multiple_of(HUGE), (s.addr + s.len) / HUGE * HUGE);
        let registered_ok = s.anon && b > a && f.uffd.as_ref().is_some_and(|u| {
            give_anon_vma(s.vma, (a, b));
            u.register(a, b - a)
        });
        if !registered_ok {
            push_plain(&mut pieces, (s.addr, s.len, s.off));
            continue;
        }
        registered.push((a, b - a));
        push_plain(&mut pieces, (s.addr, a - s.addr, s.off));
        pieces.push(Piece::Huge(a, b - a, s.off + (a - s.addr), s.huge_ok));
        push_plain(&mut pieces, (b, s.addr + s.len - b, s.off + (b - s.addr)));
    }
    (f.jobs, f.plain) = make_jobs(&pieces);
    if let Some(d) = &f.direct {
        f.cold = f.jobs.iter().map(|j| cached_share(d, f.file_range(j).0, f.file_range(j).1) < CACHED_ENOUGH).collect();
    }
    let cold_jobs = f.cold.iter().filter(|c| **c).count();
    let is_cold = |k: &usize| f.cold.get(*k).copied().unwrap_or(false);
    f.order = (0..f.jobs.len()).filter(|k| !is_cold(k)).chain((0..f.jobs.len()).filter(|k| is_cold(k))).collect();
    f.untaken = AtomicU64::new(f.order.len() as u64);

    let f = &f;
    let started = std::time::Instant::now();
    // rustix finds the vDSO's clock_gettime on first use: do that here, not
    // on the helper thread.
    let _ = now_ns();
    let mut helper = false;
    let result = if ways.helper && f.jobs.len() > 1 && segs.iter().map(|s| s.len).sum::<u64>() >= HELPER_MIN {
        run_pair(&|| { let _ = f.work(true); }, |tid| {
            helper = tid.is_some_and(|t| !avoid.contains(&t));
            if !helper {
                f.quit_helper.store(true, Ordering::SeqCst);
            }
            f.work(false)
        })
    } else {
        f.work(false)
    };
    let result = result.and_then(|()| match f.helper_failed.load(Ordering::SeqCst) {
        usize::MAX => Ok(()),
        k => f.run(k, &mut Areas::default(), true).map(|n| f.add(n)),
    });
    if let Some(u) = &f.uffd {
        for &(a, len) in &registered {
            u.unregister(a, len);
        }
    }
    f.report();
    let done = f.done.load(Ordering::SeqCst);
    let moved = f.moved.load(Ordering::SeqCst);
    tracing::debug!(
        path = %pages.path.display(),
        bytes = done,
        huge = moved,
        huge_given_up = f.no_huge.load(Ordering::SeqCst) && huge,
        cold_jobs,
        jobs = f.jobs.len(),
        helper,
        ms = started.elapsed().as_millis() as u64,
        "pages filled"
    );
    result.map_err(|e| match e.errno {
        Some(errno) => RestoreError::sys(format!("{} ({} at {:#x})", e.what, pages.path.display(), e.off), errno),
        None => RestoreError::bad(&pages.path, format!("unexpected end of file at {:#x}", e.off)),
    })?;
    Ok(Filled { bytes: done, huge: moved, helper, direct: cold_jobs > 0 })
}

/// A stretch to fill (premap address, length, file offset): registered
/// with the userfaultfd (and whether huge pages may back it), or plain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Piece {
    Huge(u64, u64, u64, bool),
    Plain(u64, u64, u64),
}

/// Appends a non-empty plain stretch, merging it with the previous one when
/// both memory and file ranges continue.
fn push_plain(pieces: &mut Vec<Piece>, (addr, len, off): (u64, u64, u64)) {
    if len == 0 {
        return;
    }
    if let Some(Piece::Plain(a, l, o)) = pieces.last_mut() {
        if *a + *l == addr && *o + *l == off {
            *l += len;
            return;
        }
    }
    pieces.push(Piece::Plain(addr, len, off));
}

/// Cuts the pieces into jobs ([`STEP`] bytes for huge-capable ones, at
/// most [`PLAIN_CHUNK`] for plain ones); consecutive plain stretches
/// contiguous in the file share a job (up to [`IOV`] of them).
/// Returns the jobs and the plain stretches they index.
fn make_jobs(pieces: &[Piece]) -> (Vec<Job>, Vec<(u64, u64, u64)>) {
    let mut jobs = Vec::new();
    let mut plain: Vec<(u64, u64, u64)> = Vec::new();
    // Bytes in the last job if it is a plain one still open to more.
    let mut open: Option<u64> = None;
    for &p in pieces {
        let (Piece::Huge(mut addr, mut len, mut off, _) | Piece::Plain(mut addr, mut len, mut off)) = p;
        let most = if let Piece::Huge(..) = p { STEP } else { PLAIN_CHUNK };
        while len > 0 {
            let n = len.min(most);
            match p {
                Piece::Huge(.., thp) => {
                    jobs.push(Job::Huge { addr, len: n, off, thp });
                    open = None;
                }
                Piece::Plain(..) => {
                    let follows = plain.last().is_some_and(|l| l.2 + l.1 == off);
                    match (open, jobs.last_mut()) {
                        (Some(bytes), Some(Job::Plain { count, .. })) if follows && *count < IOV && bytes + n <= PLAIN_CHUNK => {
                            *count += 1;
                            open = Some(bytes + n);
                        }
                        _ => {
                            jobs.push(Job::Plain { first: plain.len(), count: 1 });
                            open = Some(n);
                        }
                    }
                    plain.push((addr, n, off));
                }
            }
            addr += n;
            off += n;
            len -= n;
        }
    }
    (jobs, plain)
}

impl Filler<'_> {
    /// Counts `n` more bytes filled.
    fn add(&self, n: u64) {
        self.done.fetch_add(n, Ordering::SeqCst);
    }

    /// Passes the pages filled since the last call to the progress display
    /// (main thread only: the display may allocate and lock).
    fn report(&self) {
        let pages = self.done.load(Ordering::SeqCst) / PAGE_SIZE;
        let before = self.reported.swap(pages, Ordering::SeqCst);
        crate::progress::advance(pages.saturating_sub(before));
    }

    /// Takes and runs jobs until none is left (or told to stop). The
    /// helper records the job it failed on and stops; the main thread
    /// stops everyone and returns its error.
    fn work(&self, helper: bool) -> std::result::Result<(), JobError> {
        let mut areas = Areas::default();
        loop {
            if self.quit.load(Ordering::Relaxed) || (helper && self.quit_helper.load(Ordering::Relaxed)) {
                return Ok(());
            }
            let Some(k) = self.take(!helper) else { return Ok(()) };
            match self.run(k, &mut areas, false) {
                Ok(n) => {
                    self.add(n);
                    if !helper {
                        self.report();
                    }
                }
                Err(_) if helper => {
                    self.helper_failed.store(k, Ordering::SeqCst);
                    return Ok(());
                }
                Err(e) => {
                    self.quit.store(true, Ordering::SeqCst);
                    return Err(e);
                }
            }
        }
    }

    /// Runs one job (without huge pages if `no_huge`); returns the bytes
    /// filled.
    fn run(&self, k: usize, areas: &mut Areas, no_huge: bool) -> std::result::Result<u64, JobError> {
        let Some(job) = self.jobs.get(k) else { return Ok(0) };
        match *job {
            Job::Plain { first, count } => {
                let segs = self.plain.get(first..first + count).unwrap_or(&[]);
                match self.direct_for(k) {
                    // Nothing is read twice: a failed read is retried whole.
                    Some(d) => read_plain(d, segs).or_else(|_| read_plain_unpopulated(self.fd, segs)),
                    None => read_plain(self.fd, segs),
                }
            }
            Job::Huge { addr, len, off, thp } => {
                // Huge jobs exist only where the userfaultfd registered the range.
                let Some(uffd) = &self.uffd else { return Err(JobError { what: "userfaultfd", errno: Some(Errno::INVAL), off }) };
                // Huge pages one at a time while they come fast.
                let mut huge = 0;
                if thp && !no_huge {
                    if let Some(s) = areas.huge.get_or_insert_with(|| Scratch::new(true)) {
                        while huge < len && !self.no_huge.load(Ordering::Relaxed) {
                            let start = now_ns();
                            populate(s.addr + huge, HUGE);
                            self.count_step(&mut areas.slow_in_row, HUGE, now_ns().saturating_sub(start));
                            huge += HUGE;
                        }
                        if huge > 0 {
                            self.read_exact(k, s.addr, huge, off)?;
                            let moved = uffd.move_pages(addr, s.addr, huge);
                            self.moved.fetch_add(moved, Ordering::Relaxed);
                            // What did not move is still in the scratch area.
                            copy(uffd, addr + moved, s.addr + moved, huge - moved, off + moved)?;
                        }
                    }
                }
                if huge < len {
                    let Some(b) = areas.bounce.get_or_insert_with(|| Scratch::new(false)) else {
                        return Err(JobError { what: "mmap (bounce area)", errno: Some(Errno::NOMEM), off });
                    };
                    let mut at = huge;
                    while at < len {
                        let n = (len - at).min(BOUNCE);
                        self.read_exact(k, b.addr, n, off + at)?;
                        copy(uffd, addr + at, b.addr, n, off + at)?;
                        at += n;
                    }
                }
                Ok(len)
            }
        }
    }

    /// Reads `len` bytes at file offset `off` into the scratch area at
    /// `addr` for job `k`: with `O_DIRECT` for a cold part of the file (the device writes into the
    /// scratch pages, no page-cache copy), the buffered way if that fails.
    fn read_exact(&self, k: usize, addr: u64, len: u64, off: u64) -> std::result::Result<(), JobError> {
        match self.direct_for(k) {
            Some(d) => read_exact(d, addr, len, off).or_else(|_| read_exact(self.fd, addr, len, off)),
            None => read_exact(self.fd, addr, len, off),
        }
    }

    /// The next job from the front or the back of [`Self::order`], if any
    /// is left.
    fn take(&self, front: bool) -> Option<usize> {
        let mut v = self.untaken.load(Ordering::Relaxed);
        loop {
            let (f, b) = (v >> 32, v & 0xffff_ffff);
            if f >= b {
                return None;
            }
            let (next, at) = if front { ((f + 1) << 32 | b, f) } else { (f << 32 | (b - 1), b - 1) };
            match self.untaken.compare_exchange_weak(v, next, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return self.order.get(at as usize).copied(),
                Err(now) => v = now,
            }
        }
    }

    /// The `O_DIRECT` file to read job `k` with, if its part is cold.
    fn direct_for(&self, k: usize) -> Option<&OwnedFd> {
        self.direct.as_ref().filter(|_| self.cold.get(k).copied().unwrap_or(false))
    }

    /// The part of the file `job` reads: (offset, length).
    fn file_range(&self, job: &Job) -> (u64, u64) {
        match *job {
            Job::Huge { len, off, .. } => (off, len),
            Job::Plain { first, count } => {
                let segs = self.plain.get(first..first + count).unwrap_or(&[]);
                (segs.first().map_or(0, |s| s.2), segs.iter().map(|s| s.1).sum())
            }
        }
    }

    /// Counts a huge page populated (`len` bytes in `ns`) as fast or slow;
    /// gives huge pages up after too many slow ones in a row.
    fn count_step(&self, slow_in_row: &mut u32, len: u64, ns: u64) {
        // 1e9 * len / ns < SLOW_RATE, without dividing by zero.
        if (len as f64) * 1e9 < SLOW_RATE * ns as f64 {
            *slow_in_row += 1;
            if *slow_in_row >= SLOW_ROUNDS {
                self.no_huge.store(true, Ordering::Relaxed);
            }
        } else {
            *slow_in_row = 0;
        }
    }
}

/// A worker's own state: its scratch areas, made on first use
/// (`Some(None)`: failed), and its slow huge steps in a row.
#[derive(Default)]
struct Areas {
    huge: Option<Option<Scratch>>,
    bounce: Option<Option<Scratch>>,
    slow_in_row: u32,
}

/// `UFFDIO_COPY` of `len` bytes from `src` to `dst` (data of file offset
/// `off`).
fn copy(uffd: &Uffd, dst: u64, src: u64, len: u64, off: u64) -> std::result::Result<(), JobError> {
    uffd.copy_pages(dst, src, len).map_err(|(e, done)| JobError { what: "UFFDIO_COPY", errno: Some(e), off: off + done })
}

/// Makes sure `vma` has its anon_vma before its part `huge` is registered
/// with the userfaultfd (which splits it): otherwise each part gets its own
/// when first filled, and the parts can no longer merge back into one VMA
/// when unregistered. Writing one page and dropping it again does that
/// (`MADV_POPULATE_WRITE`, `MADV_DONTNEED`); the page is taken outside
/// `huge` if there is room, as the page table it leaves behind keeps a
/// huge page from moving in whole. A page already there (an earlier fill
/// of the same VMA, e.g. from a parent image) means the VMA has its
/// anon_vma already, and is left alone.
fn give_anon_vma(vma: (u64, u64), huge: (u64, u64)) {
    let addr = if vma.0 < huge.0 {
        vma.0
    } else if huge.1 < vma.1 {
        vma.1 - PAGE_SIZE
    } else {
        huge.0
    };
    let mut resident = [0u8; 1];
    // SAFETY: mincore(2) of one page of a premapped VMA into a 1-byte vector.
    let r = unsafe { libc::mincore(addr as *mut c_void, PAGE_SIZE as usize, resident.as_mut_ptr()) };
    if r != 0 || resident[0] & 1 != 0 {
        return;
    }
    populate(addr, PAGE_SIZE);
    // SAFETY: the page is part of a premapped VMA owned by this restore
    // and holds nothing yet.
    let _ = unsafe { rustix::mm::madvise(addr as *mut c_void, PAGE_SIZE as usize, rustix::mm::Advice::LinuxDontNeed) };
}

/// CLOCK_MONOTONIC in nanoseconds.
fn now_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    (t.tv_sec as u64).saturating_mul(1_000_000_000).saturating_add(t.tv_nsec as u64)
}

/// `madvise(addr, len, MADV_POPULATE_WRITE)`: faults the range in at once,
/// much cheaper than one page fault per page inside the copy. Best effort:
/// on failure the copy faults the pages in.
fn populate(addr: u64, len: u64) {
    // SAFETY: the range is writable memory owned by this restore (a
    // premapped VMA or a scratch area); populating only allocates pages.
    let _ = unsafe { rustix::mm::madvise(addr as *mut c_void, len as usize, rustix::mm::Advice::LinuxPopulateWrite) };
}

/// `pread(fd, addr, len, off)` until all of it is read.
fn read_exact(fd: &OwnedFd, addr: u64, len: u64, off: u64) -> std::result::Result<(), JobError> {
    read_plain_unpopulated(fd, &[(addr, len, off)]).map(|_| ())
}

/// Populates the stretches, then reads them (contiguous in the file).
fn read_plain(fd: &OwnedFd, segs: &[(u64, u64, u64)]) -> std::result::Result<u64, JobError> {
    for &(addr, len, _) in segs {
        populate(addr, len);
    }
    read_plain_unpopulated(fd, segs)
}

/// `preadv(fd, iov[segs], segs[0].offset)`, repeated until all is read.
fn read_plain_unpopulated(fd: &OwnedFd, segs: &[(u64, u64, u64)]) -> std::result::Result<u64, JobError> {
    let Some(&(_, _, off)) = segs.first() else { return Ok(0) };
    let want: u64 = segs.iter().map(|s| s.1).sum();
    let mut done = 0u64;
    while done < want {
        let mut iov: [IoSliceMut<'_>; IOV] = std::array::from_fn(|_| IoSliceMut::new(&mut []));
        let mut n = 0;
        let mut skip = done;
        for &(addr, len, _) in segs {
            if skip >= len {
                skip -= len;
                continue;
            }
            let Some(slot) = iov.get_mut(n) else { break };
            // SAFETY: addr..addr+len is writable memory owned by this
            // restore; nothing else references it while it is filled.
            *slot = IoSliceMut::new(unsafe { std::slice::from_raw_parts_mut((addr + skip) as *mut u8, (len - skip) as usize) });
            n += 1;
            skip = 0;
        }
        let at = off + done;
        let got = rustix::io::preadv(fd, iov.get_mut(..n).unwrap_or(&mut []), at).map_err(|e| JobError { what: "preadv", errno: Some(e), off: at })?;
        if got == 0 {
            return Err(JobError { what: "preadv", errno: None, off: at });
        }
        done += got as u64;
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::restore::maps::read_maps;
    use crate::restore::plan::{PageRun, VmaKind};
    use crate::restore::premap::{finish, premap_here};

    const MIB: u64 = 1 << 20;

    #[test]
    fn jobs_are_cut_and_grouped() {
        let pieces = [
            Piece::Plain(0x1000, 0x2000, 0),
            Piece::Plain(0x10000, 0x1000, 0x2000),
            Piece::Plain(0x20000, 0x1000, 0x9000),
            Piece::Huge(0x200000, 20 * MIB, 0xa000, true),
            Piece::Plain(0x4000000, 40 * MIB, 0xa000 + 20 * MIB),
        ];
        let (jobs, plain) = make_jobs(&pieces);
        assert_eq!(
            jobs,
            vec![
                Job::Plain { first: 0, count: 2 },
                Job::Plain { first: 2, count: 1 },
                Job::Huge { addr: 0x200000, len: 8 * MIB, off: 0xa000, thp: true },
                Job::Huge { addr: 0x200000 + 8 * MIB, len: 8 * MIB, off: 0xa000 + 8 * MIB, thp: true },
                Job::Huge { addr: 0x200000 + 16 * MIB, len: 4 * MIB, off: 0xa000 + 16 * MIB, thp: true },
                Job::Plain { first: 3, count: 1 },
                Job::Plain { first: 4, count: 1 },
                Job::Plain { first: 5, count: 1 },
            ]
        );
        let big = 0xa000 + 20 * MIB;
        assert_eq!(
            plain,
            vec![
                (0x1000, 0x2000, 0),
                (0x10000, 0x1000, 0x2000),
                (0x20000, 0x1000, 0x9000),
                (0x4000000, 16 * MIB, big),
                (0x4000000 + 16 * MIB, 16 * MIB, big + 16 * MIB),
                (0x4000000 + 32 * MIB, 8 * MIB, big + 32 * MIB),
            ]
        );
    }

    /// The u32 at the start of page `k` of the pages file.
    fn word(k: u64) -> u32 {
        (k as u32).wrapping_mul(2654435761) | 1
    }

    /// Fills a 40 MiB anonymous VMA (not 2 MiB aligned) with runs that
    /// leave holes, the ways given, and checks every page.
    /// Writes `data` (whole pages) to `path` with `O_DIRECT`, as the dump
    /// writes pages: none of it is left in the page cache.
    fn write_direct(path: &std::path::Path, data: &[u8]) {
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).custom_flags(libc::O_DIRECT).open(path).unwrap();
        // SAFETY: a fresh anonymous mapping, unmapped below.
        let buf = unsafe { rustix::mm::mmap_anonymous(std::ptr::null_mut(), data.len(), rustix::mm::ProtFlags::READ | rustix::mm::ProtFlags::WRITE, rustix::mm::MapFlags::PRIVATE) }.unwrap();
        // SAFETY: the mapping is data.len() writable bytes.
        let aligned = unsafe { std::slice::from_raw_parts_mut(buf.cast::<u8>(), data.len()) };
        aligned.copy_from_slice(data);
        std::io::Write::write_all(&mut f, aligned).unwrap();
        // SAFETY: unmapping the buffer mapped above.
        unsafe { rustix::mm::munmap(buf, data.len()) }.unwrap();
    }

    /// With `cold`, the pages file is written with `O_DIRECT` (as our dumps
    /// write it): not in the page cache, it must be read with `O_DIRECT`.
    fn fill_and_check(ways: FillWays, cold: bool) {
        fill_and_check_part(ways, if cold { Cold::All } else { Cold::Nothing })
    }

    /// Which part of the pages file the page cache lacks.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Cold {
        Nothing,
        All,
        /// Written through the page cache, then its second half dropped
        /// from it (a dump that went to the device part of the way).
        SecondHalf,
    }

    fn fill_and_check_part(ways: FillWays, part: Cold) {
        let cold = part != Cold::Nothing;
        let dir = std::env::temp_dir()
            .join(format!("criu-rs-fill-{}-{:?}-{part:?}", std::process::id(), ways).replace(['{', '}', ' ', ',', ':'], ""));
        std::fs::create_dir_all(&dir).unwrap();
        let pages_path = dir.join("pages-1.img");
        let t = 0x5200_0000_5000u64;
        let vma_pages = 40 * MIB / PAGE_SIZE;
        // (first page, pages): a short run, a long one crossing many huge
        // pages, one ending at the VMA's end.
        let runs_at = [(1u64, 3u64), (100, 7000), (7200, vma_pages - 7200)];
        let mut data = Vec::new();
        let mut runs = Vec::new();
        for &(first, n) in &runs_at {
            runs.push(PageRun { vaddr: t + first * PAGE_SIZE, nr_pages: n, file_off: data.len() as u64 });
            for k in first..first + n {
                let mut page = vec![0u8; PAGE_SIZE as usize];
                page[..4].copy_from_slice(&word(k).to_le_bytes());
                page[PAGE_SIZE as usize - 1] = k as u8 | 1;
                data.extend_from_slice(&page);
            }
        }
        match part {
            Cold::All => write_direct(&pages_path, &data),
            Cold::Nothing => std::fs::write(&pages_path, &data).unwrap(),
            Cold::SecondHalf => {
                std::fs::write(&pages_path, &data).unwrap();
                let f = std::fs::File::open(&pages_path).unwrap();
                f.sync_all().unwrap();
                let half = (data.len() / 2) as u64 / PAGE_SIZE * PAGE_SIZE;
                rustix::fs::fadvise(&f, half, std::num::NonZeroU64::new(data.len() as u64 - half), rustix::fs::Advice::DontNeed).unwrap();
            }
        }
        let vmas = vec![VmaPlan { start: t, end: t + 40 * MIB, pgoff: 0, prot: 3, flags: 0x22, madv: 0, lock_on_fault: false, kind: VmaKind::Anon }];
        let pages = PagesPlan { path: pages_path.clone(), runs };
        let (pm, fd) = premap_here(&vmas, &pages_path);
        if part == Cold::SecondHalf {
            let share = page_cache_share(&fd);
            assert!(share < 0.7, "half the pages file dropped from the page cache, yet {share} of it cached");
        } else if cold {
            assert!(page_cache_share(&fd) < CACHED_ENOUGH, "the pages file written with O_DIRECT is in the page cache");
        } else {
            assert!(page_cache_share(&fd) > 0.99, "the pages file just written is not in the page cache");
        }
        let filled = fill_with(&pm, &vmas, &pages, &fd, &[], ways).unwrap();
        assert_eq!(filled.bytes, data.len() as u64);
        assert_eq!(filled.direct, cold && ways.direct, "read with O_DIRECT");
        if !ways.huge {
            assert_eq!(filled.huge, 0);
        }
        assert_eq!(filled.helper, ways.helper);
        finish(&pm, &vmas).unwrap();
        let base = pm.placed[0].addr;
        for k in 0..vma_pages {
            let present = runs_at.iter().any(|&(first, n)| (first..first + n).contains(&k));
            // SAFETY: reading the readable VMA premapped above.
            let (head, tail) = unsafe {
                (std::ptr::read((base + k * PAGE_SIZE) as *const u32), std::ptr::read((base + (k + 1) * PAGE_SIZE - 1) as *const u8))
            };
            let want = if present { (word(k), k as u8 | 1) } else { (0, 0) };
            assert_eq!((head, tail), want, "page {k} ({ways:?})");
        }
        // Still one VMA with its own flags (the blob moves it as a whole).
        let maps = read_maps(None).unwrap();
        let line = maps.iter().find(|m| m.start <= base && base < m.end).unwrap();
        let around: Vec<_> = maps.iter().filter(|m| m.end > base - MIB && m.start < base + 41 * MIB).map(|m| format!("{:x}-{:x} {}", m.start, m.end, m.name)).collect();
        assert_eq!((line.start, line.end), (base, base + 40 * MIB), "the VMA was split: {around:?}");
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let head = format!("{base:x}-");
        let block: String = smaps.split_inclusive('\n').skip_while(|l| !l.starts_with(&head)).take(30).collect();
        let flags = block.lines().find(|l| l.starts_with("VmFlags:")).unwrap();
        assert!(!flags.contains(" hg") && !flags.contains(" um"), "VMA flags changed: {flags}");
        // The pages file is untouched.
        assert_eq!(std::fs::read(&pages_path).unwrap(), data);
        // SAFETY: unmapping the area this test mapped.
        unsafe { rustix::mm::munmap(pm.base as *mut c_void, pm.len as usize) }.unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn fill_with_huge_pages_puts_every_page_in_place() {
        fill_and_check(FillWays::default(), false);
    }

    #[test]
    fn fill_without_huge_pages_puts_every_page_in_place() {
        fill_and_check(FillWays { huge: false, ..FillWays::default() }, false);
    }

    #[test]
    fn plain_fill_on_one_thread_puts_every_page_in_place() {
        fill_and_check(FillWays { huge: false, uffd: false, helper: false, direct: false }, false);
    }

    #[test]
    fn a_file_not_in_the_page_cache_is_read_with_o_direct() {
        fill_and_check(FillWays::default(), true);
    }

    #[test]
    fn a_file_not_in_the_page_cache_is_read_with_o_direct_through_the_bounce_area() {
        fill_and_check(FillWays { huge: false, ..FillWays::default() }, true);
    }

    #[test]
    fn a_file_not_in_the_page_cache_is_read_with_o_direct_straight_into_place() {
        fill_and_check(FillWays { uffd: false, huge: false, ..FillWays::default() }, true);
    }

    #[test]
    fn a_file_half_in_the_page_cache_is_read_both_ways() {
        fill_and_check_part(FillWays::default(), Cold::SecondHalf);
        fill_and_check_part(FillWays { uffd: false, huge: false, ..FillWays::default() }, Cold::SecondHalf);
    }

    #[test]
    fn a_file_not_in_the_page_cache_is_read_buffered_when_told() {
        fill_and_check(FillWays { direct: false, ..FillWays::default() }, true);
    }

    #[test]
    fn a_second_fill_of_the_same_vma_keeps_what_the_first_put_there() {
        // As when pages come from the task's own image and then from a
        // parent image: the second fill registers a part of a VMA whose
        // first page the first fill wrote.
        let dir = std::env::temp_dir().join(format!("criu-rs-fill-twice-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (own, parent) = (dir.join("pages-1.img"), dir.join("pages-2.img"));
        std::fs::write(&own, vec![0x11u8; PAGE_SIZE as usize]).unwrap();
        std::fs::write(&parent, vec![0x22u8; 900 * PAGE_SIZE as usize]).unwrap();
        let t = 0x5400_0000_1000u64;
        let vmas = vec![VmaPlan { start: t, end: t + 8 * MIB, pgoff: 0, prot: 3, flags: 0x22, madv: 0, lock_on_fault: false, kind: VmaKind::Anon }];
        let (pm, fd) = premap_here(&vmas, &own);
        let own_pages = PagesPlan { path: own, runs: vec![PageRun { vaddr: t, nr_pages: 1, file_off: 0 }] };
        fill(&pm, &vmas, &own_pages, &fd, &[]).unwrap();
        let parent_fd = rustix::fs::open(&parent, rustix::fs::OFlags::RDONLY, rustix::fs::Mode::empty()).unwrap();
        let parent_pages = PagesPlan { path: parent, runs: vec![PageRun { vaddr: t + 1000 * PAGE_SIZE, nr_pages: 900, file_off: 0 }] };
        fill(&pm, &vmas, &parent_pages, &parent_fd, &[]).unwrap();
        let base = pm.placed[0].addr;
        // SAFETY: reading the readable VMA premapped above.
        let byte = |k: u64| unsafe { std::ptr::read((base + k * PAGE_SIZE + 5) as *const u8) };
        assert_eq!(byte(0), 0x11, "the first fill's page was lost");
        assert_eq!([byte(1), byte(999), byte(1000), byte(1899), byte(1900)], [0, 0, 0x22, 0x22, 0]);
        // SAFETY: unmapping the area this test mapped.
        unsafe { rustix::mm::munmap(pm.base as *mut c_void, pm.len as usize) }.unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_short_pages_file_is_an_error() {
        let dir = std::env::temp_dir().join(format!("criu-rs-fill-short-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let pages_path = dir.join("pages-1.img");
        std::fs::write(&pages_path, vec![7u8; 3 * MIB as usize]).unwrap();
        let t = 0x5300_0000_0000u64;
        let vmas = vec![VmaPlan { start: t, end: t + 16 * MIB, pgoff: 0, prot: 3, flags: 0x22, madv: 0, lock_on_fault: false, kind: VmaKind::Anon }];
        let pages = PagesPlan { path: pages_path.clone(), runs: vec![PageRun { vaddr: t, nr_pages: 16 * MIB / PAGE_SIZE, file_off: 0 }] };
        let (pm, fd) = premap_here(&vmas, &pages_path);
        for huge in [true, false] {
            let err = fill_with(&pm, &vmas, &pages, &fd, &[], FillWays { huge, ..FillWays::default() }).unwrap_err().to_string();
            assert!(err.contains("unexpected end of file"), "{err}");
        }
        // SAFETY: unmapping the area this test mapped.
        unsafe { rustix::mm::munmap(pm.base as *mut c_void, pm.len as usize) }.unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
