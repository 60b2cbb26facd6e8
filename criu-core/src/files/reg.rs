//! Files opened by path (`FD_TYPES__REG`): regular files, directories,
//! devices that are not terminals (`/dev/null`, `/dev/urandom`, as CRIU
//! does), and files unlinked while open ("ghosts": their contents travel in
//! `ghost-file-N.img`, named by a `remap-fpath.img` record, and restore
//! recreates, opens and unlinks them again).
//!
//! Also the files behind `/proc/PID/{cwd,root,exe,map_files/..}`
//! ([`path_file`]), which are REG entries nobody's fd refers to.

use super::fdtable::write_all;
use super::{CollectCtx, FdKind, FdProbe, FileDesc, FileDumpError, FileKind, FilesSink, Fown, LoadCtx, OpenCtx, Opened, SideImage};
use crate::images::pb::{self, FdTypes, RemapType};
use crate::images::{ImageDir, ImageError, ImageKind};
use crate::restore::error::{RestoreError, Result, SysContext};
use rustix::fd::OwnedFd;
use rustix::fs::{Mode, OFlags, SeekFrom};
use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Largest unlinked file whose contents we keep.
pub const GHOST_LIMIT: u64 = 64 << 20;

/// Open flags CRIU records for directories (cwd, root).
pub const DIR_FLAGS: u32 = (libc::O_RDONLY | libc::O_DIRECTORY) as u32;

/// Top bit of `remap_file_path_entry.remap_id`: the target is a ghost file.
const REMAP_GHOST: u32 = 1 << 31;

/// Open flags that only matter when creating a file; never replayed.
const CREATE_ONLY: i32 = libc::O_CREAT | libc::O_EXCL | libc::O_TRUNC | libc::O_NOCTTY | libc::O_CLOEXEC;

/// The kind.
pub struct Reg;

/// A path as dumped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegDumped {
    /// Path (without ` (deleted)`).
    pub path: String,
    /// Mount id.
    pub mnt_id: i32,
    /// `st_size`.
    pub size: u64,
    /// `st_mode`.
    pub mode: u32,
    /// `st_dev` and `st_ino`.
    pub dev_ino: (u64, u64),
    /// `st_rdev` (devices).
    pub rdev: u64,
    /// Contents of a file unlinked while open.
    pub ghost: Option<Ghost>,
}

/// An unlinked file's saved contents and attributes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ghost {
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Mode.
    pub mode: u32,
    /// Modification time (sec, nsec).
    pub mtime: (i64, i64),
    /// Access time (sec, nsec).
    pub atime: (i64, i64),
    /// The contents.
    pub data: Vec<u8>,
}

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
    /// An unlinked file's contents: recreated, opened, unlinked again.
    pub ghost: Option<Vec<u8>>,
}

impl FdKind for Reg {
    const FD_TYPE: FdTypes = FdTypes::Reg;
    type Dumped = RegDumped;
    type Plan = RegPlan;
    type OpenState = ();

    fn claims(p: &FdProbe) -> bool {
        matches!(p.file_type(), libc::S_IFREG | libc::S_IFDIR | libc::S_IFCHR | libc::S_IFBLK) && p.target.starts_with('/')
    }

    fn collect(p: &FdProbe, _cx: &mut CollectCtx<'_>) -> std::result::Result<RegDumped, FileDumpError> {
        let (path, deleted) = strip_deleted(&p.target);
        let ghost = if deleted && p.md.nlink() == 0 && p.file_type() == libc::S_IFREG {
            Some(read_ghost(p.pid, &format!("fd/{}", p.fd), &p.at(), &p.md)?)
        } else {
            None
        };
        Ok(dumped(path, p.info.mnt_id, &p.md, ghost))
    }

    fn write(f: &FileDesc, d: &RegDumped, sink: &mut FilesSink<'_>) -> std::result::Result<(), ImageError> {
        write_reg(sink, f.id, f.flags, f.pos, &f.fown, d);
        if let Some(g) = &d.ghost {
            let gid = sink.next_image_id(ImageKind::GhostFile);
            write_ghost(sink.dir, gid, d, g)?;
            let remap = pb::RemapFilePathEntry { orig_id: Some(f.id), remap_id: Some(gid as u32), remap_type: Some(RemapType::Ghost as i32) };
            sink.side(ImageKind::RemapFpath)?.write_entry(&remap)?;
        }
        Ok(())
    }

    fn load(e: &pb::FileEntry, cx: &LoadCtx<'_>) -> Result<RegPlan> {
        let id = e.id.unwrap_or_default();
        let reg = e.reg.as_ref().ok_or_else(|| cx.bad(format!("file {id:#x} is REG without reg_file_entry")))?;
        let file = reg_file(reg);
        match cx.side::<Remaps>()?.0.get(&id) {
            Some(&ghost_id) => Ok(RegPlan { ghost: Some(load_ghost(cx.images, ghost_id)?), file: RegFile { size: None, ..file } }),
            None => Ok(RegPlan { file, ghost: None }),
        }
    }

    fn open(p: &RegPlan, _st: &mut (), _cx: &OpenCtx<'_>) -> Result<Opened> {
        match &p.ghost {
            None => open_reg(&p.file),
            Some(contents) => open_ghost(&p.file, contents),
        }
        .map(Opened::Fd)
    }

    fn name(p: &RegPlan) -> String {
        p.file.path.display().to_string()
    }
}

// ---------------------------------------------------------------- dump side

/// A path as [`Reg`] records it (`mnt_id` -1: unknown).
pub fn dumped(path: &str, mnt_id: i32, md: &std::fs::Metadata, ghost: Option<Ghost>) -> RegDumped {
    RegDumped {
        path: path.to_owned(),
        mnt_id,
        size: md.len(),
        mode: md.mode(),
        dev_ino: (md.dev(), md.ino()),
        rdev: md.rdev(),
        ghost,
    }
}

/// Saves an unlinked file through its `/proc/PID/NAME` link (`fd/N`,
/// `exe`, `map_files/START-END`); `at` names it in errors.
fn read_ghost(pid: i32, name: &str, at: &str, md: &std::fs::Metadata) -> std::result::Result<Ghost, FileDumpError> {
    if md.len() > GHOST_LIMIT {
        return Err(FileDumpError::GhostTooBig { at: at.into(), size: md.len(), limit: GHOST_LIMIT });
    }
    let path = crate::proc::path(pid, name);
    let data = std::fs::read(&path).map_err(|source| FileDumpError::Ghost { at: at.into(), source })?;
    Ok(Ghost {
        uid: md.uid(),
        gid: md.gid(),
        mode: md.mode(),
        mtime: (md.mtime(), md.mtime_nsec()),
        atime: (md.atime(), md.atime_nsec()),
        data,
    })
}

/// Strips the ` (deleted)` suffix the kernel adds to unlinked paths.
pub fn strip_deleted(p: &str) -> (&str, bool) {
    match p.strip_suffix(" (deleted)") {
        Some(s) => (s, true),
        None => (p, false),
    }
}

/// Describes the file behind a `/proc/PID/NAME` link (`cwd`, `root`, `exe`,
/// `map_files/START-END`) as an open file description with `flags`.
pub fn path_file(pid: i32, name: &str, id: u32, flags: u32) -> std::result::Result<FileDesc, FileDumpError> {
    let target = crate::proc::misc::read_link(pid, name)?;
    let md = std::fs::metadata(crate::proc::path(pid, name)).map_err(|source| FileDumpError::Stat { at: name.into(), source })?;
    let target = target.to_string_lossy().into_owned();
    let (path, deleted) = strip_deleted(&target);
    if deleted && md.is_dir() {
        return Err(FileDumpError::RemovedDir { at: name.into(), path: path.into() });
    }
    // An unlinked executable or mapped file (or a memfd) travels as a ghost.
    let ghost = if deleted && md.is_file() && md.nlink() == 0 { Some(read_ghost(pid, name, name, &md)?) } else { None };
    Ok(FileDesc { id, flags, pos: 0, fown: Fown::default(), kind: FileKind::Reg(dumped(path, -1, &md, ghost)) })
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
pub fn write_reg(sink: &mut FilesSink<'_>, id: u32, flags: u32, pos: u64, fown: &Fown, d: &RegDumped) {
    let mut reg = reg_entry(id, flags, fown, &d.path);
    reg.pos = Some(pos);
    reg.mnt_id = Some(d.mnt_id);
    reg.size = Some(d.size);
    reg.mode = Some(d.mode);
    sink.push(pb::FileEntry { r#type: Some(FdTypes::Reg as i32), id: Some(id), reg: Some(reg), ..Default::default() });
}

/// A device number in the kernel's internal encoding (major << 20 | minor),
/// which CRIU images use.
pub fn kdev(dev: u64) -> u32 {
    (libc::major(dev) << 20) | libc::minor(dev)
}

/// `ghost-file-GID.img`: the entry and the contents.
fn write_ghost(dir: &ImageDir, gid: u64, d: &RegDumped, g: &Ghost) -> std::result::Result<(), ImageError> {
    let tv = |(sec, nsec): (i64, i64)| pb::Timeval { tv_sec: Some(sec as u64), tv_usec: Some(nsec as u64 / 1000) };
    let ge = pb::GhostFileEntry {
        uid: Some(g.uid),
        gid: Some(g.gid),
        mode: Some(g.mode),
        dev: Some(kdev(d.dev_ino.0)),
        ino: Some(d.dev_ino.1),
        rdev: Some(kdev(d.rdev)),
        atim: Some(tv(g.atime)),
        mtim: Some(tv(g.mtime)),
        chunks: Some(false),
        size: Some(g.data.len() as u64),
        symlnk_target: None,
    };
    let mut w = dir.create_image(ImageKind::GhostFile, gid)?;
    w.write_entry(&ge)?;
    w.write_raw(&g.data)?;
    w.finish()
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

/// The saved contents of ghost file `id` (`ghost-file-ID.img`).
fn load_ghost(images: &ImageDir, id: u32) -> Result<Vec<u8>> {
    let path = images.image_path(ImageKind::GhostFile, id as u64);
    let mut r = images.open_image(ImageKind::GhostFile, id as u64)?;
    let g: pb::GhostFileEntry = r.read_next()?;
    if g.mode.unwrap_or_default() & libc::S_IFMT != libc::S_IFREG {
        return Err(RestoreError::Unsupported { file: path, what: "ghost that is not a regular file".into() });
    }
    let size = g.size.unwrap_or_default();
    let mut data = Vec::new();
    if g.chunks == Some(true) {
        data.resize(size as usize, 0u8);
        while let Some(c) = r.read_entry::<pb::GhostChunkEntry>()? {
            let (off, len) = (c.off.unwrap_or_default(), c.len.unwrap_or_default());
            let end = off.checked_add(len).filter(|&e| e <= size);
            let Some(end) = end else {
                return Err(RestoreError::bad(&path, format!("chunk {off:#x}+{len:#x} is past the file size {size}")));
            };
            r.read_raw_into(&mut data[off as usize..end as usize])?;
        }
    } else {
        data = r.read_raw(size)?;
        r.expect_eof("ghost_file_entry contents")?;
    }
    Ok(data)
}

/// Opens a regular file or directory by path and checks it against the dump.
pub fn open_reg(r: &RegFile) -> Result<OwnedFd> {
    let flags = OFlags::from_bits_retain((r.flags & !CREATE_ONLY) as u32) | OFlags::CLOEXEC | OFlags::NOCTTY;
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

/// Recreates an unlinked file from its saved contents, opens it with the
/// dumped flags and unlinks it again.
fn open_ghost(r: &RegFile, contents: &[u8]) -> Result<OwnedFd> {
    let path = free_name(&r.path);
    let perm = Mode::from_bits_truncate(r.mode.unwrap_or(0o600) & 0o7777);
    let create = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::CLOEXEC;
    let w = rustix::fs::open(&path, create, perm).sys(|| format!("creating ghost file {}", path.display()))?;
    rustix::fs::fchmod(&w, perm).sys(|| format!("fchmod({})", path.display()))?;
    write_all(&w, contents).map_err(|e| RestoreError::sys(format!("writing ghost file {}", path.display()), e))?;
    drop(w);
    let fd = open_reg(&RegFile { path: path.clone(), ..r.clone() });
    let unlinked = rustix::fs::unlink(&path).sys(|| format!("unlinking ghost file {}", path.display()));
    let fd = fd?;
    unlinked?;
    Ok(fd)
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
            mnt_id: 7,
            size: 5,
            mode: libc::S_IFREG | 0o640,
            dev_ino: (0x803, 42),
            rdev: 0,
            ghost,
        })
    }

    #[test]
    fn path_and_ghost_round_trip() {
        let ghost = Ghost { uid: 1, gid: 2, mode: libc::S_IFREG | 0o600, mtime: (3, 4000), atime: (5, 6000), data: b"gone!".to_vec() };
        let mut a = desc(1, libc::O_RDWR | libc::O_APPEND, file("/tmp/a", None));
        a.pos = 3;
        let b = desc(2, libc::O_RDONLY, file("/tmp/b", Some(ghost)));
        let (plans, tmp) = roundtrip(&[a, b], &LoadOptions::default());
        let plans = plans.unwrap();
        let a_file = RegFile { path: "/tmp/a".into(), flags: libc::O_RDWR | libc::O_APPEND, pos: 3, size: Some(5), mode: Some(libc::S_IFREG | 0o640) };
        assert_eq!(plans[&1], DescPlan::Reg(RegPlan { file: a_file, ghost: None }));
        let DescPlan::Reg(b) = &plans[&2] else { panic!("{plans:?}") };
        assert_eq!((b.file.path.to_str(), b.file.size, b.ghost.as_deref()), (Some("/tmp/b"), None, Some(&b"gone!"[..])));
        for name in ["files.img", "remap-fpath.img", "ghost-file-1.img"] {
            crit_decodes(&tmp.path().join(name));
        }
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
}
