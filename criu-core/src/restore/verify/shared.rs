//! What tasks share (`CLONE_VM`, `CLONE_FILES`, `CLONE_FS`,
//! `CLONE_SIGHAND` between processes) against the kernel-object ids of
//! `ids-PID.img` (or `core.ids`): two tasks with the same id must hold one
//! kernel object (`kcmp` says equal), tasks with different ids must not.
//! A tree check: a difference is reported for the later task of the pair.

use crate::dump::shared::kcmp_type;
use crate::images::{pb, ImageDir, ImageKind};
use std::collections::BTreeMap;

/// The shared kinds: kcmp type, what it is, the id in the image.
const KINDS: &[(i32, &str, fn(&pb::TaskKobjIdsEntry) -> Option<u32>)] = &[
    (kcmp_type::VM, "address space", |i| i.vm_id),
    (kcmp_type::FILES, "fd table", |i| i.files_id),
    (kcmp_type::FS, "fs context (cwd, root, umask)", |i| i.fs_id),
    (kcmp_type::SIGHAND, "signal handlers", |i| i.sighand_id),
];

/// The kernel-object ids of task `pid`: `core.ids`, else `ids-PID.img`.
pub fn ids(images: &ImageDir, core: &pb::CoreEntry, pid: i32) -> crate::restore::error::Result<Option<pb::TaskKobjIdsEntry>> {
    if let Some(ids) = &core.ids {
        return Ok(Some(ids.clone()));
    }
    if images.exists(ImageKind::Ids, pid as u64) {
        return Ok(Some(images.read_one(ImageKind::Ids, pid as u64)?));
    }
    Ok(None)
}

/// Compares the sharing of `tasks` (pid and its ids, in tree order) with
/// `kcmp`; returns the first difference of each task that has one.
pub fn check(tasks: &[(i32, pb::TaskKobjIdsEntry)]) -> Vec<(i32, String)> {
    let mut out: Vec<(i32, String)> = Vec::new();
    for &(ty, what, id_of) in KINDS {
        // The first task seen holding each id.
        let mut first: BTreeMap<u32, i32> = BTreeMap::new();
        for (pid, ids) in tasks {
            let Some(id) = id_of(ids) else { continue };
            if out.iter().any(|(p, _)| p == pid) {
                continue;
            }
            let diff = match first.get(&id) {
                Some(&other) => match same(other, *pid, ty) {
                    Ok(true) => None,
                    Ok(false) => Some(format!("{what} not shared with pid {other}, image: shared (id {id})")),
                    Err(e) => Some(format!("kcmp({other}, {pid}) of the {what}: {e}")),
                },
                None => first.iter().find_map(|(&oid, &other)| match same(other, *pid, ty) {
                    Ok(false) => None,
                    Ok(true) => Some(format!("{what} shared with pid {other}, image: not (ids {oid} and {id})")),
                    Err(e) => Some(format!("kcmp({other}, {pid}) of the {what}: {e}")),
                }),
            };
            first.entry(id).or_insert(*pid);
            if let Some(d) = diff {
                out.push((*pid, d));
            }
        }
    }
    out
}

/// `kcmp(a, b, ty, 0, 0) == 0`.
fn same(a: i32, b: i32, ty: i32) -> Result<bool, nix::errno::Errno> {
    crate::dump::shared::kcmp(a, b, ty, 0, 0)
}
