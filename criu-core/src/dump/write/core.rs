//! The per-thread `core-TID.img` entries (registers in CRIU's x86 layout,
//! task and thread state) and the kernel-object ids of a process.

use crate::dump::model::*;
use crate::images::pb;
use crate::ptrace::regs::{xsave_component, FpState};

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

/// `ax` and `ip` as CRIU writes them (compel's `get_task_regs`): a task
/// stopped in a system call that asks to be restarted (`-ERESTARTSYS`,
/// `-ERESTARTNOINTR`, `-ERESTARTNOHAND`) is set to run it again (`ax =
/// orig_ax`, `ip` back over the 2-byte `syscall`); `-ERESTART_RESTARTBLOCK`
/// (its restart block is not carried over) returns `-EINTR`. CRIU's restore
/// expects registers written so; ours rewinds only what is not.
fn restart_regs(r: &crate::ptrace::regs::GpRegs) -> (u64, u64) {
    const ERESTARTSYS: i64 = 512;
    const ERESTARTNOINTR: i64 = 513;
    const ERESTARTNOHAND: i64 = 514;
    const ERESTART_RESTARTBLOCK: i64 = 516;
    if (r.orig_rax as i64) < 0 {
        return (r.rax, r.rip);
    }
    match -(r.rax as i64) {
        ERESTARTSYS | ERESTARTNOINTR | ERESTARTNOHAND => (r.orig_rax, r.rip.wrapping_sub(2)),
        ERESTART_RESTARTBLOCK => ((-(libc::EINTR as i64)) as u64, r.rip),
        _ => (r.rax, r.rip),
    }
}

/// The general registers in CRIU's layout (a pending restart resolved as
/// CRIU does: [`restart_regs`]).
pub fn gpregs_entry(r: &crate::ptrace::regs::GpRegs) -> pb::UserX86RegsEntry {
    let (ax, ip) = restart_regs(r);
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
        ax: Some(ax),
        cx: Some(r.rcx),
        dx: Some(r.rdx),
        si: Some(r.rsi),
        di: Some(r.rdi),
        orig_ax: Some(r.orig_rax),
        ip: Some(ip),
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

fn task_core(p: &ProcessDump) -> pb::TaskCoreEntry {
    let t = &p.task;
    let leader = &p.threads[0];
    pb::TaskCoreEntry {
        task_state: Some(match t.stop_signo {
            Some(_) => crate::images::consts::task_state::STOPPED,
            None => crate::images::consts::task_state::ALIVE,
        }),
        stop_signo: t.stop_signo,
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
                    it_sigev_notify: Some(pt.proc.sigev_notify()),
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
        membarrier_registration_mask: Some(t.membarrier_mask),
        ..Default::default()
    }
}

fn thread_core(t: &ThreadState) -> pb::ThreadCoreEntry {
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
        pdeath_sig: Some(t.pdeath_sig),
        signals_p: signals(&t.pending),
        creds: Some(creds_entry(&t.creds)),
        seccomp_mode: Some(t.seccomp.mode as i32),
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
        thread_core: Some(thread_core(t)),
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


/// The kernel-object ids of a task of the dump: vm/files/fs/sighand as
/// collected (shared objects share ids), namespaces as [`kobj_ids`].
pub fn task_kobj_ids(p: &ProcessDump) -> pb::TaskKobjIdsEntry {
    pb::TaskKobjIdsEntry {
        vm_id: Some(p.kobj.vm),
        files_id: Some(p.kobj.files),
        fs_id: Some(p.kobj.fs),
        sighand_id: Some(p.kobj.sighand),
        ..kobj_ids(p.pid)
    }
}

/// The `core-PID.img` entry of a zombie: only `task_core` with its state
/// (`TASK_DEAD`, which CRIU writes for zombies) and exit status.
pub fn zombie_core_entry(z: &ZombieDump) -> pb::CoreEntry {
    pb::CoreEntry {
        mtype: Some(pb::core_entry::March::X8664 as i32),
        tc: Some(pb::TaskCoreEntry {
            task_state: Some(crate::images::consts::task_state::DEAD),
            exit_code: Some(z.exit_code as u32),
            personality: Some(0),
            flags: Some(0),
            blk_sigset: Some(0),
            comm: Some(z.comm.clone()),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_restarts_are_written_as_criu_writes_them() {
        // SAFETY: user_regs_struct is plain integers; all-zero is valid.
        let mut r: crate::ptrace::regs::GpRegs = unsafe { std::mem::zeroed() };
        r.rip = 0x1002;
        r.orig_rax = 0; // read(2)
        for code in [512i64, 513, 514] {
            r.rax = (-code) as u64;
            assert_eq!(restart_regs(&r), (0, 0x1000), "-{code}: run read(2) again");
        }
        r.rax = (-516i64) as u64;
        assert_eq!(restart_regs(&r), ((-4i64) as u64, 0x1002), "nanosleep: -EINTR");
        r.rax = (-11i64) as u64;
        assert_eq!(restart_regs(&r), (r.rax, 0x1002), "a real error stays");
        r.orig_rax = u64::MAX;
        r.rax = (-512i64) as u64;
        assert_eq!(restart_regs(&r), (r.rax, 0x1002), "not in a system call");
        let e = gpregs_entry(&r);
        assert_eq!((e.ax, e.ip), (Some(r.rax), Some(0x1002)));
    }
}
