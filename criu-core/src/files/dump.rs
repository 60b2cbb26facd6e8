//! The dump side's kind-free loop: every fd of a task probed, shared
//! descriptions found, each new description collected by its kind.

use super::seen::{FileKey, SeenFile};
use super::{CollectCtx, DumpSockets, FdEntry, FdProbe, FileDesc, FileDumpError, FileKind, FilesOptions, FilesState, Fown, SeenFiles};
use crate::proc::fds::FdDirs;
use linux_raw_sys::general::{f_owner_ex, F_GETOWNER_UIDS, F_GETOWN_EX, F_GETSIG};
use rustix::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;

/// Collects the descriptors of `pid`. File ids start at `next_id`, which is
/// advanced; descriptions already known (same `kcmp`, in this task or one
/// collected before, as `seen` records) reuse their id.
pub fn collect_fds(pid: i32, next_id: &mut u32, seen: &mut SeenFiles, sockets: &mut DumpSockets, opts: FilesOptions) -> Result<FilesState, FileDumpError> {
    let mut st = FilesState::default();
    let dirs = FdDirs::open(pid)?;
    for link in dirs.links()? {
        let p = FdProbe::read_in(&dirs, &link)?;
        let key = FileKey { dev: p.md.dev(), ino: p.md.ino(), share: FileKind::share_key(&p) };
        let slot = match seen.find(pid, p.fd, key).map_err(|errno| FileDumpError::Kcmp { at: p.at(), errno })? {
            Ok(id) => {
                st.fds.push(FdEntry { fd: p.fd, file_id: id, cloexec: p.cloexec() });
                note_locks(&p, id, &mut st, seen, opts)?;
                continue;
            }
            Err(slot) => slot,
        };
        let mut cx = CollectCtx::new(pid, opts, seen, sockets, next_id);
        let id = cx.alloc_id();
        cx.seen.insert(slot, SeenFile { pid, fd: p.fd, id });
        let kind = FileKind::collect(&p, &mut cx)?;
        let fown = read_fown(&p, &cx)?;
        tracing::debug!(pid, fd = p.fd, id, kind = ?kind.fd_type(), target = %p.target, ?fown, "collected fd");
        st.files.append(&mut cx.extra);
        st.files.push(FileDesc { id, flags: p.flags(), pos: p.info.pos, fown, kind });
        st.fds.push(FdEntry { fd: p.fd, file_id: id, cloexec: p.cloexec() });
        note_locks(&p, id, &mut st, seen, opts)?;
    }
    Ok(st)
}

/// Collects a description criu-rs holds as `fd` (one in flight in a
/// socket's queue, which peeking gave it) and returns its file id: the id
/// of a description already seen (a task may hold it too), else a new one,
/// whose [`FileDesc`] goes to `cx.extra`. criu-rs keeps `fd` open until
/// the dump ends (descriptions seen later are compared with it).
pub fn collect_in_flight(fd: rustix::fd::OwnedFd, cx: &mut CollectCtx<'_>) -> Result<u32, FileDumpError> {
    let me = std::process::id() as i32;
    let raw = fd.as_raw_fd();
    let target = std::fs::read_link(format!("/proc/self/fd/{raw}")).map_err(|source| FileDumpError::Stat { at: format!("fd {raw} of criu-rs (in flight)"), source })?;
    let p = FdProbe::read(me, &crate::proc::fds::FdLink { fd: raw, target })?;
    let key = FileKey { dev: p.md.dev(), ino: p.md.ino(), share: FileKind::share_key(&p) };
    let slot = match cx.seen.find(me, raw, key).map_err(|errno| FileDumpError::Kcmp { at: p.at(), errno })? {
        Ok(id) => return Ok(id),
        Err(slot) => slot,
    };
    let (pid, opts) = (cx.pid, cx.opts);
    let mut own = CollectCtx::new(me, opts, cx.seen, cx.sockets, cx.next_id);
    let id = own.alloc_id();
    own.seen.insert(slot, SeenFile { pid: me, fd: raw, id });
    own.seen.in_flight.push(fd);
    let kind = FileKind::collect(&p, &mut own)?;
    // What a task finishes at restore (epoll targets under its fd numbers,
    // a timer armed, a pidfd or terminal it opens) has no task here.
    let stays = match &kind {
        FileKind::Epoll(e) if !e.targets.is_empty() => Some("an epoll set with targets"),
        FileKind::Timerfd(_) => Some("a timerfd"),
        FileKind::Pidfd(_) => Some("a pidfd"),
        FileKind::Tty(_) => Some("a terminal"),
        _ => None,
    };
    if let Some(what) = stays {
        return Err(FileDumpError::UnsupportedState { at: format!("{} in flight in a unix socket's queue (SCM_RIGHTS)", p.target), what: what.into() });
    }
    let fown = read_fown(&p, &own)?;
    tracing::debug!(pid, id, kind = ?kind.fd_type(), target = %p.target, ?fown, "collected a file in flight");
    let mut extra = std::mem::take(&mut own.extra);
    cx.extra.append(&mut extra);
    cx.extra.push(FileDesc { id, flags: p.flags(), pos: p.info.pos, fown, kind });
    Ok(id)
}

/// Records the locks the fdinfo of `p` (description `file`) lists that
/// were not seen through another fd or task; refuses them without
/// `--file-locks`.
fn note_locks(p: &FdProbe, file: u32, st: &mut FilesState, seen: &mut SeenFiles, opts: FilesOptions) -> Result<(), FileDumpError> {
    if !p.fdinfo.contains("lock:") {
        return Ok(());
    }
    let locks = super::locks::parse_fdinfo(&p.fdinfo, p.pid, p.fd).map_err(|what| FileDumpError::UnsupportedState { at: p.at(), what })?;
    for l in locks {
        if !opts.file_locks {
            return Err(FileDumpError::FileLock { at: p.at(), lock: l.describe() });
        }
        if seen.locks.insert(super::locks::same_lock_key(&l, file)) {
            tracing::debug!(pid = p.pid, fd = p.fd, lock = %l.describe(), "file lock");
            st.locks.push(l);
        }
    }
    Ok(())
}

/// The owner of the probed fd's description ([`read_owner`] on a copy of
/// it); none for `O_PATH` files.
fn read_fown(p: &FdProbe, cx: &CollectCtx<'_>) -> Result<Fown, FileDumpError> {
    if p.info.flags & libc::O_PATH as u32 != 0 {
        return Ok(Fown::default());
    }
    let fd = cx.copy_fd(p)?;
    read_owner(&fd).map_err(|(what, errno)| FileDumpError::Sys { at: p.at(), what: what.to_owned(), errno })
}

/// The owner of the description behind `fd`: `F_GETSIG`, `F_GETOWN_EX`
/// and, when there is an owner, `F_GETOWNER_UIDS` (which needs
/// CONFIG_CHECKPOINT_RESTORE). A failure names the fcntl.
pub fn read_owner(fd: &impl AsRawFd) -> Result<Fown, (&'static str, rustix::io::Errno)> {
    let signum = fcntl_int(fd, F_GETSIG as libc::c_int, 0).map_err(|e| ("F_GETSIG", e))? as u32;
    let mut owner = f_owner_ex { type_: 0, pid: 0 };
    fcntl_ptr(fd, F_GETOWN_EX as libc::c_int, &mut owner).map_err(|e| ("F_GETOWN_EX", e))?;
    if owner.pid == 0 {
        return Ok(Fown { signum, ..Fown::default() });
    }
    let mut uids = [0u32; 2];
    fcntl_ptr(fd, F_GETOWNER_UIDS as libc::c_int, &mut uids).map_err(|e| ("F_GETOWNER_UIDS", e))?;
    Ok(Fown { uid: uids[0], euid: uids[1], signum, pid_type: owner.type_ as u32, pid: owner.pid as u32 })
}

/// `fcntl(fd, cmd, arg)` returning an int.
pub(super) fn fcntl_int(fd: &impl AsRawFd, cmd: libc::c_int, arg: libc::c_int) -> Result<libc::c_int, rustix::io::Errno> {
    // SAFETY: an fcntl taking and returning integers only.
    let r = unsafe { libc::fcntl(fd.as_raw_fd(), cmd, arg) };
    if r < 0 {
        return Err(rustix::io::Errno::from_raw_os_error(std::io::Error::last_os_error().raw_os_error().unwrap_or(0)));
    }
    Ok(r)
}

/// `fcntl(fd, cmd, &mut *arg)` for a command reading or filling `T`.
pub(super) fn fcntl_ptr<T>(fd: &impl AsRawFd, cmd: libc::c_int, arg: &mut T) -> Result<(), rustix::io::Errno> {
    // SAFETY: `cmd` reads or writes one `T` at a valid, exclusive pointer.
    let r = unsafe { libc::fcntl(fd.as_raw_fd(), cmd, arg as *mut T) };
    if r < 0 {
        return Err(rustix::io::Errno::from_raw_os_error(std::io::Error::last_os_error().raw_os_error().unwrap_or(0)));
    }
    Ok(())
}
