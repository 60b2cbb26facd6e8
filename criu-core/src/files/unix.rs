//! Unix sockets: what a dump reads about each one, the images it writes
//! (CRIU's `FD_TYPES__UNIXSK` entries in `files.img`, queued messages in
//! `sk-queues.img`) and how restore builds them again.
//!
//! # Peers
//! A socket's peer is dumped with it: both ends of a pair are in the tree,
//! or the peer is outside it and the dump is refused by name, unless
//! `--ext-unix-sk` says to reconnect it at restore (datagram sockets whose
//! peer has a name, such as a `/dev/log` client), in which case the outside
//! peer is written as an entry of its own flagged `USK_EXTERN`, as CRIU
//! does. A listener's pending connections (clients that connected and
//! were not accepted yet: CRIU's "icons") are dumped when the client is in
//! the tree and wrote nothing yet; the client then names the listener as
//! its peer.
//!
//! # Queues
//! Every message queued for a socket is read with `MSG_PEEK` at a moving
//! `SO_PEEK_OFF` (set back afterwards), so a failed dump loses nothing;
//! datagrams and seqpackets keep their boundaries (one `sk_packet_entry`
//! per message), a stream queue is written in large chunks. `id_for` names
//! the socket whose receive queue holds the message. Descriptions in
//! flight with a message (`SCM_RIGHTS`) are received (peeked) by criu-rs
//! and collected as its own descriptors (a task may hold them too: `kcmp`
//! finds them), written as `files.img` entries like any other and named
//! by id in the message's `scm_entry`, as CRIU does; unix sockets in
//! flight are refused. A datagram's sender address is
//! kept in the field CRIU reserves for it (`sk_packet_entry.addr`, 3;
//! CRIU skips it); credentials are not kept.
//!
//! # Restore
//! criu-rs creates every socket itself before the tasks are forked (see
//! [`UnixWorld::open_all`]): listeners are bound and listening first; a connection
//! whose accepted end carries a listener's name is made again with
//! `connect` + `accept` on the restored listener (so both ends keep their
//! addresses), other connected pairs with `socketpair`; pending clients
//! connect last, so the listener's queue holds exactly them. Queues are
//! refilled by sending from the peer, or from a temporary socket when
//! there is none; datagrams with a sender address are sent again from the
//! socket of the tree bound to it, or from a temporary socket bound to it
//! (the sender had closed), so `recvfrom` names the same sender.
//! Descriptions in flight are opened first (loaded with the task holding
//! the socket: [`FdKind::files_needed`]) and sent again with their
//! messages. Then options, shutdown state and file flags are set.

use super::fdtable::set_status_flags;
use super::{CollectCtx, FdKind, FdProbe, FileDesc, FileDumpError, FilesSink, Fown, LoadCtx, OpenCtx, Opened, SideImage};
use crate::images::{pb, ImageDir, ImageError, ImageKind};
use crate::net::diag::{DiagError, DiagSocket};
use crate::net::sockopts::{SockOptError, SockOpts};
use crate::net::unix_diag::{self, display_name, state, UnixSockInfo};
use crate::restore::error::{RestoreError, Result as RestoreResult, SysContext};
use rustix::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use rustix::io::Errno;
use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType};
use std::collections::{BTreeMap, HashMap};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;

/// The kind.
pub struct UnixSk;

/// How to recreate one unix socket: its id, with every unix socket of the
/// dump (they are made together, on the first `open`).
#[derive(Debug, Clone, PartialEq)]
pub struct UnixSkPlan {
    /// File id.
    pub id: u32,
    /// Every unix socket of the images.
    pub world: Rc<UnixWorld>,
    /// `--ext-unix-sk` given to restore.
    pub ext_unix_sk: bool,
    /// `--inherit-fd fd[N]:socket:[INO]`: sockets of the images (by dumped
    /// inode) that criu-rs's descriptor N stands for, as CRIU's `USK_INHERIT`.
    pub inherited: BTreeMap<u32, RawFd>,
}

/// The sockets made by the first `open`, handed out by file id.
#[derive(Default)]
pub struct UnixOpened {
    made: Option<BTreeMap<u32, OwnedFd>>,
}

impl SideImage for UnixWorld {
    fn read(images: &ImageDir) -> RestoreResult<Self> {
        let files = crate::files::load::load_files(images)?;
        UnixWorld::load(images, files.values())
    }
}

impl FdKind for UnixSk {
    const FD_TYPE: pb::FdTypes = pb::FdTypes::Unixsk;
    type Dumped = UnixSocketDump;
    type Plan = UnixSkPlan;
    type OpenState = UnixOpened;

    fn claims(p: &FdProbe) -> bool {
        p.socket_proto().is_some_and(|n| n.starts_with("UNIX"))
    }

    fn collect(p: &FdProbe, cx: &mut CollectCtx<'_>) -> Result<UnixSocketDump, FileDumpError> {
        let (mut d, in_flight) = cx.seen.unix.collect(p.pid, p.fd, std::os::unix::fs::MetadataExt::ino(&p.md), p.flags())?;
        for (k, fds) in in_flight {
            for fd in fds {
                if rustix::fs::fstat(&fd).is_ok_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFSOCK)
                    && crate::net::sock_proto(std::path::Path::new(&format!("/proc/self/fd/{}", fd.as_raw_fd()))).is_some_and(|n| n.starts_with("UNIX"))
                {
                    return Err(UnixDumpError::ScmRights { sock: d.describe(), what: "a unix socket".into() }.into());
                }
                let id = super::dump::collect_in_flight(fd, cx)?;
                d.queue[k].rights.push(id);
            }
        }
        Ok(d)
    }

    fn write(f: &FileDesc, d: &UnixSocketDump, sink: &mut FilesSink<'_>) -> Result<(), ImageError> {
        sink.push(file_entry(f.id, d, f.fown));
        if let Some(e) = &d.external {
            sink.push(external_entry(e));
        }
        for (e, data) in queue_entries(f.id, d) {
            sink.side(ImageKind::SkQueues)?.write_entry_with_payload(&e, data)?;
        }
        Ok(())
    }

    fn load(e: &pb::FileEntry, cx: &LoadCtx<'_>) -> RestoreResult<UnixSkPlan> {
        let world = cx.side::<UnixWorld>()?;
        let inherited = world.sockets.iter().filter_map(|s| Some((s.ino, cx.opts.inherit_fd(&format!("socket:[{}]", s.ino))?))).collect();
        Ok(UnixSkPlan { id: e.id.unwrap_or_default(), world, ext_unix_sk: cx.opts.ext_unix_sk, inherited })
    }

    fn open(p: &UnixSkPlan, st: &mut UnixOpened, cx: &OpenCtx<'_>) -> RestoreResult<Opened> {
        if st.made.is_none() {
            // Descriptions in flight are sent again with the queues.
            let mut passed = Passed::default();
            for id in p.world.in_flight() {
                let Some(fd) = cx.opened.get(&id) else { return Ok(Opened::NotYet) };
                passed.0.insert(id, fd.as_raw_fd());
            }
            st.made = Some(p.world.open_with(p.ext_unix_sk, &p.inherited, &passed)?);
        }
        let made = st.made.as_mut().expect("made above");
        made.remove(&p.id).map(Opened::Fd).ok_or_else(|| RestoreError::Prepare(format!("unix socket {:#x} opened twice", p.id)))
    }

    fn name(p: &UnixSkPlan) -> String {
        p.world.sockets.iter().find(|s| s.id == p.id).map_or(format!("unix socket {:#x}", p.id), |s| s.describe())
    }

    fn files_needed(p: &UnixSkPlan) -> Vec<u32> {
        p.world.sockets.iter().find(|s| s.id == p.id).map_or(Vec::new(), |s| s.queue.iter().flat_map(|q| q.rights.iter().copied()).collect())
    }
}

/// Descriptions to put in flight again (`SCM_RIGHTS`), by file id:
/// criu-rs's descriptors, open while the sockets are made.
#[derive(Debug, Default)]
pub struct Passed(BTreeMap<u32, RawFd>);

impl Passed {
    /// The descriptors to send with `q`.
    fn of(&self, q: &Queued) -> RestoreResult<Vec<BorrowedFd<'_>>> {
        q.rights
            .iter()
            .map(|id| {
                let fd = self.0.get(id).ok_or_else(|| RestoreError::Prepare(format!("file {id:#x} in flight in a unix socket's queue is not open")))?;
                // SAFETY: the caller of `open_with` keeps these descriptors
                // open while the sockets are made.
                Ok(unsafe { BorrowedFd::borrow_raw(*fd) })
            })
            .collect()
    }
}


/// `uflags`: the entry describes a socket outside the tree (`USK_EXTERN`).
pub const USK_EXTERN: u32 = 1;
/// `uflags`: the socket was connected to CRIU's service socket.
pub const USK_SERVICE: u32 = 2;
/// `uflags`: a plugin dumped the socket.
pub const USK_CALLBACK: u32 = 4;
/// `uflags`: the socket comes from `--inherit-fd`.
pub const USK_INHERIT: u32 = 8;

/// `SIOCUNIXFILE` (`SIOCPROTOPRIVATE + 0`): an `O_PATH` descriptor of a
/// bound socket's file.
const SIOCUNIXFILE: u32 = 0x89e0;
/// One stream chunk read at a time.
const STREAM_CHUNK: usize = 1 << 20;
/// Room for control messages on a peeked message.
const CMSG_ROOM: usize = 4096;

/// `SOCK_STREAM` as the kernel numbers it.
const STREAM: u32 = libc::SOCK_STREAM as u32;
/// `SOCK_DGRAM`.
const DGRAM: u32 = libc::SOCK_DGRAM as u32;
/// `SOCK_SEQPACKET`.
const SEQPACKET: u32 = libc::SOCK_SEQPACKET as u32;

/// The type's name for messages.
pub fn type_name(ty: u32) -> &'static str {
    match ty {
        STREAM => "stream",
        DGRAM => "datagram",
        SEQPACKET => "seqpacket",
        _ => "unknown-type",
    }
}

/// Error type for dumping unix sockets ([`UnixDumpCtx::collect`] and
/// [`resolve_peers`]). Each names the socket (`fd N of pid P: unix stream
/// socket NAME`).
#[derive(Debug, thiserror::Error)]
pub enum UnixDumpError {
    /// Asking the kernel about the socket failed.
    #[error("{sock}: sock_diag: {source}")]
    Diag {
        /// The socket.
        sock: String,
        /// Why.
        source: DiagError,
    },
    /// The socket is not in the kernel's list (it went away?).
    #[error("{sock}: not found by sock_diag in the task's network namespace")]
    NotFound {
        /// The socket.
        sock: String,
    },
    /// A socket type or state CRIU's format cannot describe.
    #[error("{sock}: {what} is not supported (only stream, datagram and seqpacket sockets that are unconnected, listening or connected)")]
    Unsupported {
        /// The socket.
        sock: String,
        /// Type or state.
        what: String,
    },
    /// A system call on the socket failed.
    #[error("{sock}: {call}: {errno}")]
    Sys {
        /// The socket.
        sock: String,
        /// The call, with arguments.
        call: String,
        /// What the kernel said.
        errno: Errno,
    },
    /// Reading or setting back an option failed.
    #[error("{sock}: {source}")]
    Opt {
        /// The socket.
        sock: String,
        /// Which option.
        source: SockOptError,
    },
    /// A queued message carries descriptors criu-rs cannot keep.
    #[error("{sock}: a queued message carries {what} (SCM_RIGHTS in flight), which criu-rs cannot dump")]
    ScmRights {
        /// The socket.
        sock: String,
        /// What is in flight.
        what: String,
    },
    /// The peer is outside the tree and may not be reconnected.
    #[error("{sock} is connected to {peer}, which is outside the dumped tree; {hint}")]
    ExternalPeer {
        /// The socket.
        sock: String,
        /// The peer.
        peer: String,
        /// What could make it work.
        hint: &'static str,
    },
    /// A connection waits on a listener and cannot be dumped.
    #[error("{sock}: {what}")]
    PendingConnection {
        /// The socket.
        sock: String,
        /// Why.
        what: String,
    },
    /// A connected socket whose peer is gone and which is not shut down.
    #[error("{sock} is a connection whose peer is gone but which is not shut down (a dangling connection)")]
    Dangling {
        /// The socket.
        sock: String,
    },
}

/// The errno of the last failed libc call.
fn last_errno() -> Errno {
    Errno::from_raw_os_error(std::io::Error::last_os_error().raw_os_error().unwrap_or(libc::EINVAL))
}

// ---------------------------------------------------------------- dump --

/// One message (or stream chunk) of a receive queue.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Queued {
    /// Its bytes.
    pub data: Vec<u8>,
    /// A datagram's sender address (`sun_path` bytes as the kernel reports
    /// them), if the sender was bound.
    pub sender: Option<Vec<u8>>,
    /// Descriptions in flight with it (`SCM_RIGHTS`), by file id, in the
    /// order they were sent.
    pub rights: Vec<u32>,
}

/// One unix socket as dumped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnixSocketDump {
    /// What sock_diag said (the peer fixed up for pending connections).
    pub info: UnixSockInfo,
    /// File status flags (`O_RDWR`, `O_NONBLOCK`, ...).
    pub flags: u32,
    /// `SOL_SOCKET` options.
    pub opts: SockOpts,
    /// A path name's file: mode, uid, gid.
    pub perms: Option<(u32, u32, u32)>,
    /// For a relative path name: the directory it was bound in.
    pub name_dir: Option<String>,
    /// The path name's file was removed (or replaced) since the bind.
    pub deleted: bool,
    /// Network namespace (inode of `/proc/PID/ns/net`).
    pub netns: u32,
    /// Messages queued for it, oldest first (stream data in chunks).
    pub queue: Vec<Queued>,
    /// Where it was found, for messages (`fd N of pid P`).
    pub place: String,
    /// The outside peer it is connected to, when this socket is the first
    /// of the tree to name it (written right after it).
    pub external: Option<ExternalPeer>,
}

impl UnixSocketDump {
    /// The socket for messages: `fd 5 of pid 42: unix stream socket /tmp/x`.
    pub fn describe(&self) -> String {
        format!("{}: unix {} socket {}", self.place, type_name(self.info.ty.into()), self.info.display_name())
    }
}

/// An outside peer written as its own entry (`--ext-unix-sk`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalPeer {
    /// Its file id (not referred to by any descriptor).
    pub id: u32,
    /// Its inode (what the tree's sockets name as `peer`).
    pub ino: u32,
    /// Its name (a datagram peer must have one).
    pub name: Vec<u8>,
}

/// What `--ext-unix-sk` allows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExtUnixSk {
    /// Bare `--ext-unix-sk`: datagram sockets connected to a named outside
    /// peer are dumped and connected to that name again at restore.
    pub all: bool,
    /// `--ext-unix-sk=INO,...` / `--external unix[INO]`: these sockets of
    /// the tree may have an outside peer whatever their type.
    pub inodes: Vec<u32>,
}

impl ExtUnixSk {
    /// From the dump's options: `--ext-unix-sk[=INODE,...]` (`Some(empty)`:
    /// all; `None`: not given) and the `unix[INODE]` items of `--external`.
    pub fn from_options(ext_unix_sk: Option<&[u64]>, external: &[String]) -> ExtUnixSk {
        let mut inodes: Vec<u32> = ext_unix_sk.unwrap_or_default().iter().map(|&i| i as u32).collect();
        inodes.extend(external.iter().filter_map(|e| external_unix_inode(e)));
        ExtUnixSk { all: ext_unix_sk.is_some_and(|v| v.is_empty()), inodes }
    }
}

/// The inode of a `--external unix[INODE]` item (CRIU's spelling for a
/// unix socket of the tree whose peer is outside it).
pub fn external_unix_inode(item: &str) -> Option<u32> {
    item.strip_prefix("unix[")?.strip_suffix(']')?.parse().ok()
}

/// Per-dump state for unix sockets: the kernel's view of every network
/// namespace met so far.
#[derive(Debug, Default)]
pub struct UnixDumpCtx {
    /// sock_diag socket and the namespace's unix sockets, by netns inode.
    netns: HashMap<u64, (DiagSocket, HashMap<u32, UnixSockInfo>)>,
    /// pidfds of the tasks met so far.
    pidfds: HashMap<i32, OwnedFd>,
    /// What `--ext-unix-sk` allows.
    pub ext: ExtUnixSk,
}

impl UnixDumpCtx {
    /// The unix sockets of the network namespace of `pid` (asked once per
    /// namespace and dump).
    fn sockets_of(&mut self, pid: i32, sock: &dyn Fn() -> String) -> Result<(u64, &HashMap<u32, UnixSockInfo>), UnixDumpError> {
        let ns = crate::net::netns::netns_ino(pid).map_err(|errno| UnixDumpError::Sys { sock: sock(), call: format!("stat(/proc/{pid}/ns/net)"), errno })?;
        if !self.netns.contains_key(&ns) {
            let diag_err = |source| UnixDumpError::Diag { sock: sock(), source };
            let mut d = DiagSocket::open_for(pid).map_err(diag_err)?;
            let all = unix_diag::unix_sockets(&mut d).map_err(diag_err)?;
            self.netns.insert(ns, (d, all));
        }
        Ok((ns, &self.netns[&ns].1))
    }

    /// Everything known about socket `ino` in the namespace `ns` (for
    /// outside peers).
    pub fn lookup(&self, ns: u64, ino: u32) -> Option<&UnixSockInfo> {
        self.netns.get(&ns).and_then(|(_, all)| all.get(&ino))
    }

    /// A copy of `pid`'s descriptor `fd` in this process.
    fn take_fd(&mut self, pid: i32, fd: i32) -> Result<OwnedFd, (String, Errno)> {
        if !self.pidfds.contains_key(&pid) {
            let p = rustix::process::Pid::from_raw(pid).ok_or_else(|| (format!("pid {pid}"), Errno::SRCH))?;
            let pidfd = rustix::process::pidfd_open(p, rustix::process::PidfdFlags::empty())
                .map_err(|e| (format!("pidfd_open({pid})"), e))?;
            self.pidfds.insert(pid, pidfd);
        }
        rustix::process::pidfd_getfd(&self.pidfds[&pid], fd, rustix::process::PidfdGetfdFlags::empty())
            .map_err(|e| (format!("pidfd_getfd({pid}, {fd})"), e))
    }

    /// Collects the socket behind `pid`'s `fd` (inode `ino`, status
    /// `flags`): its kernel state, options, owner, name and queue (peeked,
    /// left in place). Descriptors in flight in the queue come back as
    /// criu-rs's own, by message index, for the caller to collect (the
    /// messages' `rights` are left empty).
    pub fn collect(&mut self, pid: i32, fd: i32, ino: u64, flags: u32) -> Result<(UnixSocketDump, InFlight), UnixDumpError> {
        let place = format!("fd {fd} of pid {pid}");
        let generic = format!("{place}: unix socket socket:[{ino}]");
        let (ns, all) = self.sockets_of(pid, &|| generic.clone())?;
        let Some(info) = all.get(&(ino as u32)).cloned() else {
            return Err(UnixDumpError::NotFound { sock: generic });
        };
        let mut d = UnixSocketDump {
            info,
            flags,
            opts: SockOpts::default(),
            perms: None,
            name_dir: None,
            deleted: false,
            netns: ns as u32,
            queue: Vec::new(),
            place,
            external: None,
        };
        let sock = d.describe();
        let ty = u32::from(d.info.ty);
        if ![STREAM, DGRAM, SEQPACKET].contains(&ty) {
            return Err(UnixDumpError::Unsupported { sock, what: format!("socket type {ty}") });
        }
        if ![state::ESTABLISHED, state::CLOSE, state::LISTEN].contains(&d.info.state) {
            return Err(UnixDumpError::Unsupported { sock, what: format!("state {}", d.info.state) });
        }
        let sys = |(call, errno): (String, Errno)| UnixDumpError::Sys { sock: sock.clone(), call, errno };
        let own = self.take_fd(pid, fd).map_err(sys)?;
        d.opts = SockOpts::read(own.as_fd(), libc::AF_UNIX).map_err(|source| UnixDumpError::Opt { sock: sock.clone(), source })?;
        if d.info.has_path() {
            let (perms, dir, deleted) = path_name(own.as_fd(), d.info.name.as_deref().unwrap_or_default()).map_err(sys)?;
            d.perms = Some(perms);
            d.name_dir = dir;
            d.deleted = deleted;
        }
        // Only a connected stream or seqpacket socket can be read (an
        // unconnected datagram socket can hold a queue).
        let mut in_flight = Vec::new();
        if ty == DGRAM || d.info.state == state::ESTABLISHED {
            let queue = peek_queue(own.as_fd(), ty).map_err(|e| match e {
                PeekError::Truncated => UnixDumpError::ScmRights { sock: sock.clone(), what: "more descriptors than one read can take".into() },
                PeekError::Sys(call, errno) => UnixDumpError::Sys { sock: sock.clone(), call, errno },
            })?;
            for (k, (q, fds)) in queue.into_iter().enumerate() {
                d.queue.push(q);
                if !fds.is_empty() {
                    in_flight.push((k, fds));
                }
            }
        }
        Ok((d, in_flight))
    }
}

/// A path name's file through `SIOCUNIXFILE`: (mode, uid, gid), the
/// directory of a relative name, and whether the file was removed.
fn path_name(sock: BorrowedFd<'_>, name: &[u8]) -> Result<((u32, u32, u32), Option<String>, bool), (String, Errno)> {
    // SAFETY: SIOCUNIXFILE takes no argument and returns a new descriptor.
    let raw = unsafe { libc::ioctl(sock.as_raw_fd(), SIOCUNIXFILE as _) };
    if raw < 0 {
        return Err(("ioctl(SIOCUNIXFILE)".into(), last_errno()));
    }
    // SAFETY: `raw` is a descriptor the ioctl just opened for us.
    let file = unsafe { OwnedFd::from_raw_fd(raw) };
    let st = rustix::fs::fstat(&file).map_err(|e| ("fstat(socket file)".to_string(), e))?;
    let link = rustix::fs::readlink(format!("/proc/self/fd/{raw}").as_str(), Vec::new())
        .map_err(|e| ("readlink(socket file)".to_string(), e))?;
    let link = link.to_string_lossy().into_owned();
    let (path, deleted) = match link.strip_suffix(" (deleted)") {
        Some(p) => (p.to_owned(), true),
        None => (link, false),
    };
    let name = name.strip_suffix(&[0]).unwrap_or(name);
    let dir = if name.first() == Some(&b'/') {
        None
    } else {
        // A relative name: the file's full path ends with it.
        let rel = String::from_utf8_lossy(name).into_owned();
        let dir = path
            .strip_suffix(rel.as_str())
            .map(|d| d.trim_end_matches('/').to_owned())
            .ok_or_else(|| (format!("relative name {rel:?} is not the end of {path:?}"), Errno::NOENT))?;
        Some(if dir.is_empty() { "/".into() } else { dir })
    };
    Ok(((st.st_mode, st.st_uid, st.st_gid), dir, deleted))
}

/// Descriptors in flight in a socket's queue, received (peeked) by
/// criu-rs: (index of the message in the queue, its descriptors).
pub type InFlight = Vec<(usize, Vec<OwnedFd>)>;

/// Why peeking a queue failed.
enum PeekError {
    /// A message's control data did not fit (`MSG_CTRUNC`).
    Truncated,
    /// A call failed.
    Sys(String, Errno),
}

/// Reads the receive queue of `sock` without consuming it: `MSG_PEEK` with
/// `SO_PEEK_OFF` moving over it, one element per datagram or packet, stream
/// data in chunks (the kernel ends a read at a message carrying
/// descriptors, so they stay with their bytes), each with the descriptors
/// in flight with it (peeking installs copies in criu-rs's table). The
/// peek offset is set back whatever happens.
fn peek_queue(sock: BorrowedFd<'_>, ty: u32) -> Result<Vec<(Queued, Vec<OwnedFd>)>, PeekError> {
    use crate::net::sockopts::{get_int, set_int};
    let orig = get_int(sock, libc::SO_PEEK_OFF).map_err(|e| PeekError::Sys("getsockopt(SO_PEEK_OFF)".into(), e))?;
    set_int(sock, libc::SO_PEEK_OFF, 0).map_err(|e| PeekError::Sys("setsockopt(SO_PEEK_OFF, 0)".into(), e))?;
    let result = peek_all(sock, ty);
    let back = set_int(sock, libc::SO_PEEK_OFF, orig).map_err(|e| PeekError::Sys(format!("setsockopt(SO_PEEK_OFF, {orig})"), e));
    let queue = result?;
    back?;
    Ok(queue)
}

fn peek_all(sock: BorrowedFd<'_>, ty: u32) -> Result<Vec<(Queued, Vec<OwnedFd>)>, PeekError> {
    let mut out = Vec::new();
    let mut off: i32 = 0;
    let mut buf = vec![0u8; if ty == STREAM { STREAM_CHUNK } else { 64 << 10 }];
    loop {
        let (n, full, rights, sender) = peek_one(sock, &mut buf, ty != STREAM, ty == DGRAM)?;
        if n == 0 {
            // End of a stream, or a zero-length message (which stops the
            // walk, as it does in CRIU).
            return Ok(out);
        }
        if full > n {
            // A datagram larger than the buffer: read it whole again.
            buf.resize(full, 0);
            crate::net::sockopts::set_int(sock, libc::SO_PEEK_OFF, off).map_err(|e| PeekError::Sys(format!("setsockopt(SO_PEEK_OFF, {off})"), e))?;
            continue;
        }
        out.push((Queued { data: buf[..n].to_vec(), sender, rights: Vec::new() }, rights));
        off = off.saturating_add(n as i32);
    }
}

/// One `recvmsg(MSG_PEEK | MSG_DONTWAIT)`: (bytes copied, message length
/// (with `MSG_TRUNC` for datagrams), the descriptors in flight with it
/// (`SCM_RIGHTS`, now also in criu-rs's table), the sender's name when
/// `name` is asked and the sender was bound). An empty queue reads as 0
/// bytes.
fn peek_one(sock: BorrowedFd<'_>, buf: &mut [u8], trunc: bool, name: bool) -> Result<(usize, usize, Vec<OwnedFd>, Option<Vec<u8>>), PeekError> {
    let mut cmsg = [0u64; CMSG_ROOM / 8];
    let mut iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
    // SAFETY: all-zero msghdr and sockaddr_un are valid; pointers set below.
    let mut mh: libc::msghdr = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let mut from: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    if name {
        mh.msg_name = (&mut from as *mut libc::sockaddr_un).cast();
        mh.msg_namelen = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
    }
    mh.msg_iov = &mut iov;
    mh.msg_iovlen = 1;
    mh.msg_control = cmsg.as_mut_ptr().cast();
    mh.msg_controllen = CMSG_ROOM;
    let flags = libc::MSG_PEEK | libc::MSG_DONTWAIT | libc::MSG_CMSG_CLOEXEC | if trunc { libc::MSG_TRUNC } else { 0 };
    // SAFETY: `mh` points at `iov` (into `buf`) and `cmsg`, both live and
    // of the lengths given.
    let r = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut mh, flags) };
    if r < 0 {
        let e = last_errno();
        if e == Errno::AGAIN {
            return Ok((0, 0, Vec::new(), None));
        }
        return Err(PeekError::Sys("recvmsg(MSG_PEEK)".into(), e));
    }
    let full = r as usize;
    let n = full.min(buf.len());
    let mut rights = Vec::new();
    // SAFETY: walking the control buffer the kernel filled, with the
    // libc CMSG_* accessors on the msghdr it describes.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&mh);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && ((*c).cmsg_type == libc::SCM_RIGHTS || (*c).cmsg_type == 0x04 /* SCM_PIDFD */) {
                // Peeking installed these descriptors in our table: ours now.
                let data = libc::CMSG_DATA(c) as *const libc::c_int;
                let count = ((*c).cmsg_len as usize - libc::CMSG_LEN(0) as usize) / std::mem::size_of::<libc::c_int>();
                for i in 0..count {
                    let fd = OwnedFd::from_raw_fd(data.add(i).read_unaligned());
                    if (*c).cmsg_type == libc::SCM_RIGHTS {
                        rights.push(fd);
                    }
                }
            }
            c = libc::CMSG_NXTHDR(&mh, c);
        }
    }
    if mh.msg_flags & libc::MSG_CTRUNC != 0 {
        return Err(PeekError::Truncated);
    }
    let path_off = std::mem::size_of::<libc::sa_family_t>();
    let sender = (name && mh.msg_namelen as usize > path_off).then(|| {
        let len = (mh.msg_namelen as usize - path_off).min(from.sun_path.len());
        from.sun_path[..len].iter().map(|&c| c as u8).collect()
    });
    Ok((n, full, rights, sender))
}

/// Checks the peers of every socket collected in the tree and fixes up
/// pending connections (their client names the listener as peer).
/// Sockets whose peer is outside the tree are refused unless `ctx.ext`
/// (`--ext-unix-sk`) allows them; each outside peer gets an id from `next_id` and is recorded in
/// the first socket naming it ([`UnixSocketDump::external`]); all of them
/// are returned.
pub fn resolve_peers(sockets: &mut [&mut UnixSocketDump], ctx: &UnixDumpCtx, next_id: &mut u32) -> Result<Vec<ExternalPeer>, UnixDumpError> {
    let ext = &ctx.ext;
    let index: HashMap<u32, usize> = sockets.iter().enumerate().map(|(i, s)| (s.info.ino, i)).collect();
    let listener_of: HashMap<u32, u32> = sockets
        .iter()
        .filter(|s| s.info.state == state::LISTEN)
        .flat_map(|s| s.info.icons.iter().map(move |&c| (c, s.info.ino)))
        .collect();
    let mut externals: Vec<ExternalPeer> = Vec::new();
    for i in 0..sockets.len() {
        let s = &sockets[i];
        let sock = s.describe();
        let ty = u32::from(s.info.ty);
        if s.info.state == state::LISTEN {
            for &icon in &s.info.icons {
                if icon == 0 {
                    return Err(UnixDumpError::PendingConnection {
                        sock,
                        what: "a connection from a socket already closed waits to be accepted".into(),
                    });
                }
                if !index.contains_key(&icon) {
                    let peer = ctx.lookup(s.netns.into(), icon).map_or(format!("socket:[{icon}]"), |p| p.display_name());
                    return Err(UnixDumpError::PendingConnection {
                        sock,
                        what: format!("a connection from {peer}, outside the dumped tree, waits to be accepted"),
                    });
                }
            }
            continue;
        }
        if s.info.peer == 0 {
            if s.info.state != state::ESTABLISHED || ty == DGRAM {
                continue;
            }
            match listener_of.get(&s.info.ino) {
                Some(&l) => {
                    if s.info.wqlen != 0 {
                        return Err(UnixDumpError::PendingConnection {
                            sock,
                            what: format!(
                                "its connection to {} is not accepted yet and holds {} bytes it sent, which cannot be read back",
                                sockets[index[&l]].info.display_name(),
                                s.info.wqlen
                            ),
                        });
                    }
                    sockets[i].info.peer = l;
                }
                None if s.info.shutdown == 3 => {} // the peer closed: EOF after the queue
                None => {
                    // Waiting on a listener outside the tree?
                    let outside = ctx
                        .netns
                        .get(&s.netns.into())
                        .and_then(|(_, all)| all.values().find(|l| l.icons.contains(&s.info.ino)))
                        .map(|l| l.display_name());
                    return Err(match outside {
                        Some(peer) => UnixDumpError::ExternalPeer { sock, peer, hint: "a stream connection to a process outside the tree cannot be dumped" },
                        None => UnixDumpError::Dangling { sock },
                    });
                }
            }
            continue;
        }
        let peer_ino = s.info.peer;
        if let Some(&p) = index.get(&peer_ino) {
            let peer = &sockets[p].info;
            if peer.peer != s.info.ino && peer.name.is_none() {
                return Err(UnixDumpError::ExternalPeer {
                    sock,
                    peer: format!("{} (unnamed, connected elsewhere)", peer.display_name()),
                    hint: "it cannot be reached again",
                });
            }
            continue;
        }
        // The peer is outside the tree.
        let outside = ctx.lookup(s.netns.into(), peer_ino).cloned();
        let peer = outside.as_ref().map_or(format!("socket:[{peer_ino}]"), |p| p.display_name());
        let listed = ext.inodes.contains(&s.info.ino);
        if !ext.all && !listed {
            return Err(UnixDumpError::ExternalPeer { sock, peer, hint: "pass --ext-unix-sk to connect it to that name again at restore" });
        }
        let name = outside.as_ref().and_then(|p| p.name.clone()).filter(|n| !n.is_empty());
        if !listed {
            if ty != DGRAM {
                return Err(UnixDumpError::ExternalPeer { sock, peer, hint: "half of a stream connection cannot be dumped (--ext-unix-sk reconnects datagram sockets)" });
            }
            if name.is_none() {
                return Err(UnixDumpError::ExternalPeer { sock, peer, hint: "the peer has no name to connect to again" });
            }
        }
        if !externals.iter().any(|e| e.ino == peer_ino) {
            let e = ExternalPeer { id: *next_id, ino: peer_ino, name: name.unwrap_or_default() };
            *next_id += 1;
            sockets[i].external = Some(e.clone());
            externals.push(e);
        }
    }
    Ok(externals)
}

/// The `files.img` entry of a dumped socket, description `id`, owned by
/// `fown` (read for every kind by the framework, restored at release).
pub fn file_entry(id: u32, s: &UnixSocketDump, fown: Fown) -> pb::FileEntry {
    let shutdown = match s.info.shutdown & 3 {
        0 => None,
        1 => Some(pb::SkShutdown::Read),
        2 => Some(pb::SkShutdown::Write),
        _ => Some(pb::SkShutdown::Both),
    };
    let usk = pb::UnixSkEntry {
        id: Some(id),
        ino: Some(s.info.ino),
        r#type: Some(s.info.ty.into()),
        state: Some(s.info.state.into()),
        flags: Some(s.flags),
        uflags: Some(0),
        // CRIU records the send queue length here for a non-listener.
        backlog: Some(s.info.wqlen),
        peer: Some(s.info.peer),
        fown: Some(fown.entry()),
        opts: Some(s.opts.to_entry()),
        name: Some(s.info.name.clone().unwrap_or_default()),
        shutdown: shutdown.map(|x| x as i32),
        file_perms: s.perms.map(|(mode, uid, gid)| pb::FilePermsEntry { mode: Some(mode), uid: Some(uid), gid: Some(gid) }),
        name_dir: s.name_dir.clone(),
        deleted: s.deleted.then_some(true),
        ns_id: Some(s.netns),
        mnt_id: None,
    };
    pb::FileEntry { r#type: Some(pb::FdTypes::Unixsk as i32), id: Some(id), usk: Some(usk), ..Default::default() }
}

/// The entry of an outside peer (`USK_EXTERN`): a datagram "listener" with
/// its name, as CRIU writes it.
pub fn external_entry(e: &ExternalPeer) -> pb::FileEntry {
    let usk = pb::UnixSkEntry {
        id: Some(e.id),
        ino: Some(e.ino),
        r#type: Some(DGRAM),
        state: Some(state::LISTEN.into()),
        flags: Some(0),
        uflags: Some(USK_EXTERN),
        backlog: Some(0),
        peer: Some(0),
        fown: Some(Fown::default().entry()),
        opts: Some(SockOpts::default().to_entry()),
        name: Some(e.name.clone()),
        ..Default::default()
    };
    pb::FileEntry { r#type: Some(pb::FdTypes::Unixsk as i32), id: Some(e.id), usk: Some(usk), ..Default::default() }
}

/// The `sk-queues.img` records of socket `id`: one `sk_packet_entry`
/// (with its payload) per queued element.
pub fn queue_entries(id: u32, s: &UnixSocketDump) -> impl Iterator<Item = (pb::SkPacketEntry, &[u8])> {
    s.queue.iter().map(move |m| {
        let scm = (!m.rights.is_empty()).then(|| pb::ScmEntry { r#type: Some(libc::SCM_RIGHTS as u32), rights: m.rights.clone() });
        let e = pb::SkPacketEntry { id_for: Some(id), length: Some(m.data.len() as u32), addr: m.sender.clone(), scm: scm.into_iter().collect() };
        (e, m.data.as_slice())
    })
}

// ------------------------------------------------------------- restore --


/// Longest `sun_path`.
const UNIX_PATH_MAX: usize = 108;
/// Most descriptors one message can carry (`SCM_MAX_FD`).
const SCM_MAX_FD: usize = 253;

/// One unix socket to recreate (an entry of `files.img` with the messages
/// `sk-queues.img` holds for it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnixPlan {
    /// File id.
    pub id: u32,
    /// Inode at dump time (what peers name).
    pub ino: u32,
    /// `SOCK_STREAM`, `SOCK_DGRAM` or `SOCK_SEQPACKET`.
    pub ty: u32,
    /// One of [`state`].
    pub state: u8,
    /// File status flags.
    pub flags: i32,
    /// `listen` backlog of a listener.
    pub backlog: u32,
    /// Inode of the peer (0: none).
    pub peer: u32,
    /// Options.
    pub opts: SockOpts,
    /// Bound name (`sun_path` bytes as the kernel keeps them), empty if none.
    pub name: Vec<u8>,
    /// Directory of a relative path name.
    pub name_dir: Option<PathBuf>,
    /// The path name's file had been removed.
    pub deleted: bool,
    /// The path name's file: mode, uid, gid.
    pub perms: Option<(u32, u32, u32)>,
    /// `RCV_SHUTDOWN` 1 | `SEND_SHUTDOWN` 2.
    pub shutdown: u8,
    /// An outside peer (`USK_EXTERN`): only its name is used.
    pub external: bool,
    /// Its receive queue, oldest first.
    pub queue: Vec<Queued>,
}

impl UnixPlan {
    /// The socket for messages.
    pub fn describe(&self) -> String {
        let name = (!self.name.is_empty()).then_some(self.name.as_slice());
        format!("unix {} socket {} (id {:#x})", type_name(self.ty), display_name(name, self.ino), self.id)
    }

    fn stream_like(&self) -> bool {
        self.ty != DGRAM
    }

    fn has_path(&self) -> bool {
        self.name.first().is_some_and(|&b| b != 0)
    }
}

/// Every unix socket of a dump: they are rebuilt together, since each
/// one's peer, listener or queue sender is another of them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnixWorld {
    /// In `files.img` order.
    pub sockets: Vec<UnixPlan>,
}

impl UnixWorld {
    /// Loads the `UNIXSK` entries of `files.img` and `sk-queues.img`,
    /// checking every field restore relies on: errors name the image and
    /// the entry.
    pub fn load<'a>(images: &ImageDir, files: impl IntoIterator<Item = &'a pb::FileEntry>) -> RestoreResult<UnixWorld> {
        let files_path = images.image_path(ImageKind::Files, 0);
        let mut sockets = Vec::new();
        for e in files {
            let Some(u) = e.usk.as_ref().filter(|_| e.r#type == Some(pb::FdTypes::Unixsk as i32)) else { continue };
            sockets.push(plan_of(u).map_err(|p| RestoreError::bad(&files_path, format!("unix socket {:#x}: {p}", u.id.unwrap_or(0))))?);
        }
        let mut by_ino: HashMap<u32, usize> = HashMap::new();
        for (i, s) in sockets.iter().enumerate() {
            if by_ino.insert(s.ino, i).is_some() {
                return Err(RestoreError::bad(&files_path, format!("{}: a second socket with inode {}", s.describe(), s.ino)));
            }
        }
        for s in &sockets {
            if s.peer != 0 && !by_ino.contains_key(&s.peer) {
                return Err(RestoreError::bad(&files_path, format!("{}: its peer socket:[{}] names no socket of the image", s.describe(), s.peer)));
            }
        }
        let mut world = UnixWorld { sockets };
        world.load_queues(images, &by_ino)?;
        Ok(world)
    }

    /// Attaches the messages of `sk-queues.img` (if any) to their sockets.
    fn load_queues(&mut self, images: &ImageDir, _by_ino: &HashMap<u32, usize>) -> RestoreResult<()> {
        if !images.exists(ImageKind::SkQueues, 0) {
            return Ok(());
        }
        let path = images.image_path(ImageKind::SkQueues, 0);
        let by_id: HashMap<u32, usize> = self.sockets.iter().enumerate().map(|(i, s)| (s.id, i)).collect();
        let mut r = images.open_image(ImageKind::SkQueues, 0)?;
        for k in 0.. {
            let Some((e, data)) = r
                .read_entry_with_payload::<pb::SkPacketEntry>()
                .map_err(|err| RestoreError::bad(&path, format!("entry {k}: {err}")))?
            else {
                break;
            };
            let id = e.id_for.unwrap_or(0);
            let bad = |p: String| RestoreError::bad(&path, format!("entry {k} (for {id:#x}): {p}"));
            let mut rights = Vec::new();
            for scm in &e.scm {
                let ty = scm.r#type.unwrap_or_default();
                if ty != libc::SCM_RIGHTS as u32 || !rights.is_empty() {
                    return Err(RestoreError::Unsupported { file: path.clone(), what: format!("entry {k} (for {id:#x}): control message of type {ty} (only one SCM_RIGHTS)") });
                }
                if scm.rights.is_empty() || scm.rights.len() > SCM_MAX_FD {
                    return Err(bad(format!("SCM_RIGHTS with {} descriptors", scm.rights.len())));
                }
                if let Some(u) = scm.rights.iter().find(|r| by_id.contains_key(r)) {
                    return Err(RestoreError::Unsupported { file: path.clone(), what: format!("entry {k} (for {id:#x}): unix socket {u:#x} in flight (SCM_RIGHTS)") });
                }
                rights = scm.rights.clone();
            }
            let Some(&i) = by_id.get(&id) else {
                return Err(bad("names no unix socket of files.img".into()));
            };
            let s = &mut self.sockets[i];
            if s.external || s.state == state::LISTEN {
                return Err(bad(format!("{} cannot have a receive queue", s.describe())));
            }
            if e.addr.as_ref().is_some_and(|a| a.len() > UNIX_PATH_MAX) {
                return Err(bad(format!("a sender address of {} bytes", e.addr.as_ref().map_or(0, Vec::len))));
            }
            s.queue.push(Queued { data, sender: e.addr.filter(|a| !a.is_empty()), rights });
        }
        Ok(())
    }

    /// Creates every socket (outside peers excepted) and returns them by
    /// file id. `ext_unix_sk`: connecting to outside peers is allowed.
    /// See the module documentation for the order.
    pub fn open_all(&self, ext_unix_sk: bool) -> RestoreResult<BTreeMap<u32, OwnedFd>> {
        self.open_with(ext_unix_sk, &BTreeMap::new(), &Passed::default())
    }

    /// The file ids in flight in every queue (`SCM_RIGHTS`).
    pub fn in_flight(&self) -> std::collections::BTreeSet<u32> {
        self.sockets.iter().flat_map(|s| s.queue.iter().flat_map(|q| q.rights.iter().copied())).collect()
    }

    /// [`UnixWorld::open_all`], the sockets of `inherited` (dumped inode →
    /// criu-rs's descriptor, `--inherit-fd fd[N]:socket:[INO]`) being
    /// copies of those descriptors, as they are: not bound, connected or
    /// refilled. A socket of the images connected to one of them is
    /// refused (it would have to be connected to what the caller gave).
    /// The descriptions in flight in the queues are sent from `passed`.
    pub fn open_with(&self, ext_unix_sk: bool, inherited: &BTreeMap<u32, RawFd>, passed: &Passed) -> RestoreResult<BTreeMap<u32, OwnedFd>> {
        if inherited.is_empty() {
            return self.build_all(ext_unix_sk, passed);
        }
        if let Some(s) = self.sockets.iter().find(|s| !inherited.contains_key(&s.ino) && inherited.contains_key(&s.peer)) {
            return Err(RestoreError::NotSupported(format!(
                "--inherit-fd fd[{}]:socket:[{}]: {} of the images is connected to it",
                inherited[&s.peer],
                s.peer,
                s.describe()
            )));
        }
        let rest = UnixWorld { sockets: self.sockets.iter().filter(|s| !inherited.contains_key(&s.ino)).cloned().collect() };
        let mut out = rest.build_all(ext_unix_sk, passed)?;
        for s in self.sockets.iter().filter(|s| !s.external) {
            let Some(&fd) = inherited.get(&s.ino) else { continue };
            // SAFETY: checked open when the restore started; criu-rs's
            // caller keeps it open until the restore ends.
            let fd = unsafe { rustix::fd::BorrowedFd::borrow_raw(fd) };
            let st = rustix::fs::fstat(fd).sys(|| format!("fstat of the inherited descriptor for {}", s.describe()))?;
            if st.st_mode & libc::S_IFMT != libc::S_IFSOCK {
                return Err(RestoreError::Prepare(format!("--inherit-fd for {}: the descriptor is not a socket", s.describe())));
            }
            let dup = rustix::io::fcntl_dupfd_cloexec(fd, 0).sys(|| format!("dup of the inherited descriptor for {}", s.describe()))?;
            out.insert(s.id, dup);
        }
        Ok(out)
    }

    /// Makes every socket of the world (see [`UnixWorld::open_all`]).
    fn build_all(&self, ext_unix_sk: bool, passed: &Passed) -> RestoreResult<BTreeMap<u32, OwnedFd>> {
        let mut b = Builder {
            world: self,
            passed,
            by_ino: self.sockets.iter().enumerate().map(|(i, s)| (s.ino, i)).collect(),
            made: HashMap::new(),
            targets: HashMap::new(),
            ghosts: Vec::new(),
            scratch: None,
            listeners: self
                .sockets
                .iter()
                .enumerate()
                .filter(|(_, l)| l.state == state::LISTEN && !l.external && !l.name.is_empty())
                .map(|(i, l)| (l.name.as_slice(), i))
                .collect(),
        };
        let result = b.build(ext_unix_sk);
        // Names bound by temporary senders are removed whatever happened.
        let unlinked = b.unlink_ghosts();
        if let Some(d) = b.scratch.take() {
            let _ = std::fs::remove_dir(d);
        }
        result?;
        unlinked?;
        let mut out = BTreeMap::new();
        for s in self.sockets.iter().filter(|s| !s.external) {
            let fd = b.made.remove(&s.ino).ok_or_else(|| RestoreError::Prepare(format!("{} was not created", s.describe())))?;
            out.insert(s.id, fd);
        }
        Ok(out)
    }
}

/// Checks one `unix_sk_entry` and turns it into a plan.
fn plan_of(u: &pb::UnixSkEntry) -> Result<UnixPlan, String> {
    let ty = u.r#type.unwrap_or(0);
    if ![STREAM, DGRAM, SEQPACKET].contains(&ty) {
        return Err(format!("socket type {ty} is not stream, datagram or seqpacket"));
    }
    let st = u.state.unwrap_or(0);
    let state = u8::try_from(st).ok().filter(|s| [state::ESTABLISHED, state::CLOSE, state::LISTEN].contains(s));
    let Some(state) = state else { return Err(format!("state {st} is not connected, unconnected or listening")) };
    let uflags = u.uflags.unwrap_or(0);
    let external = uflags & USK_EXTERN != 0;
    if uflags & (USK_SERVICE | USK_CALLBACK | USK_INHERIT) != 0 {
        return Err(format!("uflags {uflags:#x} (CRIU service, plugin or inherited sockets) are not supported"));
    }
    if state == state::LISTEN && ty == DGRAM && !external {
        return Err("a listening datagram socket".into());
    }
    let name = u.name.clone().unwrap_or_default();
    if name.len() > UNIX_PATH_MAX {
        return Err(format!("a name of {} bytes (at most {UNIX_PATH_MAX})", name.len()));
    }
    if name.first().is_some_and(|&b| b != 0) && name[..name.len() - 1].contains(&0) && name.last() == Some(&0) {
        return Err("a path name with a NUL inside".into());
    }
    let deleted = u.deleted.unwrap_or(false);
    if deleted && !name.first().is_some_and(|&b| b != 0) {
        return Err("removed (deleted) but without a path name".into());
    }
    let opts = SockOpts::from_entry(u.opts.as_ref().ok_or("no socket options")?)?;
    Ok(UnixPlan {
        id: u.id.unwrap_or(0),
        ino: u.ino.unwrap_or(0),
        ty,
        state,
        flags: u.flags.unwrap_or(0) as i32,
        backlog: u.backlog.unwrap_or(0),
        peer: u.peer.unwrap_or(0),
        opts,
        name,
        name_dir: u.name_dir.as_ref().filter(|d| !d.is_empty()).map(PathBuf::from),
        deleted,
        perms: u.file_perms.as_ref().map(|p| (p.mode.unwrap_or(0), p.uid.unwrap_or(0), p.gid.unwrap_or(0))),
        shutdown: u.shutdown.map_or(0, |s| (s & 3) as u8),
        external,
        queue: Vec::new(),
    })
}

/// Where to connect to reach a socket.
#[derive(Debug)]
enum Target {
    /// Its name (a relative path is looked up in the directory).
    Name(Vec<u8>, Option<PathBuf>),
    /// A removed path name: through an `O_PATH` descriptor of its file.
    Ghost(OwnedFd),
}

/// The state of one [`UnixWorld::open_all`].
struct Builder<'a> {
    world: &'a UnixWorld,
    /// Descriptions in flight, sent with their messages.
    passed: &'a Passed,
    by_ino: HashMap<u32, usize>,
    /// Sockets created so far, by inode.
    made: HashMap<u32, OwnedFd>,
    /// How to reach the bound ones.
    targets: HashMap<u32, Target>,
    /// Path names bound by temporary senders, removed at the end: (dir, name).
    ghosts: Vec<(Option<PathBuf>, Vec<u8>)>,
    /// Listeners of the tree by name.
    listeners: HashMap<&'a [u8], usize>,
    /// A directory of ours where relative sender names were bound.
    scratch: Option<PathBuf>,
}

impl<'a> Builder<'a> {
    fn sock(&self, ino: u32) -> &'a UnixPlan {
        let world: &'a UnixWorld = self.world;
        &world.sockets[self.by_ino[&ino]]
    }

    /// Whether `s` and its peer are connected to each other (a pair).
    fn mutual(&self, s: &UnixPlan) -> bool {
        s.peer != 0 && s.peer != s.ino && self.sock(s.peer).peer == s.ino && !self.sock(s.peer).external
    }

    /// The listener of the tree bound to `name`, if any.
    fn listener_named(&self, name: &[u8]) -> Option<&'a UnixPlan> {
        if name.is_empty() {
            return None;
        }
        let world: &'a UnixWorld = self.world;
        self.listeners.get(name).map(|&i| &world.sockets[i])
    }

    fn build(&mut self, ext_unix_sk: bool) -> RestoreResult<()> {
        let world = self.world;
        // Listeners first, then the other bound sockets that are not pairs.
        for s in world.sockets.iter().filter(|s| !s.external && s.state == state::LISTEN) {
            let fd = new_socket(s)?;
            self.bind(&fd, s)?;
            rustix::net::listen(&fd, s.backlog as i32).sys(|| format!("listen({}, {})", s.describe(), s.backlog))?;
            self.made.insert(s.ino, fd);
        }
        let mutual: std::collections::HashSet<u32> = world.sockets.iter().filter(|s| self.mutual(s)).map(|s| s.ino).collect();
        let is_mutual = |s: &UnixPlan| mutual.contains(&s.ino);
        for s in world.sockets.iter().filter(|s| !s.external && s.state != state::LISTEN && !is_mutual(s)) {
            if s.stream_like() && s.state == state::ESTABLISHED {
                continue; // connections, below
            }
            // A datagram socket's queue goes in before it is connected
            // anywhere (from a throw-away peer it is then cut from).
            // (Or later, from their senders, once those are bound too.)
            let fd = if s.queue.is_empty() || from_senders(s) { new_socket(s)? } else { prefilled_dgram(s, self.passed)? };
            if !s.name.is_empty() {
                self.bind(&fd, s)?;
            }
            self.made.insert(s.ino, fd);
        }
        // Pairs: connect + accept on their listener, else socketpair.
        for s in world.sockets.iter().filter(|s| !s.external && is_mutual(s)) {
            if self.made.contains_key(&s.ino) {
                continue;
            }
            let p = self.sock(s.peer);
            let listener = if s.stream_like() { self.listener_named(&s.name).or_else(|| self.listener_named(&p.name)) } else { None };
            let (a, b) = match listener {
                Some(l) if (l.name == s.name) != (l.name == p.name) => {
                    let (accepted, client) = if l.name == s.name { (s, p) } else { (p, s) };
                    let c = new_socket(client)?;
                    if !client.name.is_empty() {
                        self.bind(&c, client)?;
                    }
                    self.connect(&c, client, l.ino)?;
                    let acc = rustix::net::accept_with(&self.made[&l.ino], SocketFlags::CLOEXEC)
                        .sys(|| format!("accept on {} for {}", l.describe(), accepted.describe()))?;
                    if accepted.ino == s.ino { (acc, c) } else { (c, acc) }
                }
                _ => {
                    let (a, b) = rustix::net::socketpair(AddressFamily::UNIX, SocketType::from_raw(s.ty), SocketFlags::CLOEXEC, None)
                        .sys(|| format!("socketpair for {} and {}", s.describe(), p.describe()))?;
                    // Named datagram ends are bound again; a stream end's
                    // name is its listener's, which is taken (as in CRIU).
                    for (fd, x) in [(&a, s), (&b, p)] {
                        if !x.name.is_empty() && !x.stream_like() {
                            self.bind(fd, x)?;
                        }
                    }
                    (a, b)
                }
            };
            send_queue(&b, s, self.passed)?;
            send_queue(&a, p, self.passed)?;
            self.made.insert(s.ino, a);
            self.made.insert(p.ino, b);
        }
        // Connections that are not pairs.
        let rest: Vec<&UnixPlan> = world.sockets.iter().filter(|s| !s.external && !self.made.contains_key(&s.ino)).collect();
        for s in rest {
            let peer = (s.peer != 0).then(|| self.sock(s.peer));
            let fd = match peer {
                Some(l) if l.state == state::LISTEN && !l.external => {
                    // A connection the listener had not accepted yet.
                    if !s.queue.is_empty() {
                        return Err(RestoreError::Prepare(format!("{}: a connection not accepted yet cannot have a queue", s.describe())));
                    }
                    let c = new_socket(s)?;
                    if !s.name.is_empty() && s.name != l.name {
                        self.bind(&c, s)?;
                    }
                    self.connect(&c, s, l.ino)?;
                    c
                }
                Some(p) if !p.external => {
                    return Err(RestoreError::Prepare(format!("{}: connected to {}, which is neither its peer nor a listener", s.describe(), p.describe())));
                }
                _ => {
                    // The peer closed (or is outside and cannot come back):
                    // the queue, then end of file.
                    if let Some(p) = peer {
                        tracing::warn!("{}: its peer {} is outside the tree; restored as closed by the peer", s.describe(), p.describe());
                    }
                    let (a, t) = rustix::net::socketpair(AddressFamily::UNIX, SocketType::from_raw(s.ty), SocketFlags::CLOEXEC, None)
                        .sys(|| format!("socketpair for {}", s.describe()))?;
                    send_queue(&t, s, self.passed)?;
                    a
                }
            };
            self.made.insert(s.ino, fd);
        }
        // Datagrams from named senders, sent again by them (every socket is
        // bound by now, none is connected yet to the receivers).
        let mut connected = std::collections::HashSet::new();
        for s in world.sockets.iter().filter(|s| !s.external && from_senders(s) && !is_mutual(s)) {
            if self.refill_from_senders(s)? {
                connected.insert(s.ino);
            }
        }
        // Datagram sockets connected to a peer that is not connected back.
        for s in world.sockets.iter().filter(|s| !s.external && !s.stream_like() && s.peer != 0 && !is_mutual(s) && !connected.contains(&s.ino)) {
            let p = self.sock(s.peer);
            if p.external && p.name.is_empty() {
                return Err(RestoreError::Prepare(format!(
                    "{} was connected to {}, an unnamed socket outside the dumped tree; give it with --inherit-fd fd[N]:socket:[{}]",
                    s.describe(),
                    p.describe(),
                    s.ino
                )));
            }
            if p.external && !ext_unix_sk {
                return Err(RestoreError::Prepare(format!(
                    "{} was connected to {} outside the dumped tree; pass --ext-unix-sk to connect it again",
                    s.describe(),
                    p.describe()
                )));
            }
            if p.external {
                self.targets.entry(p.ino).or_insert_with(|| Target::Name(p.name.clone(), p.name_dir.clone()));
            }
            let fd = self.made.remove(&s.ino).ok_or_else(|| RestoreError::Prepare(format!("{} was not created", s.describe())))?;
            let r = self.connect(&fd, s, p.ino);
            self.made.insert(s.ino, fd);
            r?;
        }
        // Options, shutdown and flags last: nothing is sent any more.
        for s in world.sockets.iter().filter(|s| !s.external) {
            let fd = &self.made[&s.ino];
            s.opts.apply(fd.as_fd()).map_err(|e| RestoreError::Prepare(format!("{}: {e}", s.describe())))?;
            if s.shutdown != 0 {
                let how = match s.shutdown {
                    1 => rustix::net::Shutdown::Read,
                    2 => rustix::net::Shutdown::Write,
                    _ => rustix::net::Shutdown::Both,
                };
                rustix::net::shutdown(fd, how).sys(|| format!("shutdown({}, {how:?})", s.describe()))?;
            }
            set_status_flags(fd, s.flags)?;
        }
        Ok(())
    }

    /// Binds `fd` to `s`'s name: in its directory for a relative path, a
    /// stale socket file removed first, the file's permissions set again.
    /// A name whose file had been removed is bound and removed again at
    /// once (see [`bind_removed`]); the socket stays reachable through an
    /// `O_PATH` descriptor of its file.
    fn bind(&mut self, fd: &OwnedFd, s: &UnixPlan) -> RestoreResult<()> {
        let addr = sockaddr(&s.name).sys(|| format!("the name of {}", s.describe()))?;
        if !s.has_path() {
            rustix::net::bind(fd, &addr).sys(|| format!("bind({})", s.describe()))?;
            self.targets.insert(s.ino, Target::Name(s.name.clone(), None));
            return Ok(());
        }
        let path = path_of(&s.name);
        let target = in_dir(s.name_dir.as_deref(), || {
            if s.deleted {
                return bind_removed(fd, s, &addr).map(Target::Ghost);
            }
            match rustix::fs::lstat(path) {
                Ok(st) if st.st_mode & libc::S_IFMT == libc::S_IFSOCK => {
                    // The dumped socket's file, left behind: the name is ours.
                    rustix::fs::unlink(path).sys(|| format!("removing the old socket file of {}", s.describe()))?;
                }
                Ok(_) => {
                    return Err(RestoreError::FileChanged {
                        path: PathBuf::from(String::from_utf8_lossy(path).into_owned()),
                        problem: format!("is no longer a socket file; cannot bind {}", s.describe()),
                    })
                }
                Err(_) => {}
            }
            rustix::net::bind(fd, &addr).sys(|| format!("bind({})", s.describe()))?;
            set_perms(s)?;
            Ok(Target::Name(s.name.clone(), s.name_dir.clone()))
        })?;
        self.targets.insert(s.ino, target);
        Ok(())
    }

    /// Puts back the queue of datagram socket `x` (bound, connected to
    /// nothing yet) message by message, each from its sender: the socket
    /// of the tree bound to the sender's name, else a temporary socket
    /// bound to it (the sender had closed; an unbound one if the name is
    /// taken), else an unbound one. When every message came from `x`'s own
    /// peer, `x` is connected to it first (the kernel then puts no limit on
    /// its queue, as when they were sent); returns whether it was.
    fn refill_from_senders(&mut self, x: &UnixPlan) -> RestoreResult<bool> {
        let peer = (x.peer != 0).then(|| self.sock(x.peer)).filter(|p| !p.external && !p.name.is_empty());
        let early = peer.is_some_and(|p| x.queue.iter().all(|q| q.sender.as_deref() == Some(p.name.as_slice())));
        if let (true, Some(p)) = (early, peer) {
            let fd = &self.made[&x.ino];
            self.connect(fd, x, p.ino)?;
        }
        let mut temps: HashMap<Vec<u8>, OwnedFd> = HashMap::new();
        for (k, q) in x.queue.iter().enumerate() {
            let key = q.sender.clone().unwrap_or_default();
            let tree_sender = q.sender.as_deref().and_then(|n| self.dgram_named(n));
            if tree_sender.is_none() && !temps.contains_key(&key) {
                let t = self.temp_sender(x, q.sender.as_deref())?;
                crate::net::sockopts::set_int(t.as_fd(), libc::SO_SNDBUFFORCE, i32::MAX / 2).sys(|| format!("SO_SNDBUFFORCE to refill {}", x.describe()))?;
                temps.insert(key.clone(), t);
            }
            let from = match tree_sender {
                Some(ino) => {
                    let fd = self.made[&ino].as_fd();
                    crate::net::sockopts::set_int(fd, libc::SO_SNDBUFFORCE, i32::MAX / 2).sys(|| format!("SO_SNDBUFFORCE to refill {}", x.describe()))?;
                    fd
                }
                None => temps[&key].as_fd(),
            };
            let fds = self.passed.of(q)?;
            let sent = if early { send_with(from, &q.data, None, &fds) } else { self.send_to(from, &q.data, &fds, x.ino) };
            match sent {
                Ok(n) if n == q.data.len() => {}
                Ok(n) => return Err(RestoreError::Prepare(format!("refilling {}: message {k} cut to {n} of {} bytes", x.describe(), q.data.len()))),
                Err(e) => {
                    let hint = if e == Errno::AGAIN { " (more datagrams than net.unix.max_dgram_qlen allows?)" } else { "" };
                    return Err(RestoreError::sys(format!("refilling {}: message {k} of {}{hint}", x.describe(), x.queue.len()), e));
                }
            }
        }
        Ok(early)
    }

    /// The datagram socket of the tree bound to `name`, if any.
    fn dgram_named(&self, name: &[u8]) -> Option<u32> {
        self.world.sockets.iter().find(|s| !s.external && s.ty == DGRAM && s.name == name && self.targets.contains_key(&s.ino)).map(|s| s.ino)
    }

    /// A temporary datagram socket bound to `name` (a path name removed
    /// again with the others), or unbound if there is no name or it is
    /// taken. A relative path name is bound in a scratch directory: only
    /// the name matters to the receiver.
    fn temp_sender(&mut self, x: &UnixPlan, name: Option<&[u8]>) -> RestoreResult<OwnedFd> {
        let t = rustix::net::socket_with(AddressFamily::UNIX, SocketType::DGRAM, SocketFlags::CLOEXEC, None)
            .sys(|| format!("socket() to refill {}", x.describe()))?;
        let Some(name) = name else { return Ok(t) };
        let Ok(addr) = sockaddr(name) else { return Ok(t) };
        let relative = name.first().is_some_and(|&b| b != 0 && b != b'/');
        let dir = if relative { Some(self.scratch_dir()?) } else { None };
        // A closed sender's socket file may still be there: it is replaced
        // by ours, which stays (as stale as the old one) once we close it;
        // a file we create where there was none is removed again.
        let mut stale = false;
        let bound = in_dir(dir.as_deref(), || {
            if name.first().is_some_and(|&b| b != 0) {
                let path = path_of(name);
                if rustix::fs::lstat(path).is_ok_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFSOCK) {
                    stale = rustix::fs::unlink(path).is_ok();
                }
            }
            Ok(rustix::net::bind(&t, &addr))
        })?;
        match bound {
            Ok(()) if name.first().is_some_and(|&b| b != 0) && (!stale || relative) => self.ghosts.push((dir, name.to_vec())),
            Ok(()) => {}
            Err(e) => tracing::warn!("{}: cannot bind a socket to the sender name {} ({e}); its datagrams come from an unnamed one", x.describe(), display_name(Some(name), 0)),
        }
        Ok(t)
    }

    /// A directory of criu-rs's own for binding relative sender names.
    fn scratch_dir(&mut self) -> RestoreResult<PathBuf> {
        if let Some(d) = &self.scratch {
            return Ok(d.clone());
        }
        let d = std::env::temp_dir().join(format!("criu-rs-senders-{}", std::process::id()));
        std::fs::create_dir_all(&d).map_err(|e| RestoreError::Prepare(format!("creating {}: {e}", d.display())))?;
        self.scratch = Some(d.clone());
        Ok(d)
    }

    /// `sendto(from, data, the bound socket to)`, `fds` in flight with it.
    fn send_to(&self, from: BorrowedFd<'_>, data: &[u8], fds: &[BorrowedFd<'_>], to: u32) -> std::result::Result<usize, Errno> {
        match self.targets.get(&to) {
            Some(Target::Name(name, dir)) => {
                let addr = sockaddr(name)?;
                let dir = if name.first().is_some_and(|&b| b != 0) { dir.as_deref() } else { None };
                let mut r = Err(Errno::INVAL);
                in_dir(dir, || {
                    r = send_with(from, data, Some(&addr), fds);
                    Ok(())
                })
                .map_err(|_| Errno::NOENT)?;
                r
            }
            Some(Target::Ghost(file)) => {
                let addr = SocketAddrUnix::new(format!("/proc/self/fd/{}", file.as_raw_fd()).as_str())?;
                send_with(from, data, Some(&addr), fds)
            }
            None => Err(Errno::DESTADDRREQ),
        }
    }

    /// Connects `fd` (socket `s`) to the bound socket `to`.
    fn connect(&self, fd: &OwnedFd, s: &UnixPlan, to: u32) -> RestoreResult<()> {
        let t = self.sock(to);
        let what = || format!("connecting {} to {}", s.describe(), t.describe());
        match self.targets.get(&to) {
            Some(Target::Name(name, dir)) => {
                let addr = sockaddr(name).sys(what)?;
                let dir = if name.first().is_some_and(|&b| b != 0) { dir.as_deref() } else { None };
                in_dir(dir, || rustix::net::connect(fd, &addr).sys(what))
            }
            Some(Target::Ghost(file)) => {
                let via = format!("/proc/self/fd/{}", file.as_raw_fd());
                let addr = SocketAddrUnix::new(via.as_str()).sys(what)?;
                rustix::net::connect(fd, &addr).sys(what)
            }
            None => Err(RestoreError::Prepare(format!("{}: it has no name to connect to", what()))),
        }
    }

    /// Removes the path names that had been removed before the dump.
    fn unlink_ghosts(&mut self) -> RestoreResult<()> {
        let mut first = Ok(());
        for (dir, name) in std::mem::take(&mut self.ghosts) {
            let r = in_dir(dir.as_deref(), || rustix::fs::unlink(path_of(&name)).sys(|| format!("removing {}", display_name(Some(&name), 0))));
            if first.is_ok() {
                first = r;
            }
        }
        self.targets.clear();
        first
    }
}

/// Sets the permissions of `s`'s socket file (just bound, in the current
/// directory for a relative name).
fn set_perms(s: &UnixPlan) -> RestoreResult<()> {
    let Some((mode, uid, gid)) = s.perms else { return Ok(()) };
    let p = std::ffi::OsStr::from_bytes(path_of(&s.name));
    rustix::fs::chownat(rustix::fs::CWD, p, Some(rustix::fs::Uid::from_raw(uid)), Some(rustix::fs::Gid::from_raw(gid)), rustix::fs::AtFlags::SYMLINK_NOFOLLOW)
        .sys(|| format!("chown of the socket file of {}", s.describe()))?;
    rustix::fs::chmodat(rustix::fs::CWD, p, rustix::fs::Mode::from_raw_mode(mode & 0o7777), rustix::fs::AtFlags::empty())
        .sys(|| format!("chmod of the socket file of {}", s.describe()))
}

/// Binds `fd` to the path name of `s`, whose file had been removed before
/// the dump, and removes it again: whatever is at that path now is moved
/// aside meanwhile (and back), missing directories are made (and removed).
/// Returns an `O_PATH` descriptor of the socket's file, through which it
/// can still be connected to (`/proc/self/fd/N`).
fn bind_removed(fd: &OwnedFd, s: &UnixPlan, addr: &SocketAddrUnix) -> RestoreResult<OwnedFd> {
    let path = path_of(&s.name);
    let what = |w: &str| format!("{w} for the removed name of {}", s.describe());
    let parked = rustix::fs::lstat(path).is_ok().then(|| [path, b".criu-rs-park"].concat());
    if let Some(p) = &parked {
        rustix::fs::rename(path, p.as_slice()).sys(|| what("moving the file there aside"))?;
    }
    let mut made_dirs: Vec<Vec<u8>> = Vec::new();
    let result = (|| {
        // Missing directories, outermost first.
        let mut dir = path;
        let mut missing = Vec::new();
        while let Some(i) = dir.iter().rposition(|&b| b == b'/') {
            dir = &dir[..i];
            if dir.is_empty() || rustix::fs::lstat(dir).is_ok() {
                break;
            }
            missing.push(dir.to_vec());
        }
        for d in missing.into_iter().rev() {
            rustix::fs::mkdir(d.as_slice(), rustix::fs::Mode::from_raw_mode(0o755)).sys(|| what("mkdir"))?;
            made_dirs.push(d);
        }
        rustix::net::bind(fd, addr).sys(|| format!("bind({})", s.describe()))?;
        let o = rustix::fs::open(path, rustix::fs::OFlags::PATH | rustix::fs::OFlags::CLOEXEC, rustix::fs::Mode::empty());
        let perms = set_perms(s);
        rustix::fs::unlink(path).sys(|| what("unlink"))?;
        perms?;
        o.sys(|| what("O_PATH of the socket file"))
    })();
    for d in made_dirs.iter().rev() {
        let _ = rustix::fs::rmdir(d.as_slice());
    }
    if let Some(p) = &parked {
        rustix::fs::rename(p.as_slice(), path).sys(|| what("moving the file there back"))?;
    }
    result
}

/// Whether `s` is a datagram socket whose queue holds messages from named
/// senders, refilled by [`Builder::refill_from_senders`] (it needs a name
/// of its own to be sent to).
fn from_senders(s: &UnixPlan) -> bool {
    s.ty == DGRAM && !s.name.is_empty() && s.queue.iter().any(|q| q.sender.is_some())
}

/// Flags of every send while refilling: never block, no SIGPIPE.
fn send_flags() -> rustix::net::SendFlags {
    rustix::net::SendFlags::DONTWAIT | rustix::net::SendFlags::NOSIGNAL
}

/// `send`/`sendto` (when `to` is given) of `data` from `from`, with `fds`
/// in flight (`SCM_RIGHTS`) when there are any.
fn send_with(from: BorrowedFd<'_>, data: &[u8], to: Option<&SocketAddrUnix>, fds: &[BorrowedFd<'_>]) -> std::result::Result<usize, Errno> {
    use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage};
    if fds.is_empty() {
        return match to {
            Some(addr) => rustix::net::sendto(from, data, send_flags(), addr),
            None => rustix::net::send(from, data, send_flags()),
        };
    }
    let mut space = vec![std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(fds.len()))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !control.push(SendAncillaryMessage::ScmRights(fds)) {
        return Err(Errno::NOBUFS);
    }
    let iov = [std::io::IoSlice::new(data)];
    match to {
        Some(addr) => rustix::net::sendmsg_addr(from, addr, &iov, &mut control, send_flags()),
        None => rustix::net::sendmsg(from, &iov, &mut control, send_flags()),
    }
}

/// The path of a path name, without its terminating NUL.
fn path_of(name: &[u8]) -> &[u8] {
    name.strip_suffix(&[0]).unwrap_or(name)
}

/// The `sockaddr_un` of a kernel-kept name.
fn sockaddr(name: &[u8]) -> Result<SocketAddrUnix, Errno> {
    match name {
        [0, abs @ ..] => SocketAddrUnix::new_abstract_name(abs),
        path => SocketAddrUnix::new(path_of(path)),
    }
}

/// Runs `f` with `dir` as the working directory (criu-rs is
/// single-threaded while it creates descriptions), then goes back.
fn in_dir<T>(dir: Option<&Path>, f: impl FnOnce() -> RestoreResult<T>) -> RestoreResult<T> {
    let Some(dir) = dir else { return f() };
    let back = rustix::fs::open(".", rustix::fs::OFlags::PATH | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC, rustix::fs::Mode::empty())
        .sys(|| "opening the working directory".into())?;
    rustix::process::chdir(dir).sys(|| format!("chdir({})", dir.display()))?;
    let r = f();
    rustix::process::fchdir(&back).sys(|| "going back to the working directory".into())?;
    r
}

/// `socket(AF_UNIX, type | SOCK_CLOEXEC)`.
fn new_socket(s: &UnixPlan) -> RestoreResult<OwnedFd> {
    rustix::net::socket_with(AddressFamily::UNIX, SocketType::from_raw(s.ty), SocketFlags::CLOEXEC, None)
        .sys(|| format!("socket() for {}", s.describe()))
}

/// A datagram socket holding `s`'s queue and connected to nothing: made
/// as one end of a pair, cut from the other end (which keeps it as its
/// peer and can still send to it), filled from there.
fn prefilled_dgram(s: &UnixPlan, passed: &Passed) -> RestoreResult<OwnedFd> {
    let (a, t) = rustix::net::socketpair(AddressFamily::UNIX, SocketType::from_raw(s.ty), SocketFlags::CLOEXEC, None)
        .sys(|| format!("socketpair for {}", s.describe()))?;
    rustix::net::connect_unspec(&a).sys(|| format!("disconnecting {}", s.describe()))?;
    send_queue(&t, s, passed)?;
    Ok(a)
}

/// Sends `s`'s queue from `from` (connected to `s`'s socket): one send
/// per message, so datagrams and packets keep their boundaries, each with
/// the descriptions in flight with it (from `passed`). `from`'s send
/// buffer is made large enough first (its own options are set afterwards).
fn send_queue(from: &OwnedFd, s: &UnixPlan, passed: &Passed) -> RestoreResult<()> {
    if s.queue.is_empty() {
        return Ok(());
    }
    crate::net::sockopts::set_int(from.as_fd(), libc::SO_SNDBUFFORCE, i32::MAX / 2).sys(|| format!("SO_SNDBUFFORCE to refill {}", s.describe()))?;
    for (k, q) in s.queue.iter().enumerate() {
        let (m, fds) = (&q.data, passed.of(q)?);
        let mut sent = 0;
        loop {
            // The descriptions go with the first bytes.
            let n = send_with(from.as_fd(), &m[sent..], None, if sent == 0 { &fds } else { &[] }).map_err(|e| {
                let hint = if e == Errno::AGAIN && s.ty == DGRAM { " (more datagrams than net.unix.max_dgram_qlen allows?)" } else { "" };
                RestoreError::sys(format!("refilling {}: message {k} of {}{hint}", s.describe(), s.queue.len()), e)
            })?;
            sent += n;
            if s.stream_like() && s.ty == STREAM && sent < m.len() {
                continue;
            }
            if sent != m.len() {
                return Err(RestoreError::Prepare(format!("refilling {}: message {k} cut to {sent} of {} bytes", s.describe(), m.len())));
            }
            break;
        }
    }
    Ok(())
}



#[cfg(test)]
mod tests {
    use super::*;
    use rustix::net::{RecvFlags, SendFlags};

    fn pair(ty: SocketType) -> (OwnedFd, OwnedFd) {
        rustix::net::socketpair(AddressFamily::UNIX, ty, SocketFlags::CLOEXEC, None).unwrap()
    }

    fn sock(ty: SocketType) -> OwnedFd {
        rustix::net::socket_with(AddressFamily::UNIX, ty, SocketFlags::CLOEXEC, None).unwrap()
    }

    /// Waits until abstract name `@name` is free again: a child forked
    /// meanwhile by another test of this binary (fork without exec keeps
    /// CLOEXEC descriptors) may still hold the socket bound to it.
    fn wait_name_free(name: &str) {
        let addr = SocketAddrUnix::new_abstract_name(name.as_bytes()).unwrap();
        let until = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while rustix::net::bind(&sock(SocketType::DGRAM), &addr) == Err(Errno::ADDRINUSE) {
            assert!(std::time::Instant::now() < until, "@{name} still bound by someone else after 60 s");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    fn send(fd: &OwnedFd, b: &[u8]) {
        assert_eq!(rustix::net::send(fd, b, SendFlags::NOSIGNAL).unwrap(), b.len());
    }

    /// One message (or up to `max` stream bytes) without waiting.
    fn recv(fd: &OwnedFd, max: usize) -> Option<Vec<u8>> {
        let mut b = vec![0u8; max];
        match rustix::net::recv(fd, &mut b[..], RecvFlags::DONTWAIT) {
            Ok((n, _)) => Some(b[..n].to_vec()),
            Err(Errno::AGAIN) => None,
            Err(e) => panic!("recv: {e}"),
        }
    }

    fn recv_all(fd: &OwnedFd, n: usize) -> Vec<u8> {
        let mut out = Vec::new();
        while out.len() < n {
            match recv(fd, n - out.len()) {
                Some(b) if !b.is_empty() => out.extend(b),
                _ => break,
            }
        }
        out
    }

    fn ino(fd: &OwnedFd) -> u64 {
        rustix::fs::fstat(fd).unwrap().st_ino
    }

    fn local_name(fd: &OwnedFd) -> Vec<u8> {
        let a = rustix::net::getsockname(fd).unwrap();
        let u = SocketAddrUnix::try_from(a).unwrap();
        if let Some(p) = u.path_bytes() {
            let mut v = p.to_vec();
            v.push(0);
            v
        } else if let Some(n) = u.abstract_name() {
            [&[0u8][..], n].concat()
        } else {
            Vec::new()
        }
    }

    /// Dumps `socks` of this very process into `dir` and loads them back.
    fn dump_and_load(dir: &ImageDir, socks: &[&OwnedFd]) -> UnixWorld {
        dump_and_load_ext(dir, socks, &ExtUnixSk::default()).unwrap()
    }

    /// [`dump_and_load`] with what `--ext-unix-sk` allows.
    fn dump_and_load_ext(dir: &ImageDir, socks: &[&OwnedFd], ext: &ExtUnixSk) -> Result<UnixWorld, UnixDumpError> {
        let pid = std::process::id() as i32;
        let mut ctx = UnixDumpCtx { ext: ext.clone(), ..Default::default() };
        let mut dumped: Vec<(u32, UnixSocketDump)> = socks
            .iter()
            .enumerate()
            .map(|(i, fd)| {
                let flags = rustix::fs::fcntl_getfl(fd).unwrap().bits() | libc::O_RDWR as u32;
                (10 + i as u32, ctx.collect(pid, fd.as_raw_fd(), ino(fd), flags).unwrap().0)
            })
            .collect();
        let mut next = 100;
        let mut refs: Vec<&mut UnixSocketDump> = dumped.iter_mut().map(|(_, d)| d).collect();
        resolve_peers(&mut refs, &ctx, &mut next)?;
        let mut entries: Vec<pb::FileEntry> = Vec::new();
        for (id, d) in &dumped {
            entries.push(file_entry(*id, d, Fown::default()));
            entries.extend(d.external.iter().map(external_entry));
        }
        dir.write_all(ImageKind::Files, 0, &entries).unwrap();
        let mut w = dir.create_image(ImageKind::SkQueues, 0).unwrap();
        for (id, d) in &dumped {
            for (e, data) in queue_entries(*id, d) {
                w.write_entry_with_payload(&e, data).unwrap();
            }
        }
        w.finish().unwrap();
        let files = dir.read_files().unwrap();
        Ok(UnixWorld::load(dir, &files).unwrap())
    }

    #[test]
    fn an_outside_datagram_peer_is_refused_or_connected_again_by_name() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = ImageDir::open_unchecked(tmp.path());
        let path = tmp.path().join("log.sock");
        let outside = sock(SocketType::DGRAM);
        rustix::net::bind(&outside, &SocketAddrUnix::new(path.as_path()).unwrap()).unwrap();
        let client = sock(SocketType::DGRAM);
        rustix::net::connect(&client, &SocketAddrUnix::new(path.as_path()).unwrap()).unwrap();
        let e = dump_and_load_ext(&dir, &[&client], &ExtUnixSk::default()).unwrap_err().to_string();
        assert!(e.contains("log.sock") && e.contains("outside the dumped tree") && e.contains("--ext-unix-sk"), "{e}");
        let world = dump_and_load_ext(&dir, &[&client], &ExtUnixSk { all: true, inodes: vec![] }).unwrap();
        assert_eq!(world.sockets.len(), 2);
        assert!(world.sockets[1].external && world.sockets[1].name.ends_with(b"log.sock\0"));
        let e = world.open_all(false).unwrap_err().to_string();
        assert!(e.contains("--ext-unix-sk"), "{e}");
        let mut got = world.open_all(true).unwrap();
        let again = got.remove(&world.sockets[0].id).unwrap();
        send(&again, b"hello log");
        assert_eq!(recv(&outside, 64).unwrap(), b"hello log");
        // A stream connection to an outside listener is refused even so.
        let l = sock(SocketType::STREAM);
        let lpath = tmp.path().join("srv.sock");
        rustix::net::bind(&l, &SocketAddrUnix::new(lpath.as_path()).unwrap()).unwrap();
        rustix::net::listen(&l, 1).unwrap();
        let c = sock(SocketType::STREAM);
        rustix::net::connect(&c, &SocketAddrUnix::new(lpath.as_path()).unwrap()).unwrap();
        let a = rustix::net::accept(&l).unwrap();
        let e = dump_and_load_ext(&dir, &[&c], &ExtUnixSk { all: true, inodes: vec![] }).unwrap_err().to_string();
        assert!(e.contains("half of a stream connection"), "{e}");
        drop(a);
    }

    #[test]
    fn sockets_dumped_from_this_process_come_back_with_queues_names_and_state() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = ImageDir::open_unchecked(tmp.path());
        let (d0, d1) = pair(SocketType::DGRAM);
        send(&d0, b"one");
        send(&d0, b"two-2");
        send(&d1, b"x");
        let (s0, s1) = pair(SocketType::STREAM);
        let big: Vec<u8> = (0..70_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
        send(&s0, &big);
        let (q0, q1) = pair(SocketType::SEQPACKET);
        send(&q0, b"p1");
        send(&q0, &big[..5000]);
        let abs = format!("criu-rs-unix-sk-test-{}", std::process::id());
        let la = SocketAddrUnix::new_abstract_name(abs.as_bytes()).unwrap();
        let l = sock(SocketType::STREAM);
        rustix::net::bind(&l, &la).unwrap();
        rustix::net::listen(&l, 4).unwrap();
        let c = sock(SocketType::STREAM);
        rustix::net::connect(&c, &la).unwrap();
        let a = rustix::net::accept(&l).unwrap();
        send(&c, b"to server");
        let pending = sock(SocketType::STREAM);
        rustix::net::connect(&pending, &la).unwrap();
        let srv_path = tmp.path().join("d.sock");
        let sa = SocketAddrUnix::new(srv_path.as_path()).unwrap();
        let srv = sock(SocketType::DGRAM);
        rustix::net::bind(&srv, &sa).unwrap();
        let cli = sock(SocketType::DGRAM);
        rustix::net::connect(&cli, &sa).unwrap();
        send(&cli, b"log 1");
        send(&cli, b"log two");
        let (h0, h1) = pair(SocketType::STREAM);
        send(&h0, b"final");
        rustix::net::shutdown(&h0, rustix::net::Shutdown::Write).unwrap();
        rustix::fs::fcntl_setfl(&h1, rustix::fs::OFlags::NONBLOCK).unwrap();

        let all = [&d0, &d1, &s0, &s1, &q0, &q1, &l, &c, &a, &pending, &srv, &cli, &h0, &h1];
        let world = dump_and_load(&dir, &all);
        let by = |fd: &OwnedFd| world.sockets.iter().find(|s| s.ino as u64 == ino(fd)).unwrap().clone();
        let data = |fd: &OwnedFd| by(fd).queue.into_iter().map(|q| q.data).collect::<Vec<_>>();
        assert_eq!(data(&d1), vec![b"one".to_vec(), b"two-2".to_vec()]);
        assert_eq!(data(&s1).concat(), big);
        assert_eq!(data(&q1), vec![b"p1".to_vec(), big[..5000].to_vec()]);
        assert_eq!(by(&pending).peer as u64, ino(&l), "the pending client names its listener");
        assert_eq!(by(&h0).shutdown, 2);
        assert_eq!(by(&srv).perms.map(|p| p.0 & libc::S_IFMT), Some(libc::S_IFSOCK));
        // Peeking left every queue as it was.
        assert_eq!(recv(&d1, 64).unwrap(), b"one");
        assert_eq!(recv(&d1, 64).unwrap(), b"two-2");
        assert_eq!(recv_all(&s1, big.len()), big);
        assert_eq!(recv(&q1, 64).unwrap(), b"p1");
        assert_eq!(recv(&a, 64).unwrap(), b"to server");
        let ids: HashMap<u64, u32> = world.sockets.iter().map(|s| (s.ino as u64, s.id)).collect();
        let id = |fd: &OwnedFd| ids[&ino(fd)];
        let (id_d0, id_d1, id_s0, id_s1, id_q0, id_q1) = (id(&d0), id(&d1), id(&s0), id(&s1), id(&q0), id(&q1));
        let (id_l, id_c, id_a, id_p, id_srv, id_cli, id_h0, id_h1) =
            (id(&l), id(&c), id(&a), id(&pending), id(&srv), id(&cli), id(&h0), id(&h1));
        drop((d0, d1, s0, s1, q0, q1, l, c, a, pending, srv, cli, h0, h1));

        wait_name_free(&abs);
        let mut got = world.open_all(false).unwrap();
        let mut take = |id: u32| got.remove(&id).unwrap();
        let (d0, d1, s0, s1, _q0, q1) = (take(id_d0), take(id_d1), take(id_s0), take(id_s1), take(id_q0), take(id_q1));
        let (l, c, a, pending, srv, cli, h0, h1) =
            (take(id_l), take(id_c), take(id_a), take(id_p), take(id_srv), take(id_cli), take(id_h0), take(id_h1));
        assert_eq!(recv(&d1, 64).unwrap(), b"one");
        assert_eq!(recv(&d1, 64).unwrap(), b"two-2");
        assert_eq!(recv(&d1, 64), None);
        assert_eq!(recv(&d0, 64).unwrap(), b"x");
        send(&d1, b"new");
        assert_eq!(recv(&d0, 64).unwrap(), b"new");
        assert_eq!(recv_all(&s1, big.len()), big);
        send(&s1, b"back");
        assert_eq!(recv(&s0, 64).unwrap(), b"back");
        assert_eq!(recv(&q1, 64).unwrap(), b"p1");
        assert_eq!(recv(&q1, 8000).unwrap(), big[..5000]);
        assert_eq!(recv(&a, 64).unwrap(), b"to server");
        assert_eq!(local_name(&a), [&[0u8][..], abs.as_bytes()].concat(), "the accepted end has its listener's name");
        let p2 = rustix::net::accept(&l).unwrap();
        send(&pending, b"late");
        assert_eq!(recv(&p2, 64).unwrap(), b"late");
        let again = sock(SocketType::STREAM);
        rustix::net::connect(&again, &la).unwrap();
        let _acc = rustix::net::accept(&l).unwrap();
        assert_eq!(recv(&srv, 64).unwrap(), b"log 1");
        assert_eq!(recv(&srv, 64).unwrap(), b"log two");
        send(&cli, b"more");
        assert_eq!(recv(&srv, 64).unwrap(), b"more");
        assert_eq!(local_name(&srv), [srv_path.as_os_str().as_encoded_bytes(), &[0]].concat());
        assert_eq!(recv_all(&h1, 5), b"final");
        assert_eq!(recv(&h1, 5).unwrap(), b"", "end of file after the queue");
        assert_eq!(rustix::net::send(&h0, b"x", SendFlags::NOSIGNAL), Err(Errno::PIPE));
        assert!(rustix::fs::fcntl_getfl(&h1).unwrap().contains(rustix::fs::OFlags::NONBLOCK));
        drop((c, a));
    }

    /// `recvfrom` without waiting: (data, sender name bytes).
    fn recv_from(fd: &OwnedFd) -> (Vec<u8>, Vec<u8>) {
        let mut b = vec![0u8; 256];
        let (n, _, from) = rustix::net::recvfrom(fd, &mut b[..], RecvFlags::DONTWAIT).unwrap();
        let name = match from.map(SocketAddrUnix::try_from) {
            Some(Ok(u)) => u.path_bytes().map(|p| [p, &[0]].concat()).or_else(|| u.abstract_name().map(|a| [&[0u8][..], a].concat())).unwrap_or_default(),
            _ => Vec::new(),
        };
        (b[..n].to_vec(), name)
    }

    #[test]
    fn datagrams_come_back_from_the_same_senders() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = ImageDir::open_unchecked(tmp.path());
        let srv_path = tmp.path().join("srv.sock");
        let srv_addr = SocketAddrUnix::new(srv_path.as_path()).unwrap();
        let srv = sock(SocketType::DGRAM);
        rustix::net::bind(&srv, &srv_addr).unwrap();
        let a_name = format!("criu-rs-sender-a-{}", std::process::id());
        let a = sock(SocketType::DGRAM);
        rustix::net::bind(&a, &SocketAddrUnix::new_abstract_name(a_name.as_bytes()).unwrap()).unwrap();
        let b_path = tmp.path().join("b.sock");
        let b = sock(SocketType::DGRAM);
        rustix::net::bind(&b, &SocketAddrUnix::new(b_path.as_path()).unwrap()).unwrap();
        let anon = sock(SocketType::DGRAM);
        let sendto = |fd: &OwnedFd, m: &[u8]| rustix::net::sendto(fd, m, SendFlags::empty(), &srv_addr).unwrap();
        sendto(&a, b"from a");
        sendto(&b, b"from b");
        sendto(&anon, b"anon");
        sendto(&a, b"a again");
        drop((b, anon)); // closed senders: b's socket file stays behind
        let world = dump_and_load(&dir, &[&srv, &a]);
        let a_id = world.sockets[1].id;
        let srv_id = world.sockets[0].id;
        let senders: Vec<Option<Vec<u8>>> = world.sockets[0].queue.iter().map(|q| q.sender.clone()).collect();
        let a_full = [&[0u8][..], a_name.as_bytes()].concat();
        let b_full = [b_path.as_os_str().as_encoded_bytes(), &[0]].concat();
        assert_eq!(senders, vec![Some(a_full.clone()), Some(b_full.clone()), None, Some(a_full.clone())]);
        drop((srv, a));
        wait_name_free(&a_name);
        let mut got = world.open_all(false).unwrap();
        let (srv, _a) = (got.remove(&srv_id).unwrap(), got.remove(&a_id).unwrap());
        assert_eq!(recv_from(&srv), (b"from a".to_vec(), a_full.clone()));
        assert_eq!(recv_from(&srv), (b"from b".to_vec(), b_full));
        assert_eq!(recv_from(&srv), (b"anon".to_vec(), Vec::new()));
        assert_eq!(recv_from(&srv), (b"a again".to_vec(), a_full));
        assert!(b_path.exists(), "the closed sender's socket file is left as it was");
    }

    #[test]
    fn inconsistent_images_are_refused_naming_the_image() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = ImageDir::open_unchecked(tmp.path());
        let (x, y) = pair(SocketType::DGRAM);
        send(&x, b"hello");
        let _ = dump_and_load(&dir, &[&x, &y]);
        let files = dir.read_files().unwrap();
        // A peer that names nothing.
        let mut bad = files.clone();
        bad[0].usk.as_mut().unwrap().peer = Some(12345);
        let e = UnixWorld::load(&dir, &bad).unwrap_err().to_string();
        assert!(e.contains("files.img") && e.contains("socket:[12345]") && e.contains("names no socket"), "{e}");
        // A queue for a socket that is not there.
        let one = vec![files[0].clone()];
        let e = UnixWorld::load(&dir, &one).unwrap_err().to_string();
        assert!(e.contains("files.img") || e.contains("sk-queues.img"), "{e}");
        // A queue longer than its image.
        let path = dir.image_path(ImageKind::SkQueues, 0);
        let mut raw = std::fs::read(&path).unwrap();
        raw.truncate(raw.len() - 2);
        std::fs::write(&path, raw).unwrap();
        let e = UnixWorld::load(&dir, &files).unwrap_err().to_string();
        assert!(e.contains("sk-queues.img") && e.contains("entry 0"), "{e}");
        // An unknown type.
        let mut bad = files.clone();
        bad[1].usk.as_mut().unwrap().r#type = Some(3);
        let e = UnixWorld::load(&dir, &bad).unwrap_err().to_string();
        assert!(e.contains("socket type 3"), "{e}");
    }

    #[test]
    fn descriptors_in_flight_are_received_and_the_message_stays_queued() {
        let (x, y) = pair(SocketType::DGRAM);
        let (pr, _pw) = rustix::pipe::pipe().unwrap();
        let passed = [pr.as_fd()];
        let marker = format!("pipe:[{}]", ino(&pr));
        let copies = || {
            std::fs::read_dir("/proc/self/fd")
                .unwrap()
                .filter(|e| e.as_ref().is_ok_and(|e| std::fs::read_link(e.path()).is_ok_and(|l| l.to_string_lossy() == marker)))
                .count()
        };
        let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
        let mut cm = rustix::net::SendAncillaryBuffer::new(&mut space);
        assert!(cm.push(rustix::net::SendAncillaryMessage::ScmRights(&passed)));
        rustix::net::sendmsg(&x, &[std::io::IoSlice::new(b"fd")], &mut cm, SendFlags::empty()).unwrap();
        let mut ctx = UnixDumpCtx::default();
        let pid = std::process::id() as i32;
        let (d, in_flight) = ctx.collect(pid, y.as_raw_fd(), ino(&y), 2).unwrap();
        assert_eq!(d.queue.len(), 1);
        assert_eq!(in_flight.len(), 1);
        let (k, fds) = &in_flight[0];
        assert_eq!((*k, fds.len()), (0, 1));
        assert_eq!(ino(&fds[0]), ino(&pr), "the pipe end in flight");
        drop(in_flight);
        assert_eq!(copies(), 2, "only the peeked copy was added (both pipe ends remain)");
        assert_eq!(recv(&y, 64).unwrap(), b"fd", "the message is still there");
    }
}
