//! `/proc/PID/fd` and `/proc/PID/fdinfo`: the open descriptors of a process.

use super::{parse_err, read_text, ProcError, Result};
use rustix::fd::OwnedFd;
use rustix::fs::{Mode, OFlags};
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};

/// What `/proc/PID/fdinfo/N` says about one descriptor.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FdInfo {
    /// File position.
    pub pos: u64,
    /// Open flags (`O_*`, including `O_CLOEXEC` for the descriptor).
    pub flags: u32,
    /// Mount id of the file.
    pub mnt_id: i32,
    /// Inode number.
    pub ino: u64,
}

/// Parses fdinfo text (only the common first lines).
pub fn parse_fdinfo(text: &str, path: &Path) -> Result<FdInfo> {
    let mut fi = FdInfo::default();
    for line in text.lines() {
        let Some((k, v)) = line.split_once(':') else { continue };
        let v = v.trim();
        let bad = || parse_err(path, "an fdinfo value", line);
        match k {
            "pos" => fi.pos = v.parse().map_err(|_| bad())?,
            "flags" => fi.flags = u32::from_str_radix(v, 8).map_err(|_| bad())?,
            "mnt_id" => fi.mnt_id = v.parse().map_err(|_| bad())?,
            "ino" => fi.ino = v.parse().map_err(|_| bad())?,
            _ => {}
        }
    }
    Ok(fi)
}

/// Reads `/proc/PID/fdinfo/FD`.
pub fn read_fdinfo(pid: i32, fd: i32) -> Result<FdInfo> {
    Ok(read_fdinfo_text(pid, fd)?.0)
}

/// Reads `/proc/PID/fdinfo/FD`: the common fields and the whole text (for
/// the lines of one kind, `eventfd-count:`, `tfd:`, ...).
pub fn read_fdinfo_text(pid: i32, fd: i32) -> Result<(FdInfo, String)> {
    let path = super::path(pid, &format!("fdinfo/{fd}"));
    let text = read_text(&path)?;
    Ok((parse_fdinfo(&text, &path)?, text))
}

/// The value of the first `KEY:` line of fdinfo `text`, trimmed.
pub fn fdinfo_field<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines().find_map(|l| l.strip_prefix(key)?.strip_prefix(':').map(str::trim))
}

/// One open descriptor: its number and where its `/proc` link points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FdLink {
    /// Descriptor number.
    pub fd: i32,
    /// The link text (`/path`, `pipe:[123]`, `socket:[45]`, `anon_inode:[eventfd]`, ...).
    pub target: PathBuf,
}

/// Lists `/proc/PID/fd`, sorted by descriptor number.
pub fn read_fds(pid: i32) -> Result<Vec<FdLink>> {
    let dir = super::path(pid, "fd");
    let rd = std::fs::read_dir(&dir).map_err(|source| ProcError::Io { path: dir.clone(), source })?;
    let mut out = Vec::new();
    for e in rd {
        let e = e.map_err(|source| ProcError::Io { path: dir.clone(), source })?;
        let Some(fd) = e.file_name().to_str().and_then(|s| s.parse().ok()) else { continue };
        let target = std::fs::read_link(e.path()).map_err(|source| ProcError::Io { path: e.path(), source })?;
        out.push(FdLink { fd, target });
    }
    out.sort_by_key(|l| l.fd);
    Ok(out)
}

/// `/proc/PID/fd` and `/proc/PID/fdinfo`, opened once: each descriptor's
/// link and fdinfo are then read relative to them, without walking
/// `/proc/PID` again for every one (thousands of descriptors make that
/// walk, and its permission checks, the bulk of a dump's file work).
#[derive(Debug)]
pub struct FdDirs {
    pid: i32,
    fd: OwnedFd,
    fdinfo: OwnedFd,
}

impl FdDirs {
    /// Opens the two directories of task `pid`.
    pub fn open(pid: i32) -> Result<FdDirs> {
        let dir = |name: &str| {
            let path = super::path(pid, name);
            rustix::fs::open(&path, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
                .map_err(|e| ProcError::Io { path, source: e.into() })
        };
        Ok(FdDirs { pid, fd: dir("fd")?, fdinfo: dir("fdinfo")? })
    }

    /// The task.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Every descriptor with its link text, sorted by number.
    pub fn links(&self) -> Result<Vec<FdLink>> {
        let path = || super::path(self.pid, "fd");
        let io = |e: rustix::io::Errno| ProcError::Io { path: path(), source: e.into() };
        let mut dir = rustix::fs::Dir::read_from(&self.fd).map_err(io)?;
        let mut out = Vec::new();
        while let Some(e) = dir.read() {
            let e = e.map_err(io)?;
            let Some(fd) = e.file_name().to_str().ok().and_then(|s| s.parse::<i32>().ok()) else { continue };
            let target = match rustix::fs::readlinkat(&self.fd, e.file_name(), Vec::new()) {
                Ok(t) => PathBuf::from(std::ffi::OsString::from_vec(t.into_bytes())),
                // Closed since the listing (the task is frozen: by nobody).
                Err(rustix::io::Errno::NOENT) => continue,
                Err(e) => return Err(ProcError::Io { path: super::path(self.pid, &format!("fd/{fd}")), source: e.into() }),
            };
            out.push(FdLink { fd, target });
        }
        out.sort_by_key(|l| l.fd);
        Ok(out)
    }

    /// `/proc/PID/fdinfo/FD`: the common fields and the whole text, read
    /// with one `read` in the usual case.
    pub fn fdinfo(&self, fd: i32) -> Result<(FdInfo, String)> {
        let path = || super::path(self.pid, &format!("fdinfo/{fd}"));
        let io = |e: rustix::io::Errno| ProcError::Io { path: path(), source: e.into() };
        let f = rustix::fs::openat(&self.fdinfo, fd.to_string(), OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty()).map_err(io)?;
        let mut buf = vec![0u8; 4096];
        let mut len = 0;
        loop {
            if len == buf.len() {
                buf.resize(buf.len() * 2, 0);
            }
            let n = rustix::io::read(&f, &mut buf[len..]).map_err(io)?;
            len += n;
            // A seq file hands out whole records: a short read is the end.
            if n == 0 || len < buf.len() {
                break;
            }
        }
        buf.truncate(len);
        let text = String::from_utf8(buf).map_err(|_| parse_err(&path(), "UTF-8 text", ""))?;
        Ok((parse_fdinfo(&text, &path())?, text))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Seek, SeekFrom};
    use std::os::fd::AsRawFd;

    #[test]
    fn own_fd_pos_and_flags() {
        let dir = std::env::temp_dir().join(format!("criu-rs-fdinfo-{}", std::process::id()));
        let mut file = std::fs::OpenOptions::new().create(true).read(true).append(true).open(&dir).unwrap();
        std::fs::remove_file(&dir).unwrap();
        file.seek(SeekFrom::Start(0)).unwrap();
        std::io::Write::write_all(&mut file, b"hello").unwrap();
        let me = std::process::id() as i32;
        let fi = read_fdinfo(me, file.as_raw_fd()).unwrap();
        assert_eq!(fi.pos, 5);
        assert_ne!(fi.flags & libc::O_APPEND as u32, 0);
        assert_ne!(fi.flags & libc::O_CLOEXEC as u32, 0);
        let dirs = FdDirs::open(me).unwrap();
        assert_eq!(dirs.fdinfo(file.as_raw_fd()).unwrap().0, fi);
        let listed: Vec<i32> = dirs.links().unwrap().iter().map(|l| l.fd).collect();
        assert!(listed.contains(&file.as_raw_fd()));
        // Parallel tests of this process open and close descriptors: one
        // listed and closed before it is read fails a read; read again.
        let links = (0..50).find_map(|_| read_fds(me).ok()).expect("read_fds of this process failed 50 times");
        let l = links.iter().find(|l| l.fd == file.as_raw_fd()).unwrap();
        assert!(l.target.to_string_lossy().ends_with(" (deleted)"));
    }
}
