//! POSIX timers (`/proc/PID/timers`: id, signal, clock, how they notify)
//! against `tc.timers.posix`.

use super::{proc_err, Check, TaskImages};

/// How `/proc/PID/timers` names a `SIGEV_*`: the kind, to the process
/// (`pid`) or, with `SIGEV_THREAD_ID`, to a thread (`tid`).
fn notify_name(n: u32) -> String {
    let kind = match n & !4 {
        0 => "signal",
        1 => "none",
        2 => "thread",
        _ => "?",
    };
    format!("{kind}/{}", if n & 4 != 0 { "tid" } else { "pid" })
}

pub fn check(t: &TaskImages) -> Check {
    let Some(timers) = t.tc().and_then(|c| c.timers.as_ref()) else { return Ok(()) };
    let mut want: Vec<String> = timers
        .posix
        .iter()
        .map(|p| {
            let n = p.it_sigev_notify.unwrap_or_default();
            format!("{} signal {} clock {} {}", p.it_id.unwrap_or_default(), p.si_signo.unwrap_or_default(), p.clock_id.unwrap_or_default(), notify_name(n))
        })
        .collect();
    let mut live: Vec<String> = crate::proc::misc::read_timers(t.pid)
        .map_err(proc_err)?
        .iter()
        .map(|p| format!("{} signal {} clock {} {}", p.id, p.signo, p.clock_id, notify_name(p.sigev_notify())))
        .collect();
    want.sort();
    live.sort();
    if live != want {
        let show = |v: &[String]| if v.is_empty() { "none".to_string() } else { v.join(", ") };
        return Err(format!("POSIX timers {}, image {}", show(&live), show(&want)));
    }
    Ok(())
}
