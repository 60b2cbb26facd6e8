//! The `UFFDIO_*` ioctls on an owned userfaultfd descriptor.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use linux_raw_sys::general as g;
use rustix::io::Errno;
use rustix::ioctl::{ioctl, opcode, Opcode, Updater};

use super::msg::{Event, MSG_SIZE};

const UFFDIO: u8 = g::UFFDIO as u8;
const API: Opcode = opcode::read_write::<g::uffdio_api>(UFFDIO, g::_UFFDIO_API as u8);
const REGISTER: Opcode =
    opcode::read_write::<g::uffdio_register>(UFFDIO, g::_UFFDIO_REGISTER as u8);
const UNREGISTER: Opcode = opcode::read::<g::uffdio_range>(UFFDIO, g::_UFFDIO_UNREGISTER as u8);
const WAKE: Opcode = opcode::read::<g::uffdio_range>(UFFDIO, g::_UFFDIO_WAKE as u8);
const COPY: Opcode = opcode::read_write::<g::uffdio_copy>(UFFDIO, g::_UFFDIO_COPY as u8);
const ZEROPAGE: Opcode =
    opcode::read_write::<g::uffdio_zeropage>(UFFDIO, g::_UFFDIO_ZEROPAGE as u8);
const WRITEPROTECT: Opcode =
    opcode::read_write::<g::uffdio_writeprotect>(UFFDIO, g::_UFFDIO_WRITEPROTECT as u8);
const MOVE: Opcode = opcode::read_write::<g::uffdio_move>(UFFDIO, g::_UFFDIO_MOVE as u8);

/// A userfaultfd descriptor.
#[derive(Debug)]
pub struct Uffd {
    fd: OwnedFd,
}

/// Result of a fill call ([`Uffd::copy`], [`Uffd::zeropage`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Copied {
    /// The whole range was filled.
    All,
    /// Only this many bytes were filled before the call stopped (`EAGAIN`:
    /// the target's layout is changing; read the pending events, then retry).
    Partial(u64),
    /// Nothing was filled; the first page was already present (`EEXIST`).
    Exists,
}

impl Uffd {
    /// `userfaultfd(O_CLOEXEC | O_NONBLOCK)`: a new descriptor for the calling
    /// process's memory (needs CAP_SYS_PTRACE when
    /// `vm.unprivileged_userfaultfd` is 0).
    pub fn create() -> Result<Uffd, Errno> {
        use rustix::mm::UserfaultfdFlags as F;
        // SAFETY: creating the descriptor has no effect on memory by itself;
        // ranges are only affected once registered through it.
        let fd = unsafe { rustix::mm::userfaultfd(F::CLOEXEC | F::NONBLOCK)? };
        Ok(Uffd { fd })
    }

    /// Wraps a descriptor received from elsewhere (SCM_RIGHTS, fork event).
    pub fn from_fd(fd: OwnedFd) -> Uffd {
        Uffd { fd }
    }

    /// The descriptor.
    pub fn into_fd(self) -> OwnedFd {
        self.fd
    }

    /// `ioctl(fd, UFFDIO_API, {UFFD_API, features})`: the handshake, once per
    /// descriptor. Returns (features granted, ioctls available bitmask).
    pub fn api(&self, features: u64) -> Result<(u64, u64), Errno> {
        let mut a = g::uffdio_api { api: g::UFFD_API as u64, features, ioctls: 0 };
        // SAFETY: UFFDIO_API takes a `struct uffdio_api`, read and written back.
        unsafe { ioctl(&self.fd, Updater::<API, _>::new(&mut a))? };
        Ok((a.features, a.ioctls))
    }

    /// The features the `UFFDIO_API` handshake granted, read from
    /// `/proc/self/fdinfo/FD` (`API: aa:FEATURES:IOCTLS`); 0 before the
    /// handshake. Tells what a descriptor received from elsewhere can do.
    pub fn features(&self) -> std::io::Result<u64> {
        use std::os::fd::AsRawFd;
        let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", self.fd.as_raw_fd()))?;
        let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, "no userfaultfd API line in fdinfo");
        let api = info.lines().find_map(|l| l.strip_prefix("API:")).ok_or_else(bad)?;
        let features = api.trim().split(':').nth(1).ok_or_else(bad)?;
        u64::from_str_radix(features, 16).map_err(|_| bad())
    }

    /// `ioctl(fd, UFFDIO_REGISTER, {start, len, mode})`: start handling faults
    /// of `mode` ([`super::mode`]) in the creator's `[start, start+len)`.
    /// Returns the ioctls usable on the range.
    pub fn register(&self, start: u64, len: u64, mode: u64) -> Result<u64, Errno> {
        let mut r = g::uffdio_register {
            range: g::uffdio_range { start, len },
            mode,
            ioctls: 0,
        };
        // SAFETY: UFFDIO_REGISTER takes a `struct uffdio_register`.
        unsafe { ioctl(&self.fd, Updater::<REGISTER, _>::new(&mut r))? };
        Ok(r.ioctls)
    }

    /// `ioctl(fd, UFFDIO_UNREGISTER, {start, len})`.
    pub fn unregister(&self, start: u64, len: u64) -> Result<(), Errno> {
        let mut r = g::uffdio_range { start, len };
        // SAFETY: UFFDIO_UNREGISTER takes a `struct uffdio_range` (read only).
        unsafe { ioctl(&self.fd, Updater::<UNREGISTER, _>::new(&mut r)) }
    }

    /// `ioctl(fd, UFFDIO_WAKE, {start, len})`: wake threads waiting on faults
    /// in the range.
    pub fn wake(&self, start: u64, len: u64) -> Result<(), Errno> {
        let mut r = g::uffdio_range { start, len };
        // SAFETY: UFFDIO_WAKE takes a `struct uffdio_range` (read only).
        unsafe { ioctl(&self.fd, Updater::<WAKE, _>::new(&mut r)) }
    }

    /// `ioctl(fd, UFFDIO_COPY, {dst, src, len, mode})`: fill the target's
    /// missing pages at `dst` with `src` (whole pages) and wake the waiters
    /// (unless `mode` has [`super::mode::DONTWAKE`]).
    pub fn copy(&self, dst: u64, src: &[u8], mode: u64) -> Result<Copied, Errno> {
        let len = src.len() as u64;
        let mut c = g::uffdio_copy {
            dst,
            src: src.as_ptr() as u64,
            len,
            mode,
            copy: 0,
        };
        // SAFETY: UFFDIO_COPY takes a `struct uffdio_copy`; the kernel reads
        // `len` bytes at `src`, which is the live slice borrowed here, and
        // writes only into the registered target memory.
        let r = unsafe { ioctl(&self.fd, Updater::<COPY, _>::new(&mut c)) };
        fill_result(r, c.copy, len)
    }

    /// `ioctl(fd, UFFDIO_ZEROPAGE, {start, len, mode})`: map zero pages at
    /// the target's missing pages in the range and wake the waiters.
    pub fn zeropage(&self, start: u64, len: u64, mode: u64) -> Result<Copied, Errno> {
        let mut z = g::uffdio_zeropage {
            range: g::uffdio_range { start, len },
            mode,
            zeropage: 0,
        };
        // SAFETY: UFFDIO_ZEROPAGE takes a `struct uffdio_zeropage`.
        let r = unsafe { ioctl(&self.fd, Updater::<ZEROPAGE, _>::new(&mut z)) };
        fill_result(r, z.zeropage, len)
    }

    /// `ioctl(fd, UFFDIO_WRITEPROTECT, {start, len, mode})`: set (`mode` with
    /// [`super::mode::WRITEPROTECT`]) or clear write protection.
    pub fn writeprotect(&self, start: u64, len: u64, mode: u64) -> Result<(), Errno> {
        let mut w = g::uffdio_writeprotect {
            range: g::uffdio_range { start, len },
            mode,
        };
        // SAFETY: UFFDIO_WRITEPROTECT takes a `struct uffdio_writeprotect`.
        unsafe { ioctl(&self.fd, Updater::<WRITEPROTECT, _>::new(&mut w)) }
    }

    /// `ioctl(fd, UFFDIO_MOVE, {dst, src, len, mode})`: move pages inside the
    /// registered process from `src` to `dst`. Returns the bytes moved.
    pub fn move_pages(&self, dst: u64, src: u64, len: u64, mode: u64) -> Result<u64, Errno> {
        let mut m = g::uffdio_move { dst, src, len, mode, move_: 0 };
        // SAFETY: UFFDIO_MOVE takes a `struct uffdio_move`; both addresses are
        // in the registered process, not ours.
        match unsafe { ioctl(&self.fd, Updater::<MOVE, _>::new(&mut m)) } {
            Ok(()) => Ok(len),
            Err(Errno::AGAIN) if m.move_ > 0 => Ok(m.move_ as u64),
            Err(e) => Err(e),
        }
    }

    /// `read(fd, buf, n * 32)`: the pending messages, decoded into `out`
    /// (cleared first). Returns `Ok(0)` when none is pending.
    pub fn read_events(&self, out: &mut Vec<Event>) -> Result<usize, Errno> {
        out.clear();
        let mut buf = [0u8; MSG_SIZE * 64];
        let n = match rustix::io::read(&self.fd, &mut buf) {
            Ok(n) => n,
            Err(Errno::AGAIN) => return Ok(0),
            Err(e) => return Err(e),
        };
        for chunk in buf[..n].chunks_exact(MSG_SIZE) {
            let mut m = [0u8; MSG_SIZE];
            m.copy_from_slice(chunk);
            out.push(Event::decode(&m)?);
        }
        Ok(out.len())
    }
}

impl AsFd for Uffd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// Maps a fill ioctl's outcome: `EAGAIN` with progress is partial, `EEXIST`
/// means the page was already there.
fn fill_result(r: Result<(), Errno>, done: i64, _len: u64) -> Result<Copied, Errno> {
    match r {
        Ok(()) => Ok(Copied::All),
        Err(Errno::AGAIN) => Ok(Copied::Partial(done.max(0) as u64)),
        // The kernel reports EEXIST only when nothing was filled; progress
        // followed by an error comes back as EAGAIN.
        Err(Errno::EXIST) => Ok(Copied::Exists),
        Err(e) => Err(e),
    }
}
