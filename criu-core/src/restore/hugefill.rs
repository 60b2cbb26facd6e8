//! Fast filling of large private anonymous ranges: read the pages into a
//! scratch area backed by transparent huge pages, then move them into the
//! premapped VMA with `UFFDIO_MOVE` (no copy; 2 MiB page-table entries move
//! as a whole).
//!
//! Allocating and zeroing 4 KiB pages one at a time costs more than
//! reading the data itself; huge pages make the allocation ~4x cheaper.
//! The scratch area carries `MADV_HUGEPAGE`, the restored VMA does not: its
//! flags stay exactly as dumped. Anything unsupported (no userfaultfd, no
//! `UFFD_FEATURE_MOVE`), or huge pages arriving slowly because the kernel
//! has to compact memory for them, makes the caller fall back to plain
//! `preadv` into 4 KiB pages.

use super::error::{Result, SysContext};
use rustix::fd::{AsRawFd, FromRawFd, OwnedFd};
use rustix::mm::{MapFlags, ProtFlags};
use std::ffi::c_void;

/// Huge page size on x86_64.
pub const HUGE: u64 = 2 << 20;
/// Bytes moved per round (the scratch area's size).
const CHUNK: u64 = 64 << 20;
/// Below this rate (bytes per second) a round was slowed down by the
/// kernel compacting memory for huge pages (plain 4 KiB pages fill at
/// about 2 GB/s); after [`SLOW_ROUNDS`] such rounds in a row the caller
/// takes over with plain pages.
const SLOW_RATE: f64 = 1.2e9;
const SLOW_ROUNDS: u32 = 2;

const UFFD_API: u64 = 0xaa;
const UFFD_USER_MODE_ONLY: i32 = 1;
const UFFD_FEATURE_MOVE: u64 = 1 << 16;
const UFFDIO_REGISTER_MODE_MISSING: u64 = 1;

/// `_IOC(dir, 0xaa, nr, size)` for userfaultfd ioctls.
const fn uffd_ioc(dir: u64, nr: u64, size: usize) -> u64 {
    (dir << 30) | ((size as u64) << 16) | (0xaa << 8) | nr
}

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
struct UffdioMove {
    dst: u64,
    src: u64,
    len: u64,
    mode: u64,
    moved: i64,
}

const UFFDIO_API: u64 = uffd_ioc(3, 0x3f, std::mem::size_of::<UffdioApi>());
const UFFDIO_REGISTER: u64 = uffd_ioc(3, 0x00, std::mem::size_of::<UffdioRegister>());
const UFFDIO_UNREGISTER: u64 = uffd_ioc(2, 0x01, std::mem::size_of::<UffdioRange>());
const UFFDIO_MOVE: u64 = uffd_ioc(3, 0x05, std::mem::size_of::<UffdioMove>());

/// `ioctl(fd, req, arg)` on a userfaultfd.
fn uffd_ioctl<T>(fd: &OwnedFd, req: u64, arg: &mut T) -> std::result::Result<(), rustix::io::Errno> {
    // SAFETY: `arg` is the #[repr(C)] struct the request `req` expects.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), req as _, arg as *mut T) };
    if r < 0 {
        return Err(rustix::io::Errno::from_io_error(&std::io::Error::last_os_error()).unwrap_or(rustix::io::Errno::INVAL));
    }
    Ok(())
}

/// A userfaultfd with `UFFD_FEATURE_MOVE` and a huge-page scratch area.
pub struct HugeFiller {
    uffd: OwnedFd,
    /// The scratch mapping (with its alignment slack) and its aligned start.
    map: (u64, u64),
    scratch: u64,
    /// Consecutive slow rounds; at [`SLOW_ROUNDS`] huge pages are given up.
    slow_rounds: u32,
}

impl HugeFiller {
    /// `userfaultfd(O_CLOEXEC | UFFD_USER_MODE_ONLY)` + `UFFDIO_API(MOVE)`,
    /// and a 2 MiB-aligned `MADV_HUGEPAGE` scratch area; `None` if the
    /// kernel offers no part of it.
    pub fn new() -> Option<HugeFiller> {
        // SAFETY: plain syscall returning a new fd (or -1).
        let fd = unsafe { libc::syscall(libc::SYS_userfaultfd, libc::O_CLOEXEC | UFFD_USER_MODE_ONLY) };
        if fd < 0 {
            return None;
        }
        // SAFETY: the kernel just returned this fd to us.
        let uffd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        let mut api = UffdioApi { api: UFFD_API, features: UFFD_FEATURE_MOVE, ioctls: 0 };
        uffd_ioctl(&uffd, UFFDIO_API, &mut api).ok()?;
        let len = CHUNK + HUGE;
        // SAFETY: a fresh mapping wherever the kernel likes.
        let raw = unsafe {
            rustix::mm::mmap_anonymous(std::ptr::null_mut(), len as usize, ProtFlags::READ | ProtFlags::WRITE, MapFlags::PRIVATE)
        }
        .ok()? as u64;
        let scratch = raw.next_multiple_of(HUGE);
        let filler = HugeFiller { uffd, map: (raw, len), scratch, slow_rounds: 0 };
        // SAFETY: the scratch area is ours; the advice only sets VMA flags.
        unsafe { rustix::mm::madvise(scratch as *mut c_void, CHUNK as usize, rustix::mm::Advice::LinuxHugepage) }.ok()?;
        Some(filler)
    }

    /// Fills `[dst, dst + len)` (2 MiB aligned, unpopulated, private
    /// anonymous) from `fd` at `file_off`. Returns how many bytes from the
    /// start were filled; the caller reads the rest the plain way.
    pub fn fill(&mut self, fd: &OwnedFd, dst: u64, len: u64, file_off: u64) -> Result<u64> {
        if self.slow_rounds >= SLOW_ROUNDS {
            return Ok(0);
        }
        let mut reg = UffdioRegister { range: UffdioRange { start: dst, len }, mode: UFFDIO_REGISTER_MODE_MISSING, ioctls: 0 };
        if uffd_ioctl(&self.uffd, UFFDIO_REGISTER, &mut reg).is_err() {
            return Ok(0);
        }
        let mut done = 0u64;
        let result = (|| -> Result<()> {
            while done < len {
                let n = (len - done).min(CHUNK);
                let started = std::time::Instant::now();
                // SAFETY: the scratch area is ours and writable.
                let _ = unsafe {
                    rustix::mm::madvise(self.scratch as *mut c_void, n as usize, rustix::mm::Advice::LinuxPopulateWrite)
                };
                // SAFETY: the scratch area is ours, writable, n <= CHUNK bytes.
                let buf = unsafe { std::slice::from_raw_parts_mut(self.scratch as *mut u8, n as usize) };
                let mut got = 0usize;
                while got < buf.len() {
                    let r = rustix::io::pread(fd, &mut buf[got..], file_off + done + got as u64)
                        .sys(|| format!("pread of the pages file at {:#x}", file_off + done + got as u64))?;
                    if r == 0 {
                        return Ok(());
                    }
                    got += r;
                }
                let mut mv = UffdioMove { dst: dst + done, src: self.scratch, len: n, mode: 0, moved: 0 };
                if uffd_ioctl(&self.uffd, UFFDIO_MOVE, &mut mv).is_err() || mv.moved != n as i64 {
                    // Whatever moved stays; a partial move is not resumable
                    // here, so report only whole rounds.
                    if mv.moved > 0 {
                        let whole = mv.moved as u64 & !(rustix::param::page_size() as u64 - 1);
                        done += whole;
                        crate::progress::advance(whole / rustix::param::page_size() as u64);
                    }
                    return Ok(());
                }
                done += n;
                crate::progress::advance(n / rustix::param::page_size() as u64);
                if n == CHUNK && (n as f64) < SLOW_RATE * started.elapsed().as_secs_f64() {
                    self.slow_rounds += 1;
                    if self.slow_rounds >= SLOW_ROUNDS {
                        return Ok(());
                    }
                } else {
                    self.slow_rounds = 0;
                }
            }
            Ok(())
        })();
        let mut range = UffdioRange { start: dst, len };
        let _ = uffd_ioctl(&self.uffd, UFFDIO_UNREGISTER, &mut range);
        result.map(|()| done)
    }
}

impl Drop for HugeFiller {
    fn drop(&mut self) {
        // SAFETY: the scratch mapping is ours and nothing refers to it.
        let _ = unsafe { rustix::mm::munmap(self.map.0 as *mut c_void, self.map.1 as usize) };
    }
}
