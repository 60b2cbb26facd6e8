//! Every thread's scheduling policy, real-time priority and nice value
//! (`/proc/PID/task/TID/stat`) against `thread_core.sched_*`.

use super::{proc_err, same, thread_file, Check, TaskImages};
use crate::proc::stat::read_stat_file;

/// `SCHED_RESET_ON_FORK`, or'ed into a policy; `stat` shows the policy
/// without it.
const SCHED_RESET_ON_FORK: u32 = 0x4000_0000;

pub fn check(t: &TaskImages) -> Check {
    for (tid, core) in &t.threads {
        let Some(tc) = core.thread_core.as_ref() else { continue };
        if tc.sched_policy.is_none() && tc.sched_nice.is_none() && tc.sched_prio.is_none() {
            continue;
        }
        let st = read_stat_file(t.pid, &thread_file(*tid, "stat")).map_err(proc_err)?;
        if let Some(policy) = tc.sched_policy {
            same(format_args!("thread {tid}: sched policy"), st.policy, policy & !SCHED_RESET_ON_FORK)?;
        }
        if let Some(prio) = tc.sched_prio {
            same(format_args!("thread {tid}: sched priority"), st.rt_priority, prio)?;
        }
        if let Some(nice) = tc.sched_nice {
            same(format_args!("thread {tid}: nice"), st.nice, nice)?;
        }
    }
    Ok(())
}
