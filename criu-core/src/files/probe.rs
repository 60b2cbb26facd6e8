//! What is known about one fd of a task before a kind claims it: its
//! `/proc/PID/fd/N` link text, `stat` through that link and
//! `/proc/PID/fdinfo/N`.

use super::FileDumpError;
use crate::proc::fds::{fdinfo_field, FdDirs, FdInfo, FdLink};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

/// One fd, probed.
#[derive(Debug)]
pub struct FdProbe {
    /// The task.
    pub pid: i32,
    /// The descriptor number.
    pub fd: i32,
    /// The link text (`/path`, `pipe:[123]`, `anon_inode:[eventfd]`, ...).
    pub target: String,
    /// `stat` of the file (through the link).
    pub md: std::fs::Metadata,
    /// The common fdinfo fields (pos, flags, mnt_id).
    pub info: FdInfo,
    /// The whole fdinfo text.
    pub fdinfo: String,
}

impl FdProbe {
    /// Probes `link` of task `pid`.
    pub fn read(pid: i32, link: &FdLink) -> Result<FdProbe, FileDumpError> {
        Self::read_in(&FdDirs::open(pid)?, link)
    }

    /// Probes `link` of the task whose fd directories `dirs` are.
    pub fn read_in(dirs: &FdDirs, link: &FdLink) -> Result<FdProbe, FileDumpError> {
        let (pid, fd) = (dirs.pid(), link.fd);
        let (info, fdinfo) = dirs.fdinfo(fd)?;
        let md = std::fs::metadata(crate::proc::path(pid, &format!("fd/{fd}")))
            .map_err(|source| FileDumpError::Stat { at: format!("fd {fd}"), source })?;
        Ok(FdProbe { pid, fd, target: link.target.to_string_lossy().into_owned(), md, info, fdinfo })
    }

    /// `fd N`, for messages.
    pub fn at(&self) -> String {
        format!("fd {}", self.fd)
    }

    /// `/proc/PID/fd/N`.
    pub fn proc_path(&self) -> PathBuf {
        crate::proc::path(self.pid, &format!("fd/{}", self.fd))
    }

    /// The file type bits of `st_mode` (`S_IFREG`, `S_IFIFO`, ...).
    pub fn file_type(&self) -> u32 {
        self.md.mode() & libc::S_IFMT
    }

    /// The value of fdinfo line `KEY:` (kind-specific lines).
    pub fn field(&self, key: &str) -> Option<&str> {
        fdinfo_field(&self.fdinfo, key)
    }

    /// A socket's protocol name (`system.sockprotoname`: `TCP`, `UDPv6`,
    /// `UNIX-STREAM`, `NETLINK`, `PACKET`, ...), read without taking the
    /// socket; `None` for other files.
    pub fn socket_proto(&self) -> Option<String> {
        if self.file_type() != libc::S_IFSOCK {
            return None;
        }
        crate::net::sock_proto(&self.proc_path())
    }

    /// Whether the descriptor is close-on-exec.
    pub fn cloexec(&self) -> bool {
        self.info.flags & libc::O_CLOEXEC as u32 != 0
    }

    /// Open flags without `O_CLOEXEC` (which belongs to the descriptor).
    pub fn flags(&self) -> u32 {
        self.info.flags & !(libc::O_CLOEXEC as u32)
    }
}
