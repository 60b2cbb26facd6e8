//! The hand-over of a task's userfaultfd to the daemon, over its unix socket
//! (`SOCK_STREAM`):
//!
//! ```text
//!  task -> daemon, 16 bytes + SCM_RIGHTS [uffd]
//!  +------------------+-------------+---------------+-----------------+
//!  | magic 0x4750_5a4c| version (1) | image pid u32 | live pid u32    |
//!  | "LZPG"           |             | (pagemap-PID) | 0: = image pid  |
//!  +------------------+-------------+---------------+-----------------+
//!  daemon -> task, 8 bytes
//!  +------------------+-------------+
//!  | magic            | status i32  |   0: the daemon holds the uffd now;
//!  +------------------+-------------+   else an errno (nothing was taken)
//! ```
//!
//! The uffd must have had `UFFDIO_API` with [`LAZY_FEATURES`] before it is
//! sent (the daemon never calls it). The lazy ranges may be registered
//! (MISSING) before or after the hand-over; the daemon copies nothing in the
//! background until all are. The sender may close its copy only after
//! status 0.
//!
//! [`LAZY_FEATURES`]: crate::uffd::LAZY_FEATURES

use std::io::{Read, Write};
use std::mem::MaybeUninit;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;

use rustix::io::Errno;
use rustix::net::{
    recvmsg, sendmsg, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};

use super::LazyError;

/// `"LZPG"` as a little-endian u32.
pub const MAGIC: u32 = 0x4750_5a4c;
/// Version of the hand-over.
pub const VERSION: u32 = 1;

/// What a task announces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskHello {
    /// Pid whose `pagemap-PID.img` describes the memory.
    pub image_pid: u32,
    /// Pid of the live task (to watch and, on failure, kill it).
    pub pid: u32,
}

/// Sends `uffd` for the task to the daemon listening at `socket` and waits
/// for it to take over. After `Ok`, close your copy of the descriptor.
pub fn hand_over(socket: &Path, hello: TaskHello, uffd: BorrowedFd<'_>) -> Result<(), LazyError> {
    let io = |source| LazyError::Socket { path: socket.into(), source };
    let mut s = UnixStream::connect(socket).map_err(io)?;
    let mut b = [0u8; 16];
    b[0..4].copy_from_slice(&MAGIC.to_le_bytes());
    b[4..8].copy_from_slice(&VERSION.to_le_bytes());
    b[8..12].copy_from_slice(&hello.image_pid.to_le_bytes());
    b[12..16].copy_from_slice(&hello.pid.to_le_bytes());
    let fds = [uffd];
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut anc = SendAncillaryBuffer::new(&mut space);
    anc.push(SendAncillaryMessage::ScmRights(&fds));
    let n = sendmsg(&s, &[std::io::IoSlice::new(&b)], &mut anc, SendFlags::NOSIGNAL)
        .map_err(|e| io(e.into()))?;
    if n != b.len() {
        return Err(LazyError::Hello(format!("short send ({n} bytes)")));
    }
    let mut ack = [0u8; 8];
    s.read_exact(&mut ack).map_err(io)?;
    if le32(&ack, 0) != MAGIC {
        return Err(LazyError::Hello("bad reply magic".into()));
    }
    match le32(&ack, 4) as i32 {
        0 => Ok(()),
        e => Err(LazyError::Refused { pid: hello.image_pid, errno: Errno::from_raw_os_error(e) }),
    }
}

/// Daemon side: reads a task's hello and its descriptor; `None` while
/// nothing has arrived on the (non-blocking) connection.
pub(crate) fn receive(s: &UnixStream) -> Result<Option<(TaskHello, OwnedFd)>, LazyError> {
    let mut b = [0u8; 16];
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(2))];
    let mut anc = RecvAncillaryBuffer::new(&mut space);
    let r = match recvmsg(s, &mut [std::io::IoSliceMut::new(&mut b)], &mut anc, RecvFlags::CMSG_CLOEXEC) {
        Ok(r) => r,
        Err(Errno::AGAIN) => return Ok(None),
        Err(e) => return Err(LazyError::Hello(format!("recvmsg: {e}"))),
    };
    let mut fds: Vec<OwnedFd> = Vec::new();
    for m in anc.drain() {
        if let RecvAncillaryMessage::ScmRights(it) = m {
            fds.extend(it);
        }
    }
    if r.bytes != b.len() {
        return Err(LazyError::Hello(format!("{} bytes, expected 16", r.bytes)));
    }
    if le32(&b, 0) != MAGIC {
        return Err(LazyError::Hello(format!("bad magic {:#x}", le32(&b, 0))));
    }
    if le32(&b, 4) != VERSION {
        return Err(LazyError::Hello(format!("version {}, expected {VERSION}", le32(&b, 4))));
    }
    if fds.len() != 1 {
        return Err(LazyError::Hello(format!("{} descriptors, expected 1", fds.len())));
    }
    let image_pid = le32(&b, 8);
    let pid = match le32(&b, 12) {
        0 => image_pid,
        p => p,
    };
    Ok(Some((TaskHello { image_pid, pid }, fds.remove(0))))
}

/// Daemon side: answers the hello (0 = taken over, else an errno).
pub(crate) fn ack(mut s: &UnixStream, status: i32) -> std::io::Result<()> {
    let mut b = [0u8; 8];
    b[0..4].copy_from_slice(&MAGIC.to_le_bytes());
    b[4..8].copy_from_slice(&status.to_le_bytes());
    s.write_all(&b)
}

fn le32(b: &[u8], off: usize) -> u32 {
    let mut x = [0u8; 4];
    x.copy_from_slice(&b[off..off + 4]);
    u32::from_le_bytes(x)
}
