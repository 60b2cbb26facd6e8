//! The wire format of the page server (layout in the [module doc](super)):
//! CRIU's 32-byte `page_server_iov`, its commands and image ids, their
//! checks, and bounded reads.

use std::io::{self, Read};

use crate::images::{ImageError, PAGE_SIZE};

/// Most pages one GET asks for or one GET reply carries here (4 MiB). CRIU
/// sets no limit; a reply may carry fewer pages than asked for.
pub const MAX_GET_PAGES: u64 = 1024;

/// Bits of the command word that hold the command; the pagemap flags of an
/// [`Cmd::AddF`] are above them (CRIU's `PS_CMD_BITS`).
pub const CMD_BITS: u32 = 16;
/// Bits of an image id that hold its type (CRIU's `PS_TYPE_BITS`).
pub const TYPE_BITS: u32 = 8;

/// The commands (CRIU's `PS_IOV_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cmd {
    /// Pages with data (flags PRESENT implied): an old dump's ADD.
    Add = 1,
    /// A hole in the parent (flags PARENT implied): an old dump's HOLE.
    Hole = 2,
    /// Starts an image, no answer.
    Open = 3,
    /// Starts an image; answered with one byte, 1 if the server has a
    /// parent image of it.
    Open2 = 4,
    /// Asks whether the server has a parent image; answered with an i32.
    Parent = 5,
    /// A pagemap entry, its flags in the command word's high bits; the
    /// pages follow when PRESENT. Also a GET's answer.
    AddF = 6,
    /// Fetches pages (post-copy); `dst_id` is the bare pid.
    Get = 7,
    /// Ends the session; answered with an i32 status (0).
    Close = 0x1023,
    /// As CLOSE, for a socket another process keeps open.
    ForceClose = 0x1024,
}

impl Cmd {
    fn from_code(c: u32) -> Option<Cmd> {
        use Cmd::*;
        [Add, Hole, Open, Open2, Parent, AddF, Get, Close, ForceClose].into_iter().find(|x| *x as u32 == c)
    }
}

/// Which pagemap an image id names (CRIU's `encode_pm`: id << 8 | type).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Target {
    /// `pagemap-PID.img`.
    Task(u32),
    /// `pagemap-shmem-SHMID.img`.
    Shmem(u64),
}

impl Target {
    /// The 64-bit `dst_id`.
    pub fn encode(self) -> u64 {
        match self {
            Target::Task(pid) => u64::from(pid) << TYPE_BITS | 1,
            Target::Shmem(id) => id << TYPE_BITS | 2,
        }
    }

    /// Decodes a `dst_id`, including the type numbers older CRIUs sent
    /// (their image-kind numbers, which changed between releases).
    pub fn decode(dst_id: u64) -> Result<Target> {
        let id = dst_id >> TYPE_BITS;
        match dst_id & ((1 << TYPE_BITS) - 1) {
            1 | 10 | 11 | 16 | 17 => {
                u32::try_from(id).map(Target::Task).map_err(|_| PageServerError::Protocol(format!("pid {id} out of range")))
            }
            2 | 27 | 28 | 29 | 32 | 33 | 34 => Ok(Target::Shmem(id)),
            t => Err(PageServerError::Protocol(format!("unknown pagemap type {t} in image id {dst_id:#x}"))),
        }
    }
}

/// Page server failures, on either side.
#[derive(Debug, thiserror::Error)]
pub enum PageServerError {
    /// The connection failed or closed early.
    #[error("page server connection: {0}")]
    Io(#[from] io::Error),
    /// Malformed message, or one out of order.
    #[error("page server protocol: {0}")]
    Protocol(String),
    /// The peer closed the connection instead of answering (CRIU's page
    /// server does so on any failure, e.g. pages it does not have).
    #[error("page server closed the connection after {what} (see its log)")]
    Closed {
        /// The request left unanswered.
        what: String,
    },
    /// The server answered CLOSE with a failure status.
    #[error("page server ended the session with status {0}")]
    Status(i32),
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

/// CRIU's `struct page_server_iov`, 32 bytes on x86_64:
/// `u32 cmd` (flags << 16 | command), 4 bytes of padding, `u64 nr_pages`,
/// `u64 vaddr`, `u64 dst_id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Iov {
    /// Command.
    pub cmd: Cmd,
    /// Pagemap flags ([`Cmd::AddF`] only; 16 bits on the wire).
    pub flags: u32,
    /// Pages.
    pub nr_pages: u64,
    /// Page-aligned address.
    pub vaddr: u64,
    /// The image ([`Target::encode`]), or a GET's bare pid.
    pub dst_id: u64,
}

impl Iov {
    /// A request without pages or address.
    pub fn bare(cmd: Cmd, dst_id: u64) -> Iov {
        Iov { cmd, flags: 0, nr_pages: 0, vaddr: 0, dst_id }
    }

    /// Encodes.
    pub fn encode(&self) -> [u8; 32] {
        let mut b = [0u8; 32];
        b[0..4].copy_from_slice(&((self.flags << CMD_BITS) | self.cmd as u32).to_le_bytes());
        b[8..16].copy_from_slice(&self.nr_pages.to_le_bytes());
        b[16..24].copy_from_slice(&self.vaddr.to_le_bytes());
        b[24..32].copy_from_slice(&self.dst_id.to_le_bytes());
        b
    }

    /// Decodes and checks: a known command, flags only on ADD_F, an aligned
    /// address, a range that does not wrap.
    pub fn decode(b: &[u8; 32]) -> Result<Iov> {
        let word = le32(b, 0);
        let code = word & ((1 << CMD_BITS) - 1);
        let cmd = Cmd::from_code(code).ok_or_else(|| PageServerError::Protocol(format!("unknown command {word:#x}")))?;
        let iov = Iov { cmd, flags: word >> CMD_BITS, nr_pages: le64(b, 8), vaddr: le64(b, 16), dst_id: le64(b, 24) };
        if iov.flags != 0 && cmd != Cmd::AddF {
            return Err(PageServerError::Protocol(format!("{cmd:?} with flags {:#x}", iov.flags)));
        }
        if !iov.vaddr.is_multiple_of(PAGE_SIZE) {
            return Err(PageServerError::Protocol(format!("unaligned address {:#x}", iov.vaddr)));
        }
        if iov.nr_pages.checked_mul(PAGE_SIZE).and_then(|l| l.checked_add(iov.vaddr)).is_none() {
            return Err(PageServerError::Protocol(format!("{} pages at {:#x} wrap around", iov.nr_pages, iov.vaddr)));
        }
        Ok(iov)
    }

    /// Bytes of pages this request covers.
    pub fn len(&self) -> u64 {
        self.nr_pages * PAGE_SIZE
    }

    /// Whether it covers no page.
    pub fn is_empty(&self) -> bool {
        self.nr_pages == 0
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

/// Reads the answer to `what`, which must come: the peer closing instead
/// is [`PageServerError::Closed`].
pub fn read_answer<const N: usize>(r: &mut impl Read, what: impl FnOnce() -> String) -> Result<[u8; N]> {
    match read_header(r) {
        Ok(Some(b)) => Ok(b),
        Ok(None) => Err(PageServerError::Closed { what: what() }),
        Err(PageServerError::Io(e)) if matches!(e.kind(), io::ErrorKind::ConnectionReset | io::ErrorKind::UnexpectedEof) => {
            Err(PageServerError::Closed { what: what() })
        }
        Err(e) => Err(e),
    }
}

/// Reads CLOSE's answer, the session's status (0: all was well).
pub fn close_status(r: &mut impl Read) -> Result<()> {
    let status = i32::from_le_bytes(read_answer(r, || "CLOSE".into())?);
    if status != 0 {
        return Err(PageServerError::Status(status));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iov_is_criu_s_layout_and_bounded() {
        let iov = Iov { cmd: Cmd::AddF, flags: 6, nr_pages: 3, vaddr: 0x7000_0000, dst_id: Target::Task(42).encode() };
        let b = iov.encode();
        // cmd = flags << 16 | 6, padding, nr_pages, vaddr, dst_id = 42 << 8 | 1.
        assert_eq!(&b[0..8], &[6, 0, 6, 0, 0, 0, 0, 0]);
        assert_eq!(&b[8..16], &3u64.to_le_bytes());
        assert_eq!(&b[24..32], &(42u64 << 8 | 1).to_le_bytes());
        assert_eq!(Iov::decode(&b).unwrap(), iov);
        assert_eq!(Iov::decode(&Iov::bare(Cmd::Close, 0).encode()).unwrap().cmd, Cmd::Close);
        assert_eq!(&Iov::bare(Cmd::ForceClose, 0).encode()[..4], &0x1024u32.to_le_bytes());
        // Flags only on ADD_F; unknown commands; unaligned or wrapping ranges.
        let mut bad = Iov { cmd: Cmd::Add, ..iov }.encode();
        assert!(matches!(Iov::decode(&bad), Err(PageServerError::Protocol(_))));
        bad = iov.encode();
        bad[0] = 8;
        assert!(matches!(Iov::decode(&bad), Err(PageServerError::Protocol(_))));
        assert!(Iov::decode(&Iov { vaddr: 0x7000_0010, ..iov }.encode()).is_err());
        assert!(Iov::decode(&Iov { nr_pages: u64::MAX / 4096, ..iov }.encode()).is_err());
    }

    #[test]
    fn image_ids_as_criu_numbers_them() {
        assert_eq!(Target::Task(7).encode(), 0x701);
        assert_eq!(Target::Shmem(0x1234).encode(), 0x12_3402);
        for t in [Target::Task(7), Target::Shmem(99)] {
            assert_eq!(Target::decode(t.encode()).unwrap(), t);
        }
        // Older CRIUs' type numbers.
        assert_eq!(Target::decode(7 << 8 | 11).unwrap(), Target::Task(7));
        assert_eq!(Target::decode(7 << 8 | 34).unwrap(), Target::Shmem(7));
        assert!(Target::decode(7 << 8 | 3).is_err());
        assert!(Target::decode(1 << 60 | 1).is_err());
    }
}
