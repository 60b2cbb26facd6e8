//! Task-wide state and thread names: the process group and session where
//! a task of the tree leads them, the executable, `Name` of every thread, the
//! personality, `oom_score_adj`, `THP_enabled` (`PR_SET_THP_DISABLE`), the
//! umask and the mm's code, data, heap, stack, argument and environment
//! bounds (`/proc/PID/stat`), against the core, mm and fs images.

use super::{proc_err, same, thread_file, Check, TaskImages};
use crate::proc::status::read_status_file;

pub fn check(t: &TaskImages) -> Check {
    let tc = t.tc();
    for (tid, core) in &t.threads {
        let st = read_status_file(t.pid, &thread_file(*tid, "status")).map_err(proc_err)?;
        let name = core.thread_core.as_ref().and_then(|c| c.comm.as_deref()).or(tc.and_then(|c| c.comm.as_deref()));
        if let Some(name) = name {
            same(format_args!("thread {tid}: Name"), st.name.as_str(), name)?;
        }
    }
    let st = read_status_file(t.pid, "status").map_err(proc_err)?;
    ids(t)?;
    exe(t)?;
    mm_fields(t)?;
    if let Some(p) = tc.and_then(|c| c.personality) {
        let live = crate::proc::misc::read_personality(t.pid).map_err(proc_err)?;
        super::same_hex("personality", live as u64, p as u64)?;
    }
    if let Some(adj) = tc.and_then(|c| c.oom_score_adj) {
        let path = crate::proc::path(t.pid, "oom_score_adj");
        let text = crate::proc::read_text(&path).map_err(proc_err)?;
        let live: i32 = text.trim().parse().map_err(|_| format!("{}: {text:?}", path.display()))?;
        same("oom_score_adj", live, adj)?;
    }
    if let (Some(disabled), Some(enabled)) = (t.mm.thp_disabled, st.thp_enabled) {
        same("THP disabled (PR_SET_THP_DISABLE)", !enabled, disabled)?;
    }
    if let (Some(umask), Some(live)) = (t.fs.as_ref().and_then(|f| f.umask), st.umask) {
        same("umask", format!("{live:04o}"), format!("{umask:04o}"))?;
    }
    Ok(())
}

/// The mm's bounds `/proc/PID/stat` shows against `mm-PID.img` (`brk`
/// itself is not shown there).
fn mm_fields(t: &TaskImages) -> Check {
    let st = crate::proc::stat::read_stat(t.pid).map_err(proc_err)?;
    let m = &t.mm;
    for (name, live, image) in [
        ("start_code", st.start_code, m.mm_start_code),
        ("end_code", st.end_code, m.mm_end_code),
        ("start_data", st.start_data, m.mm_start_data),
        ("end_data", st.end_data, m.mm_end_data),
        ("start_stack", st.start_stack, m.mm_start_stack),
        ("start_brk", st.start_brk, m.mm_start_brk),
        ("arg_start", st.arg_start, m.mm_arg_start),
        ("arg_end", st.arg_end, m.mm_arg_end),
        ("env_start", st.env_start, m.mm_env_start),
        ("env_end", st.env_end, m.mm_env_end),
    ] {
        if let Some(image) = image {
            super::same_hex(format_args!("mm {name}"), live, image)?;
        }
    }
    Ok(())
}

/// The process group and session, where the images say a task of the
/// tree leads them (others may be inherited: a shell job joins criu-rs's).
fn ids(t: &TaskImages) -> Check {
    let Some(e) = t.tree.pstree.iter().find(|e| e.pid == Some(t.pid as u32)) else { return Ok(()) };
    let in_tree = |id: Option<u32>| id.filter(|&i| i != 0 && t.tree.pstree.iter().any(|e| e.pid == Some(i)));
    let st = crate::proc::stat::read_stat(t.pid).map_err(proc_err)?;
    if let Some(pgid) = in_tree(e.pgid) {
        same("process group", st.pgid, pgid as i32)?;
    }
    if let Some(sid) = in_tree(e.sid) {
        same("session", st.sid, sid as i32)?;
    }
    Ok(())
}

/// `/proc/PID/exe` against `mm.exe_file_id`'s file.
fn exe(t: &TaskImages) -> Check {
    let Some(id) = t.mm.exe_file_id else { return Ok(()) };
    if t.tree.remapped.contains(&id) {
        return Ok(());
    }
    let Some(name) = t.tree.files.get(&id).and_then(|f| f.reg.as_ref()).and_then(|r| r.name.as_deref()) else { return Ok(()) };
    let live = crate::proc::misc::read_link(t.pid, "exe").map_err(proc_err)?;
    same("exe", live.to_string_lossy().as_ref(), name)
}
