//! Reading and validating the images of one task into a [`TaskPlan`]
//! ([`super::tree`] loads every task of the tree through [`load_task`]).
//!
//! Images are opened read-only and never modified. Anything missing,
//! truncated, corrupt or inconsistent is an error naming the file.

use super::error::{RestoreError, Result};
use super::plan::{FsPlan, LazyRun, PagesPlan, TaskPlan, VmaKind, VmaPlan, MAP_DROPPABLE, MAP_TYPE};
use crate::files::load::{load_fds, load_files};
use crate::files::SideImages;
use super::validate::{check_address_space, pagemap_runs, PagemapEntry};
use crate::images::consts::pagemap_flags::{LAZY as PE_LAZY, PRESENT as PE_PRESENT};
use crate::images::consts::vma_status as st;
use crate::images::pb;
use crate::images::{ImageDir, ImageKind};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub use crate::files::LoadOptions;

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
pub fn load(dir: &Path, opts: &LoadOptions) -> Result<TaskPlan> {
    let images = open_dir(dir)?;
    let pstree_path = images.image_path(ImageKind::Pstree, 0);
    let tree: Vec<pb::PstreeEntry> = images.read_all(ImageKind::Pstree, 0)?;
    match tree.as_slice() {
        [one] => load_task(&images, &SharedImages::read(&images)?, one, opts).map(|p| TaskPlan { root: true, ..p }),
        [] => Err(RestoreError::bad(&pstree_path, "no process")),
        _ => Err(RestoreError::Unsupported { file: pstree_path, what: format!("{} processes (only one for now)", tree.len()) }),
    }
}

/// The images every task of a tree refers to, read once per restore (not
/// once per task: `files.img` holds every task's files, so reading it per
/// task made loading a tree quadratic in its size).
pub struct SharedImages {
    /// `files.img` by file id.
    pub files: BTreeMap<u32, pb::FileEntry>,
    /// `memfd.img` by inode id.
    pub memfds: BTreeMap<u64, pb::MemfdInodeEntry>,
    /// The file kinds' side images, each read on first use.
    pub side: SideImages,
}

impl SharedImages {
    /// Reads `files.img` and `memfd.img` of `images`.
    pub fn read(images: &ImageDir) -> Result<Self> {
        Ok(SharedImages { files: load_files(images)?, memfds: load_memfd_inodes(images)?, side: SideImages::default() })
    }
}

/// Loads the live task `root` of the dump in `images` with all its threads
/// (`shared`: what the tree's tasks share, read from the same `images`).
#[tracing::instrument(level = "debug", skip_all, fields(pid = root.pid))]
pub fn load_task(images: &ImageDir, shared: &SharedImages, root: &pb::PstreeEntry, opts: &LoadOptions) -> Result<TaskPlan> {
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
    let (files, memfds) = (&shared.files, &shared.memfds);
    let reg_path = |id: u32, what: &str| -> Result<PathBuf> {
        match files.get(&id).and_then(|f| f.reg.as_ref()) {
            Some(r) => Ok(PathBuf::from(r.name.clone().unwrap_or_default())),
            None => Err(RestoreError::bad(&files_path, format!("no regular file with id {id:#x} (needed by {what})"))),
        }
    };
    let (guard_entries, areas): (Vec<_>, Vec<_>) = mm.vmas.iter().partition(|v| crate::images::is_guard(v));
    let vmas = areas.into_iter().map(|v| vma_plan(v, &mm_path, files, memfds, &reg_path)).collect::<Result<Vec<_>>>()?;
    check_address_space(&mm_path, &vmas)?;
    let guards = guard_regions(&mm_path, &guard_entries, &vmas)?;
    let exe = match mm.exe_file_id {
        Some(id) if files.contains_key(&id) => Some(reg_path(id, "mm exe_file_id")?),
        _ => None,
    };
    // Files the task opens by path (removed ones must be there meanwhile).
    let mapped = mm.vmas.iter().filter(|v| v.status.unwrap_or_default() & (st::FILE_PRIVATE | st::FILE_SHARED) != 0 && v.status.unwrap_or_default() & st::AREA_MEMFD == 0);
    let mut by_path: Vec<u32> = mapped.map(|v| v.shmid.unwrap_or_default() as u32).collect();
    by_path.extend(mm.exe_file_id);
    mm.vmas.clear();
    let (pages, lazy, parent_pages) = load_pages(&images, pid, &vmas)?;
    let (fs, cwd_id) = load_fs(&images, pid, &reg_path)?;
    by_path.push(cwd_id);
    let files_id = files_id(&images, &core, pid)?;
    let mut task_files = load_fds(&images, files_id, files, &shared.side, opts)?;
    crate::files::load::load_by_path(&images, files, &shared.side, opts, &by_path, &mut task_files.descs)?;
    let locks = crate::files::locks::load_for(&images, pid, &task_files.fds, opts)?;
    check_posix_locks(&images, &locks, &task_files, &vmas, exe.as_deref())?;
    let creds = std::iter::once((pid, &core))
        .chain(threads.iter().map(|(t, c)| (*t, c)))
        .map(|(tid, c)| {
            let file = images.image_path(ImageKind::Core, tid as u64);
            let entry = c.thread_core.as_ref().and_then(|t| t.creds.as_ref());
            let entry = entry.ok_or_else(|| RestoreError::bad(&file, "no credentials (thread_core.creds)"))?;
            Ok((tid, super::creds::Creds::from_entry(&file, tid, entry)?))
        })
        .collect::<Result<Vec<_>>>()?;
    // What the blob would refuse, refused before any task exists.
    for (tid, c) in std::iter::once((pid, &core)).chain(threads.iter().map(|(t, c)| (*t, c))) {
        let file = images.image_path(ImageKind::Core, tid as u64);
        if let Some(p) = c.thread_core.as_ref().and_then(|t| t.sched_policy) {
            super::args::check_sched_policy(p).map_err(|what| RestoreError::Unsupported { file: file.clone(), what })?;
        }
        if let Some(m) = c.tc.as_ref().and_then(|t| t.membarrier_registration_mask) {
            super::args::membarrier_mask(m).map_err(|what| RestoreError::Unsupported { file, what })?;
        }
    }
    let all_cores: Vec<&pb::CoreEntry> = std::iter::once(&core).chain(threads.iter().map(|(_, c)| c)).collect();
    let seccomp_img = super::seccomp::read_image(&images, &all_cores)?;
    let seccomp = std::iter::once((pid, &core))
        .chain(threads.iter().map(|(t, c)| (*t, c)))
        .map(|(tid, c)| {
            let file = images.image_path(ImageKind::Core, tid as u64);
            let tc = c.thread_core.clone().unwrap_or_default();
            Ok((tid, super::seccomp::thread_seccomp(&file, tid, &tc, seccomp_img.as_ref())?))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(TaskPlan {
        pid,
        pgid: root.pgid.unwrap_or_default() as i32,
        sid: root.sid.unwrap_or_default() as i32,
        fs,
        fds: task_files.fds,
        descs: task_files.descs,
        owners: task_files.owners,
        first_held: Default::default(),
        locks,
        vmas,
        guards,
        pages,
        lazy,
        parent_pages,
        exe,
        core: Box::new(core),
        threads,
        mm: Box::new(mm),
        creds,
        seccomp,
        root: false,
    })
}

/// The id naming the task's `fdinfo-ID.img`: from `core_entry.ids`, else
/// from `ids-PID.img`, else the pid.
/// A POSIX lock belongs to the task's fd table and goes when the task
/// closes any fd of its file: criu-rs's own fds of the files the task maps
/// shared (or runs) are closed in the task after the locks are taken, so
/// a POSIX lock on one of those cannot be kept.
fn check_posix_locks(
    images: &ImageDir,
    locks: &[crate::files::locks::FileLock],
    files: &crate::files::load::TaskFiles,
    vmas: &[VmaPlan],
    exe: Option<&Path>,
) -> Result<()> {
    let shared = vmas.iter().filter_map(|v| match &v.kind {
        VmaKind::SharedFile { path, .. } => Some(path.as_path()),
        _ => None,
    });
    let reopened: Vec<&Path> = shared.chain(exe).collect();
    for l in locks.iter().filter(|l| l.kind == crate::files::locks::FL_POSIX) {
        let desc = files.fds.iter().find(|f| f.fd == l.fd).and_then(|f| files.descs.get(&f.desc));
        if let Some(crate::files::DescPlan::Reg(r)) = desc {
            if reopened.contains(&r.file.path.as_path()) {
                let what = format!("{} on fd {} of pid {}: the task also maps or runs {}", l.describe(), l.fd, l.pid, r.file.path.display());
                return Err(RestoreError::Unsupported { file: images.image_path(ImageKind::FileLocks, 0), what });
            }
        }
    }
    Ok(())
}

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
/// a shared or private mapping of its inode's shmem object (CRIU 4.x also
/// writes shared anonymous memory this way, as an inode named `/dev/zero`).
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
        return Ok(VmaKind::PrivateShmem { shmid: inode.shmid.unwrap_or_default() as u64 });
    }
    Ok(VmaKind::Shmem { shmid: inode.shmid.unwrap_or_default() as u64, size: inode.size.unwrap_or_default() })
}

/// A SysV shared memory attachment (`AREA_SYSVIPC`, `shmid` the segment
/// id): the segment must still be there, as large as the area, which
/// attaches it whole.
fn sysv_vma(v: &pb::VmaEntry, unsupported: &dyn Fn(&str) -> RestoreError) -> Result<VmaKind> {
    let shmid = v.shmid.unwrap_or_default();
    let len = v.end.unwrap_or_default().saturating_sub(v.start.unwrap_or_default());
    let Ok(id) = i32::try_from(shmid) else {
        return Err(unsupported(&format!("SysV shared memory id {shmid:#x}")));
    };
    // SAFETY: IPC_STAT writes one shmid_ds into the zeroed struct given.
    let (r, ds) = unsafe {
        let mut ds: libc::shmid_ds = std::mem::zeroed();
        (libc::shmctl(id, libc::IPC_STAT, &mut ds), ds)
    };
    if r < 0 {
        let e = std::io::Error::last_os_error();
        return Err(unsupported(&format!("SysV shared memory segment {id} is gone ({e}); segments are not in the images")));
    }
    if v.pgoff.unwrap_or_default() != 0 || (ds.shm_segsz as u64).next_multiple_of(super::plan::PAGE_SIZE) != len {
        return Err(unsupported(&format!("SysV shared memory segment {id} is {} bytes, not this {len}-byte area", ds.shm_segsz)));
    }
    // No fdflags (older images): the widest attachment, as CRIU does.
    let read_only = v.fdflags.is_some_and(|f| f as i32 & libc::O_ACCMODE == libc::O_RDONLY);
    Ok(VmaKind::SysvShm { shmid: id, read_only })
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
    } else if status & st::AREA_SYSVIPC != 0 {
        sysv_vma(v, &unsupported)?
    } else if status & (st::AREA_SOCKET | st::AREA_AIORING | st::AREA_SHSTK) != 0 {
        return Err(unsupported(&format!("status {status:#x} (socket, AIO or shadow stack areas)")));
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

/// The guard regions of `mm-PID.img` (`VMA_AREA_GUARD` entries): each
/// page aligned and inside areas the blob maps as memory (premapped, shared
/// or file areas; not the vDSO or vvar).
fn guard_regions(mm_path: &Path, entries: &[&pb::VmaEntry], vmas: &[VmaPlan]) -> Result<Vec<(u64, u64)>> {
    let mut out: Vec<(u64, u64)> = Vec::with_capacity(entries.len());
    for g in entries {
        let (start, end) = (g.start.unwrap_or_default(), g.end.unwrap_or_default());
        let aligned = start.is_multiple_of(super::plan::PAGE_SIZE) && end.is_multiple_of(super::plan::PAGE_SIZE);
        let mut at = start;
        for v in vmas.iter().filter(|v| !matches!(v.kind, VmaKind::Vdso | VmaKind::Vvar | VmaKind::Vsyscall)) {
            if v.start <= at && at < v.end {
                at = v.end;
            }
        }
        if !aligned || start >= end || at < end || out.last().is_some_and(|&(_, e)| e > start) {
            return Err(RestoreError::bad(mm_path, format!("guard region {start:#x}-{end:#x} is not inside the areas, in order")));
        }
        out.push((start, end));
    }
    Ok(out)
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
pub(crate) fn read_pagemap(
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

/// `fs-PID.img`: cwd and root by file id, umask; and the cwd's file id.
fn load_fs(images: &ImageDir, pid: i32, reg_path: &dyn Fn(u32, &str) -> Result<PathBuf>) -> Result<(FsPlan, u32)> {
    let fs: pb::FsEntry = images.read_one(ImageKind::Fs, pid as u64)?;
    let plan = FsPlan {
        cwd: reg_path(fs.cwd_id.unwrap_or_default(), "fs cwd_id")?,
        root: reg_path(fs.root_id.unwrap_or_default(), "fs root_id")?,
        umask: fs.umask.unwrap_or(0o022),
    };
    Ok((plan, fs.cwd_id.unwrap_or_default()))
}
