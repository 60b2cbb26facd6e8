//! Turning a [`ProcessDump`] into CRIU image files.
//!
//! Layout (as current CRIU writes it): `pstree.img`; per thread
//! `core-TID.img` (the leader's also holds `task_core`: sigactions,
//! rlimits, timers, shared pending signals; every thread's `thread_core`
//! holds creds, mask, private pending signals, sigaltstack, rseq);
//! `ids-PID.img`, `mm-PID.img` (with the VMAs), `pagemap-PID.img` (pages
//! in `pages-1.img`, written during collection), `pagemap-shmem-SHMID.img`,
//! `files.img`, `fdinfo-FILES_ID.img`, `fs-PID.img`, `pipes-data.img`,
//! `fifo-data.img`, `remap-fpath.img` + `ghost-file-ID.img`,
//! `stats-dump.img`, and `inventory.img` last.

use super::model::*;
use super::{DumpError, DumpSummary, PAGES_ID};
use crate::images::pb;
use crate::images::{ImageDir, ImageError, ImageKind};
use crate::ptrace::regs::{xsave_component, FpState};

fn img_err(e: ImageError) -> DumpError {
    DumpError::Image(e)
}

fn le_u32s(b: &[u8]) -> Vec<u32> {
    b.chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
}

fn le_u64s(b: &[u8]) -> Vec<u64> {
    b.chunks_exact(8).map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0; 8]))).collect()
}

fn u16_at(b: &[u8], off: usize) -> u32 {
    b.get(off..off + 2).map_or(0, |x| u16::from_le_bytes([x[0], x[1]]) as u32)
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    b.get(off..off + 4).map_or(0, |x| u32::from_le_bytes([x[0], x[1], x[2], x[3]]))
}

/// The general registers in CRIU's layout.
pub fn gpregs_entry(r: &crate::ptrace::regs::GpRegs) -> pb::UserX86RegsEntry {
    pb::UserX86RegsEntry {
        r15: Some(r.r15),
        r14: Some(r.r14),
        r13: Some(r.r13),
        r12: Some(r.r12),
        bp: Some(r.rbp),
        bx: Some(r.rbx),
        r11: Some(r.r11),
        r10: Some(r.r10),
        r9: Some(r.r9),
        r8: Some(r.r8),
        ax: Some(r.rax),
        cx: Some(r.rcx),
        dx: Some(r.rdx),
        si: Some(r.rsi),
        di: Some(r.rdi),
        orig_ax: Some(r.orig_rax),
        ip: Some(r.rip),
        cs: Some(r.cs),
        flags: Some(r.eflags),
        sp: Some(r.rsp),
        ss: Some(r.ss),
        fs_base: Some(r.fs_base),
        gs_base: Some(r.gs_base),
        ds: Some(r.ds),
        es: Some(r.es),
        fs: Some(r.fs),
        gs: Some(r.gs),
        mode: Some(pb::UserX86RegsMode::Native as i32),
    }
}

/// The FXSAVE area and the XSAVE components in CRIU's layout.
pub fn fpregs_entry(fp: &FpState) -> pb::UserX86FpregsEntry {
    let b = &fp.bytes;
    let range = |off: usize, len: usize| b.get(off..off + len).unwrap_or(&[]);
    let comp = |i: u32| fp.component(i).map(|c| c.to_vec()).unwrap_or_default();
    let xsave = (fp.kind == crate::ptrace::regs::FpKind::Xsave).then(|| pb::UserX86XsaveEntry {
        xstate_bv: Some(fp.xstate_bv()),
        ymmh_space: le_u32s(&comp(2)),
        bndreg_state: le_u64s(&comp(3)),
        bndcsr_state: le_u64s(&comp(4)),
        opmask_reg: le_u64s(&comp(5)),
        zmm_upper: le_u64s(&comp(6)),
        hi16_zmm: le_u64s(&comp(7)),
        pkru: if xsave_component(9).is_some() { le_u32s(&comp(9)) } else { Vec::new() },
        ..Default::default()
    });
    pb::UserX86FpregsEntry {
        cwd: Some(u16_at(b, 0)),
        swd: Some(u16_at(b, 2)),
        twd: Some(u16_at(b, 4)),
        fop: Some(u16_at(b, 6)),
        rip: Some(fp.u64_at(8)),
        rdp: Some(fp.u64_at(16)),
        mxcsr: Some(u32_at(b, 24)),
        mxcsr_mask: Some(u32_at(b, 28)),
        st_space: le_u32s(range(32, 128)),
        xmm_space: le_u32s(range(160, 256)),
        padding: le_u32s(range(416, 96)),
        xsave,
    }
}

fn signals(q: &[[u8; crate::ptrace::raw::SIGINFO_SIZE]]) -> Option<pb::SignalQueueEntry> {
    (!q.is_empty()).then(|| pb::SignalQueueEntry {
        signals: q.iter().map(|s| pb::SiginfoEntry { siginfo: Some(s.to_vec()) }).collect(),
    })
}

fn caps(v: u64) -> Vec<u32> {
    vec![v as u32, (v >> 32) as u32]
}

fn creds_entry(c: &Creds) -> pb::CredsEntry {
    pb::CredsEntry {
        uid: Some(c.uid[0]),
        euid: Some(c.uid[1]),
        suid: Some(c.uid[2]),
        fsuid: Some(c.uid[3]),
        gid: Some(c.gid[0]),
        egid: Some(c.gid[1]),
        sgid: Some(c.gid[2]),
        fsgid: Some(c.gid[3]),
        cap_inh: caps(c.caps[0]),
        cap_prm: caps(c.caps[1]),
        cap_eff: caps(c.caps[2]),
        cap_bnd: caps(c.caps[3]),
        cap_amb: caps(c.caps[4]),
        secbits: Some(c.secbits),
        groups: c.groups.clone(),
        no_new_privs: Some(c.no_new_privs as u32),
        ..Default::default()
    }
}

fn itimer(t: &ItimerVal) -> pb::ItimerEntry {
    pb::ItimerEntry { isec: Some(t.isec), iusec: Some(t.iusec), vsec: Some(t.vsec), vusec: Some(t.vusec) }
}

/// `SIGEV_*` number for a `/proc/PID/timers` notify word.
fn sigev_notify(kind: &str) -> u32 {
    match kind {
        "none" => 1,
        "thread" => 2,
        "thread+signal" | "signal+thread" => 4,
        _ => 0,
    }
}

fn task_core(p: &ProcessDump) -> pb::TaskCoreEntry {
    let t = &p.task;
    let leader = &p.threads[0];
    pb::TaskCoreEntry {
        task_state: Some(crate::images::consts::task_state::ALIVE),
        exit_code: Some(0),
        personality: Some(t.personality),
        flags: Some(t.flags),
        blk_sigset: Some(leader.sigmask),
        comm: Some(t.comm.clone()),
        timers: Some(pb::TaskTimersEntry {
            real: Some(itimer(&t.itimers[0])),
            virt: Some(itimer(&t.itimers[1])),
            prof: Some(itimer(&t.itimers[2])),
            posix: t
                .posix_timers
                .iter()
                .map(|pt| pb::PosixTimerEntry {
                    it_id: Some(pt.proc.id as u32),
                    clock_id: Some(pt.proc.clock_id as u32),
                    si_signo: Some(pt.proc.signo as u32),
                    it_sigev_notify: Some(sigev_notify(&pt.proc.notify)),
                    sival_ptr: Some(pt.proc.sigval),
                    overrun: Some(pt.overrun as u32),
                    isec: Some(pt.interval.0),
                    insec: Some(pt.interval.1),
                    vsec: Some(pt.value.0),
                    vnsec: Some(pt.value.1),
                    notify_thread_id: Some(pt.proc.notify_tid),
                })
                .collect(),
        }),
        rlimits: Some(pb::TaskRlimitsEntry {
            rlimits: t.rlimits.iter().map(|&(cur, max)| pb::RlimitEntry { cur: Some(cur), max: Some(max) }).collect(),
        }),
        signals_s: signals(&t.shared_pending),
        old_seccomp_mode: None,
        loginuid: t.loginuid,
        oom_score_adj: Some(t.oom_score_adj),
        sigactions: t
            .sigactions
            .iter()
            .enumerate()
            .filter(|(i, _)| *i + 1 != libc::SIGKILL as usize && *i + 1 != libc::SIGSTOP as usize)
            .map(|(_, a)| pb::SaEntry {
                sigaction: Some(a.handler),
                flags: Some(a.flags),
                restorer: Some(a.restorer),
                mask: Some(a.mask),
                compat_sigaction: Some(false),
                mask_extended: None,
            })
            .collect(),
        child_subreaper: Some(t.child_subreaper),
        ..Default::default()
    }
}

fn thread_core(p: &ProcessDump, t: &ThreadState) -> pb::ThreadCoreEntry {
    pb::ThreadCoreEntry {
        futex_rla: Some(t.robust_list.0),
        futex_rla_len: Some(t.robust_list.1 as u32),
        sched_nice: Some(t.sched.2),
        sched_policy: Some(t.sched.0),
        sched_prio: Some(t.sched.1),
        blk_sigset: Some(t.sigmask),
        sas: Some(pb::ThreadSasEntry {
            ss_sp: Some(t.altstack.0),
            ss_size: Some(t.altstack.2),
            ss_flags: Some(t.altstack.1 as u32),
        }),
        pdeath_sig: Some(p.task.pdeath_sig),
        signals_p: signals(&t.pending),
        creds: Some(creds_entry(&t.creds)),
        seccomp_mode: Some(p.task.seccomp_mode as i32),
        comm: Some(t.comm.clone()),
        rseq_entry: (t.rseq.rseq_abi_pointer != 0).then_some(pb::RseqEntry {
            rseq_abi_pointer: Some(t.rseq.rseq_abi_pointer),
            rseq_abi_size: Some(t.rseq.rseq_abi_size),
            signature: Some(t.rseq.signature),
            rseq_cs_pointer: None,
        }),
        ..Default::default()
    }
}

/// The `core-TID.img` entry of one thread (`leader` adds `task_core`).
pub fn core_entry(p: &ProcessDump, t: &ThreadState, leader: bool) -> pb::CoreEntry {
    pb::CoreEntry {
        mtype: Some(pb::core_entry::March::X8664 as i32),
        thread_info: Some(pb::ThreadInfoX86 {
            clear_tid_addr: Some(t.clear_tid_addr),
            gpregs: Some(gpregs_entry(&t.gpregs)),
            fpregs: Some(fpregs_entry(&t.fpstate)),
            tls: Vec::new(),
        }),
        tc: leader.then(|| task_core(p)),
        ids: None,
        thread_core: Some(thread_core(p, t)),
    }
}

/// The kernel-object ids of the process: vm/files/fs/sighand are the
/// process's own pid (one process, nothing shared yet); namespaces use the
/// inode numbers of `/proc/PID/ns/*`.
pub fn kobj_ids(pid: i32) -> pb::TaskKobjIdsEntry {
    use std::os::unix::fs::MetadataExt;
    let ns = |name: &str| std::fs::metadata(crate::proc::path(pid, &format!("ns/{name}"))).ok().map(|m| m.ino() as u32);
    pb::TaskKobjIdsEntry {
        vm_id: Some(pid as u32),
        files_id: Some(pid as u32),
        fs_id: Some(pid as u32),
        sighand_id: Some(pid as u32),
        pid_ns_id: ns("pid"),
        net_ns_id: ns("net"),
        ipc_ns_id: ns("ipc"),
        uts_ns_id: ns("uts"),
        mnt_ns_id: ns("mnt"),
        user_ns_id: ns("user"),
        cgroup_ns_id: ns("cgroup"),
        time_ns_id: ns("time"),
    }
}

fn mm_entry(p: &ProcessDump) -> pb::MmEntry {
    let m = &p.mm;
    pb::MmEntry {
        mm_start_code: Some(m.start_code),
        mm_end_code: Some(m.end_code),
        mm_start_data: Some(m.start_data),
        mm_end_data: Some(m.end_data),
        mm_start_stack: Some(m.start_stack),
        mm_start_brk: Some(m.start_brk),
        mm_brk: Some(m.brk),
        mm_arg_start: Some(m.arg_start),
        mm_arg_end: Some(m.arg_end),
        mm_env_start: Some(m.env_start),
        mm_env_end: Some(m.env_end),
        exe_file_id: Some(m.exe_file_id),
        mm_saved_auxv: m.auxv.iter().flat_map(|&(k, v)| [k, v]).chain([0, 0]).collect(),
        vmas: m
            .vmas
            .iter()
            .map(|v| {
                let anon_shared = v.status & super::vmas::status::ANON_SHARED != 0;
                pb::VmaEntry {
                    start: Some(v.map.start),
                    end: Some(v.map.end),
                    pgoff: Some(v.map.offset),
                    shmid: Some(if anon_shared { v.map.inode } else { v.file_id as u64 }),
                    prot: Some(v.prot),
                    flags: Some(v.mmap_flags),
                    status: Some(v.status),
                    fd: Some(-1),
                    madv: (v.madv != 0).then_some(v.madv),
                    fdflags: (v.file_id != 0).then_some(if v.map.shared && v.map.write { libc::O_RDWR } else { libc::O_RDONLY } as u32),
                }
            })
            .collect(),
        dumpable: Some(p.task.dumpable as i32),
        aios: Vec::new(),
        thp_disabled: Some(p.task.thp_disabled),
    }
}

fn fown() -> pb::FownEntry {
    pb::FownEntry { uid: Some(0), euid: Some(0), signum: Some(0), pid_type: Some(0), pid: Some(0) }
}

/// A device number in the kernel's internal encoding (major << 20 | minor),
/// which CRIU images use.
fn kdev(dev: u64) -> u32 {
    (libc::major(dev) << 20) | libc::minor(dev)
}

/// Counter for ghost file ids.
struct Ghosts {
    next: u32,
    remaps: Vec<pb::RemapFilePathEntry>,
}

fn file_entry(dir: &ImageDir, f: &FileDesc, ghosts: &mut Ghosts) -> Result<pb::FileEntry, DumpError> {
    let mut e = pb::FileEntry { id: Some(f.id), ..Default::default() };
    match &f.kind {
        FileKind::Reg { path, mnt_id, size, mode, dev_ino, rdev, ghost } => {
            e.r#type = Some(pb::FdTypes::Reg as i32);
            e.reg = Some(pb::RegFileEntry {
                id: Some(f.id),
                flags: Some(f.flags),
                pos: Some(f.pos),
                fown: Some(fown()),
                name: Some(path.clone()),
                mnt_id: Some(*mnt_id),
                size: Some(*size),
                mode: Some(*mode),
                ..Default::default()
            });
            if let Some(g) = ghost {
                let gid = ghosts.next;
                ghosts.next += 1;
                let ge = pb::GhostFileEntry {
                    uid: Some(g.uid),
                    gid: Some(g.gid),
                    mode: Some(g.mode),
                    dev: Some(kdev(dev_ino.0)),
                    ino: Some(dev_ino.1),
                    rdev: Some(kdev(*rdev)),
                    atim: Some(pb::Timeval { tv_sec: Some(g.atime.0 as u64), tv_usec: Some(g.atime.1 as u64 / 1000) }),
                    mtim: Some(pb::Timeval { tv_sec: Some(g.mtime.0 as u64), tv_usec: Some(g.mtime.1 as u64 / 1000) }),
                    chunks: Some(false),
                    size: Some(g.data.len() as u64),
                    symlnk_target: None,
                };
                let mut w = dir.create_image(ImageKind::GhostFile, gid as u64).map_err(img_err)?;
                w.write_entry(&ge).map_err(img_err)?;
                w.write_raw(&g.data).map_err(img_err)?;
                w.finish().map_err(img_err)?;
                ghosts.remaps.push(pb::RemapFilePathEntry {
                    orig_id: Some(f.id),
                    remap_id: Some(gid),
                    remap_type: Some(pb::RemapType::Ghost as i32),
                });
            }
        }
        FileKind::Pipe { pipe_ino, .. } => {
            e.r#type = Some(pb::FdTypes::Pipe as i32);
            e.pipe = Some(pb::PipeEntry { id: Some(f.id), pipe_id: Some(*pipe_ino as u32), flags: Some(f.flags), fown: Some(fown()) });
        }
        FileKind::Fifo { pipe_ino, .. } => {
            e.r#type = Some(pb::FdTypes::Fifo as i32);
            // The FIFO's path is a reg file entry of its own (regf_id).
            e.fifo = Some(pb::FifoEntry { id: Some(f.id), pipe_id: Some(*pipe_ino as u32), regf_id: Some(f.id | FIFO_REG_BIT) });
        }
    }
    Ok(e)
}

/// Ids of the reg-file entries naming FIFOs: the FIFO's id with this bit.
const FIFO_REG_BIT: u32 = 1 << 30;

fn write_files(dir: &ImageDir, p: &ProcessDump) -> Result<(), DumpError> {
    let mut ghosts = Ghosts { next: 1, remaps: Vec::new() };
    let mut entries = Vec::new();
    let mut pipes: Vec<(u32, &[u8])> = Vec::new();
    let mut fifos: Vec<(u32, &[u8])> = Vec::new();
    for f in &p.files.files {
        entries.push(file_entry(dir, f, &mut ghosts)?);
        match &f.kind {
            FileKind::Pipe { pipe_ino, data: Some(d) } if !d.is_empty() => pipes.push((*pipe_ino as u32, d)),
            FileKind::Fifo { path, pipe_ino, data, mode } => {
                if let Some(d) = data.as_ref().filter(|d| !d.is_empty()) {
                    fifos.push((*pipe_ino as u32, d));
                }
                entries.push(pb::FileEntry {
                    r#type: Some(pb::FdTypes::Reg as i32),
                    id: Some(f.id | FIFO_REG_BIT),
                    reg: Some(pb::RegFileEntry {
                        id: Some(f.id | FIFO_REG_BIT),
                        flags: Some(f.flags),
                        pos: Some(0),
                        fown: Some(fown()),
                        name: Some(path.clone()),
                        mode: Some(*mode),
                        ..Default::default()
                    }),
                    ..Default::default()
                });
            }
            _ => {}
        }
    }
    dir.write_all(ImageKind::Files, 0, &entries).map_err(img_err)?;
    for (kind, list) in [(ImageKind::PipesData, pipes), (ImageKind::FifoData, fifos)] {
        if list.is_empty() {
            continue;
        }
        let mut w = dir.create_image(kind, 0).map_err(img_err)?;
        for (id, data) in list {
            let e = pb::PipeDataEntry { pipe_id: Some(id), bytes: Some(data.len() as u32), size: None };
            w.write_entry_with_payload(&e, data).map_err(img_err)?;
        }
        w.finish().map_err(img_err)?;
    }
    if !ghosts.remaps.is_empty() {
        dir.write_all(ImageKind::RemapFpath, 0, &ghosts.remaps).map_err(img_err)?;
    }
    let ids = kobj_ids(p.pid);
    let fdinfos: Vec<pb::FdinfoEntry> = p
        .files
        .fds
        .iter()
        .map(|fd| {
            let ty = p.files.files.iter().find(|f| f.id == fd.file_id).map_or(pb::FdTypes::Reg, |f| match f.kind {
                FileKind::Reg { .. } => pb::FdTypes::Reg,
                FileKind::Pipe { .. } => pb::FdTypes::Pipe,
                FileKind::Fifo { .. } => pb::FdTypes::Fifo,
            });
            pb::FdinfoEntry {
                id: Some(fd.file_id),
                flags: Some(fd.cloexec as u32),
                r#type: Some(ty as i32),
                fd: Some(fd.fd as u32),
                xattr_security_selinux: None,
            }
        })
        .collect();
    dir.write_all(ImageKind::Fdinfo, ids.files_id.unwrap_or(0) as u64, &fdinfos).map_err(img_err)?;
    dir.write_one(
        ImageKind::Fs,
        p.pid as u64,
        &pb::FsEntry { cwd_id: Some(p.files.cwd_id), root_id: Some(p.files.root_id), umask: Some(p.task.umask) },
    )
    .map_err(img_err)
}

fn pagemap_image(dir: &ImageDir, kind: ImageKind, id: u64, pages_id: u32, entries: &[PagemapEntry]) -> Result<(), DumpError> {
    let mut w = dir.create_image(kind, id).map_err(img_err)?;
    w.write_entry(&pb::PagemapHead { pages_id: Some(pages_id) }).map_err(img_err)?;
    for e in entries {
        w.write_entry(&pb::PagemapEntry::new(e.vaddr, e.nr_pages as u64, e.flags)).map_err(img_err)?;
    }
    w.finish().map_err(img_err)
}

/// Writes every image of a dump, the inventory last.
pub fn write_images(dir: &std::path::Path, s: &DumpSummary) -> Result<(), DumpError> {
    let p = &s.process;
    let dir = ImageDir::open_unchecked(dir);
    let pid = p.pid as u64;
    dir.write_one(
        ImageKind::Pstree,
        0,
        &pb::PstreeEntry {
            pid: Some(p.pid as u32),
            ppid: Some(0),
            pgid: Some(p.pgid as u32),
            sid: Some(p.sid as u32),
            threads: p.threads.iter().map(|t| t.tid as u32).collect(),
        },
    )
    .map_err(img_err)?;
    for (i, t) in p.threads.iter().enumerate() {
        dir.write_one(ImageKind::Core, t.tid as u64, &core_entry(p, t, i == 0)).map_err(img_err)?;
    }
    let ids = kobj_ids(p.pid);
    dir.write_one(ImageKind::Ids, pid, &ids).map_err(img_err)?;
    dir.write_one(ImageKind::Mm, pid, &mm_entry(p)).map_err(img_err)?;
    pagemap_image(&dir, ImageKind::Pagemap, pid, PAGES_ID, &p.pagemap)?;
    for sh in &p.shmem {
        pagemap_image(&dir, ImageKind::ShmemPagemap, sh.shmid, sh.pages_id, &sh.pagemap)?;
    }
    write_files(&dir, p)?;
    let ms = |d: std::time::Duration| Some(d.as_micros().min(u32::MAX as u128) as u32);
    dir.write_one(
        ImageKind::StatsDump,
        0,
        &pb::StatsEntry {
            dump: Some(pb::DumpStatsEntry {
                freezing_time: Some(0),
                frozen_time: ms(s.frozen_time),
                memdump_time: ms(s.memdump_time),
                memwrite_time: ms(s.mem.write_time),
                pages_scanned: Some(s.mem.pages_scanned),
                pages_skipped_parent: Some(0),
                pages_written: Some(s.mem.pages_written),
                irmap_resolve: Some(0),
                pages_lazy: Some(0),
                page_pipes: Some(0),
                page_pipe_bufs: Some(0),
                shpages_scanned: Some(0),
                shpages_skipped_parent: Some(0),
                shpages_written: Some(0),
            }),
            restore: None,
        },
    )
    .map_err(img_err)?;
    // As in CRIU, root_ids are the dumper's own: restore compares a task's
    // namespace ids with them to tell host namespaces from the task's own.
    let inv = pb::InventoryEntry {
        img_version: Some(crate::images::IMG_VERSION),
        fdinfo_per_id: Some(true),
        root_ids: Some(kobj_ids(std::process::id() as i32)),
        ns_per_id: Some(true),
        lsmtype: Some(pb::Lsmtype::NoLsm as i32),
        ..Default::default()
    };
    dir.write_inventory(&inv).map_err(img_err)
}
