//! Turning collected state ([`ProcessDump`]s) into CRIU image files.
//!
//! Layout (as current CRIU writes it): `pstree.img`; per thread
//! `core-TID.img` (the leader's also holds `task_core`: sigactions,
//! rlimits, timers, shared pending signals; every thread's `thread_core`
//! holds creds, mask, private pending signals, sigaltstack, rseq);
//! `ids-PID.img`, `mm-PID.img` (with the VMAs), `pagemap-PID.img` (pages
//! in the task's own `pages-<pages_id>.img`, written during collection:
//! the root's is `pages-1.img`), `pagemap-shmem-SHMID.img` (once per shared
//! anonymous object, whichever task mapped it first),
//! `files.img`, `fdinfo-FILES_ID.img`, `fs-PID.img`, `pipes-data.img`,
//! `fifo-data.img`, `remap-fpath.img` + `ghost-file-ID.img`,
//! `stats-dump`, and `inventory.img` last.
//!
//! A tree: `pstree.img` lists the live tasks parents first (the root with
//! ppid 0), then the zombies (leaves, so still parents first; `threads` is
//! the zombie's pid); a zombie has only `core-PID.img` with `task_core`
//! (`task_state` `TASK_DEAD` as CRIU writes it, `exit_code` the raw wait
//! status). File ids are unique across the tree; a description shared by
//! several tasks is one `files.img` entry that each task's fdinfo names;
//! `ids-PID.img` carries `kcmp`-compared vm/files/fs/sighand ids, and tasks
//! sharing a descriptor table share one `fdinfo-FILES_ID.img`.
//!
//! - [`core`]: registers and task/thread state (`core-TID.img`), kobj ids.
//! - [`mm`]: `mm-PID.img` and pagemaps.
//! - [`files`]: files, fdinfo, fs, pipe/FIFO data, ghost files.
//! - [`seccomp`]: `seccomp.img`, every thread's filters (written even when
//!   empty, as CRIU does).

mod core;
mod files;
mod mm;
mod seccomp;

pub use self::core::{core_entry, fpregs_entry, gpregs_entry, kobj_ids, task_kobj_ids, zombie_core_entry};
use super::model::{ProcessDump, ZombieDump};
use super::{DumpError, DumpSummary};
use crate::images::{pb, ImageDir, ImageError, ImageKind};

fn img_err(e: ImageError) -> DumpError {
    DumpError::Image(e)
}

/// Writes one process's own images: cores, ids, mm, pagemaps (its private
/// pagemap only when `pagemap`: a page server writes it otherwise).
fn write_process(dir: &ImageDir, p: &ProcessDump, pagemap: bool, sc: &seccomp::SeccompImage) -> Result<(), DumpError> {
    let pid = p.pid as u64;
    for (i, t) in p.threads.iter().enumerate() {
        let mut core = core_entry(p, t, i == 0);
        if let (Some(tc), Some(s)) = (core.thread_core.as_mut(), sc.threads.get(&t.tid)) {
            tc.seccomp_mode = Some(s.mode as i32);
            tc.seccomp_filter = s.filter;
        }
        dir.write_one(ImageKind::Core, t.tid as u64, &core).map_err(img_err)?;
    }
    dir.write_one(ImageKind::Ids, pid, &task_kobj_ids(p)).map_err(img_err)?;
    dir.write_one(ImageKind::Mm, pid, &mm::mm_entry(p)).map_err(img_err)?;
    if pagemap {
        mm::pagemap_image(dir, ImageKind::Pagemap, pid, p.pages_id, &p.pagemap)?;
    }
    for sh in &p.shmem {
        mm::pagemap_image(dir, ImageKind::ShmemPagemap, sh.shmid, sh.pages_id, &sh.pagemap)?;
    }
    Ok(())
}

/// Writes what a pre-dump leaves: every task's pagemaps (the pages images
/// were written during collection). No inventory: a pre-dump is only ever
/// a parent of another dump, never restored by itself.
#[tracing::instrument(level = "debug", skip_all, fields(tasks = procs.len()))]
pub fn write_pagemaps(dir: &std::path::Path, procs: &[ProcessDump]) -> Result<(), DumpError> {
    let dir = ImageDir::open_unchecked(dir);
    for p in procs {
        mm::pagemap_image(&dir, ImageKind::Pagemap, p.pid as u64, p.pages_id, &p.pagemap)?;
        for sh in &p.shmem {
            mm::pagemap_image(&dir, ImageKind::ShmemPagemap, sh.shmid, sh.pages_id, &sh.pagemap)?;
        }
    }
    Ok(())
}

/// Writes every image of a dump of `procs` (the root first; a parent before
/// its children) and `zombies` (listed after the live tasks in `pstree.img`,
/// which keeps parents first since zombies have no children), the
/// inventory last.
#[tracing::instrument(level = "debug", skip_all, fields(tasks = procs.len()))]
pub fn write_images(
    dir: &std::path::Path,
    procs: &[ProcessDump],
    zombies: &[ZombieDump],
    s: &DumpSummary,
    sockets: &crate::net::dump_state::DumpSockets,
) -> Result<(), DumpError> {
    let dir = ImageDir::open_unchecked(dir);
    let entry = |pid: i32, ppid: i32, pgid: i32, sid: i32, threads: Vec<u32>| pb::PstreeEntry {
        pid: Some(pid as u32),
        ppid: Some(ppid as u32),
        pgid: Some(pgid as u32),
        sid: Some(sid as u32),
        threads,
    };
    let pstree: Vec<pb::PstreeEntry> = procs
        .iter()
        .enumerate()
        // The root's parent is outside the dump.
        .map(|(i, p)| entry(p.pid, if i == 0 { 0 } else { p.ppid }, p.pgid, p.sid, p.threads.iter().map(|t| t.tid as u32).collect()))
        .chain(zombies.iter().map(|z| entry(z.pid, z.ppid, z.pgid, z.sid, vec![z.pid as u32])))
        .collect();
    dir.write_all(ImageKind::Pstree, 0, &pstree).map_err(img_err)?;
    let sc = seccomp::seccomp_image(procs);
    for p in procs {
        write_process(&dir, p, !s.pages_remote, &sc)?;
    }
    dir.write_one(ImageKind::Seccomp, 0, &sc.entry).map_err(img_err)?;
    for z in zombies {
        dir.write_one(ImageKind::Core, z.pid as u64, &zombie_core_entry(z)).map_err(img_err)?;
    }
    files::write_files(&dir, procs)?;
    dir.write_one(ImageKind::StatsDump, 0, &crate::stats::dump_entry(s)).map_err(img_err)?;
    // As in CRIU, root_ids are the dumper's own: restore compares a task's
    // namespace ids with them to tell host namespaces from the task's own.
    let inv = pb::InventoryEntry {
        img_version: Some(crate::images::IMG_VERSION),
        fdinfo_per_id: Some(true),
        root_ids: Some(kobj_ids(std::process::id() as i32)),
        ns_per_id: Some(true),
        lsmtype: Some(pb::Lsmtype::NoLsm as i32),
        // Restore (ours or CRIU's) lifts the lock the dump left with the
        // same method, and needs --tcp-close when the dump had it.
        network_lock_method: Some(sockets.opts.lock as u32),
        dump_criu_run_id: Some(sockets.run_id().to_owned()),
        tcp_close: sockets.opts.tcp_close.then_some(true),
        ..Default::default()
    };
    dir.write_inventory(&inv).map_err(img_err)
}
