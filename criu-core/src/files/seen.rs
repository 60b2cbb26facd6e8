//! Descriptions already seen in a dump: a description several fds (of one
//! task or several) refer to gets one file id, found with
//! `kcmp(KCMP_FILE)`; data a kind saves once per object (a pipe's queued
//! bytes, a terminal's `tty_info_entry`, a memfd inode's contents) is
//! marked here on first sight; and the pids of the tree being dumped.
//!
//! Lookups must stay cheap with thousands of descriptors: descriptions are
//! grouped by device and inode (every eventfd, epoll set, timerfd and
//! signalfd shares one anonymous inode, so a group can be large), and each
//! group is kept in `kcmp` order (`kcmp` orders the kernel objects it
//! compares), so a descriptor is found or placed with a binary search of
//! O(log n) `kcmp` calls, as CRIU's kcmp trees do.

use super::memfd::{MemfdInode, PendingContents};
use crate::dump::shared::kcmp_type;
use crate::images::pb::FdTypes;
use std::collections::{HashMap, HashSet};

/// `kcmp(pid1, pid2, type, idx1, idx2)` as an ordering of the two objects:
/// `Some(Equal)` for one object, `None` when the kernel cannot order them.
pub fn kcmp_order(pid1: i32, pid2: i32, ty: i32, idx1: u64, idx2: u64) -> Result<Option<std::cmp::Ordering>, rustix::io::Errno> {
    // SAFETY: kcmp only compares kernel objects; it takes no pointers for
    // these types.
    let r = unsafe { libc::syscall(libc::SYS_kcmp, pid1, pid2, ty, idx1 as libc::c_ulong, idx2 as libc::c_ulong) };
    use std::cmp::Ordering::*;
    match r {
        0 => Ok(Some(Equal)),
        1 => Ok(Some(Less)),
        2 => Ok(Some(Greater)),
        3 => Ok(None),
        _ => Err(rustix::io::Errno::from_io_error(&std::io::Error::last_os_error()).unwrap_or(rustix::io::Errno::INVAL)),
    }
}

/// `kcmp(pid, pid, KCMP_FILE, fd1, fd2)`: whether two descriptors of `pid`
/// refer to the same open file description.
pub fn kcmp_same_file(pid: i32, fd1: i32, fd2: i32) -> Result<bool, rustix::io::Errno> {
    Ok(kcmp_order(pid, pid, kcmp_type::FILE, fd1 as u64, fd2 as u64)? == Some(std::cmp::Ordering::Equal))
}

/// What every descriptor of one description has in common, cheap to read:
/// descriptions are compared with `kcmp` only within one key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileKey {
    /// `st_dev`.
    pub dev: u64,
    /// `st_ino`.
    pub ino: u64,
    /// The kind's [`super::FdKind::share_key`] (0: none).
    pub share: u64,
}

/// One open file description already given an id: a descriptor of some
/// task that refers to it.
#[derive(Debug, Clone, Copy)]
pub struct SeenFile {
    /// A task holding it.
    pub pid: i32,
    /// Its descriptor there.
    pub fd: i32,
    /// The file id it got.
    pub id: u32,
}

/// Where a description not seen yet goes in its group (from
/// [`SeenFiles::find`], for [`SeenFiles::insert`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    key: FileKey,
    at: usize,
}

/// Descriptions and objects seen so far in the dump.
#[derive(Debug, Default)]
pub struct SeenFiles {
    /// Every description given an id, by key, each group in `kcmp` order
    /// (or in insertion order once the kernel could not order two).
    groups: HashMap<FileKey, Group>,
    /// Objects whose once-per-object data is saved: (kind, key).
    once: HashSet<(FdTypes, u64)>,
    /// Pids of the tree being dumped (live tasks and zombies).
    tree: HashSet<i32>,
    /// Memfd inodes by (dev, ino).
    memfds: HashMap<(u64, u64), MemfdInode>,
    /// Memfd contents still to copy.
    memfd_pending: Vec<PendingContents>,
    /// Unlinked files (dev, ino) whose contents are saved.
    ghosts: HashSet<(u64, u64)>,
    /// File locks recorded ([`crate::files::locks::same_lock_key`]).
    pub locks: HashSet<(u32, u32, i32, i64, i64, i32)>,
    /// `--external file[MNT:INO]` keys (CRIU's form, hex): those files are
    /// dumped by key, to be given back with `--inherit-fd` at restore.
    pub external_files: HashSet<String>,
    /// Unix sockets: the kernel's view of each network namespace met,
    /// what `--ext-unix-sk` allows.
    pub unix: crate::files::unix::UnixDumpCtx,
    /// Terminals: `--shell-job`, the pty queues read out.
    pub tty: crate::files::tty::TtyDumpState,
    /// Descriptions in flight in unix sockets' queues, as criu-rs's own
    /// descriptors (kept open for `kcmp` until the dump ends).
    pub in_flight: Vec<rustix::fd::OwnedFd>,
}

/// One (dev, ino) group.
#[derive(Debug, Default)]
struct Group {
    files: Vec<SeenFile>,
    /// The kernel could not order two of them: search linearly.
    unordered: bool,
}

impl SeenFiles {
    /// The id of the description behind `pid`'s `fd` (whose key is `key`)
    /// if a task collected earlier (or an earlier fd) refers to it, else
    /// where it goes.
    pub fn find(&mut self, pid: i32, fd: i32, key: FileKey) -> Result<Result<u32, Slot>, rustix::io::Errno> {
        let Some(g) = self.groups.get_mut(&key) else { return Ok(Err(Slot { key, at: 0 })) };
        let cmp = |s: &SeenFile| kcmp_order(pid, s.pid, kcmp_type::FILE, fd as u64, s.fd as u64);
        if !g.unordered {
            let (mut lo, mut hi) = (0, g.files.len());
            while lo < hi {
                let mid = (lo + hi) / 2;
                match cmp(&g.files[mid])? {
                    Some(std::cmp::Ordering::Equal) => return Ok(Ok(g.files[mid].id)),
                    Some(std::cmp::Ordering::Less) => hi = mid,
                    Some(std::cmp::Ordering::Greater) => lo = mid + 1,
                    None => {
                        g.unordered = true;
                        break;
                    }
                }
            }
            if !g.unordered {
                return Ok(Err(Slot { key, at: lo }));
            }
        }
        for s in &g.files {
            if cmp(s)? == Some(std::cmp::Ordering::Equal) {
                return Ok(Ok(s.id));
            }
        }
        Ok(Err(Slot { key, at: g.files.len() }))
    }

    /// Records a description not seen before, where [`SeenFiles::find`]
    /// said it goes.
    pub fn insert(&mut self, slot: Slot, f: SeenFile) {
        let g = self.groups.entry(slot.key).or_default();
        let at = if g.unordered { g.files.len() } else { slot.at.min(g.files.len()) };
        g.files.insert(at, f);
    }

    /// Whether object `key` of `kind` is seen for the first time (true once
    /// per object): e.g. a pipe by inode, whose bytes are saved once.
    pub fn first_sight(&mut self, kind: FdTypes, key: u64) -> bool {
        self.once.insert((kind, key))
    }

    /// Whether the unlinked file (dev, ino) is met for the first time
    /// (its contents are then saved, once for all its descriptions).
    pub fn first_ghost(&mut self, dev: u64, ino: u64) -> bool {
        self.ghosts.insert((dev, ino))
    }

    /// Records the pids of the tree being dumped.
    pub fn set_tree(&mut self, pids: impl IntoIterator<Item = i32>) {
        self.tree = pids.into_iter().collect();
    }

    /// Whether `pid` is a task (or zombie) of the tree being dumped.
    pub fn in_tree(&self, pid: i32) -> bool {
        self.tree.contains(&pid)
    }

    /// The memfd inode (dev, ino) if seen before.
    pub fn memfd_inode(&self, dev: u64, ino: u64) -> Option<&MemfdInode> {
        self.memfds.get(&(dev, ino))
    }

    /// Records memfd inode (dev, ino), giving it the next inode id, and
    /// its contents to copy; returns it.
    pub fn add_memfd_inode(&mut self, dev: u64, ino: u64, mut inode: MemfdInode, contents: PendingContents) -> MemfdInode {
        inode.inode_id = self.memfds.len() as u64 + 1;
        self.memfds.insert((dev, ino), inode.clone());
        self.memfd_pending.push(contents);
        inode
    }

    /// The memfd contents not copied yet (each inode's once).
    pub fn take_memfd_contents(&mut self) -> Vec<PendingContents> {
        std::mem::take(&mut self.memfd_pending)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustix::fd::AsRawFd;

    /// Many descriptions of one (anonymous) inode, dups among them: each
    /// dup finds its description, each new one gets a slot.
    #[test]
    fn dups_are_found_among_many_descriptions_of_one_inode() {
        let me = std::process::id() as i32;
        let mut seen = SeenFiles::default();
        let fds: Vec<_> = (0..200).map(|_| rustix::event::eventfd(0, rustix::event::EventfdFlags::CLOEXEC).unwrap()).collect();
        let st = rustix::fs::fstat(&fds[0]).unwrap();
        let key = FileKey { dev: st.st_dev, ino: st.st_ino, share: 0 };
        for (i, fd) in fds.iter().enumerate() {
            let slot = seen.find(me, fd.as_raw_fd(), key).unwrap().expect_err("not seen yet");
            seen.insert(slot, SeenFile { pid: me, fd: fd.as_raw_fd(), id: i as u32 });
        }
        for (i, fd) in fds.iter().enumerate().step_by(7) {
            let dup = rustix::io::fcntl_dupfd_cloexec(fd, 3).unwrap();
            assert_eq!(seen.find(me, dup.as_raw_fd(), key).unwrap(), Ok(i as u32));
        }
        let other = rustix::event::eventfd(0, rustix::event::EventfdFlags::CLOEXEC).unwrap();
        assert!(seen.find(me, other.as_raw_fd(), key).unwrap().is_err());
    }
}
