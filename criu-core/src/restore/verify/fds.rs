//! The fd table: `/proc/PID/fd` and `/proc/PID/fdinfo` against
//! `fdinfo-ID.img` and `files.img` (numbers, close-on-exec, what kind of
//! file each is, the status flags and position and path of regular files,
//! the status flags and buffer size of pipes, the owner (`F_SETOWN_EX`,
//! `F_SETSIG` and who set it) of every file but `O_PATH` ones), and the
//! working and root directories against `fs-PID.img`.
//!
//! What only `fcntl` tells is read on our own copy of the task's
//! descriptor (`pidfd_getfd`), taken only where the images have something
//! to compare.

use super::{proc_err, same, Check, TaskImages};
use crate::images::pb::{self, FdTypes};
use crate::proc::fds::{read_fdinfo, read_fds};
use std::path::Path;

/// The status flags compared: the access mode and what `F_SETFL` sets
/// (the kernel adds `O_LARGEFILE` and others of its own).
const STATUS_FLAGS: u32 = (libc::O_ACCMODE | libc::O_APPEND | libc::O_NONBLOCK | libc::O_DIRECT | libc::O_NOATIME) as u32;

pub fn check(t: &TaskImages) -> Check {
    let mut peek = Peek { pid: t.pid, pidfd: None };
    let live = read_fds(t.pid).map_err(proc_err)?;
    let mut image: Vec<&pb::FdinfoEntry> = t.fdinfo.iter().collect();
    image.sort_by_key(|e| e.fd.unwrap_or_default());
    for i in 0..live.len().max(image.len()) {
        let (l, m) = (live.get(i), image.get(i));
        let (lfd, mfd) = (l.map(|l| l.fd), m.map(|m| m.fd.unwrap_or_default() as i32));
        match (l, m) {
            (Some(l), Some(m)) if lfd == mfd => one_fd(t, &mut peek, l.fd, &l.target, m)?,
            (Some(l), m) if m.is_none() || lfd < mfd => {
                return Err(format!("fd {} ({}) open, not in the image", l.fd, l.target.display()));
            }
            _ => return Err(format!("fd {} of the image is not open", mfd.unwrap_or_default())),
        }
    }
    if let Some(fs) = &t.fs {
        for (name, id) in [("cwd", fs.cwd_id), ("root", fs.root_id)] {
            let Some(want) = reg_name(t, id.unwrap_or_default()) else { continue };
            let got = crate::proc::misc::read_link(t.pid, name).map_err(proc_err)?;
            same(name, got.to_string_lossy().as_ref(), want)?;
        }
    }
    Ok(())
}

/// The name of regular file `id`, unless the restore may give it another
/// one (a ghost or linked-back file).
fn reg_name<'a>(t: &TaskImages<'a>, id: u32) -> Option<&'a str> {
    if t.tree.remapped.contains(&id) {
        return None;
    }
    t.tree.files.get(&id)?.reg.as_ref()?.name.as_deref()
}

fn one_fd(t: &TaskImages, peek: &mut Peek, fd: i32, link: &Path, m: &pb::FdinfoEntry) -> Check {
    let info = read_fdinfo(t.pid, fd).map_err(proc_err)?;
    let cloexec = info.flags & libc::O_CLOEXEC as u32 != 0;
    let want_cloexec = m.flags.unwrap_or_default() & libc::FD_CLOEXEC as u32 != 0;
    same(format_args!("fd {fd}: close-on-exec"), cloexec, want_cloexec)?;
    let id = m.id.unwrap_or_default();
    let Some(file) = t.tree.files.get(&id) else { return Ok(()) };
    let link = link.to_string_lossy();
    let kind = FdTypes::try_from(file.r#type.unwrap_or_default()).unwrap_or(FdTypes::Und);
    if let Some(prefix) = link_prefix(kind) {
        if !link.starts_with(prefix) {
            return Err(format!("fd {fd} is {link}, image {} ({kind:?})", describe(t, file)));
        }
    }
    let flags = |f: Option<u32>| f.map(|f| f & STATUS_FLAGS);
    match kind {
        FdTypes::Reg => {
            let Some(r) = file.reg.as_ref() else { return Ok(()) };
            if let Some(name) = reg_name(t, id) {
                same(format_args!("fd {fd}: path"), link.as_ref(), name)?;
            }
            if let Some(want) = flags(r.flags) {
                same_flags(fd, info.flags & STATUS_FLAGS, want)?;
            }
            // Positions of character devices and the like mean nothing.
            let regular = std::fs::metadata(format!("/proc/{}/fd/{fd}", t.pid)).is_ok_and(|m| m.is_file() || m.is_dir());
            if let (Some(pos), true) = (r.pos, regular) {
                same(format_args!("fd {fd} ({link}): position"), info.pos, pos)?;
            }
        }
        FdTypes::Pipe => {
            if let Some(want) = flags(file.pipe.as_ref().and_then(|p| p.flags)) {
                same_flags(fd, info.flags & STATUS_FLAGS, want)?;
            }
            let size = file.pipe.as_ref().and_then(|p| p.pipe_id).and_then(|id| t.tree.pipe_sizes.get(&id));
            if let Some(&size) = size {
                let copy = peek.copy(fd)?;
                let live = rustix::pipe::fcntl_getpipe_size(&copy).map_err(|e| format!("fd {fd}: F_GETPIPE_SZ: {e}"))?;
                same(format_args!("fd {fd} ({link}): pipe size"), live as u64, size as u64)?;
            }
        }
        _ => {}
    }
    if info.flags & libc::O_PATH as u32 == 0 {
        owner(peek, fd, &link, crate::files::Fown::of_entry(file, &t.tree.files))?;
    }
    Ok(())
}

/// The owner of the file behind `fd` against `want`, the image's (none,
/// signal 0, when the image has no `fown_entry`).
fn owner(peek: &mut Peek, fd: i32, link: &str, want: crate::files::Fown) -> Check {
    let copy = peek.copy(fd)?;
    let live = crate::files::dump::read_owner(&copy).map_err(|(what, e)| format!("fd {fd}: {what}: {e}"))?;
    if live == want {
        return Ok(());
    }
    let show = |f: &crate::files::Fown| format!("pid {} (type {}, set by uid {}/{}) signal {}", f.pid, f.pid_type, f.uid, f.euid, f.signum);
    Err(format!("fd {fd} ({link}): owner {}, image {}", show(&live), show(&want)))
}

/// Our own copies of the task's descriptors (`pidfd_getfd`), for what only
/// `fcntl` tells; the pidfd is opened on first use.
struct Peek {
    pid: i32,
    pidfd: Option<rustix::fd::OwnedFd>,
}

impl Peek {
    fn copy(&mut self, fd: i32) -> std::result::Result<rustix::fd::OwnedFd, String> {
        use rustix::process::{pidfd_getfd, pidfd_open, Pid, PidfdFlags, PidfdGetfdFlags};
        let pidfd = match self.pidfd.take() {
            Some(p) => p,
            None => {
                let pid = Pid::from_raw(self.pid).ok_or("no pid")?;
                pidfd_open(pid, PidfdFlags::empty()).map_err(|e| format!("pidfd_open: {e}"))?
            }
        };
        let copy = pidfd_getfd(&pidfd, fd, PidfdGetfdFlags::empty()).map_err(|e| format!("fd {fd}: pidfd_getfd: {e}"));
        self.pidfd = Some(pidfd);
        copy
    }
}

fn same_flags(fd: i32, live: u32, image: u32) -> Check {
    if live == image {
        return Ok(());
    }
    Err(format!("fd {fd}: status flags {live:#o}, image {image:#o}"))
}

/// How `/proc/PID/fd/N` starts for a file of `kind` (`None`: not checked).
fn link_prefix(kind: FdTypes) -> Option<&'static str> {
    Some(match kind {
        FdTypes::Pipe => "pipe:[",
        FdTypes::Unixsk | FdTypes::Inetsk | FdTypes::Packetsk | FdTypes::Netlinksk => "socket:[",
        FdTypes::Eventfd => "anon_inode:[eventfd]",
        FdTypes::Eventpoll => "anon_inode:[eventpoll]",
        FdTypes::Signalfd => "anon_inode:[signalfd]",
        FdTypes::Timerfd => "anon_inode:[timerfd]",
        FdTypes::Inotify => "anon_inode:inotify",
        FdTypes::Fanotify => "anon_inode:[fanotify]",
        FdTypes::Memfd => "/memfd:",
        FdTypes::Reg | FdTypes::Fifo => "/",
        _ => return None,
    })
}

/// A file of the image, for messages.
fn describe(t: &TaskImages, file: &pb::FileEntry) -> String {
    match file.reg.as_ref().and_then(|r| r.name.as_deref()) {
        Some(n) if !t.tree.remapped.contains(&file.id.unwrap_or_default()) => n.to_string(),
        _ => format!("file {:#x}", file.id.unwrap_or_default()),
    }
}
