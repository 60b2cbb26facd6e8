//! File locks (`--file-locks`, `-l`): `flock`, POSIX (`fcntl F_SETLK`) and
//! OFD (`F_OFD_SETLK`) locks, in CRIU's `filelocks.img` (one
//! `file_lock_entry` per lock: kind flag, type, holder pid and fd, start,
//! length; length 0 = to the end of the file).
//!
//! Dump: the kernel lists locks in `/proc/PID/fdinfo/N` (`lock:` lines):
//! a description's `flock` and OFD locks under every fd referring to it, a
//! POSIX lock under the fd it was taken through, in the task that holds it
//! only. Each lock is recorded once, for the first task and fd that show
//! it. Without `--file-locks` a held lock fails the dump, naming it (as
//! CRIU does); leases and other kinds are refused by name.
//!
//! Restore: each task takes its locks itself once its fd table is in
//! place ([`take`]): a POSIX lock belongs to the task (its fd table) and
//! every lock shows the pid of whoever took it. Never blocking: a lock
//! that cannot be taken fails the restore.

use super::fdtable::FdPlan;
use super::LoadOptions;
use crate::images::{pb, ImageDir, ImageKind};
use crate::restore::error::{RestoreError, Result};
use rustix::fd::{AsRawFd, BorrowedFd};

/// `file_lock_entry.flag`: a POSIX lock.
pub const FL_POSIX: u32 = 1;
/// `file_lock_entry.flag`: a `flock` lock.
pub const FL_FLOCK: u32 = 2;
/// `file_lock_entry.flag`: an open file description (OFD) lock.
pub const FL_OFD: u32 = 4;
/// `file_lock_entry.flag`: a lease (refused).
pub const FL_LEASE: u32 = 8;

/// `F_OFD_SETLK` (`asm-generic/fcntl.h`).
const F_OFD_SETLK: libc::c_int = 37;

/// One lock as dumped and restored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileLock {
    /// [`FL_POSIX`], [`FL_FLOCK`] or [`FL_OFD`].
    pub kind: u32,
    /// `F_RDLCK` or `F_WRLCK` (a `flock` too: shared = read).
    pub ty: i32,
    /// The task that takes it.
    pub pid: i32,
    /// Its fd there.
    pub fd: i32,
    /// First byte.
    pub start: i64,
    /// Length (0: to the end of the file, however it grows).
    pub len: i64,
}

impl FileLock {
    /// The `file_lock_entry`.
    pub fn entry(&self) -> pb::FileLockEntry {
        pb::FileLockEntry {
            flag: Some(self.kind),
            r#type: Some(self.ty as u32),
            pid: Some(self.pid),
            fd: Some(self.fd),
            start: Some(self.start),
            len: Some(self.len),
        }
    }

    /// From a `file_lock_entry`; `Err` says what is wrong with it.
    pub fn from_entry(e: &pb::FileLockEntry) -> std::result::Result<FileLock, String> {
        let (Some(kind), Some(ty), Some(pid), Some(fd), Some(start), Some(len)) = (e.flag, e.r#type, e.pid, e.fd, e.start, e.len) else {
            return Err(format!("lock entry with a field missing: {e:?}"));
        };
        let l = FileLock { kind, ty: ty as i32, pid, fd, start, len };
        if ![FL_POSIX, FL_FLOCK, FL_OFD].contains(&l.kind) {
            return Err(format!("lock of kind {:#x} (only flock, POSIX and OFD locks are restored)", l.kind));
        }
        if ![libc::F_RDLCK, libc::F_WRLCK].contains(&l.ty) {
            return Err(format!("lock of type {ty:#x} on fd {} of pid {}", l.fd, l.pid));
        }
        if l.start < 0 || l.len < 0 || l.start.checked_add(l.len).is_none() || (l.kind == FL_FLOCK && (l.start, l.len) != (0, 0)) {
            return Err(format!("lock range {}+{} on fd {} of pid {}", l.start, l.len, l.fd, l.pid));
        }
        Ok(l)
    }

    /// A description for messages (`POSIX WRITE 0+100`, `FLOCK READ`).
    pub fn describe(&self) -> String {
        let kind = match self.kind {
            FL_POSIX => "POSIX",
            FL_FLOCK => "FLOCK",
            FL_OFD => "OFDLCK",
            _ => "lock",
        };
        let ty = if self.ty == libc::F_WRLCK { "WRITE" } else { "READ" };
        match (self.kind, self.len) {
            (FL_FLOCK, _) => format!("{kind} {ty}"),
            (_, 0) => format!("{kind} {ty} from {} to EOF", self.start),
            (_, len) => format!("{kind} {ty} {}+{len}", self.start),
        }
    }
}

// ---------------------------------------------------------------- dump side

/// The locks an fdinfo text lists (`lock:` lines), for fd `fd` of task
/// `pid`; `Err` names a lock this module cannot keep (a lease, ...).
pub fn parse_fdinfo(fdinfo: &str, pid: i32, fd: i32) -> std::result::Result<Vec<FileLock>, String> {
    fdinfo.lines().filter_map(|l| l.strip_prefix("lock:")).map(|l| parse_line(l.trim(), pid, fd)).collect()
}

/// One `lock:` line after the tag, as `lock_get_status` prints it:
/// `1: POSIX  ADVISORY  WRITE 1234 08:01:5678 0 EOF` (`FLOCK`, `OFDLCK`;
/// `LEASE`/`DELEG`/`ACCESS` are refused).
fn parse_line(line: &str, pid: i32, fd: i32) -> std::result::Result<FileLock, String> {
    let w: Vec<&str> = line.split_whitespace().collect();
    let bad = || format!("unreadable lock line {line:?}");
    if w.len() < 8 {
        return Err(bad());
    }
    let kind = match w[1] {
        "POSIX" => FL_POSIX,
        "FLOCK" => FL_FLOCK,
        "OFDLCK" => FL_OFD,
        other => return Err(format!("{other} lock ({line}): only flock, POSIX and OFD locks are dumped")),
    };
    if w[2] != "ADVISORY" {
        return Err(format!("{} lock ({line})", w[2]));
    }
    let ty = match w[3] {
        "READ" => libc::F_RDLCK,
        "WRITE" => libc::F_WRLCK,
        other => return Err(format!("lock of type {other} ({line})")),
    };
    let start: i64 = w[6].parse().map_err(|_| bad())?;
    let len = match w[7] {
        "EOF" => 0,
        end => end.parse::<i64>().map_err(|_| bad())? - start + 1,
    };
    let (start, len) = if kind == FL_FLOCK { (0, 0) } else { (start, len) };
    Ok(FileLock { kind, ty, pid, fd, start, len })
}

/// Whether two locks are the same one seen twice: a description's flock
/// and OFD locks show under each fd (and task) holding it, `file` being
/// its id; a POSIX lock only under its own task, through its description.
pub fn same_lock_key(l: &FileLock, file: u32) -> (u32, u32, i32, i64, i64, i32) {
    let owner = if l.kind == FL_POSIX { l.pid } else { 0 };
    (file, l.kind, l.ty, l.start, l.len, owner)
}

// ------------------------------------------------------------- restore side

/// Takes `l` on `fd` (the task's fd `l.fd`), without waiting.
pub fn take(l: &FileLock, fd: BorrowedFd<'_>) -> Result<()> {
    let what = || format!("taking file lock {} on fd {}", l.describe(), l.fd);
    let r = if l.kind == FL_FLOCK {
        let op = if l.ty == libc::F_WRLCK { libc::LOCK_EX } else { libc::LOCK_SH };
        // SAFETY: flock on an fd of ours.
        unsafe { libc::flock(fd.as_raw_fd(), op | libc::LOCK_NB) }
    } else {
        // SAFETY: an all-zero flock is valid; its fields are set below.
        let mut fl: libc::flock = unsafe { std::mem::zeroed() };
        fl.l_type = l.ty as libc::c_short;
        fl.l_whence = libc::SEEK_SET as libc::c_short;
        fl.l_start = l.start;
        fl.l_len = l.len;
        let cmd = if l.kind == FL_OFD { F_OFD_SETLK } else { libc::F_SETLK };
        // SAFETY: F_SETLK/F_OFD_SETLK read one struct flock at a valid pointer.
        unsafe { libc::fcntl(fd.as_raw_fd(), cmd, &fl) }
    };
    if r < 0 {
        return Err(RestoreError::sys(what(), rustix::io::Errno::from_raw_os_error(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))));
    }
    Ok(())
}

/// The locks task `pid` takes (`filelocks.img`; absent: none), each on an
/// fd of its table `fds`. Locks in the images without `--file-locks` are
/// refused: a restore would run on unlocked files.
pub fn load_for(images: &ImageDir, pid: i32, fds: &[FdPlan], opts: &LoadOptions) -> Result<Vec<FileLock>> {
    let path = images.image_path(ImageKind::FileLocks, 0);
    let mut out = Vec::new();
    for l in read_image(images, opts)? {
        if l.pid != pid {
            continue;
        }
        if !fds.iter().any(|f| f.fd == l.fd) {
            return Err(RestoreError::bad(&path, format!("{} of pid {pid} is on fd {}, which is not in its fd table", l.describe(), l.fd)));
        }
        out.push(l);
    }
    Ok(out)
}

/// Checks that each lock of the images is taken by one of the tree's
/// live tasks (`taken` locks were given to them by [`load_for`]).
pub fn check_all_taken(images: &ImageDir, opts: &LoadOptions, live: &[i32], taken: usize) -> Result<()> {
    let all = read_image(images, opts)?;
    if let Some(l) = all.iter().find(|l| !live.contains(&l.pid)) {
        let path = images.image_path(ImageKind::FileLocks, 0);
        return Err(RestoreError::bad(path, format!("{} on fd {} of pid {}, which is no live task of the dump", l.describe(), l.fd, l.pid)));
    }
    debug_assert_eq!(all.len(), taken);
    Ok(())
}

/// Every lock of `filelocks.img`, checked.
fn read_image(images: &ImageDir, opts: &LoadOptions) -> Result<Vec<FileLock>> {
    if !images.exists(ImageKind::FileLocks, 0) {
        return Ok(Vec::new());
    }
    let path = images.image_path(ImageKind::FileLocks, 0);
    let entries: Vec<pb::FileLockEntry> = images.read_all(ImageKind::FileLocks, 0)?;
    if !entries.is_empty() && !opts.file_locks {
        let what = format!("{} file lock(s) held at dump time: restore with --file-locks (-l)", entries.len());
        return Err(RestoreError::Unsupported { file: path, what });
    }
    entries.iter().map(|e| FileLock::from_entry(e).map_err(|p| RestoreError::bad(&path, p))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustix::fd::AsFd;

    #[test]
    fn fdinfo_lock_lines_are_read_as_the_kernel_prints_them() {
        let info = "pos:\t0\nflags:\t02\nmnt_id:\t30\nino:\t12\n\
                    lock:\t1: POSIX  ADVISORY  WRITE 1234 08:01:5678 0 99\n\
                    lock:\t2: POSIX  ADVISORY  READ  1234 08:01:5678 200 EOF\n\
                    lock:\t3: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF\n\
                    lock:\t4: OFDLCK ADVISORY  READ  -1 08:01:5678 10 29\n";
        let got = parse_fdinfo(info, 1234, 7).unwrap();
        let l = |kind, ty, start, len| FileLock { kind, ty, pid: 1234, fd: 7, start, len };
        assert_eq!(got, vec![
            l(FL_POSIX, libc::F_WRLCK, 0, 100),
            l(FL_POSIX, libc::F_RDLCK, 200, 0),
            l(FL_FLOCK, libc::F_WRLCK, 0, 0),
            l(FL_OFD, libc::F_RDLCK, 10, 20),
        ]);
        for l in &got {
            assert_eq!(FileLock::from_entry(&l.entry()), Ok(*l));
        }
        let lease = "lock:\t1: LEASE  ACTIVE    READ  1234 08:01:5678 0 EOF\n";
        assert!(parse_fdinfo(lease, 1, 3).unwrap_err().contains("LEASE"));
        assert!(parse_fdinfo("lock:\t1: POSIX\n", 1, 3).is_err());
    }

    #[test]
    fn bad_entries_are_refused() {
        let ok = FileLock { kind: FL_POSIX, ty: libc::F_WRLCK, pid: 1, fd: 3, start: 0, len: 0 }.entry();
        assert!(FileLock::from_entry(&pb::FileLockEntry { flag: Some(FL_LEASE), ..ok.clone() }).is_err());
        assert!(FileLock::from_entry(&pb::FileLockEntry { r#type: Some(9), ..ok.clone() }).is_err());
        assert!(FileLock::from_entry(&pb::FileLockEntry { start: Some(-1), ..ok.clone() }).is_err());
        assert!(FileLock::from_entry(&pb::FileLockEntry { len: None, ..ok.clone() }).is_err());
        assert!(FileLock::from_entry(&pb::FileLockEntry { flag: Some(FL_FLOCK), start: Some(5), ..ok }).is_err());
    }

    /// Taken on our own fds: POSIX and OFD ranges conflict with another
    /// description's as they should; a flock keeps another description out.
    #[test]
    fn taken_locks_hold() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("f");
        std::fs::write(&path, [0u8; 100]).unwrap();
        let open = || rustix::fs::open(&path, rustix::fs::OFlags::RDWR | rustix::fs::OFlags::CLOEXEC, rustix::fs::Mode::empty()).unwrap();
        let (a, b) = (open(), open());
        take(&FileLock { kind: FL_OFD, ty: libc::F_WRLCK, pid: 0, fd: 0, start: 10, len: 20 }, a.as_fd()).unwrap();
        let err = take(&FileLock { kind: FL_OFD, ty: libc::F_RDLCK, pid: 0, fd: 9, start: 29, len: 1 }, b.as_fd()).unwrap_err().to_string();
        assert!(err.contains("OFDLCK READ 29+1") && err.contains("fd 9"), "{err}");
        take(&FileLock { kind: FL_OFD, ty: libc::F_RDLCK, pid: 0, fd: 9, start: 30, len: 1 }, b.as_fd()).unwrap();
        let (c, d) = (open(), open());
        take(&FileLock { kind: FL_FLOCK, ty: libc::F_RDLCK, pid: 0, fd: 0, start: 0, len: 0 }, c.as_fd()).unwrap();
        take(&FileLock { kind: FL_FLOCK, ty: libc::F_RDLCK, pid: 0, fd: 0, start: 0, len: 0 }, d.as_fd()).unwrap();
        assert!(take(&FileLock { kind: FL_FLOCK, ty: libc::F_WRLCK, pid: 0, fd: 0, start: 0, len: 0 }, open().as_fd()).is_err());
    }
}
