//! Memory areas restored exactly (issues 9 and 11): `tests/programs/memareas.c`
//! sets up the areas of the features it is given in a parent and its child,
//! is dumped (which kills it), restored, and checks itself from inside.
//!
//! - shared anonymous memory mapped in pieces at non-zero offsets, aliased
//!   within a task and shared between the two, in criu-rs's images and in
//!   the layout CRIU 4.x writes (a memfd named `/dev/zero`, which this test
//!   makes from criu-rs's images, since CI has no CRIU); the same images
//!   naming another memfd give that memfd;
//! - private mappings of shared anonymous memory and of a memfd: the pages
//!   a task wrote are its own, the others follow the object (written as
//!   CRIU does: `FILE_PRIVATE | AREA_MEMFD` areas of a memfd inode, named
//!   `/dev/zero` for shared anonymous memory);
//! - special areas: memory locked (populated, and on fault), areas advised
//!   DONTFORK, WIPEONFORK, HUGEPAGE, NOHUGEPAGE, MERGEABLE, DONTDUMP,
//!   SEQUENTIAL, RANDOM, `MAP_NORESERVE` and `MAP_DROPPABLE` ones (their
//!   VmFlags as before the dump, and what a fork after the restore makes of
//!   them), `PR_SET_THP_DISABLE` per task; the "except advised" THP mode,
//!   which CRIU's images cannot hold, refused at dump by name;
//! - pages a parent and its child share copy-on-write (private anonymous
//!   memory, a private file mapping) are one page each again after the
//!   restore (and the pages either wrote are not);
//! - SysV shared memory attachments of a segment that outlives the
//!   processes are attached again (a restore without the segment fails
//!   cleanly); one marked for removal is refused at dump by name;
//! - guard regions (`MADV_GUARD_INSTALL`) in anonymous and private file
//!   areas are guards again (written as CRIU does: `VMA_AREA_GUARD`
//!   entries after the areas); a shared file area opened read-write can be
//!   made writable again, one opened read-only cannot;
//! - a process that unmapped its vDSO and vvar gets none back;
//! - refused at dump by name, the process left running: memory pinned by
//!   a holder outside the tree (an io_uring fixed buffer: `VmPin`), device
//!   memory (a perf_event ring, `VM_IO|VM_PFNMAP`) (see
//!   `criu_core::dump::vmas` on pinned areas).

mod common;

use criu_core::images::consts::vma_status as st;
use criu_core::images::{pb, ImageDir, ImageKind};
use std::path::{Path, PathBuf};
use common::*;

/// A dumped memareas.c: its work dir, result file, images and pids, and
/// the SysV segment it made (if any), removed on drop.
struct Dumped {
    work: PathBuf,
    result: PathBuf,
    images: PathBuf,
    pids: [i32; 2],
    segment: Option<Segment>,
}

/// A SysV shared memory segment a test program made: removed (`IPC_RMID`)
/// on drop.
struct Segment(i32);

impl Drop for Segment {
    fn drop(&mut self) {
        // SAFETY: IPC_RMID on the segment our test program created; no buffer.
        unsafe { libc::shmctl(self.0, libc::IPC_RMID, std::ptr::null_mut()) };
    }
}

/// The segment memareas.c says it made (`shmid=` in READY; -1: none).
fn segment_of(p: &Program) -> Option<Segment> {
    p.info.get("shmid").and_then(|id| id.parse().ok()).filter(|&id: &i32| id >= 0).map(Segment)
}

/// Starts memareas.c with `features`, dumps it and waits until its pids are free.
fn dumped(name: &str, features: &[&str]) -> Dumped {
    let work = scratch(&format!("{name}-work"));
    let result = work.with_extension("result");
    let images = scratch(&format!("{name}-images"));
    let _ = std::fs::remove_file(&result);
    let mut args: Vec<&Path> = vec![&work, &result];
    args.extend(features.iter().map(Path::new));
    let mut p = Program::spawn("memareas", &args);
    let pids = [p.pid(), p.int("c")];
    let segment = segment_of(&p);
    // Killed if the dump fails (the dump itself kills both).
    let _child = Held::open(pids[1]).unwrap();
    wait_all_suspended(&pids);
    dump_ok(pids[0], &images, &[]);
    p.reap();
    for pid in pids {
        wait_pid_gone(pid);
    }
    Dumped { work, result, images, pids, segment }
}

impl Dumped {
    /// Restores it (from `images`) and returns the root's self-check report.
    fn restore_and_check(&self, images: &Path) -> String {
        let root = restore_detached(images, self.pids[0]);
        let child = Held::open(self.pids[1]).unwrap_or_else(|e| panic!("restored tree lacks pid {}: {e}", self.pids[1]));
        wait_all_suspended(&self.pids);
        let _ = std::fs::remove_file(&self.result);
        root.signal(libc::SIGUSR1).unwrap();
        let report = wait_result(&self.result);
        assert!(root.wait_exit(PATIENCE), "pid {} did not exit after its self-check", root.pid);
        drop(child);
        for pid in self.pids {
            wait_pid_gone(pid);
        }
        report
    }
}

#[test]
fn shared_anonymous_memory_at_offsets_is_shared_again() {
    let d = dumped("mem-shmem", &["shmem"]);
    assert!(d.work.is_dir());
    let report = d.restore_and_check(&d.images);
    assert_all_ok("shared anonymous memory", &report);
    for check in ["shmem-offset-b", "shmem-alias-same-memory", "shmem-shared-with-child"] {
        assert!(report.contains(&format!("R: ok {check}\n")), "R lacks {check}:\n{report}");
    }
    assert!(report.contains("C: ok shmem-shared-with-parent\n"), "{report}");
}

/// Rewrites the shared anonymous areas of the images in `dir` the way CRIU
/// 4.x dumps them on this kernel: each object becomes a memfd inode named
/// `/dev/zero` in `memfd.img` (its `shmid` naming the same
/// `pagemap-shmem-SHMID.img`), one `MEMFD` file per object in `files.img`,
/// and the areas `FILE_SHARED | AREA_MEMFD` mappings of that file.
/// `name` is the inode name to write.
fn to_criu_memfd_layout(dir: &Path, pids: &[i32], name: &str) {
    let images = ImageDir::open(dir).unwrap();
    let mut files: Vec<pb::FileEntry> = images.read_all(ImageKind::Files, 0).unwrap();
    let mut next_id = files.iter().filter_map(|f| f.id).max().unwrap_or(0) + 1;
    // shmid -> (file id, inode id, size)
    let mut objects: std::collections::BTreeMap<u64, (u32, u64, u64)> = Default::default();
    let mut mms = Vec::new();
    for &pid in pids {
        let mut mm: pb::MmEntry = images.read_one(ImageKind::Mm, pid as u64).unwrap();
        for v in mm.vmas.iter_mut().filter(|v| v.status() & st::ANON_SHARED != 0) {
            let n = objects.len() as u64;
            let obj = objects.entry(v.shmid()).or_insert_with(|| {
                next_id += 1;
                (next_id - 1, 1 + n, 0)
            });
            obj.2 = obj.2.max(v.pgoff() + v.end() - v.start());
            v.shmid = Some(obj.0 as u64);
            v.status = Some(st::AREA_REGULAR | st::FILE_SHARED | st::AREA_MEMFD);
            v.flags = Some(libc::MAP_SHARED as u32);
            v.fdflags = Some(libc::O_RDWR as u32);
        }
        mms.push((pid, mm));
    }
    assert!(!objects.is_empty(), "no shared anonymous area in {}", dir.display());
    for (pid, mm) in mms {
        images.write_one(ImageKind::Mm, pid as u64, &mm).unwrap();
    }
    let fown = pb::FownEntry { uid: Some(0), euid: Some(0), signum: Some(0), pid_type: Some(0), pid: Some(0) };
    let mut inodes = Vec::new();
    for (&shmid, &(id, inode_id, size)) in &objects {
        files.push(pb::FileEntry {
            r#type: Some(pb::FdTypes::Memfd as i32),
            id: Some(id),
            memfd: Some(pb::MemfdFileEntry {
                id: Some(id),
                flags: Some(libc::O_RDWR as u32),
                pos: Some(0),
                fown: Some(fown),
                inode_id: Some(inode_id as u32),
            }),
            ..Default::default()
        });
        inodes.push(pb::MemfdInodeEntry {
            name: Some(name.into()),
            uid: Some(0),
            gid: Some(0),
            size: Some(size),
            shmid: Some(shmid as u32),
            seals: Some(libc::F_SEAL_SEAL as u32),
            inode_id: Some(inode_id),
            hugetlb_flag: None,
            mode: None,
        });
    }
    images.write_all(ImageKind::Files, 0, &files).unwrap();
    images.write_all(ImageKind::MemfdInode, 0, &inodes).unwrap();
}

/// Copies the flat images directory `from` to a fresh `to`.
fn copy_dir(from: &Path, to: &Path) {
    let _ = std::fs::remove_dir_all(to);
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

#[test]
fn criu_memfd_layout_of_shared_anonymous_memory_restores() {
    let d = dumped("mem-shmem-criu", &["shmem"]);
    // A real memfd (another name): the same memory, shared again, now shown as that memfd.
    let other = d.images.with_extension("other");
    copy_dir(&d.images, &other);
    to_criu_memfd_layout(&other, &d.pids, "other");
    let report = d.restore_and_check(&other);
    for check in ["shmem-pattern", "shmem-alias-same-memory", "shmem-shared-with-child"] {
        assert!(report.contains(&format!("R: ok {check}\n")), "R lacks {check}:\n{report}");
    }
    let named: Vec<&str> = report.lines().filter(|l| l.contains("shmem-offset-")).collect();
    assert_eq!(named.len(), 8, "{report}");
    assert!(named.iter().all(|l| l.contains("FAIL") && l.contains("/memfd:other (deleted)")), "{report}");
    // CRIU's own layout of shared anonymous memory: exactly as it was.
    to_criu_memfd_layout(&d.images, &d.pids, "/dev/zero");
    let decoded = crit_decode(&d.images.join("memfd.img"));
    assert_eq!(decoded["entries"][0]["name"], "/dev/zero", "{decoded}");
    let report = d.restore_and_check(&d.images);
    assert_all_ok("shared anonymous memory from CRIU's memfd layout", &report);
}

#[test]
fn locked_and_advised_areas_and_thp_setting_come_back() {
    let d = dumped("mem-special", &["locked", "madvise", "thp"]);
    let report = d.restore_and_check(&d.images);
    assert_all_ok("locked and advised areas", &report);
    for check in ["lock-on-fault-resident", "madvise-droppable-flags", "droppable-empty", "madvise-fork-after-restore", "thp-disable"] {
        assert!(report.contains(&format!("R: ok {check}\n")), "R lacks {check}:\n{report}");
    }
}

/// Starts memareas.c with `feature`, which criu-rs must refuse to dump:
/// the dump fails with every one of `says` in its message, writes no
/// inventory and leaves both tasks waiting where they were.
fn refused_at_dump(name: &str, feature: &str, says: &[&str]) {
    let work = scratch(&format!("{name}-work"));
    let result = work.with_extension("result");
    let images = scratch(&format!("{name}-images"));
    let p = Program::spawn("memareas", &[&work, &result, Path::new(feature)]);
    let pids = [p.pid(), p.int("c")];
    let _child = Held::open(pids[1]).unwrap();
    let _segment = segment_of(&p);
    // The io_uring holder outside the tree ("pinned"), killed at the end.
    let _holder = p.info.get("holder").and_then(|h| h.parse().ok()).filter(|&h: &i32| h > 0).map(|h| Held::open(h).unwrap());
    wait_all_suspended(&pids);
    let out = dump(pids[0], &images, &[]);
    let err = text(&out.stderr);
    assert!(!out.status.success() && says.iter().all(|s| err.contains(s)), "{feature}: {err}");
    assert!(!images.join("inventory.img").exists());
    wait_all_suspended(&pids);
}

#[test]
fn guard_regions_come_back() {
    let d = dumped("mem-guard", &["guard"]);
    // In CRIU's layout: entries with only VMA_AREA_GUARD, after the areas.
    let images = ImageDir::open(&d.images).unwrap();
    let mm: pb::MmEntry = images.read_one(ImageKind::Mm, d.pids[0] as u64).unwrap();
    let guards: Vec<_> = mm.vmas.iter().skip_while(|v| v.status() != st::AREA_GUARD).map(|v| (v.status(), v.end() - v.start())).collect();
    assert_eq!(guards, [(st::AREA_GUARD, 0x2000), (st::AREA_GUARD, 0x1000), (st::AREA_GUARD, 0x1000)], "{:x?}", mm.vmas);
    let report = d.restore_and_check(&d.images);
    assert_all_ok("guard regions", &report);
    for check in ["guard-pages", "guard-faults", "guard-contents"] {
        assert!(report.contains(&format!("R: ok {check}\n")) && report.contains(&format!("C: ok {check}\n")), "{report}");
    }
}

#[test]
fn shared_file_areas_keep_how_their_file_was_opened() {
    let d = dumped("mem-file-prot", &["file-prot"]);
    let report = d.restore_and_check(&d.images);
    assert_all_ok("shared file areas' open mode", &report);
    assert!(report.contains("R: ok file-prot-widened\n") && report.contains("R: ok file-prot-ro-stays\n"), "{report}");
}

#[test]
fn pinned_memory_is_refused_at_dump() {
    // R's fixed buffer stays pinned by an io_uring only a process outside
    // the tree holds: nothing in the tree shows it but VmPin.
    refused_at_dump("mem-pinned", "pinned", &["unsupported: 64 kB of memory pinned (VmPin"]);
}

/// A process that unmapped its vDSO (zdtm vdso02) gets none back (the
/// restore's own vDSO is unmapped, not left parked).
#[test]
fn a_process_without_vdso_comes_back_without_one() {
    let d = dumped("mem-no-vdso", &["no-vdso"]);
    let report = d.restore_and_check(&d.images);
    assert_all_ok("no vDSO", &report);
}

#[test]
fn device_memory_is_refused_at_dump() {
    refused_at_dump("mem-device-ring", "device-ring", &["anon_inode:[perf_event]", "device memory mapped by a driver (VM_IO/VM_PFNMAP)"]);
}

/// Private mappings of shared anonymous memory (through map_files) and of
/// a memfd (zdtm shmemfd-priv, memfd02): the written pages are the task's
/// own, the others follow the object after the restore.
#[test]
fn private_mappings_of_shared_memory_objects_follow_the_object() {
    let d = dumped("mem-priv-obj", &["shmem-private", "memfd-private"]);
    let report = d.restore_and_check(&d.images);
    assert_all_ok("private mappings of shared memory objects", &report);
    for check in ["shmem-private-follows-object", "memfd-private-follows-object"] {
        assert!(report.contains(&format!("R: ok {check}\n")) && report.contains(&format!("C: ok {check}\n")), "{report}");
    }
}

#[test]
fn thp_disabled_except_advised_is_refused_at_dump() {
    refused_at_dump("mem-thp-advised", "thp-advised", &["unsupported: PR_SET_THP_DISABLE mode 0x3"]);
}

#[test]
fn pages_shared_copy_on_write_stay_shared() {
    let d = dumped("mem-cow", &["cow", "cow-file"]);
    let report = d.restore_and_check(&d.images);
    assert_all_ok("copy-on-write sharing", &report);
    for check in ["cow-pages-shared", "cow-file-pages-shared"] {
        assert!(report.contains(&format!("R: ok {check}\n")) && report.contains(&format!("C: ok {check}\n")), "{report}");
    }
}

#[test]
fn sysv_shared_memory_attachments_come_back() {
    let mut d = dumped("mem-sysv", &["sysv"]);
    let report = d.restore_and_check(&d.images);
    assert_all_ok("SysV shared memory attachments", &report);
    assert!(report.contains("C: ok sysv-shared-with-parent\n"), "{report}");
    // The segment is not in the images: without it the restore fails, naming it.
    let id = d.segment.take().unwrap().0;
    let out = restore(&d.images, &["-d"]);
    let err = text(&out.stderr);
    assert!(!out.status.success() && err.contains(&format!("SysV shared memory segment {id} is gone")), "{err}");
    for pid in d.pids {
        assert!(!Path::new(&format!("/proc/{pid}")).exists(), "a failed restore left {pid}");
    }
}

#[test]
fn sysv_segment_marked_for_removal_is_refused_at_dump() {
    refused_at_dump("mem-sysv-rmid", "sysv-rmid", &["unsupported: SysV shared memory segment", "marked for removal"]);
}
