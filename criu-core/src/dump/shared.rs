//! What the tasks of one dump share: ids that must be unique across the
//! tree (file ids, pages image ids), open file descriptions and pipes seen
//! in earlier tasks (so a description shared across tasks gets one id and a
//! pipe's queued bytes are saved once), shared anonymous memory objects
//! already dumped, and the kernel objects (`CLONE_VM`/`FILES`/`FS`/
//! `SIGHAND` sharing) of the tasks collected so far, compared with `kcmp`.

use super::model::KobjIds;

/// `kcmp` types (`linux/kcmp.h`).
pub mod kcmp_type {
    /// One open file description (`idx1`, `idx2` are fds).
    pub const FILE: i32 = 0;
    /// Address space.
    pub const VM: i32 = 1;
    /// Descriptor table.
    pub const FILES: i32 = 2;
    /// cwd/root/umask.
    pub const FS: i32 = 3;
    /// Signal handlers.
    pub const SIGHAND: i32 = 4;
}

/// `kcmp(pid1, pid2, type, idx1, idx2)`: whether two tasks' objects of
/// `type` are the same kernel object.
pub fn kcmp(pid1: i32, pid2: i32, ty: i32, idx1: u64, idx2: u64) -> Result<bool, nix::errno::Errno> {
    // SAFETY: kcmp only compares kernel objects; it takes no pointers.
    let r = unsafe { libc::syscall(libc::SYS_kcmp, pid1, pid2, ty, idx1 as libc::c_ulong, idx2 as libc::c_ulong) };
    if r < 0 {
        return Err(nix::errno::Errno::last());
    }
    Ok(r == 0)
}

pub use crate::files::seen::{SeenFile, SeenFiles};

/// State carried from one task's collection to the next.
#[derive(Debug)]
pub struct Shared {
    /// Next free file id.
    pub next_file_id: u32,
    /// Next free pages image id (`pages-<id>.img`).
    pub next_pages_id: u32,
    /// Descriptions and pipes seen.
    pub seen: SeenFiles,
    /// Shared anonymous memory objects: (shmid, size over every task's
    /// mappings), filled in before collection starts (0 = unknown).
    pub shmem_sizes: Vec<(u64, u64)>,
    /// Shared anonymous objects already dumped (by an earlier task).
    pub shmem_done: Vec<u64>,
    /// The kernel objects of the tasks collected so far, per kind (vm,
    /// files, fs, sighand): one (task holding it, its id) per object, in
    /// `kcmp` order ([`Shared::kobj_ids`]).
    pub kobjs: [Vec<(i32, u32)>; 4],
    /// The dump's sockets: diag tables, connections in repair mode and
    /// locked until the dump ends (released when dropped).
    pub sockets: crate::net::dump_state::DumpSockets,
}

impl Shared {
    /// The state of a dump whose sockets were asked `sockets`.
    pub fn new(sockets: crate::net::dump_state::DumpSockets) -> Self {
        Shared { sockets, ..Default::default() }
    }
}

impl Default for Shared {
    fn default() -> Self {
        Shared {
            next_file_id: 1,
            next_pages_id: super::PAGES_ID + 1,
            seen: SeenFiles::default(),
            shmem_sizes: Vec::new(),
            shmem_done: Vec::new(),
            kobjs: Default::default(),
            sockets: crate::net::dump_state::DumpSockets::new(Default::default(), String::new()),
        }
    }
}

impl Shared {
    /// A fresh pages image id.
    pub fn alloc_pages_id(&mut self) -> u32 {
        let id = self.next_pages_id;
        self.next_pages_id += 1;
        id
    }

    /// The size of a shared anonymous object over all tasks' mappings.
    pub fn shmem_size(&self, shmid: u64) -> u64 {
        self.shmem_sizes.iter().find(|s| s.0 == shmid).map_or(0, |s| s.1)
    }

    /// Notes that a mapping reaches `end` bytes into object `shmid`.
    pub fn note_shmem(&mut self, shmid: u64, end: u64) {
        match self.shmem_sizes.iter_mut().find(|s| s.0 == shmid) {
            Some(s) => s.1 = s.1.max(end),
            None => self.shmem_sizes.push((shmid, end)),
        }
    }

    /// The kernel-object ids of `pid`: for each of vm, files, fs and
    /// sighand, the id of an earlier task holding the same object
    /// (`kcmp`), else `pid` itself. Records the task. Each kind's objects
    /// are kept in `kcmp` order, so a task costs O(log n) `kcmp` calls per
    /// kind, not one per task collected before it (a tree of a thousand
    /// tasks made two million).
    pub fn kobj_ids(&mut self, pid: i32) -> Result<KobjIds, nix::errno::Errno> {
        use kcmp_type::{FILES, FS, SIGHAND, VM};
        let mut ids = KobjIds::own(pid);
        let slots = [(VM, &mut ids.vm), (FILES, &mut ids.files), (FS, &mut ids.fs), (SIGHAND, &mut ids.sighand)];
        for ((ty, id), objs) in slots.into_iter().zip(self.kobjs.iter_mut()) {
            match find_kobj(objs, pid, ty)? {
                Ok(found) => *id = found,
                Err(at) => objs.insert(at, (pid, *id)),
            }
        }
        Ok(ids)
    }
}

/// `pid`'s object of kcmp type `ty` in `objs` (kept in `kcmp` order): its
/// id, or where it goes. Objects the kernel cannot order are looked for
/// one by one and go last.
fn find_kobj(objs: &[(i32, u32)], pid: i32, ty: i32) -> Result<Result<u32, usize>, nix::errno::Errno> {
    use std::cmp::Ordering::*;
    let order = |other: i32| crate::files::seen::kcmp_order(pid, other, ty, 0, 0).map_err(|e| nix::errno::Errno::from_raw(e.raw_os_error()));
    let (mut lo, mut hi) = (0, objs.len());
    while lo < hi {
        let mid = (lo + hi) / 2;
        match order(objs[mid].0)? {
            Some(Equal) => return Ok(Ok(objs[mid].1)),
            Some(Less) => hi = mid,
            Some(Greater) => lo = mid + 1,
            None => {
                for &(other, id) in objs {
                    if order(other)? == Some(Equal) {
                        return Ok(Ok(id));
                    }
                }
                return Ok(Err(objs.len()));
            }
        }
    }
    Ok(Err(lo))
}
