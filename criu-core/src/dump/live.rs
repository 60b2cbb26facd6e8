//! Live memory copy: the tree is frozen only to collect its registers and
//! small state and to fix which pages the dump copies; the pages are then
//! copied while the tree runs.
//!
//! Two ways, by what the images are for:
//!
//! - **Exact** (`dump -R`, and the incremental `dump -R --prev-images-dir`
//!   after a pre-dump): a userfaultfd in synchronous write-protect mode
//!   ([`LIVE_FEATURES`]) is registered (`UFFDIO_REGISTER` with `MODE_WP`)
//!   on every private anonymous area with pages to copy and their pages
//!   are protected (`UFFDIO_WRITEPROTECT`). To keep the page-table walk out
//!   of the freeze, this is armed ahead ([`arm`]): a first short freeze
//!   gives each task its descriptor and registers its areas, then the
//!   areas are protected while the tree runs (a write meanwhile faults and
//!   is simply let through, un-protected). The dump's own freeze then
//!   protects only the populated pages that are not (written or populated
//!   since the arming, found with `PAGEMAP_SCAN`; every page of an area
//!   new to the descriptor) in [`TaskLive::arm_frozen`]. The tree is let
//!   go. A copier ([`super::memory::copy_private`]) reads the areas in
//!   address order, batch after batch, and un-protects each batch once
//!   read. The first write to a page not copied yet faults: the writing
//!   thread waits while a server thread ([`Server`]) reads that page and up
//!   (for a writer going forward) up to [`NEIGHBOURS`] - 1 following ones
//!   into an early store, then
//!   un-protects them, which wakes the thread. The copier takes a page from
//!   the early store when it gets there. Every page is thus read before any
//!   write after the freeze lands on it: the snapshot is the memory of the
//!   freeze instant, as a frozen copy would be. The server runs from the
//!   arming to the end, through the dump's freeze (a thread waiting on a
//!   fault when it came, or an injected call writing to protected memory,
//!   needs it). After a pre-dump the areas are held by the pre-dump's
//!   asynchronous tracking: after the arming they are moved to the exact
//!   descriptor a slice at a time, each slice in a short freeze of its own
//!   ([`swap_areas`]: pages the tracking saw written kept, unregistered
//!   there, registered and protected here); at the dump's freeze, the
//!   pages written since the pre-dump are those plus the ones found
//!   un-protected ([`super::track::TaskTrack::prepare`]).
//! - **Tracked** (`pre-dump`): the pre-dump's own asynchronous tracking
//!   ([`super::track`]) is set up while frozen, so any page written after
//!   the freeze is dumped again by the next dump; the pages are copied
//!   while the tree runs with no protection of their own (a page torn by a
//!   write during its copy is one the next dump replaces; one unmapped
//!   meanwhile reads as zeros and is not in that dump's pagemap).
//!
//! What stays copied under the freeze (exact mode): private areas the
//! kernel will not write-protect synchronously (private file mappings:
//! synchronous `MODE_WP` is for anonymous, shmem and hugetlb memory only;
//! areas another userfaultfd holds), copied into the early store before the
//! tree is let go; shared memory (anonymous shared objects, memfd
//! contents), dumped frozen by [`super::collect`] as before. Both are
//! usually small (a library's data pages).
//!
//! Changes to the address space during the copy: the userfaultfd asks for
//! `UNMAP`, `REMAP` and `REMOVE` events (the task waits until the server
//! reads each). The kernel reports `munmap` after the pages are gone, and a
//! removal (`MADV_DONTNEED`) as it happens: when such an event covers a page
//! not copied yet, the freeze-instant contents are lost and the live copy
//! is abandoned ([`DumpError::LiveBroken`]): the uffds are closed (the tree
//! runs on unprotected) and the dump starts over with the memory copied
//! under the freeze. A page that cannot be read (the process exited,
//! exec'd, or made an area unreadable) abandons it the same way. New
//! mappings are not registered and not dumped (they did not exist at the
//! freeze); `fork` needs no event: without `EVENT_FORK` the child's areas
//! are not registered and its page-table entries lose the protection.
//!
//! Safety: the userfaultfd is made in the task by an injected syscall,
//! copied out with `pidfd_getfd` and closed in the task before it runs
//! ([`super::track::take_task_uffd`]): criu-rs holds the only reference.
//! If criu-rs dies at any moment, the kernel releases the descriptor with
//! it, which unregisters the areas, clears every protection and wakes any
//! waiting thread; nothing is left protected with nobody to serve it.
//! Kernel-mode writes (a `read(2)` into protected memory) fault to us like
//! user writes, so the descriptor is opened without `UFFD_USER_MODE_ONLY`,
//! which needs `CAP_SYS_PTRACE` in the task or `vm.unprivileged_userfaultfd
//! = 1`; a task that cannot have one is copied frozen.
//!
//! Out of the freeze too: `/proc/PID/smaps` (the areas' `VmFlags`; the
//! kernel counts every page of every area to print it, 100-200 ms per GiB)
//! is read just before it ([`SmapsAhead`]); frozen, `/proc/PID/maps` is read
//! and, when every line is as it was, the flags are taken from that reading
//! (else smaps is read frozen). An `madvise` in between changes flags
//! without a line: once the tree runs again smaps is read once more
//! ([`SmapsAhead::check`], beside the copy) and a flag that differs gives
//! the copy up ([`DumpError::LiveBroken`]). And the thread doing the frozen
//! work and the fault server run at real-time priority ([`super::boost`]).
//! What the freeze still costs: the registers and small state, the
//! injected queries, `maps`, the pagemap scans and the re-protection above
//! (a few ms for 1 GiB).
//!
//! A writer faster than the copier: the early store holds at most
//! [`EARLY_CAP`] bytes; beyond that a fault waits until the copier has
//! consumed some (the process is throttled to the copier's speed, the
//! snapshot still completes and stays exact). The log reports the faults
//! served, pages copied early and the time faults were held back.

use super::memory::{read_runs, AreaCopy, Run};
use super::DumpError;
use crate::proc::pagemap::{Pagemap, PAGE_SIZE};
use crate::uffd::{feature, Event, Uffd};
use std::collections::BTreeMap;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Features of the exact-mode userfaultfd: address-space changes reported.
pub const LIVE_FEATURES: u64 = feature::EVENT_REMAP | feature::EVENT_REMOVE | feature::EVENT_UNMAP;
/// Pages read per write fault right after the last fault's pages (the
/// faulting one and the ones after it not copied yet, in its run): such a
/// writer tends to go on forward. Other faults read their page only.
pub const NEIGHBOURS: usize = 16;
/// Most bytes copied ahead of the copier before faults wait for it.
pub const EARLY_CAP: usize = 256 << 20;

/// One page, boxed.
type Page = Box<[u8; PAGE_SIZE as usize]>;

/// Counters of one task's live copy.
#[derive(Debug, Default, Clone, Copy)]
pub struct LiveStats {
    /// Write faults read from the userfaultfd.
    pub faults: u64,
    /// Pages copied ahead of the copier (faults and their neighbours).
    pub pages_early: u64,
    /// Pages copied while still frozen (areas that cannot be protected).
    pub pages_frozen: u64,
    /// Largest early store, in bytes.
    pub early_peak: u64,
    /// Time faults waited for room in the early store.
    pub throttled: Duration,
    /// Address-space events read.
    pub events: u64,
}

/// What the copier and the server share of one task.
#[derive(Debug)]
struct State {
    /// Page ranges `[start, end)` the dump copies, sorted.
    runs: Vec<(u64, u64)>,
    /// Areas registered and protected, sorted.
    protected: Vec<(u64, u64)>,
    /// Every page below is copied and un-protected.
    done_to: u64,
    /// Pages at or above `done_to` copied ahead, by address.
    early: BTreeMap<u64, Page>,
    /// Why the copy can no longer be exact.
    broken: Option<String>,
    /// The page after the last fault's pages: a fault there is a writer
    /// going forward, served with neighbours.
    next_fault: u64,
    stats: LiveStats,
}

impl State {
    /// The end of the run holding `page`, if the dump copies it.
    fn run_end(&self, page: u64) -> Option<u64> {
        let i = self.runs.partition_point(|r| r.1 <= page);
        self.runs.get(i).filter(|r| r.0 <= page).map(|r| r.1)
    }

    /// Whether `[start, end)` holds a page the dump copies and has not yet.
    fn uncopied_in(&self, start: u64, end: u64) -> bool {
        let start = start.max(self.done_to);
        let i = self.runs.partition_point(|r| r.1 <= start);
        for r in &self.runs[i..] {
            if r.0 >= end {
                break;
            }
            let mut p = r.0.max(start) & !(PAGE_SIZE - 1);
            while p < r.1.min(end) {
                if !self.early.contains_key(&p) {
                    return true;
                }
                p += PAGE_SIZE;
            }
        }
        false
    }

    fn break_with(&mut self, why: String) {
        if self.broken.is_none() {
            tracing::warn!("live copy abandoned: {why}");
            self.broken = Some(why);
        }
    }
}

/// One task's live copy.
#[derive(Debug)]
pub struct TaskLive {
    pid: i32,
    /// Exact mode's synchronous write-protect descriptor.
    uffd: Option<Uffd>,
    state: Mutex<State>,
    /// Signalled when the copier consumed early pages.
    progress: Condvar,
}

/// Reads `len` bytes at `addr` of `pid` into `buf`, with `process_vm_readv`,
/// else through `/proc/PID/mem` (an area made unreadable).
fn read_pages(pid: i32, mem: &mut Option<std::fs::File>, buf: &mut [u8], addr: u64) -> Result<(), DumpError> {
    let run = [(addr, buf.len() / PAGE_SIZE as usize)];
    read_runs(pid, mem, buf, &run, true).or_else(|_| read_runs(pid, mem, buf, &run, false))
}

impl TaskLive {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panicking holder leaves counters at worst; carry on.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn new(pid: i32, uffd: Option<Uffd>, areas: &[AreaCopy]) -> TaskLive {
        let runs = areas.iter().flat_map(|a| &a.runs).map(|&(a, n)| (a, a + n as u64 * PAGE_SIZE)).collect();
        TaskLive {
            pid,
            uffd,
            state: Mutex::new(State {
                runs,
                protected: Vec::new(),
                done_to: 0,
                early: BTreeMap::new(),
                broken: None,
                next_fault: 0,
                stats: LiveStats::default(),
            }),
            progress: Condvar::new(),
        }
    }

    /// Tracked mode (pre-dump): nothing to protect; the pages are read as
    /// they are when the copier gets to them.
    pub fn tracked(pid: i32, areas: &[AreaCopy]) -> TaskLive {
        TaskLive::new(pid, None, areas)
    }

    /// Exact mode, while the task is frozen: registers and protects every
    /// area of `areas` on `uffd`; the pages of an area that cannot be
    /// protected are copied now.
    pub fn protect(pid: i32, uffd: Uffd, pm: &Pagemap, areas: &[AreaCopy]) -> Result<TaskLive, DumpError> {
        let live = TaskLive::new(pid, Some(uffd), &[]);
        live.arm_frozen(pm, areas)?;
        Ok(live)
    }

    /// Exact mode, while the task is frozen for the dump: the copy will be
    /// of `areas`. Each is registered (again: a no-op for an area [`arm`]
    /// registered) and its populated pages not protected yet (all of them
    /// for an area new to the descriptor; those written or populated since
    /// for an armed one) are protected; an area that cannot be protected is
    /// copied now.
    #[tracing::instrument(level = "debug", skip_all, fields(pid = self.pid))]
    pub fn arm_frozen(&self, pm: &Pagemap, areas: &[AreaCopy]) -> Result<(), DumpError> {
        let pid = self.pid;
        let uffd = self.uffd.as_ref().ok_or(DumpError::Internal("no live uffd"))?;
        let mut mem = None;
        let mut st = self.lock();
        st.runs = areas.iter().flat_map(|a| &a.runs).map(|&(a, n)| (a, a + n as u64 * PAGE_SIZE)).collect();
        st.protected.clear();
        st.early.clear();
        st.done_to = 0;
        let mut ranges = Vec::new();
        for a in areas {
            let len = a.end - a.start;
            let protected = uffd.register(a.start, len, crate::uffd::mode::WP).and_then(|_| {
                ranges.clear();
                let whole = match pm.scan_unprotected(a.start, a.end, &mut ranges) {
                    Ok(true) => false,
                    _ => true,
                };
                if whole {
                    return uffd.writeprotect(a.start, len, crate::uffd::mode::WRITEPROTECT);
                }
                ranges.iter().try_for_each(|&(s, e)| uffd.writeprotect(s, e - s, crate::uffd::mode::WRITEPROTECT))
            });
            match protected {
                Ok(()) => st.protected.push((a.start, a.end)),
                Err(e) => {
                    let _ = uffd.unregister(a.start, len);
                    tracing::debug!(pid, "area {:#x}-{:#x} not write-protected ({e}): copied frozen", a.start, a.end);
                    for &(addr, n) in &a.runs {
                        let mut buf = vec![0u8; n * PAGE_SIZE as usize];
                        read_runs(pid, &mut mem, &mut buf, &[(addr, n)], a.readable)?;
                        for (i, chunk) in buf.chunks_exact(PAGE_SIZE as usize).enumerate() {
                            let mut page: Page = Box::new([0; PAGE_SIZE as usize]);
                            page.copy_from_slice(chunk);
                            st.early.insert(addr + i as u64 * PAGE_SIZE, page);
                        }
                        st.stats.pages_frozen += n as u64;
                    }
                }
            }
        }
        Ok(())
    }

    /// The counters so far.
    pub fn stats(&self) -> LiveStats {
        self.lock().stats
    }

    /// Why the copy is no longer exact, if it is not.
    pub fn broken(&self) -> Option<String> {
        self.lock().broken.clone()
    }

    /// The copier's read of one batch (`runs`, all in `area`, after every
    /// earlier batch) into `buf`: pages copied early are taken from the
    /// store, the others read from the task; then the batch (through the
    /// area's end when `last`) is un-protected.
    pub fn read_batch(&self, mem: &mut Option<std::fs::File>, buf: &mut [u8], runs: &[Run], area: &AreaCopy, last: bool) -> Result<(), DumpError> {
        let read = read_runs(self.pid, mem, buf, runs, area.readable);
        let mut st = self.lock();
        let ps = PAGE_SIZE as usize;
        if let Err(e) = read {
            if self.uffd.is_some() {
                // Unless every page failing is one copied early already, it is lost.
                let mut off = 0;
                for &(addr, n) in runs {
                    for p in 0..n {
                        let at = addr + (p * ps) as u64;
                        if !st.early.contains_key(&at) && read_pages(self.pid, mem, &mut buf[off..off + ps], at).is_err() {
                            st.break_with(format!("page {at:#x} of pid {} could not be read ({e})", self.pid));
                        }
                        off += ps;
                    }
                }
            } else {
                // Tracked: the next dump has whatever this one misses.
                let mut off = 0;
                for &(addr, n) in runs {
                    for p in 0..n {
                        let at = addr + (p * ps) as u64;
                        if read_pages(self.pid, mem, &mut buf[off..off + ps], at).is_err() {
                            buf[off..off + ps].fill(0);
                        }
                        off += ps;
                    }
                }
            }
        }
        if let Some(why) = &st.broken {
            return Err(DumpError::LiveBroken(why.clone()));
        }
        if !st.early.is_empty() {
            let mut off = 0;
            for &(addr, n) in runs {
                for p in 0..n {
                    if let Some(page) = st.early.remove(&(addr + (p * ps) as u64)) {
                        buf[off..off + ps].copy_from_slice(&page[..]);
                    }
                    off += ps;
                }
            }
        }
        let batch_end = runs.last().map_or(area.start, |&(a, n)| a + (n * ps) as u64);
        let to = if last { area.end } else { batch_end };
        let from = st.done_to.max(area.start);
        if let Some(uffd) = &self.uffd {
            if to > from && st.protected.iter().any(|&(s, e)| s <= from && to <= e) {
                if let Err(e) = uffd.writeprotect(from, to - from, 0) {
                    // ESRCH: the address space is gone (exit, exec): what
                    // was read may be another one's.
                    st.break_with(format!("un-protecting {from:#x}-{to:#x} of pid {}: {e}", self.pid));
                    return Err(DumpError::LiveBroken(st.broken.clone().unwrap_or_default()));
                }
            }
        }
        st.done_to = st.done_to.max(to);
        drop(st);
        self.progress.notify_all();
        Ok(())
    }

    /// The copy is over: every page is copied, nothing left protected (the
    /// descriptor, closed with `self`, would clear the rest anyway).
    pub fn finish(&self) {
        let mut st = self.lock();
        st.done_to = u64::MAX;
        st.early.clear();
        drop(st);
        self.progress.notify_all();
    }

    /// Serves one write fault at `addr` (see the module documentation).
    fn on_fault(&self, mem: &mut Option<std::fs::File>, addr: u64) {
        let Some(uffd) = &self.uffd else { return };
        let page = addr & !(PAGE_SIZE - 1);
        let mut st = self.lock();
        st.stats.faults += 1;
        let mut len = PAGE_SIZE;
        let wanted = |st: &State| st.broken.is_none() && page >= st.done_to && !st.early.contains_key(&page);
        if wanted(&st) {
            if let Some(run_end) = st.run_end(page) {
                let t = Instant::now();
                while wanted(&st) && st.early.len() * PAGE_SIZE as usize >= EARLY_CAP {
                    st = self.progress.wait_timeout(st, Duration::from_millis(20)).map(|(g, _)| g).unwrap_or_else(|e| e.into_inner().0);
                }
                st.stats.throttled += t.elapsed();
                if wanted(&st) {
                    // Neighbours only for a writer going forward: a random
                    // one would fill the early store 16 times as fast.
                    let most = if page == st.next_fault { NEIGHBOURS } else { 1 };
                    let mut n = 1u64;
                    while (n as usize) < most && page + n * PAGE_SIZE < run_end && !st.early.contains_key(&(page + n * PAGE_SIZE)) {
                        n += 1;
                    }
                    let mut buf = vec![0u8; (n * PAGE_SIZE) as usize];
                    match read_pages(self.pid, mem, &mut buf, page) {
                        Ok(()) => {
                            for (i, chunk) in buf.chunks_exact(PAGE_SIZE as usize).enumerate() {
                                let mut p: Page = Box::new([0; PAGE_SIZE as usize]);
                                p.copy_from_slice(chunk);
                                st.early.insert(page + i as u64 * PAGE_SIZE, p);
                            }
                            st.stats.pages_early += n;
                            st.next_fault = page + n * PAGE_SIZE;
                            st.stats.early_peak = st.stats.early_peak.max(st.early.len() as u64 * PAGE_SIZE);
                            len = n * PAGE_SIZE;
                        }
                        Err(e) => st.break_with(format!("page {page:#x} of pid {} could not be read at its first write ({e})", self.pid)),
                    }
                }
            }
        }
        // Un-protecting wakes the thread (also when the page was copied
        // meanwhile, or the copy is abandoned: it must not wait for us).
        // Under the lock: the copy's plan may be set ([`Self::arm_frozen`])
        // only before or after, never between the decision and the act.
        if let Err(e) = uffd.writeprotect(page, len, 0) {
            tracing::debug!(pid = self.pid, "un-protecting {page:#x}+{len:#x}: {e}");
            let _ = uffd.wake(page, len);
        }
        drop(st);
    }

    /// Handles an address-space event: pages not copied yet that it drops
    /// or moves make the copy inexact.
    fn on_event(&self, ev: &Event) {
        let mut st = self.lock();
        st.stats.events += 1;
        let (what, start, end) = match *ev {
            Event::Unmap { start, end } => ("unmapped", start, end),
            Event::Remove { start, end } => ("dropped (madvise)", start, end),
            Event::Remap { from, len, .. } => ("moved (mremap)", from, from + len),
            _ => return,
        };
        tracing::debug!(pid = self.pid, "live copy: {start:#x}-{end:#x} {what}");
        if st.uncopied_in(start, end) {
            let why = format!("pid {} {what} {start:#x}-{end:#x} before it was copied", self.pid);
            st.break_with(why);
            drop(st);
            self.progress.notify_all();
        }
    }
}

/// The thread serving every task's write faults while the copier runs.
pub struct Server {
    stop: OwnedFd,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    /// Starts serving the exact-mode tasks of `tasks`.
    pub fn start(tasks: Vec<Arc<TaskLive>>) -> Result<Server, DumpError> {
        let stop = rustix::event::eventfd(0, rustix::event::EventfdFlags::CLOEXEC)
            .map_err(|e| DumpError::Track(format!("eventfd for the live copy: {e}")))?;
        let stop_fd = stop.as_raw_fd();
        let tasks: Vec<Arc<TaskLive>> = tasks.into_iter().filter(|t| t.uffd.is_some()).collect();
        let thread = std::thread::Builder::new()
            .name("live-faults".into())
            .spawn(move || serve(&tasks, stop_fd))
            .map_err(|e| DumpError::Track(format!("starting the fault server: {e}")))?;
        Ok(Server { stop, thread: Some(thread) })
    }

    /// Stops the server and waits for it.
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        let _ = rustix::io::write(&self.stop, &1u64.to_ne_bytes());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.halt();
    }
}

/// The server's loop: poll every descriptor and `stop`, handle what comes.
fn serve(tasks: &[Arc<TaskLive>], stop: i32) {
    let _boost = super::boost::Boost::now("live fault server");
    let mut polls: Vec<libc::pollfd> = tasks
        .iter()
        .filter_map(|t| t.uffd.as_ref())
        .map(|u| libc::pollfd { fd: u.as_fd().as_raw_fd(), events: libc::POLLIN, revents: 0 })
        .collect();
    polls.push(libc::pollfd { fd: stop, events: libc::POLLIN, revents: 0 });
    let mut mems: Vec<Option<std::fs::File>> = tasks.iter().map(|_| None).collect();
    let mut events = Vec::new();
    loop {
        // SAFETY: poll on descriptors that outlive the loop (the tasks' and `stop`).
        let r = unsafe { libc::poll(polls.as_mut_ptr(), polls.len() as libc::nfds_t, -1) };
        if r < 0 {
            continue;
        }
        if polls.last().is_some_and(|p| p.revents != 0) {
            return;
        }
        for (i, t) in tasks.iter().enumerate() {
            if polls[i].revents == 0 {
                continue;
            }
            let Some(uffd) = &t.uffd else { continue };
            match uffd.read_events(&mut events) {
                // Nothing to read on an error or hang-up: not polled again
                // (the copier finds out by itself).
                Ok(0) if polls[i].revents & (libc::POLLERR | libc::POLLHUP) != 0 => polls[i].fd = -1,
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(pid = t.pid, "reading the live userfaultfd: {e}");
                    t.lock().break_with(format!("reading the userfaultfd of pid {}: {e}", t.pid));
                    polls[i].fd = -1;
                    continue;
                }
            }
            for ev in events.drain(..) {
                match ev {
                    Event::PageFault { addr, .. } => t.on_fault(&mut mems[i], addr),
                    ev => t.on_event(&ev),
                }
            }
        }
    }
}

/// What a dump's userfaultfds are armed for ahead of its freeze ([`arm`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArmFor {
    /// The exact copy (`dump -R`): a synchronous write-protect descriptor
    /// per task, its faults served from the arming on.
    Exact,
    /// The tracking a pre-dump leaves ([`super::track`]): an asynchronous
    /// one. Pages written between the arming and the freeze count as
    /// written after the pre-dump too: the next dump copies them again,
    /// which costs a little and is never wrong.
    Tracking,
}

/// One task's tracking descriptor made ahead ([`ArmFor::Tracking`]).
#[derive(Debug)]
pub struct ArmedTrack {
    /// The descriptor, for [`super::track::TaskTrack::uffd`].
    pub uffd: Uffd,
    /// Areas registered and write-protected on it, sorted.
    pub areas: Vec<(u64, u64)>,
}

/// Descriptors made and write-protected ahead of the dump's freeze
/// ([`arm`]), by task pid.
pub struct Armed {
    /// Exact mode: each task's copy, with nothing to copy yet.
    pub tasks: BTreeMap<i32, Arc<TaskLive>>,
    /// Tracking mode: each task's descriptor, taken by its collection.
    pub tracks: Mutex<BTreeMap<i32, ArmedTrack>>,
    /// Exact mode after a pre-dump: each task's areas moved from the
    /// pre-dump's tracking to the exact descriptor, taken by its collection.
    pub swaps: Mutex<BTreeMap<i32, Swapped>>,
    /// Serves the exact tasks' faults from the arming until the dump is
    /// over: through the dump's freeze too (a thread that was waiting on a
    /// fault, or an injected call that writes to protected memory, needs it).
    server: Option<Server>,
}

impl Armed {
    /// Task `pid`'s tracking descriptor made ahead, if any (once).
    pub fn take_track(&self, pid: i32) -> Option<ArmedTrack> {
        self.tracks.lock().unwrap_or_else(|e| e.into_inner()).remove(&pid)
    }

    /// Task `pid`'s areas moved from the pre-dump's tracking, if any (once).
    pub fn take_swap(&self, pid: i32) -> Option<Swapped> {
        self.swaps.lock().unwrap_or_else(|e| e.into_inner()).remove(&pid)
    }
}

impl Drop for Armed {
    fn drop(&mut self) {
        if let Some(s) = self.server.take() {
            s.stop();
        }
    }
}

/// Bytes write-protected per `UFFDIO_WRITEPROTECT` while arming (the
/// tree runs; shorter calls hold its page-table lock for less).
const ARM_CHUNK: u64 = 64 << 20;

/// Arms the userfaultfds of a dump of the tree rooted at `root` ahead of
/// its freeze (see the module documentation): a short freeze to give each
/// task its descriptor and register its private areas (anonymous ones for
/// an exact copy), then the areas are write-protected while the tree runs
/// (exact: faults served, un-protected, nothing copied, meanwhile).
/// `Ok(None)` (with the reason logged) when it cannot be: the dump then
/// protects everything while frozen. A tree that cannot be frozen is the
/// dump's error.
///
/// After a pre-dump (`tracking`: its descriptors, by pid) an exact copy
/// cannot register the areas the tracking holds; they are moved to the
/// exact descriptor a slice at a time, each in a freeze of its own
/// ([`swap_areas`]).
pub fn arm(root: i32, timeout: Duration, what: ArmFor, tracking: Option<&BTreeMap<i32, Uffd>>) -> Result<Option<Armed>, DumpError> {
    let boost = super::boost::Boost::now("arming freeze");
    let t0 = Instant::now();
    let tree = super::tree::FrozenTree { boost: Some(boost), ..super::tree::FrozenTree::freeze(root, timeout)? };
    let mut tasks = BTreeMap::new();
    let mut tracks = BTreeMap::new();
    for t in &tree.live {
        let pid = t.frozen.pid();
        match arm_task(pid, what) {
            Ok(Some((uffd, areas, held))) if what == ArmFor::Exact => {
                tasks.insert(pid, (Arc::new(TaskLive::new(pid, Some(uffd), &[])), areas, held));
            }
            Ok(Some((uffd, areas, _))) => {
                tracks.insert(pid, ArmedTrack { uffd, areas });
            }
            Ok(None) => {}
            Err(e) => tracing::info!(pid, "userfaultfd not armed ahead for this task: {e}"),
        }
    }
    let frozen = t0.elapsed();
    tree.detach()?;
    let server = match what {
        ArmFor::Exact => match Server::start(tasks.values().map(|t| t.0.clone()).collect()) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!("live copy not armed ahead: {e}");
                return Ok(None);
            }
        },
        ArmFor::Tracking => None,
    };
    let t1 = Instant::now();
    let protect = |pid: i32, uffd: &Uffd, areas: &[(u64, u64)]| {
        for &(start, end) in areas {
            let mut at = start;
            while at < end {
                let len = ARM_CHUNK.min(end - at);
                if let Err(e) = uffd.writeprotect(at, len, crate::uffd::mode::WRITEPROTECT) {
                    tracing::debug!(pid, "arming {at:#x}+{len:#x}: {e}");
                }
                at += len;
            }
        }
    };
    for (pid, (live, areas, _)) in &tasks {
        if let Some(uffd) = &live.uffd {
            protect(*pid, uffd, areas);
        }
    }
    for (pid, t) in &tracks {
        protect(*pid, &t.uffd, &t.areas);
    }
    let mut swaps = BTreeMap::new();
    for (pid, (live, _, held)) in &tasks {
        if let (Some(old), Some(new)) = (tracking.and_then(|t| t.get(pid)), &live.uffd) {
            if !held.is_empty() {
                swaps.insert(*pid, swap_areas(*pid, old, new, held, timeout));
            }
        }
    }
    tracing::info!(
        tasks = tasks.len() + tracks.len(),
        ?what,
        frozen_ms = frozen.as_millis() as u64,
        protect_ms = t1.elapsed().as_millis() as u64,
        "userfaultfds armed ahead of the freeze"
    );
    let tasks = tasks.into_iter().map(|(pid, (live, ..))| (pid, live)).collect();
    Ok(Some(Armed { tasks, tracks: Mutex::new(tracks), swaps: Mutex::new(swaps), server }))
}

/// One frozen task's part of [`arm`]: its descriptor (none when it may
/// not have one), the areas registered on it and those another descriptor
/// holds (`EBUSY`: an earlier pre-dump's tracking).
#[allow(clippy::type_complexity)]
fn arm_task(pid: i32, what: ArmFor) -> Result<Option<(Uffd, Vec<(u64, u64)>, Vec<(u64, u64)>)>, DumpError> {
    use crate::ptrace::inject::{vdso_syscall_ip, Injector};
    let maps = crate::proc::maps::read_maps(pid)?;
    let ip = if super::failpoint::patch_code_forced() { None } else { vdso_syscall_ip(pid, &maps) };
    let mut inj = Injector::new(pid, ip)?;
    let uffd = match what {
        ArmFor::Exact => super::track::take_kernel_uffd(&mut inj, pid, LIVE_FEATURES),
        ArmFor::Tracking => super::track::take_task_uffd(&mut inj, pid).map(Some),
    };
    inj.restore()?;
    let Some(uffd) = uffd? else { return Ok(None) };
    let (mut areas, mut held) = (Vec::new(), Vec::new());
    for m in &maps {
        let v = super::vmas::classify(m);
        if !(v.dumps_private_pages() && (what == ArmFor::Tracking || v.zero_pages_implicit())) {
            continue;
        }
        match uffd.register(m.start, m.end - m.start, crate::uffd::mode::WP) {
            Ok(_) => areas.push((m.start, m.end)),
            Err(rustix::io::Errno::BUSY) => held.push((m.start, m.end)),
            Err(_) => {}
        }
    }
    Ok(Some((uffd, areas, held)))
}

/// Areas of one task moved from a pre-dump's tracking descriptor to the
/// exact copy's ahead of the freeze ([`swap_areas`]).
#[derive(Debug, Default)]
pub struct Swapped {
    /// Ranges registered and write-protected on the exact descriptor now
    /// (sorted): from the move on, a page written there is one it finds
    /// un-protected.
    pub ranges: Vec<(u64, u64)>,
    /// Pages of `ranges` the tracking found written since the pre-dump,
    /// up to the move (sorted, disjoint).
    pub written: Vec<(u64, u64)>,
}

/// Bytes moved per freeze by [`swap_areas`] (about 1 ms of work per 8 MiB:
/// the pages are unprotected and protected again).
const SWAP_CHUNK: u64 = 32 << 20;

/// Moves `held` (areas of `pid` registered on `old`, a pre-dump's
/// asynchronous tracking) to `new` (the exact copy's synchronous
/// descriptor), [`SWAP_CHUNK`] at a time, each in a freeze of the task
/// alone: the pages the tracking found written are kept
/// (`PAGEMAP_SCAN`), the slice unregistered from `old` (which clears its
/// markers), registered on `new` and write-protected. A slice that cannot
/// be moved stays with the tracking (its area is then scanned frozen, as
/// without this); one lost half-way (off `old`, not protected on `new`) is
/// in no tracking any more, which makes the dump copy its area whole.
pub fn swap_areas(pid: i32, old: &Uffd, new: &Uffd, held: &[(u64, u64)], timeout: Duration) -> Swapped {
    let mut out = Swapped::default();
    let Ok(pm) = Pagemap::open(pid) else { return out };
    let t0 = Instant::now();
    let mut slices = 0;
    for &(start, end) in held {
        let mut at = start;
        while at < end {
            let to = (at + SWAP_CHUNK).min(end);
            match swap_slice(pid, &pm, old, new, (at, to), timeout, &mut out.written) {
                Ok(true) => match out.ranges.last_mut() {
                    Some(last) if last.1 == at => last.1 = to,
                    _ => out.ranges.push((at, to)),
                },
                Ok(false) => break,
                Err(e) => {
                    tracing::info!(pid, "moving {at:#x}-{to:#x} to the live copy's userfaultfd: {e}");
                    break;
                }
            }
            slices += 1;
            at = to;
            // The task runs a moment between two slices.
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    out.written.sort_unstable();
    tracing::info!(pid, slices, ms = t0.elapsed().as_millis() as u64, "tracked areas moved to the live copy's userfaultfd");
    out
}

/// One slice of [`swap_areas`]: `Ok(false)` when nothing changed.
fn swap_slice(pid: i32, pm: &Pagemap, old: &Uffd, new: &Uffd, (start, end): (u64, u64), timeout: Duration, written: &mut Vec<(u64, u64)>) -> Result<bool, DumpError> {
    let _boost = super::boost::Boost::now("moving tracked memory");
    let fr = crate::ptrace::freeze::Frozen::freeze(pid, timeout)?;
    let moved = (|| {
        let mut w = Vec::new();
        if !pm.scan_written(start, end, &mut w)? {
            return Ok(false);
        }
        let len = end - start;
        if old.unregister(start, len).is_err() {
            return Ok(false);
        }
        let how = |e: rustix::io::Errno| DumpError::Track(format!("{start:#x}-{end:#x} of pid {pid}: {e}"));
        new.register(start, len, crate::uffd::mode::WP).map_err(how)?;
        new.writeprotect(start, len, crate::uffd::mode::WRITEPROTECT).map_err(how)?;
        written.extend(w);
        Ok(true)
    })();
    fr.detach()?;
    moved
}

/// Each task's areas with their `VmFlags`, read before the freeze (by a
/// live copy: see the module documentation), by pid.
#[derive(Debug, Default)]
pub struct SmapsAhead {
    tasks: BTreeMap<i32, Vec<crate::proc::maps::MapEntry>>,
}

impl SmapsAhead {
    /// Reads the smaps of `root` and of every descendant found (the tree
    /// runs: a task that is gone is left out, one born since is read
    /// frozen).
    #[tracing::instrument(level = "debug", skip_all, fields(root))]
    pub fn read(root: i32) -> SmapsAhead {
        let mut tasks = BTreeMap::new();
        let mut todo = vec![root];
        while !todo.is_empty() {
            for &pid in &todo {
                if let Ok(m) = crate::proc::maps::read_smaps(pid) {
                    tasks.insert(pid, m);
                }
            }
            let known: Vec<i32> = tasks.keys().copied().collect();
            let kids = super::tree::children_of(&todo, &known).unwrap_or_default();
            todo = kids.into_iter().map(|(k, _)| k).filter(|k| !tasks.contains_key(k)).collect();
        }
        SmapsAhead { tasks }
    }

    /// `pid`'s areas, if read.
    pub fn get(&self, pid: i32) -> Option<&[crate::proc::maps::MapEntry]> {
        self.tasks.get(&pid).map(Vec::as_slice)
    }

    /// The areas of each task dumped with flags read ahead, to check them
    /// with [`Self::check`] once the tree runs again.
    pub fn to_check(&self, procs: &[super::model::ProcessDump]) -> Vec<(i32, Vec<crate::proc::maps::MapEntry>)> {
        procs.iter().filter(|p| self.tasks.contains_key(&p.pid)).map(|p| (p.pid, p.mm.vmas.iter().map(|v| v.map.clone()).collect())).collect()
    }

    /// After the freeze, with the tree running: whether the flags read
    /// ahead are still every area's (smaps read again). A change means an
    /// `madvise` (or `mlock`, or a new mapping with the same line) between
    /// the reading and now, perhaps before the freeze: the images could be
    /// wrong, so the copy is given up ([`DumpError::LiveBroken`]: the dump
    /// is made again frozen). One changed and changed back within that
    /// moment goes unseen.
    #[tracing::instrument(level = "debug", skip_all)]
    pub fn check(dumped: &[(i32, Vec<crate::proc::maps::MapEntry>)]) -> Result<(), DumpError> {
        for (pid, then) in dumped {
            let now = crate::proc::maps::read_smaps(*pid)
                .map_err(|e| DumpError::LiveBroken(format!("reading the areas of pid {pid} again: {e}")))?;
            if let Some((start, end, was, is)) = crate::proc::maps::flags_changed(then, &now) {
                return Err(DumpError::LiveBroken(format!(
                    "pid {pid} changed the flags of {start:#x}-{end:#x} (VmFlags bits {was:#x} -> {is:#x}) around the freeze"
                )));
            }
        }
        Ok(())
    }
}

/// Logs one task's live-copy counters.
pub fn log_stats(pid: i32, s: &LiveStats) {
    tracing::info!(
        pid,
        faults = s.faults,
        pages_early = s.pages_early,
        pages_frozen = s.pages_frozen,
        early_peak_kib = s.early_peak / 1024,
        throttled_ms = s.throttled.as_millis() as u64,
        events = s.events,
        "live copy done"
    );
}
