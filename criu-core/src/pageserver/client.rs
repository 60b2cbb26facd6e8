//! The client side: [`PageSink`] sends a dump's pages to a page server,
//! [`PageClient`] fetches pages from one (post-copy). Both speak CRIU's
//! protocol, so the peer may be CRIU's page server or its `dump
//! --lazy-pages`.

use std::io::{BufWriter, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};

use super::proto::{close_status, read_answer, Cmd, Iov, PageServerError, Result, Target, MAX_GET_PAGES};
use super::store::PageStore;
use crate::images::consts::pagemap_flags;
use crate::images::PAGE_SIZE;

fn connect(addr: impl ToSocketAddrs) -> Result<TcpStream> {
    let s = TcpStream::connect(addr)?;
    s.set_nodelay(true)?;
    Ok(s)
}

/// The dump side of `dump --page-server`: per pagemap, [`PageSink::open`],
/// then its entries in address order ([`PageSink::entry`] and the data of
/// PRESENT ones); [`PageSink::finish`] at the end. Nothing is answered but
/// OPEN and CLOSE, so requests stream through a large buffer; a server
/// that gave up shows as a failed write, or at the latest at CLOSE.
pub struct PageSink {
    w: BufWriter<TcpStream>,
    /// The open image and the bytes of pages its last entry still needs.
    open: Option<(Target, u64)>,
}

impl PageSink {
    /// Connects.
    pub fn connect(addr: impl ToSocketAddrs) -> Result<PageSink> {
        Ok(PageSink { w: BufWriter::with_capacity(4 << 20, connect(addr)?), open: None })
    }

    fn expect_no_data(&self) -> Result<()> {
        match self.open {
            Some((t, left)) if left > 0 => Err(PageServerError::Protocol(format!("{t:?}: {left} bytes of pages not sent"))),
            _ => Ok(()),
        }
    }

    /// Starts the pagemap of `t` (the server names its pages image);
    /// whether the server has a parent image of it.
    pub fn open(&mut self, t: Target) -> Result<bool> {
        self.expect_no_data()?;
        self.w.write_all(&Iov::bare(Cmd::Open2, t.encode()).encode())?;
        self.w.flush()?;
        let [has_parent] = read_answer::<1>(self.w.get_mut(), || format!("OPEN of {t:?}"))?;
        self.open = Some((t, 0));
        Ok(has_parent != 0)
    }

    /// A pagemap entry of the open image: `nr_pages` at `vaddr` with pagemap
    /// `flags`; with PRESENT, exactly their bytes must follow through
    /// [`PageSink::data`].
    pub fn entry(&mut self, vaddr: u64, nr_pages: u64, flags: u32) -> Result<()> {
        self.expect_no_data()?;
        let Some((t, _)) = self.open else {
            return Err(PageServerError::Protocol("an entry before OPEN".into()));
        };
        if nr_pages == 0 || flags >> super::proto::CMD_BITS != 0 {
            return Err(PageServerError::Protocol(format!("entry of {nr_pages} pages, flags {flags:#x}")));
        }
        let iov = Iov { cmd: Cmd::AddF, flags, nr_pages, vaddr, dst_id: t.encode() };
        self.w.write_all(&iov.encode())?;
        let data = if flags & pagemap_flags::PRESENT != 0 { iov.len() } else { 0 };
        self.open = Some((t, data));
        Ok(())
    }

    /// Pages of the last PRESENT entry, in order, in pieces of any size.
    pub fn data(&mut self, bytes: &[u8]) -> Result<()> {
        match self.open.as_mut() {
            Some((_, left)) if *left >= bytes.len() as u64 => *left -= bytes.len() as u64,
            _ => return Err(PageServerError::Protocol(format!("{} bytes of pages the entry does not have", bytes.len()))),
        }
        Ok(self.w.write_all(bytes)?)
    }

    /// Ends the session: CLOSE, answered once the server has written
    /// everything.
    pub fn finish(mut self) -> Result<()> {
        self.expect_no_data()?;
        self.w.write_all(&Iov::bare(Cmd::Close, 0).encode())?;
        self.w.flush()?;
        close_status(self.w.get_mut())
    }
}

/// Fetches pages from a page server (the lazy-pages daemon's remote source).
pub struct PageClient {
    s: TcpStream,
    buf: Vec<u8>,
}

impl PageClient {
    /// Connects.
    pub fn connect(addr: impl ToSocketAddrs) -> Result<PageClient> {
        Ok(PageClient { s: connect(addr)?, buf: Vec::new() })
    }

    /// `len` bytes at image address `vaddr` of `pid`: GETs of at most
    /// [`MAX_GET_PAGES`], each answered with at least one page (a server
    /// may answer fewer than asked; a server without them closes the
    /// connection, which is then of no more use).
    pub fn get(&mut self, pid: u32, vaddr: u64, len: u64) -> Result<&[u8]> {
        if !len.is_multiple_of(PAGE_SIZE) {
            return Err(PageServerError::Protocol(format!("{len} bytes is not whole pages")));
        }
        self.buf.resize(len as usize, 0);
        let mut done = 0u64;
        while done < len {
            let at = vaddr + done;
            let n = ((len - done) / PAGE_SIZE).min(MAX_GET_PAGES);
            let req = Iov { cmd: Cmd::Get, flags: 0, nr_pages: n, vaddr: at, dst_id: u64::from(pid) };
            self.s.write_all(&req.encode())?;
            let what = || format!("GET of {n} pages at {at:#x} of pid {pid}");
            let rep = Iov::decode(&read_answer(&mut self.s, what)?)?;
            let ok = rep.cmd == Cmd::AddF
                && rep.flags & pagemap_flags::PRESENT != 0
                && rep.vaddr == at
                && rep.dst_id == u64::from(pid)
                && (1..=n).contains(&rep.nr_pages);
            if !ok {
                return Err(PageServerError::Protocol(format!("{} answered with {rep:?}", what())));
            }
            let got = rep.len();
            self.s.read_exact(&mut self.buf[done as usize..(done + got) as usize])?;
            done += got;
        }
        Ok(&self.buf)
    }

    /// Ends the session (CLOSE and its status).
    pub fn finish(mut self) -> Result<()> {
        self.s.write_all(&Iov::bare(Cmd::Close, 0).encode())?;
        close_status(&mut self.s)
    }
}

impl PageStore for PageClient {
    /// Whatever the server has, it gives over several GETs.
    fn available(&mut self, _pid: u32, _vaddr: u64, max: u64) -> Result<u64> {
        Ok(max)
    }

    fn pages(&mut self, pid: u32, vaddr: u64, len: u64) -> Result<&[u8]> {
        self.get(pid, vaddr, len)
    }
}
