//! The client side: [`PageSink`] sends a dump's pages to a page server,
//! [`PageClient`] fetches pages from one (post-copy).

use std::io::{BufWriter, Write};
use std::net::{TcpStream, ToSocketAddrs};

use super::proto::{client_hello, read_exact_header, Cmd, PageServerError, Reply, Request, Result, Role, Status, MAX_PAGES, PUT_CONTINUES};
use super::store::PageStore;
use crate::images::consts::pagemap_flags;
use crate::images::PAGE_SIZE;

fn connect(addr: impl ToSocketAddrs, role: Role) -> Result<TcpStream> {
    let mut s = TcpStream::connect(addr)?;
    s.set_nodelay(true)?;
    client_hello(&mut s, role)?;
    Ok(s)
}

fn expect_ok(s: &mut TcpStream, req: &Request) -> Result<Reply> {
    let rep = Reply::decode(&read_exact_header(s)?)?;
    if rep.status != Status::Ok {
        return Err(PageServerError::Refused { cmd: req.cmd, pid: req.pid, vaddr: req.vaddr, status: rep.status });
    }
    Ok(rep)
}

/// The dump side of `dump --page-server`: per process, `open`, then `put`
/// the pagemap entries in address order, then `close`; `finish` at the end.
pub struct PageSink {
    s: BufWriter<TcpStream>,
}

impl PageSink {
    /// Connects and says hello.
    pub fn connect(addr: impl ToSocketAddrs) -> Result<PageSink> {
        Ok(PageSink { s: BufWriter::with_capacity(1 << 20, connect(addr, Role::Put)?) })
    }

    fn call(&mut self, req: Request, data: &[u8]) -> Result<()> {
        self.s.write_all(&req.encode())?;
        self.s.write_all(data)?;
        self.s.flush()?;
        expect_ok(self.s.get_mut(), &req)?;
        Ok(())
    }

    /// Starts the images of process `pid`: `pagemap-PID.img` naming
    /// `pages-<pages_id>.img` (an id the dump does not use for anything else).
    pub fn open(&mut self, pid: u32, pages_id: u32) -> Result<()> {
        self.call(Request { cmd: Cmd::Open, flags: 0, pid, pages_id, vaddr: 0, nr_pages: 0 }, &[])
    }

    /// One pagemap entry with its pages (`flags` gets PRESENT added); sent
    /// as PUTs of at most [`MAX_PAGES`] pages, the later ones flagged
    /// [`PUT_CONTINUES`] so the server writes one entry (with
    /// `PUT_CONTINUES` in `flags`, the entry continues the previous call's).
    pub fn put(&mut self, pid: u32, vaddr: u64, flags: u32, data: &[u8]) -> Result<()> {
        if data.is_empty() || !(data.len() as u64).is_multiple_of(PAGE_SIZE) {
            return Err(PageServerError::Protocol(format!("{} bytes is not whole pages", data.len())));
        }
        for (i, chunk) in data.chunks((MAX_PAGES * PAGE_SIZE) as usize).enumerate() {
            let at = vaddr + i as u64 * MAX_PAGES * PAGE_SIZE;
            let req = Request {
                cmd: Cmd::Put,
                flags: flags | pagemap_flags::PRESENT | if i > 0 { PUT_CONTINUES } else { 0 },
                pid,
                pages_id: 0,
                vaddr: at,
                nr_pages: chunk.len() as u64 / PAGE_SIZE,
            };
            self.call(req, chunk)?;
        }
        Ok(())
    }

    /// A pagemap entry without data (e.g. LAZY pages the source keeps);
    /// one entry however long, as [`PageSink::put`].
    pub fn put_entry(&mut self, pid: u32, vaddr: u64, nr_pages: u64, flags: u32) -> Result<()> {
        let mut done = 0;
        while done < nr_pages {
            let n = (nr_pages - done).min(MAX_PAGES);
            let req = Request {
                cmd: Cmd::Put,
                flags: (flags & !pagemap_flags::PRESENT) | if done > 0 { PUT_CONTINUES } else { 0 },
                pid,
                pages_id: 0,
                vaddr: vaddr + done * PAGE_SIZE,
                nr_pages: n,
            };
            self.call(req, &[])?;
            done += n;
        }
        Ok(())
    }

    /// Finishes the images of `pid`.
    pub fn close(&mut self, pid: u32) -> Result<()> {
        self.call(Request { cmd: Cmd::Close, flags: 0, pid, pages_id: 0, vaddr: 0, nr_pages: 0 }, &[])
    }

    /// Ends the session.
    pub fn finish(mut self) -> Result<()> {
        self.call(Request { cmd: Cmd::Finish, flags: 0, pid: 0, pages_id: 0, vaddr: 0, nr_pages: 0 }, &[])
    }
}

/// Fetches pages from a page server (the lazy-pages daemon's remote source).
pub struct PageClient {
    s: TcpStream,
    buf: Vec<u8>,
}

impl PageClient {
    /// Connects and says hello.
    pub fn connect(addr: impl ToSocketAddrs) -> Result<PageClient> {
        Ok(PageClient { s: connect(addr, Role::Get)?, buf: Vec::new() })
    }

    /// `len` bytes at image address `vaddr` of `pid`.
    pub fn get(&mut self, pid: u32, vaddr: u64, len: u64) -> Result<&[u8]> {
        if !len.is_multiple_of(PAGE_SIZE) {
            return Err(PageServerError::Protocol(format!("{len} bytes is not whole pages")));
        }
        self.buf.resize(len as usize, 0);
        let mut done = 0u64;
        while done < len {
            let n = ((len - done) / PAGE_SIZE).min(MAX_PAGES);
            let req = Request { cmd: Cmd::Get, flags: 0, pid, pages_id: 0, vaddr: vaddr + done, nr_pages: n };
            std::io::Write::write_all(&mut self.s, &req.encode())?;
            let rep = expect_ok(&mut self.s, &req)?;
            if rep.len != n * PAGE_SIZE {
                return Err(PageServerError::Protocol(format!("asked {} bytes, reply carries {}", n * PAGE_SIZE, rep.len)));
            }
            std::io::Read::read_exact(&mut self.s, &mut self.buf[done as usize..(done + rep.len) as usize])?;
            done += rep.len;
        }
        Ok(&self.buf)
    }

    /// Ends the session.
    pub fn finish(mut self) -> Result<()> {
        let req = Request { cmd: Cmd::Finish, flags: 0, pid: 0, pages_id: 0, vaddr: 0, nr_pages: 0 };
        std::io::Write::write_all(&mut self.s, &req.encode())?;
        expect_ok(&mut self.s, &req).map(|_| ())
    }
}

impl PageStore for PageClient {
    fn pages(&mut self, pid: u32, vaddr: u64, len: u64) -> Result<&[u8]> {
        self.get(pid, vaddr, len)
    }
}
