//! Images without a process: hand-built image sets ([`ImageSet`], for
//! restore's error paths and synthetic tasks), the patterned memory the
//! lazy-pages tests serve ([`Region`], [`pattern`]), and reading any image
//! with CRIU's `crit` ([`crit_decode`]).

use criu_core::images::consts::pagemap_flags::{self, LAZY, PRESENT};
use criu_core::images::consts::vma_status;
use criu_core::images::pb::{self, InventoryEntry, Lsmtype, TaskKobjIdsEntry};
use criu_core::images::{ImageDir, ImageKind, IMG_VERSION, PAGE_SIZE};
use criu_core::pageserver::store::{write_pagemap, PageRun};
use std::path::Path;
use std::process::Command;

/// A regular file's `file_entry` ([`pb::FileEntry::reg`]) with the size
/// restore checks the file against.
pub fn reg_file(id: u32, name: &str, flags: u32, size: Option<u64>) -> pb::FileEntry {
    let mut e = pb::FileEntry::reg(id, name, flags);
    e.reg.as_mut().unwrap().size = size;
    e
}

/// A pipe end's `file_entry` (`flags`: O_RDONLY or O_WRONLY, plus status flags).
pub fn pipe_file(id: u32, pipe_id: u32, flags: u32) -> pb::FileEntry {
    pb::FileEntry {
        r#type: Some(pb::FdTypes::Pipe as i32),
        id: Some(id),
        pipe: Some(pb::PipeEntry { id: Some(id), pipe_id: Some(pipe_id), flags: Some(flags), fown: Some(pb::FownEntry::unowned()) }),
        ..Default::default()
    }
}

/// A FIFO's `file_entry` (`id`) and the path entry (`regf_id`) it names.
pub fn fifo_files(id: u32, regf_id: u32, pipe_id: u32, path: &str, flags: u32) -> [pb::FileEntry; 2] {
    let fifo = pb::FileEntry {
        r#type: Some(pb::FdTypes::Fifo as i32),
        id: Some(id),
        fifo: Some(pb::FifoEntry { id: Some(id), pipe_id: Some(pipe_id), regf_id: Some(regf_id) }),
        ..Default::default()
    };
    let mut reg = pb::FileEntry::reg(regf_id, path, flags);
    reg.reg.as_mut().unwrap().mode = Some(libc::S_IFIFO | 0o600);
    [fifo, reg]
}

/// `jmp $`: spins forever.
pub const SPIN: [u8; 2] = [0xeb, 0xfe];

/// A private anonymous `vma_entry`.
pub fn anon_vma(start: u64, end: u64) -> pb::VmaEntry {
    pb::VmaEntry {
        start: Some(start),
        end: Some(end),
        pgoff: Some(0),
        shmid: Some(0),
        prot: Some(7),
        flags: Some((libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as u32),
        status: Some(vma_status::AREA_REGULAR | vma_status::ANON_PRIVATE),
        fd: Some(-1),
        ..Default::default()
    }
}

/// `mov eax, 60; mov edi, 42; syscall`: exit(42).
pub const EXIT_42: [u8; 12] = [0xb8, 0x3c, 0, 0, 0, 0xbf, 0x2a, 0, 0, 0, 0x0f, 0x05];

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
    /// `pipes-data.img` entries: pipe id and queued bytes.
    pub pipe_data: Vec<(u32, Vec<u8>)>,
    /// `fs_entry`: cwd file id and umask (root is file 1, `/`).
    pub cwd_id: u32,
    pub umask: u32,
    /// Ghost files: original file id, ghost id, contents.
    pub ghosts: Vec<(u32, u32, Vec<u8>)>,
    /// `fifo-data.img` entries: pipe id and queued bytes.
    pub fifo_data: Vec<(u32, Vec<u8>)>,
    /// Shared anonymous objects: shmid, pages id, contents from offset 0.
    pub shmem: Vec<(u64, u32, Vec<u8>)>,
}

/// The test's own credentials as a `creds_entry` (a synthetic task gets
/// what criu-rs, started by the test, can grant).
pub fn own_creds() -> pb::CredsEntry {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let field = |key: &str| -> Vec<&str> {
        status.lines().find_map(|l| l.strip_prefix(key)).unwrap_or_else(|| panic!("no {key} in status")).split_whitespace().collect()
    };
    let ids = |key: &str| -> Vec<u32> { field(key).iter().map(|v| v.parse().unwrap()).collect() };
    let caps = |key: &str| -> Vec<u32> {
        let v = u64::from_str_radix(field(key)[0], 16).unwrap();
        vec![v as u32, (v >> 32) as u32]
    };
    let (u, g) = (ids("Uid:"), ids("Gid:"));
    pb::CredsEntry {
        uid: Some(u[0]),
        euid: Some(u[1]),
        suid: Some(u[2]),
        fsuid: Some(u[3]),
        gid: Some(g[0]),
        egid: Some(g[1]),
        sgid: Some(g[2]),
        fsgid: Some(g[3]),
        cap_inh: caps("CapInh:"),
        cap_prm: caps("CapPrm:"),
        cap_eff: caps("CapEff:"),
        cap_bnd: caps("CapBnd:"),
        cap_amb: caps("CapAmb:"),
        secbits: Some(0),
        groups: ids("Groups:"),
        ..Default::default()
    }
}

impl ImageSet {
    /// One anonymous rwx VMA with two dumped pages, cwd and root `/`, no
    /// fds. The first page holds code that calls `exit(42)`, where `rip`
    /// points: restoring the set yields a task that exits with 42.
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
            st_space: vec![0; 32],
            xmm_space: vec![0; 64],
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
            thread_core: Some(pb::ThreadCoreEntry {
                futex_rla: Some(0),
                futex_rla_len: Some(0),
                creds: Some(own_creds()),
                ..Default::default()
            }),
            ..Default::default()
        };
        // Plausible layout fields: PR_SET_MM_MAP checks their order.
        let mm = pb::MmEntry {
            mm_start_code: r(0x10000), mm_end_code: r(0x10800), mm_start_data: r(0x10800), mm_end_data: r(0x11000),
            mm_start_stack: r(0x11f00), mm_start_brk: r(0x12000), mm_brk: r(0x12000), mm_arg_start: r(0x11f00),
            mm_arg_end: r(0x11f10), mm_env_start: r(0x11f10), mm_env_end: r(0x11f20), exe_file_id: Some(0),
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
            pages: {
                let mut p = vec![0xab; 2 * 4096];
                p[..EXIT_42.len()].copy_from_slice(&EXIT_42);
                p
            },
            files: vec![pb::FileEntry::reg(1, "/", libc::O_RDONLY as u32)],
            fdinfo: vec![],
            pipe_data: vec![],
            cwd_id: 1,
            umask: 0o22,
            ghosts: vec![],
            shmem: vec![],
            fifo_data: vec![],
        }
    }

    /// Replaces the code page with `code` (at `rip`, 0x10000).
    pub fn with_code(mut self, code: &[u8]) -> ImageSet {
        self.pages[..code.len()].copy_from_slice(code);
        self
    }

    /// Adds fd `fd` pointing at file `id` (a `files` entry added separately).
    pub fn add_fd(&mut self, fd: u32, id: u32, ty: pb::FdTypes, cloexec: bool) {
        self.fdinfo.push(pb::FdinfoEntry {
            id: Some(id),
            flags: Some(cloexec as u32),
            r#type: Some(ty as i32),
            fd: Some(fd),
            ..Default::default()
        });
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
        d.write_one(ImageKind::Fs, pid, &pb::FsEntry { cwd_id: Some(self.cwd_id), root_id: Some(1), umask: Some(self.umask) }).unwrap();
        for (shmid, pages_id, data) in &self.shmem {
            let mut w = d.create_image(ImageKind::ShmemPagemap, *shmid).unwrap();
            w.write_entry(&pb::PagemapHead { pages_id: Some(*pages_id) }).unwrap();
            let n = data.len() as u64 / 4096;
            w.write_entry(&pb::PagemapEntry {
                vaddr: Some(0),
                compat_nr_pages: Some(n as u32),
                nr_pages: Some(n),
                flags: Some(pagemap_flags::PRESENT),
                in_parent: None,
            })
            .unwrap();
            w.finish().unwrap();
            let mut w = d.create_pages(*pages_id as u64).unwrap();
            w.write_raw(data).unwrap();
            w.finish().unwrap();
        }
        if !self.ghosts.is_empty() {
            let remaps: Vec<pb::RemapFilePathEntry> = self
                .ghosts
                .iter()
                .map(|(orig, ghost, _)| pb::RemapFilePathEntry {
                    orig_id: Some(*orig),
                    remap_id: Some(*ghost),
                    remap_type: Some(pb::RemapType::Ghost as i32),
                })
                .collect();
            d.write_all(ImageKind::RemapFpath, 0, &remaps).unwrap();
            for (_, ghost, data) in &self.ghosts {
                let mut w = d.create_image(ImageKind::GhostFile, *ghost as u64).unwrap();
                w.write_entry(&pb::GhostFileEntry {
                    uid: Some(0),
                    gid: Some(0),
                    mode: Some(libc::S_IFREG | 0o640),
                    size: Some(data.len() as u64),
                    ..Default::default()
                })
                .unwrap();
                w.write_raw(data).unwrap();
                w.finish().unwrap();
            }
        }
        for (kind, list) in [(ImageKind::PipesData, &self.pipe_data), (ImageKind::FifoData, &self.fifo_data)] {
            if list.is_empty() {
                continue;
            }
            let mut w = d.create_image(kind, 0).unwrap();
            for (id, bytes) in list {
                w.write_entry(&pb::PipeDataEntry { pipe_id: Some(*id), bytes: Some(bytes.len() as u32), size: None }).unwrap();
                w.write_raw(bytes).unwrap();
            }
            w.finish().unwrap();
        }
        d.write_inventory(&pb::InventoryEntry { img_version: Some(IMG_VERSION), ..Default::default() }).unwrap();
    }
}

/// The word the child expects at address `a` (see `lazy_child.c`).
pub fn pattern(a: u64) -> u64 {
    a.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(0x123_4567)
}

/// Fills `buf` (image address `at`) with the pattern.
pub fn fill(at: u64, buf: &mut [u8]) {
    for (i, w) in buf.chunks_exact_mut(8).enumerate() {
        w.copy_from_slice(&pattern(at + 8 * i as u64).to_le_bytes());
    }
}

/// A patterned region of a process, as images.
pub struct Region {
    pub pid: u32,
    pub base: u64,
    pub size: u64,
    pub flags: u32,
}

impl Region {
    /// Two entries with `flags` covering all but the last page (a hole the
    /// daemon fills with zeroes).
    pub fn write(&self, dir: &ImageDir) {
        let first = (1 << 20).min(self.size / 2) / PAGE_SIZE;
        let total = self.size / PAGE_SIZE - 1;
        let runs = [
            PageRun { vaddr: self.base, nr_pages: first, flags: self.flags },
            PageRun { vaddr: self.base + first * PAGE_SIZE, nr_pages: total - first, flags: self.flags },
        ];
        write_pagemap(dir, self.pid, self.pid, &runs, &mut fill).expect("write pagemap");
    }
}

/// Makes `dir` a complete image set (inventory) for the daemon.
pub fn finish_images(dir: &ImageDir) {
    let ids = TaskKobjIdsEntry { vm_id: Some(1), files_id: Some(1), fs_id: Some(1), sighand_id: Some(1), ..Default::default() };
    dir.write_inventory(&InventoryEntry::for_dump(ids, Lsmtype::NoLsm)).expect("write inventory");
}

/// Decodes an image with `crit decode` into JSON (numbers stay numbers;
/// `--pretty` would turn flags into names and addresses into hex strings).
pub fn crit_decode(path: &Path) -> serde_json::Value {
    let out = Command::new("crit").args(["decode", "-i"]).arg(path).output().expect("running crit");
    assert!(out.status.success(), "crit decode {}: {}", path.display(), String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("crit output for {}: {e}", path.display()))
}

/// Parses a number crit printed (it prints some as "0x..." strings).
pub fn jnum(v: &serde_json::Value) -> u64 {
    match v {
        serde_json::Value::Number(n) => n.as_u64().or_else(|| n.as_i64().map(|i| i as u64)).unwrap(),
        serde_json::Value::String(s) => match s.strip_prefix("0x") {
            Some(h) => u64::from_str_radix(h, 16).unwrap(),
            None => s.parse().unwrap(),
        },
        other => panic!("not a number: {other}"),
    }
}
