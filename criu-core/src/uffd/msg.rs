//! Messages read from a userfaultfd: `struct uffd_msg`, 32 bytes, packed:
//!
//! ```text
//!  0      1        8                 16                24        32
//!  +------+--------+-----------------+-----------------+---------+
//!  |event | resvd  | arg (24 bytes, by event):                   |
//!  +------+--------+-----------------+-----------------+---------+
//!  PAGEFAULT 0x12     flags u64         address u64       ptid u32 (THREAD_ID)
//!  FORK      0x13     ufd u32 (new descriptor, installed in the reader)
//!  REMAP     0x14     from u64          to u64            len u64
//!  REMOVE    0x15     start u64         end u64
//!  UNMAP     0x16     start u64         end u64
//! ```
//!
//! Reading a FORK message installs the child's descriptor in the reader's
//! file table; [`Event::decode`] takes ownership of it.

use std::os::fd::{FromRawFd, OwnedFd};

use linux_raw_sys::general as g;
use rustix::io::Errno;

/// Size of one `struct uffd_msg`.
pub const MSG_SIZE: usize = 32;

/// One decoded message.
#[derive(Debug)]
pub enum Event {
    /// A thread touched a missing (or write-protected) page and waits.
    PageFault {
        /// Faulting address (page-aligned unless EXACT_ADDRESS was asked for).
        addr: u64,
        /// `UFFD_PAGEFAULT_FLAG_*` (write, wp, minor).
        flags: u64,
        /// Faulting thread id (with `UFFD_FEATURE_THREAD_ID`, else 0).
        tid: u32,
    },
    /// The process forked; the child's registered memory is served on `uffd`.
    Fork {
        /// The child's userfaultfd.
        uffd: OwnedFd,
    },
    /// `mremap` moved `len` bytes of registered memory from `from` to `to`.
    Remap {
        /// Old start.
        from: u64,
        /// New start.
        to: u64,
        /// Length moved.
        len: u64,
    },
    /// `madvise(DONTNEED/REMOVE)` dropped `[start, end)`: it reads as missing again.
    Remove {
        /// Start.
        start: u64,
        /// End (exclusive).
        end: u64,
    },
    /// `munmap` removed `[start, end)`.
    Unmap {
        /// Start.
        start: u64,
        /// End (exclusive).
        end: u64,
    },
}

fn u64_at(m: &[u8; MSG_SIZE], off: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&m[off..off + 8]);
    u64::from_le_bytes(b)
}

fn u32_at(m: &[u8; MSG_SIZE], off: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&m[off..off + 4]);
    u32::from_le_bytes(b)
}

impl Event {
    /// Decodes one message; an unknown event is `EINVAL`.
    pub fn decode(m: &[u8; MSG_SIZE]) -> Result<Event, Errno> {
        Ok(match u32::from(m[0]) {
            g::UFFD_EVENT_PAGEFAULT => Event::PageFault {
                flags: u64_at(m, 8),
                addr: u64_at(m, 16),
                tid: u32_at(m, 24),
            },
            g::UFFD_EVENT_FORK => {
                let fd = u32_at(m, 8) as i32;
                if fd < 0 {
                    return Err(Errno::BADF);
                }
                // SAFETY: the kernel installed this descriptor in our table
                // while we read the message; nothing else owns it.
                Event::Fork { uffd: unsafe { OwnedFd::from_raw_fd(fd) } }
            }
            g::UFFD_EVENT_REMAP => Event::Remap {
                from: u64_at(m, 8),
                to: u64_at(m, 16),
                len: u64_at(m, 24),
            },
            g::UFFD_EVENT_REMOVE => Event::Remove { start: u64_at(m, 8), end: u64_at(m, 16) },
            g::UFFD_EVENT_UNMAP => Event::Unmap { start: u64_at(m, 8), end: u64_at(m, 16) },
            _ => return Err(Errno::INVAL),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_layouts() {
        let mut m = [0u8; MSG_SIZE];
        m[0] = g::UFFD_EVENT_PAGEFAULT as u8;
        m[8..16].copy_from_slice(&1u64.to_le_bytes());
        m[16..24].copy_from_slice(&0x7000_1000u64.to_le_bytes());
        m[24..28].copy_from_slice(&77u32.to_le_bytes());
        match Event::decode(&m).unwrap() {
            Event::PageFault { addr, flags, tid } => assert_eq!((addr, flags, tid), (0x7000_1000, 1, 77)),
            e => panic!("{e:?}"),
        }
        m[0] = g::UFFD_EVENT_REMAP as u8;
        match Event::decode(&m).unwrap() {
            Event::Remap { from, to, len } => assert_eq!((from, to, len), (1, 0x7000_1000, 77)),
            e => panic!("{e:?}"),
        }
        m[0] = 0x55;
        assert_eq!(Event::decode(&m).unwrap_err(), Errno::INVAL);
    }
}
