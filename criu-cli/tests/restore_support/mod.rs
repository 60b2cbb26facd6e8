//! Helpers for the restore tests: hand-built image sets (for error paths,
//! before any process is involved), running `criu-rs restore`, hashing an
//! image directory, finding a free pid.

#![allow(dead_code)]

use criu_core::images::consts::{pagemap_flags, vma_status};
use criu_core::images::pb;
use criu_core::images::{ImageDir, ImageKind, IMG_VERSION};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A scratch directory under cargo's target tmpdir, emptied first.
pub fn scratch(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join("restore-tests").join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Runs `criu-rs restore -D dir extra...`.
pub fn restore(dir: &Path, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_criu-rs"))
        .args(["restore", "-D"])
        .arg(dir)
        .args(extra)
        .output()
        .expect("running criu-rs")
}

/// stderr of a run, as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Every file of `dir` with a hash of its contents and its mtime.
pub fn snapshot(dir: &Path) -> BTreeMap<String, (u64, std::time::SystemTime)> {
    use std::hash::{Hash, Hasher};
    let mut out = BTreeMap::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let mut h = std::collections::hash_map::DefaultHasher::new();
        std::fs::read(e.path()).unwrap().hash(&mut h);
        out.insert(e.file_name().to_string_lossy().into_owned(), (h.finish(), e.metadata().unwrap().modified().unwrap()));
    }
    out
}

/// A pid no process uses now (high, so the kernel is unlikely to hand it
/// out meanwhile).
pub fn free_pid() -> i32 {
    let max: i32 = std::fs::read_to_string("/proc/sys/kernel/pid_max").unwrap().trim().parse().unwrap();
    // Distinct per call, so parallel tests never share one.
    static NEXT: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);
    let seed = std::process::id() as i32 % 1000 * 1000;
    (0..1000)
        .map(|_| max - 1000 - (seed + NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed) * 7) % (max / 2))
        .find(|p| *p > 300 && !Path::new(&format!("/proc/{p}")).exists())
        .unwrap()
}

/// Whether `/proc/PID` exists.
pub fn alive(pid: i32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

fn fown() -> pb::FownEntry {
    pb::FownEntry { uid: Some(0), euid: Some(0), signum: Some(0), pid_type: Some(0), pid: Some(0) }
}

/// A regular-file `file_entry`.
pub fn reg_file(id: u32, name: &str, flags: u32, size: Option<u64>) -> pb::FileEntry {
    pb::FileEntry {
        r#type: Some(pb::FdTypes::Reg as i32),
        id: Some(id),
        reg: Some(pb::RegFileEntry {
            id: Some(id),
            flags: Some(flags),
            pos: Some(0),
            fown: Some(fown()),
            name: Some(name.to_string()),
            size,
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A private anonymous `vma_entry`.
pub fn anon_vma(start: u64, end: u64) -> pb::VmaEntry {
    pb::VmaEntry {
        start: Some(start),
        end: Some(end),
        pgoff: Some(0),
        shmid: Some(0),
        prot: Some(3),
        flags: Some((libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as u32),
        status: Some(vma_status::AREA_REGULAR | vma_status::ANON_PRIVATE),
        fd: Some(-1),
        ..Default::default()
    }
}

/// The pieces of a minimal single-process image set; tests tweak them
/// before [`ImageSet::write`].
pub struct ImageSet {
    pub pid: i32,
    pub core: pb::CoreEntry,
    pub mm: pb::MmEntry,
    pub pagemap: Vec<pb::PagemapEntry>,
    pub pages: Vec<u8>,
    pub files: Vec<pb::FileEntry>,
    pub fdinfo: Vec<pb::FdinfoEntry>,
}

impl ImageSet {
    /// One anonymous VMA with two dumped pages, cwd and root `/`, no fds.
    pub fn minimal(pid: i32) -> ImageSet {
        let r = |v| Some(v);
        let gpregs = pb::UserX86RegsEntry {
            r15: r(0), r14: r(0), r13: r(0), r12: r(0), bp: r(0), bx: r(0), r11: r(0), r10: r(0), r9: r(0), r8: r(0),
            ax: r(0), cx: r(0), dx: r(0), si: r(0), di: r(0), orig_ax: r(u64::MAX), ip: r(0x10000), cs: r(0x33),
            flags: r(0x246), sp: r(0x11000), ss: r(0x2b), fs_base: r(0), gs_base: r(0), ds: r(0), es: r(0), fs: r(0), gs: r(0),
            mode: None,
        };
        let fpregs = pb::UserX86FpregsEntry {
            cwd: Some(0x37f), swd: Some(0), twd: Some(0), fop: Some(0), rip: Some(0), rdp: Some(0), mxcsr: Some(0x1f80), mxcsr_mask: Some(0xffff),
            ..Default::default()
        };
        let core = pb::CoreEntry {
            mtype: Some(pb::core_entry::March::X8664 as i32),
            thread_info: Some(pb::ThreadInfoX86 {
                clear_tid_addr: Some(0),
                gpregs: Some(gpregs),
                fpregs: Some(fpregs),
                tls: vec![],
            }),
            tc: Some(pb::TaskCoreEntry {
                task_state: Some(1),
                exit_code: Some(0),
                personality: Some(0),
                flags: Some(0),
                blk_sigset: Some(0),
                comm: Some("fake".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let z = Some(0u64);
        let mm = pb::MmEntry {
            mm_start_code: z, mm_end_code: z, mm_start_data: z, mm_end_data: z, mm_start_stack: z, mm_start_brk: z,
            mm_brk: z, mm_arg_start: z, mm_arg_end: z, mm_env_start: z, mm_env_end: z, exe_file_id: Some(0),
            vmas: vec![anon_vma(0x10000, 0x12000)],
            ..Default::default()
        };
        ImageSet {
            pid,
            core,
            mm,
            pagemap: vec![pb::PagemapEntry {
                vaddr: Some(0x10000),
                compat_nr_pages: Some(2),
                nr_pages: Some(2),
                flags: Some(pagemap_flags::PRESENT),
                in_parent: None,
            }],
            pages: vec![0xab; 2 * 4096],
            files: vec![reg_file(1, "/", libc::O_RDONLY as u32, None)],
            fdinfo: vec![],
        }
    }

    /// Writes every image into `dir` (inventory last).
    pub fn write(&self, dir: &Path) {
        let d = ImageDir::create(dir).unwrap();
        let pid = self.pid as u64;
        let p = self.pid as u32;
        d.write_all(ImageKind::Pstree, 0, &[pb::PstreeEntry { pid: Some(p), ppid: Some(0), pgid: Some(p), sid: Some(p), threads: vec![p] }])
            .unwrap();
        d.write_one(ImageKind::Core, pid, &self.core).unwrap();
        d.write_one(ImageKind::Mm, pid, &self.mm).unwrap();
        let mut w = d.create_image(ImageKind::Pagemap, pid).unwrap();
        w.write_entry(&pb::PagemapHead { pages_id: Some(1) }).unwrap();
        for e in &self.pagemap {
            w.write_entry(e).unwrap();
        }
        w.finish().unwrap();
        let mut w = d.create_pages(1).unwrap();
        w.write_raw(&self.pages).unwrap();
        w.finish().unwrap();
        d.write_all(ImageKind::Files, 0, &self.files).unwrap();
        d.write_all(ImageKind::Fdinfo, pid, &self.fdinfo).unwrap();
        d.write_one(ImageKind::Fs, pid, &pb::FsEntry { cwd_id: Some(1), root_id: Some(1), umask: Some(0o22) }).unwrap();
        d.write_inventory(&pb::InventoryEntry { img_version: Some(IMG_VERSION), ..Default::default() }).unwrap();
    }
}
