//! The restored fd table, kind-free.
//!
//! Every open file description is created once ([`open_descs`], each by its
//! kind), parked on a temporary fd above all target numbers, then `dup3`'d
//! onto each fd number that shares it (so dup'd fds share offset and flags
//! again). Everything else criu-rs had open is closed, except the service
//! fds the caller still needs.

use super::{DescPlan, Fown, Later, OpenCtx, OpenStates, Opened};
use linux_raw_sys::general::{f_owner_ex, F_SETOWN_EX, F_SETSIG};
use std::cell::RefCell;
use crate::restore::error::{RestoreError, Result, SysContext};
use rustix::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use rustix::fs::OFlags;
use std::collections::BTreeMap;
use std::mem::ManuallyDrop;

/// One fd number and the description it refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdPlan {
    /// The fd number.
    pub fd: i32,
    /// The file id of its description.
    pub desc: u32,
    /// `FD_CLOEXEC`.
    pub cloexec: bool,
}

/// The lowest fd number not used by the restored table; service fds and
/// temporaries live at or above it.
pub fn fd_floor(fds: &[FdPlan]) -> RawFd {
    fds.iter().map(|f| f.fd + 1).max().unwrap_or(0).max(3)
}

/// `fcntl(fd, F_DUPFD_CLOEXEC, floor)` then closes `fd`: moves an fd to the
/// lowest free number at or above `floor`.
pub fn move_above(fd: OwnedFd, floor: RawFd) -> Result<OwnedFd> {
    if fd.as_raw_fd() >= floor {
        return Ok(fd);
    }
    rustix::io::fcntl_dupfd_cloexec(&fd, floor).sys(|| format!("F_DUPFD_CLOEXEC({}, {floor})", fd.as_raw_fd()))
}

/// `dup3(old, new, cloexec ? O_CLOEXEC : 0)` onto an exact fd number.
pub(crate) fn dup3_to(old: BorrowedFd<'_>, new: RawFd, cloexec: bool) -> Result<()> {
    // SAFETY: `new` is only a target number for dup3; ManuallyDrop keeps the
    // OwnedFd from closing it, the caller owns the resulting fd table entry.
    let mut target = ManuallyDrop::new(unsafe { OwnedFd::from_raw_fd(new) });
    let flags = if cloexec { rustix::io::DupFlags::CLOEXEC } else { rustix::io::DupFlags::empty() };
    rustix::io::dup3(old, &mut target, flags).sys(|| format!("dup3({}, {new})", old.as_raw_fd()))
}

/// `close_range(first, last, 0)`.
fn close_range(first: u32, last: u32) -> Result<()> {
    if first > last {
        return Ok(());
    }
    // SAFETY: closing fds this process owns; no Rust object keeps them (the
    // caller kept every fd it still uses out of the range).
    let r = unsafe { libc::syscall(libc::SYS_close_range, first, last, 0) };
    if r < 0 {
        let errno = rustix::io::Errno::from_io_error(&std::io::Error::last_os_error()).unwrap_or(rustix::io::Errno::INVAL);
        return Err(RestoreError::sys(format!("close_range({first}, {last})"), errno));
    }
    Ok(())
}

/// Closes every fd except those in `keep`.
pub fn close_all_but(keep: &[RawFd]) -> Result<()> {
    let mut keep: Vec<u32> = keep.iter().map(|&f| f as u32).collect();
    keep.sort_unstable();
    let mut first = 0u32;
    for k in keep {
        if k > first {
            close_range(first, k - 1)?;
        }
        first = k + 1;
    }
    close_range(first, u32::MAX)
}

/// Rebuilds the fd table: `fds` at their numbers, each pointing at its
/// description from `descs`. Every other fd is closed except `keep`, which
/// must already be at or above [`fd_floor`].
pub fn restore_fds(fds: &[FdPlan], descs: &BTreeMap<u32, DescPlan>, keep: &[RawFd]) -> Result<Later> {
    let (opened, later) = open_descs(descs, fd_floor(fds))?;
    let mut keep_all: Vec<RawFd> = keep.to_vec();
    keep_all.extend(opened.values().map(|f| f.as_raw_fd()));
    close_all_but(&keep_all)?;
    dup_all(fds, &opened)?;
    Ok(later)
}

/// Puts descriptions created earlier (by [`open_descs`], possibly in an
/// ancestor, so shared with other tasks) at the fd numbers of `fds`, then
/// closes every other fd except `keep`.
pub fn install_fds(fds: &[FdPlan], opened: &BTreeMap<u32, OwnedFd>, keep: &[RawFd]) -> Result<()> {
    dup_all(fds, opened)?;
    let mut keep_all: Vec<RawFd> = keep.to_vec();
    keep_all.extend(fds.iter().map(|f| f.fd));
    close_all_but(&keep_all)
}

fn dup_all(fds: &[FdPlan], opened: &BTreeMap<u32, OwnedFd>) -> Result<()> {
    for f in fds {
        let desc = opened.get(&f.desc).ok_or(RestoreError::UnknownFileId { fd: f.fd, id: f.desc })?;
        dup3_to(desc.as_fd(), f.fd, f.cloexec)?;
        tracing::debug!(fd = f.fd, id = f.desc, cloexec = f.cloexec, "fd installed");
    }
    let mut seen = std::collections::BTreeSet::new();
    for f in fds.iter().filter(|f| seen.insert(f.desc)) {
        renew_async(f.fd)?;
    }
    Ok(())
}

/// For a description in `O_ASYNC` mode, turns it off and on again on `fd`:
/// the kernel reports that fd number in the SIGIO it sends (`si_fd`), and
/// the description was opened on another number (in criu-rs).
fn renew_async(fd: RawFd) -> Result<()> {
    // SAFETY: `fd` is open for the duration (just dup3'd); borrowed only.
    let fd = unsafe { BorrowedFd::borrow_raw(fd) };
    let flags = rustix::fs::fcntl_getfl(fd).sys(|| format!("F_GETFL({})", fd.as_raw_fd()))?;
    if !flags.contains(OFlags::ASYNC) {
        return Ok(());
    }
    let set = |f: OFlags| rustix::fs::fcntl_setfl(fd, f).sys(|| format!("F_SETFL({:#x}) on fd {}", f.bits(), fd.as_raw_fd()));
    set(flags - OFlags::ASYNC)?;
    set(flags)
}

/// Creates every description on a temporary fd at or above `floor`, each
/// by its kind. A kind may answer "not yet" (it needs another description
/// first): those are asked again after the others, until a round opens
/// nothing. Then what the kinds left for "once everything is open" is
/// done; the rest of [`Later`] is the caller's.
pub fn open_descs(descs: &BTreeMap<u32, DescPlan>, floor: RawFd) -> Result<(BTreeMap<u32, OwnedFd>, Later)> {
    open_descs_with(descs, floor, &BTreeMap::new())
}

/// [`open_descs`] with the tree's memfd objects by inode id (see
/// [`super::OpenCtx::memfds`]).
#[tracing::instrument(level = "debug", skip_all, fields(descs = descs.len()))]
pub fn open_descs_with(descs: &BTreeMap<u32, DescPlan>, floor: RawFd, memfds: &BTreeMap<u64, BorrowedFd<'_>>) -> Result<(BTreeMap<u32, OwnedFd>, Later)> {
    let mut out = BTreeMap::new();
    let mut states = OpenStates::default();
    let leftover = RefCell::new(Later::default());
    let mut pending: Vec<(&u32, &DescPlan)> = descs.iter().collect();
    while !pending.is_empty() {
        let mut later = Vec::new();
        for &(id, d) in &pending {
            let cx = OpenCtx { floor, opened: &out, memfds, later: &leftover };
            let t = std::time::Instant::now();
            match d.open(&mut states, &cx)? {
                Opened::Fd(fd) => {
                    tracing::debug!(id, name = %d.name(), us = t.elapsed().as_micros() as u64, "opened description");
                    out.insert(*id, move_above(fd, floor)?);
                }
                Opened::NotYet => later.push((id, d)),
                // Each task holding it opens it (files::task::install).
                Opened::InTask => tracing::debug!(id, name = %d.name(), "left to the tasks"),
            }
        }
        if later.len() == pending.len() {
            let names: Vec<String> = later.iter().map(|(id, d)| format!("{:#x} ({})", id, d.name())).collect();
            return Err(RestoreError::Prepare(format!("files {} wait for each other and cannot be opened", names.join(", "))));
        }
        pending = later;
    }
    drop(states);
    let mut later = leftover.into_inner();
    later.after_open()?;
    Ok((out, later))
}

/// Copies (at or above `floor`) of the descriptions in `opened` that have
/// an owner in `owners`, with it: kept by criu-rs until every task exists
/// ([`set_owners`]).
pub fn owned<'a>(opened: &BTreeMap<u32, OwnedFd>, owners: impl IntoIterator<Item = (&'a u32, &'a Fown)>, floor: RawFd) -> Result<Vec<(OwnedFd, Fown)>> {
    let mut out = Vec::new();
    for (id, fown) in owners {
        let Some(fd) = opened.get(id) else { continue };
        let copy = rustix::io::fcntl_dupfd_cloexec(fd, floor).sys(|| format!("dup of file {id:#x}"))?;
        out.push((copy, *fown));
    }
    Ok(out)
}

/// `F_SETSIG` and `F_SETOWN_EX` (under the owner's uid and euid, which the
/// kernel records with it) on each description: once every task of the
/// tree exists, before any runs (the owner must exist).
pub fn set_owners(owned: &[(OwnedFd, Fown)]) -> Result<()> {
    for (fd, fown) in owned {
        if fown.signum != 0 {
            // SAFETY: an fcntl taking an integer.
            if unsafe { libc::fcntl(fd.as_raw_fd(), F_SETSIG as libc::c_int, fown.signum as libc::c_int) } < 0 {
                return Err(RestoreError::sys(format!("F_SETSIG({})", fown.signum), last_errno()));
            }
        }
        if fown.pid == 0 {
            continue;
        }
        let owner = f_owner_ex { type_: fown.pid_type as libc::c_int, pid: fown.pid as libc::pid_t };
        let set = || {
            // SAFETY: F_SETOWN_EX reads one f_owner_ex at a valid pointer.
            match unsafe { libc::fcntl(fd.as_raw_fd(), F_SETOWN_EX as libc::c_int, &owner) } {
                0 => Ok(()),
                _ => Err(last_errno()),
            }
        };
        as_uids(fown.uid, fown.euid, set).map_err(|e| RestoreError::sys(format!("F_SETOWN_EX(type {}, pid {}) as uid {}/{}", fown.pid_type, fown.pid, fown.uid, fown.euid), e))?;
    }
    Ok(())
}

/// Runs `f` with this thread's real and effective uid set to `uid`, `euid`
/// (the saved uid keeps criu-rs's, so its capabilities come back after).
fn as_uids<T>(uid: u32, euid: u32, f: impl FnOnce() -> std::result::Result<T, rustix::io::Errno>) -> std::result::Result<T, rustix::io::Errno> {
    let (ruid0, euid0) = (rustix::process::getuid().as_raw(), rustix::process::geteuid().as_raw());
    if (ruid0, euid0) == (uid, euid) {
        return f();
    }
    let setresuid = |r: u32, e: u32| {
        // SAFETY: a raw setresuid(2) for this thread only (the saved uid is
        // left alone); no Rust state depends on the thread's uids.
        match unsafe { libc::syscall(libc::SYS_setresuid, r, e, -1i32) } {
            0 => Ok(()),
            _ => Err(last_errno()),
        }
    };
    setresuid(uid, euid)?;
    let out = f();
    setresuid(ruid0, euid0)?;
    out
}

fn last_errno() -> rustix::io::Errno {
    rustix::io::Errno::from_raw_os_error(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
}

/// Writes all of `buf` to `fd`.
pub fn write_all(fd: &OwnedFd, mut buf: &[u8]) -> std::result::Result<(), rustix::io::Errno> {
    while !buf.is_empty() {
        let n = rustix::io::write(fd, buf)?;
        buf = &buf[n..];
    }
    Ok(())
}

/// `fcntl(fd, F_SETFL, flags)`: O_APPEND, O_NONBLOCK, O_ASYNC, O_DIRECT, O_NOATIME.
pub fn set_status_flags(fd: &OwnedFd, flags: i32) -> Result<()> {
    let settable = libc::O_APPEND | libc::O_NONBLOCK | libc::O_ASYNC | libc::O_DIRECT | libc::O_NOATIME;
    rustix::fs::fcntl_setfl(fd, OFlags::from_bits_retain((flags & settable) as u32))
        .sys(|| format!("F_SETFL({:#x}) on fd {}", flags & settable, fd.as_raw_fd()))
}
