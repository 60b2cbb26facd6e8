//! The restore side's kind-free loading: a task's `fdinfo-FILES_ID.img`
//! and the descriptions it names, each loaded by its kind.

use super::fdtable::FdPlan;
use super::{DescPlan, Fown, LoadCtx, LoadOptions, SideImages};
use crate::images::pb;
use crate::images::{ImageDir, ImageKind};
use crate::restore::error::{RestoreError, Result};
use std::collections::BTreeMap;

/// `files.img` by file id (absent: no files).
pub fn load_files(images: &ImageDir) -> Result<BTreeMap<u32, pb::FileEntry>> {
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

/// A task's fd table and the descriptions it refers to.
#[derive(Debug, Clone, Default)]
pub struct TaskFiles {
    /// The fd table, sorted by fd number.
    pub fds: Vec<FdPlan>,
    /// Descriptions by file id.
    pub descs: BTreeMap<u32, DescPlan>,
    /// Owners (`F_SETOWN`/`F_SETSIG`) of the descriptions that have one.
    pub owners: BTreeMap<u32, Fown>,
}

/// `fdinfo-FILES_ID.img` with the descriptions it refers to (`side`: the
/// side images read so far, shared by the tasks of a tree).
pub fn load_fds(
    images: &ImageDir,
    files_id: u32,
    files: &BTreeMap<u32, pb::FileEntry>,
    side: &SideImages,
    opts: &LoadOptions,
) -> Result<TaskFiles> {
    let fdinfo_path = images.image_path(ImageKind::Fdinfo, files_id as u64);
    let infos: Vec<pb::FdinfoEntry> = images.read_all(ImageKind::Fdinfo, files_id as u64)?;
    let cx = LoadCtx::new(images, files, side, opts);
    let mut fds: Vec<FdPlan> = Vec::with_capacity(infos.len());
    let mut numbers = std::collections::HashSet::with_capacity(infos.len());
    let mut descs = BTreeMap::new();
    let mut owners = BTreeMap::new();
    for info in &infos {
        let (fd, id) = (info.fd.unwrap_or_default() as i32, info.id.unwrap_or_default());
        if fd < 0 || !numbers.insert(fd) {
            return Err(RestoreError::bad(&fdinfo_path, format!("fd {fd} is negative or listed twice")));
        }
        let cloexec = info.flags.unwrap_or_default() & libc::FD_CLOEXEC as u32 != 0;
        fds.push(FdPlan { fd, desc: id, cloexec });
        if descs.contains_key(&id) {
            continue;
        }
        let Some(file) = files.get(&id) else {
            return Err(RestoreError::bad(cx.files_path(), format!("no file with id {id:#x} (fd {fd} in {})", fdinfo_path.display())));
        };
        descs.insert(id, DescPlan::load(file, &cx.for_fd(fd))?);
        let fown = Fown::of_entry(file, files);
        if fown.is_set() {
            owners.insert(id, fown);
        }
    }
    // Descriptions its descriptions need though no fd holds them (files in
    // flight in a unix socket's queue).
    let needed: Vec<u32> = descs.values().flat_map(DescPlan::files_needed).filter(|id| !descs.contains_key(id)).collect();
    for id in needed {
        if descs.contains_key(&id) {
            continue;
        }
        let file = files.get(&id).ok_or_else(|| RestoreError::bad(cx.files_path(), format!("no file with id {id:#x} (in flight in a unix socket's queue)")))?;
        descs.insert(id, DescPlan::load(file, &cx)?);
        let fown = Fown::of_entry(file, files);
        if fown.is_set() {
            owners.insert(id, fown);
        }
    }
    fds.sort_by_key(|f| f.fd);
    Ok(TaskFiles { fds, descs, owners })
}

/// The REG entries of `ids` that are ghosts (files removed while open)
/// a task opens by path (the files it maps, its working directory and
/// executable): each is marked so ([`super::reg::GhostFile::by_path`]),
/// to be recreated at its path and left there until the tree runs, and
/// added to `descs` (opened with the task's descriptions).
pub fn load_by_path(
    images: &ImageDir,
    files: &BTreeMap<u32, pb::FileEntry>,
    side: &SideImages,
    opts: &LoadOptions,
    ids: &[u32],
    descs: &mut BTreeMap<u32, DescPlan>,
) -> Result<()> {
    let cx = LoadCtx::new(images, files, side, opts);
    for &id in ids {
        if let Some(plan) = super::reg::ghost_by_path(id, &cx)? {
            descs.entry(id).or_insert(DescPlan::Reg(plan));
        }
    }
    Ok(())
}
