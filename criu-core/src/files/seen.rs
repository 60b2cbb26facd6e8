//! Descriptions already seen in a dump: a description several fds (of one
//! task or several) refer to gets one file id, found with
//! `kcmp(KCMP_FILE)`; data a kind saves once per object (a pipe's queued
//! bytes, a terminal's `tty_info_entry`) is marked here on first sight.

use crate::dump::shared::{kcmp, kcmp_type};
use crate::images::pb::FdTypes;

/// `kcmp(pid, pid, KCMP_FILE, fd1, fd2)`: whether two descriptors of `pid`
/// refer to the same open file description.
pub fn kcmp_same_file(pid: i32, fd1: i32, fd2: i32) -> Result<bool, rustix::io::Errno> {
    kcmp(pid, pid, kcmp_type::FILE, fd1 as u64, fd2 as u64).map_err(|e| rustix::io::Errno::from_raw_os_error(e as i32))
}

/// One open file description already given an id: a descriptor of some
/// task that refers to it, and what `stat` said about it.
#[derive(Debug, Clone, Copy)]
pub struct SeenFile {
    /// A task holding it.
    pub pid: i32,
    /// Its descriptor there.
    pub fd: i32,
    /// `st_dev`.
    pub dev: u64,
    /// `st_ino`.
    pub ino: u64,
    /// The file id it got.
    pub id: u32,
}

/// Descriptions and objects seen so far in the dump.
#[derive(Debug, Default)]
pub struct SeenFiles {
    /// Every description given an id, with one descriptor referring to it.
    pub files: Vec<SeenFile>,
    /// Objects whose once-per-object data is saved: (kind, key).
    once: Vec<(FdTypes, u64)>,
}

impl SeenFiles {
    /// The id of the description behind `pid`'s `fd` (with `dev`/`ino`),
    /// if a task collected earlier (or an earlier fd) refers to it.
    pub fn find(&self, pid: i32, fd: i32, dev: u64, ino: u64) -> Result<Option<u32>, rustix::io::Errno> {
        for s in self.files.iter().filter(|s| s.dev == dev && s.ino == ino) {
            let same = kcmp(pid, s.pid, kcmp_type::FILE, fd as u64, s.fd as u64)
                .map_err(|e| rustix::io::Errno::from_raw_os_error(e as i32))?;
            if same {
                return Ok(Some(s.id));
            }
        }
        Ok(None)
    }

    /// Whether object `key` of `kind` is seen for the first time (true once
    /// per object): e.g. a pipe by inode, whose bytes are saved once.
    pub fn first_sight(&mut self, kind: FdTypes, key: u64) -> bool {
        if self.once.contains(&(kind, key)) {
            return false;
        }
        self.once.push((kind, key));
        true
    }
}
