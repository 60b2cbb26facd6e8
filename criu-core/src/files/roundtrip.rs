//! Test support: descriptions written through [`FilesSink`] into a
//! temporary images directory, then read back through `files.img`, the
//! side images and the kind's `load`, as a restore would.

use super::load::{load_fds, load_files, TaskFiles};
use super::{write_desc, DescPlan, FileDesc, FileKind, FilesSink, Fown, LoadOptions};
use crate::images::{pb, ImageDir, ImageKind};
use crate::restore::Result;
use std::collections::BTreeMap;

/// A description with id `id`, flags `flags`, position 0, no owner.
pub fn desc(id: u32, flags: i32, kind: FileKind) -> FileDesc {
    FileDesc { id, flags: flags as u32, pos: 0, fown: Fown::default(), kind }
}

/// Writes `descs` (each on fd = its index) and loads them back with
/// `opts`: the plans by file id, and the images directory (kept alive).
pub fn roundtrip(descs: &[FileDesc], opts: &LoadOptions) -> (Result<BTreeMap<u32, DescPlan>>, tempfile::TempDir) {
    let (files, dir) = roundtrip_files(descs, opts);
    (files.map(|t| t.descs), dir)
}

/// [`roundtrip`], with the fd table and owners.
pub fn roundtrip_files(descs: &[FileDesc], opts: &LoadOptions) -> (Result<TaskFiles>, tempfile::TempDir) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = ImageDir::create(tmp.path()).unwrap();
    let mut sink = FilesSink::new(&dir);
    for d in descs {
        write_desc(d, &mut sink).unwrap();
    }
    sink.finish().unwrap();
    let infos: Vec<pb::FdinfoEntry> = descs
        .iter()
        .enumerate()
        .map(|(fd, d)| pb::FdinfoEntry {
            id: Some(d.id),
            flags: Some(0),
            r#type: Some(d.kind.fd_type() as i32),
            fd: Some(fd as u32),
            xattr_security_selinux: None,
        })
        .collect();
    dir.write_all(ImageKind::Fdinfo, 1, &infos).unwrap();
    let files = load_files(&dir).unwrap();
    let plans = load_fds(&dir, 1, &files, &super::SideImages::default(), opts);
    (plans, tmp)
}

/// `crit decode -i PATH` succeeds (when crit is installed).
pub fn crit_decodes(path: &std::path::Path) {
    let Ok(out) = std::process::Command::new("crit").args(["decode", "-i"]).arg(path).output() else { return };
    assert!(out.status.success(), "crit cannot decode {}: {}", path.display(), String::from_utf8_lossy(&out.stderr));
}
