//! The serving side: one connection at a time, answering OPEN/PUT/CLOSE by
//! writing images and GET from a [`PageStore`].

use std::io::{Read, Write};
use std::net::TcpListener;

use super::proto::{read_exact_header, read_header, Cmd, Hello, PageServerError, Reply, Request, Result, Role, Status, PUT_CONTINUES, VERSION};
use super::store::PageStore;
use crate::images::consts::pagemap_flags;
use crate::images::pb::{PagemapEntry, PagemapHead};
use crate::images::{ImageDir, ImageKind, ImageWriter, PAGE_SIZE};

/// Counters of one session.
#[derive(Debug, Default, Clone, Copy)]
pub struct SessionStats {
    /// Pages received by PUT.
    pub pages_put: u64,
    /// Pages sent by GET.
    pub pages_got: u64,
    /// Requests answered.
    pub requests: u64,
}

/// The images being received for one pid.
struct Incoming {
    pid: u32,
    pagemap: ImageWriter,
    pages: ImageWriter,
    /// The entry being received (vaddr, pages, flags): written when the
    /// next PUT does not continue it ([`PUT_CONTINUES`]) or at CLOSE.
    entry: Option<(u64, u64, u32)>,
}

/// One connection's state: where PUTs go and where GETs come from.
pub struct Session<'a> {
    sink: Option<&'a ImageDir>,
    store: Option<&'a mut dyn PageStore>,
    open: Option<Incoming>,
    /// (pid, pages id) of every OPEN accepted so far: neither may come again.
    opened: Vec<(u32, u32)>,
    buf: Vec<u8>,
    /// Counters.
    pub stats: SessionStats,
}

impl<'a> Session<'a> {
    /// A session writing received pages into `sink` and answering GETs from
    /// `store` (either may be absent: those requests are refused).
    pub fn new(sink: Option<&'a ImageDir>, store: Option<&'a mut dyn PageStore>) -> Self {
        Session { sink, store, open: None, opened: Vec::new(), buf: Vec::new(), stats: SessionStats::default() }
    }

    /// Serves one connection until FINISH or the peer closes.
    pub fn serve(&mut self, s: &mut (impl Read + Write)) -> Result<()> {
        let h = Hello::decode(&read_exact_header(s)?)?;
        if h.version != VERSION {
            s.write_all(&Reply { status: Status::Version, len: 0 }.encode())?;
            return Err(PageServerError::Version { got: h.version });
        }
        s.write_all(&Hello { version: VERSION, role: h.role }.encode())?;
        while let Some(b) = read_header::<32>(s)? {
            let req = Request::decode(&b)?;
            self.stats.requests += 1;
            match req.cmd {
                Cmd::Get => self.get(s, &req)?,
                Cmd::Finish => {
                    self.close_open()?;
                    s.write_all(&Reply { status: Status::Ok, len: 0 }.encode())?;
                    return Ok(());
                }
                _ => {
                    let status = self.put_side(s, &req)?;
                    s.write_all(&Reply { status, len: 0 }.encode())?;
                }
            }
        }
        // A dump that went away without FINISH failed: its images are not
        // whole. (A GET client may just close.)
        match &self.open {
            Some(inc) => Err(PageServerError::Protocol(format!("connection closed with the images of pid {} unfinished", inc.pid))),
            None if h.role == Role::Put as u32 => Err(PageServerError::Protocol("the dump closed the connection without FINISH".into())),
            None => Ok(()),
        }
    }

    fn get(&mut self, s: &mut impl Write, req: &Request) -> Result<()> {
        let len = req.data_len() as u64;
        let Some(store) = self.store.as_deref_mut() else {
            return Ok(s.write_all(&Reply { status: Status::BadRequest, len: 0 }.encode())?);
        };
        match store.pages(req.pid, req.vaddr, len) {
            Ok(data) => {
                s.write_all(&Reply { status: Status::Ok, len }.encode())?;
                s.write_all(data)?;
                self.stats.pages_got += req.nr_pages;
            }
            Err(e) => {
                tracing::warn!("page server: GET refused: {e}");
                let status = match e {
                    PageServerError::UnknownPid(_) => Status::UnknownPid,
                    PageServerError::NoData { .. } => Status::NoData,
                    _ => Status::Io,
                };
                s.write_all(&Reply { status, len: 0 }.encode())?;
            }
        }
        Ok(())
    }

    /// OPEN/PUT/CLOSE: returns the status to answer. A PUT's data is always
    /// consumed so the stream stays in step.
    fn put_side(&mut self, s: &mut impl Read, req: &Request) -> Result<Status> {
        if req.cmd == Cmd::Put && req.flags & pagemap_flags::PRESENT != 0 {
            self.buf.resize(req.data_len(), 0);
            s.read_exact(&mut self.buf)?;
        }
        let Some(dir) = self.sink else {
            return Ok(Status::BadRequest);
        };
        match req.cmd {
            Cmd::Open => {
                // One pid at a time, each once, each into its own pages image.
                let again = self.opened.iter().any(|&(pid, id)| pid == req.pid || id == req.pages_id);
                if self.open.is_some() || req.pages_id == 0 || again {
                    return Ok(Status::BadRequest);
                }
                let id = req.pages_id;
                self.opened.push((req.pid, id));
                let mut pagemap = dir.create_image(ImageKind::Pagemap, u64::from(req.pid))?;
                pagemap.write_entry(&PagemapHead { pages_id: Some(id) })?;
                let pages = dir.create_pages(u64::from(id))?;
                self.open = Some(Incoming { pid: req.pid, pagemap, pages, entry: None });
                Ok(Status::Ok)
            }
            Cmd::Put => {
                let Some(inc) = self.open.as_mut().filter(|i| i.pid == req.pid) else {
                    return Ok(Status::UnknownPid);
                };
                if req.nr_pages == 0 {
                    return Ok(Status::BadRequest);
                }
                let flags = req.flags & !PUT_CONTINUES;
                match inc.entry.as_mut() {
                    Some((v, n, f)) if req.flags & PUT_CONTINUES != 0 => {
                        if *f != flags || *v + *n * PAGE_SIZE != req.vaddr {
                            return Ok(Status::BadRequest);
                        }
                        *n += req.nr_pages;
                    }
                    None if req.flags & PUT_CONTINUES != 0 => return Ok(Status::BadRequest),
                    _ => {
                        if let Some((v, n, f)) = inc.entry.replace((req.vaddr, req.nr_pages, flags)) {
                            inc.pagemap.write_entry(&PagemapEntry::new(v, n, f))?;
                        }
                    }
                }
                if req.flags & pagemap_flags::PRESENT != 0 {
                    inc.pages.write_raw(&self.buf)?;
                    self.stats.pages_put += req.nr_pages;
                }
                Ok(Status::Ok)
            }
            Cmd::Close => {
                if self.open.as_ref().is_none_or(|i| i.pid != req.pid) {
                    return Ok(Status::UnknownPid);
                }
                self.close_open()?;
                Ok(Status::Ok)
            }
            Cmd::Get | Cmd::Finish => Ok(Status::BadRequest),
        }
    }

    fn close_open(&mut self) -> Result<()> {
        if let Some(mut inc) = self.open.take() {
            if let Some((v, n, f)) = inc.entry.take() {
                inc.pagemap.write_entry(&PagemapEntry::new(v, n, f))?;
            }
            inc.pagemap.finish()?;
            inc.pages.finish()?;
        }
        Ok(())
    }
}

/// Accepts one connection on `listener` and serves it (`criu-rs
/// page-server`; also the source side of `dump --lazy-pages`, with `sink`
/// `None` and a [`MemStore`](super::store::MemStore)).
pub fn serve_one<'a>(
    listener: &TcpListener,
    sink: Option<&'a ImageDir>,
    store: Option<&'a mut (dyn PageStore + 'a)>,
) -> Result<SessionStats> {
    let (mut conn, peer) = listener.accept()?;
    conn.set_nodelay(true)?;
    tracing::info!("page server: connection from {peer}");
    let mut session = Session::new(sink, store);
    session.serve(&mut conn)?;
    tracing::info!(
        "page server: session done: {} pages received, {} pages sent, {} requests",
        session.stats.pages_put,
        session.stats.pages_got,
        session.stats.requests
    );
    Ok(session.stats)
}
