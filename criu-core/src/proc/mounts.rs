//! `/proc/PID/mountinfo`: the mounts a process sees, and finding a path for
//! a file handle (`open_by_handle_at` through a mount of its device), as
//! fsnotify watches need (their fdinfo names inodes by handle).

use super::{parse_err, read_text, Result};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// One line of `mountinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// Mount id.
    pub id: i32,
    /// Device of the file system (`major:minor`), as `st_dev` has it.
    pub dev: u64,
    /// The directory of the file system mounted here.
    pub root: PathBuf,
    /// Where it is mounted.
    pub mount_point: PathBuf,
    /// File system type.
    pub fstype: String,
}

/// Undoes mountinfo's octal escapes (`\040` for a space, ...).
fn unescape(s: &str) -> PathBuf {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    PathBuf::from(<std::ffi::OsString as std::os::unix::ffi::OsStringExt>::from_vec(out))
}

/// Parses mountinfo text.
pub fn parse_mountinfo(text: &str, path: &Path) -> Result<Vec<Mount>> {
    let mut out = Vec::new();
    for line in text.lines() {
        let bad = || parse_err(path, "a mountinfo line", line);
        let (head, tail) = line.split_once(" - ").ok_or_else(bad)?;
        let f: Vec<&str> = head.split(' ').collect();
        if f.len() < 5 {
            return Err(bad());
        }
        let (major, minor) = f[2].split_once(':').ok_or_else(bad)?;
        let major: u32 = major.parse().map_err(|_| bad())?;
        let minor: u32 = minor.parse().map_err(|_| bad())?;
        out.push(Mount {
            id: f[0].parse().map_err(|_| bad())?,
            dev: libc::makedev(major, minor),
            root: unescape(f[3]),
            mount_point: unescape(f[4]),
            fstype: tail.split(' ').next().unwrap_or_default().to_owned(),
        });
    }
    Ok(out)
}

/// Reads `/proc/PID/mountinfo`.
pub fn read_mountinfo(pid: i32) -> Result<Vec<Mount>> {
    let path = super::path(pid, "mountinfo");
    parse_mountinfo(&read_text(&path)?, &path)
}

/// `open_by_handle_at(mount_fd, {bytes, handle_type, handle}, O_PATH)`.
pub fn open_by_handle_at(mount_fd: &OwnedFd, handle_type: i32, handle: &[u8]) -> std::io::Result<OwnedFd> {
    const HEAD: usize = std::mem::size_of::<libc::file_handle>();
    // A buffer of u32s keeps the struct's alignment.
    let mut buf = vec![0u32; (HEAD + handle.len()).div_ceil(4)];
    let fh = buf.as_mut_ptr() as *mut libc::file_handle;
    // SAFETY: `buf` holds the file_handle header and `handle.len()` more
    // bytes, aligned for it; the kernel reads `handle_bytes` bytes after the
    // header.
    let fd = unsafe {
        (*fh).handle_bytes = handle.len() as u32;
        (*fh).handle_type = handle_type;
        std::ptr::copy_nonoverlapping(handle.as_ptr(), (fh as *mut u8).add(HEAD), handle.len());
        libc::open_by_handle_at(mount_fd.as_raw_fd(), fh, libc::O_PATH | libc::O_CLOEXEC)
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a new fd returned to us, owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Why [`path_of_handle`] found no path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandlePathError {
    /// No mount of the device is visible.
    #[error("no mount of device {major}:{minor} is visible")]
    NoMount {
        /// Device major.
        major: u32,
        /// Device minor.
        minor: u32,
    },
    /// The handle opens nothing (the inode is gone) on any mount.
    #[error("the file handle opens nothing on device {major}:{minor}: {error}")]
    Stale {
        /// Device major.
        major: u32,
        /// Device minor.
        minor: u32,
        /// The last `open_by_handle_at` error.
        error: String,
    },
    /// The inode has no name that leads back to it (unlinked, or not
    /// reachable from any visible mount).
    #[error("inode {ino} on device {major}:{minor} has no reachable name ({seen})")]
    NoName {
        /// Inode.
        ino: u64,
        /// Device major.
        major: u32,
        /// Device minor.
        minor: u32,
        /// What the handle resolved to.
        seen: String,
    },
}

/// A path (as this process sees it) of inode `ino` on device `dev`, found
/// by opening `handle` through each mount of the device, and checked by
/// `stat`-ing the path back to the same inode.
pub fn path_of_handle(mounts: &[Mount], dev: u64, ino: u64, handle_type: i32, handle: &[u8]) -> std::result::Result<PathBuf, HandlePathError> {
    let (major, minor) = (libc::major(dev), libc::minor(dev));
    let mut error = None;
    let mut seen = Vec::new();
    for m in mounts.iter().filter(|m| m.dev == dev) {
        let Ok(mfd) = std::fs::File::open(&m.mount_point).map(OwnedFd::from) else { continue };
        let fd = match open_by_handle_at(&mfd, handle_type, handle) {
            Ok(fd) => fd,
            Err(e) => {
                error = Some(e.to_string());
                continue;
            }
        };
        let Ok(link) = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())) else { continue };
        match std::fs::metadata(&link) {
            Ok(md) if md.dev() == dev && md.ino() == ino => return Ok(link),
            _ => seen.push(link.display().to_string()),
        }
    }
    if !seen.is_empty() {
        return Err(HandlePathError::NoName { ino, major, minor, seen: seen.join(", ") });
    }
    match error {
        Some(error) => Err(HandlePathError::Stale { major, minor, error }),
        None => Err(HandlePathError::NoMount { major, minor }),
    }
}

/// `name_to_handle_at(AT_FDCWD, path, ...)`: the handle type and bytes of
/// `path` (for tests and checks).
pub fn name_to_handle(path: &Path) -> std::io::Result<(i32, Vec<u8>)> {
    const MAX: usize = 128;
    const HEAD: usize = std::mem::size_of::<libc::file_handle>();
    let mut buf = vec![0u32; (HEAD + MAX) / 4];
    let fh = buf.as_mut_ptr() as *mut libc::file_handle;
    let c = std::ffi::CString::new(std::os::unix::ffi::OsStrExt::as_bytes(path.as_os_str()))?;
    let mut mnt_id = 0;
    // SAFETY: the buffer holds the header and MAX handle bytes (announced in
    // handle_bytes); the kernel writes at most that much.
    let r = unsafe {
        (*fh).handle_bytes = MAX as u32;
        libc::name_to_handle_at(libc::AT_FDCWD, c.as_ptr(), fh, &mut mnt_id, 0)
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel filled the header and `handle_bytes` (<= MAX) bytes.
    unsafe {
        let len = ((*fh).handle_bytes as usize).min(MAX);
        let bytes = std::slice::from_raw_parts((fh as *const u8).add(HEAD), len).to_vec();
        Ok(((*fh).handle_type, bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_lines() {
        let text = "22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw\n\
                    30 22 0:26 /sub /mnt/with\\040space rw - tmpfs tmpfs rw\n";
        let m = parse_mountinfo(text, Path::new("mountinfo")).unwrap();
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].dev, libc::makedev(254, 0));
        assert_eq!(m[0].mount_point, PathBuf::from("/"));
        assert_eq!(m[1].mount_point, PathBuf::from("/mnt/with space"));
        assert_eq!(m[1].root, PathBuf::from("/sub"));
        assert_eq!(m[1].fstype, "tmpfs");
        assert!(parse_mountinfo("22 1 254:0 / /\n", Path::new("m")).is_err());
    }

    #[test]
    fn a_handle_leads_back_to_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("watched");
        std::fs::write(&file, b"x").unwrap();
        let md = std::fs::metadata(&file).unwrap();
        let (ty, bytes) = name_to_handle(&file).unwrap();
        let mounts = read_mountinfo(std::process::id() as i32).unwrap();
        let found = path_of_handle(&mounts, md.dev(), md.ino(), ty, &bytes).unwrap();
        assert_eq!(std::fs::canonicalize(found).unwrap(), std::fs::canonicalize(&file).unwrap());
        std::fs::remove_file(&file).unwrap();
        assert!(path_of_handle(&mounts, md.dev(), md.ino(), ty, &bytes).is_err());
    }
}
