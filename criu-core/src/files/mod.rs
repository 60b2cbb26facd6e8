//! Open files: one module per file kind, dump and restore side by side,
//! registered in one table ([`fd_kinds!`] below).
//!
//! ```text
//!  dump                                     restore
//!  /proc/PID/fd/N ──FdProbe──┐              files.img entry ──┐
//!   (stat, fdinfo, link)     │ claims?       + side images     │ load
//!                            ▼ collect                         ▼
//!                  FileDesc{kind: FileKind}           DescPlan (no protobuf after this)
//!                            │ write                           │ open (may say NotYet)
//!                            ▼                                 ▼
//!        files.img entries + side images             OwnedFd, parked above the fd table,
//!        (pipes-data, ghost-file, tty-info..)        then dup3'd to its numbers (fdtable)
//! ```
//!
//! A kind is a unit struct implementing [`FdKind`] in its own file and one
//! row of the table. What is the same for every kind lives here and in:
//! - [`dump`] / [`load`]: the kind-free loops of each side;
//! - [`probe`]: what is known about one fd before a kind claims it;
//! - [`seen`]: descriptions shared between fds and tasks (`kcmp`), ids;
//! - [`fdtable`]: the restored fd table (open every description, `dup3` to
//!   the dumped numbers, close-on-exec, close the rest);
//! - [`error`]: [`FileDumpError`]; the restore side uses [`RestoreError`].
//!
//! Kinds: [`reg`] (regular files, directories, devices by path, unlinked
//! files), [`pipe`], [`fifo`], [`tty`] (terminals: `--shell-job`),
//! [`eventfd`], [`epoll`], [`timerfd`], [`signalfd`], [`inotify`],
//! [`fanotify`], [`pidfd`], [`memfd`], [`unix`] (unix sockets; the peers
//! of the whole tree are checked in [`finish_tree`], once every task is
//! collected), [`inet`] (TCP and UDP sockets), [`netlink`], [`packet`].
//!
//! Most descriptions are made by criu-rs before the tree is forked and
//! inherited; [`task`] is the tasks' own side: installing them at their
//! numbers, opening those only a task can ([`Opened::InTask`]: a pidfd of
//! another task), and the steps a kind takes in the first task holding a
//! description ([`FdKind::in_task`]: an epoll set's targets, a timer armed
//! last).
//!
//! # Adding a kind
//! Write `files/NAME.rs` with a unit struct implementing [`FdKind`] (its
//! `FD_TYPE`, `claims`, `collect`, `write`, `load`, `open`, `name`, each
//! kind's round-trip test at the bottom), and add one row to `fd_kinds!`.
//! Rows are tried in order by `claims`, so put more specific kinds first.

pub mod dump;
pub mod error;
pub mod fdtable;
pub mod load;
pub mod locks;
pub mod probe;
pub mod seen;

pub mod task;

pub mod epoll;
pub mod eventfd;
pub mod fanotify;
pub mod inet;
pub mod netlink;
pub mod packet;
pub mod fifo;
pub mod inotify;
pub mod memfd;
pub mod pidfd;
pub mod pipe;
pub mod reg;
pub mod signalfd;
pub mod timerfd;
pub mod tty;
pub mod unix;

#[cfg(test)]
mod roundtrip;

pub use error::FileDumpError;
pub use probe::FdProbe;
pub use seen::SeenFiles;
pub use crate::net::dump_state::DumpSockets;

use crate::images::{pb, ImageDir, ImageError, ImageKind, ImageWriter};
use crate::restore::error::{RestoreError, Result as RestoreResult};
use rustix::fd::{BorrowedFd, OwnedFd, RawFd};
use std::any::{Any, TypeId};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::rc::Rc;

/// One kind of file: how it is recognised, collected, written, loaded and
/// reopened. Implemented by a unit struct per kind; every method is an
/// associated function (no `self`), the table dispatches by `match`.
pub trait FdKind {
    /// The value of `file_entry.type` and `fdinfo_entry.type`.
    const FD_TYPE: pb::FdTypes;
    /// What a dump keeps about one description of this kind.
    type Dumped: std::fmt::Debug + Clone + PartialEq;
    /// What restore needs to recreate it (no protobuf).
    type Plan: std::fmt::Debug + Clone + PartialEq;
    /// State shared by this kind's descriptions while a restore opens them
    /// (pipe ends by pipe id, ...); dropped once all are open.
    type OpenState: Default;

    /// Whether this kind takes the fd (the first row that claims wins).
    fn claims(p: &FdProbe) -> bool;
    /// Reads what the images need from `/proc` and the fd.
    fn collect(p: &FdProbe, cx: &mut CollectCtx<'_>) -> Result<Self::Dumped, FileDumpError>;
    /// Pushes the `file_entry`(s) of description `f` and its records in
    /// side images.
    fn write(f: &FileDesc, d: &Self::Dumped, sink: &mut FilesSink<'_>) -> Result<(), ImageError>;
    /// Turns `e` (already checked to carry this kind's part) into a plan;
    /// every check of the images happens here, errors name the image.
    fn load(e: &pb::FileEntry, cx: &LoadCtx<'_>) -> RestoreResult<Self::Plan>;
    /// Creates the description (any fd number; the caller moves it).
    fn open(p: &Self::Plan, st: &mut Self::OpenState, cx: &OpenCtx<'_>) -> RestoreResult<Opened>;
    /// A name for messages (`pipe:[id]`, a path, ...).
    fn name(p: &Self::Plan) -> String;

    /// A number every descriptor of one description shares (an eventfd's
    /// id, an epoll set's targets...), read from the probe; 0 when the kind
    /// has none. Only descriptors with the same device, inode and key are
    /// compared with `kcmp`: with thousands of eventfds, timerfds and
    /// epoll sets sharing one anonymous inode, that keeps the dump fast.
    fn share_key(_p: &FdProbe) -> u64 {
        0
    }
    /// Work only the task can do, with its fd table in place, done by the
    /// first task (in `pstree` order) holding the description, which is at
    /// `fd` ([`TaskStage`] says when): an epoll set's targets are added
    /// under that task's fd numbers, a timer is armed just before the task
    /// resumes.
    fn in_task(_p: &Self::Plan, _fd: BorrowedFd<'_>, _stage: TaskStage, _cx: &InTaskCtx<'_>) -> RestoreResult<()> {
        Ok(())
    }
    /// Creates a description [`FdKind::open`] left to the task
    /// ([`Opened::InTask`]): every task holding it opens its own, once the
    /// tree is forked (a pidfd of another task).
    fn open_in_task(p: &Self::Plan, _cx: &InTaskCtx<'_>) -> RestoreResult<OwnedFd> {
        Err(RestoreError::Prepare(format!("{} cannot be opened by the task", Self::name(p))))
    }
    /// Fd numbers that must be open in the first task holding the
    /// description (an epoll set's targets), checked when the tree is loaded.
    fn fds_needed(_p: &Self::Plan) -> Vec<i32> {
        Vec::new()
    }
    /// Pids that must be tasks of the tree (a pidfd's), checked when the
    /// tree is loaded.
    fn pids_needed(_p: &Self::Plan) -> Vec<i32> {
        Vec::new()
    }
    /// Descriptions to open with this one though maybe held by no fd (the
    /// ones in flight in a unix socket's queue), by file id: loaded with
    /// the task's descriptions.
    fn files_needed(_p: &Self::Plan) -> Vec<u32> {
        Vec::new()
    }
}

/// When [`FdKind::in_task`] runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskStage {
    /// The task's whole fd table is in place (descriptions it opens itself
    /// included); its memory is not restored yet.
    FdsInstalled,
    /// Everything is restored; the task jumps into the blob next.
    BeforeResume,
}

/// What [`FdKind::in_task`] and [`FdKind::open_in_task`] may use.
#[derive(Debug, Clone, Copy)]
pub struct InTaskCtx<'a> {
    /// The task (its dumped pid, which it has).
    pub pid: i32,
    /// Its fd table.
    pub fds: &'a [fdtable::FdPlan],
}

/// What [`FdKind::open`] made of a plan.
#[derive(Debug)]
pub enum Opened {
    /// The description, on some fd.
    Fd(OwnedFd),
    /// It depends on another description not opened yet (a unix socket
    /// connecting to a listener): asked again after the others.
    NotYet,
    /// Each task holding it opens it itself ([`FdKind::open_in_task`]).
    InTask,
}

macro_rules! fd_kinds {
    ($($(#[$doc:meta])* $kind:ident => $ty:ty;)*) => {
        /// A collected description, by kind.
        #[derive(Debug, Clone, PartialEq)]
        pub enum FileKind {
            $($(#[$doc])* $kind(<$ty as FdKind>::Dumped),)*
        }

        /// How to recreate a description, by kind.
        #[derive(Debug, Clone, PartialEq)]
        pub enum DescPlan {
            $($(#[$doc])* $kind(<$ty as FdKind>::Plan),)*
        }

        /// Every kind's [`FdKind::OpenState`].
        #[allow(non_snake_case)]
        #[derive(Default)]
        pub(crate) struct OpenStates {
            $($kind: <$ty as FdKind>::OpenState,)*
        }

        impl FileKind {
            /// `file_entry.type` of this description.
            pub fn fd_type(&self) -> pb::FdTypes {
                match self { $(FileKind::$kind(_) => <$ty as FdKind>::FD_TYPE,)* }
            }

            /// Collects the fd with the first kind that claims it.
            pub fn collect(p: &FdProbe, cx: &mut CollectCtx<'_>) -> Result<FileKind, FileDumpError> {
                $(if <$ty as FdKind>::claims(p) {
                    return Ok(FileKind::$kind(<$ty as FdKind>::collect(p, cx)?));
                })*
                Err(FileDumpError::Unsupported { at: p.at(), target: p.target.clone() })
            }

            /// [`FdKind::share_key`] of the first kind that claims the fd.
            pub fn share_key(p: &FdProbe) -> u64 {
                $(if <$ty as FdKind>::claims(p) {
                    return <$ty as FdKind>::share_key(p);
                })*
                0
            }

            fn write(f: &FileDesc, sink: &mut FilesSink<'_>) -> Result<(), ImageError> {
                match &f.kind { $(FileKind::$kind(d) => <$ty as FdKind>::write(f, d, sink),)* }
            }
        }

        impl DescPlan {
            /// Loads `e` with the kind its `type` names.
            pub fn load(e: &pb::FileEntry, cx: &LoadCtx<'_>) -> RestoreResult<DescPlan> {
                let ty = e.r#type.unwrap_or_default();
                $(if ty == <$ty as FdKind>::FD_TYPE as i32 {
                    return Ok(DescPlan::$kind(<$ty as FdKind>::load(e, cx)?));
                })*
                let name = pb::FdTypes::try_from(ty).map(|t| t.as_str_name().to_string()).unwrap_or_else(|_| ty.to_string());
                Err(cx.unsupported(format!("file {:#x} of type {name}", e.id.unwrap_or_default())))
            }

            pub(crate) fn open(&self, st: &mut OpenStates, cx: &OpenCtx<'_>) -> RestoreResult<Opened> {
                match self { $(DescPlan::$kind(p) => <$ty as FdKind>::open(p, &mut st.$kind, cx),)* }
            }

            /// `file_entry.type` of this description.
            pub fn fd_type(&self) -> pb::FdTypes {
                match self { $(DescPlan::$kind(_) => <$ty as FdKind>::FD_TYPE,)* }
            }

            /// A name for messages.
            pub fn name(&self) -> String {
                match self { $(DescPlan::$kind(p) => <$ty as FdKind>::name(p),)* }
            }

            /// [`FdKind::in_task`] of its kind.
            pub fn in_task(&self, fd: BorrowedFd<'_>, stage: TaskStage, cx: &InTaskCtx<'_>) -> RestoreResult<()> {
                match self { $(DescPlan::$kind(p) => <$ty as FdKind>::in_task(p, fd, stage, cx),)* }
            }

            /// [`FdKind::open_in_task`] of its kind.
            pub fn open_in_task(&self, cx: &InTaskCtx<'_>) -> RestoreResult<OwnedFd> {
                match self { $(DescPlan::$kind(p) => <$ty as FdKind>::open_in_task(p, cx),)* }
            }

            /// [`FdKind::fds_needed`] of its kind.
            pub fn fds_needed(&self) -> Vec<i32> {
                match self { $(DescPlan::$kind(p) => <$ty as FdKind>::fds_needed(p),)* }
            }

            /// [`FdKind::pids_needed`] of its kind.
            pub fn pids_needed(&self) -> Vec<i32> {
                match self { $(DescPlan::$kind(p) => <$ty as FdKind>::pids_needed(p),)* }
            }

            /// [`FdKind::files_needed`] of its kind.
            pub fn files_needed(&self) -> Vec<u32> {
                match self { $(DescPlan::$kind(p) => <$ty as FdKind>::files_needed(p),)* }
            }
        }
    };
}

fd_kinds! {
    /// A terminal (before `Reg`: it is a character device too).
    Tty => tty::Tty;
    /// A TCP, UDP or UDP-Lite socket.
    Inet => inet::Inet;
    /// A netlink socket.
    Netlink => netlink::Netlink;
    /// A packet socket.
    Packet => packet::Packet;
    /// An eventfd.
    Eventfd => eventfd::Eventfd;
    /// An epoll set and its targets.
    Epoll => epoll::Epoll;
    /// A timerfd.
    Timerfd => timerfd::Timerfd;
    /// A signalfd.
    Signalfd => signalfd::Signalfd;
    /// An inotify instance and its watches.
    Inotify => inotify::Inotify;
    /// A fanotify group and its marks.
    Fanotify => fanotify::Fanotify;
    /// A pidfd.
    Pidfd => pidfd::Pidfd;
    /// A memfd (before `Reg`: its link looks like a path).
    Memfd => memfd::Memfd;
    /// An anonymous pipe end.
    Pipe => pipe::Pipe;
    /// A named pipe end.
    Fifo => fifo::Fifo;
    /// A unix socket.
    UnixSk => unix::UnixSk;
    /// A path: regular file, directory or device; an unlinked file.
    Reg => reg::Reg;
}

// ---------------------------------------------------------------- dump side

/// A [`FdKind::share_key`] from the fdinfo lines of `p` that `keep` picks:
/// an FNV-1a hash of them (never 0).
pub fn fdinfo_key(p: &FdProbe, keep: impl Fn(&str) -> bool) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for line in p.fdinfo.lines().filter(|l| keep(l)) {
        for b in line.bytes().chain([b'\n']) {
            h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
        }
    }
    h.max(1)
}

/// Options of a dump that file kinds look at.
#[derive(Debug, Clone, Copy)]
pub struct FilesOptions {
    /// `--shell-job`: terminals are dumped, to be replaced by the restoring
    /// criu-rs's own.
    pub shell_job: bool,
    /// `--file-locks`: locks held on the files are dumped (else refused).
    pub file_locks: bool,
    /// `--ghost-limit`: the largest unlinked file kept, in bytes on disk.
    pub ghost_limit: u64,
}

impl Default for FilesOptions {
    fn default() -> Self {
        FilesOptions { shell_job: false, file_locks: false, ghost_limit: reg::GHOST_LIMIT }
    }
}

/// What a kind's `collect` may use besides the probe.
pub struct CollectCtx<'a> {
    /// The task.
    pub pid: i32,
    /// What the dump was asked for.
    pub opts: FilesOptions,
    /// Descriptions and pipes seen so far in the whole dump.
    pub seen: &'a mut SeenFiles,
    /// The dump's sockets (sock_diag tables, connections in repair mode).
    pub sockets: &'a mut DumpSockets,
    next_id: &'a mut u32,
    /// Descriptions found while collecting (in flight in a socket's queue),
    /// held by no descriptor: written with the task's.
    pub extra: Vec<FileDesc>,
}

impl<'a> CollectCtx<'a> {
    /// A context for the fds of `pid`, file ids taken from `next_id`.
    pub fn new(pid: i32, opts: FilesOptions, seen: &'a mut SeenFiles, sockets: &'a mut DumpSockets, next_id: &'a mut u32) -> Self {
        CollectCtx { pid, opts, seen, sockets, next_id, extra: Vec::new() }
    }

    /// Whether `pid` is a task (or zombie) of the tree being dumped.
    pub fn in_tree(&self, pid: i32) -> bool {
        self.seen.in_tree(pid)
    }

    /// A fresh file id (for an extra entry, e.g. the path of a FIFO).
    pub fn alloc_id(&mut self) -> u32 {
        let id = *self.next_id;
        *self.next_id += 1;
        id
    }

    /// `pidfd_getfd(pidfd_open(pid), fd)`: our own descriptor for the task's
    /// open file description (same offset, flags, owner).
    pub fn copy_fd(&self, p: &FdProbe) -> Result<OwnedFd, FileDumpError> {
        use rustix::process::{pidfd_getfd, pidfd_open, Pid, PidfdFlags, PidfdGetfdFlags};
        let sys = |what: &'static str, errno| FileDumpError::Sys { at: p.at(), what: what.into(), errno };
        let pid = Pid::from_raw(self.pid).ok_or(FileDumpError::Sys { at: p.at(), what: "pid".into(), errno: rustix::io::Errno::SRCH })?;
        let pidfd = pidfd_open(pid, PidfdFlags::empty()).map_err(|e| sys("pidfd_open", e))?;
        pidfd_getfd(&pidfd, p.fd as RawFd, PidfdGetfdFlags::empty()).map_err(|e| sys("pidfd_getfd", e))
    }
}

/// The collected descriptors and descriptions of one task.
#[derive(Debug, Clone, Default)]
pub struct FilesState {
    /// Open file descriptions, each with its id.
    pub files: Vec<FileDesc>,
    /// Descriptors: (fd, file id, close-on-exec).
    pub fds: Vec<FdEntry>,
    /// File id of the working directory.
    pub cwd_id: u32,
    /// File id of the root directory.
    pub root_id: u32,
    /// File locks this task takes again at restore ([`locks`]).
    pub locks: Vec<locks::FileLock>,
}

/// One descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdEntry {
    /// Descriptor number.
    pub fd: i32,
    /// The open file description it refers to.
    pub file_id: u32,
    /// `FD_CLOEXEC`.
    pub cloexec: bool,
}

/// One open file description.
#[derive(Debug, Clone, PartialEq)]
pub struct FileDesc {
    /// Id shared by every descriptor that refers to this description.
    pub id: u32,
    /// Open flags without `O_CLOEXEC`.
    pub flags: u32,
    /// File position.
    pub pos: u64,
    /// `F_SETOWN`/`F_SETSIG` owner.
    pub fown: Fown,
    /// What it is.
    pub kind: FileKind,
}

/// The owner of a description (`fown_entry`): who gets SIGIO/`signum`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Fown {
    /// Real uid of whoever set the owner.
    pub uid: u32,
    /// Effective uid of whoever set the owner.
    pub euid: u32,
    /// `F_SETSIG` signal (0: SIGIO).
    pub signum: u32,
    /// `F_OWNER_TID` / `F_OWNER_PID` / `F_OWNER_PGRP`.
    pub pid_type: u32,
    /// The owner (0: none).
    pub pid: u32,
}

impl Fown {
    /// Whether anything is set (a signal or an owner).
    pub fn is_set(&self) -> bool {
        self.signum != 0 || self.pid != 0
    }

    /// The owner recorded in `e` (every kind's part carries a `fown_entry`,
    /// but a FIFO's, which is in the REG entry naming its path).
    pub fn of_entry(e: &pb::FileEntry, files: &BTreeMap<u32, pb::FileEntry>) -> Fown {
        let fown = None
            .or(e.reg.as_ref().and_then(|x| x.fown.as_ref()))
            .or(e.isk.as_ref().and_then(|x| x.fown.as_ref()))
            .or(e.psk.as_ref().and_then(|x| x.fown.as_ref()))
            .or(e.nlsk.as_ref().and_then(|x| x.fown.as_ref()))
            .or(e.efd.as_ref().and_then(|x| x.fown.as_ref()))
            .or(e.epfd.as_ref().and_then(|x| x.fown.as_ref()))
            .or(e.sgfd.as_ref().and_then(|x| x.fown.as_ref()))
            .or(e.tfd.as_ref().and_then(|x| x.fown.as_ref()))
            .or(e.ify.as_ref().and_then(|x| x.fown.as_ref()))
            .or(e.ffy.as_ref().and_then(|x| x.fown.as_ref()))
            .or(e.ext.as_ref().and_then(|x| x.fown.as_ref()))
            .or(e.usk.as_ref().and_then(|x| x.fown.as_ref()))
            .or(e.pipe.as_ref().and_then(|x| x.fown.as_ref()))
            .or(e.tty.as_ref().and_then(|x| x.fown.as_ref()))
            .or(e.memfd.as_ref().and_then(|x| x.fown.as_ref()))
            .or(e.bpf.as_ref().and_then(|x| x.fown.as_ref()))
            .or(e.pidfd.as_ref().and_then(|x| x.fown.as_ref()));
        let fifo_path = e.fifo.as_ref().and_then(|f| f.regf_id).and_then(|id| files.get(&id)).and_then(|r| r.reg.as_ref());
        Fown::from_entry(fown.or(fifo_path.and_then(|r| r.fown.as_ref())))
    }

    /// As a `fown_entry`.
    pub fn entry(&self) -> pb::FownEntry {
        pb::FownEntry {
            uid: Some(self.uid),
            euid: Some(self.euid),
            signum: Some(self.signum),
            pid_type: Some(self.pid_type),
            pid: Some(self.pid),
        }
    }

    /// From a `fown_entry` (absent: no owner).
    pub fn from_entry(e: Option<&pb::FownEntry>) -> Fown {
        let Some(e) = e else { return Fown::default() };
        Fown {
            uid: e.uid.unwrap_or_default(),
            euid: e.euid.unwrap_or_default(),
            signum: e.signum.unwrap_or_default(),
            pid_type: e.pid_type.unwrap_or_default(),
            pid: e.pid.unwrap_or_default(),
        }
    }
}

/// Where kinds put what they write: `files.img` entries, records of side
/// images with id 0 (`pipes-data.img`, `tty-info.img`, ...: created on
/// first use, in push order) and images of their own (`ghost-file-N.img`).
pub struct FilesSink<'a> {
    /// The images directory.
    pub dir: &'a ImageDir,
    entries: Vec<pb::FileEntry>,
    side: BTreeMap<&'static str, ImageWriter>,
    counters: BTreeMap<&'static str, u64>,
    keyed: BTreeMap<(&'static str, (u64, u64)), (u64, bool)>,
}

impl<'a> FilesSink<'a> {
    /// An empty sink writing into `dir`.
    pub fn new(dir: &'a ImageDir) -> Self {
        FilesSink { dir, entries: Vec::new(), side: BTreeMap::new(), counters: BTreeMap::new(), keyed: BTreeMap::new() }
    }

    /// Adds a `files.img` entry.
    pub fn push(&mut self, e: pb::FileEntry) {
        self.entries.push(e);
    }

    /// The writer of side image `kind` (id 0), created on first use.
    pub fn side(&mut self, kind: ImageKind) -> Result<&mut ImageWriter, ImageError> {
        use std::collections::btree_map::Entry;
        match self.side.entry(kind.stem()) {
            Entry::Occupied(o) => Ok(o.into_mut()),
            Entry::Vacant(v) => Ok(v.insert(self.dir.create_image(kind, 0)?)),
        }
    }

    /// The next id of images of `kind` (1, 2, ...), e.g. ghost files.
    pub fn next_image_id(&mut self, kind: ImageKind) -> u64 {
        let n = self.counters.entry(kind.stem()).or_insert(0);
        *n += 1;
        *n
    }

    /// The id of the image of `kind` for object `key` (a ghost file by its
    /// inode's (dev, ino)), which several descriptions may share, and
    /// whether the caller, who `has_data`, writes it now (the first one
    /// with the data does).
    pub fn image_id_of(&mut self, kind: ImageKind, key: (u64, u64), has_data: bool) -> (u64, bool) {
        let id = match self.keyed.get(&(kind.stem(), key)) {
            Some(&(id, _)) => id,
            None => self.next_image_id(kind),
        };
        let written = self.keyed.get(&(kind.stem(), key)).is_some_and(|e| e.1);
        self.keyed.insert((kind.stem(), key), (id, written || has_data));
        (id, has_data && !written)
    }

    /// Writes `files.img` and finishes every side image.
    pub fn finish(self) -> Result<(), ImageError> {
        self.dir.write_all(ImageKind::Files, 0, &self.entries)?;
        self.side.into_values().try_for_each(ImageWriter::finish)
    }
}

/// What needs every task of the tree collected: the peers of unix sockets
/// (both ends in the tree, pending connections, outside peers; file ids
/// for outside peers from `next_id`), then pty pairs (their sessions and
/// queues: [`tty::finish_pairs`]).
pub fn finish_tree(procs: &mut [crate::dump::model::ProcessDump], seen: &mut SeenFiles, next_id: &mut u32) -> Result<(), FileDumpError> {
    let mut unix: Vec<&mut unix::UnixSocketDump> = procs
        .iter_mut()
        .flat_map(|p| p.files.files.iter_mut())
        .filter_map(|f| match &mut f.kind {
            FileKind::UnixSk(d) => Some(d),
            _ => None,
        })
        .collect();
    if !unix.is_empty() {
        unix::resolve_peers(&mut unix, &seen.unix, next_id)?;
    }
    drop(unix);
    // Last: it reads the ptys' queues (put back if the dump fails later).
    tty::finish_pairs(procs, seen)
}

/// Writes one description's entries (with its kind).
pub fn write_desc(f: &FileDesc, sink: &mut FilesSink<'_>) -> Result<(), ImageError> {
    FileKind::write(f, sink)
}

// ------------------------------------------------------------- restore side

/// What restore was asked to do with the files.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// `--shell-job`: terminals are taken over from criu-rs's own.
    pub shell_job: bool,
    /// `--inherit-fd fd[N]:KEY`: the file CRIU names KEY (`tty[RDEV:DEV]`)
    /// is criu-rs's fd N.
    pub inherit_fds: Vec<(String, RawFd)>,
    /// `--tcp-established`: established TCP connections are rebuilt.
    pub tcp_established: bool,
    /// `--tcp-close`: TCP connections come back closed.
    pub tcp_close: bool,
    /// `--ext-unix-sk`: unix sockets whose peer was outside the dumped tree
    /// are connected to that peer's name again.
    pub ext_unix_sk: bool,
    /// `--file-locks`: the locks in the images are taken again (else
    /// images holding locks are refused).
    pub file_locks: bool,
}

impl LoadOptions {
    /// The fd `--inherit-fd` gives for `key`.
    pub fn inherit_fd(&self, key: &str) -> Option<RawFd> {
        self.inherit_fds.iter().find(|(k, _)| k == key).map(|&(_, fd)| fd)
    }
}

/// A side image a kind reads once per load (`pipes-data.img`, the ghost
/// remaps, `tty-info.img`, ...), through [`LoadCtx::side`].
pub trait SideImage: Any + Sized {
    /// Reads it (absent image: empty).
    fn read(images: &ImageDir) -> RestoreResult<Self>;
}

/// Side images read so far, by type.
#[derive(Default)]
pub struct SideImages {
    cache: RefCell<Vec<(TypeId, Rc<dyn Any>)>>,
}

/// What a kind's `load` may use besides its entry.
pub struct LoadCtx<'a> {
    /// The images.
    pub images: &'a ImageDir,
    /// Every `files.img` entry by id (entries naming others, e.g. a FIFO's
    /// path entry).
    pub files: &'a BTreeMap<u32, pb::FileEntry>,
    /// The first fd referring to the description (for messages).
    pub fd: i32,
    /// What restore was asked for.
    pub opts: &'a LoadOptions,
    side: &'a SideImages,
}

impl<'a> LoadCtx<'a> {
    /// A context over `images` and its `files`.
    pub fn new(images: &'a ImageDir, files: &'a BTreeMap<u32, pb::FileEntry>, side: &'a SideImages, opts: &'a LoadOptions) -> Self {
        LoadCtx { images, files, fd: -1, opts, side }
    }

    /// The same context for fd `fd`.
    pub fn for_fd(&self, fd: i32) -> LoadCtx<'a> {
        LoadCtx { fd, ..*self }
    }

    /// Side image `T`, read on first use.
    pub fn side<T: SideImage>(&self) -> RestoreResult<Rc<T>> {
        let key = TypeId::of::<T>();
        if let Some((_, v)) = self.side.cache.borrow().iter().find(|(k, _)| *k == key) {
            return Ok(Rc::clone(v).downcast::<T>().expect("keyed by type"));
        }
        let v = Rc::new(T::read(self.images)?);
        self.side.cache.borrow_mut().push((key, v.clone()));
        Ok(v)
    }

    /// Path of `files.img`.
    pub fn files_path(&self) -> PathBuf {
        self.images.image_path(ImageKind::Files, 0)
    }

    /// A problem with `files.img`.
    pub fn bad(&self, problem: impl Into<String>) -> RestoreError {
        RestoreError::bad(self.files_path(), format!("fd {}: {}", self.fd, problem.into()))
    }

    /// Something in `files.img` this restorer does not handle.
    pub fn unsupported(&self, what: impl Into<String>) -> RestoreError {
        RestoreError::Unsupported { file: self.files_path(), what: format!("fd {}: {}", self.fd, what.into()) }
    }

    /// The `reg_file_entry` of file `id` (a path another entry names).
    pub fn reg_entry(&self, id: u32, needed_by: &str) -> RestoreResult<&'a pb::RegFileEntry> {
        self.files
            .get(&id)
            .and_then(|f| f.reg.as_ref())
            .ok_or_else(|| self.bad(format!("no regular file with id {id:#x} (needed by {needed_by})")))
    }
}

/// What a kind's `open` may use besides its plan.
pub struct OpenCtx<'a> {
    /// Lowest fd number above every restored fd table.
    pub floor: RawFd,
    /// Descriptions already open, by file id.
    pub opened: &'a BTreeMap<u32, OwnedFd>,
    /// The memfd objects of the tree by memfd inode id (made with the
    /// shared memory, [`crate::restore::shared`]): a memfd description is
    /// a reopening of its inode's object, the one its areas map too.
    pub memfds: &'a BTreeMap<u64, BorrowedFd<'a>>,
    /// What kinds leave for later steps of the restore.
    pub later: &'a RefCell<Later>,
}

/// What kinds leave for later: criu-rs does it once every description is
/// open ([`Later::after_open`], in [`fdtable::open_descs`]), just before
/// the restored tree runs ([`Later::before_run`]) and once it runs
/// ([`Later::after_run`]).
#[derive(Debug, Default)]
pub struct Later {
    /// Sockets: `SO_REUSEADDR` once all are bound, TCP connections out of
    /// repair mode, the network lock lifted.
    pub sockets: crate::net::restore_state::RestoredSockets,
    /// pty pairs: queues, termios, exclusive and lock modes.
    pub ttys: Vec<tty::PairFinish>,
    /// Ghost files the tasks open by path, removed before the tree runs.
    pub ghosts: reg::LinkedGhosts,
}

impl Later {
    /// Every description is open.
    pub fn after_open(&mut self) -> RestoreResult<()> {
        self.ttys.drain(..).try_for_each(tty::PairFinish::finish)?;
        self.sockets.all_open().map_err(|e| RestoreError::sys(format!("after opening every file: {}", e.call), e.errno))
    }

    /// Every task is restored and none runs yet.
    pub fn before_run(&mut self) -> RestoreResult<()> {
        self.ghosts.remove_all()?;
        self.sockets.go_live().map_err(|e| RestoreError::Prepare(e.to_string()))
    }

    /// The tree runs (problems are logged only).
    pub fn after_run(&mut self) {
        self.sockets.unlock();
    }
}
