//! memfds (`FD_TYPES__MEMFD`, as CRIU writes them): each open description
//! is a `memfd_file_entry` in `files.img` (flags, position, inode id); each
//! memfd inode, once, a `memfd_inode_entry` in `memfd.img` (name, size,
//! owner, mode, seals, `shmid` = its inode number), its contents in
//! `pagemap-shmem-SHMID.img` like shared anonymous memory. An area mapping
//! a memfd is `VMA_AREA_MEMFD` with a file id of its own naming the inode
//! (see [`vma_file`]), so an fd and a mapping of one memfd are one object
//! again after a restore.
//!
//! Dump: the name from the link (`/memfd:NAME (deleted)`), size, owner and
//! mode from `stat`, seals with `F_GET_SEALS` on the file reopened through
//! `/proc`; the contents of each inode are copied once (the caller drains
//! [`SeenFiles::take_memfd_contents`] into shmem page images while the
//! tree is frozen). Hugetlb memfds are refused by name.
//!
//! Restore: every memfd inode is one object, made with the tree's shared
//! memory ([`crate::restore::shared`]: `memfd_create` with its name, sized,
//! filled, owner, mode and seals set) and mapped by its areas; each
//! description is a reopening of it through `/proc/self/fd` with its own
//! flags and position.

use super::{CollectCtx, FdKind, FdProbe, FileDesc, FileDumpError, FilesSink, LoadCtx, OpenCtx, Opened, SeenFiles, SideImage};
use crate::images::pb::{self, FdTypes};
use crate::images::{ImageDir, ImageError, ImageKind};
use crate::restore::error::{RestoreError, Result, SysContext};
use rustix::fd::{AsRawFd, BorrowedFd, OwnedFd};
use rustix::fs::{Mode, OFlags, SeekFrom};
use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

/// The kind.
pub struct Memfd;

/// What the link of a memfd starts with.
const PREFIX: &str = "/memfd:";

/// `HUGETLBFS_MAGIC`.
const HUGETLBFS_MAGIC: i64 = 0x9584_58f6;

/// One memfd inode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemfdInode {
    /// Id within the dump (`memfd_inode_entry.inode_id`).
    pub inode_id: u64,
    /// The name given to `memfd_create`.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// `st_mode` (type and permissions).
    pub mode: u32,
    /// `F_SEAL_*` bits.
    pub seals: u32,
    /// Its inode number at dump time: the id of its contents'
    /// `pagemap-shmem-SHMID.img`.
    pub shmid: u64,
}

/// One memfd description as dumped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemfdDumped {
    /// Its inode, with `first` set on the first description of it in the
    /// dump (which writes the inode's `memfd.img` entry).
    pub inode: MemfdInode,
    /// Whether this description writes the inode's entry.
    pub first: bool,
}

/// How to recreate one memfd description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemfdPlan {
    /// Open flags of the description.
    pub flags: i32,
    /// File position.
    pub pos: u64,
    /// Its inode's id (`memfd.img`).
    pub inode_id: u64,
    /// Its inode's name, for messages.
    pub name: String,
}

/// The contents of a memfd inode to copy while the tree is frozen: its
/// `shmid`, size and a `/proc` path that opens it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingContents {
    /// `pagemap-shmem-SHMID.img` id (the inode number).
    pub shmid: u64,
    /// Bytes to copy.
    pub size: u64,
    /// `/proc/PID/fd/N` or `/proc/PID/map_files/A-B`.
    pub path: PathBuf,
}

/// The name of a memfd from its link text, if it is one.
fn memfd_name(target: &str) -> Option<&str> {
    let t = target.strip_suffix(" (deleted)").unwrap_or(target);
    t.strip_prefix(PREFIX)
}

/// Describes the memfd inode behind `/proc/PID/NAME` (a descriptor or a
/// mapped area), recording it in `seen` on first sight (its contents then
/// pending). `at` names it in errors.
fn inode_of(pid: i32, name: &str, link: &str, at: &str, seen: &mut SeenFiles) -> std::result::Result<MemfdDumped, FileDumpError> {
    let path = crate::proc::path(pid, name);
    let sys = |what: &'static str| move |errno| FileDumpError::Sys { at: at.to_owned(), what: what.to_owned(), errno };
    let file = rustix::fs::open(&path, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty()).map_err(sys("reopening the memfd"))?;
    let st = rustix::fs::fstat(&file).map_err(sys("fstat"))?;
    let sf = rustix::fs::fstatfs(&file).map_err(sys("fstatfs"))?;
    if sf.f_type as i64 == HUGETLBFS_MAGIC {
        return Err(FileDumpError::UnsupportedState { at: at.to_owned(), what: format!("hugetlb memfd {link:?}") });
    }
    let (dev, ino) = (st.st_dev, st.st_ino);
    if let Some(inode) = seen.memfd_inode(dev, ino) {
        return Ok(MemfdDumped { inode: inode.clone(), first: false });
    }
    let seals = rustix::fs::fcntl_get_seals(&file).map_err(sys("F_GET_SEALS"))?;
    let inode = MemfdInode {
        inode_id: 0,
        // Shared anonymous memory: `/dev/zero`, as CRIU names it.
        name: memfd_name(link).unwrap_or_else(|| link.strip_suffix(" (deleted)").unwrap_or(link)).to_owned(),
        size: st.st_size as u64,
        uid: st.st_uid,
        gid: st.st_gid,
        mode: st.st_mode,
        seals: seals.bits(),
        shmid: ino,
    };
    let inode = seen.add_memfd_inode(dev, ino, inode, PendingContents { shmid: ino, size: st.st_size as u64, path });
    Ok(MemfdDumped { inode, first: true })
}

/// The description a memfd-backed area refers to: opened through its
/// `/proc/PID/map_files/START-END` link (`link` is what that link reads).
/// The caller gives it file id `id` and marks the area `VMA_AREA_MEMFD`.
pub fn vma_file(pid: i32, map_files: &str, link: &str, id: u32, flags: u32, seen: &mut SeenFiles) -> std::result::Result<FileDesc, FileDumpError> {
    let d = inode_of(pid, map_files, link, map_files, seen)?;
    Ok(FileDesc { id, flags, pos: 0, fown: Default::default(), kind: super::FileKind::Memfd(d) })
}

/// Whether a link text (`/proc/PID/fd/N`, `/proc/PID/map_files/..`) names a
/// memfd.
pub fn is_memfd_link(link: &str) -> bool {
    memfd_name(link).is_some() && link.ends_with(" (deleted)")
}

impl FdKind for Memfd {
    const FD_TYPE: FdTypes = FdTypes::Memfd;
    type Dumped = MemfdDumped;
    type Plan = MemfdPlan;
    /// Inodes whose memfd_create'd file was given to a description.
    type OpenState = BTreeSet<u64>;

    fn claims(p: &FdProbe) -> bool {
        p.file_type() == libc::S_IFREG && is_memfd_link(&p.target) && p.md.nlink() == 0
    }

    fn collect(p: &FdProbe, cx: &mut CollectCtx<'_>) -> std::result::Result<MemfdDumped, FileDumpError> {
        inode_of(p.pid, &format!("fd/{}", p.fd), &p.target, &p.at(), cx.seen)
    }

    fn write(f: &FileDesc, d: &MemfdDumped, sink: &mut FilesSink<'_>) -> std::result::Result<(), ImageError> {
        let memfd = pb::MemfdFileEntry {
            id: Some(f.id),
            flags: Some(f.flags),
            pos: Some(f.pos),
            fown: Some(f.fown.entry()),
            inode_id: Some(d.inode.inode_id as u32),
        };
        sink.push(pb::FileEntry { r#type: Some(FdTypes::Memfd as i32), id: Some(f.id), memfd: Some(memfd), ..Default::default() });
        if d.first {
            let i = &d.inode;
            let e = pb::MemfdInodeEntry {
                name: Some(i.name.clone()),
                uid: Some(i.uid),
                gid: Some(i.gid),
                size: Some(i.size),
                shmid: Some(i.shmid as u32),
                seals: Some(i.seals),
                inode_id: Some(i.inode_id),
                hugetlb_flag: None,
                mode: Some(i.mode),
            };
            sink.side(ImageKind::MemfdInode)?.write_entry(&e)?;
        }
        Ok(())
    }

    fn load(e: &pb::FileEntry, cx: &LoadCtx<'_>) -> Result<MemfdPlan> {
        let id = e.id.unwrap_or_default();
        let m = e.memfd.as_ref().ok_or_else(|| cx.bad(format!("file {id:#x} is MEMFD without memfd_file_entry")))?;
        let inode_id = m.inode_id.unwrap_or_default() as u64;
        let inodes = cx.side::<MemfdInodes>()?;
        let inode = inodes.0.get(&inode_id).ok_or_else(|| cx.bad(format!("memfd {id:#x} names inode {inode_id}, which memfd.img lacks")))?;
        Ok(MemfdPlan { flags: m.flags.unwrap_or_default() as i32, pos: m.pos.unwrap_or_default(), inode_id, name: inode.name.clone() })
    }

    fn open(p: &MemfdPlan, given: &mut BTreeSet<u64>, cx: &OpenCtx<'_>) -> Result<Opened> {
        let object = cx
            .memfds
            .get(&p.inode_id)
            .ok_or_else(|| RestoreError::Prepare(format!("no object for memfd inode {} ({:?})", p.inode_id, p.name)))?;
        // The first read-write description is the memfd_create'd file
        // itself, as when the program made it: execveat() of a memfd works
        // through that one only (as in CRIU).
        let fd = if p.flags & libc::O_ACCMODE == libc::O_RDWR && given.insert(p.inode_id) {
            let fd = rustix::io::fcntl_dupfd_cloexec(*object, 0).sys(|| format!("dup(memfd:{})", p.name))?;
            super::fdtable::set_status_flags(&fd, p.flags)?;
            fd
        } else {
            reopen(*object, p.flags)?
        };
        if p.pos != 0 {
            rustix::fs::seek(&fd, SeekFrom::Start(p.pos)).sys(|| format!("lseek(memfd:{}, {})", p.name, p.pos))?;
        }
        Ok(Opened::Fd(fd))
    }

    fn name(p: &MemfdPlan) -> String {
        format!("memfd:{}", p.name)
    }
}

/// Opens another description of memfd `object` with `flags` (access mode,
/// `O_APPEND`, `O_NONBLOCK`, ...).
pub fn reopen(object: BorrowedFd<'_>, flags: i32) -> Result<OwnedFd> {
    let keep = libc::O_ACCMODE | libc::O_APPEND | libc::O_NONBLOCK | libc::O_NOATIME | libc::O_LARGEFILE;
    let flags = OFlags::from_bits_retain((flags & keep) as u32) | OFlags::CLOEXEC;
    rustix::fs::open(format!("/proc/self/fd/{}", object.as_raw_fd()), flags, Mode::empty())
        .sys(|| format!("reopening memfd (fd {}) with flags {flags:?}", object.as_raw_fd()))
}

/// `memfd.img`: the memfd inodes by inode id.
#[derive(Debug, Default)]
pub struct MemfdInodes(pub BTreeMap<u64, MemfdInode>);

impl SideImage for MemfdInodes {
    fn read(images: &ImageDir) -> Result<Self> {
        if !images.exists(ImageKind::MemfdInode, 0) {
            return Ok(MemfdInodes::default());
        }
        let path = images.image_path(ImageKind::MemfdInode, 0);
        let mut out = BTreeMap::new();
        for m in images.read_all::<pb::MemfdInodeEntry>(ImageKind::MemfdInode, 0)? {
            let inode_id = m.inode_id.unwrap_or_default();
            let name = m.name.clone().unwrap_or_default();
            if m.hugetlb_flag.is_some_and(|f| f != 0) {
                return Err(RestoreError::Unsupported { file: path, what: format!("hugetlb memfd {name:?}") });
            }
            let inode = MemfdInode {
                inode_id,
                name,
                size: m.size.unwrap_or_default(),
                uid: m.uid.unwrap_or_default(),
                gid: m.gid.unwrap_or_default(),
                mode: m.mode.unwrap_or(libc::S_IFREG | 0o777),
                seals: m.seals.unwrap_or_default(),
                shmid: m.shmid.unwrap_or_default() as u64,
            };
            if out.insert(inode_id, inode).is_some() {
                return Err(RestoreError::bad(&path, format!("memfd inode {inode_id} appears twice")));
            }
        }
        Ok(MemfdInodes(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_from_links() {
        assert_eq!(memfd_name("/memfd:ev-memfd (deleted)"), Some("ev-memfd"));
        assert_eq!(memfd_name("/memfd: spaced name (deleted)"), Some(" spaced name"));
        assert!(is_memfd_link("/memfd:x (deleted)"));
        assert!(!is_memfd_link("/memfd:x"), "a file named so on disk");
        assert!(!is_memfd_link("/tmp/memfd:x (deleted)"));
    }
}
