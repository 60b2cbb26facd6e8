//! Resource limits (`/proc/PID/limits`) against `tc.rlimits`.

use super::{proc_err, Check, TaskImages};
use crate::proc::limits::{read_limits, RLIM_INFINITY};

/// `RLIMIT_*` names, by number.
const NAMES: [&str; 16] = [
    "CPU", "FSIZE", "DATA", "STACK", "CORE", "RSS", "NPROC", "NOFILE", "MEMLOCK", "AS", "LOCKS", "SIGPENDING", "MSGQUEUE",
    "NICE", "RTPRIO", "RTTIME",
];

pub fn check(t: &TaskImages) -> Check {
    let Some(image) = t.tc().and_then(|c| c.rlimits.as_ref()) else { return Ok(()) };
    if image.rlimits.is_empty() {
        return Ok(());
    }
    let live = read_limits(t.pid).map_err(proc_err)?;
    let show = |v: u64| if v == RLIM_INFINITY { "unlimited".to_string() } else { v.to_string() };
    for (i, (l, r)) in live.iter().zip(&image.rlimits).enumerate() {
        let want = (r.cur.unwrap_or_default(), r.max.unwrap_or_default());
        if *l != want {
            return Err(format!(
                "rlimit {} (soft hard) {} {}, image {} {}",
                NAMES[i],
                show(l.0),
                show(l.1),
                show(want.0),
                show(want.1)
            ));
        }
    }
    Ok(())
}
