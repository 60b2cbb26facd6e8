//! [`StreamSink`]: the dump side of `dump --page-server` without a round
//! trip per request. Requests and their pages are written back to back
//! through a large buffer; a thread reads the replies (one per request, in
//! order, as the protocol says) and notes the first refusal. The dump sees
//! a broken connection at its next write, a refusal at its next request
//! after the reply arrived, or at the latest at [`StreamSink::finish`],
//! which waits for every reply.

use std::io::{BufWriter, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use super::proto::{client_hello, read_exact_header, Cmd, PageServerError, Reply, Request, Result, Role, Status};
use super::proto::{MAX_PAGES, PUT_CONTINUES};
use crate::images::consts::pagemap_flags;
use crate::images::PAGE_SIZE;

/// A pipelined put session (see the module doc).
pub struct StreamSink {
    w: BufWriter<TcpStream>,
    /// Each request sent, for the reply reader to match its reply with.
    sent: Option<Sender<Request>>,
    replies: Option<JoinHandle<Result<()>>>,
    /// The first refusal, as soon as the reader saw it.
    refused: Arc<Mutex<Option<String>>>,
}

/// Reads one reply per request until FINISH's (all of them, so the session
/// ends cleanly); the first refusal is noted in `refused` at once and
/// returned at the end.
fn read_replies(mut s: TcpStream, sent: Receiver<Request>, refused: Arc<Mutex<Option<String>>>) -> Result<()> {
    let mut first = None;
    // The channel closes when the sink is dropped without FINISH.
    while let Ok(req) = sent.recv() {
        let rep = Reply::decode(&read_exact_header(&mut s)?)?;
        if rep.status != Status::Ok && first.is_none() {
            let e = PageServerError::Refused { cmd: req.cmd, pid: req.pid, vaddr: req.vaddr, status: rep.status };
            if let Ok(mut r) = refused.lock() {
                *r = Some(e.to_string());
            }
            first = Some(e);
        }
        if req.cmd == Cmd::Finish {
            return first.map_or(Ok(()), Err);
        }
    }
    Err(first.unwrap_or_else(|| PageServerError::Protocol("the session ended without FINISH".into())))
}

impl StreamSink {
    /// Connects, says hello and starts the reply reader.
    pub fn connect(addr: impl ToSocketAddrs) -> Result<StreamSink> {
        let mut s = TcpStream::connect(addr)?;
        s.set_nodelay(true)?;
        client_hello(&mut s, Role::Put)?;
        let r = s.try_clone()?;
        let (sent, rx) = channel();
        let refused = Arc::new(Mutex::new(None));
        let seen = refused.clone();
        let replies = std::thread::spawn(move || read_replies(r, rx, seen));
        Ok(StreamSink { w: BufWriter::with_capacity(4 << 20, s), sent: Some(sent), replies: Some(replies), refused })
    }

    fn send(&mut self, req: Request, data: &[u8]) -> Result<()> {
        // A refusal fails the dump now rather than at FINISH.
        if let Some(why) = self.refused.lock().ok().and_then(|r| r.clone()) {
            return Err(PageServerError::Protocol(why));
        }
        let gone = || PageServerError::Protocol("the page server stopped answering".into());
        if self.replies.as_ref().is_none_or(|r| r.is_finished()) {
            return Err(gone());
        }
        self.sent.as_ref().ok_or_else(gone)?.send(req).map_err(|_| gone())?;
        self.w.write_all(&req.encode())?;
        self.w.write_all(data)?;
        Ok(())
    }

    /// Starts the images of process `pid`: `pagemap-PID.img` naming
    /// `pages-<pages_id>.img` (an id the dump does not use for anything else).
    pub fn open(&mut self, pid: u32, pages_id: u32) -> Result<()> {
        self.send(Request { cmd: Cmd::Open, flags: 0, pid, pages_id, vaddr: 0, nr_pages: 0 }, &[])
    }

    /// Pages at `vaddr` with pagemap `flags` (PRESENT added). With
    /// [`PUT_CONTINUES`] in `flags` they extend the entry of the previous
    /// call; a call above [`MAX_PAGES`] goes as continued PUTs.
    pub fn put(&mut self, pid: u32, vaddr: u64, flags: u32, data: &[u8]) -> Result<()> {
        if data.is_empty() || !(data.len() as u64).is_multiple_of(PAGE_SIZE) {
            return Err(PageServerError::Protocol(format!("{} bytes is not whole pages", data.len())));
        }
        let mut flags = flags | pagemap_flags::PRESENT;
        let mut at = vaddr;
        for piece in data.chunks((MAX_PAGES * PAGE_SIZE) as usize) {
            let nr_pages = piece.len() as u64 / PAGE_SIZE;
            self.send(Request { cmd: Cmd::Put, flags, pid, pages_id: 0, vaddr: at, nr_pages }, piece)?;
            flags |= PUT_CONTINUES;
            at += piece.len() as u64;
        }
        Ok(())
    }

    /// Finishes the images of `pid`.
    pub fn close(&mut self, pid: u32) -> Result<()> {
        self.send(Request { cmd: Cmd::Close, flags: 0, pid, pages_id: 0, vaddr: 0, nr_pages: 0 }, &[])
    }

    /// Ends the session and waits for every reply: `Ok` only when the
    /// server accepted everything.
    pub fn finish(mut self) -> Result<()> {
        let sent = self.send(Request { cmd: Cmd::Finish, flags: 0, pid: 0, pages_id: 0, vaddr: 0, nr_pages: 0 }, &[]);
        let flushed = self.w.flush().map_err(PageServerError::from);
        self.sent = None;
        let replies = self.replies.take().ok_or_else(|| PageServerError::Protocol("no reply reader".into()))?;
        let answered = replies.join().map_err(|_| PageServerError::Protocol("reply reader panicked".into()))?;
        // A refusal explains a failed write better than the write error.
        answered.and(sent).and(flushed)
    }
}

impl Drop for StreamSink {
    /// Ends the connection both ways, so a reply reader still waiting (the
    /// session abandoned on an error) returns and its thread ends.
    fn drop(&mut self) {
        let _ = self.w.get_ref().shutdown(std::net::Shutdown::Both);
        self.sent = None;
        if let Some(r) = self.replies.take() {
            let _ = r.join();
        }
    }
}
