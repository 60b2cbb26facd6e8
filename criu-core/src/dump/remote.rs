//! Where a dump's private pages go when they do not go to the local
//! `pages-1.img`: to a remote page server (`dump --page-server`), or held in
//! the dumping process to be served for post-copy (`dump --lazy-pages`).
//!
//! In both cases collection writes the pages into an anonymous memory file
//! (`memfd`) in pagemap order, exactly as it would write `pages-1.img`.
//! Then, while the process is still frozen:
//!
//! - page server: every pagemap entry and its data are sent with a
//!   [`PageSink`] in CRIU's protocol (the server, CRIU's or criu-rs's,
//!   writes `pagemap-PID.img` and `pages-N.img`, N from its own numbering,
//!   which starts above the dump's); the local directory gets every other
//!   image, and the two directories merged are one dump. A failure here
//!   (connection broken, the server gone) fails the dump, which resumes
//!   the process.
//! - lazy: the entries [`flag_lazy`] flagged (as CRIU: private anonymous,
//!   not locked, not vDSO/vvar/vsyscall, not a thread's stack-pointer
//!   page) lose `PRESENT` and their data stays in the memfd
//!   ([`HeldPages`]); the other entries' data is copied to the local
//!   `pages-1.img` and they stay `PRESENT`. After the process is gone the
//!   caller serves the held pages ([`serve_held`]) to `criu-rs lazy-pages
//!   --page-server` until it disconnects.

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::net::TcpListener;
use std::os::unix::fs::FileExt;
use std::time::Duration;

use super::model::{PagemapEntry, ProcessDump, Vma, PE_PRESENT};
use super::vmas::status;
use super::DumpError;
use crate::images::consts::pagemap_flags;
use crate::images::PAGE_SIZE;
use crate::pageserver::client::PageSink;
use crate::pageserver::proto::Target;
use crate::pageserver::server::{serve_one, SessionStats};
use crate::pageserver::store::PageStore;
use crate::pageserver::PageServerError;

/// Where the private pages of a dump go.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum PagesTo {
    /// `pages-1.img` in the images directory.
    #[default]
    Local,
    /// A remote `criu-rs page-server` at `HOST:PORT`.
    PageServer(String),
    /// Held by the dumping process for post-copy ([`super::dump_keeping_memory`]).
    Held,
}

/// `memfd_create("criu-rs-pages", MFD_CLOEXEC)`: the file collection writes
/// the pages into when they do not go to `pages-1.img`.
pub fn memfd_create() -> Result<File, DumpError> {
    let fd = rustix::fs::memfd_create("criu-rs-pages", rustix::fs::MemfdFlags::CLOEXEC).map_err(|e| DumpError::ImagesDir {
        path: "memfd:criu-rs-pages".into(),
        source: e.into(),
    })?;
    Ok(File::from(fd))
}

/// Creates (truncating) `pages-<id>.img` in `dir` for plain (not
/// `O_DIRECT`) writes: the eager pages of a lazy dump.
pub fn plain_pages_image(dir: &std::path::Path, id: u32) -> Result<File, DumpError> {
    let path = dir.join(format!("pages-{id}.img"));
    File::create(&path).map_err(|source| DumpError::ImagesDir { path, source })
}

/// Bytes copied per read from the memfd.
const CHUNK: usize = 4 << 20;

/// Sends the private pages of `p` (data in `pages`, in pagemap order) to the
/// page server behind `sink`: OPEN of its pagemap, then each entry and its
/// data (streamed from the memfd in pieces), so the server's pagemap has
/// the entries of a local dump.
pub fn send_pages(sink: &mut PageSink, p: &ProcessDump, pages: &File) -> Result<(), DumpError> {
    sink.open(Target::Task(p.pid as u32))?;
    let mut buf = vec![0u8; CHUNK];
    let mut off = 0u64;
    for e in &p.pagemap {
        sink.entry(e.vaddr, u64::from(e.nr_pages), e.flags)?;
        let mut left = if e.flags & PE_PRESENT != 0 { u64::from(e.nr_pages) * PAGE_SIZE } else { 0 };
        while left > 0 {
            let n = (left as usize).min(CHUNK);
            pages.read_exact_at(&mut buf[..n], off).map_err(DumpError::WritePages)?;
            sink.data(&buf[..n])?;
            if off == 0 {
                super::failpoint::check(super::failpoint::MID_SEND)?;
            }
            left -= n as u64;
            off += n as u64;
        }
    }
    Ok(())
}

/// Whether an area with `VMA_*` status `st` and `MAP_*` `flags` (as in
/// `vma_entry`) is restored lazily (CRIU's rule: private anonymous, not
/// locked, not vDSO/vvar/vsyscall). The dump flags the pages of exactly
/// these areas `LAZY`; a lazy restore registers exactly these with
/// userfaultfd.
pub fn vma_can_be_lazy(st: u32, flags: u32) -> bool {
    const MAP_LOCKED: u32 = 0x2000;
    const MAP_HUGETLB: u32 = 0x40000;
    st & status::ANON_PRIVATE != 0
        && st & (status::AREA_VDSO | status::AREA_VVAR | status::AREA_VSYSCALL) == 0
        && flags & (MAP_LOCKED | MAP_HUGETLB) == 0
}

/// Flags `LAZY` (keeping `PRESENT`) the pages of `p` that may be restored
/// lazily, as CRIU's every dump does: the pages of areas that may be lazy
/// ([`vma_can_be_lazy`]), except the page each thread's stack pointer is
/// in (CRIU's `is_stack`: touched as soon as the thread runs). Entries are
/// split where that changes. Without `--lazy-pages` a restore fills them
/// like the others; with it, the lazy-pages daemon serves them from the
/// images. Returns the number of pages flagged.
pub fn flag_lazy(p: &mut ProcessDump) -> u64 {
    let sps: Vec<u64> = p.threads.iter().map(|t| t.gpregs.rsp).collect();
    let (entries, lazy) = lazy_entries(&p.pagemap, &p.mm.vmas, &sps);
    p.pagemap = entries;
    lazy
}

/// [`flag_lazy`] on `pagemap` (in address order) of `vmas` (sorted), with
/// the threads' stack pointers `sps`: the new entries and the lazy count.
fn lazy_entries(pagemap: &[PagemapEntry], vmas: &[Vma], sps: &[u64]) -> (Vec<PagemapEntry>, u64) {
    let mut sps: Vec<u64> = sps.iter().map(|sp| sp & !(PAGE_SIZE - 1)).collect();
    sps.sort_unstable();
    sps.dedup();
    let mut out: Vec<PagemapEntry> = Vec::with_capacity(pagemap.len());
    // Pieces join the previous entry only within one VMA (entries never
    // span two: the restore refuses them).
    let mut vma_start = 0;
    let mut push = |vaddr: u64, end: u64, flags: u32, vma_start: u64| {
        if end <= vaddr {
            return;
        }
        let nr = ((end - vaddr) / PAGE_SIZE) as u32;
        match out.last_mut() {
            Some(l) if l.flags == flags && l.vaddr >= vma_start && l.vaddr + u64::from(l.nr_pages) * PAGE_SIZE == vaddr => l.nr_pages += nr,
            _ => out.push(PagemapEntry { vaddr, nr_pages: nr, flags }),
        }
    };
    let mut lazy = 0;
    for e in pagemap {
        let end = e.vaddr + u64::from(e.nr_pages) * PAGE_SIZE;
        let first = vmas.partition_point(|v| v.map.end <= e.vaddr);
        if e.flags != PE_PRESENT {
            // In the parent dump: kept as it is.
            vma_start = vmas.get(first).map_or(e.vaddr, |v| v.map.start);
            push(e.vaddr, end, e.flags, vma_start);
            continue;
        }
        let mut at = e.vaddr;
        for v in vmas[first..].iter().take_while(|v| v.map.start < end) {
            let (from, to) = (at.max(v.map.start), end.min(v.map.end));
            push(at, from, PE_PRESENT, vma_start);
            vma_start = v.map.start;
            if !can_be_lazy(v) {
                push(from, to, PE_PRESENT, vma_start);
            } else {
                let mut cur = from;
                for &sp in sps.iter().filter(|&&sp| sp >= from && sp < to) {
                    push(cur, sp, PE_PRESENT | pagemap_flags::LAZY, vma_start);
                    lazy += (sp - cur) / PAGE_SIZE;
                    push(sp, sp + PAGE_SIZE, PE_PRESENT, vma_start);
                    cur = sp + PAGE_SIZE;
                }
                push(cur, to, PE_PRESENT | pagemap_flags::LAZY, vma_start);
                lazy += (to - cur) / PAGE_SIZE;
            }
            at = to;
        }
        push(at, end, PE_PRESENT, vma_start);
    }
    (out, lazy)
}

/// [`vma_can_be_lazy`] for a collected area.
pub fn can_be_lazy(v: &Vma) -> bool {
    vma_can_be_lazy(v.status, v.mmap_flags)
}

/// One process's held pages: its memfd and the (vaddr, length, offset in
/// the memfd) of every held entry, in address order.
type PidHeld = (File, Vec<(u64, u64, u64)>);

/// Pages the dump keeps for a post-copy restore, per pid.
#[derive(Default)]
pub struct HeldPages {
    pids: HashMap<u32, PidHeld>,
    buf: Vec<u8>,
}

impl std::fmt::Debug for HeldPages {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeldPages").field("pages", &self.pages()).finish()
    }
}

impl HeldPages {
    /// Pages held, over every pid.
    pub fn pages(&self) -> u64 {
        self.pids.values().flat_map(|p| &p.1).map(|e| e.1 / PAGE_SIZE).sum()
    }

    /// Takes over the pages `other` holds (another process of a tree).
    pub fn add(&mut self, other: HeldPages) {
        self.pids.extend(other.pids);
    }
}

impl PageStore for HeldPages {
    /// The run of held entries without a gap from `vaddr` on.
    fn available(&mut self, pid: u32, vaddr: u64, max: u64) -> crate::pageserver::proto::Result<u64> {
        let (_, entries) = self.pids.get(&pid).ok_or(PageServerError::UnknownPid(pid))?;
        let Some(mut i) = entries.partition_point(|e| e.0 <= vaddr).checked_sub(1) else { return Ok(0) };
        let mut at = vaddr;
        while let Some(&(v, elen, _)) = entries.get(i) {
            if at < v || at >= v + elen || at - vaddr >= max {
                break;
            }
            at = v + elen;
            i += 1;
        }
        Ok((at - vaddr).min(max))
    }

    /// Any range covered by held entries without a gap (a lazy-pages
    /// daemon may merge adjacent entries into one request).
    fn pages(&mut self, pid: u32, vaddr: u64, len: u64) -> crate::pageserver::proto::Result<&[u8]> {
        let (file, entries) = self.pids.get(&pid).ok_or(PageServerError::UnknownPid(pid))?;
        let no = || PageServerError::NoData { pid, vaddr, len };
        let end = vaddr.checked_add(len).ok_or_else(no)?;
        self.buf.resize(len as usize, 0);
        let mut at = vaddr;
        let mut i = entries.partition_point(|e| e.0 <= vaddr).checked_sub(1).ok_or_else(no)?;
        while at < end {
            let &(v, elen, off) = entries.get(i).ok_or_else(no)?;
            if at < v || at >= v + elen {
                return Err(no());
            }
            let n = (v + elen).min(end) - at;
            let dst = &mut self.buf[(at - vaddr) as usize..(at - vaddr + n) as usize];
            file.read_exact_at(dst, off + (at - v))?;
            at += n;
            i += 1;
        }
        Ok(&self.buf)
    }
}

/// Splits the pages of `p` (data in `held`, in pagemap order; entries
/// flagged by [`flag_lazy`]): `LAZY` entries lose `PRESENT` and their data
/// stays in `held`; the others' data is appended to `local`
/// (`pages-1.img`). Rewrites `p.pagemap` accordingly and returns the held
/// pages.
pub fn hold_lazy(p: &mut ProcessDump, held: File, local: &mut File) -> Result<HeldPages, DumpError> {
    let mut kept = Vec::new();
    let mut buf = vec![0u8; CHUNK];
    let mut off = 0u64;
    for e in p.pagemap.iter_mut() {
        let len = u64::from(e.nr_pages) * PAGE_SIZE;
        if e.flags & pagemap_flags::LAZY != 0 {
            e.flags = pagemap_flags::LAZY;
            kept.push((e.vaddr, len, off));
        } else {
            let mut done = 0u64;
            while done < len {
                let n = ((len - done) as usize).min(CHUNK);
                held.read_exact_at(&mut buf[..n], off + done).map_err(DumpError::WritePages)?;
                local.write_all(&buf[..n]).map_err(DumpError::WritePages)?;
                done += n as u64;
            }
        }
        off += len;
    }
    let mut pids = HashMap::new();
    pids.insert(p.pid as u32, (held, kept));
    Ok(HeldPages { pids, buf: Vec::new() })
}

/// Serves `held` to one `criu-rs lazy-pages --page-server` connecting to
/// `listener`, until it finishes or its connection closes. `None` when no
/// client connected within `accept_timeout`.
pub fn serve_held(
    listener: &TcpListener,
    held: &mut HeldPages,
    accept_timeout: Option<Duration>,
) -> Result<Option<SessionStats>, PageServerError> {
    if let Some(t) = accept_timeout {
        use rustix::event::{poll, PollFd, PollFlags, Timespec};
        let mut fds = [PollFd::new(listener, PollFlags::IN)];
        let ts = Timespec { tv_sec: t.as_secs() as i64, tv_nsec: i64::from(t.subsec_nanos()) };
        if poll(&mut fds, Some(&ts)).map_err(std::io::Error::from)? == 0 {
            return Ok(None);
        }
    }
    serve_one(listener, None, Some(held)).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vma(start: u64, end: u64, status: u32, mmap_flags: u32) -> Vma {
        let map = crate::proc::maps::MapEntry {
            start,
            end,
            read: true,
            write: true,
            exec: false,
            shared: false,
            offset: 0,
            dev: (0, 0),
            inode: 0,
            path: String::new(),
            deleted: false,
            vmflags: 0,
        };
        Vma { map, prot: 3, mmap_flags, status, madv: 0, file_id: 0 }
    }

    fn pe(vaddr: u64, nr_pages: u32, flags: u32) -> PagemapEntry {
        PagemapEntry { vaddr, nr_pages, flags }
    }

    #[test]
    fn plain_dumps_flag_private_anonymous_pages_but_the_stack_pointer_s() {
        const P: u64 = PAGE_SIZE;
        const L: u32 = PE_PRESENT | pagemap_flags::LAZY;
        let anon = status::AREA_REGULAR | status::ANON_PRIVATE;
        let vmas = [
            vma(0x10000, 0x20000, anon, 0x22),                       // private anonymous
            vma(0x20000, 0x30000, anon, 0x22),                       // adjacent, another VMA
            vma(0x30000, 0x40000, anon, 0x22 | 0x2000),              // MAP_LOCKED
            vma(0x40000, 0x50000, status::AREA_REGULAR | status::ANON_PRIVATE | status::AREA_VDSO, 0x22),
            vma(0x50000, 0x60000, status::AREA_REGULAR | status::FILE_PRIVATE, 0x2), // a file
        ];
        // One entry over the first two VMAs (split at the boundary), a
        // stack pointer in the second, then the others; a parent entry
        // stays as it is.
        let pagemap = [
            pe(0x18000, 16, PE_PRESENT),
            pe(0x30000, 2, PE_PRESENT),
            pe(0x40000, 1, PE_PRESENT),
            pe(0x50000, 1, PE_PRESENT),
            pe(0x58000, 1, super::super::model::PE_PARENT),
        ];
        let (out, lazy) = lazy_entries(&pagemap, &vmas, &[0x22000 + 0x123, 0x22ff0]);
        assert_eq!(
            out,
            [
                pe(0x18000, 8, L),
                pe(0x20000, 2, L),
                pe(0x22000, 1, PE_PRESENT),
                pe(0x23000, 5, L),
                pe(0x30000, 2, PE_PRESENT),
                pe(0x40000, 1, PE_PRESENT),
                pe(0x50000, 1, PE_PRESENT),
                pe(0x58000, 1, super::super::model::PE_PARENT),
            ]
        );
        assert_eq!(lazy, 15);
        assert_eq!(out.iter().map(|e| u64::from(e.nr_pages)).sum::<u64>() * P, 21 * P, "no page lost or added");
    }

    #[test]
    fn held_ranges_span_adjacent_entries_but_not_gaps() {
        let f = memfd_create().unwrap();
        let data: Vec<u8> = (0..6 * PAGE_SIZE as usize).map(|i| (i / 4096 * 7 + i % 13) as u8).collect();
        f.write_all_at(&data, 0).unwrap();
        let mut pids = HashMap::new();
        // Two adjacent entries (2 + 1 pages), then one after a gap.
        let entries = vec![(0x10000, 2 * PAGE_SIZE, 0), (0x12000, PAGE_SIZE, 2 * PAGE_SIZE), (0x20000, 3 * PAGE_SIZE, 3 * PAGE_SIZE)];
        pids.insert(5, (f, entries));
        let mut h = HeldPages { pids, buf: Vec::new() };
        assert_eq!(h.pages(), 6);
        let p = PAGE_SIZE as usize;
        assert_eq!(PageStore::pages(&mut h, 5, 0x11000, 2 * PAGE_SIZE).unwrap(), &data[p..3 * p]);
        assert_eq!(PageStore::pages(&mut h, 5, 0x21000, PAGE_SIZE).unwrap(), &data[4 * p..5 * p]);
        assert!(PageStore::pages(&mut h, 5, 0x12000, 2 * PAGE_SIZE).is_err(), "gap after 0x13000");
        assert!(PageStore::pages(&mut h, 5, 0xf000, PAGE_SIZE).is_err());
        assert!(PageStore::pages(&mut h, 5, 0x22000, 2 * PAGE_SIZE).is_err(), "past the end");
        assert!(matches!(PageStore::pages(&mut h, 6, 0x10000, PAGE_SIZE), Err(PageServerError::UnknownPid(6))));
        // Another process's pages, from its own memfd.
        let g = memfd_create().unwrap();
        g.write_all_at(&data[..PAGE_SIZE as usize], 0).unwrap();
        let mut other = HeldPages::default();
        other.pids.insert(6, (g, vec![(0x10000, PAGE_SIZE, 0)]));
        h.add(other);
        assert_eq!(h.pages(), 7);
        assert_eq!(PageStore::pages(&mut h, 6, 0x10000, PAGE_SIZE).unwrap(), &data[..p]);
        assert_eq!(PageStore::pages(&mut h, 5, 0x10000, PAGE_SIZE).unwrap(), &data[..p]);
    }
}
