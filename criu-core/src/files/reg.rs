//! Files opened by path (`FD_TYPES__REG`): regular files, directories,
//! devices that are not terminals (`/dev/null`, `/dev/urandom`, as CRIU
//! does), and files unlinked while open ("ghosts": their contents travel in
//! `ghost-file-N.img`, named by a `remap-fpath.img` record, and restore
//! recreates, opens and unlinks them again).
//!
//! One ghost per inode, as CRIU: an unlinked file held by several
//! descriptions (opened twice, in one task or several) is saved once, with
//! the first description collected, and every description's remap names
//! that one image; restore recreates the file once, opens the first
//! description on it by path and the others through `/proc/self/fd` of a
//! keeper, so writes through one are seen through the others.
//!
//! Ghosts are written as CRIU 4.2 does: owner, mode, times, and the
//! contents raw after the entry (below 12 KiB), or as `ghost_chunk_entry`
//! records, one per data extent (`SEEK_DATA`/`SEEK_HOLE`), with `chunks`
//! and `size` set, so a sparse file keeps its holes. Restore writes the
//! extents into a file of the dumped size, then sets owner, mode and times.
//! Directories, device nodes, FIFOs ([`super::fifo`]) and symbolic links
//! removed while open are ghosts too, without contents (a device's
//! `rdev`, a link's `symlnk_target`); O_TMPFILE files are ghosts of their
//! `/dir/#INO` name. Up to `--ghost-limit` bytes on disk per file.
//!
//! A ghost a task opens by path (a file it maps, its working directory,
//! its executable: [`ghost_by_path`]) is made at its own path (with the
//! directories missing above it) and left there until the tree is about
//! to run ([`LinkedGhosts`], removed by [`super::Later::before_run`] or
//! when the restore fails); other ghosts are removed as soon as opened.
//!
//! Also the files behind `/proc/PID/{cwd,root,exe,map_files/..}`
//! ([`path_file`]), which are REG entries nobody's fd refers to.

use super::{CollectCtx, FdKind, FdProbe, FileDesc, FileDumpError, FileKind, FilesSink, Fown, LoadCtx, OpenCtx, Opened, SideImage};
use crate::images::pb::{self, FdTypes, RemapType};
use crate::images::{ImageDir, ImageError, ImageKind};
use crate::restore::error::{RestoreError, Result, SysContext};
use rustix::fd::{AsRawFd, OwnedFd, RawFd};
use rustix::fs::{Mode, OFlags, SeekFrom};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;

/// Largest unlinked file whose contents we keep by default, in allocated
/// bytes (`st_blocks * 512`: holes are free), CRIU's default
/// `--ghost-limit`.
pub const GHOST_LIMIT: u64 = 1 << 20;

/// Open flags CRIU records for directories (cwd, root).
pub const DIR_FLAGS: u32 = (libc::O_RDONLY | libc::O_DIRECTORY) as u32;

/// Top bit of `remap_file_path_entry.remap_id`: the target is a ghost file.
const REMAP_GHOST: u32 = 1 << 31;

/// Open flags that only matter when creating a file; never replayed.
const CREATE_ONLY: i32 = libc::O_CREAT | libc::O_EXCL | libc::O_TRUNC | libc::O_NOCTTY | libc::O_CLOEXEC;

/// `__O_TMPFILE` (without the `O_DIRECTORY` that `O_TMPFILE` adds): a file
/// made unnamed; its description keeps both bits, which reopening by path
/// must drop.
const TMPFILE_BIT: i32 = libc::O_TMPFILE & !libc::O_DIRECTORY;

/// The kind.
pub struct Reg;

/// A path as dumped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegDumped {
    /// Path (without ` (deleted)`).
    pub path: String,
    /// `st_size`.
    pub size: u64,
    /// `st_mode`.
    pub mode: u32,
    /// `st_dev` and `st_ino`.
    pub dev_ino: (u64, u64),
    /// `st_rdev` (devices).
    pub rdev: u64,
    /// Unlinked while open: restored from a ghost file (one per inode).
    pub unlinked: bool,
    /// The ghost's contents, kept with the first description of the inode
    /// collected (`None` on the others, which refer to it).
    pub ghost: Option<Ghost>,
    /// Marked external at dump (`--external file[MNT:INO]`, the key then
    /// in `path`): restore needs `--inherit-fd fd[N]:file[MNT:INO]`.
    pub external: bool,
}

/// An unlinked file's saved contents and attributes: a regular file, or
/// a directory, device, FIFO or symbolic link removed while open (no
/// contents; a device's number, a link's target).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ghost {
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Mode (type and permission bits).
    pub mode: u32,
    /// Modification time (sec, nsec).
    pub mtime: (i64, i64),
    /// Access time (sec, nsec).
    pub atime: (i64, i64),
    /// `st_size`.
    pub size: u64,
    /// The data, by extent: (offset, bytes); holes between them.
    pub extents: Vec<(u64, Vec<u8>)>,
    /// A device's number (`st_rdev`).
    pub rdev: u64,
    /// A symbolic link's target.
    pub target: Option<String>,
}

/// Whether a file of this type (`st_mode & S_IFMT`) removed while open is
/// kept as a ghost.
pub fn ghost_type(ty: u32) -> bool {
    matches!(ty, libc::S_IFREG | libc::S_IFDIR | libc::S_IFCHR | libc::S_IFBLK | libc::S_IFIFO | libc::S_IFLNK)
}

/// Files from this size on are written in chunks (as CRIU does).
const GHOST_CHUNKS_FROM: u64 = 3 * 4096;

/// A file opened by path, with what the dump recorded about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegFile {
    /// The path.
    pub path: PathBuf,
    /// `open(2)` flags (access mode, O_APPEND, O_NONBLOCK, ...).
    pub flags: i32,
    /// File position.
    pub pos: u64,
    /// Size at dump time (checked for regular files).
    pub size: Option<u64>,
    /// `st_mode` at dump time (type and permission bits).
    pub mode: Option<u32>,
}

/// How to reopen a path: as it is, or recreated from saved contents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegPlan {
    /// The path and flags.
    pub file: RegFile,
    /// An unlinked file: recreated once per ghost image (its id), opened,
    /// unlinked again.
    pub ghost: Option<(u32, Rc<GhostFile>)>,
    /// `--inherit-fd fd[N]:PATH` (the path without its leading `/`, as
    /// CRIU names it): criu-rs's fd N is used as this file (its own
    /// description, shared, as CRIU does).
    pub inherited: Option<RawFd>,
    /// A file of a task of the tree under `/proc/PID/`: it exists once the
    /// tree is forked, so each task holding it opens it itself
    /// ([`Opened::InTask`]).
    pub in_task: bool,
}

/// A ghost image as restore uses it: what it holds, and whether a task
/// opens the file by its path (a mapped file, the working directory, the
/// executable: it then stays at its path until the tree is about to run).
#[derive(Debug, PartialEq, Eq)]
pub struct GhostFile {
    /// The saved file.
    pub ghost: Ghost,
    /// Opened by path by a task.
    pub by_path: std::cell::Cell<bool>,
}

/// Ghost files recreated so far, by ghost image id: an `O_PATH` keeper
/// the inode's other descriptions are opened through, and the path it is
/// still linked at (by-path ghosts).
#[derive(Default)]
pub struct GhostsMade(BTreeMap<u32, (OwnedFd, Option<PathBuf>)>);

/// Ghost files left at their paths for the tasks to open them by path;
/// removed just before the tree runs ([`crate::files::Later::before_run`])
/// or when the restore fails (dropped).
#[derive(Debug, Default)]
pub struct LinkedGhosts(Vec<(PathBuf, bool)>);

impl LinkedGhosts {
    /// Removes them all (directories with `rmdir`); the first error.
    pub fn remove_all(&mut self) -> Result<()> {
        let mut first = Ok(());
        for (path, dir) in self.0.drain(..) {
            let r = if dir { rustix::fs::rmdir(&path) } else { rustix::fs::unlink(&path) };
            let r = r.sys(|| format!("removing ghost file {} again", path.display()));
            if first.is_ok() {
                first = r;
            }
        }
        first
    }
}

impl Drop for LinkedGhosts {
    fn drop(&mut self) {
        if let Err(e) = self.remove_all() {
            tracing::warn!("{e}");
        }
    }
}

impl FdKind for Reg {
    const FD_TYPE: FdTypes = FdTypes::Reg;
    type Dumped = RegDumped;
    type Plan = RegPlan;
    type OpenState = GhostsMade;

    fn claims(p: &FdProbe) -> bool {
        matches!(p.file_type(), libc::S_IFREG | libc::S_IFDIR | libc::S_IFCHR | libc::S_IFBLK | libc::S_IFLNK) && p.target.starts_with('/')
    }

    fn collect(p: &FdProbe, cx: &mut CollectCtx<'_>) -> std::result::Result<RegDumped, FileDumpError> {
        if !cx.seen.external_files.is_empty() {
            // CRIU's key for it: mount id and inode, in hex.
            let key = format!("file[{:x}:{:x}]", p.info.mnt_id, p.md.ino());
            if cx.seen.external_files.contains(&key) {
                return Ok(RegDumped { external: true, ..dumped(&key, &p.md, None) });
            }
        }
        let (path, deleted) = strip_deleted(&p.target);
        if deleted && p.md.nlink() > 0 && p.file_type() == libc::S_IFREG {
            return Err(still_linked(&p.at(), path, p.md.nlink()));
        }
        let unlinked = deleted && p.md.nlink() == 0 && ghost_type(p.file_type());
        // The contents once per inode: its other descriptions refer to them.
        let ghost = if unlinked && cx.seen.first_ghost(p.md.dev(), p.md.ino()) {
            Some(read_ghost(p.pid, &format!("fd/{}", p.fd), &p.at(), &p.md, cx.opts.ghost_limit)?)
        } else {
            None
        };
        Ok(RegDumped { unlinked, ..dumped(path, &p.md, ghost) })
    }

    fn write(f: &FileDesc, d: &RegDumped, sink: &mut FilesSink<'_>) -> std::result::Result<(), ImageError> {
        write_reg(sink, f.id, f.flags, f.pos, &f.fown, d);
        if d.unlinked {
            write_ghost_remap(sink, f.id, d.dev_ino, d.ghost.as_ref())?;
        }
        Ok(())
    }

    fn load(e: &pb::FileEntry, cx: &LoadCtx<'_>) -> Result<RegPlan> {
        let id = e.id.unwrap_or_default();
        let reg = e.reg.as_ref().ok_or_else(|| cx.bad(format!("file {id:#x} is REG without reg_file_entry")))?;
        let file = reg_file(reg);
        let key = file.path.to_string_lossy();
        let inherited = cx.opts.inherit_fd(key.strip_prefix('/').unwrap_or(&key));
        // CRIU's `--external file[MNT:INO]`: the entry names no path, only
        // the key the restoring side must give a descriptor for.
        if reg.ext == Some(true) && inherited.is_none() {
            return Err(RestoreError::NotSupported(format!("file {id:#x} was dumped as external {key}: give it with --inherit-fd fd[N]:{key}")));
        }
        let in_task = proc_pid(&file.path).is_some_and(|pid| cx.side::<TreePids>().is_ok_and(|t| t.0.contains(&pid)));
        match cx.side::<Remaps>()?.0.get(&id) {
            _ if inherited.is_some() => Ok(RegPlan { file, ghost: None, inherited, in_task: false }),
            Some(&ghost_id) => {
                let ghost = cx.side::<Ghosts>()?.get(cx.images, ghost_id)?;
                Ok(RegPlan { ghost: Some((ghost_id, ghost)), file: RegFile { size: None, mode: None, ..file }, inherited, in_task: false })
            }
            None => Ok(RegPlan { file, ghost: None, inherited, in_task }),
        }
    }

    fn open(p: &RegPlan, made: &mut GhostsMade, cx: &OpenCtx<'_>) -> Result<Opened> {
        if let Some(n) = p.inherited {
            // SAFETY: `n` was checked to be open when the restore started,
            // and criu-rs's caller keeps it open until the restore ends.
            let fd = unsafe { rustix::fd::BorrowedFd::borrow_raw(n) };
            let dup = rustix::io::fcntl_dupfd_cloexec(fd, 0).sys(|| format!("dup of inherited fd {n} for {}", p.file.path.display()))?;
            return Ok(Opened::Fd(dup));
        }
        if p.in_task {
            return Ok(Opened::InTask);
        }
        let Some((id, g)) = &p.ghost else { return open_reg(&p.file).map(Opened::Fd) };
        if let Some((keeper, linked)) = made.0.get(id) {
            // The same inode as a description opened before; one more name
            // (a hard link's) where the file must stay at its paths.
            if let Some(at) = linked.as_ref().filter(|at| g.by_path.get() && **at != p.file.path) {
                if std::fs::symlink_metadata(&p.file.path).is_err() {
                    rustix::fs::link(at, &p.file.path).sys(|| format!("linking ghost file {} to {}", at.display(), p.file.path.display()))?;
                    cx.later.borrow_mut().ghosts.0.push((p.file.path.clone(), false));
                }
            }
            let path = PathBuf::from(format!("/proc/self/fd/{}", keeper.as_raw_fd()));
            return open_reg(&RegFile { path, ..p.file.clone() }).map(Opened::Fd);
        }
        let (fd, keeper, linked) = open_ghost(&p.file, &g.ghost, g.by_path.get())?;
        let at = linked.first().map(|(at, _)| at.clone());
        cx.later.borrow_mut().ghosts.0.extend(linked);
        made.0.insert(*id, (keeper, at));
        Ok(Opened::Fd(fd))
    }

    fn name(p: &RegPlan) -> String {
        p.file.path.display().to_string()
    }

    fn open_in_task(p: &RegPlan, _cx: &super::InTaskCtx<'_>) -> Result<OwnedFd> {
        // The task may be forked by another branch of the tree right now,
        // or be the one installing its own fds (its fdinfo/N).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            match open_reg(&p.file) {
                Err(RestoreError::FileChanged { .. }) if std::time::Instant::now() < deadline && !p.file.path.exists() => {
                    std::thread::sleep(std::time::Duration::from_millis(1))
                }
                r => return r,
            }
        }
    }
}

/// The pid of a `/proc/PID/...` path (not `/proc/self`, which the kernel
/// never shows in a link).
fn proc_pid(path: &Path) -> Option<i32> {
    let rest = path.to_str()?.strip_prefix("/proc/")?;
    let pid = rest.split('/').next()?;
    pid.bytes().all(|b| b.is_ascii_digit()).then(|| pid.parse().ok()).flatten()
}

/// The pids and thread ids of the restored tree (`pstree.img`).
struct TreePids(std::collections::BTreeSet<i32>);

impl SideImage for TreePids {
    fn read(images: &ImageDir) -> Result<Self> {
        let tree: Vec<pb::PstreeEntry> = images.read_all(ImageKind::Pstree, 0)?;
        Ok(TreePids(tree.iter().flat_map(|t| std::iter::once(t.pid.unwrap_or_default()).chain(t.threads.iter().copied())).map(|p| p as i32).collect()))
    }
}

// ---------------------------------------------------------------- dump side

/// A path as [`Reg`] records it.
pub fn dumped(path: &str, md: &std::fs::Metadata, ghost: Option<Ghost>) -> RegDumped {
    RegDumped {
        path: path.to_owned(),
        size: md.len(),
        mode: md.mode(),
        dev_ino: (md.dev(), md.ino()),
        rdev: md.rdev(),
        unlinked: ghost.is_some(),
        ghost,
        external: false,
    }
}

/// Saves an unlinked file through its `/proc/PID/NAME` link (`fd/N`,
/// `exe`, `map_files/START-END`, `cwd`): attributes, and a regular file's
/// data extents, a device's number, a symbolic link's target; `at` names
/// it in errors. The limit (`--ghost-limit`) is on the blocks a regular
/// file occupies, not on its (maybe sparse) size.
pub(crate) fn read_ghost(pid: i32, name: &str, at: &str, md: &std::fs::Metadata, limit: u64) -> std::result::Result<Ghost, FileDumpError> {
    let path = crate::proc::path(pid, name);
    let io = |e: rustix::io::Errno| FileDumpError::Ghost { at: at.into(), source: e.into() };
    let mut ghost = Ghost {
        uid: md.uid(),
        gid: md.gid(),
        mode: md.mode(),
        mtime: (md.mtime(), md.mtime_nsec()),
        atime: (md.atime(), md.atime_nsec()),
        size: 0,
        extents: Vec::new(),
        rdev: 0,
        target: None,
    };
    match md.mode() & libc::S_IFMT {
        libc::S_IFREG => {}
        libc::S_IFCHR | libc::S_IFBLK => return Ok(Ghost { rdev: md.rdev(), ..ghost }),
        libc::S_IFLNK => {
            // An O_PATH descriptor of the link itself: its own copy.
            let fd = name.strip_prefix("fd/").and_then(|n| n.parse::<i32>().ok());
            let Some(fd) = fd else { return Err(FileDumpError::UnsupportedState { at: at.into(), what: "a removed symbolic link".into() }) };
            let pidfd = rustix::process::pidfd_open(rustix::process::Pid::from_raw(pid).ok_or(rustix::io::Errno::SRCH).map_err(io)?, rustix::process::PidfdFlags::empty()).map_err(io)?;
            let own = rustix::process::pidfd_getfd(&pidfd, fd, rustix::process::PidfdGetfdFlags::empty()).map_err(io)?;
            let target = rustix::fs::readlinkat(&own, "", Vec::new()).map_err(io)?;
            ghost.target = Some(target.to_string_lossy().into_owned());
            return Ok(ghost);
        }
        _ => return Ok(ghost),
    }
    let fd = rustix::fs::open(&path, OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOATIME, Mode::empty())
        .or_else(|_| rustix::fs::open(&path, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty()))
        .map_err(io)?;
    // As CRIU counts it: what the file occupies on disk.
    let allocated = md.blocks() * 512;
    if allocated > limit {
        return Err(FileDumpError::GhostTooBig { at: at.into(), size: allocated, limit });
    }
    let size = md.len();
    let ranges = data_ranges(&fd, size).map_err(io)?;
    let mut extents = Vec::with_capacity(ranges.len());
    for (start, end) in ranges {
        let mut buf = vec![0u8; (end - start) as usize];
        let mut got = 0;
        while got < buf.len() {
            match rustix::io::pread(&fd, &mut buf[got..], start + got as u64).map_err(io)? {
                0 => break,
                n => got += n,
            }
        }
        // The file shrank while we read (it cannot: its owner is frozen).
        buf.truncate(got);
        extents.push((start, buf));
    }
    ghost.size = size;
    ghost.extents = extents;
    Ok(ghost)
}

/// The `[start, end)` ranges of `fd` holding data (`SEEK_DATA`,
/// `SEEK_HOLE`); all of it where the file system cannot tell.
fn data_ranges(fd: &OwnedFd, size: u64) -> std::result::Result<Vec<(u64, u64)>, rustix::io::Errno> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < size {
        let start = match rustix::fs::seek(fd, SeekFrom::Data(pos)) {
            Ok(s) => s,
            Err(rustix::io::Errno::NXIO) => break,
            Err(rustix::io::Errno::INVAL) if pos == 0 => return Ok(vec![(0, size)]),
            Err(e) => return Err(e),
        };
        let end = rustix::fs::seek(fd, SeekFrom::Hole(start))?.min(size);
        if end <= start {
            break;
        }
        out.push((start, end));
        pos = end;
    }
    Ok(out)
}

/// A file unlinked from the path it was opened by but still linked under
/// another name: that name cannot be found (CRIU links such a file back
/// with `--link-remap`, which criu-rs does not do), and the path may name
/// another file by the restore.
fn still_linked(at: &str, path: &str, nlink: u64) -> FileDumpError {
    FileDumpError::UnsupportedState {
        at: at.into(),
        what: format!("{path} was unlinked but the file has {nlink} other link(s), whose names criu-rs cannot find (--link-remap is not supported)"),
    }
}

/// Whether `item` is CRIU's `--external` key for a file: `file[MNT:INO]`,
/// mount id and inode in hex.
pub fn external_file_key(item: &str) -> bool {
    let hex = |x: &str| !x.is_empty() && x.bytes().all(|b| b.is_ascii_hexdigit());
    item.strip_prefix("file[").and_then(|r| r.strip_suffix(']')).and_then(|r| r.split_once(':')).is_some_and(|(m, i)| hex(m) && hex(i))
}

/// Strips the ` (deleted)` suffix the kernel adds to unlinked paths.
pub fn strip_deleted(p: &str) -> (&str, bool) {
    match p.strip_suffix(" (deleted)") {
        Some(s) => (s, true),
        None => (p, false),
    }
}

/// Describes the file behind a `/proc/PID/NAME` link (`cwd`, `root`, `exe`,
/// `map_files/START-END`) as an open file description with `flags`; one
/// removed (an unlinked executable or mapped file, a removed working
/// directory) travels as a ghost of at most `ghost_limit` bytes.
pub fn path_file(pid: i32, name: &str, id: u32, flags: u32, ghost_limit: u64) -> std::result::Result<FileDesc, FileDumpError> {
    let target = crate::proc::misc::read_link(pid, name)?;
    let md = std::fs::metadata(crate::proc::path(pid, name)).map_err(|source| FileDumpError::Stat { at: name.into(), source })?;
    let target = target.to_string_lossy().into_owned();
    let (path, deleted) = strip_deleted(&target);
    if deleted && md.nlink() > 0 && md.is_file() {
        return Err(still_linked(name, path, md.nlink()));
    }
    let gone = deleted && md.nlink() == 0 && (md.is_file() || md.is_dir());
    if deleted && md.is_dir() && (!gone || name == "root") {
        return Err(FileDumpError::RemovedDir { at: name.into(), path: path.into() });
    }
    let ghost = if gone { Some(read_ghost(pid, name, name, &md, ghost_limit)?) } else { None };
    Ok(FileDesc { id, flags, pos: 0, fown: Fown::default(), kind: FileKind::Reg(dumped(path, &md, ghost)) })
}

/// The access mode (`O_RDONLY`/`O_WRONLY`/`O_RDWR`) of the file mapped at
/// `/proc/PID/LINK` (`map_files/START-END`), which the kernel shows as the
/// link's owner permissions.
pub fn map_file_flags(pid: i32, link: &str) -> std::result::Result<u32, FileDumpError> {
    let md = std::fs::symlink_metadata(crate::proc::path(pid, link)).map_err(|source| FileDumpError::Stat { at: link.into(), source })?;
    let (r, w) = (md.mode() & libc::S_IRUSR != 0, md.mode() & libc::S_IWUSR != 0);
    Ok(match (r, w) {
        (true, true) => libc::O_RDWR,
        (false, true) => libc::O_WRONLY,
        _ => libc::O_RDONLY,
    } as u32)
}

/// A `reg_file_entry` naming `path` (pos 0; no mount id, size or mode).
pub fn reg_entry(id: u32, flags: u32, fown: &Fown, path: &str) -> pb::RegFileEntry {
    pb::RegFileEntry {
        id: Some(id),
        flags: Some(flags),
        pos: Some(0),
        fown: Some(fown.entry()),
        name: Some(path.to_owned()),
        ..Default::default()
    }
}

/// Pushes the REG entry of `d` with file id `id` (without its ghost).
///
/// No `mnt_id`: as CRIU, which records it only when it dumps the mount
/// namespace (we never do). CRIU's restore resolves a file that has one
/// against the dumped mount tree, and without that tree it links a ghost
/// back into the wrong root (ENOENT).
pub fn write_reg(sink: &mut FilesSink<'_>, id: u32, flags: u32, pos: u64, fown: &Fown, d: &RegDumped) {
    let mut reg = reg_entry(id, flags, fown, &d.path);
    reg.pos = Some(pos);
    reg.ext = d.external.then_some(true);
    // As CRIU: the size only of a regular file, and not of one opened
    // write-only for appending (a log others may write to).
    let append_only = flags & libc::O_ACCMODE as u32 == libc::O_WRONLY as u32 && flags & libc::O_APPEND as u32 != 0;
    reg.size = (d.mode & libc::S_IFMT == libc::S_IFREG && !append_only).then_some(d.size);
    reg.mode = Some(d.mode);
    sink.push(pb::FileEntry { r#type: Some(FdTypes::Reg as i32), id: Some(id), reg: Some(reg), ..Default::default() });
}

/// The ghost of REG entry `file_id`, an unlinked file with inode
/// `dev_ino`: its `remap-fpath.img` record naming the inode's ghost image,
/// and that image if `ghost` holds the contents and it is not written yet.
pub(crate) fn write_ghost_remap(sink: &mut FilesSink<'_>, file_id: u32, dev_ino: (u64, u64), ghost: Option<&Ghost>) -> std::result::Result<(), ImageError> {
    let (gid, write) = sink.image_id_of(ImageKind::GhostFile, dev_ino, ghost.is_some());
    if let (Some(g), true) = (ghost, write) {
        write_ghost(sink.dir, gid, dev_ino, g)?;
    }
    let remap = pb::RemapFilePathEntry { orig_id: Some(file_id), remap_id: Some(gid as u32), remap_type: Some(RemapType::Ghost as i32) };
    sink.side(ImageKind::RemapFpath)?.write_entry(&remap)
}

/// A device number in the kernel's internal encoding (major << 20 | minor),
/// which CRIU images use.
pub fn kdev(dev: u64) -> u32 {
    (libc::major(dev) << 20) | libc::minor(dev)
}

/// `ghost-file-GID.img` as CRIU 4.2 writes it: the entry, then the
/// contents raw (small files) or as one `ghost_chunk_entry` + bytes per
/// data extent.
fn write_ghost(dir: &ImageDir, gid: u64, dev_ino: (u64, u64), g: &Ghost) -> std::result::Result<(), ImageError> {
    let tv = |(sec, nsec): (i64, i64)| pb::Timeval { tv_sec: Some(sec as u64), tv_usec: Some(nsec as u64 / 1000) };
    let regular = g.mode & libc::S_IFMT == libc::S_IFREG;
    let device = matches!(g.mode & libc::S_IFMT, libc::S_IFCHR | libc::S_IFBLK);
    let chunks = regular && g.size >= GHOST_CHUNKS_FROM;
    let ge = pb::GhostFileEntry {
        uid: Some(g.uid),
        gid: Some(g.gid),
        mode: Some(g.mode),
        dev: Some(kdev(dev_ino.0)),
        ino: Some(dev_ino.1),
        // As CRIU: the number as userspace encodes it (mknod's argument).
        rdev: device.then_some(g.rdev as u32),
        atim: Some(tv(g.atime)),
        mtim: Some(tv(g.mtime)),
        chunks: chunks.then_some(true),
        size: chunks.then_some(g.size),
        symlnk_target: g.target.clone(),
    };
    let mut w = dir.create_image(ImageKind::GhostFile, gid)?;
    w.write_entry(&ge)?;
    if !regular {
        // Only a regular file has contents.
    } else if chunks {
        for (off, bytes) in &g.extents {
            w.write_entry_with_payload(&pb::GhostChunkEntry { len: Some(bytes.len() as u64), off: Some(*off) }, bytes)?;
        }
    } else {
        w.write_raw(&dense(g.size, &g.extents))?;
    }
    w.finish()
}

/// The contents of a file of `size` bytes with these extents.
fn dense(size: u64, extents: &[(u64, Vec<u8>)]) -> Vec<u8> {
    let mut out = vec![0u8; size as usize];
    for (off, bytes) in extents {
        let at = (*off as usize).min(out.len());
        let n = bytes.len().min(out.len() - at);
        out[at..at + n].copy_from_slice(&bytes[..n]);
    }
    out
}

// ------------------------------------------------------------- restore side

/// The path and flags of a `reg_file_entry`.
pub fn reg_file(reg: &pb::RegFileEntry) -> RegFile {
    RegFile {
        path: PathBuf::from(reg.name.clone().unwrap_or_default()),
        flags: reg.flags.unwrap_or_default() as i32,
        pos: reg.pos.unwrap_or_default(),
        size: reg.size,
        mode: reg.mode,
    }
}

/// The plan of REG entry `id` if it is a ghost, marked as opened by path
/// by a task ([`GhostFile::by_path`]); `None` for other entries.
pub fn ghost_by_path(id: u32, cx: &LoadCtx<'_>) -> Result<Option<RegPlan>> {
    if !cx.side::<Remaps>()?.0.contains_key(&id) {
        return Ok(None);
    }
    let Some(e) = cx.files.get(&id).filter(|e| e.reg.is_some()) else { return Ok(None) };
    let plan = Reg::load(e, cx)?;
    if let Some((_, g)) = &plan.ghost {
        g.by_path.set(true);
    }
    Ok(Some(plan))
}

/// The ghost image behind REG entry `id`, if it names one.
pub(crate) fn ghost_of(id: u32, cx: &LoadCtx<'_>) -> Result<Option<(u32, Rc<GhostFile>)>> {
    let Some(&ghost_id) = cx.side::<Remaps>()?.0.get(&id) else { return Ok(None) };
    Ok(Some((ghost_id, cx.side::<Ghosts>()?.get(cx.images, ghost_id)?)))
}

/// Makes ghost `g` at a free name near `path` (with the directories
/// missing above it), runs `f` on the name, then removes it all again.
pub(crate) fn with_ghost<T>(path: &Path, g: &Ghost, f: impl FnOnce(&Path) -> Result<T>) -> Result<T> {
    let path = free_name(path);
    let parents = make_parents(&path)?;
    let made = make_ghost(&path, g);
    let out = made.and_then(|()| {
        let out = f(&path);
        let removed = remove_ghost(&path, g);
        let out = out?;
        removed.map(|()| out)
    });
    for d in parents.iter().rev() {
        let _ = rustix::fs::rmdir(d);
    }
    out
}

/// `remap-fpath.img`: original file id → ghost file id (ghosts only).
struct Remaps(BTreeMap<u32, u32>);

impl SideImage for Remaps {
    fn read(images: &ImageDir) -> Result<Self> {
        let mut out = BTreeMap::new();
        if !images.exists(ImageKind::RemapFpath, 0) {
            return Ok(Remaps(out));
        }
        let path = images.image_path(ImageKind::RemapFpath, 0);
        for r in images.read_all::<pb::RemapFilePathEntry>(ImageKind::RemapFpath, 0)? {
            let (orig, remap) = (r.orig_id.unwrap_or_default(), r.remap_id.unwrap_or_default());
            let ghost = r.remap_type == Some(RemapType::Ghost as i32) || remap & REMAP_GHOST != 0;
            if !ghost {
                return Err(RestoreError::Unsupported { file: path, what: format!("remap of file {orig:#x} that is not a ghost") });
            }
            out.insert(orig, remap & !REMAP_GHOST);
        }
        Ok(Remaps(out))
    }
}

/// Ghost files loaded so far (several descriptions may name one).
#[derive(Default)]
struct Ghosts(RefCell<BTreeMap<u32, Rc<GhostFile>>>);

impl SideImage for Ghosts {
    fn read(_images: &ImageDir) -> Result<Self> {
        Ok(Ghosts::default())
    }
}

impl Ghosts {
    /// Ghost file `id`, read on first use.
    fn get(&self, images: &ImageDir, id: u32) -> Result<Rc<GhostFile>> {
        if let Some(g) = self.0.borrow().get(&id) {
            return Ok(g.clone());
        }
        let g = Rc::new(GhostFile { ghost: load_ghost(images, id)?, by_path: Default::default() });
        self.0.borrow_mut().insert(id, g.clone());
        Ok(g)
    }
}

/// Ghost file `id` (`ghost-file-ID.img`): CRIU's chunked form, its raw
/// form (contents up to the end of the image, no size), or ours before
/// chunks (raw, `size` set).
fn load_ghost(images: &ImageDir, id: u32) -> Result<Ghost> {
    let path = images.image_path(ImageKind::GhostFile, id as u64);
    let mut r = images.open_image(ImageKind::GhostFile, id as u64)?;
    let g: pb::GhostFileEntry = r.read_next()?;
    let mode = g.mode.unwrap_or_default();
    if !ghost_type(mode & libc::S_IFMT) {
        return Err(RestoreError::Unsupported { file: path, what: format!("ghost file of mode {mode:o} (not a regular file, directory, device, FIFO or symbolic link)") });
    }
    if mode & libc::S_IFMT == libc::S_IFLNK && g.symlnk_target.as_deref().is_none_or(str::is_empty) {
        return Err(RestoreError::bad(&path, "ghost symbolic link without its target"));
    }
    let time = |t: &Option<pb::Timeval>| t.as_ref().map_or((0, 0), |t| (t.tv_sec.unwrap_or_default() as i64, t.tv_usec.unwrap_or_default() as i64 * 1000));
    let mut ghost = Ghost {
        uid: g.uid.unwrap_or_default(),
        gid: g.gid.unwrap_or_default(),
        mode,
        mtime: time(&g.mtim),
        atime: time(&g.atim),
        size: 0,
        extents: Vec::new(),
        rdev: g.rdev.unwrap_or_default() as u64,
        target: g.symlnk_target.clone(),
    };
    if mode & libc::S_IFMT != libc::S_IFREG {
        // No contents.
    } else if g.chunks == Some(true) {
        let size = g.size.ok_or_else(|| RestoreError::bad(&path, "chunked ghost file without its size"))?;
        let mut end_prev = 0;
        while let Some(c) = r.read_entry::<pb::GhostChunkEntry>()? {
            let (off, len) = (c.off.unwrap_or_default(), c.len.unwrap_or_default());
            let end = off.checked_add(len).filter(|&e| e <= size && off >= end_prev);
            let Some(end) = end else {
                return Err(RestoreError::bad(&path, format!("chunk {off:#x}+{len:#x} overlaps another or is past the file size {size}")));
            };
            ghost.extents.push((off, r.read_raw(len)?));
            end_prev = end;
        }
        ghost.size = size;
    } else {
        let len = match g.size {
            Some(size) => size,
            None => {
                let total = std::fs::metadata(&path).map_err(|source| RestoreError::ImageIo { file: path.clone(), source })?.len();
                total.saturating_sub(r.offset())
            }
        };
        ghost.extents.push((0, r.read_raw(len)?));
        r.expect_eof("ghost_file_entry contents")?;
        ghost.size = len;
    }
    Ok(ghost)
}

/// Opens a regular file or directory by path and checks it against the dump.
pub fn open_reg(r: &RegFile) -> Result<OwnedFd> {
    let mut flags = r.flags & !CREATE_ONLY;
    if flags & TMPFILE_BIT != 0 {
        // Made with O_TMPFILE: a regular file now reopened by path.
        flags &= !libc::O_TMPFILE;
    }
    let flags = OFlags::from_bits_retain(flags as u32) | OFlags::CLOEXEC | OFlags::NOCTTY;
    let fd = rustix::fs::open(&r.path, flags, Mode::empty()).map_err(|e| RestoreError::FileChanged {
        path: r.path.clone(),
        problem: format!("cannot reopen: {e}"),
    })?;
    check_reg(&fd, r)?;
    if r.pos != 0 && !crate::restore::failpoint::skip(crate::restore::failpoint::SKIP_FD_POS) {
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

/// Recreates an unlinked file from its saved contents (holes kept), with
/// its owner, mode and times, opens it with the dumped flags and removes
/// it again, unless `by_path`: then it is made at its own path (which must
/// be free) and left there. Missing directories on the way are made too
/// (and removed). Returns the description, an `O_PATH` keeper of the file
/// (for its other descriptions) and, when `by_path`, what the caller
/// removes once the tasks opened it (the file, then the directories
/// made; `true`: a directory).
fn open_ghost(r: &RegFile, g: &Ghost, by_path: bool) -> Result<(OwnedFd, OwnedFd, Vec<(PathBuf, bool)>)> {
    let path = if by_path { r.path.clone() } else { free_name(&r.path) };
    if by_path && std::fs::symlink_metadata(&path).is_ok() {
        return Err(RestoreError::FileChanged {
            path,
            problem: "a task opens this removed file by its path (a mapping, its working directory), but something else is there now".into(),
        });
    }
    let parents = make_parents(&path)?;
    let remove_parents = || {
        for d in parents.iter().rev() {
            let _ = rustix::fs::rmdir(d);
        }
    };
    if let Err(e) = make_ghost(&path, g) {
        remove_parents();
        return Err(e);
    }
    let fds = (|| -> Result<(OwnedFd, OwnedFd)> {
        let keeper = rustix::fs::open(&path, OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC, Mode::empty())
            .sys(|| format!("opening ghost file {}", path.display()))?;
        Ok((open_reg(&RegFile { path: path.clone(), ..r.clone() })?, keeper))
    })();
    if by_path && fds.is_ok() {
        let (fd, keeper) = fds?;
        let mut linked = vec![(path, g.mode & libc::S_IFMT == libc::S_IFDIR)];
        linked.extend(parents.into_iter().rev().map(|d| (d, true)));
        return Ok((fd, keeper, linked));
    }
    let removed = remove_ghost(&path, g);
    remove_parents();
    let (fd, keeper) = fds?;
    removed?;
    Ok((fd, keeper, Vec::new()))
}

/// Makes the missing directories above `path` (removed with the file),
/// outermost first; returns them in that order.
fn make_parents(path: &Path) -> Result<Vec<PathBuf>> {
    let missing: Vec<&Path> = path.ancestors().skip(1).take_while(|d| !d.as_os_str().is_empty() && std::fs::symlink_metadata(d).is_err()).collect();
    let mut made = Vec::new();
    for d in missing.into_iter().rev() {
        if let Err(e) = rustix::fs::mkdir(d, Mode::from_bits_truncate(0o755)) {
            for m in made.iter().rev() {
                let _ = rustix::fs::rmdir(m);
            }
            return Err(RestoreError::sys(format!("mkdir {} (above ghost file {})", d.display(), path.display()), e));
        }
        made.push(d.to_path_buf());
    }
    Ok(made)
}

/// `rmdir` or `unlink` of a recreated ghost.
fn remove_ghost(path: &Path, g: &Ghost) -> Result<()> {
    let r = if g.mode & libc::S_IFMT == libc::S_IFDIR { rustix::fs::rmdir(path) } else { rustix::fs::unlink(path) };
    r.sys(|| format!("removing ghost file {}", path.display()))
}

/// Makes the ghost's file at `path`: a regular file with its contents, or
/// the directory, device, FIFO or symbolic link; then its owner, mode and
/// times.
fn make_ghost(path: &Path, g: &Ghost) -> Result<()> {
    use rustix::fs::{AtFlags, FileType, CWD};
    let what = |call: &str| format!("{call} for ghost file {}", path.display());
    let ty = g.mode & libc::S_IFMT;
    let made = match ty {
        libc::S_IFREG => {
            let create = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::CLOEXEC;
            let w = rustix::fs::open(path, create, Mode::from_bits_truncate(0o600)).sys(|| format!("creating ghost file {}", path.display()))?;
            return fill_ghost(&w, path, g).inspect_err(|_| {
                let _ = rustix::fs::unlink(path);
            });
        }
        libc::S_IFDIR => rustix::fs::mkdir(path, Mode::from_bits_truncate(0o700)).sys(|| what("mkdir")),
        libc::S_IFLNK => rustix::fs::symlink(g.target.as_deref().unwrap_or_default(), path).sys(|| what("symlink")),
        _ => rustix::fs::mknodat(CWD, path, FileType::from_raw_mode(ty), Mode::from_bits_truncate(0o600), g.rdev).sys(|| what("mknod")),
    };
    made?;
    let attrs = (|| {
        let (uid, gid) = (rustix::fs::Uid::from_raw(g.uid), rustix::fs::Gid::from_raw(g.gid));
        rustix::fs::chownat(CWD, path, Some(uid), Some(gid), AtFlags::SYMLINK_NOFOLLOW).sys(|| what("chown"))?;
        if ty != libc::S_IFLNK {
            rustix::fs::chmodat(CWD, path, Mode::from_bits_truncate(g.mode & 0o7777), AtFlags::empty()).sys(|| what("chmod"))?;
        }
        let ts = |(sec, nsec): (i64, i64)| rustix::fs::Timespec { tv_sec: sec, tv_nsec: nsec as _ };
        let times = rustix::fs::Timestamps { last_access: ts(g.atime), last_modification: ts(g.mtime) };
        rustix::fs::utimensat(CWD, path, &times, AtFlags::SYMLINK_NOFOLLOW).sys(|| what("utimensat"))
    })();
    if attrs.is_err() {
        let _ = remove_ghost(path, g);
    }
    attrs
}

/// Writes a ghost's extents, size, owner, mode (after the owner, which
/// clears set-id bits) and times into the new file `w`.
fn fill_ghost(w: &OwnedFd, path: &Path, g: &Ghost) -> Result<()> {
    let what = |call: &str| format!("{call} on ghost file {}", path.display());
    for (off, bytes) in &g.extents {
        let mut done = 0;
        while done < bytes.len() {
            done += rustix::io::pwrite(w, &bytes[done..], off + done as u64).sys(|| what("pwrite"))?;
        }
    }
    rustix::fs::ftruncate(w, g.size).sys(|| what("ftruncate"))?;
    let (uid, gid) = (rustix::fs::Uid::from_raw(g.uid), rustix::fs::Gid::from_raw(g.gid));
    rustix::fs::fchown(w, Some(uid), Some(gid)).sys(|| what("fchown"))?;
    rustix::fs::fchmod(w, Mode::from_bits_truncate(g.mode & 0o7777)).sys(|| what("fchmod"))?;
    let ts = |(sec, nsec): (i64, i64)| rustix::fs::Timespec { tv_sec: sec, tv_nsec: nsec as _ };
    let times = rustix::fs::Timestamps { last_access: ts(g.atime), last_modification: ts(g.mtime) };
    rustix::fs::futimens(w, &times).sys(|| what("futimens"))
}

/// `path` if nothing exists there, else a sibling name that is free.
fn free_name(path: &Path) -> PathBuf {
    if std::fs::symlink_metadata(path).is_err() {
        return path.to_path_buf();
    }
    (0..)
        .map(|i| path.with_file_name(format!("{}.criu-rs-ghost.{i}", path.file_name().unwrap_or_default().to_string_lossy())))
        .find(|p| std::fs::symlink_metadata(p).is_err())
        .unwrap_or_else(|| path.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::files::roundtrip::{crit_decodes, desc, roundtrip};
    use crate::files::{DescPlan, LoadOptions};

    fn file(path: &str, ghost: Option<Ghost>) -> FileKind {
        FileKind::Reg(RegDumped {
            path: path.into(),
            size: 5,
            mode: libc::S_IFREG | 0o640,
            dev_ino: (0x803, 42),
            rdev: 0,
            unlinked: ghost.is_some(),
            ghost,
            external: false,
        })
    }

    fn sparse_ghost() -> Ghost {
        let extents = vec![(0, b"head".to_vec()), (1 << 20, vec![7u8; 5000])];
        Ghost { uid: 1, gid: 2, mode: libc::S_IFREG | 0o6604, mtime: (123456, 789000), atime: (5, 6000), size: (1 << 20) + 8192, extents, rdev: 0, target: None }
    }

    #[test]
    fn path_and_ghosts_round_trip() {
        let small = Ghost { size: 5, extents: vec![(0, b"gone!".to_vec())], ..sparse_ghost() };
        let mut a = desc(1, libc::O_RDWR | libc::O_APPEND, file("/tmp/a", None));
        a.pos = 3;
        let b = desc(2, libc::O_RDONLY, file("/tmp/b", Some(small.clone())));
        let mut c = desc(3, libc::O_RDONLY, file("/tmp/c", Some(sparse_ghost())));
        if let FileKind::Reg(d) = &mut c.kind {
            d.dev_ino.1 = 43;
        }
        let (plans, tmp) = roundtrip(&[a, b, c], &LoadOptions::default());
        let plans = plans.unwrap();
        let a_file = RegFile { path: "/tmp/a".into(), flags: libc::O_RDWR | libc::O_APPEND, pos: 3, size: Some(5), mode: Some(libc::S_IFREG | 0o640) };
        assert_eq!(plans[&1], DescPlan::Reg(RegPlan { file: a_file, ghost: None, inherited: None, in_task: false }));
        let ghost_of = |id| match &plans[&id] {
            DescPlan::Reg(RegPlan { ghost: Some((_, g)), file, .. }) => (file.path.clone(), g.ghost.clone()),
            other => panic!("{other:?}"),
        };
        assert_eq!(ghost_of(2), ("/tmp/b".into(), small));
        // Times travel in microseconds; the holes stay holes.
        assert_eq!(ghost_of(3), ("/tmp/c".into(), sparse_ghost()));
        for name in ["files.img", "remap-fpath.img", "ghost-file-1.img", "ghost-file-2.img"] {
            crit_decodes(&tmp.path().join(name));
        }
        // CRIU's forms: small files raw without a size, larger ones in chunks.
        let dir = ImageDir::open_unchecked(tmp.path());
        let mut r = dir.open_image(ImageKind::GhostFile, 1).unwrap();
        let e: pb::GhostFileEntry = r.read_next().unwrap();
        assert_eq!((e.size, e.chunks), (None, None));
        let e: pb::GhostFileEntry = dir.open_image(ImageKind::GhostFile, 2).unwrap().read_next().unwrap();
        assert_eq!((e.size, e.chunks, e.rdev), (Some((1 << 20) + 8192), Some(true), None));
    }

    #[test]
    fn ghost_is_recreated_sparse_with_owner_mode_and_times() {
        let tmp = tempfile::tempdir().unwrap();
        let file = RegFile { path: tmp.path().join("g"), flags: libc::O_RDWR, pos: 4, size: None, mode: Some(libc::S_IFREG | 0o644) };
        let g = sparse_ghost();
        let (fd, _keeper, linked) = open_ghost(&file, &g, false).unwrap();
        assert!(linked.is_empty());
        assert!(std::fs::read_dir(tmp.path()).unwrap().next().is_none(), "the ghost is unlinked again");
        let st = rustix::fs::fstat(&fd).unwrap();
        assert_eq!((st.st_uid, st.st_gid, st.st_mode, st.st_size as u64), (1, 2, libc::S_IFREG | 0o6604, g.size));
        assert_eq!((st.st_mtime, st.st_mtime_nsec), (123456, 789000));
        assert!((st.st_blocks as u64) * 512 < 64 << 10, "holes kept: {} blocks", st.st_blocks);
        assert_eq!(rustix::fs::seek(&fd, SeekFrom::Current(0)).unwrap(), 4);
        let mut buf = [0u8; 4];
        rustix::io::pread(&fd, &mut buf, 0).unwrap();
        assert_eq!(&buf, b"head");
        rustix::io::pread(&fd, &mut buf, (1 << 20) + 4996).unwrap();
        assert_eq!(buf, [7, 7, 7, 7]);
    }

    /// Two descriptions of one unlinked inode (the second collected without
    /// the contents): one ghost image, both remaps naming it; restored as
    /// one file, each description with its own flags and position.
    #[test]
    fn one_ghost_per_inode() {
        let tmp_files = tempfile::tempdir().unwrap();
        let path = tmp_files.path().join("g").to_str().unwrap().to_owned();
        let small = Ghost { size: 5, extents: vec![(0, b"gone!".to_vec())], ..sparse_ghost() };
        let a = desc(1, libc::O_RDWR, file(&path, Some(small)));
        let mut b = desc(2, libc::O_RDONLY, file(&path, None));
        b.pos = 2;
        if let FileKind::Reg(d) = &mut b.kind {
            d.unlinked = true;
        }
        let (plans, tmp) = roundtrip(&[b, a], &LoadOptions::default());
        let plans = plans.unwrap();
        let names: Vec<String> = std::fs::read_dir(tmp.path()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        assert_eq!(names.iter().filter(|n| n.starts_with("ghost-file-")).count(), 1, "{names:?}");
        let dir = ImageDir::open_unchecked(tmp.path());
        let remaps: Vec<pb::RemapFilePathEntry> = dir.read_all(ImageKind::RemapFpath, 0).unwrap();
        assert_eq!(remaps.iter().map(|r| (r.orig_id.unwrap(), r.remap_id.unwrap())).collect::<Vec<_>>(), vec![(2, 1), (1, 1)]);
        let (opened, _) = crate::files::fdtable::open_descs(&plans, 100).unwrap();
        assert!(std::fs::read_dir(tmp_files.path()).unwrap().next().is_none(), "recreated once and unlinked again");
        let (rw, ro) = (&opened[&1], &opened[&2]);
        let (st1, st2) = (rustix::fs::fstat(rw).unwrap(), rustix::fs::fstat(ro).unwrap());
        assert_eq!((st1.st_dev, st1.st_ino), (st2.st_dev, st2.st_ino), "one inode");
        rustix::io::pwrite(rw, b"NE", 2).unwrap();
        let mut buf = [0u8; 3];
        assert_eq!(rustix::io::read(ro, &mut buf).unwrap(), 3, "read from position 2");
        assert_eq!(&buf, b"NE!", "a write through one seen through the other");
        assert_eq!(rustix::fs::fcntl_getfl(ro).unwrap() & OFlags::ACCMODE, OFlags::RDONLY);
    }

    #[test]
    fn reopened_file_is_checked_against_the_dump() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("f");
        std::fs::write(&path, b"hello").unwrap();
        let file = RegFile { path: path.clone(), flags: libc::O_RDONLY, pos: 2, size: Some(5), mode: Some(libc::S_IFREG | 0o644) };
        let fd = open_reg(&file).unwrap();
        assert_eq!(rustix::fs::seek(&fd, SeekFrom::Current(0)).unwrap(), 2);
        std::fs::write(&path, b"hello, world").unwrap();
        let err = open_reg(&file).unwrap_err().to_string();
        assert!(err.contains("size changed since the dump (5 → 12 bytes)"), "{err}");
    }

    /// Ghosts of other kinds of files: a directory whose parent is gone too
    /// (kept at its path for the tasks, then removed with the parent made
    /// for it), a device node and a symbolic link; each through its image
    /// (as CRIU writes them: no contents, `rdev`, `symlnk_target`).
    #[test]
    fn removed_directories_devices_and_links_are_made_again_and_removed() {
        let tmp = tempfile::tempdir().unwrap();
        let images = tempfile::tempdir().unwrap();
        let dir = ImageDir::create(images.path()).unwrap();
        let base = Ghost { uid: 0, gid: 0, mode: 0, mtime: (1000, 0), atime: (1000, 0), size: 0, extents: vec![], rdev: 0, target: None };
        let kinds = [
            Ghost { mode: libc::S_IFDIR | 0o710, ..base.clone() },
            Ghost { mode: libc::S_IFCHR | 0o640, rdev: libc::makedev(1, 3), ..base.clone() },
            Ghost { mode: libc::S_IFLNK | 0o777, target: Some("somewhere".into()), ..base.clone() },
        ];
        for (i, g) in kinds.iter().enumerate() {
            write_ghost(&dir, i as u64 + 1, (0x803, 42 + i as u64), g).unwrap();
            crit_decodes(&images.path().join(format!("ghost-file-{}.img", i + 1)));
            assert_eq!(&load_ghost(&dir, i as u32 + 1).unwrap(), g);
        }
        let file = |name: &str, flags: i32| RegFile { path: tmp.path().join(name), flags, pos: 0, size: None, mode: None };

        let (fd, _keeper, linked) = open_ghost(&file("a/b", DIR_FLAGS as i32), &kinds[0], true).unwrap();
        assert!(tmp.path().join("a/b").is_dir(), "kept at its path for the tasks");
        let mut linked = LinkedGhosts(linked);
        linked.remove_all().unwrap();
        assert!(std::fs::read_dir(tmp.path()).unwrap().next().is_none(), "the directory and the parent made for it are gone");
        let st = rustix::fs::fstat(&fd).unwrap();
        assert_eq!((st.st_mode, st.st_nlink), (libc::S_IFDIR | 0o710, 0));

        let (fd, _keeper, _) = open_ghost(&file("null", libc::O_RDWR), &kinds[1], false).unwrap();
        let st = rustix::fs::fstat(&fd).unwrap();
        assert_eq!((st.st_mode, st.st_rdev, st.st_nlink), (libc::S_IFCHR | 0o640, libc::makedev(1, 3), 0));
        assert_eq!(rustix::io::write(&fd, b"x").unwrap(), 1);

        let (fd, _keeper, _) = open_ghost(&file("link", libc::O_PATH | libc::O_NOFOLLOW), &kinds[2], false).unwrap();
        assert_eq!(rustix::fs::readlinkat(&fd, "", Vec::new()).unwrap().to_str().unwrap(), "somewhere");
        assert!(std::fs::read_dir(tmp.path()).unwrap().next().is_none(), "every ghost removed again");
    }
}
