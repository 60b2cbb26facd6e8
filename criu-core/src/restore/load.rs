//! Reading and validating the image set of a single-process dump into a
//! [`TaskPlan`].
//!
//! Images are opened read-only and never modified. Anything missing,
//! truncated, corrupt or inconsistent is an error naming the file.

use super::error::{RestoreError, Result};
use super::plan::{DescPlan, FdPlan, FsPlan, LazyRun, PagesPlan, RegFile, TaskPlan, VmaKind, VmaPlan, MAP_DROPPABLE, MAP_TYPE};
use super::validate::{check_address_space, pagemap_runs, PagemapEntry};
use crate::images::consts::pagemap_flags::{LAZY as PE_LAZY, PRESENT as PE_PRESENT};
use crate::images::consts::vma_status as st;
use crate::images::pb::{self, FdTypes, RemapType};
use crate::images::{ImageDir, ImageKind};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Top bit of `remap_file_path_entry.remap_id`: the target is a ghost file.
const REMAP_GHOST: u32 = 1 << 31;

/// What restore was asked to do with the images.
#[derive(Debug, Clone, Copy, Default)]
pub struct LoadOptions {
    /// `--shell-job`: terminal fds are taken over from criu-rs's own fds.
    pub shell_job: bool,
}

/// Opens `dir` as a complete image set (it must hold a valid inventory).
pub fn open_dir(dir: &Path) -> Result<ImageDir> {
    let problem = |p: &str| RestoreError::ImagesDir { dir: dir.into(), problem: p.into() };
    match std::fs::metadata(dir) {
        Err(e) => return Err(problem(&format!("cannot use the images directory: {e}"))),
        Ok(m) if !m.is_dir() => return Err(problem("not a directory")),
        Ok(_) => {}
    }
    let images = ImageDir::open_unchecked(dir);
    if !images.exists(ImageKind::Inventory, 0) {
        let any_image = std::fs::read_dir(dir)
            .map(|d| d.flatten().any(|e| e.file_name().to_string_lossy().ends_with(".img")))
            .unwrap_or(false);
        return Err(problem(match any_image {
            true => "no inventory.img: not a complete dump (the dump failed or did not finish)",
            false => "not an images directory (no inventory.img, no image files)",
        }));
    }
    Ok(ImageDir::open(dir)?)
}

/// Loads the single task of the dump in `dir`.
pub fn load(dir: &Path, opts: LoadOptions) -> Result<TaskPlan> {
    let images = open_dir(dir)?;
    let pstree_path = images.image_path(ImageKind::Pstree, 0);
    let tree: Vec<pb::PstreeEntry> = images.read_all(ImageKind::Pstree, 0)?;
    match tree.as_slice() {
        [one] => load_task(&images, one, opts),
        [] => Err(RestoreError::bad(&pstree_path, "no process")),
        _ => Err(RestoreError::Unsupported { file: pstree_path, what: format!("{} processes (only one for now)", tree.len()) }),
    }
}

/// Loads the live task `root` of the dump in `images` with all its threads.
pub fn load_task(images: &ImageDir, root: &pb::PstreeEntry, opts: LoadOptions) -> Result<TaskPlan> {
    let images = images.clone();
    let pstree_path = images.image_path(ImageKind::Pstree, 0);
    let pid = root.pid.unwrap_or_default() as i32;
    if pid <= 0 {
        return Err(RestoreError::bad(&pstree_path, format!("bad pid {pid}")));
    }
    if root.threads.first().is_some_and(|&t| t as i32 != pid) || root.threads.iter().any(|&t| t as i32 <= 0) {
        return Err(RestoreError::bad(&pstree_path, format!("task {pid}: bad thread list {:?} (the leader comes first)", root.threads)));
    }
    // Both readers check what the image layer knows: x86-64 state of the
    // right sizes, and a sorted, disjoint, page-aligned VMA list.
    let core = images.read_core(pid as u64, true)?;
    let mut mm = images.read_mm(pid as u64)?;
    let threads = root.threads.iter().skip(1).map(|&t| Ok((t as i32, images.read_core(t as u64, false)?))).collect::<Result<Vec<_>>>()?;
    let mm_path = images.image_path(ImageKind::Mm, pid as u64);
    let files_path = images.image_path(ImageKind::Files, 0);
    let files = load_files(&images)?;
    let reg_path = |id: u32, what: &str| -> Result<PathBuf> {
        match files.get(&id).and_then(|f| f.reg.as_ref()) {
            Some(r) => Ok(PathBuf::from(r.name.clone().unwrap_or_default())),
            None => Err(RestoreError::bad(&files_path, format!("no regular file with id {id:#x} (needed by {what})"))),
        }
    };
    let memfds = load_memfd_inodes(&images)?;
    let vmas = mm.vmas.iter().map(|v| vma_plan(v, &mm_path, &files, &memfds, &reg_path)).collect::<Result<Vec<_>>>()?;
    check_address_space(&mm_path, &vmas)?;
    let exe = match mm.exe_file_id {
        Some(id) if files.contains_key(&id) => Some(reg_path(id, "mm exe_file_id")?),
        _ => None,
    };
    mm.vmas.clear();
    let (pages, lazy, parent_pages) = load_pages(&images, pid, &vmas)?;
    let fs = load_fs(&images, pid, &reg_path)?;
    let files_id = files_id(&images, &core, pid)?;
    let (fds, descs) = load_fds(&images, files_id, &files, opts)?;
    Ok(TaskPlan {
        pid,
        pgid: root.pgid.unwrap_or_default() as i32,
        sid: root.sid.unwrap_or_default() as i32,
        fs,
        fds,
        descs,
        vmas,
        pages,
        lazy,
        parent_pages,
        exe,
        core: Box::new(core),
        threads,
        mm: Box::new(mm),
    })
}

/// The id naming the task's `fdinfo-ID.img`: from `core_entry.ids`, else
/// from `ids-PID.img`, else the pid.
pub(super) fn files_id(images: &ImageDir, core: &pb::CoreEntry, pid: i32) -> Result<u32> {
    if let Some(id) = core.ids.as_ref().and_then(|i| i.files_id) {
        return Ok(id);
    }
    if images.exists(ImageKind::Ids, pid as u64) {
        let ids: pb::TaskKobjIdsEntry = images.read_one(ImageKind::Ids, pid as u64)?;
        return Ok(ids.files_id.unwrap_or(pid as u32));
    }
    Ok(pid as u32)
}

/// `files.img` by file id (absent: no files).
fn load_files(images: &ImageDir) -> Result<BTreeMap<u32, pb::FileEntry>> {
    if !images.exists(ImageKind::Files, 0) {
        return Ok(BTreeMap::new());
    }
    let path = images.image_path(ImageKind::Files, 0);
    let mut out = BTreeMap::new();
    for f in images.read_files()? {
        let id = f.id.unwrap_or_default();
        if out.insert(id, f).is_some() {
            return Err(RestoreError::bad(&path, format!("file id {id:#x} appears twice")));
        }
    }
    Ok(out)
}

/// `memfd.img` by inode id (absent: no memfd inodes).
pub(super) fn load_memfd_inodes(images: &ImageDir) -> Result<BTreeMap<u64, pb::MemfdInodeEntry>> {
    if !images.exists(ImageKind::MemfdInode, 0) {
        return Ok(BTreeMap::new());
    }
    let path = images.image_path(ImageKind::MemfdInode, 0);
    let mut out = BTreeMap::new();
    for m in images.read_all::<pb::MemfdInodeEntry>(ImageKind::MemfdInode, 0)? {
        if out.insert(m.inode_id.unwrap_or_default(), m).is_some() {
            return Err(RestoreError::bad(&path, "an inode id appears twice"));
        }
    }
    Ok(out)
}

/// A memfd-backed VMA (`AREA_MEMFD`, `shmid` a file id of type `MEMFD`):
/// a shared mapping of its inode's shmem object (CRIU 4.x also writes
/// shared anonymous memory this way, as an inode named `/dev/zero`).
fn memfd_vma(
    v: &pb::VmaEntry,
    files: &BTreeMap<u32, pb::FileEntry>,
    memfds: &BTreeMap<u64, pb::MemfdInodeEntry>,
    unsupported: &dyn Fn(&str) -> RestoreError,
) -> Result<VmaKind> {
    let id = v.shmid.unwrap_or_default() as u32;
    let inode_id = files.get(&id).and_then(|f| f.memfd.as_ref()).and_then(|m| m.inode_id);
    let Some(inode) = inode_id.and_then(|i| memfds.get(&(i as u64))) else {
        return Err(unsupported(&format!("memfd mapping of file {id:#x} with no memfd entry or inode in memfd.img")));
    };
    if v.status.unwrap_or_default() & st::FILE_SHARED == 0 {
        let name = inode.name.as_deref().unwrap_or_default();
        return Err(unsupported(&format!("private mapping of memfd {name:?}")));
    }
    Ok(VmaKind::Shmem { shmid: inode.shmid.unwrap_or_default() as u64, size: inode.size.unwrap_or_default() })
}

/// One `vma_entry` as a [`VmaPlan`].
fn vma_plan(
    v: &pb::VmaEntry,
    mm_path: &Path,
    files: &BTreeMap<u32, pb::FileEntry>,
    memfds: &BTreeMap<u64, pb::MemfdInodeEntry>,
    reg_path: &dyn Fn(u32, &str) -> Result<PathBuf>,
) -> Result<VmaPlan> {
    let (start, end) = (v.start.unwrap_or_default(), v.end.unwrap_or_default());
    let status = v.status.unwrap_or_default();
    let what = format!("VMA {start:#x}-{end:#x}");
    let unsupported = |kind: &str| RestoreError::Unsupported { file: mm_path.into(), what: format!("{what}: {kind}") };
    let kind = if status & st::AREA_VSYSCALL != 0 {
        VmaKind::Vsyscall
    } else if status & st::AREA_VVAR != 0 {
        VmaKind::Vvar
    } else if status & st::AREA_VDSO != 0 {
        VmaKind::Vdso
    } else if status & st::UNSUPP != 0 {
        return Err(unsupported("marked unsupported by the dump"));
    } else if status & st::AREA_MEMFD != 0 {
        memfd_vma(v, files, memfds, &unsupported)?
    } else if status & (st::AREA_SYSVIPC | st::AREA_SOCKET | st::AREA_AIORING | st::AREA_SHSTK) != 0 {
        return Err(unsupported(&format!("status {status:#x} (SysV shared memory, socket, AIO or shadow stack areas)")));
    } else if status & st::ANON_SHARED != 0 {
        VmaKind::Shmem { shmid: v.shmid.unwrap_or_default(), size: 0 }
    } else if status & st::FILE_PRIVATE != 0 {
        VmaKind::PrivateFile { path: reg_path(v.shmid.unwrap_or_default() as u32, &what)? }
    } else if status & st::FILE_SHARED != 0 {
        let id = v.shmid.unwrap_or_default() as u32;
        let reg_flags = files.get(&id).and_then(|f| f.reg.as_ref()).and_then(|r| r.flags).unwrap_or(0) as i32;
        let open_flags = v.fdflags.map(|f| f as i32).unwrap_or(reg_flags);
        VmaKind::SharedFile { path: reg_path(id, &what)?, open_flags }
    } else if status & st::ANON_PRIVATE != 0 {
        VmaKind::Anon
    } else {
        return Err(RestoreError::bad(mm_path, format!("{what} has unknown status {status:#x}")));
    };
    let flags = v.flags.unwrap_or_default();
    let map_type = flags & MAP_TYPE;
    if kind == VmaKind::Anon && ![0, libc::MAP_PRIVATE as u32, MAP_DROPPABLE].contains(&map_type) {
        return Err(RestoreError::bad(mm_path, format!("{what}: private anonymous memory with mapping type {map_type:#x}")));
    }
    Ok(VmaPlan {
        start,
        end,
        pgoff: v.pgoff.unwrap_or_default(),
        prot: v.prot.unwrap_or_default(),
        flags,
        madv: v.madv.unwrap_or_default(),
        lock_on_fault: status & st::LOCK_ONFAULT != 0,
        kind,
    })
}

/// `pagemap-PID.img` and its `pages-N.img`, and the `LAZY` entries.
/// Pages left in the parent images (`PE_PARENT`) are looked up there
/// ([`super::parent`]).
fn load_pages(images: &ImageDir, pid: i32, vmas: &[VmaPlan]) -> Result<(PagesPlan, Vec<LazyRun>, Vec<PagesPlan>)> {
    let mut in_parent = Vec::new();
    let (pages, lazy) = read_pagemap(images, ImageKind::Pagemap, pid as u64, vmas, 0, Some(&mut in_parent))?;
    let parents = if in_parent.is_empty() {
        Vec::new()
    } else {
        super::parent::resolve(images.path(), &images.image_path(ImageKind::Pagemap, pid as u64), pid, in_parent)?
    };
    Ok((pages, lazy, parents))
}

/// A pagemap image and its pages file, and its `LAZY` entries; entries'
/// `vaddr` plus `base` are addresses in `vmas`.
pub(super) fn read_pagemap(
    images: &ImageDir,
    kind: ImageKind,
    id: u64,
    vmas: &[VmaPlan],
    base: u64,
    parents: Option<&mut Vec<(u64, u64)>>,
) -> Result<(PagesPlan, Vec<LazyRun>)> {
    let path = images.image_path(kind, id);
    let mut r = images.open_image(kind, id)?;
    let head: pb::PagemapHead = r.read_next()?;
    let mut entries = Vec::new();
    while let Some(e) = r.read_entry::<pb::PagemapEntry>()? {
        let nr_pages = e.nr_pages.unwrap_or(e.compat_nr_pages.unwrap_or_default() as u64);
        let mut flags = e.flags.unwrap_or(crate::images::consts::pagemap_flags::PRESENT);
        if e.in_parent == Some(true) {
            flags |= crate::images::consts::pagemap_flags::PARENT;
        }
        let vaddr = e.vaddr.unwrap_or_default().checked_add(base).ok_or_else(|| RestoreError::bad(&path, "address overflow"))?;
        entries.push(PagemapEntry { vaddr, nr_pages, flags });
    }
    let pages_id = head.pages_id.unwrap_or_default() as u64;
    let pages_path = images.image_path(ImageKind::Pages, pages_id);
    let pages_len = match std::fs::metadata(&pages_path) {
        Ok(m) => m.len(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && entries.iter().all(|e| e.flags & PE_PRESENT == 0) => 0,
        Err(source) => return Err(RestoreError::ImageIo { file: pages_path, source }),
    };
    let runs = pagemap_runs(&path, vmas, &entries, &pages_path, pages_len, parents)?;
    let lazy = entries
        .iter()
        .filter(|e| e.flags & PE_LAZY != 0)
        .map(|e| LazyRun { vaddr: e.vaddr, nr_pages: e.nr_pages, present: e.flags & PE_PRESENT != 0 })
        .collect();
    Ok((PagesPlan { path: pages_path, runs }, lazy))
}

/// `fs-PID.img`: cwd and root by file id, umask.
fn load_fs(images: &ImageDir, pid: i32, reg_path: &dyn Fn(u32, &str) -> Result<PathBuf>) -> Result<FsPlan> {
    let fs: pb::FsEntry = images.read_one(ImageKind::Fs, pid as u64)?;
    Ok(FsPlan {
        cwd: reg_path(fs.cwd_id.unwrap_or_default(), "fs cwd_id")?,
        root: reg_path(fs.root_id.unwrap_or_default(), "fs root_id")?,
        umask: fs.umask.unwrap_or(0o022),
    })
}

/// `fdinfo-FILES_ID.img` with the descriptions it refers to.
fn load_fds(
    images: &ImageDir,
    files_id: u32,
    files: &BTreeMap<u32, pb::FileEntry>,
    opts: LoadOptions,
) -> Result<(Vec<FdPlan>, BTreeMap<u32, DescPlan>)> {
    let fdinfo_path = images.image_path(ImageKind::Fdinfo, files_id as u64);
    let files_path = images.image_path(ImageKind::Files, 0);
    let infos: Vec<pb::FdinfoEntry> = images.read_all(ImageKind::Fdinfo, files_id as u64)?;
    let remaps = load_remaps(images)?;
    let pipe_data = load_pipe_data(images, ImageKind::PipesData)?;
    let fifo_data = load_pipe_data(images, ImageKind::FifoData)?;
    let mut fds: Vec<FdPlan> = Vec::with_capacity(infos.len());
    let mut descs = BTreeMap::new();
    for info in &infos {
        let (fd, id) = (info.fd.unwrap_or_default() as i32, info.id.unwrap_or_default());
        if fd < 0 || fds.iter().any(|f| f.fd == fd) {
            return Err(RestoreError::bad(&fdinfo_path, format!("fd {fd} is negative or listed twice")));
        }
        let cloexec = info.flags.unwrap_or_default() & libc::FD_CLOEXEC as u32 != 0;
        fds.push(FdPlan { fd, desc: id, cloexec });
        if descs.contains_key(&id) {
            continue;
        }
        let Some(file) = files.get(&id) else {
            return Err(RestoreError::bad(&files_path, format!("no file with id {id:#x} (fd {fd} in {})", fdinfo_path.display())));
        };
        let queued = Queued { pipes: &pipe_data, fifos: &fifo_data };
        let desc = desc_plan(images, file, fd, files, &remaps, &queued, opts, &files_path)?;
        descs.insert(id, desc);
    }
    fds.sort_by_key(|f| f.fd);
    Ok((fds, descs))
}

/// Queued bytes of pipes and FIFOs, by pipe id.
struct Queued<'a> {
    pipes: &'a BTreeMap<u32, Vec<u8>>,
    fifos: &'a BTreeMap<u32, Vec<u8>>,
}

/// How to recreate one open file description.
#[allow(clippy::too_many_arguments)]
fn desc_plan(
    images: &ImageDir,
    file: &pb::FileEntry,
    fd: i32,
    files: &BTreeMap<u32, pb::FileEntry>,
    remaps: &BTreeMap<u32, u32>,
    queued: &Queued<'_>,
    opts: LoadOptions,
    files_path: &Path,
) -> Result<DescPlan> {
    let id = file.id.unwrap_or_default();
    let ty = file.r#type.unwrap_or_default();
    if ty == FdTypes::Reg as i32 {
        let Some(reg) = &file.reg else {
            return Err(RestoreError::bad(files_path, format!("file {id:#x} is REG without reg_file_entry")));
        };
        let rf = RegFile {
            path: PathBuf::from(reg.name.clone().unwrap_or_default()),
            flags: reg.flags.unwrap_or_default() as i32,
            pos: reg.pos.unwrap_or_default(),
            size: reg.size,
            mode: reg.mode,
        };
        return match remaps.get(&id) {
            Some(&ghost_id) => Ok(DescPlan::Ghost { contents: load_ghost(images, ghost_id)?, file: RegFile { size: None, ..rf } }),
            None => Ok(DescPlan::Reg(rf)),
        };
    }
    if ty == FdTypes::Pipe as i32 {
        let Some(p) = &file.pipe else {
            return Err(RestoreError::bad(files_path, format!("file {id:#x} is PIPE without pipe_entry")));
        };
        let pipe_id = p.pipe_id.unwrap_or_default();
        let bytes = queued.pipes.get(&pipe_id).cloned().unwrap_or_default();
        return Ok(DescPlan::Pipe { pipe_id, flags: p.flags.unwrap_or_default() as i32, queued: bytes });
    }
    if ty == FdTypes::Fifo as i32 {
        let fifo = file.fifo.as_ref();
        let (pipe_id, regf_id) = (fifo.and_then(|f| f.pipe_id), fifo.and_then(|f| f.regf_id).unwrap_or(id));
        let reg = files.get(&regf_id).and_then(|f| f.reg.as_ref());
        let (Some(pipe_id), Some(reg)) = (pipe_id, reg) else {
            return Err(RestoreError::bad(files_path, format!("FIFO {id:#x} without its pipe id or path entry {regf_id:#x}")));
        };
        let file = RegFile {
            path: PathBuf::from(reg.name.clone().unwrap_or_default()),
            flags: reg.flags.unwrap_or_default() as i32,
            pos: 0,
            size: None,
            mode: reg.mode,
        };
        let bytes = queued.fifos.get(&pipe_id).cloned().unwrap_or_default();
        return Ok(DescPlan::Fifo { file, pipe_id, queued: bytes });
    }
    if ty == FdTypes::Tty as i32 && opts.shell_job && (0..=2).contains(&fd) {
        let flags = file.tty.as_ref().and_then(|t| t.flags).unwrap_or(libc::O_RDWR as u32) as i32;
        return Ok(DescPlan::Inherit { fd, flags });
    }
    let name = FdTypes::try_from(ty).map(|t| t.as_str_name().to_string()).unwrap_or_else(|_| ty.to_string());
    let hint = if ty == FdTypes::Tty as i32 { " (a terminal: use --shell-job)" } else { "" };
    Err(RestoreError::Unsupported { file: files_path.into(), what: format!("fd {fd}: file {id:#x} of type {name}{hint}") })
}

/// `remap-fpath.img`: original file id → ghost file id (ghosts only).
fn load_remaps(images: &ImageDir) -> Result<BTreeMap<u32, u32>> {
    if !images.exists(ImageKind::RemapFpath, 0) {
        return Ok(BTreeMap::new());
    }
    let path = images.image_path(ImageKind::RemapFpath, 0);
    let mut out = BTreeMap::new();
    for r in images.read_all::<pb::RemapFilePathEntry>(ImageKind::RemapFpath, 0)? {
        let (orig, remap) = (r.orig_id.unwrap_or_default(), r.remap_id.unwrap_or_default());
        let ghost = r.remap_type == Some(RemapType::Ghost as i32) || remap & REMAP_GHOST != 0;
        if !ghost {
            return Err(RestoreError::Unsupported { file: path, what: format!("remap of file {orig:#x} that is not a ghost") });
        }
        out.insert(orig, remap & !REMAP_GHOST);
    }
    Ok(out)
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

/// `pipes-data.img` or `fifo-data.img`: queued bytes by pipe id.
fn load_pipe_data(images: &ImageDir, kind: ImageKind) -> Result<BTreeMap<u32, Vec<u8>>> {
    if !images.exists(kind, 0) {
        return Ok(BTreeMap::new());
    }
    let mut r = images.open_image(kind, 0)?;
    let mut out = BTreeMap::new();
    while let Some(e) = r.read_entry::<pb::PipeDataEntry>()? {
        let bytes = r.read_raw(e.bytes.unwrap_or_default() as u64)?;
        out.insert(e.pipe_id.unwrap_or_default(), bytes);
    }
    Ok(out)
}
