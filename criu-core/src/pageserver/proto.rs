//! The wire format of the page server (layout in the [module doc](super)):
//! fixed-size hello/request/reply headers, their checks, and bounded reads.

use std::io::{self, Read, Write};

use crate::images::{ImageError, PAGE_SIZE};

/// `"CRPS"` as a little-endian u32.
pub const MAGIC: u32 = 0x5350_5243;
/// The protocol version spoken here (2: OPEN names the pages image id).
pub const VERSION: u32 = 2;
/// Most pages one PUT or GET may carry (4 MiB).
pub const MAX_PAGES: u64 = 1024;

/// PUT flag: this PUT continues the previous one's pagemap entry (same
/// flags, adjacent address); the server writes them as one entry.
pub const PUT_CONTINUES: u32 = 1 << 31;

/// What a connection is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A dump sends pages (OPEN/PUT/CLOSE).
    Put = 1,
    /// A lazy-pages daemon fetches pages (GET).
    Get = 2,
}

/// Request commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cmd {
    /// Start a pid's pagemap.
    Open = 1,
    /// One pagemap entry (and its pages when PRESENT).
    Put = 2,
    /// Finish a pid's images.
    Close = 3,
    /// Fetch pages.
    Get = 4,
    /// End of session.
    Finish = 5,
}

/// Reply status codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Done.
    Ok = 0,
    /// No such pid in the store / not opened.
    UnknownPid = 1,
    /// The range is not (entirely) in the store.
    NoData = 2,
    /// Malformed or out-of-order request.
    BadRequest = 3,
    /// More than [`MAX_PAGES`].
    TooLarge = 4,
    /// The server failed to read or write its images.
    Io = 5,
    /// Unsupported protocol version.
    Version = 6,
}

impl Status {
    fn from_u32(v: u32) -> Option<Status> {
        use Status::*;
        [Ok, UnknownPid, NoData, BadRequest, TooLarge, Io, Version].into_iter().find(|s| *s as u32 == v)
    }
}

/// Page server failures, on either side.
#[derive(Debug, thiserror::Error)]
pub enum PageServerError {
    /// The connection failed or closed early.
    #[error("page server connection: {0}")]
    Io(#[from] io::Error),
    /// The peer does not speak this protocol.
    #[error("not a criu-rs page server peer (magic {0:#x})")]
    BadMagic(u32),
    /// The peer speaks another version.
    #[error("page server protocol version {got}, this side speaks {VERSION}")]
    Version {
        /// The peer's version.
        got: u32,
    },
    /// A request or reply beyond the bounds.
    #[error("{what}: {pages} pages is more than the limit of {MAX_PAGES}")]
    TooLarge {
        /// Which message.
        what: &'static str,
        /// Pages it claimed.
        pages: u64,
    },
    /// Malformed message.
    #[error("page server protocol: {0}")]
    Protocol(String),
    /// The server refused a request.
    #[error("page server refused {cmd:?} pid {pid} at {vaddr:#x}: {status:?}")]
    Refused {
        /// The request.
        cmd: Cmd,
        /// Its pid.
        pid: u32,
        /// Its address.
        vaddr: u64,
        /// Why.
        status: Status,
    },
    /// A store lookup failed (server side).
    #[error("pid {pid}: no data for {len:#x} bytes at {vaddr:#x}")]
    NoData {
        /// Pid.
        pid: u32,
        /// Address.
        vaddr: u64,
        /// Length.
        len: u64,
    },
    /// Unknown pid (server side).
    #[error("pid {0} is not in the page store")]
    UnknownPid(u32),
    /// Reading or writing images.
    #[error(transparent)]
    Image(#[from] ImageError),
}

/// A result with [`PageServerError`].
pub type Result<T> = std::result::Result<T, PageServerError>;

/// The 16-byte hello.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hello {
    /// Protocol version.
    pub version: u32,
    /// Role as u32 (see [`Role`]).
    pub role: u32,
}

impl Hello {
    /// Encodes with the magic.
    pub fn encode(&self) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[0..4].copy_from_slice(&MAGIC.to_le_bytes());
        b[4..8].copy_from_slice(&self.version.to_le_bytes());
        b[8..12].copy_from_slice(&self.role.to_le_bytes());
        b
    }

    /// Decodes, checking the magic (not the version: the caller answers it).
    pub fn decode(b: &[u8; 16]) -> Result<Hello> {
        let magic = le32(b, 0);
        if magic != MAGIC {
            return Err(PageServerError::BadMagic(magic));
        }
        Ok(Hello { version: le32(b, 4), role: le32(b, 8) })
    }
}

/// The 32-byte request header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    /// Command.
    pub cmd: Cmd,
    /// Pagemap flags (PUT).
    pub flags: u32,
    /// Process id (image pid).
    pub pid: u32,
    /// OPEN: the id of the pages image to write (`pages-<id>.img`, chosen
    /// by the dump so it cannot collide with the images it writes itself);
    /// 0 in every other request.
    pub pages_id: u32,
    /// Page-aligned address.
    pub vaddr: u64,
    /// Pages.
    pub nr_pages: u64,
}

impl Request {
    /// Encodes.
    pub fn encode(&self) -> [u8; 32] {
        let mut b = [0u8; 32];
        b[0..4].copy_from_slice(&(self.cmd as u32).to_le_bytes());
        b[4..8].copy_from_slice(&self.flags.to_le_bytes());
        b[8..12].copy_from_slice(&self.pid.to_le_bytes());
        b[12..16].copy_from_slice(&self.pages_id.to_le_bytes());
        b[16..24].copy_from_slice(&self.vaddr.to_le_bytes());
        b[24..32].copy_from_slice(&self.nr_pages.to_le_bytes());
        b
    }

    /// Decodes and checks the bounds: known command, aligned address, at
    /// most [`MAX_PAGES`] pages, a pages id only in OPEN.
    pub fn decode(b: &[u8; 32]) -> Result<Request> {
        use Cmd::*;
        let c = le32(b, 0);
        let cmd = [Open, Put, Close, Get, Finish]
            .into_iter()
            .find(|x| *x as u32 == c)
            .ok_or_else(|| PageServerError::Protocol(format!("unknown command {c}")))?;
        let r = Request { cmd, flags: le32(b, 4), pid: le32(b, 8), pages_id: le32(b, 12), vaddr: le64(b, 16), nr_pages: le64(b, 24) };
        if r.pages_id != 0 && cmd != Open {
            return Err(PageServerError::Protocol(format!("{cmd:?} with a pages id ({})", r.pages_id)));
        }
        if !r.vaddr.is_multiple_of(PAGE_SIZE) {
            return Err(PageServerError::Protocol(format!("unaligned address {:#x}", r.vaddr)));
        }
        if r.nr_pages > MAX_PAGES {
            return Err(PageServerError::TooLarge { what: "request", pages: r.nr_pages });
        }
        Ok(r)
    }

    /// Bytes of pages this request carries or asks for.
    pub fn data_len(&self) -> usize {
        (self.nr_pages * PAGE_SIZE) as usize
    }
}

/// The 16-byte reply header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reply {
    /// Outcome.
    pub status: Status,
    /// Bytes following.
    pub len: u64,
}

impl Reply {
    /// Encodes.
    pub fn encode(&self) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[0..4].copy_from_slice(&(self.status as u32).to_le_bytes());
        b[8..16].copy_from_slice(&self.len.to_le_bytes());
        b
    }

    /// Decodes; a length above [`MAX_PAGES`] pages is refused.
    pub fn decode(b: &[u8; 16]) -> Result<Reply> {
        let s = le32(b, 0);
        let status = Status::from_u32(s).ok_or_else(|| PageServerError::Protocol(format!("unknown status {s}")))?;
        let len = le64(b, 8);
        if len > MAX_PAGES * PAGE_SIZE {
            return Err(PageServerError::TooLarge { what: "reply", pages: len / PAGE_SIZE });
        }
        Ok(Reply { status, len })
    }
}

fn le32(b: &[u8], off: usize) -> u32 {
    let mut x = [0u8; 4];
    x.copy_from_slice(&b[off..off + 4]);
    u32::from_le_bytes(x)
}

fn le64(b: &[u8], off: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[off..off + 8]);
    u64::from_le_bytes(x)
}

/// Reads one fixed-size header; `Ok(None)` on a clean end of stream before
/// its first byte.
pub fn read_header<const N: usize>(r: &mut impl Read) -> Result<Option<[u8; N]>> {
    let mut b = [0u8; N];
    let mut got = 0;
    while got < N {
        match r.read(&mut b[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into()),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(Some(b))
}

/// Reads a header that must be there.
pub fn read_exact_header<const N: usize>(r: &mut impl Read) -> Result<[u8; N]> {
    read_header(r)?.ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof).into())
}

/// Sends our hello and checks the peer's (client side).
pub fn client_hello(s: &mut (impl Read + Write), role: Role) -> Result<()> {
    s.write_all(&Hello { version: VERSION, role: role as u32 }.encode())?;
    let b: [u8; 16] = read_exact_header(s)?;
    // A server refusing our version answers with a reply instead.
    if le32(&b, 0) == Status::Version as u32 {
        return Err(PageServerError::Version { got: VERSION });
    }
    let h = Hello::decode(&b)?;
    if h.version != VERSION {
        return Err(PageServerError::Version { got: h.version });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip_and_bounds() {
        let r = Request { cmd: Cmd::Get, flags: 4, pid: 42, pages_id: 0, vaddr: 0x7000_0000, nr_pages: 16 };
        assert_eq!(Request::decode(&r.encode()).unwrap(), r);
        let open = Request { cmd: Cmd::Open, flags: 0, pid: 42, pages_id: 7, vaddr: 0, nr_pages: 0 };
        assert_eq!(Request::decode(&open.encode()).unwrap(), open);
        // A pages id belongs in OPEN only.
        assert!(matches!(Request::decode(&Request { pages_id: 7, ..r }.encode()), Err(PageServerError::Protocol(_))));
        let mut big = r;
        big.nr_pages = MAX_PAGES + 1;
        assert!(matches!(Request::decode(&big.encode()), Err(PageServerError::TooLarge { .. })));
        let mut b = r.encode();
        b[16] = 1;
        assert!(matches!(Request::decode(&b), Err(PageServerError::Protocol(_))));
        b = r.encode();
        b[0] = 9;
        assert!(matches!(Request::decode(&b), Err(PageServerError::Protocol(_))));
        let rep = Reply { status: Status::NoData, len: 8192 };
        assert_eq!(Reply::decode(&rep.encode()).unwrap(), rep);
        let h = Hello { version: 7, role: 2 };
        assert_eq!(Hello::decode(&h.encode()).unwrap(), h);
        let mut hb = h.encode();
        hb[0] ^= 1;
        assert!(matches!(Hello::decode(&hb), Err(PageServerError::BadMagic(_))));
    }
}
