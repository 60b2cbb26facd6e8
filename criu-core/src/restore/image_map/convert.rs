//! Turning the regions a `--mmap-page-image` restore mapped from the pages
//! images into plain anonymous memory, while the process runs.
//!
//! # The switch, and why this one
//!
//! A region is a private mapping of a pages image: its pages are either
//! still the file's (page-cache pages, never written) or private copies the
//! process made by writing (anonymous pages in a file VMA). The process
//! must end with an anonymous VMA at the same place holding the same bytes,
//! and no write may be lost between the copy and the switch.
//!
//! What the kernel offers, and what each is good for here:
//! - `UFFDIO_MOVE` would move the written pages without copying, but it
//!   moves only between anonymous VMAs: the region is a file VMA.
//! - A userfaultfd cannot catch missing faults on a private file mapping,
//!   and synchronous write-protection is for anonymous, shmem and hugetlb
//!   memory only; *asynchronous* write-protection (`UFFD_FEATURE_WP_ASYNC`
//!   with `WP_UNPOPULATED`) works on any memory and never stops the
//!   process: the kernel clears a page's protection on its first write,
//!   and `PAGEMAP_SCAN` lists the pages written since ([`crate::dump::track`]
//!   uses the same for pre-dumps).
//! - `mremap(MREMAP_FIXED)` of a fresh anonymous copy over the region
//!   replaces it atomically, page tables and all, and the file's last
//!   reference goes with it.
//! - The one thing nothing replaces is a moment where no thread writes
//!   between the last copy and the `mremap`: a `PTRACE_INTERRUPT` stop of
//!   the process's threads (they resume where they were; a syscall they
//!   were in restarts, as after a dump with `--leave-running`).
//!
//! So each region, cut into chunks of at most [`CHUNK`] bytes, goes
//! through:
//! 1. *stop*: an injected `mmap` makes the anonymous copy area in the
//!    process (2 MiB aligned like the region, so huge pages survive the
//!    move); *go*;
//! 2. running: the copy area is made of huge pages where that is faster
//!    (`huge_copy_area`, `PageChoice`: on this VM every 4 KiB fault of
//!    fresh memory costs 10-20 µs); the chunk is write-protected
//!    (asynchronously) through a userfaultfd the process made (an injected
//!    `userfaultfd`, our copy by `pidfd_getfd`, theirs closed), then copied
//!    into the copy area with `process_vm_writev` by two threads: the pages
//!    the process wrote (its private copies, `PAGEMAP_SCAN`) read from the
//!    region with `process_vm_readv`, the others read from the image file,
//!    from the page cache where it holds them and with `O_DIRECT` where it
//!    does not (see `copy_first`: no page-cache copy of the memory is made);
//! 3. *stop*: `PAGEMAP_SCAN` lists the pages written since step 2's
//!    protection; they are copied again; injected `mprotect` (the region's
//!    protection), `mremap` of the copy over the chunk, `madvise`s for the
//!    VMA's flags (huge pages, dontdump, dontfork, mergeable) and `mlock`
//!    when it was locked; the next chunk's copy area is mapped where this
//!    one was (one injected `mmap`); *go*.
//!
//! Step 2 copies again, while the process runs, what was written during
//! the copy before (the scan protects those pages again), up to [`ROUNDS`]
//! times while that shrinks by half each round; so the stop of step 3
//! copies only what was written during the last round.
//! Where write-protection cannot be set up (an old kernel, the range held
//! by another userfaultfd), step 3 copies every private copy in the chunk
//! instead (`PAGEMAP_SCAN` for present pages that are not the file's):
//! still exact, since a written page is always a private copy, only a
//! longer stop. Before the `mremap`, step 3 checks in `/proc/PID/maps`
//! that the chunk is still the same mapping of the same image: a process
//! that unmapped or replaced it meanwhile keeps what it made.
//!
//! The conversion needs nothing kept from the restore: the regions are
//! found in `/proc/PID/maps` as private mappings of the pages images
//! (device and inode of every `pages-*.img` of the images directory and its
//! parent chain). So a conversion stopped half-way (the helper killed)
//! leaves a process running on what is left of its mappings (the images
//! must stay), and the same function run again (`criu-rs restore
//! --finish-mmap PID`) completes it; a copy area left mapped by a killed
//! helper (step 1 done, step 3 not) stays in the process as unused
//! anonymous memory of at most one chunk.

use crate::dump::track::{copy_fd, start_area, TRACK_FEATURES};
use crate::proc::maps::{read_smaps, vmflag, MapEntry};
use crate::proc::pagemap::Pagemap;
use crate::ptrace::freeze::Frozen;
use crate::ptrace::inject::{vdso_syscall_ip, Injector};
use crate::ptrace::remote;
use crate::ptrace::PtraceError;
use crate::uffd::Uffd;
use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Largest piece of a region switched at once (the copy area's size, and
/// the most a stop may have to copy).
pub const CHUNK: u64 = 16 << 20;
/// Most copy rounds while the process runs, for the pages written during
/// the round before (a process writing everything all the time never
/// settles; one writing a little does after a round or two).
const ROUNDS: usize = 3;
/// Below this many bytes written during a round, the rest is copied
/// during the stop.
const SETTLED: u64 = 256 << 10;
/// Bytes copied per `process_vm_readv`/`writev` pair.
const COPY_STEP: usize = 8 << 20;
/// Huge page size: copy areas keep the region's offset within one.
const HUGE: u64 = 2 << 20;
/// Test knob: with `CRIU_RS_CONVERT_STALL_AFTER=N` set, the conversion
/// stops for good (sleeps until killed) after switching N chunks, so that
/// a test can kill it half-way.
pub const STALL_ENV: &str = "CRIU_RS_CONVERT_STALL_AFTER";
/// Test knob: `CRIU_RS_CONVERT_PAUSE_MS=N` makes the conversion wait N ms
/// after each chunk (a test's program then surely runs during it).
pub const PAUSE_ENV: &str = "CRIU_RS_CONVERT_PAUSE_MS";
/// How long freezing a process may take.
const FREEZE_TIMEOUT: Duration = Duration::from_secs(30);

const NR_MMAP: i64 = libc::SYS_mmap;
const NR_MUNMAP: i64 = libc::SYS_munmap;
const NR_MPROTECT: i64 = libc::SYS_mprotect;
const NR_MREMAP: i64 = libc::SYS_mremap;
const NR_MADVISE: i64 = libc::SYS_madvise;
const NR_MLOCK: i64 = libc::SYS_mlock;
const NR_USERFAULTFD: i64 = libc::SYS_userfaultfd;
const NR_CLOSE: i64 = libc::SYS_close;

/// Error type for [`convert_tree`] and [`image_files`].
#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    /// Tracing the process failed.
    #[error(transparent)]
    Ptrace(#[from] PtraceError),
    /// Reading `/proc` failed.
    #[error(transparent)]
    Proc(#[from] crate::proc::ProcError),
    /// A syscall run in the process failed.
    #[error("pid {pid}: {call} in the process: {errno}")]
    Injected { pid: i32, call: String, errno: rustix::io::Errno },
    /// Copying a region's bytes failed (the image truncated under the
    /// process, or the process gone).
    #[error("pid {pid}: copying {what} {addr:#x}+{len:#x}: {errno}")]
    Copy { pid: i32, what: &'static str, addr: u64, len: u64, errno: nix::errno::Errno },
    /// The images directory could not be read.
    #[error("{path}: {source}")]
    Images { path: PathBuf, source: std::io::Error },
    /// The process has no vDSO to run syscalls from.
    #[error("pid {0}: no vDSO with a syscall instruction")]
    NoVdso(i32),
}

type Result<T> = std::result::Result<T, ConvertError>;

/// The pages images whose private mappings are converted, by (device
/// major, minor, inode) as `/proc/PID/maps` names them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageFiles {
    files: BTreeSet<(u32, u32, u64)>,
}

impl ImageFiles {
    /// Whether `m` is a private mapping of one of the images.
    pub fn maps(&self, m: &MapEntry) -> bool {
        !m.shared && m.inode != 0 && self.files.contains(&(m.dev.0, m.dev.1, m.inode))
    }

    /// Whether there is no image at all.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }
}

/// Every `pages-*.img` of `dir` and of its parent chain (`dir/parent`,
/// followed as pre-dumps link them).
pub fn image_files(dir: &Path) -> Result<ImageFiles> {
    let mut out = ImageFiles::default();
    let mut seen = BTreeSet::new();
    let mut at = Some(dir.to_path_buf());
    while let Some(d) = at.take() {
        let Ok(real) = std::fs::canonicalize(&d) else { break };
        if !seen.insert(real.clone()) {
            break;
        }
        let rd = std::fs::read_dir(&real).map_err(|source| ConvertError::Images { path: real.clone(), source })?;
        for e in rd.flatten() {
            let name = e.file_name();
            let name = name.to_string_lossy();
            if name.starts_with("pages-") && name.ends_with(".img") {
                if let Ok(md) = e.metadata() {
                    let dev = md.dev();
                    out.files.insert((libc::major(dev), libc::minor(dev), md.ino()));
                }
            }
        }
        let parent = real.join("parent");
        if parent.exists() {
            at = Some(parent);
        }
    }
    Ok(out)
}

/// What a conversion did, for the log and the bench.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Converted {
    /// Tasks looked at.
    pub tasks: usize,
    /// Chunks switched, and their bytes.
    pub chunks: usize,
    pub bytes: u64,
    /// Bytes copied again during the stops.
    pub recopied: u64,
    /// Longest stop of a task.
    pub longest_stop: Duration,
    /// Chunks left alone because the process changed them meanwhile.
    pub skipped: usize,
    /// Bytes of copy areas made of huge pages before the copy (see
    /// [`huge_copy_area`]).
    pub huge: u64,
    /// Bytes of the images read from the page cache, and from the disk.
    pub cached: u64,
    pub direct: u64,
}

/// Converts every image mapping of `root` and of its descendants (as
/// they are now) into anonymous memory; see the module doc.
pub fn convert_tree(root: i32, files: &ImageFiles) -> Result<Converted> {
    let mut total = Converted::default();
    for pid in tree_of(root)? {
        convert_task(pid, files, &mut total)?;
        total.tasks += 1;
    }
    Ok(total)
}

/// `root` and its descendants, parents first.
fn tree_of(root: i32) -> Result<Vec<i32>> {
    let mut all = vec![root];
    let mut i = 0;
    while i < all.len() {
        let pid = all[i];
        for tid in crate::proc::misc::read_tasks(pid).unwrap_or_default() {
            let path = format!("/proc/{pid}/task/{tid}/children");
            for c in std::fs::read_to_string(path).unwrap_or_default().split_whitespace() {
                if let Ok(c) = c.parse::<i32>() {
                    if !all.contains(&c) {
                        all.push(c);
                    }
                }
            }
        }
        i += 1;
    }
    Ok(all)
}

/// One chunk to switch: where, and the mapping it belongs to as first seen.
#[derive(Debug, Clone)]
struct Chunk {
    start: u64,
    end: u64,
    /// The region's map entry (for its file, offset, protection and flags).
    map: MapEntry,
}

impl Chunk {
    fn len(&self) -> u64 {
        self.end - self.start
    }

    /// The file offset at `addr` inside the chunk.
    fn offset_at(&self, addr: u64) -> u64 {
        self.map.offset + (addr - self.map.start)
    }
}

/// The chunks of `pid`'s image mappings, in address order.
fn chunks_of(maps: &[MapEntry], files: &ImageFiles) -> Vec<Chunk> {
    let mut out = Vec::new();
    for m in maps.iter().filter(|m| files.maps(m)) {
        let mut at = m.start;
        while at < m.end {
            // Chunk ends on CHUNK boundaries of the address space, so that
            // a restart cuts the same way.
            let end = ((at / CHUNK + 1) * CHUNK).min(m.end);
            out.push(Chunk { start: at, end, map: m.clone() });
            at = end;
        }
    }
    out
}

/// Converts `pid`'s image mappings.
fn convert_task(pid: i32, files: &ImageFiles, total: &mut Converted) -> Result<()> {
    let maps = read_smaps(pid)?;
    let chunks = chunks_of(&maps, files);
    if chunks.is_empty() {
        tracing::debug!(pid, "no image mapping left");
        return Ok(());
    }
    let syscall_ip = vdso_syscall_ip(pid, &maps).ok_or(ConvertError::NoVdso(pid))?;
    let started = Instant::now();
    tracing::info!(pid, chunks = chunks.len(), bytes = chunks.iter().map(Chunk::len).sum::<u64>(), "converting image mappings");
    let pagemap = Pagemap::open(pid)?;
    let mut uffd: Option<Uffd> = None;
    let mut raw = vec![0u8; COPY_STEP + DIRECT_ALIGN];
    let skip = raw.as_ptr().align_offset(DIRECT_ALIGN);
    let buf = &mut raw[skip..skip + COPY_STEP];
    let mut reads = ImageReads::new(pid);
    // For MADV_COLLAPSE of the copy areas; None (and 4 KiB pages) where
    // the kernel refuses it.
    let mut pidfd = rustix::process::Pid::from_raw(pid).and_then(|p| {
        rustix::process::pidfd_open(p, rustix::process::PidfdFlags::empty()).map_err(|e| tracing::debug!(pid, "no huge copy areas: pidfd_open: {e}")).ok()
    });
    let mut pages = PageChoice::default();
    // The copy area for the next chunk, made during the previous stop.
    let mut area: Option<u64> = None;
    let stall_after: Option<usize> = std::env::var(STALL_ENV).ok().and_then(|v| v.parse().ok());
    let pause = std::env::var(PAUSE_ENV).ok().and_then(|v| v.parse().ok()).map(Duration::from_millis);
    for (i, c) in chunks.iter().enumerate() {
        if stall_after.is_some_and(|n| total.chunks >= n) {
            tracing::warn!(pid, "{STALL_ENV}: stalling until killed");
            loop {
                std::thread::sleep(Duration::from_secs(3600));
            }
        }
        // 1. A copy area (and, the first time, the userfaultfd).
        let copy = match area.take() {
            Some(a) => a,
            None => {
                let t = Instant::now();
                let fr = Frozen::freeze(pid, FREEZE_TIMEOUT)?;
                let r = stopped(pid, &fr, syscall_ip, |inj| {
                    if uffd.is_none() {
                        uffd = take_uffd(inj, pid);
                    }
                    map_copy_area(inj, pid, c, None)
                });
                fr.detach()?;
                total.longest_stop = total.longest_stop.max(t.elapsed());
                r?
            }
        };
        // 2. Huge pages for the copy area; protect, then copy while the
        // process runs; again for what was written meanwhile, while that
        // shrinks.
        let t = Instant::now();
        let huge = if pages.want_huge() { huge_copy_area(pid, &mut pidfd, copy, c) } else { 0 };
        total.huge += huge;
        let collapse_us = t.elapsed().as_micros() as u64;
        let tracked = uffd.as_ref().is_some_and(|u| start_area(u, c.start, c.end));
        let t = Instant::now();
        copy_first(pid, c, copy, &pagemap, &mut reads, buf)?;
        let copy_us = t.elapsed().as_micros() as u64;
        pages.record(huge == c.len(), huge == 0, (collapse_us + copy_us) as f64 / c.len() as f64);
        let mut last = c.len();
        for _ in 1..ROUNDS {
            let mut dirty = Vec::new();
            if !tracked || !pagemap.scan_written(c.start, c.end, &mut dirty)? {
                break;
            }
            let bytes: u64 = dirty.iter().map(|(s, e)| e - s).sum();
            for &(s, e) in &dirty {
                copy_range(pid, s, copy + (s - c.start), e - s, &c.map, buf)?;
            }
            if bytes < SETTLED || bytes * 2 > last {
                break;
            }
            last = bytes;
        }
        // 3. Stop, copy what changed, switch.
        let t = Instant::now();
        let fr = Frozen::freeze(pid, FREEZE_TIMEOUT)?;
        let next = chunks.get(i + 1);
        let r = stopped(pid, &fr, syscall_ip, |inj| {
            if !still_mapped(pid, c, files)? {
                tracing::info!(pid, start = c.start, end = c.end, "chunk changed by the process meanwhile: left as it is");
                total.skipped += 1;
                unmap(inj, pid, copy, c.len())?;
            } else {
                let mut dirty = Vec::new();
                let scanned = if tracked { pagemap.scan_written(c.start, c.end, &mut dirty)? } else { false };
                if !scanned {
                    dirty.clear();
                    pagemap.scan(c.start, c.end, true, &mut dirty)?;
                }
                for &(s, e) in &dirty {
                    copy_range(pid, s, copy + (s - c.start), e - s, &c.map, buf)?;
                    total.recopied += e - s;
                }
                switch(inj, pid, copy, c)?;
                total.chunks += 1;
                total.bytes += c.len();
            }
            next.map(|n| map_copy_area(inj, pid, n, Some(copy))).transpose()
        });
        fr.detach()?;
        let stop = t.elapsed();
        total.longest_stop = total.longest_stop.max(stop);
        area = r?;
        tracing::info!(pid, start = c.start, end = c.end, huge, collapse_us, copy_us, stop_us = stop.as_micros() as u64, "region chunk converted to anonymous memory");
        if let Some(p) = pause {
            std::thread::sleep(p);
        }
    }
    total.cached += reads.cached;
    total.direct += reads.direct;
    tracing::info!(pid, elapsed_ms = started.elapsed().as_millis() as u64, cached = reads.cached, direct = reads.direct, "image mappings converted");
    Ok(())
}

/// Runs `f` with an injector on the leader (or the first thread) of the
/// frozen process, putting the thread back afterwards.
fn stopped<T>(pid: i32, fr: &Frozen, syscall_ip: u64, f: impl FnOnce(&mut Injector) -> Result<T>) -> Result<T> {
    let tid = fr.tids().first().copied().unwrap_or(pid);
    let mut inj = Injector::new(tid, Some(syscall_ip))?;
    let r = f(&mut inj);
    inj.restore()?;
    r
}

/// Runs syscall `nr` in the process; a negative result is an error naming `call`.
fn call(inj: &mut Injector, pid: i32, nr: i64, args: &[u64], call: impl FnOnce() -> String) -> Result<u64> {
    let r = inj.syscall(nr, args)?;
    if (-4095..0).contains(&r) {
        return Err(ConvertError::Injected { pid, call: call(), errno: rustix::io::Errno::from_raw_os_error(-r as i32) });
    }
    Ok(r as u64)
}

/// The process's own userfaultfd with asynchronous write-protection, or
/// None (then stops copy every private copy; see the module doc).
fn take_uffd(inj: &mut Injector, pid: i32) -> Option<Uffd> {
    const UFFD_USER_MODE_ONLY: u64 = 1;
    let flags = (libc::O_CLOEXEC | libc::O_NONBLOCK) as u64 | UFFD_USER_MODE_ONLY;
    let fd = match call(inj, pid, NR_USERFAULTFD, &[flags], || "userfaultfd".into()) {
        Ok(fd) => fd,
        Err(e) => {
            tracing::debug!(pid, "no write tracking: {e}");
            return None;
        }
    };
    let ours = copy_fd(pid, fd as i32);
    let _ = call(inj, pid, NR_CLOSE, &[fd], || "close".into());
    let uffd = Uffd::from_fd(ours.map_err(|e| tracing::debug!(pid, "no write tracking: {e}")).ok()?);
    match uffd.api(TRACK_FEATURES) {
        Ok(_) => Some(uffd),
        Err(e) => {
            tracing::debug!(pid, "no write tracking: UFFDIO_API: {e}");
            None
        }
    }
}

/// Maps the anonymous copy area for chunk `c` in the process, at the same
/// offset within a huge page as the chunk. `hint` is where the previous
/// chunk's copy area was (free again after its `mremap`): asked for first,
/// it takes one injected `mmap` instead of three (the kernel gives the hint
/// only where it is free).
fn map_copy_area(inj: &mut Injector, pid: i32, c: &Chunk, hint: Option<u64>) -> Result<u64> {
    let len = c.len();
    let prot = (libc::PROT_READ | libc::PROT_WRITE) as u64;
    let flags = (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as u64;
    let aligned = |at: u64| at % HUGE == c.start % HUGE;
    if let Some(h) = hint.map(|h| h - h % HUGE + c.start % HUGE) {
        let got = call(inj, pid, NR_MMAP, &[h, len, prot, flags, u64::MAX, 0], || format!("mmap({h:#x}, {len:#x})"))?;
        if aligned(got) || len < HUGE {
            return Ok(got);
        }
        unmap(inj, pid, got, len)?;
    }
    let extra = if len >= HUGE { HUGE } else { 0 };
    let raw = call(inj, pid, NR_MMAP, &[0, len + extra, prot, flags, u64::MAX, 0], || format!("mmap({:#x})", len + extra))?;
    if extra == 0 {
        return Ok(raw);
    }
    let at = raw + (c.start.wrapping_sub(raw) % HUGE);
    if at > raw {
        unmap(inj, pid, raw, at - raw)?;
    }
    if raw + len + extra > at + len {
        unmap(inj, pid, at + len, raw + len + extra - (at + len))?;
    }
    Ok(at)
}

/// `munmap(addr, len)` in the process.
fn unmap(inj: &mut Injector, pid: i32, addr: u64, len: u64) -> Result<()> {
    call(inj, pid, NR_MUNMAP, &[addr, len], || format!("munmap({addr:#x}, {len:#x})")).map(drop)
}

/// Whether the next copy area is made of huge pages: whichever of huge
/// and small pages copied the last chunks faster, per byte (a huge page
/// costs one fault, but where free memory is fragmented the kernel
/// compacts memory for each, and small pages win then); the other kind is
/// tried again every [`PROBE_EVERY`] chunks, as memory comes and goes.
#[derive(Debug, Default)]
struct PageChoice {
    /// µs per byte of the last chunks copied into huge and small pages.
    huge: Option<f64>,
    small: Option<f64>,
    chunks: usize,
    last_huge: bool,
}

/// See [`PageChoice`].
const PROBE_EVERY: usize = 8;

impl PageChoice {
    fn want_huge(&mut self) -> bool {
        self.chunks += 1;
        let faster = match (self.huge, self.small) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(h), Some(s)) => h <= s,
        };
        self.last_huge = if self.chunks % PROBE_EVERY == 0 { !faster } else { faster };
        self.last_huge
    }

    /// Records a chunk's cost (collapse and copy) per byte; a chunk copied
    /// partly into huge pages counts for neither.
    fn record(&mut self, all_huge: bool, all_small: bool, us_per_byte: f64) {
        let slot = match (all_huge, all_small) {
            (true, _) => &mut self.huge,
            (_, true) if !self.last_huge => &mut self.small,
            _ => return,
        };
        *slot = Some(slot.map_or(us_per_byte, |old| (old + us_per_byte) / 2.0));
    }
}

/// `MADV_COLLAPSE` (not in libc's constants yet).
const MADV_COLLAPSE: i32 = 25;

/// Makes the whole 2 MiB pages of the copy area for chunk `c` huge pages
/// before the copy writes them; returns their bytes (0 when it could not).
///
/// On this VM a page fault costs the same (10-20 µs) whether the page is
/// 4 KiB or 2 MiB: every first touch of a 4 KiB page of fresh memory is a
/// fault, and 262,144 of them cost 1.5-3 s per GiB, more than the copy
/// itself; 512 huge pages per GiB cost a fraction of that. The copy area
/// is not advised `MADV_HUGEPAGE` (the flag would move with it over the
/// region and stay in its `VmFlags`): one byte written in each huge page
/// gives it a page table, and `process_madvise(MADV_COLLAPSE)` (which needs
/// no advice, and with one present page fills the rest with zeroes) puts a
/// huge page there, all from here while the process runs. The copy area
/// keeps the chunk's offset within a huge page ([`map_copy_area`]), so the
/// `mremap` moves the huge pages whole. A region advised
/// `MADV_NOHUGEPAGE` gets small pages, as it had; a kernel that refuses
/// the collapse (no THP) leaves small pages for the rest of the task.
fn huge_copy_area(pid: i32, pidfd: &mut Option<rustix::fd::OwnedFd>, copy: u64, c: &Chunk) -> u64 {
    use std::os::fd::AsRawFd;
    let first = copy.next_multiple_of(HUGE);
    let last = (copy + c.len()) / HUGE * HUGE;
    let Some(fd) = pidfd.as_ref() else { return 0 };
    if last <= first || c.map.has(vmflag::NOHUGEPAGE) {
        return 0;
    }
    for at in (first..last).step_by(HUGE as usize) {
        if remote::process_vm_writev(pid, at, &[0u8]).is_err() {
            return 0;
        }
    }
    let iov = libc::iovec { iov_base: first as *mut libc::c_void, iov_len: (last - first) as usize };
    // SAFETY: process_madvise reads one iovec from `iov`, alive for the
    // call; the range is the copy area this conversion mapped in the process.
    let r = unsafe { libc::syscall(libc::SYS_process_madvise, fd.as_raw_fd(), &iov as *const libc::iovec, 1usize, MADV_COLLAPSE, 0u32) };
    if r < 0 {
        let e = std::io::Error::last_os_error();
        // EAGAIN/ENOMEM: no huge page free now; small pages this time.
        if !matches!(e.raw_os_error(), Some(libc::EAGAIN) | Some(libc::ENOMEM)) {
            tracing::debug!(pid, "no huge copy areas: process_madvise(MADV_COLLAPSE): {e}");
            *pidfd = None;
        }
        return 0;
    }
    last - first
}

/// The first copy of chunk `c` into the copy area at `copy`: the pages
/// the process wrote (private copies, found with `PAGEMAP_SCAN` after the
/// write tracking started) from its memory, every other page from the
/// pages image itself ([`ImageFile::read_at`]: what the page cache holds
/// from there, the rest with `O_DIRECT` where the file system allows it).
/// Reading the file rather than the mapping does not fault the image into
/// the page cache: on this kind of VM every page of fresh memory costs as
/// much as the copy itself, and the page cache would hold a second copy of
/// the process's memory that nobody reads again. A page
/// written after the scan is found written by the next scan, as any other
/// (without write tracking, the stop copies every private copy). Where the
/// scan or the file cannot be used, the whole chunk is read from the
/// mapping; so it is on a system with swap (a private copy swapped out
/// looks like the markers of write tracking to `PAGEMAP_SCAN`: see
/// [`Pagemap::scan_present_private`]).
fn copy_first(pid: i32, c: &Chunk, copy: u64, pagemap: &Pagemap, reads: &mut ImageReads, buf: &mut [u8]) -> Result<()> {
    let mut written = Vec::new();
    if reads.swap || !pagemap.scan_present_private(c.start, c.end, &mut written)? || reads.file(c).is_none() {
        return copy_range(pid, c.start, copy, c.len(), &c.map, buf);
    }
    let mut at = c.start;
    for (s, e) in written.into_iter().chain(std::iter::once((c.end, c.end))) {
        if s > at {
            reads.copy(pid, c, at, copy + (at - c.start), s - at, buf)?;
        }
        if e > s {
            copy_range(pid, s, copy + (s - c.start), e - s, &c.map, buf)?;
        }
        at = at.max(e);
    }
    Ok(())
}

/// Alignment of [`ImageReads`]'s buffer for `O_DIRECT`.
const DIRECT_ALIGN: usize = 4096;

/// The pages images a task maps, opened for reading by (device, inode):
/// through `/proc/PID/map_files/` (the very file mapped, wherever its name
/// went), once for page-cache reads and once with `O_DIRECT` where the file
/// system allows it. None for an image that cannot be opened (its chunks
/// are read from the mapping).
struct ImageReads {
    pid: i32,
    /// The system has swap (see [`copy_first`]).
    swap: bool,
    files: std::collections::BTreeMap<((u32, u32), u64), Option<ImageFile>>,
    /// Bytes read from the page cache, and from the disk.
    cached: u64,
    direct: u64,
}

/// One pages image, opened twice (see [`ImageFile::read_at`]).
struct ImageFile {
    buffered: std::fs::File,
    direct: Option<std::fs::File>,
}

impl ImageFile {
    /// Reads `buf.len()` bytes at `off`: what the page cache holds with
    /// `preadv2(RWF_NOWAIT)` (a copy from memory the VM already backs: an
    /// image just written by a dump, or pages the process faulted in
    /// before the conversion), the rest from the disk with `O_DIRECT`
    /// (no page-cache copy of memory the process is about to own; see
    /// [`copy_first`]). Returns the bytes that came from the page cache.
    fn read_at(&self, buf: &mut [u8], off: u64) -> std::io::Result<u64> {
        use std::os::unix::fs::FileExt;
        let mut got = 0usize;
        while got < buf.len() {
            let mut io = [std::io::IoSliceMut::new(&mut buf[got..])];
            match rustix::io::preadv2(&self.buffered, &mut io, off + got as u64, rustix::io::ReadWriteFlags::NOWAIT) {
                Ok(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => got += n,
                Err(_) => break,
            }
        }
        if got < buf.len() {
            // O_DIRECT reads whole aligned blocks: from the page boundary.
            let from = got / DIRECT_ALIGN * DIRECT_ALIGN;
            self.direct.as_ref().unwrap_or(&self.buffered).read_exact_at(&mut buf[from..], off + from as u64)?;
            got = from;
        }
        Ok(got as u64)
    }
}

impl ImageReads {
    fn new(pid: i32) -> Self {
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let swap = meminfo.lines().find_map(|l| l.strip_prefix("SwapTotal:")).is_none_or(|v| v.trim() != "0 kB");
        ImageReads { pid, swap, files: Default::default(), cached: 0, direct: 0 }
    }

    fn file(&mut self, c: &Chunk) -> Option<&ImageFile> {
        let m = &c.map;
        let pid = self.pid;
        self.files
            .entry((m.dev, m.inode))
            .or_insert_with(|| {
                use std::os::unix::fs::OpenOptionsExt;
                // The VMA holding the chunk now (write tracking splits
                // VMAs), named in map_files by its range.
                let now = crate::proc::maps::read_maps(pid).ok()?.into_iter().find(|v| v.start <= c.start && c.start < v.end)?;
                let path = format!("/proc/{pid}/map_files/{:x}-{:x}", now.start, now.end);
                let open = |flags| std::fs::OpenOptions::new().read(true).custom_flags(flags).open(&path);
                let buffered = open(0).map_err(|e| tracing::debug!(pid, path, "image read from the mapping: {e}")).ok()?;
                let md = buffered.metadata().ok()?;
                if (libc::major(md.dev()), libc::minor(md.dev())) != m.dev || md.ino() != m.inode {
                    return None;
                }
                let direct = open(libc::O_DIRECT).map_err(|e| tracing::debug!(pid, path, "no O_DIRECT reads: {e}")).ok();
                Some(ImageFile { buffered, direct })
            })
            .as_ref()
    }

    /// Copies `len` bytes of chunk `c` at `from` (never written by the
    /// process: the image's bytes) to `to` in the process. A piece whose
    /// read fails or comes short (a file system refusing `O_DIRECT` reads,
    /// an image cut short) is copied from the mapping instead.
    ///
    /// Two threads, each with half of `buf`, take every other piece, each
    /// reading its piece and writing it into the process: the faults of
    /// the copy area's fresh memory (most of the time here) and the reads
    /// run on both cores when they are free.
    fn copy(&mut self, pid: i32, c: &Chunk, from: u64, to: u64, len: u64, buf: &mut [u8]) -> Result<()> {
        let Some(f) = self.file(c) else { return copy_range(pid, from, to, len, &c.map, buf) };
        let (one, two) = buf.split_at_mut(buf.len() / 2);
        let piece = one.len() as u64;
        let pieces = len.div_ceil(piece);
        // Pieces first, second, ... of every other: (bytes from the page
        // cache, from the disk).
        let work = |first: u64, b: &mut [u8]| -> Result<(u64, u64)> {
            let (mut cached, mut disk) = (0u64, 0u64);
            for k in (first..pieces).step_by(2) {
                let at = k * piece;
                let n = (len - at).min(piece) as usize;
                match f.read_at(&mut b[..n], c.offset_at(from + at)) {
                    Ok(hit) => {
                        cached += hit;
                        disk += n as u64 - hit;
                        remote::process_vm_writev(pid, to + at, &b[..n])
                            .map_err(|errno| ConvertError::Copy { pid, what: "into the copy area", addr: to + at, len: n as u64, errno })?;
                    }
                    Err(_) => copy_range(pid, from + at, to + at, n as u64, &c.map, b)?,
                }
            }
            Ok((cached, disk))
        };
        let (r1, r2) = std::thread::scope(|scope| {
            let second = scope.spawn(|| work(1, two));
            let r1 = work(0, one);
            (r1, second.join().unwrap_or_else(|_| Ok((0, 0))))
        });
        let ((c1, d1), (c2, d2)) = (r1?, r2?);
        self.cached += c1 + c2;
        self.direct += d1 + d2;
        Ok(())
    }
}

/// Copies `len` bytes at `from` to `to`, both in process `pid`, through
/// `buf`. A region without read permission is read through
/// `/proc/PID/mem` (which may read it).
fn copy_range(pid: i32, from: u64, to: u64, len: u64, map: &MapEntry, buf: &mut [u8]) -> Result<()> {
    let mem = if map.read { None } else { std::fs::File::open(format!("/proc/{pid}/mem")).ok() };
    let mut done = 0u64;
    while done < len {
        let n = (len - done).min(buf.len() as u64) as usize;
        let chunk = &mut buf[..n];
        let read = match &mem {
            Some(f) => std::os::unix::fs::FileExt::read_exact_at(f, chunk, from + done)
                .map_err(|e| nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO))),
            None => remote::read_exact(pid, from + done, chunk),
        };
        read.map_err(|errno| ConvertError::Copy { pid, what: "the image mapping", addr: from + done, len: n as u64, errno })?;
        remote::process_vm_writev(pid, to + done, chunk)
            .map_err(|errno| ConvertError::Copy { pid, what: "into the copy area", addr: to + done, len: n as u64, errno })?;
        done += n as u64;
    }
    Ok(())
}

/// Whether chunk `c` is still, whole, the mapping of the same image at the
/// same offsets.
fn still_mapped(pid: i32, c: &Chunk, files: &ImageFiles) -> Result<bool> {
    let maps = crate::proc::maps::read_maps(pid)?;
    let mut at = c.start;
    for m in maps.iter().filter(|m| m.end > c.start && m.start < c.end) {
        let same = files.maps(m) && (m.dev, m.inode) == (c.map.dev, c.map.inode) && m.offset + (at - m.start) == c.offset_at(at);
        if m.start > at || !same {
            return Ok(false);
        }
        at = m.end;
    }
    Ok(at >= c.end)
}

/// Gives the copy area the chunk's protection and flags and moves it over
/// the chunk.
fn switch(inj: &mut Injector, pid: i32, copy: u64, c: &Chunk) -> Result<()> {
    let m = &c.map;
    let len = c.len();
    let prot = (m.read as u64 * libc::PROT_READ as u64) | (m.write as u64 * libc::PROT_WRITE as u64) | (m.exec as u64 * libc::PROT_EXEC as u64);
    if prot != (libc::PROT_READ | libc::PROT_WRITE) as u64 {
        // The copy area is made read-write.
        call(inj, pid, NR_MPROTECT, &[copy, len, prot], || format!("mprotect({copy:#x}, {len:#x}, {prot})"))?;
    }
    let flags = (libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED) as u64;
    let got = call(inj, pid, NR_MREMAP, &[copy, len, len, flags, c.start], || format!("mremap({copy:#x} -> {:#x}, {len:#x})", c.start))?;
    if got != c.start {
        return Err(ConvertError::Injected { pid, call: format!("mremap to {:#x} went to {got:#x}", c.start), errno: rustix::io::Errno::FAULT });
    }
    for (flag, advice) in [
        (vmflag::HUGEPAGE, libc::MADV_HUGEPAGE),
        (vmflag::NOHUGEPAGE, libc::MADV_NOHUGEPAGE),
        (vmflag::DONTDUMP, libc::MADV_DONTDUMP),
        (vmflag::DONTCOPY, libc::MADV_DONTFORK),
        (vmflag::MERGEABLE, libc::MADV_MERGEABLE),
    ] {
        if m.has(flag) {
            call(inj, pid, NR_MADVISE, &[c.start, len, advice as u64], || format!("madvise({:#x}, {len:#x}, {advice})", c.start))?;
        }
    }
    if m.has(vmflag::LOCKED) {
        call(inj, pid, NR_MLOCK, &[c.start, len], || format!("mlock({:#x}, {len:#x})", c.start))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::restore::plan::PAGE_SIZE;

    fn entry(start: u64, end: u64, inode: u64) -> MapEntry {
        MapEntry {
            start,
            end,
            read: true,
            write: true,
            exec: false,
            shared: false,
            offset: 0x1000,
            dev: (254, 0),
            inode,
            path: "/x/pages-1.img".into(),
            deleted: false,
            vmflags: 0,
        }
    }

    #[test]
    fn chunks_cut_image_mappings_at_chunk_boundaries_only() {
        let files = ImageFiles { files: [(254, 0, 7)].into_iter().collect() };
        let maps = [entry(CHUNK - PAGE_SIZE, 2 * CHUNK + PAGE_SIZE, 7), entry(4 * CHUNK, 4 * CHUNK + PAGE_SIZE, 8)];
        let got: Vec<(u64, u64)> = chunks_of(&maps, &files).iter().map(|c| (c.start, c.end)).collect();
        assert_eq!(got, vec![(CHUNK - PAGE_SIZE, CHUNK), (CHUNK, 2 * CHUNK), (2 * CHUNK, 2 * CHUNK + PAGE_SIZE)]);
        let c = &chunks_of(&maps, &files)[1];
        assert_eq!(c.offset_at(CHUNK), 0x1000 + PAGE_SIZE);
    }

    #[test]
    fn page_choice_takes_the_faster_kind_and_probes_the_other() {
        let mut p = PageChoice::default();
        // Nothing measured: huge pages first, then small ones to compare.
        assert!(p.want_huge());
        p.record(true, false, 3.0);
        assert!(!p.want_huge());
        p.record(false, true, 1.0);
        // Small pages were faster: kept, but every PROBE_EVERY-th chunk
        // tries huge pages again.
        let picks: Vec<bool> = (3..=PROBE_EVERY + 1).map(|_| p.want_huge()).collect();
        assert_eq!(picks.iter().filter(|&&h| h).count(), 1, "{picks:?}");
        assert!(picks[PROBE_EVERY - 3]);
        // A probe that turns out faster flips the choice (averaged: 3.0 and
        // 0.2 make 1.6, then 0.9 < 1.0).
        p.record(true, false, 0.2);
        assert!(!p.want_huge());
        p.record(true, false, 0.2);
        assert!(p.want_huge());
        // A chunk copied partly into huge pages (a collapse refused half
        // way) counts for neither.
        let before = (p.huge, p.small);
        p.record(false, false, 99.0);
        assert_eq!((p.huge, p.small), before);
    }

    fn image_file(path: &Path) -> ImageFile {
        use std::os::unix::fs::OpenOptionsExt;
        let open = |flags| std::fs::OpenOptions::new().read(true).custom_flags(flags).open(path);
        ImageFile { buffered: open(0).unwrap(), direct: open(libc::O_DIRECT).ok() }
    }

    #[test]
    fn image_reads_come_from_the_page_cache_or_the_disk_with_the_same_bytes() {
        use std::io::Write;
        use std::os::fd::AsRawFd;
        // (Where /tmp is a tmpfs its pages never leave the page cache: the
        // second read then comes from it too, as the assertions allow.)
        let dir = std::env::temp_dir().join(format!("criu-rs-convert-reads-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("pages-1.img");
        let pages = 64u64;
        let data: Vec<u8> = (0..pages * PAGE_SIZE).map(|i| (i / 8 % 251) as u8 ^ (i / PAGE_SIZE) as u8).collect();
        let mut f = std::fs::File::create(&path).unwrap();
        f.write_all(&data).unwrap();
        f.sync_all().unwrap();
        let img = image_file(&path);
        let mut raw = vec![0u8; (pages * PAGE_SIZE) as usize + DIRECT_ALIGN];
        let skip = raw.as_ptr().align_offset(DIRECT_ALIGN);
        let buf = &mut raw[skip..skip + (16 * PAGE_SIZE) as usize];
        // Just written: all of it from the page cache.
        assert_eq!(img.read_at(buf, 8 * PAGE_SIZE).unwrap(), 16 * PAGE_SIZE);
        assert!(buf[..] == data[(8 * PAGE_SIZE) as usize..(24 * PAGE_SIZE) as usize]);
        // Dropped from the page cache (written back above): read from the
        // disk, the same bytes.
        // SAFETY: posix_fadvise on a descriptor this test owns.
        assert_eq!(unsafe { libc::posix_fadvise(img.buffered.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) }, 0);
        buf.fill(0);
        let hit = img.read_at(buf, 40 * PAGE_SIZE).unwrap();
        assert!(hit <= 16 * PAGE_SIZE);
        assert!(buf[..] == data[(40 * PAGE_SIZE) as usize..(56 * PAGE_SIZE) as usize]);
        // Past the end (an image cut short): an error, not zeroes.
        assert!(img.read_at(buf, 56 * PAGE_SIZE).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn shared_mappings_of_an_image_are_not_converted() {
        let files = ImageFiles { files: [(254, 0, 7)].into_iter().collect() };
        let mut m = entry(0, PAGE_SIZE, 7);
        assert!(files.maps(&m));
        m.shared = true;
        assert!(!files.maps(&m));
    }
}
