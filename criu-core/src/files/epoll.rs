//! epoll sets (`FD_TYPES__EVENTPOLL`: an `eventpoll_file_entry` in
//! `files.img` with every target as an `eventpoll_tfd_entry`, as CRIU
//! writes them).
//!
//! Dump: the `tfd:` lines of the set's fdinfo. A target is known by the fd
//! number it was registered with, which may since have been closed or now
//! name another file. `kcmp(KCMP_EPOLL_TFD)` tells whether the task's fd
//! with that number is the target; if it is not, another fd of the task
//! referring to the same file (same device and inode, then `kcmp`) stands
//! for it, as in CRIU. A target no fd of the task refers to is refused: it
//! could not be added back. The recorded numbers are those of the task that
//! holds the set first.
//!
//! Restore: the set is created with the other descriptions; the targets are
//! added by that first task once its whole fd table is in place
//! ([`FdKind::in_task`]), so a target of any kind (nested sets included) is
//! open by then and is registered under the fd number the program uses
//! (`EPOLL_CTL_MOD`/`DEL` on it keep working). Events and data are as
//! dumped, flags included (`EPOLLET`, `EPOLLONESHOT`, `EPOLLEXCLUSIVE`,
//! `EPOLLWAKEUP`); a fired one-shot target comes back disarmed.

use super::fdtable::set_status_flags;
use super::{CollectCtx, FdKind, FdProbe, FileDesc, FileDumpError, FilesSink, InTaskCtx, LoadCtx, OpenCtx, Opened, TaskStage};
use crate::dump::shared::kcmp;
use crate::images::pb::{self, FdTypes};
use crate::images::ImageError;
use crate::proc::kind_fdinfo::{parse_epoll, EpollTarget};
use crate::restore::error::{RestoreError, Result, SysContext};
use rustix::fd::{AsRawFd, BorrowedFd};
use std::os::unix::fs::MetadataExt;

/// The kind.
pub struct Epoll;

/// `KCMP_EPOLL_TFD` (`linux/kcmp.h`): whether an fd of one task is a given
/// target of an epoll set of another.
const KCMP_EPOLL_TFD: i32 = 7;

/// `struct kcmp_epoll_slot`: the target `tfd` (its `toff`-th registration
/// under that number) of set `efd`.
#[repr(C)]
struct KcmpEpollSlot {
    efd: u32,
    tfd: u32,
    toff: u32,
}

/// One target as dumped or loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target {
    /// The fd number (in the task that holds the set first) the target is
    /// registered under.
    pub tfd: i32,
    /// `EPOLL*` events and flags.
    pub events: u32,
    /// User data.
    pub data: u64,
    /// What fdinfo said of the target file (device in the kernel's
    /// encoding, inode, position): kept in the image to match it.
    pub dev: u32,
    /// Inode number.
    pub ino: u64,
    /// Position.
    pub pos: u64,
}

/// An epoll set as dumped, or how to recreate it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EpollSet {
    /// Open flags of the set's description.
    pub flags: i32,
    /// Its targets, in the kernel's order.
    pub targets: Vec<Target>,
}

/// `kcmp(pid, pid, KCMP_EPOLL_TFD, fd, &{efd, tfd, toff})`: whether `pid`'s
/// `fd` is target `tfd` (its `toff`-th registration) of `pid`'s set `efd`.
fn kcmp_epoll_tfd(pid: i32, fd: i32, efd: i32, tfd: i32, toff: u32) -> std::result::Result<bool, nix::errno::Errno> {
    let slot = KcmpEpollSlot { efd: efd as u32, tfd: tfd as u32, toff };
    kcmp(pid, pid, KCMP_EPOLL_TFD, fd as u64, &slot as *const KcmpEpollSlot as u64)
}

/// The `toff` of each target: how many targets listed before it share its
/// fd number (the kernel numbers registrations under one number in the
/// order fdinfo lists them).
fn offsets(targets: &[EpollTarget]) -> Vec<u32> {
    let mut seen: std::collections::HashMap<i32, u32> = std::collections::HashMap::new();
    targets
        .iter()
        .map(|t| {
            let n = seen.entry(t.tfd).or_default();
            *n += 1;
            *n - 1
        })
        .collect()
}

/// A device number from the kernel's encoding (`major << 20 | minor`).
fn user_dev(kdev: u32) -> u64 {
    libc::makedev(kdev >> 20, kdev & 0xf_ffff)
}

/// The fds of task `pid` (with `stat` through their links), read once per
/// set that needs them.
struct FdTable {
    fds: Vec<(i32, u64, u64)>,
}

impl FdTable {
    fn read(pid: i32) -> std::result::Result<FdTable, FileDumpError> {
        let mut fds = Vec::new();
        for link in crate::proc::fds::read_fds(pid)? {
            // A descriptor closed meanwhile (by nobody: the task is frozen) is skipped.
            if let Ok(md) = std::fs::metadata(crate::proc::path(pid, &format!("fd/{}", link.fd))) {
                fds.push((link.fd, md.dev(), md.ino()));
            }
        }
        Ok(FdTable { fds })
    }
}

/// Finds the fd of `p.pid` that is target `t` (its `toff`-th registration).
fn resolve(p: &FdProbe, t: &EpollTarget, toff: u32, table: &mut Option<FdTable>) -> std::result::Result<i32, FileDumpError> {
    let kcmp_err = |errno: nix::errno::Errno| FileDumpError::Kcmp { at: p.at(), errno: rustix::io::Errno::from_raw_os_error(errno as i32) };
    match kcmp_epoll_tfd(p.pid, t.tfd, p.fd, t.tfd, toff) {
        Ok(true) => return Ok(t.tfd),
        // EBADF: no fd with that number any more; ENOENT is a kernel
        // without KCMP_EPOLL_TFD support for this case.
        Ok(false) | Err(nix::errno::Errno::EBADF) => {}
        Err(e) => return Err(kcmp_err(e)),
    }
    if table.is_none() {
        *table = Some(FdTable::read(p.pid)?);
    }
    let dev = user_dev(t.sdev);
    for &(fd, d, i) in table.iter().flat_map(|t| &t.fds) {
        if (d, i) != (dev, t.ino) || fd == t.tfd {
            continue;
        }
        if kcmp_epoll_tfd(p.pid, fd, p.fd, t.tfd, toff).map_err(kcmp_err)? {
            return Ok(fd);
        }
    }
    Err(FileDumpError::UnsupportedState {
        at: p.at(),
        what: format!(
            "epoll target registered as fd {} (inode {} on device {:#x}) is no longer open in the task (closed, or held by another process only)",
            t.tfd, t.ino, t.sdev
        ),
    })
}

impl FdKind for Epoll {
    const FD_TYPE: FdTypes = FdTypes::Eventpoll;
    type Dumped = EpollSet;
    type Plan = EpollSet;
    type OpenState = ();

    fn claims(p: &FdProbe) -> bool {
        p.target == "anon_inode:[eventpoll]"
    }

    fn share_key(p: &FdProbe) -> u64 {
        // The targets (stable while the tree is frozen).
        super::fdinfo_key(p, |l| l.starts_with("tfd:"))
    }

    fn collect(p: &FdProbe, _cx: &mut CollectCtx<'_>) -> std::result::Result<EpollSet, FileDumpError> {
        let path = crate::proc::path(p.pid, &format!("fdinfo/{}", p.fd));
        let found = parse_epoll(&p.fdinfo, &path)?;
        let mut table = None;
        let mut targets = Vec::with_capacity(found.len());
        for (t, toff) in found.iter().zip(offsets(&found)) {
            let tfd = resolve(p, t, toff, &mut table)?;
            targets.push(Target { tfd, events: t.events, data: t.data, dev: t.sdev, ino: t.ino, pos: t.pos });
        }
        Ok(EpollSet { flags: p.flags() as i32, targets })
    }

    fn write(f: &FileDesc, d: &EpollSet, sink: &mut FilesSink<'_>) -> std::result::Result<(), ImageError> {
        let tfd = d
            .targets
            .iter()
            .map(|t| pb::EventpollTfdEntry {
                id: Some(f.id),
                tfd: Some(t.tfd as u32),
                events: Some(t.events),
                data: Some(t.data),
                dev: Some(t.dev),
                inode: Some(t.ino),
                pos: Some(t.pos),
            })
            .collect();
        let epfd = pb::EventpollFileEntry { id: Some(f.id), flags: Some(f.flags), fown: Some(f.fown.entry()), tfd };
        sink.push(pb::FileEntry { r#type: Some(FdTypes::Eventpoll as i32), id: Some(f.id), epfd: Some(epfd), ..Default::default() });
        Ok(())
    }

    fn load(e: &pb::FileEntry, cx: &LoadCtx<'_>) -> Result<EpollSet> {
        let id = e.id.unwrap_or_default();
        let ep = e.epfd.as_ref().ok_or_else(|| cx.bad(format!("file {id:#x} is EVENTPOLL without eventpoll_file_entry")))?;
        let mut targets = Vec::with_capacity(ep.tfd.len());
        for (i, t) in ep.tfd.iter().enumerate() {
            let tfd = t.tfd.unwrap_or_default();
            let Ok(tfd) = i32::try_from(tfd) else {
                return Err(cx.bad(format!("epoll {id:#x}: target {i} has fd {tfd}")));
            };
            targets.push(Target {
                tfd,
                events: t.events.unwrap_or_default(),
                data: t.data.unwrap_or_default(),
                dev: t.dev.unwrap_or_default(),
                ino: t.inode.unwrap_or_default(),
                pos: t.pos.unwrap_or_default(),
            });
        }
        Ok(EpollSet { flags: ep.flags.unwrap_or_default() as i32, targets })
    }

    fn open(p: &EpollSet, _st: &mut (), _cx: &OpenCtx<'_>) -> Result<Opened> {
        let fd = rustix::event::epoll::create(rustix::event::epoll::CreateFlags::CLOEXEC).sys(|| "epoll_create1".into())?;
        set_status_flags(&fd, p.flags)?;
        Ok(Opened::Fd(fd))
    }

    fn name(p: &EpollSet) -> String {
        format!("epoll set of {} target(s)", p.targets.len())
    }

    fn fds_needed(p: &EpollSet) -> Vec<i32> {
        p.targets.iter().map(|t| t.tfd).collect()
    }

    fn in_task(p: &EpollSet, fd: BorrowedFd<'_>, stage: TaskStage, _cx: &InTaskCtx<'_>) -> Result<()> {
        if stage != TaskStage::FdsInstalled {
            return Ok(());
        }
        for t in &p.targets {
            add_target(fd, t)?;
        }
        Ok(())
    }
}

/// `epoll_ctl(epfd, EPOLL_CTL_ADD, t.tfd, {t.events, t.data})`.
fn add_target(epfd: BorrowedFd<'_>, t: &Target) -> Result<()> {
    let mut ev = libc::epoll_event { events: t.events, u64: t.data };
    // SAFETY: epoll_ctl reads one epoll_event from the pointer given; both
    // descriptors are numbers in this task's table (errors are returned).
    let r = unsafe { libc::epoll_ctl(epfd.as_raw_fd(), libc::EPOLL_CTL_ADD, t.tfd, &mut ev) };
    if r < 0 {
        let errno = rustix::io::Errno::from_io_error(&std::io::Error::last_os_error()).unwrap_or(rustix::io::Errno::INVAL);
        return Err(RestoreError::sys(format!("epoll_ctl(fd {}, ADD, fd {}, events {:#x})", epfd.as_raw_fd(), t.tfd, t.events), errno));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(tfd: i32) -> EpollTarget {
        EpollTarget { tfd, events: 1, data: 0, pos: 0, ino: 1, sdev: 1 }
    }

    #[test]
    fn registrations_under_one_number_are_counted_in_listing_order() {
        assert_eq!(offsets(&[t(8), t(3), t(8), t(8), t(3)]), vec![0, 0, 1, 2, 1]);
        assert!(offsets(&[]).is_empty());
    }

    #[test]
    fn kernel_device_numbers() {
        assert_eq!(user_dev(0xfe0_0000), libc::makedev(254, 0));
        assert_eq!(user_dev(0x10), libc::makedev(0, 16));
    }

    /// kcmp finds a target registered through an fd that was then dup'd to
    /// another number and closed.
    #[test]
    fn moved_target_is_found_by_kcmp() {
        use rustix::event::{epoll, eventfd, EventfdFlags};
        let me = std::process::id() as i32;
        let ep = epoll::create(epoll::CreateFlags::CLOEXEC).unwrap();
        let first = eventfd(0, EventfdFlags::CLOEXEC).unwrap();
        epoll::add(&ep, &first, epoll::EventData::new_u64(5), epoll::EventFlags::IN).unwrap();
        let moved = rustix::io::fcntl_dupfd_cloexec(&first, 500).unwrap();
        let old = first.as_raw_fd();
        drop(first);
        assert!(kcmp_epoll_tfd(me, moved.as_raw_fd(), ep.as_raw_fd(), old, 0).unwrap());
        assert!(!kcmp_epoll_tfd(me, ep.as_raw_fd(), ep.as_raw_fd(), old, 0).unwrap());
        // The old number is free, or (other tests run at once) another file.
        assert!(matches!(kcmp_epoll_tfd(me, old, ep.as_raw_fd(), old, 0), Ok(false) | Err(nix::errno::Errno::EBADF)));
    }
}
