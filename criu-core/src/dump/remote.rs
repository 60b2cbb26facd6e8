//! Where a dump's private pages go when they do not go to the local
//! `pages-1.img`: to a remote page server (`dump --page-server`), or held in
//! the dumping process to be served for post-copy (`dump --lazy-pages`).
//!
//! In both cases collection writes the pages into an anonymous memory file
//! (`memfd`) in pagemap order, exactly as it would write `pages-1.img`.
//! Then, while the process is still frozen:
//!
//! - page server: every pagemap entry and its data are sent with a
//!   [`StreamSink`] (pipelined; the server writes `pagemap-PID.img` and
//!   `pages-N.img`, N the task's pages id, which the dump allocates from the
//!   numbering its shared memory images use too); the local directory gets
//!   every other image, and the two directories merged are one dump. A failure here (refused,
//!   connection broken) fails the dump, which resumes the process.
//! - lazy: the entries of areas that may be restored lazily (as CRIU:
//!   private anonymous, not locked, not vDSO/vvar/vsyscall) become `LAZY`
//!   entries without `PRESENT` and their data stays in the memfd
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

use super::model::{ProcessDump, Vma, PE_PRESENT};
use super::vmas::status;
use super::DumpError;
use crate::images::consts::pagemap_flags;
use crate::images::PAGE_SIZE;
use crate::pageserver::stream_sink::StreamSink;
use crate::pageserver::server::{serve_one, SessionStats};
use crate::pageserver::store::PageStore;
use crate::pageserver::proto::PUT_CONTINUES;
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
/// page server behind `sink`: OPEN (with the pages id the dump gave `p`,
/// so the server's `pages-N.img` is the one `p`'s pagemap names), the
/// entries (each as PUTs the protocol allows, the later ones continuing the
/// first: one entry on the server as here), CLOSE.
pub fn send_pages(sink: &mut StreamSink, p: &ProcessDump, pages: &File) -> Result<(), DumpError> {
    let pid = p.pid as u32;
    sink.open(pid, p.pages_id)?;
    let mut buf = vec![0u8; CHUNK];
    let mut off = 0u64;
    for e in &p.pagemap {
        let mut at = e.vaddr;
        let end = e.vaddr + u64::from(e.nr_pages) * PAGE_SIZE;
        while at < end {
            let n = ((end - at) as usize).min(CHUNK);
            pages.read_exact_at(&mut buf[..n], off).map_err(DumpError::WritePages)?;
            let more = if at > e.vaddr { PUT_CONTINUES } else { 0 };
            sink.put(pid, at, (e.flags & !PE_PRESENT) | more, &buf[..n])?;
            if off == 0 {
                super::failpoint::check(super::failpoint::MID_SEND)?;
            }
            at += n as u64;
            off += n as u64;
        }
    }
    sink.close(pid)?;
    Ok(())
}

/// Whether an area with `VMA_*` status `st` and `MAP_*` `flags` (as in
/// `vma_entry`) is restored lazily (CRIU's rule: private anonymous, not
/// locked, not vDSO/vvar/vsyscall). The dump flags the pages of exactly
/// these areas `LAZY`; a lazy restore registers exactly these with
/// userfaultfd.
pub fn vma_can_be_lazy(st: u32, flags: u32) -> bool {
    const MAP_LOCKED: u32 = 0x2000;
    st & status::ANON_PRIVATE != 0
        && st & (status::AREA_VDSO | status::AREA_VVAR | status::AREA_VSYSCALL) == 0
        && flags & MAP_LOCKED == 0
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

/// Splits the pages of `p` (data in `held`, in pagemap order): entries of
/// areas that may be lazy become `LAZY` (no `PRESENT`) and stay in `held`;
/// the others' data is appended to `local` (`pages-1.img`). Rewrites
/// `p.pagemap` accordingly and returns the held pages and their count.
pub fn hold_lazy(p: &mut ProcessDump, held: File, local: &mut File) -> Result<HeldPages, DumpError> {
    let vmas = &p.mm.vmas;
    let mut kept = Vec::new();
    let mut buf = vec![0u8; CHUNK];
    let mut off = 0u64;
    for e in p.pagemap.iter_mut() {
        let len = u64::from(e.nr_pages) * PAGE_SIZE;
        let i = vmas.partition_point(|v| v.map.start <= e.vaddr);
        let vma = i.checked_sub(1).and_then(|i| vmas.get(i)).filter(|v| e.vaddr + len <= v.map.end);
        let vma = vma.ok_or(DumpError::Internal("a pagemap entry outside every area"))?;
        if can_be_lazy(vma) {
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
