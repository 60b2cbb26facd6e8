//! Filling large private anonymous ranges through userfaultfd: the pages
//! are read into a scratch area, then either moved into the premapped VMA
//! with `UFFDIO_MOVE` when the scratch area is backed by transparent huge
//! pages (no copy; 2 MiB page-table entries move as a whole, and the
//! blob's `mremap` keeps them whole because the premap keeps each large
//! VMA's address modulo 2 MiB), or copied with `UFFDIO_COPY` from a reused
//! 4 KiB-page bounce area (fresh pages, not zeroed first).
//!
//! Allocating and zeroing 4 KiB pages one at a time costs more than
//! reading the data itself; huge pages make the allocation several times
//! cheaper. The scratch area carries `MADV_HUGEPAGE`, the restored VMA does
//! not: its flags stay exactly as dumped.
//!
//! Everything here but [`Uffd::open`] and [`thp_available`] may run on the
//! helper thread of [`super::helper_thread`]: raw syscalls through rustix
//! only.

use super::plan::PAGE_SIZE;
use rustix::fd::{FromRawFd, OwnedFd};
use rustix::io::Errno;
use rustix::ioctl::{opcode, Opcode, Updater};
use rustix::mm::{MapFlags, ProtFlags};
use std::ffi::c_void;

/// Huge page size on x86_64.
pub const HUGE: u64 = 2 << 20;
/// Bytes filled per round (the huge-page scratch area's size).
pub const STEP: u64 = 8 << 20;
/// Bytes of the bounce area: read, then copied while still in the cache.
pub const BOUNCE: u64 = 1 << 20;

const UFFD_API: u64 = 0xaa;
const UFFD_USER_MODE_ONLY: i32 = 1;
const UFFD_FEATURE_MOVE: u64 = 1 << 16;
const UFFDIO_REGISTER_MODE_MISSING: u64 = 1;

#[repr(C)]
struct UffdioApi {
    api: u64,
    features: u64,
    ioctls: u64,
}

#[repr(C)]
struct UffdioRange {
    start: u64,
    len: u64,
}

#[repr(C)]
struct UffdioRegister {
    range: UffdioRange,
    mode: u64,
    ioctls: u64,
}

#[repr(C)]
struct UffdioCopy {
    dst: u64,
    src: u64,
    len: u64,
    mode: u64,
    copy: i64,
}

#[repr(C)]
struct UffdioMove {
    dst: u64,
    src: u64,
    len: u64,
    mode: u64,
    moved: i64,
}

const UFFDIO_API: Opcode = opcode::read_write::<UffdioApi>(0xaa, 0x3f);
const UFFDIO_REGISTER: Opcode = opcode::read_write::<UffdioRegister>(0xaa, 0x00);
const UFFDIO_UNREGISTER: Opcode = opcode::read::<UffdioRange>(0xaa, 0x01);
const UFFDIO_COPY: Opcode = opcode::read_write::<UffdioCopy>(0xaa, 0x03);
const UFFDIO_MOVE: Opcode = opcode::read_write::<UffdioMove>(0xaa, 0x05);

/// `ioctl(fd, OP, arg)` on a userfaultfd (rustix: no `errno`).
fn uffd_ioctl<const OP: Opcode, T>(fd: &OwnedFd, arg: &mut T) -> rustix::io::Result<()> {
    // SAFETY: every OP used here takes a pointer to the #[repr(C)] T
    // declared for it above.
    unsafe { rustix::ioctl::ioctl(fd, Updater::<OP, T>::new(arg)) }
}

/// Whether transparent huge pages may be used at all (the system setting
/// is not `never`).
pub fn thp_available() -> bool {
    std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled").is_ok_and(|s| !s.contains("[never]"))
}

/// A userfaultfd with `UFFD_FEATURE_MOVE`.
pub struct Uffd(OwnedFd);

impl Uffd {
    /// `userfaultfd(O_CLOEXEC | UFFD_USER_MODE_ONLY)` + `UFFDIO_API(MOVE)`;
    /// `None` if the kernel offers either not.
    pub fn open() -> Option<Uffd> {
        // SAFETY: plain syscall returning a new fd (or -1).
        let fd = unsafe { libc::syscall(libc::SYS_userfaultfd, libc::O_CLOEXEC | UFFD_USER_MODE_ONLY) };
        if fd < 0 {
            return None;
        }
        // SAFETY: the kernel just returned this fd to us.
        let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        let mut api = UffdioApi { api: UFFD_API, features: UFFD_FEATURE_MOVE, ioctls: 0 };
        uffd_ioctl::<UFFDIO_API, _>(&fd, &mut api).ok()?;
        Some(Uffd(fd))
    }

    /// `UFFDIO_REGISTER(start, len, MISSING)`: makes the range a target of
    /// [`Uffd::move_pages`]. Missing pages of the range can no longer be
    /// faulted in from the kernel (`MADV_POPULATE_WRITE`, `preadv` into
    /// it): unregister a part before filling it otherwise. (Write-protect
    /// mode would not need that, but unregistering it walks every page
    /// table entry.) False if the kernel refuses.
    pub fn register(&self, start: u64, len: u64) -> bool {
        let mut reg = UffdioRegister { range: UffdioRange { start, len }, mode: UFFDIO_REGISTER_MODE_MISSING, ioctls: 0 };
        uffd_ioctl::<UFFDIO_REGISTER, _>(&self.0, &mut reg).is_ok()
    }

    /// `UFFDIO_UNREGISTER(start, len)`: the VMA gets its flags back (parts
    /// of the range not registered are skipped).
    pub fn unregister(&self, start: u64, len: u64) {
        let mut range = UffdioRange { start, len };
        let _ = uffd_ioctl::<UFFDIO_UNREGISTER, _>(&self.0, &mut range);
    }

    /// `UFFDIO_MOVE(dst, src, len)`: returns how many bytes from the start
    /// were moved (all of `len` on success).
    pub fn move_pages(&self, dst: u64, src: u64, len: u64) -> u64 {
        let mut mv = UffdioMove { dst, src, len, mode: 0, moved: 0 };
        match uffd_ioctl::<UFFDIO_MOVE, _>(&self.0, &mut mv) {
            Ok(()) => len,
            Err(_) if mv.moved > 0 => (mv.moved as u64).min(len) / PAGE_SIZE * PAGE_SIZE,
            Err(_) => 0,
        }
    }

    /// `UFFDIO_COPY(dst, src, len)` until all is copied: `Ok`, or the
    /// error and how many bytes from the start were copied. A page already
    /// there (filled by an earlier attempt) is skipped. (A partial copy
    /// fails with `EAGAIN` and its byte count in `copy`; a failure on the
    /// first page puts `-errno` there.)
    pub fn copy_pages(&self, dst: u64, src: u64, len: u64) -> Result<(), (Errno, u64)> {
        let mut done = 0u64;
        while done < len {
            let mut cp = UffdioCopy { dst: dst + done, src: src + done, len: len - done, mode: 0, copy: 0 };
            match uffd_ioctl::<UFFDIO_COPY, _>(&self.0, &mut cp) {
                Ok(()) => return Ok(()),
                Err(e) => {
                    done += if cp.copy > 0 { (cp.copy as u64).min(len - done) / PAGE_SIZE * PAGE_SIZE } else { 0 };
                    match e {
                        Errno::AGAIN => {}
                        Errno::EXIST if cp.copy <= 0 => done += PAGE_SIZE,
                        Errno::EXIST => {}
                        e => return Err((e, done)),
                    }
                }
            }
        }
        Ok(())
    }
}

/// A 2 MiB aligned scratch area: [`STEP`] bytes with `MADV_HUGEPAGE` (to
/// move huge pages from), or [`BOUNCE`] bytes populated once with plain
/// pages (a bounce area to copy from).
pub struct Scratch {
    /// The mapping (with its alignment slack).
    map: (u64, u64),
    pub addr: u64,
}

impl Scratch {
    /// `mmap` + `madvise(MADV_HUGEPAGE)`, or `mmap` +
    /// `madvise(MADV_POPULATE_WRITE)`; `None` on failure.
    pub fn new(huge: bool) -> Option<Scratch> {
        let size = if huge { STEP } else { BOUNCE };
        let len = size + HUGE;
        // SAFETY: a fresh mapping wherever the kernel likes.
        let raw = unsafe {
            rustix::mm::mmap_anonymous(std::ptr::null_mut(), len as usize, ProtFlags::READ | ProtFlags::WRITE, MapFlags::PRIVATE)
        }
        .ok()? as u64;
        let s = Scratch { map: (raw, len), addr: raw.next_multiple_of(HUGE) };
        let advice = if huge { rustix::mm::Advice::LinuxHugepage } else { rustix::mm::Advice::LinuxPopulateWrite };
        // SAFETY: the scratch area is ours; the advice only sets VMA flags
        // or allocates its pages.
        unsafe { rustix::mm::madvise(s.addr as *mut c_void, size as usize, advice) }.ok()?;
        Some(s)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        // SAFETY: the scratch mapping is ours and nothing refers to it.
        let _ = unsafe { rustix::mm::munmap(self.map.0 as *mut c_void, self.map.1 as usize) };
    }
}
