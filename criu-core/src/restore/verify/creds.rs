//! Every thread's credentials, `NoNewPrivs` and seccomp state
//! (`/proc/PID/task/TID/status`) against its `thread_core.creds` and
//! `seccomp_mode` / `seccomp_filter` (the chain in `seccomp.img`).

use super::{proc_err, same, same_hex, thread_file, Check, TaskImages};
use crate::images::pb;
use crate::proc::status::{read_status_file, ProcStatus};

pub fn check(t: &TaskImages) -> Check {
    for (tid, core) in &t.threads {
        let st = read_status_file(t.pid, &thread_file(*tid, "status")).map_err(proc_err)?;
        let Some(tc) = core.thread_core.as_ref() else { continue };
        if let Some(c) = tc.creds.as_ref() {
            thread_creds(*tid, &st, c)?;
        }
        seccomp(t, *tid, &st, tc)?;
    }
    Ok(())
}

fn thread_creds(tid: i32, st: &ProcStatus, c: &pb::CredsEntry) -> Check {
    let w = |v: Option<u32>| v.unwrap_or_default();
    let uids = [w(c.uid), w(c.euid), w(c.suid), w(c.fsuid)];
    let gids = [w(c.gid), w(c.egid), w(c.sgid), w(c.fsgid)];
    let show = |v: &[u32]| v.iter().map(u32::to_string).collect::<Vec<_>>().join(" ");
    same(format_args!("thread {tid}: uids (real effective saved fs)"), show(&st.uid), show(&uids))?;
    same(format_args!("thread {tid}: gids (real effective saved fs)"), show(&st.gid), show(&gids))?;
    let (mut live, mut image) = (st.groups.clone(), c.groups.clone());
    live.sort_unstable();
    image.sort_unstable();
    same(format_args!("thread {tid}: groups"), show(&live), show(&image))?;
    for (name, live, words) in [
        ("CapInh", st.cap_inh, &c.cap_inh),
        ("CapPrm", st.cap_prm, &c.cap_prm),
        ("CapEff", st.cap_eff, &c.cap_eff),
        ("CapBnd", st.cap_bnd, &c.cap_bnd),
        ("CapAmb", st.cap_amb, &c.cap_amb),
    ] {
        // An empty list: the dump did not record the set (CapAmb in old
        // images).
        if words.is_empty() {
            continue;
        }
        let image = words.iter().take(2).enumerate().fold(0u64, |a, (i, &w)| a | (w as u64) << (32 * i));
        same_hex(format_args!("thread {tid}: {name}"), live, image)?;
    }
    if let Some(nnp) = c.no_new_privs {
        same(format_args!("thread {tid}: NoNewPrivs"), st.no_new_privs as u32, nnp)?;
    }
    Ok(())
}

/// The seccomp mode, and in filter mode the number of filters attached
/// (`Seccomp_filters`, where the kernel shows it). A thread recorded
/// without seccomp in a task whose leader's chain was installed with
/// `SECCOMP_FILTER_FLAG_TSYNC` shares the leader's chain (as CRIU records
/// it).
fn seccomp(t: &TaskImages, tid: i32, st: &ProcStatus, tc: &pb::ThreadCoreEntry) -> Check {
    let Some(mut mode) = tc.seccomp_mode else { return Ok(()) };
    let mut first = tc.seccomp_filter;
    if mode == 0 && tid != t.pid {
        let leader = t.threads.first().and_then(|(_, c)| c.thread_core.as_ref());
        if let Some(l) = leader.filter(|l| l.seccomp_mode == Some(2)) {
            if chain(t, l.seccomp_filter).iter().any(|f| f.flags.unwrap_or_default() & TSYNC != 0) {
                mode = 2;
                first = l.seccomp_filter;
            }
        }
    }
    same(format_args!("thread {tid}: Seccomp"), st.seccomp as i64, mode as i64)?;
    match (st.seccomp_filters, mode) {
        (Some(live), 2) => same(format_args!("thread {tid}: Seccomp_filters"), live as usize, chain(t, first).len()),
        _ => Ok(()),
    }
}

/// `SECCOMP_FILTER_FLAG_TSYNC`.
const TSYNC: u32 = 1;

/// The chain of filters that starts at index `first` of `seccomp.img`
/// (following `prev`; a loop or a bad index ends it).
fn chain<'a>(t: &TaskImages<'a>, first: Option<u32>) -> Vec<&'a pb::SeccompFilter> {
    let list = t.tree.seccomp.as_ref().map_or(&[][..], |e| &e.seccomp_filters[..]);
    let mut out = Vec::new();
    let mut at = first;
    while let Some(f) = at.and_then(|i| list.get(i as usize)) {
        if out.len() >= list.len() {
            break;
        }
        out.push(f);
        at = f.prev;
    }
    out
}
