//! Task-state stages of the restore: mm fields, rlimits, signal
//! dispositions, interval and POSIX timers, per-thread state (tid address,
//! rseq), personality, credentials, pending signals.

use crate::abi::{
    CredsArg, PosixTimerArg, RlimitArg, SeccompFilterArg, SigactionArg, ThreadArg, ERR_BAD_ARRAY, ERR_RLIMIT, ERR_SECCOMP,
    ERR_TIMER_ID, SIGINFO_SIZE,
};
use crate::restore::ctx::{Ctx, Fail, Step};
use crate::sys;
use linux_raw_sys::general::{
    __user_cap_data_struct, __user_cap_header_struct, itimerval, kernel_sigaction, kernel_sigset_t, rlimit64,
    siginfo_t, _LINUX_CAPABILITY_VERSION_3,
};

const SIG_SETMASK: u32 = 2;
const SIGKILL: i32 = 9;
const SIGSTOP: i32 = 19;
const PR_SET_NAME: u32 = 15;
const PR_SET_DUMPABLE: u32 = 4;
const PR_SET_MM: u32 = 35;
const PR_SET_MM_MAP: usize = 14;
const PR_SET_SECUREBITS: u32 = 28;
const PR_CAPBSET_DROP: u32 = 24;
const PR_CAP_AMBIENT: u32 = 47;
const PR_CAP_AMBIENT_RAISE: usize = 2;
const PR_CAP_AMBIENT_CLEAR_ALL: usize = 4;
const PR_SET_NO_NEW_PRIVS: u32 = 38;
const PR_TIMER_CREATE_RESTORE_IDS: u32 = 77;
const PR_GET_SECUREBITS: u32 = 27;
const PRIO_PROCESS: i32 = 0;
const SIGTRAP: u64 = 5;
const PR_SET_PDEATHSIG: u32 = 1;
const SECBIT_NO_SETUID_FIXUP: u32 = 1 << 2;
const SECCOMP_SET_MODE_STRICT: u32 = 0;
const SECCOMP_SET_MODE_FILTER: u32 = 1;
const SECCOMP_MODE_STRICT: u32 = 1;
const SECCOMP_MODE_FILTER: u32 = 2;
/// Upper bound of linear `timer_create` attempts to reach one id.
const MAX_TIMER_TRIES: i32 = 1 << 16;

/// Blocks every signal but SIGTRAP: nothing may run a handler in the
/// half-built task. SIGTRAP stays open because the final `int3` forces
/// one, and the kernel resets the handler of a forced signal found
/// blocked: the restored SIGTRAP handler would be lost (the host takes
/// that trap; a dump refuses pending SIGTRAPs).
pub fn block_all_signals() -> Step {
    let all = kernel_sigset_t { sig: [!(1 << (SIGTRAP - 1))] };
    // SAFETY: `all` is a valid sigset on our stack.
    unsafe { sys::rt_sigprocmask(SIG_SETMASK, &all, core::ptr::null_mut()) }
        .map(drop)
        .map_err(|e| Fail::errno(e, 0, b"rt_sigprocmask"))
}

/// The kernel's `struct prctl_mm_map`.
#[repr(C)]
struct PrctlMmMap {
    fields: [u64; 11],
    auxv: u64,
    auxv_size: u32,
    exe_fd: u32,
}

/// `PR_SET_MM_MAP` with the dumped code/data/brk/stack/args/env bounds,
/// auxv and exe file.
pub fn set_mm(ctx: &Ctx) -> Step {
    let m = &ctx.args.mm;
    let auxv = ctx.bytes(m.auxv)?;
    let map = PrctlMmMap {
        fields: [
            m.start_code, m.end_code, m.start_data, m.end_data, m.start_brk, m.brk, m.start_stack, m.arg_start,
            m.arg_end, m.env_start, m.env_end,
        ],
        auxv: auxv.as_ptr() as u64,
        auxv_size: auxv.len() as u32,
        exe_fd: m.exe_fd as u32,
    };
    // SAFETY: the kernel reads `map` and the auxv bytes it points to.
    unsafe { sys::prctl(PR_SET_MM, PR_SET_MM_MAP, &map as *const PrctlMmMap as usize, core::mem::size_of::<PrctlMmMap>(), 0) }
        .map_err(|e| Fail::errno(e, 0, b"PR_SET_MM_MAP"))?;
    if m.exe_fd >= 0 && ctx.args.flags & crate::abi::RESTORE_F_CLOSE_FDS != 0 {
        let _ = sys::close(m.exe_fd);
    }
    Ok(())
}

/// Applies the dumped rlimits. Limits already equal are skipped; any
/// other failure (e.g. raising a hard limit without CAP_SYS_RESOURCE) is
/// fatal.
pub fn set_rlimits(ctx: &Ctx) -> Step {
    for r in ctx.array::<RlimitArg>(ctx.args.rlimits)? {
        let mut old = rlimit64 { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: reading the current limit into `old`.
        unsafe { sys::prlimit64(0, r.resource, core::ptr::null(), &mut old) }
            .map_err(|e| Fail::errno(e, r.resource as u64, b"prlimit64 get"))?;
        if old.rlim_cur == r.cur && old.rlim_max == r.max {
            continue;
        }
        let new = rlimit64 { rlim_cur: r.cur, rlim_max: r.max };
        // SAFETY: the kernel reads `new`.
        if let Err(e) = unsafe { sys::prlimit64(0, r.resource, &new, core::ptr::null_mut()) } {
            let code = if r.max > old.rlim_max { ERR_RLIMIT } else { sys::neg_errno(e) };
            return Err(Fail::new(code, r.resource as u64, b"cannot restore an rlimit"));
        }
    }
    Ok(())
}

/// Installs the dumped signal dispositions.
pub fn set_sigactions(ctx: &Ctx) -> Step {
    let acts = ctx.array::<SigactionArg>(ctx.args.sigactions)?;
    if !acts.is_empty() && acts.len() != 64 {
        return Err(Fail::new(ERR_BAD_ARRAY, acts.len() as u64, b"sigactions must be 64"));
    }
    for (i, act) in acts.iter().enumerate() {
        let sig = i as i32 + 1;
        if sig == SIGKILL || sig == SIGSTOP {
            continue;
        }
        // SAFETY: SigactionArg has the layout of the kernel's sigaction
        // (handler, flags, restorer, mask: four 64-bit words); handlers
        // point into the restored process's code.
        unsafe { sys::rt_sigaction(sig, (act as *const SigactionArg).cast::<kernel_sigaction>(), core::ptr::null_mut()) }
            .map_err(|e| Fail::errno(e, sig as u64, b"rt_sigaction"))?;
    }
    Ok(())
}

/// Arms ITIMER_REAL, ITIMER_VIRTUAL and ITIMER_PROF as dumped.
pub fn set_itimers(ctx: &Ctx) -> Step {
    for (which, t) in ctx.args.itimers.iter().enumerate() {
        // SAFETY: ItimerArg has the layout of `struct itimerval` (interval
        // then value, each sec + usec as 64-bit words).
        unsafe { sys::setitimer(which as i32, (t as *const crate::abi::ItimerArg).cast::<itimerval>(), core::ptr::null_mut()) }
            .map_err(|e| Fail::errno(e, which as u64, b"setitimer"))?;
    }
    Ok(())
}

/// The kernel `sigevent` (64 bytes) of a dumped timer.
pub fn sigevent_bytes(t: &PosixTimerArg) -> [u8; 64] {
    let mut ev = [0u8; 64];
    ev[0..8].copy_from_slice(&t.sigev_value.to_le_bytes());
    ev[8..12].copy_from_slice(&t.sigev_signo.to_le_bytes());
    ev[12..16].copy_from_slice(&t.sigev_notify.to_le_bytes());
    ev[16..20].copy_from_slice(&t.notify_thread_id.to_le_bytes());
    ev
}

/// Creates the POSIX timers with their dumped ids (asking the kernel for
/// the id with PR_TIMER_CREATE_RESTORE_IDS, else creating and deleting
/// timers until the id comes up) and arms them.
pub fn set_posix_timers(ctx: &Ctx) -> Step {
    let timers = ctx.array::<PosixTimerArg>(ctx.args.posix_timers)?;
    if timers.is_empty() {
        return Ok(());
    }
    // SAFETY: toggles how timer_create picks ids for this process.
    let explicit = unsafe { sys::prctl(PR_TIMER_CREATE_RESTORE_IDS, 1, 0, 0, 0) }.is_ok();
    for t in timers {
        let ev = sigevent_bytes(t);
        let want = t.timer_id;
        let mut tries = 0;
        loop {
            let mut id = want;
            // SAFETY: `ev` is a 64-byte sigevent, `id` a writable int.
            unsafe { sys::timer_create(t.clock_id, ev.as_ptr(), &mut id) }
                .map_err(|e| Fail::errno(e, want as u64, b"timer_create"))?;
            if id == want {
                break;
            }
            let _ = sys::timer_delete(id);
            tries += 1;
            if explicit || id > want || tries > MAX_TIMER_TRIES {
                return Err(Fail::new(ERR_TIMER_ID, want as u64, b"cannot get the dumped timer id"));
            }
        }
        let spec = [t.interval_sec, t.interval_nsec, t.value_sec, t.value_nsec];
        // SAFETY: `spec` has the layout of `struct itimerspec`.
        unsafe { sys::timer_settime(want, 0, spec.as_ptr(), core::ptr::null_mut()) }
            .map_err(|e| Fail::errno(e, want as u64, b"timer_settime"))?;
    }
    if explicit {
        // SAFETY: back to normal id allocation.
        let _ = unsafe { sys::prctl(PR_TIMER_CREATE_RESTORE_IDS, 0, 0, 0, 0) };
    }
    Ok(())
}

/// Per-thread kernel state of the calling thread: name, clear_child_tid,
/// rseq. (Mask, sigaltstack and registers come with the sigframe.)
pub fn set_thread_state(t: &ThreadArg) -> Step {
    if t.comm[0] != 0 {
        // The kernel copies 16 bytes and terminates them itself.
        // SAFETY: the kernel reads 16 bytes from `t.comm`.
        unsafe { sys::prctl(PR_SET_NAME, t.comm.as_ptr() as usize, 0, 0, 0) }
            .map_err(|e| Fail::errno(e, 0, b"PR_SET_NAME"))?;
    }
    // SAFETY: the address is the dumped one, inside restored memory.
    unsafe { sys::set_tid_address(t.clear_child_tid as usize) }.map_err(|e| Fail::errno(e, t.clear_child_tid, b"set_tid_address"))?;
    if t.rseq_len != 0 {
        // SAFETY: registering the dumped rseq area, inside restored memory.
        unsafe { sys::rseq(t.rseq_ptr, t.rseq_len, 0, t.rseq_sig) }.map_err(|e| Fail::errno(e, t.rseq_ptr, b"rseq"))?;
    }
    Ok(())
}

/// The calling thread's scheduling policy and priority, then its nice
/// value (while it still has CAP_SYS_NICE: real-time policies and
/// negative nice values need it).
pub fn set_sched(t: &ThreadArg) -> Step {
    if t.sched_policy < 0 {
        return Ok(());
    }
    sys::sched_setscheduler(0, t.sched_policy, t.sched_prio as i32)
        .map_err(|e| Fail::errno(e, t.sched_policy as u64, b"sched_setscheduler"))?;
    sys::setpriority(PRIO_PROCESS, 0, t.sched_nice).map(drop).map_err(|e| Fail::errno(e, t.sched_nice as u64, b"setpriority"))
}

/// Faults on purpose ([`crate::abi::RESTORE_F_TEST_CRASH`]): reads
/// address 8, which no task maps.
pub fn crash_for_test() {
    // SAFETY: the read faults and the task dies of SIGSEGV, as the test
    // that asked for it wants; nothing of ours runs after it.
    unsafe { core::arch::asm!("mov {tmp}, qword ptr [8]", tmp = out(reg) _, options(nostack, readonly)) }
}

/// Registers the dumped membarrier commands for the address space.
pub fn set_membarriers(mask: u32) -> Step {
    for cmd in crate::abi::MEMBARRIER_REGISTER_CMDS.into_iter().filter(|c| mask & c != 0) {
        sys::membarrier(cmd, 0, 0).map_err(|e| Fail::errno(e, cmd as u64, b"membarrier register"))?;
    }
    Ok(())
}

/// `prctl(PR_SET_DUMPABLE, value)`.
pub fn set_dumpable(value: u32) -> Step {
    prctl_step(PR_SET_DUMPABLE, value as usize, 0, b"PR_SET_DUMPABLE")
}

/// `personality(persona)`.
pub fn set_personality(persona: u32) -> Step {
    sys::personality(persona).map(drop).map_err(|e| Fail::errno(e, persona as u64, b"personality"))
}

fn prctl_step(option: u32, arg2: usize, arg3: usize, msg: &'static [u8]) -> Step {
    // SAFETY: credential prctls take integers only.
    unsafe { sys::prctl(option, arg2, arg3, 0, 0) }.map(drop).map_err(|e| Fail::errno(e, arg2 as u64, msg))
}

fn cap_bit(set: [u32; 2], cap: u32) -> bool {
    set.get((cap / 32) as usize).is_some_and(|w| w & (1 << (cap % 32)) != 0)
}

/// A capability set as one 64-bit value.
fn caps64(set: [u32; 2]) -> u64 {
    set[0] as u64 | (set[1] as u64) << 32
}

/// The calling thread's (effective, permitted, inheritable) sets (`capget`).
fn get_caps() -> Step<[u64; 3]> {
    let mut hdr = __user_cap_header_struct { version: _LINUX_CAPABILITY_VERSION_3, pid: 0 };
    let mut data = [__user_cap_data_struct { effective: 0, permitted: 0, inheritable: 0 }; 2];
    sys::capget(&mut hdr, &mut data).map_err(|e| Fail::errno(e, 0, b"capget"))?;
    let both = |f: fn(&__user_cap_data_struct) -> u32| caps64([f(&data[0]), f(&data[1])]);
    Ok([both(|d| d.effective), both(|d| d.permitted), both(|d| d.inheritable)])
}

/// `capset` of the calling thread's effective, permitted and inheritable sets.
fn set_caps(eff: u64, prm: u64, inh: u64, msg: &'static [u8]) -> Step {
    let hdr = __user_cap_header_struct { version: _LINUX_CAPABILITY_VERSION_3, pid: 0 };
    let data = [0, 32].map(|shift| __user_cap_data_struct {
        effective: (eff >> shift) as u32,
        permitted: (prm >> shift) as u32,
        inheritable: (inh >> shift) as u32,
    });
    sys::capset(&hdr, &data).map(drop).map_err(|e| Fail::errno(e, prm, msg))
}

/// Groups compared on the stack before `setgroups` (more are always set).
const GROUPS_ON_STACK: usize = 64;

/// `setgroups`, skipped when the list is already the dumped one (it may be
/// refused in a user namespace even then).
fn set_groups(want: &[u32]) -> Step {
    let mut have = [0u32; GROUPS_ON_STACK];
    if want.len() <= GROUPS_ON_STACK {
        if let Ok(n) = sys::getgroups(&mut have) {
            if have.get(..n) == Some(want) {
                return Ok(());
            }
        }
    }
    sys::setgroups(want).map(drop).map_err(|e| Fail::errno(e, want.len() as u64, b"setgroups"))
}

/// `PR_GET_SECUREBITS`.
fn get_securebits() -> Step<u32> {
    // SAFETY: integer-only prctl.
    unsafe { sys::prctl(PR_GET_SECUREBITS, 0, 0, 0, 0) }.map(|v| v as u32).map_err(|e| Fail::errno(e, 0, b"PR_GET_SECUREBITS"))
}

/// The real, effective, saved and fs uids (or gids) into place: setresuid
/// then setfsuid, checked (setfsuid reports no error).
fn set_ids(want: [u32; 4], gids: bool) -> Step {
    let (msg, fsmsg): (&'static [u8], &'static [u8]) =
        if gids { (b"setresgid", b"setfsgid") } else { (b"setresuid", b"setfsuid") };
    let set = if gids { sys::setresgid } else { sys::setresuid };
    let setfs = if gids { sys::setfsgid } else { sys::setfsuid };
    set(want[0], want[1], want[2]).map_err(|e| Fail::errno(e, want[0] as u64, msg))?;
    let _ = setfs(want[3]);
    // An invalid id (-1) changes nothing and returns the current one.
    match setfs(u32::MAX) {
        Ok(v) if v as u32 == want[3] => Ok(()),
        _ => Err(Fail::new(-(sys::errno_value(sys::Errno::EPERM) as i64), want[3] as u64, fsmsg)),
    }
}

/// The calling thread's credentials but its last capability drop (see
/// [`drop_caps`]), from a thread still running with criu-rs's (root, with
/// CAP_SETUID, CAP_SETGID and CAP_SETPCAP), in an order where each step
/// still has the capability it needs:
///
/// 1. supplementary groups;
/// 2. with SECBIT_NO_SETUID_FIXUP set first (so the change of ids clears
///    no capability), gids then uids, real/effective/saved then fs;
/// 3. the inheritable set (the ambient set must lie in it, and the
///    bounding drop below may remove a capability it keeps);
/// 4. the ambient set (before securebits, which may forbid raising it);
/// 5. the bounding set (needs CAP_SETPCAP);
/// 6. securebits (needs CAP_SETPCAP; may lock bits).
///
/// Ids already equal are not set again (they may need no capability then).
/// criu-rs checked before creating any task that it can grant all of it.
pub fn set_creds(ctx: &Ctx, c: &CredsArg) -> Step {
    set_groups(ctx.array::<u32>(c.groups)?)?;
    let uids = [c.uid, c.euid, c.suid, c.fsuid];
    let gids = [c.gid, c.egid, c.sgid, c.fsgid];
    let res_uid = sys::getresuid().map_err(|e| Fail::errno(e, 0, b"getresuid"))?;
    let res_gid = sys::getresgid().map_err(|e| Fail::errno(e, 0, b"getresgid"))?;
    // An invalid id (-1) changes nothing and returns the current one.
    let fsuid = sys::setfsuid(u32::MAX).map_or(u32::MAX, |v| v as u32);
    let fsgid = sys::setfsgid(u32::MAX).map_or(u32::MAX, |v| v as u32);
    let same_uids = res_uid == [uids[0], uids[1], uids[2]] && fsuid == uids[3];
    let same_gids = res_gid == [gids[0], gids[1], gids[2]] && fsgid == gids[3];
    let secbits = get_securebits()?;
    if !(same_uids && same_gids) {
        if secbits & SECBIT_NO_SETUID_FIXUP == 0 {
            prctl_step(PR_SET_SECUREBITS, (secbits | SECBIT_NO_SETUID_FIXUP) as usize, 0, b"PR_SET_SECUREBITS keep caps")?;
        }
        if !same_gids {
            set_ids(gids, true)?;
        }
        if !same_uids {
            set_ids(uids, false)?;
        }
    }
    let [eff, prm, inh] = get_caps()?;
    let want_inh = caps64(c.cap_inh);
    if inh != want_inh {
        set_caps(eff, prm, want_inh, b"capset inheritable")?;
    }
    prctl_step(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, b"PR_CAP_AMBIENT clear")?;
    for cap in (0..64).filter(|&cap| cap_bit(c.cap_amb, cap)) {
        prctl_step(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, cap as usize, b"PR_CAP_AMBIENT raise")?;
    }
    for cap in (0..64).filter(|&cap| !cap_bit(c.cap_bnd, cap)) {
        // SAFETY: integer-only prctl.
        match unsafe { sys::prctl(PR_CAPBSET_DROP, cap as usize, 0, 0, 0) } {
            Ok(_) => {}
            Err(sys::Errno::EINVAL) => break, // past the last capability
            Err(e) => return Err(Fail::errno(e, cap as u64, b"PR_CAPBSET_DROP")),
        }
    }
    if get_securebits()? != c.secbits {
        prctl_step(PR_SET_SECUREBITS, c.secbits as usize, 0, b"PR_SET_SECUREBITS")?;
    }
    Ok(())
}

/// The end of the calling thread's credentials: the effective and
/// permitted sets (which drops whatever criu-rs's it still had; the
/// change of ids is done, so this clears neither the parent-death signal
/// nor the dumpable flag), then no_new_privs.
pub fn drop_caps(c: &CredsArg) -> Step {
    set_caps(caps64(c.cap_eff), caps64(c.cap_prm), caps64(c.cap_inh), b"capset")?;
    if c.no_new_privs != 0 {
        prctl_step(PR_SET_NO_NEW_PRIVS, 1, 0, b"PR_SET_NO_NEW_PRIVS")?;
    }
    Ok(())
}

/// The kernel's `struct sock_fprog`.
#[repr(C)]
struct SockFprog {
    len: u16,
    filter: *const u8,
}

/// Puts the calling thread in its seccomp mode: strict, or its filters in
/// install order. Needs `no_new_privs` or CAP_SYS_ADMIN (the thread still
/// has criu-rs's capabilities here). A TSYNC filter that cannot sync (the
/// kernel returns the other thread's tid) is an error.
pub fn set_seccomp(ctx: &Ctx, t: &ThreadArg) -> Step {
    match t.seccomp_mode {
        0 => Ok(()),
        SECCOMP_MODE_STRICT => {
            // SAFETY: strict mode takes no argument.
            unsafe { sys::seccomp(SECCOMP_SET_MODE_STRICT, 0, core::ptr::null()) }
                .map(drop)
                .map_err(|e| Fail::errno(e, t.tid as u64, b"seccomp strict"))
        }
        SECCOMP_MODE_FILTER => {
            for f in ctx.array::<SeccompFilterArg>(t.seccomp_filters)? {
                let prog = ctx.bytes(f.prog)?;
                let insns = prog.len() / 8;
                if insns == 0 || prog.len() % 8 != 0 || insns > u16::MAX as usize {
                    return Err(Fail::new(ERR_SECCOMP, prog.len() as u64, b"bad seccomp program"));
                }
                let fprog = SockFprog { len: insns as u16, filter: prog.as_ptr() };
                // SAFETY: `fprog` and the program it points to (inside
                // the argument block) are readable; the kernel copies both.
                let r = unsafe { sys::seccomp(SECCOMP_SET_MODE_FILTER, f.flags, (&fprog as *const SockFprog).cast()) }
                    .map_err(|e| Fail::errno(e, f.flags as u64, b"seccomp filter"))?;
                if r != 0 {
                    return Err(Fail::new(ERR_SECCOMP, r as u64, b"seccomp TSYNC: another thread cannot sync"));
                }
            }
            Ok(())
        }
        m => Err(Fail::new(ERR_SECCOMP, m as u64, b"unknown seccomp mode")),
    }
}

/// `prctl(PR_SET_PDEATHSIG, sig)`: after the credentials, whose change
/// clears it.
pub fn set_pdeath_sig(sig: u32) -> Step {
    prctl_step(PR_SET_PDEATHSIG, sig as usize, 0, b"PR_SET_PDEATHSIG")
}

/// The signal number of a raw siginfo.
fn signo(info: &[u8; SIGINFO_SIZE]) -> i32 {
    i32::from_le_bytes([info[0], info[1], info[2], info[3]])
}

fn getpid() -> Step<i32> {
    sys::getpid().map(|p| p as i32).map_err(|e| Fail::errno(e, 0, b"getpid"))
}

/// Re-queues the dumped process-wide pending signals with
/// `rt_sigqueueinfo`. They stay blocked until each thread's
/// `rt_sigreturn` installs its dumped mask.
pub fn queue_shared_signals(ctx: &Ctx) -> Step {
    let pid = getpid()?;
    for info in ctx.array::<[u8; SIGINFO_SIZE]>(ctx.args.shared_siginfos)? {
        // SAFETY: a full 128-byte siginfo is read by the kernel.
        unsafe { sys::rt_sigqueueinfo(pid, signo(info), info.as_ptr().cast::<siginfo_t>()) }
            .map_err(|e| Fail::errno(e, signo(info) as u64, b"rt_sigqueueinfo"))?;
    }
    Ok(())
}

/// Re-queues thread `t`'s own pending signals with `rt_tgsigqueueinfo`.
pub fn queue_own_signals(ctx: &Ctx, t: &ThreadArg) -> Step {
    let pid = getpid()?;
    for info in ctx.array::<[u8; SIGINFO_SIZE]>(t.siginfos)? {
        // SAFETY: as above.
        unsafe { sys::rt_tgsigqueueinfo(pid, t.tid, signo(info), info.as_ptr().cast::<siginfo_t>()) }
            .map_err(|e| Fail::errno(e, signo(info) as u64, b"rt_tgsigqueueinfo"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sigevent_layout() {
        let t = PosixTimerArg { sigev_value: 0x1122, sigev_signo: 14, sigev_notify: 4, notify_thread_id: 77, ..Default::default() };
        let ev = sigevent_bytes(&t);
        assert_eq!(u64::from_le_bytes(ev[0..8].try_into().unwrap()), 0x1122);
        assert_eq!(i32::from_le_bytes(ev[8..12].try_into().unwrap()), 14);
        assert_eq!(i32::from_le_bytes(ev[12..16].try_into().unwrap()), 4);
        assert_eq!(i32::from_le_bytes(ev[16..20].try_into().unwrap()), 77);
        assert_eq!(core::mem::size_of::<linux_raw_sys::general::sigevent>(), 64);
        assert_eq!(core::mem::size_of::<PrctlMmMap>(), 104);
        assert_eq!(core::mem::size_of::<itimerval>(), core::mem::size_of::<crate::abi::ItimerArg>());
        assert_eq!(core::mem::size_of::<kernel_sigaction>(), core::mem::size_of::<SigactionArg>());
        assert_eq!(core::mem::size_of::<SockFprog>(), 16, "struct sock_fprog");
    }

    #[test]
    fn capability_bits() {
        assert!(cap_bit([1, 0], 0));
        assert!(cap_bit([0, 1 << 8], 40));
        assert!(!cap_bit([!0, 0], 32));
        assert!(!cap_bit([!0, !0], 64));
    }
}
