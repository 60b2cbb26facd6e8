//! Writes a full image set with known values and checks, field by field, what
//! Debian's `crit` (CRIU's own image decoder) reads back from it.
//!
//! Without `crit` on PATH the test is skipped with a message, or fails when
//! the `CI` environment variable is set.

use std::path::Path;
use std::process::Command;

use criu_core::images::consts::{pagemap_flags, task_state, vma_status};
use criu_core::images::pb::*;
use criu_core::images::{ImageDir, ImageKind, IMG_VERSION};
use serde_json::Value;

/// Runs `crit decode -i PATH [--pretty]` and parses its JSON.
fn crit_decode(path: &Path, pretty: bool) -> Value {
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

/// Whether `crit` can be run; fails under CI when it cannot.
fn have_crit() -> bool {
    let ok = Command::new("crit")
        .arg("--help")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "crit is required under CI (Debian package `criu`)"
        );
        eprintln!(
            "\n*** SKIPPING crit interop test: `crit` not found (install Debian's `criu`) ***\n"
        );
    }
    ok
}

fn entries(v: &Value) -> &Vec<Value> {
    v["entries"].as_array().expect("entries array")
}

fn gpregs() -> UserX86RegsEntry {
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

fn core_entry() -> CoreEntry {
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
                st_space: (0..32).collect(),
                xmm_space: (100..164).collect(),
                padding: vec![0; 24],
                xsave: Some(UserX86XsaveEntry {
                    xstate_bv: Some(7),
                    ymmh_space: (1000..1064).collect(),
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
            sigactions: vec![SaEntry {
                sigaction: Some(0x40_2000),
                flags: Some(0x0400_0000),
                restorer: Some(0x40_3000),
                mask: Some(0),
                ..Default::default()
            }],
            ..Default::default()
        }),
        thread_core: Some(ThreadCoreEntry {
            futex_rla: Some(0x7f00_0000_0a20),
            futex_rla_len: Some(24),
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

fn vma(start: u64, end: u64, prot: u32, flags: u32, status: u32) -> VmaEntry {
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

fn fown() -> FownEntry {
    FownEntry {
        uid: Some(0),
        euid: Some(0),
        signum: Some(0),
        pid_type: Some(0),
        pid: Some(0),
    }
}

#[test]
fn crit_reads_our_image_set() {
    if !have_crit() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = ImageDir::create(tmp.path()).unwrap();
    let pid = 4242u64;

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
    let ids = TaskKobjIdsEntry {
        vm_id: Some(1),
        files_id: Some(2),
        fs_id: Some(3),
        sighand_id: Some(4),
        ..Default::default()
    };
    dir.write_one(ImageKind::Ids, pid, &ids).unwrap();
    dir.write_one(ImageKind::Core, pid, &core_entry()).unwrap();

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
        vmas: vec![
            vma(
                0x40_0000,
                0x40_2000,
                5,
                2,
                vma_status::AREA_REGULAR | vma_status::FILE_PRIVATE,
            ),
            vma(
                0x7ffc_0000_0000,
                0x7ffc_0002_1000,
                3,
                0x122,
                vma_status::AREA_REGULAR | vma_status::AREA_STACK | vma_status::ANON_PRIVATE,
            ),
        ],
        dumpable: Some(1),
        ..Default::default()
    };
    dir.write_one(ImageKind::Mm, pid, &mm).unwrap();
    let mut pm = dir.create_image(ImageKind::Pagemap, pid).unwrap();
    pm.write_entry(&PagemapHead { pages_id: Some(1) }).unwrap();
    pm.write_entry(&PagemapEntry {
        vaddr: Some(0x7ffc_0002_0000),
        compat_nr_pages: Some(1),
        flags: Some(pagemap_flags::PRESENT),
        nr_pages: Some(1),
        in_parent: None,
    })
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
                fown: Some(fown()),
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
                fown: Some(fown()),
            }),
            ..Default::default()
        },
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
        root_ids: Some(ids.clone()),
        ns_per_id: Some(true),
        lsmtype: Some(Lsmtype::NoLsm as i32),
        dump_criu_run_id: Some("criu-rs-test".into()),
        ..Default::default()
    };
    dir.write_inventory(&inv).unwrap();
    assert_eq!(ImageDir::open(tmp.path()).unwrap().inventory(), Some(&inv));

    let p = |k: ImageKind, id| dir.image_path(k, id);

    let v = crit_decode(&p(ImageKind::Inventory, 0), false);
    assert_eq!(v["magic"], "INVENTORY");
    let e = &entries(&v)[0];
    assert_eq!(e["img_version"], 2);
    assert_eq!(e["fdinfo_per_id"], true);
    assert_eq!(e["ns_per_id"], true);
    assert_eq!(e["lsmtype"], "NO_LSM");
    assert_eq!(e["root_ids"]["files_id"], 2);
    assert_eq!(e["root_ids"]["sighand_id"], 4);
    // dump_criu_run_id (13) is newer than Debian's crit 3.17, which skips it.

    let v = crit_decode(&p(ImageKind::Pstree, 0), false);
    assert_eq!(v["magic"], "PSTREE");
    let e = &entries(&v)[0];
    assert_eq!(
        (
            e["pid"].as_u64(),
            e["ppid"].as_u64(),
            e["pgid"].as_u64(),
            e["sid"].as_u64()
        ),
        (Some(4242), Some(0), Some(4242), Some(17))
    );
    assert_eq!(e["threads"], serde_json::json!([4242, 4243]));

    let v = crit_decode(&p(ImageKind::Ids, pid), false);
    assert_eq!(v["magic"], "IDS");
    assert_eq!(entries(&v)[0]["fs_id"], 3);

    let v = crit_decode(&p(ImageKind::Core, pid), true);
    assert_eq!(v["magic"], "CORE");
    let e = &entries(&v)[0];
    assert_eq!(e["mtype"], "X86_64");
    let ti = &e["thread_info"];
    assert_eq!(ti["clear_tid_addr"], "0x7f0000000a10");
    let g = &ti["gpregs"];
    assert_eq!(g["ip"], "0x401000");
    assert_eq!(g["sp"], "0x7ffc00001000");
    assert_eq!(g["r15"], "0x10000000000f");
    assert_eq!(g["ax"], "0x10000000000a");
    assert_eq!(g["orig_ax"], "0xffffffffffffffff");
    assert_eq!(g["flags"], "0x246");
    assert_eq!(g["fs_base"], "0x7f0000000740");
    assert_eq!(g["mode"], "NATIVE");
    let fp = &ti["fpregs"];
    assert_eq!(fp["cwd"], 0x37f);
    assert_eq!(fp["mxcsr"], 0x1f80);
    assert_eq!(fp["st_space"].as_array().unwrap().len(), 32);
    assert_eq!(fp["xmm_space"][0], 100);
    assert_eq!(fp["xmm_space"][63], 163);
    assert_eq!(fp["xsave"]["xstate_bv"], 7);
    assert_eq!(fp["xsave"]["ymmh_space"][63], 1063);
    let tc = &e["tc"];
    assert_eq!(tc["task_state"], "Alive");
    assert_eq!(tc["comm"], "loop");
    assert_eq!(tc["flags"], 0x0040_0040);
    assert_eq!(tc["blk_sigset"], "0x10000");
    assert_eq!(tc["timers"]["real"]["isec"], 3);
    assert_eq!(tc["timers"]["virt"]["vusec"], 500);
    assert_eq!(tc["rlimits"]["rlimits"][0]["cur"], 8 << 20);
    assert_eq!(tc["rlimits"]["rlimits"][0]["max"], u64::MAX);
    assert_eq!(tc["sigactions"][0]["sigaction"], "0x402000");
    assert_eq!(tc["sigactions"][0]["flags"], "0x4000000");
    assert_eq!(tc["sigactions"][0]["restorer"], "0x403000");
    let th = &e["thread_core"];
    assert_eq!(th["futex_rla_len"], 24);
    assert_eq!(th["sched_nice"], -5);
    assert_eq!(th["sas"]["ss_flags"], 2);
    assert_eq!(th["creds"]["uid"], 1000);
    assert_eq!(th["creds"]["fsgid"], 1007);
    assert_eq!(
        th["creds"]["cap_prm"],
        serde_json::json!([0xffff_ffffu32, 0x1ff])
    );
    assert_eq!(th["creds"]["groups"], serde_json::json!([27, 100]));
    assert_eq!(th["rseq_entry"]["rseq_abi_size"], 32);
    assert_eq!(th["rseq_entry"]["signature"], 0x5305_3053);

    let v = crit_decode(&p(ImageKind::Mm, pid), true);
    assert_eq!(v["magic"], "MM");
    let e = &entries(&v)[0];
    assert_eq!(e["mm_start_code"], "0x400000");
    assert_eq!(e["mm_brk"], "0x721000");
    assert_eq!(e["mm_env_end"], "0x7ffc00003100");
    assert_eq!(e["exe_file_id"], 7);
    assert_eq!(e["mm_saved_auxv"][1], 0x7ffc_0000_5000u64);
    assert_eq!(e["dumpable"], 1);
    let vm = e["vmas"].as_array().unwrap();
    assert_eq!(vm.len(), 2);
    assert_eq!(vm[0]["start"], "0x400000");
    assert_eq!(vm[0]["end"], "0x402000");
    assert_eq!(vm[0]["prot"], "PROT_READ | PROT_EXEC");
    assert_eq!(vm[0]["flags"], "MAP_PRIVATE");
    assert_eq!(vm[0]["status"], "VMA_AREA_REGULAR | VMA_FILE_PRIVATE");
    assert_eq!(vm[0]["fd"], -1);
    assert_eq!(vm[1]["prot"], "PROT_READ | PROT_WRITE");
    assert_eq!(vm[1]["flags"], "MAP_PRIVATE | MAP_ANON | MAP_GROWSDOWN");
    assert_eq!(
        vm[1]["status"],
        "VMA_AREA_REGULAR | VMA_AREA_STACK | VMA_ANON_PRIVATE"
    );

    let v = crit_decode(&p(ImageKind::Pagemap, pid), true);
    assert_eq!(v["magic"], "PAGEMAP");
    let e = entries(&v);
    assert_eq!(e[0]["pages_id"], 1);
    assert_eq!(e[1]["vaddr"], "0x7ffc00020000");
    assert_eq!(e[1]["nr_pages"], 1);
    assert_eq!(e[1]["flags"], "PE_PRESENT");
    assert_eq!(
        std::fs::read(p(ImageKind::Pages, 1)).unwrap(),
        vec![0xab; 4096]
    );

    let v = crit_decode(&p(ImageKind::Fdinfo, 2), false);
    assert_eq!(v["magic"], "FDINFO");
    let e = entries(&v);
    assert_eq!(e.len(), 3);
    assert_eq!(
        (
            e[1]["fd"].as_u64(),
            e[1]["id"].as_u64(),
            e[1]["type"].as_str()
        ),
        (Some(3), Some(6), Some("PIPE"))
    );
    assert_eq!(e[0]["type"], "REG");

    let v = crit_decode(&p(ImageKind::Files, 0), true);
    assert_eq!(v["magic"], "FILES");
    let e = entries(&v);
    assert_eq!(e[0]["type"], "REG");
    assert_eq!(e[0]["reg"]["name"], "/tmp/data file");
    assert_eq!(e[0]["reg"]["pos"], 123);
    assert_eq!(e[0]["reg"]["flags"], "O_RDWR");
    assert_eq!(e[0]["reg"]["size"], 4096);
    assert_eq!(e[0]["reg"]["mode"], 0o100644);
    assert_eq!(e[0]["reg"]["fown"]["pid"], 0);
    assert_eq!(e[1]["type"], "PIPE");
    assert_eq!(e[1]["pipe"]["pipe_id"], 77_000);

    let v = crit_decode(&p(ImageKind::Fs, pid), false);
    assert_eq!(v["magic"], "FS");
    assert_eq!(entries(&v)[0]["umask"], 0o22);
    assert_eq!(entries(&v)[0]["root_id"], 10);

    let v = crit_decode(&p(ImageKind::PipesData, 0), false);
    assert_eq!(v["magic"], "PIPES_DATA");
    let e = &entries(&v)[0];
    assert_eq!(e["pipe_id"], 77_000);
    assert_eq!(e["bytes"], 5);
    assert_eq!(e["extra"].as_str().unwrap().trim(), "aGVsbG8="); // base64("hello")

    let v = crit_decode(&p(ImageKind::StatsDump, 0), false);
    assert_eq!(v["magic"], "STATS");
    assert_eq!(entries(&v)[0]["dump"]["pages_written"], 7);

    let v = crit_decode(&p(ImageKind::GhostFile, 0x1f), false);
    assert_eq!(v["magic"], "GHOST_FILE");
    assert_eq!(entries(&v)[0]["mode"], 0o100600);
    assert_eq!(entries(&v)[0]["extra"].as_str().unwrap().trim(), "YWJj"); // base64("abc")

    let v = crit_decode(&p(ImageKind::RemapFpath, 0), false);
    assert_eq!(v["magic"], "REMAP_FPATH");
    assert_eq!(entries(&v)[0]["remap_type"], "GHOST");
    assert_eq!(entries(&v)[0]["remap_id"], 0x1f);

    // `crit show` decodes the whole directory's pstree/core views too.
    let out = Command::new("crit")
        .arg("show")
        .arg(p(ImageKind::Core, pid))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "crit show: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shown: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(entries(&shown)[0]["tc"]["comm"], "loop");
}
