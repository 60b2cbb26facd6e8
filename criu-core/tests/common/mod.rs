//! Shared by the image tests: a sample image set with known values.

#![allow(dead_code)]

use std::path::Path;
use std::process::Command;

use criu_core::images::consts::{pagemap_flags, task_state, vma_status, x86, SIGACTION_COUNT};
use criu_core::images::pb::*;
use criu_core::images::{ImageDir, ImageKind, IMG_VERSION};
use serde_json::Value;

/// The pid used in the sample set's per-task file names.
pub const PID: u64 = 4242;
/// The second thread of the sample process.
pub const THREAD: u64 = 4243;

/// The sample process's kernel object ids (files_id 2 names `fdinfo-2.img`).
pub fn task_ids() -> TaskKobjIdsEntry {
    TaskKobjIdsEntry {
        vm_id: Some(1),
        files_id: Some(2),
        fs_id: Some(3),
        sighand_id: Some(4),
        ..Default::default()
    }
}

/// The sample process's VMAs: text (file 7), stack (with one dumped page), vDSO.
pub fn core_vmas() -> Vec<VmaEntry> {
    vec![
        // A file mapping's shmid is the id of its reg file entry.
        VmaEntry {
            shmid: Some(7),
            ..vma(
                0x40_0000,
                0x40_2000,
                5,
                2,
                vma_status::AREA_REGULAR | vma_status::FILE_PRIVATE,
            )
        },
        vma(
            0x7ffc_0000_0000,
            0x7ffc_0002_1000,
            3,
            0x122,
            vma_status::AREA_REGULAR | vma_status::AREA_STACK | vma_status::ANON_PRIVATE,
        ),
        vma(
            0x7ffc_0010_0000,
            0x7ffc_0010_2000,
            5,
            0x22,
            vma_status::AREA_REGULAR | vma_status::AREA_VDSO | vma_status::ANON_PRIVATE,
        ),
    ]
}

/// The core of a non-leader thread: registers and per-thread state only.
pub fn thread_core_entry() -> CoreEntry {
    let leader = core_entry();
    let mut regs = gpregs();
    regs.ip = Some(0x40_1800);
    regs.sp = Some(0x7f00_1000_0000);
    let mut ti = leader.thread_info.unwrap();
    ti.gpregs = Some(regs);
    let mut tc = leader.thread_core.unwrap();
    tc.blk_sigset = Some(0x4);
    CoreEntry {
        mtype: leader.mtype,
        thread_info: Some(ti),
        thread_core: Some(tc),
        ..Default::default()
    }
}

pub fn gpregs() -> UserX86RegsEntry {
    let v = |n: u64| Some(0x1000_0000_0000 + n);
    UserX86RegsEntry {
        r15: v(15),
        r14: v(14),
        r13: v(13),
        r12: v(12),
        bp: v(5),
        bx: v(6),
        r11: v(11),
        r10: v(10),
        r9: v(9),
        r8: v(8),
        ax: v(0xa),
        cx: v(0xc),
        dx: v(0xd),
        si: v(0x51),
        di: v(0xd1),
        orig_ax: Some(u64::MAX),
        ip: Some(0x40_1000),
        cs: Some(0x33),
        flags: Some(0x246),
        sp: Some(0x7ffc_0000_1000),
        ss: Some(0x2b),
        fs_base: Some(0x7f00_0000_0740),
        gs_base: Some(0),
        ds: Some(0),
        es: Some(0),
        fs: Some(0),
        gs: Some(0),
        mode: Some(UserX86RegsMode::Native as i32),
    }
}

/// Sigactions as CRIU stores them: signals 1..=64 but SIGKILL and SIGSTOP;
/// SIGHUP has a handler, the rest are SIG_DFL.
pub fn sigactions() -> Vec<SaEntry> {
    let v: Vec<SaEntry> = (1..=64u32)
        .filter(|&s| s != 9 && s != 19)
        .map(|s| SaEntry {
            sigaction: Some(if s == 1 { 0x40_2000 } else { 0 }),
            flags: Some(if s == 1 { 0x0400_0000 } else { 0 }),
            restorer: Some(if s == 1 { 0x40_3000 } else { 0 }),
            mask: Some(0),
            compat_sigaction: Some(false),
            ..Default::default()
        })
        .collect();
    assert_eq!(v.len(), SIGACTION_COUNT);
    v
}

pub fn core_entry() -> CoreEntry {
    let creds = CredsEntry {
        uid: Some(1000),
        gid: Some(1001),
        euid: Some(1002),
        egid: Some(1003),
        suid: Some(1004),
        sgid: Some(1005),
        fsuid: Some(1006),
        fsgid: Some(1007),
        cap_inh: vec![0, 0],
        cap_prm: vec![0xffff_ffff, 0x1ff],
        cap_eff: vec![0xffff_ffff, 0x1ff],
        cap_bnd: vec![0xffff_ffff, 0x1ff],
        secbits: Some(0),
        groups: vec![27, 100],
        ..Default::default()
    };
    let itimer = |s| ItimerEntry {
        isec: Some(s),
        iusec: Some(0),
        vsec: Some(0),
        vusec: Some(500),
    };
    CoreEntry {
        mtype: Some(core_entry::March::X8664 as i32),
        thread_info: Some(ThreadInfoX86 {
            clear_tid_addr: Some(0x7f00_0000_0a10),
            gpregs: Some(gpregs()),
            fpregs: Some(UserX86FpregsEntry {
                cwd: Some(0x37f),
                swd: Some(0),
                twd: Some(0),
                fop: Some(0),
                rip: Some(0),
                rdp: Some(0),
                mxcsr: Some(0x1f80),
                mxcsr_mask: Some(0xffff),
                st_space: (0..x86::ST_SPACE as u32).collect(),
                xmm_space: (100..100 + x86::XMM_SPACE as u32).collect(),
                padding: vec![],
                xsave: Some(UserX86XsaveEntry {
                    xstate_bv: Some(7),
                    ymmh_space: (1000..1000 + x86::YMMH_SPACE as u32).collect(),
                    ..Default::default()
                }),
            }),
            tls: vec![],
        }),
        tc: Some(TaskCoreEntry {
            task_state: Some(task_state::ALIVE),
            exit_code: Some(0),
            personality: Some(0),
            flags: Some(0x0040_0040),
            blk_sigset: Some(0x1_0000),
            comm: Some("loop".into()),
            timers: Some(TaskTimersEntry {
                real: Some(itimer(3)),
                virt: Some(itimer(0)),
                prof: Some(itimer(0)),
                posix: vec![],
            }),
            rlimits: Some(TaskRlimitsEntry {
                rlimits: vec![RlimitEntry {
                    cur: Some(8 << 20),
                    max: Some(u64::MAX),
                }],
            }),
            sigactions: sigactions(),
            ..Default::default()
        }),
        thread_core: Some(ThreadCoreEntry {
            futex_rla: Some(0x7f00_0000_0a20),
            futex_rla_len: Some(x86::ROBUST_LIST_HEAD_LEN),
            sched_nice: Some(-5),
            creds: Some(creds),
            sas: Some(ThreadSasEntry {
                ss_sp: Some(0),
                ss_size: Some(0),
                ss_flags: Some(2),
            }),
            rseq_entry: Some(RseqEntry {
                rseq_abi_pointer: Some(0x7f00_0000_0e00),
                rseq_abi_size: Some(32),
                signature: Some(0x5305_3053),
                rseq_cs_pointer: None,
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub fn vma(start: u64, end: u64, prot: u32, flags: u32, status: u32) -> VmaEntry {
    VmaEntry {
        start: Some(start),
        end: Some(end),
        pgoff: Some(0),
        shmid: Some(0),
        prot: Some(prot),
        flags: Some(flags),
        status: Some(status),
        fd: Some(-1),
        ..Default::default()
    }
}

/// Writes the sample image set (inventory last) into `dir`; returns the inventory.
pub fn write_sample_set(dir: &ImageDir) -> InventoryEntry {
    let pid = PID;

    // pstree, ids, core
    dir.write_all(
        ImageKind::Pstree,
        0,
        &[PstreeEntry {
            pid: Some(4242),
            ppid: Some(0),
            pgid: Some(4242),
            sid: Some(17),
            threads: vec![4242, 4243],
        }],
    )
    .unwrap();
    let ids = task_ids();
    dir.write_one(ImageKind::Ids, pid, &ids).unwrap();
    dir.write_one(ImageKind::Core, pid, &core_entry()).unwrap();
    dir.write_one(ImageKind::Core, THREAD, &thread_core_entry())
        .unwrap();

    // mm + pagemap + pages
    let mm = MmEntry {
        mm_start_code: Some(0x40_0000),
        mm_end_code: Some(0x40_2000),
        mm_start_data: Some(0x60_0000),
        mm_end_data: Some(0x60_1000),
        mm_start_stack: Some(0x7ffc_0000_2000),
        mm_start_brk: Some(0x70_0000),
        mm_brk: Some(0x72_1000),
        mm_arg_start: Some(0x7ffc_0000_3000),
        mm_arg_end: Some(0x7ffc_0000_3010),
        mm_env_start: Some(0x7ffc_0000_3010),
        mm_env_end: Some(0x7ffc_0000_3100),
        exe_file_id: Some(7),
        mm_saved_auxv: vec![33, 0x7ffc_0000_5000, 0, 0],
        vmas: core_vmas(),
        dumpable: Some(1),
        ..Default::default()
    };
    dir.write_one(ImageKind::Mm, pid, &mm).unwrap();
    let mut pm = dir.create_image(ImageKind::Pagemap, pid).unwrap();
    pm.write_entry(&PagemapHead { pages_id: Some(1) }).unwrap();
    pm.write_entry(&PagemapEntry::new(
        0x7ffc_0002_0000,
        1,
        pagemap_flags::PRESENT,
    ))
    .unwrap();
    pm.finish().unwrap();
    let mut pages = dir.create_pages(1).unwrap();
    pages.write_raw(&[0xab; 4096]).unwrap();
    pages.finish().unwrap();

    // fdinfo + files + fs + pipes-data
    let fdinfo = |fd, id, ty: FdTypes| FdinfoEntry {
        id: Some(id),
        flags: Some(0),
        r#type: Some(ty as i32),
        fd: Some(fd),
        ..Default::default()
    };
    dir.write_all(
        ImageKind::Fdinfo,
        2,
        &[
            fdinfo(0, 5, FdTypes::Reg),
            fdinfo(3, 6, FdTypes::Pipe),
            fdinfo(4, 8, FdTypes::Pipe),
        ],
    )
    .unwrap();
    let files = [
        FileEntry {
            r#type: Some(FdTypes::Reg as i32),
            id: Some(5),
            reg: Some(RegFileEntry {
                id: Some(5),
                flags: Some(0o2),
                pos: Some(123),
                fown: Some(FownEntry::unowned()),
                name: Some("/tmp/data file".into()),
                size: Some(4096),
                mode: Some(0o100644),
                ..Default::default()
            }),
            ..Default::default()
        },
        FileEntry {
            r#type: Some(FdTypes::Pipe as i32),
            id: Some(6),
            pipe: Some(PipeEntry {
                id: Some(6),
                pipe_id: Some(77_000),
                flags: Some(0),
                fown: Some(FownEntry::unowned()),
            }),
            ..Default::default()
        },
        FileEntry {
            r#type: Some(FdTypes::Pipe as i32),
            id: Some(8),
            pipe: Some(PipeEntry {
                id: Some(8),
                pipe_id: Some(77_000),
                flags: Some(1),
                fown: Some(FownEntry::unowned()),
            }),
            ..Default::default()
        },
        FileEntry::reg(7, "/usr/bin/loop", 0),
        FileEntry::reg(9, "/tmp", 0),
        FileEntry::reg(10, "/", 0),
    ];
    dir.write_all(ImageKind::Files, 0, &files).unwrap();
    dir.write_one(
        ImageKind::Fs,
        pid,
        &FsEntry {
            cwd_id: Some(9),
            root_id: Some(10),
            umask: Some(0o22),
        },
    )
    .unwrap();
    let mut pd = dir.create_image(ImageKind::PipesData, 0).unwrap();
    pd.write_entry(&PipeDataEntry {
        pipe_id: Some(77_000),
        bytes: Some(5),
        size: Some(65536),
    })
    .unwrap();
    pd.write_raw(b"hello").unwrap();
    pd.finish().unwrap();
    dir.write_one(
        ImageKind::StatsDump,
        0,
        &StatsEntry {
            dump: Some(DumpStatsEntry {
                freezing_time: Some(1),
                frozen_time: Some(2),
                memdump_time: Some(3),
                memwrite_time: Some(4),
                pages_scanned: Some(5),
                pages_skipped_parent: Some(6),
                pages_written: Some(7),
                pages_lazy: Some(8),
                ..Default::default()
            }),
            restore: None,
        },
    )
    .unwrap();

    // ghost file (unlinked file contents) + its remap entry
    let mut gf = dir.create_image(ImageKind::GhostFile, 0x1f).unwrap();
    gf.write_entry(&GhostFileEntry {
        uid: Some(0),
        gid: Some(0),
        mode: Some(0o100600),
        size: Some(3),
        ..Default::default()
    })
    .unwrap();
    gf.write_raw(b"abc").unwrap();
    gf.finish().unwrap();
    dir.write_all(
        ImageKind::RemapFpath,
        0,
        &[RemapFilePathEntry {
            orig_id: Some(5),
            remap_id: Some(0x1f),
            remap_type: Some(RemapType::Ghost as i32),
        }],
    )
    .unwrap();

    let inv = InventoryEntry {
        img_version: Some(IMG_VERSION),
        fdinfo_per_id: Some(true),
        root_ids: Some(ids),
        ns_per_id: Some(true),
        lsmtype: Some(Lsmtype::NoLsm as i32),
        dump_criu_run_id: Some("criu-rs-test".into()),
        ..Default::default()
    };
    dir.write_inventory(&inv).unwrap();

    inv
}

/// Runs `crit decode -i PATH [--pretty]` and parses its JSON.
pub fn crit_decode(path: &Path, pretty: bool) -> Value {
    let mut cmd = Command::new("crit");
    cmd.arg("decode").arg("-i").arg(path);
    if pretty {
        cmd.arg("--pretty");
    }
    let out = cmd.output().expect("run crit");
    assert!(
        out.status.success(),
        "crit decode {} failed: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("crit output for {}: {e}", path.display()))
}

/// Runs `crit encode` on `json` (as printed by `crit decode`), writing `out`.
pub fn crit_encode(json: &Value, out: &Path) {
    let src = out.with_extension("json");
    std::fs::write(&src, serde_json::to_vec(json).unwrap()).unwrap();
    let res = Command::new("crit")
        .arg("encode")
        .arg("-i")
        .arg(&src)
        .arg("-o")
        .arg(out)
        .output()
        .expect("run crit");
    assert!(
        res.status.success(),
        "crit encode {}: {}",
        src.display(),
        String::from_utf8_lossy(&res.stderr)
    );
}

/// qemu-x86_64 on PATH; missing fails the test (the qemu tests are not
/// optional: `cargo xtask setup` installs qemu-user).
pub fn qemu() -> std::path::PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join("qemu-x86_64"))
        .find(|p| p.is_file())
        .expect("qemu-x86_64 not found: run `cargo xtask setup` (installs qemu-user)")
}

/// Fails the test unless `crit` runs: the crit checks are not optional
/// (`cargo xtask setup` installs Debian's `criu`, which ships it).
pub fn need_crit() {
    let ok = Command::new("crit")
        .arg("--help")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "crit not found: run `cargo xtask setup` (installs Debian's `criu`, which ships crit)"
    );
}
