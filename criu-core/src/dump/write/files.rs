//! `files.img` (every open file description of every process, each written
//! by its kind in [`crate::files`], with its side images), the per-process
//! `fdinfo-ID.img` and `fs-PID.img`.

use super::img_err;
use crate::dump::model::*;
use crate::dump::DumpError;
use crate::files::{write_desc, FilesSink};
use crate::images::{pb, ImageDir, ImageKind};
use std::collections::BTreeMap;

/// Writes `files.img` (all processes' descriptions) and the side images of
/// their kinds, and each process's `fdinfo` and `fs` images.
pub(super) fn write_files(dir: &ImageDir, procs: &[ProcessDump]) -> Result<(), DumpError> {
    let mut sink = FilesSink::new(dir);
    for f in procs.iter().flat_map(|p| &p.files.files) {
        write_desc(f, &mut sink)?;
    }
    sink.finish()?;
    let locks: Vec<pb::FileLockEntry> = procs.iter().flat_map(|p| &p.files.locks).map(|l| l.entry()).collect();
    if !locks.is_empty() {
        dir.write_all(ImageKind::FileLocks, 0, &locks).map_err(img_err)?;
    }
    // A description shared between tasks is in the files of the first.
    let types: BTreeMap<u32, pb::FdTypes> = procs.iter().flat_map(|p| &p.files.files).map(|f| (f.id, f.kind.fd_type())).collect();
    let mut tables: Vec<u32> = Vec::new();
    for p in procs {
        // Tasks sharing a descriptor table (CLONE_FILES) share one fdinfo image.
        let first = !tables.contains(&p.kobj.files);
        tables.push(p.kobj.files);
        write_fdinfo_fs(dir, p, &types, first)?;
    }
    Ok(())
}

/// One process's `fdinfo-FILES_ID.img` (when `fdinfo`) and `fs-PID.img`.
fn write_fdinfo_fs(dir: &ImageDir, p: &ProcessDump, types: &BTreeMap<u32, pb::FdTypes>, fdinfo: bool) -> Result<(), DumpError> {
    let fdinfos: Vec<pb::FdinfoEntry> = p
        .files
        .fds
        .iter()
        .map(|fd| {
            let ty = types.get(&fd.file_id).copied().unwrap_or(pb::FdTypes::Reg);
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
