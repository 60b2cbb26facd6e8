//! `files.img` (every open file description of every process), the
//! per-process `fdinfo-ID.img` and `fs-PID.img`, queued pipe/FIFO bytes
//! (`pipes-data.img`, `fifo-data.img`) and unlinked files
//! (`remap-fpath.img` + `ghost-file-ID.img`).

use super::img_err;
use crate::dump::model::*;
use crate::dump::DumpError;
use crate::images::{pb, ImageDir, ImageKind};

/// A device number in the kernel's internal encoding (major << 20 | minor),
/// which CRIU images use.
fn kdev(dev: u64) -> u32 {
    (libc::major(dev) << 20) | libc::minor(dev)
}

/// Counter for ghost file ids.
struct Ghosts {
    next: u32,
    remaps: Vec<pb::RemapFilePathEntry>,
}

fn file_entry(dir: &ImageDir, f: &FileDesc, ghosts: &mut Ghosts) -> Result<pb::FileEntry, DumpError> {
    let mut e = pb::FileEntry { id: Some(f.id), ..Default::default() };
    match &f.kind {
        FileKind::Reg { path, mnt_id, size, mode, dev_ino, rdev, ghost } => {
            e.r#type = Some(pb::FdTypes::Reg as i32);
            e.reg = Some(pb::RegFileEntry {
                id: Some(f.id),
                flags: Some(f.flags),
                pos: Some(f.pos),
                fown: Some(pb::FownEntry::unowned()),
                name: Some(path.clone()),
                mnt_id: Some(*mnt_id),
                size: Some(*size),
                mode: Some(*mode),
                ..Default::default()
            });
            if let Some(g) = ghost {
                let gid = ghosts.next;
                ghosts.next += 1;
                let ge = pb::GhostFileEntry {
                    uid: Some(g.uid),
                    gid: Some(g.gid),
                    mode: Some(g.mode),
                    dev: Some(kdev(dev_ino.0)),
                    ino: Some(dev_ino.1),
                    rdev: Some(kdev(*rdev)),
                    atim: Some(pb::Timeval { tv_sec: Some(g.atime.0 as u64), tv_usec: Some(g.atime.1 as u64 / 1000) }),
                    mtim: Some(pb::Timeval { tv_sec: Some(g.mtime.0 as u64), tv_usec: Some(g.mtime.1 as u64 / 1000) }),
                    chunks: Some(false),
                    size: Some(g.data.len() as u64),
                    symlnk_target: None,
                };
                let mut w = dir.create_image(ImageKind::GhostFile, gid as u64).map_err(img_err)?;
                w.write_entry(&ge).map_err(img_err)?;
                w.write_raw(&g.data).map_err(img_err)?;
                w.finish().map_err(img_err)?;
                ghosts.remaps.push(pb::RemapFilePathEntry {
                    orig_id: Some(f.id),
                    remap_id: Some(gid),
                    remap_type: Some(pb::RemapType::Ghost as i32),
                });
            }
        }
        FileKind::Pipe { pipe_ino, .. } => {
            e.r#type = Some(pb::FdTypes::Pipe as i32);
            e.pipe = Some(pb::PipeEntry { id: Some(f.id), pipe_id: Some(*pipe_ino as u32), flags: Some(f.flags), fown: Some(pb::FownEntry::unowned()) });
        }
        FileKind::Fifo { pipe_ino, regf_id, .. } => {
            e.r#type = Some(pb::FdTypes::Fifo as i32);
            e.fifo = Some(pb::FifoEntry { id: Some(f.id), pipe_id: Some(*pipe_ino as u32), regf_id: Some(*regf_id) });
        }
    }
    Ok(e)
}

/// Writes `files.img` (all processes' descriptions), the pipe and FIFO
/// data, the ghost files, and each process's `fdinfo` and `fs` images.
pub(super) fn write_files(dir: &ImageDir, procs: &[ProcessDump]) -> Result<(), DumpError> {
    let mut ghosts = Ghosts { next: 1, remaps: Vec::new() };
    let mut entries = Vec::new();
    let mut pipes: Vec<(u32, &[u8])> = Vec::new();
    let mut fifos: Vec<(u32, &[u8])> = Vec::new();
    for f in procs.iter().flat_map(|p| &p.files.files) {
        entries.push(file_entry(dir, f, &mut ghosts)?);
        match &f.kind {
            FileKind::Pipe { pipe_ino, data: Some(d) } if !d.is_empty() => pipes.push((*pipe_ino as u32, d)),
            FileKind::Fifo { path, pipe_ino, data, mode, regf_id } => {
                if let Some(d) = data.as_ref().filter(|d| !d.is_empty()) {
                    fifos.push((*pipe_ino as u32, d));
                }
                // The FIFO's path, as the regular-file entry `regf_id` names it.
                let mut reg = pb::FileEntry::reg(*regf_id, path, f.flags);
                if let Some(r) = reg.reg.as_mut() {
                    r.mode = Some(*mode);
                }
                entries.push(reg);
            }
            _ => {}
        }
    }
    dir.write_all(ImageKind::Files, 0, &entries).map_err(img_err)?;
    for (kind, list) in [(ImageKind::PipesData, pipes), (ImageKind::FifoData, fifos)] {
        if list.is_empty() {
            continue;
        }
        let mut w = dir.create_image(kind, 0).map_err(img_err)?;
        for (id, data) in list {
            let e = pb::PipeDataEntry { pipe_id: Some(id), bytes: Some(data.len() as u32), size: None };
            w.write_entry_with_payload(&e, data).map_err(img_err)?;
        }
        w.finish().map_err(img_err)?;
    }
    if !ghosts.remaps.is_empty() {
        dir.write_all(ImageKind::RemapFpath, 0, &ghosts.remaps).map_err(img_err)?;
    }
    let mut tables: Vec<u32> = Vec::new();
    for p in procs {
        // Tasks sharing a descriptor table (CLONE_FILES) share one fdinfo image.
        let first = !tables.contains(&p.kobj.files);
        tables.push(p.kobj.files);
        write_fdinfo_fs(dir, p, first)?;
    }
    Ok(())
}

/// One process's `fdinfo-FILES_ID.img` (when `fdinfo`) and `fs-PID.img`.
fn write_fdinfo_fs(dir: &ImageDir, p: &ProcessDump, fdinfo: bool) -> Result<(), DumpError> {
    let fdinfos: Vec<pb::FdinfoEntry> = p
        .files
        .fds
        .iter()
        .map(|fd| {
            let ty = p.files.files.iter().find(|f| f.id == fd.file_id).map_or(pb::FdTypes::Reg, |f| match f.kind {
                FileKind::Reg { .. } => pb::FdTypes::Reg,
                FileKind::Pipe { .. } => pb::FdTypes::Pipe,
                FileKind::Fifo { .. } => pb::FdTypes::Fifo,
            });
            pb::FdinfoEntry {
                id: Some(fd.file_id),
                flags: Some(fd.cloexec as u32),
                r#type: Some(ty as i32),
                fd: Some(fd.fd as u32),
                xattr_security_selinux: None,
            }
        })
        .collect();
    if fdinfo {
        dir.write_all(ImageKind::Fdinfo, p.kobj.files as u64, &fdinfos).map_err(img_err)?;
    }
    dir.write_one(
        ImageKind::Fs,
        p.pid as u64,
        &pb::FsEntry { cwd_id: Some(p.files.cwd_id), root_id: Some(p.files.root_id), umask: Some(p.task.umask) },
    )
    .map_err(img_err)
}
