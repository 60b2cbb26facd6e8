//! Rebuilding the fd table inside the task being restored (child side).
//!
//! Every open file description is created once, parked on a temporary fd
//! above all target numbers, then `dup3`'d onto each fd number that shares
//! it (so dup'd fds share offset and flags again). Everything else criu-rs
//! had open is closed, except the service fds the caller still needs.

use super::error::{RestoreError, Result, SysContext};
use super::plan::{DescPlan, FdPlan, RegFile};
use rustix::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use rustix::fs::{Mode, OFlags, SeekFrom};
use std::collections::BTreeMap;
use std::mem::ManuallyDrop;
use std::path::Path;

/// Open flags that only matter when creating a file; never replayed.
const CREATE_ONLY: i32 = libc::O_CREAT | libc::O_EXCL | libc::O_TRUNC | libc::O_NOCTTY | libc::O_CLOEXEC;

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
fn dup3_to(old: BorrowedFd<'_>, new: RawFd, cloexec: bool) -> Result<()> {
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
        return Err(RestoreError::sys(format!("close_range({first}, {last})"), rustix::io::Errno::from_io_error(&std::io::Error::last_os_error()).unwrap_or(rustix::io::Errno::INVAL)));
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
pub fn restore_fds(fds: &[FdPlan], descs: &BTreeMap<u32, DescPlan>, keep: &[RawFd]) -> Result<()> {
    let floor = fd_floor(fds);
    let opened = open_descs(descs, floor)?;
    let mut keep_all: Vec<RawFd> = keep.to_vec();
    keep_all.extend(opened.values().map(|f| f.as_raw_fd()));
    close_all_but(&keep_all)?;
    for f in fds {
        let desc = opened.get(&f.desc).ok_or_else(|| RestoreError::Prepare(format!("fd {} refers to unknown file id {}", f.fd, f.desc)))?;
        dup3_to(desc.as_fd(), f.fd, f.cloexec)?;
    }
    drop(opened);
    Ok(())
}

/// Puts descriptions created earlier (by [`open_descs`], possibly in an
/// ancestor, so shared with other tasks) at the fd numbers of `fds`, then
/// closes every other fd except `keep`.
pub fn install_fds(fds: &[FdPlan], opened: &BTreeMap<u32, OwnedFd>, keep: &[RawFd]) -> Result<()> {
    for f in fds {
        let desc = opened.get(&f.desc).ok_or_else(|| RestoreError::Prepare(format!("fd {} refers to unknown file id {}", f.fd, f.desc)))?;
        dup3_to(desc.as_fd(), f.fd, f.cloexec)?;
    }
    let mut keep_all: Vec<RawFd> = keep.to_vec();
    keep_all.extend(fds.iter().map(|f| f.fd));
    close_all_but(&keep_all)
}

/// Creates every description on a temporary fd at or above `floor`.
pub fn open_descs(descs: &BTreeMap<u32, DescPlan>, floor: RawFd) -> Result<BTreeMap<u32, OwnedFd>> {
    let mut out = BTreeMap::new();
    let mut pipes: BTreeMap<u32, (Option<OwnedFd>, Option<OwnedFd>)> = BTreeMap::new();
    // One read-write end per FIFO, held while its descriptions are opened.
    let mut fifo_keepers: BTreeMap<u32, OwnedFd> = BTreeMap::new();
    for (&id, d) in descs {
        let fd = match d {
            DescPlan::Reg(r) => open_reg(r)?,
            DescPlan::Ghost { file, contents } => open_ghost(file, contents)?,
            DescPlan::Fifo { file, pipe_id, queued } => {
                if let std::collections::btree_map::Entry::Vacant(v) = fifo_keepers.entry(*pipe_id) {
                    v.insert(open_fifo_keeper(file, queued)?);
                }
                open_fifo(file)?
            }
            DescPlan::Inherit { fd, flags } => {
                // SAFETY: criu-rs's own fd `fd` is open for the duration (it
                // is closed only later by close_all_but).
                let own = unsafe { BorrowedFd::borrow_raw(*fd) };
                let dup = rustix::io::fcntl_dupfd_cloexec(own, floor).sys(|| format!("inheriting fd {fd}"))?;
                set_status_flags(&dup, *flags)?;
                dup
            }
            DescPlan::Pipe { pipe_id, flags, queued } => {
                let ends = match pipes.entry(*pipe_id) {
                    std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
                    std::collections::btree_map::Entry::Vacant(v) => {
                        let (r, w) = make_pipe(*pipe_id, queued)?;
                        v.insert((Some(r), Some(w)))
                    }
                };
                let write_end = flags & libc::O_ACCMODE == libc::O_WRONLY;
                let slot = if write_end { &mut ends.1 } else { &mut ends.0 };
                let end = match slot.take() {
                    Some(fd) => fd,
                    // A second description of the same end: open it anew.
                    None => reopen_pipe_end(*pipe_id, &out, descs, write_end)?,
                };
                set_status_flags(&end, *flags)?;
                end
            }
        };
        out.insert(id, move_above(fd, floor)?);
    }
    drop(fifo_keepers);
    Ok(out)
}

/// `open(path, O_RDWR | O_NONBLOCK)` on a FIFO (never blocks, keeps the
/// FIFO's buffer alive) and puts its queued bytes back through it.
fn open_fifo_keeper(r: &RegFile, queued: &[u8]) -> Result<OwnedFd> {
    let fd = rustix::fs::open(&r.path, OFlags::RDWR | OFlags::NONBLOCK | OFlags::CLOEXEC, Mode::empty())
        .map_err(|e| RestoreError::FileChanged { path: r.path.clone(), problem: format!("cannot open the FIFO: {e}") })?;
    let st = rustix::fs::fstat(&fd).sys(|| format!("fstat({})", r.path.display()))?;
    if st.st_mode & libc::S_IFMT != libc::S_IFIFO {
        return Err(RestoreError::FileChanged { path: r.path.clone(), problem: "no longer a FIFO".into() });
    }
    write_all(&fd, queued).map_err(|e| RestoreError::sys(format!("refilling FIFO {}", r.path.display()), e))?;
    Ok(fd)
}

/// Opens a FIFO end with its dumped flags (non-blocking while opening: a
/// keeper end exists, so this never waits for a peer).
fn open_fifo(r: &RegFile) -> Result<OwnedFd> {
    let flags = OFlags::from_bits_retain((r.flags & libc::O_ACCMODE) as u32) | OFlags::NONBLOCK | OFlags::CLOEXEC;
    let fd = rustix::fs::open(&r.path, flags, Mode::empty())
        .map_err(|e| RestoreError::FileChanged { path: r.path.clone(), problem: format!("cannot open the FIFO: {e}") })?;
    set_status_flags(&fd, r.flags)?;
    Ok(fd)
}

/// Opens a regular file or directory by path and checks it against the dump.
fn open_reg(r: &RegFile) -> Result<OwnedFd> {
    let flags = OFlags::from_bits_retain((r.flags & !CREATE_ONLY) as u32) | OFlags::CLOEXEC | OFlags::NOCTTY;
    let fd = rustix::fs::open(&r.path, flags, Mode::empty()).map_err(|e| RestoreError::FileChanged {
        path: r.path.clone(),
        problem: format!("cannot reopen: {e}"),
    })?;
    check_reg(&fd, r)?;
    if r.pos != 0 {
        rustix::fs::seek(&fd, SeekFrom::Start(r.pos)).sys(|| format!("lseek({}, {})", r.path.display(), r.pos))?;
    }
    Ok(fd)
}

/// Compares the reopened file's type and size with what was dumped.
fn check_reg(fd: &OwnedFd, r: &RegFile) -> Result<()> {
    let st = rustix::fs::fstat(fd).sys(|| format!("fstat({})", r.path.display()))?;
    let changed = |problem: String| RestoreError::FileChanged { path: r.path.clone(), problem };
    if let Some(mode) = r.mode {
        if mode & libc::S_IFMT != st.st_mode & libc::S_IFMT {
            return Err(changed(format!("file type changed since the dump (mode {mode:o} → {:o})", st.st_mode)));
        }
    }
    let is_reg = st.st_mode & libc::S_IFMT == libc::S_IFREG;
    if let (true, Some(size)) = (is_reg, r.size) {
        if st.st_size as u64 != size {
            return Err(changed(format!("size changed since the dump ({size} → {} bytes)", st.st_size)));
        }
    }
    Ok(())
}

/// Recreates an unlinked file from its saved contents, opens it with the
/// dumped flags and unlinks it again.
fn open_ghost(r: &RegFile, contents: &[u8]) -> Result<OwnedFd> {
    let path = free_name(&r.path);
    let perm = Mode::from_bits_truncate(r.mode.unwrap_or(0o600) & 0o7777);
    let create = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::CLOEXEC;
    let w = rustix::fs::open(&path, create, perm).sys(|| format!("creating ghost file {}", path.display()))?;
    rustix::fs::fchmod(&w, perm).sys(|| format!("fchmod({})", path.display()))?;
    write_all(&w, contents).map_err(|e| RestoreError::sys(format!("writing ghost file {}", path.display()), e))?;
    drop(w);
    let fd = open_reg(&RegFile { path: path.clone(), ..r.clone() });
    let unlinked = rustix::fs::unlink(&path).sys(|| format!("unlinking ghost file {}", path.display()));
    let fd = fd?;
    unlinked?;
    Ok(fd)
}

/// `path` if nothing exists there, else a sibling name that is free.
fn free_name(path: &Path) -> std::path::PathBuf {
    if std::fs::symlink_metadata(path).is_err() {
        return path.to_path_buf();
    }
    (0..)
        .map(|i| path.with_file_name(format!("{}.criu-rs-ghost.{i}", path.file_name().unwrap_or_default().to_string_lossy())))
        .find(|p| std::fs::symlink_metadata(p).is_err())
        .unwrap_or_else(|| path.to_path_buf())
}

/// Writes all of `buf` to `fd`.
fn write_all(fd: &OwnedFd, mut buf: &[u8]) -> std::result::Result<(), rustix::io::Errno> {
    while !buf.is_empty() {
        let n = rustix::io::write(fd, buf)?;
        buf = &buf[n..];
    }
    Ok(())
}

/// `pipe2(O_CLOEXEC)`, sized for and filled with the queued bytes.
fn make_pipe(pipe_id: u32, queued: &[u8]) -> Result<(OwnedFd, OwnedFd)> {
    let (r, w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).sys(|| format!("pipe2 for pipe {pipe_id:#x}"))?;
    if queued.len() > 65536 {
        let got = rustix::pipe::fcntl_setpipe_size(&w, queued.len())
            .sys(|| format!("F_SETPIPE_SZ({}) for pipe {pipe_id:#x}", queued.len()))?;
        if got < queued.len() {
            return Err(RestoreError::Prepare(format!("pipe {pipe_id:#x}: capacity {got} is below its {} queued bytes", queued.len())));
        }
    }
    // Non-blocking while filling: a full pipe is an error, not a hang.
    rustix::fs::fcntl_setfl(&w, OFlags::NONBLOCK).sys(|| "F_SETFL(O_NONBLOCK)".into())?;
    write_all(&w, queued).map_err(|e| RestoreError::sys(format!("refilling pipe {pipe_id:#x}"), e))?;
    rustix::fs::fcntl_setfl(&w, OFlags::empty()).sys(|| "F_SETFL(0)".into())?;
    Ok((r, w))
}

/// Opens another description of an already created pipe end through
/// `/proc/self/fd`.
fn reopen_pipe_end(
    pipe_id: u32,
    opened: &BTreeMap<u32, OwnedFd>,
    descs: &BTreeMap<u32, DescPlan>,
    write_end: bool,
) -> Result<OwnedFd> {
    let same = opened.iter().find(|(id, _)| {
        matches!(descs.get(id), Some(DescPlan::Pipe { pipe_id: p, flags, .. })
            if *p == pipe_id && (flags & libc::O_ACCMODE == libc::O_WRONLY) == write_end)
    });
    let Some((_, fd)) = same else {
        return Err(RestoreError::Prepare(format!("pipe {pipe_id:#x}: end lost")));
    };
    let mode = if write_end { OFlags::WRONLY } else { OFlags::RDONLY };
    rustix::fs::open(format!("/proc/self/fd/{}", fd.as_raw_fd()), mode | OFlags::CLOEXEC, Mode::empty())
        .sys(|| format!("reopening pipe {pipe_id:#x}"))
}

/// `fcntl(fd, F_SETFL, flags)`: O_APPEND, O_NONBLOCK, O_ASYNC, O_DIRECT, O_NOATIME.
fn set_status_flags(fd: &OwnedFd, flags: i32) -> Result<()> {
    let settable = libc::O_APPEND | libc::O_NONBLOCK | libc::O_ASYNC | libc::O_DIRECT | libc::O_NOATIME;
    rustix::fs::fcntl_setfl(fd, OFlags::from_bits_retain((flags & settable) as u32))
        .sys(|| format!("F_SETFL({:#x}) on fd {}", flags & settable, fd.as_raw_fd()))
}
