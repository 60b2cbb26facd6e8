//! The serving side: one connection at a time, answering OPEN/ADD/CLOSE by
//! writing images and GET from a [`PageStore`], as CRIU's page server does.

use std::io::{Read, Write};
use std::net::TcpListener;

use super::proto::{read_header, Cmd, Iov, PageServerError, Result, Target, MAX_GET_PAGES};
use super::store::PageStore;
use crate::images::consts::pagemap_flags;
use crate::images::pb::{PagemapEntry, PagemapHead};
use crate::images::{ImageDir, ImageKind, ImageWriter, PAGE_SIZE};

/// The first pages image id a server gives (CRIU's `up_page_ids_base`):
/// above those of a dump writing into the same directory.
pub const FIRST_PAGES_ID: u32 = 0x10001;

/// Bytes of pages copied from the socket to the pages image at a time.
const CHUNK: usize = 1 << 20;

/// Counters of one session.
#[derive(Debug, Default, Clone, Copy)]
pub struct SessionStats {
    /// Pages received by ADD.
    pub pages_put: u64,
    /// Pages sent by GET.
    pub pages_got: u64,
    /// Requests answered.
    pub requests: u64,
}

/// The images being received for one pagemap.
struct Incoming {
    dst_id: u64,
    pagemap: ImageWriter,
    pages: ImageWriter,
}

/// One connection's state: where ADDs go and where GETs come from.
pub struct Session<'a> {
    sink: Option<&'a ImageDir>,
    store: Option<&'a mut dyn PageStore>,
    open: Option<Incoming>,
    /// Every image opened so far: none may come twice.
    opened: Vec<u64>,
    next_pages_id: u32,
    buf: Vec<u8>,
    /// Counters.
    pub stats: SessionStats,
}

impl<'a> Session<'a> {
    /// A session writing received pages into `sink` and answering GETs from
    /// `store` (either may be absent: those requests end the session).
    pub fn new(sink: Option<&'a ImageDir>, store: Option<&'a mut dyn PageStore>) -> Self {
        Session { sink, store, open: None, opened: Vec::new(), next_pages_id: FIRST_PAGES_ID, buf: Vec::new(), stats: SessionStats::default() }
    }

    /// Serves one connection until CLOSE or the peer closes. A dump that
    /// sent pages and went away without CLOSE failed: an error (its images
    /// are not whole); a GET client may just close. Any failure ends the
    /// session, the connection closed without an answer (as CRIU's: the
    /// protocol has no error replies).
    pub fn serve(&mut self, s: &mut (impl Read + Write)) -> Result<()> {
        let mut receiving = false;
        while let Some(b) = read_header::<32>(s)? {
            let iov = Iov::decode(&b)?;
            self.stats.requests += 1;
            match iov.cmd {
                Cmd::Open | Cmd::Open2 => {
                    receiving = true;
                    let has_parent = self.open_image(iov.dst_id)?;
                    if iov.cmd == Cmd::Open2 {
                        s.write_all(&[u8::from(has_parent)])?;
                    }
                }
                Cmd::Parent => {
                    let has = self.has_parent(Target::decode(iov.dst_id)?)?;
                    s.write_all(&i32::from(has).to_le_bytes())?;
                }
                Cmd::Add | Cmd::AddF | Cmd::Hole => {
                    receiving = true;
                    let flags = match iov.cmd {
                        Cmd::Add => pagemap_flags::PRESENT,
                        Cmd::Hole => pagemap_flags::PARENT,
                        _ => iov.flags,
                    };
                    self.add(s, &iov, flags)?;
                }
                Cmd::Close | Cmd::ForceClose => {
                    self.close_open()?;
                    s.write_all(&0i32.to_le_bytes())?;
                    return Ok(());
                }
                Cmd::Get => self.get(s, &iov)?,
            }
        }
        match &self.open {
            Some(inc) => Err(PageServerError::Protocol(format!(
                "connection closed with image {:?} unfinished (no CLOSE)",
                Target::decode(inc.dst_id)?
            ))),
            None if receiving => Err(PageServerError::Protocol("the dump closed the connection without CLOSE".into())),
            None => Ok(()),
        }
    }

    fn sink(&self) -> Result<&'a ImageDir> {
        self.sink.ok_or_else(|| PageServerError::Protocol("this server does not take pages".into()))
    }

    /// Whether the images directory's `parent` holds the pagemap of `t`.
    fn has_parent(&self, t: Target) -> Result<bool> {
        let (kind, id) = image_of(t);
        let parent = ImageDir::open_unchecked(self.sink()?.path().join("parent"));
        Ok(parent.exists(kind, id))
    }

    /// Finishes the image being received and starts the pagemap `dst_id`
    /// names (with a pages image of the next id); whether a parent has it.
    fn open_image(&mut self, dst_id: u64) -> Result<bool> {
        self.close_open()?;
        let t = Target::decode(dst_id)?;
        if self.opened.contains(&dst_id) {
            return Err(PageServerError::Protocol(format!("image {t:?} opened twice")));
        }
        let dir = self.sink()?;
        let (kind, id) = image_of(t);
        let pages_id = self.next_pages_id;
        self.next_pages_id += 1;
        let mut pagemap = dir.create_image(kind, id)?;
        pagemap.write_entry(&PagemapHead { pages_id: Some(pages_id) })?;
        let pages = dir.create_pages(u64::from(pages_id))?;
        self.opened.push(dst_id);
        self.open = Some(Incoming { dst_id, pagemap, pages });
        tracing::debug!("page server: receiving {t:?} (pages-{pages_id}.img)");
        self.has_parent(t)
    }

    /// One pagemap entry; with PRESENT its pages follow, copied through.
    fn add(&mut self, s: &mut impl Read, iov: &Iov, flags: u32) -> Result<()> {
        if iov.is_empty() {
            return Err(PageServerError::Protocol(format!("an entry of no pages at {:#x}", iov.vaddr)));
        }
        // CRIU's old dumps sent entries without OPEN: the image opens then.
        if self.open.as_ref().is_none_or(|i| i.dst_id != iov.dst_id) {
            self.open_image(iov.dst_id)?;
        }
        let inc = self.open.as_mut().ok_or(PageServerError::Protocol("no image open".into()))?;
        inc.pagemap.write_entry(&PagemapEntry::new(iov.vaddr, iov.nr_pages, flags))?;
        if flags & pagemap_flags::PRESENT == 0 {
            return Ok(());
        }
        let mut left = iov.len();
        self.buf.resize(CHUNK, 0);
        while left > 0 {
            let n = left.min(CHUNK as u64) as usize;
            s.read_exact(&mut self.buf[..n])?;
            inc.pages.write_raw(&self.buf[..n])?;
            left -= n as u64;
        }
        self.stats.pages_put += iov.nr_pages;
        Ok(())
    }

    /// Answers with an ADD_F header and the pages: as many as the store has
    /// in one run from the address (at least one), at most what was asked.
    fn get(&mut self, s: &mut impl Write, iov: &Iov) -> Result<()> {
        let store = self.store.as_deref_mut().ok_or_else(|| PageServerError::Protocol("this server serves no pages".into()))?;
        let pid = u32::try_from(iov.dst_id).map_err(|_| PageServerError::UnknownPid(u32::MAX))?;
        let want = iov.nr_pages.min(MAX_GET_PAGES) * PAGE_SIZE;
        let len = store.available(pid, iov.vaddr, want)?;
        if len == 0 {
            return Err(PageServerError::NoData { pid, vaddr: iov.vaddr, len: iov.len() });
        }
        let data = store.pages(pid, iov.vaddr, len)?;
        let head = Iov { cmd: Cmd::AddF, flags: pagemap_flags::PRESENT, nr_pages: len / PAGE_SIZE, vaddr: iov.vaddr, dst_id: iov.dst_id };
        s.write_all(&head.encode())?;
        s.write_all(data)?;
        self.stats.pages_got += len / PAGE_SIZE;
        Ok(())
    }

    fn close_open(&mut self) -> Result<()> {
        if let Some(inc) = self.open.take() {
            inc.pagemap.finish()?;
            inc.pages.finish()?;
        }
        Ok(())
    }
}

/// The image kind and id of a target's pagemap.
fn image_of(t: Target) -> (ImageKind, u64) {
    match t {
        Target::Task(pid) => (ImageKind::Pagemap, u64::from(pid)),
        Target::Shmem(id) => (ImageKind::ShmemPagemap, id),
    }
}

/// Accepts one connection on `listener` and serves it (`criu-rs
/// page-server`; also the source side of `dump --lazy-pages`, with `sink`
/// `None` and the held pages as store).
pub fn serve_one<'a>(
    listener: &TcpListener,
    sink: Option<&'a ImageDir>,
    store: Option<&'a mut (dyn PageStore + 'a)>,
) -> Result<SessionStats> {
    let (mut conn, peer) = listener.accept()?;
    conn.set_nodelay(true)?;
    tracing::info!("page server: connection from {peer}");
    let mut session = Session::new(sink, store);
    let r = session.serve(&mut conn);
    tracing::info!(
        "page server: session over: {} pages received, {} pages sent, {} requests",
        session.stats.pages_put,
        session.stats.pages_got,
        session.stats.requests
    );
    r.map(|()| session.stats)
}
