//! Small `/proc/PID` files: auxv, personality, links (exe, cwd, root),
//! the thread list and POSIX timers.

use super::{hex, parse_err, read_bytes, read_text, ProcError, Result};
use std::path::PathBuf;

/// Reads `/proc/PID/auxv` as (type, value) pairs, up to and excluding `AT_NULL`.
pub fn read_auxv(pid: i32) -> Result<Vec<(u64, u64)>> {
    let bytes = read_bytes(&super::path(pid, "auxv"))?;
    let words: Vec<u64> = bytes.chunks_exact(8).map(|c| u64::from_ne_bytes(c.try_into().unwrap_or([0; 8]))).collect();
    Ok(words.chunks_exact(2).map(|p| (p[0], p[1])).take_while(|p| p.0 != 0).collect())
}

/// Reads `/proc/PID/personality` (hex).
pub fn read_personality(pid: i32) -> Result<u32> {
    let path = super::path(pid, "personality");
    let text = read_text(&path)?;
    hex(&text).map(|v| v as u32).ok_or_else(|| parse_err(&path, "a hex personality", &text))
}

/// Reads a symlink under `/proc/PID` (`exe`, `cwd`, `root`, `fd/N`, ...).
pub fn read_link(pid: i32, name: &str) -> Result<PathBuf> {
    let path = super::path(pid, name);
    std::fs::read_link(&path).map_err(|source| ProcError::Io { path, source })
}

/// Lists the thread ids in `/proc/PID/task`, sorted.
pub fn read_tasks(pid: i32) -> Result<Vec<i32>> {
    let path = super::path(pid, "task");
    let rd = std::fs::read_dir(&path).map_err(|source| ProcError::Io { path: path.clone(), source })?;
    let mut out = Vec::new();
    for e in rd {
        let e = e.map_err(|source| ProcError::Io { path: path.clone(), source })?;
        if let Some(tid) = e.file_name().to_str().and_then(|s| s.parse().ok()) {
            out.push(tid);
        }
    }
    out.sort_unstable();
    Ok(out)
}

/// One POSIX timer from `/proc/PID/timers`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProcTimer {
    /// Timer id as `timer_create` returned it.
    pub id: i32,
    /// Signal number delivered on expiry.
    pub signo: i32,
    /// `sigev_value` (as a pointer-sized integer).
    pub sigval: u64,
    /// Notification kind: `signal`, `thread` or `none`.
    pub notify: String,
    /// Thread id to notify (for `SIGEV_THREAD_ID`), else the process.
    pub notify_tid: i32,
    /// The notification goes to thread `notify_tid` (`tid.N`, not `pid.N`:
    /// `SIGEV_THREAD_ID`).
    pub to_thread: bool,
    /// Clock id.
    pub clock_id: i32,
}

impl ProcTimer {
    /// `sigev_notify` as `timer_create` took it: `SIGEV_SIGNAL` (0),
    /// `SIGEV_NONE` (1) or `SIGEV_THREAD` (2), with `SIGEV_THREAD_ID` (4)
    /// when a thread is notified.
    pub fn sigev_notify(&self) -> u32 {
        let kind = match self.notify.as_str() {
            "none" => 1,
            "thread" => 2,
            _ => 0,
        };
        kind | if self.to_thread { 4 } else { 0 }
    }
}

/// Parses timers text.
pub fn parse_timers(text: &str, path: &std::path::Path) -> Result<Vec<ProcTimer>> {
    let mut out: Vec<ProcTimer> = Vec::new();
    for line in text.lines() {
        let Some((k, v)) = line.split_once(':') else { continue };
        let v = v.trim();
        let bad = || parse_err(path, "a timer line", line);
        if k == "ID" {
            out.push(ProcTimer { id: v.parse().map_err(|_| bad())?, ..Default::default() });
            continue;
        }
        let t = out.last_mut().ok_or_else(bad)?;
        match k {
            "signal" => {
                let (s, val) = v.split_once('/').ok_or_else(bad)?;
                t.signo = s.parse().map_err(|_| bad())?;
                t.sigval = hex(val).ok_or_else(bad)?;
            }
            "notify" => {
                let (kind, who) = v.split_once('/').ok_or_else(bad)?;
                t.notify = kind.to_owned();
                let (whom, id) = who.split_once('.').ok_or_else(bad)?;
                t.notify_tid = id.parse().map_err(|_| bad())?;
                t.to_thread = whom == "tid";
            }
            "ClockID" => t.clock_id = v.parse().map_err(|_| bad())?,
            _ => {}
        }
    }
    Ok(out)
}

/// Reads `/proc/PID/timers`.
pub fn read_timers(pid: i32) -> Result<Vec<ProcTimer>> {
    let path = super::path(pid, "timers");
    parse_timers(&read_text(&path)?, &path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_auxv_has_pagesz() {
        let a = read_auxv(std::process::id() as i32).unwrap();
        assert!(a.contains(&(6, 4096)), "AT_PAGESZ missing: {a:?}");
    }

    #[test]
    fn own_tasks_and_links() {
        let me = std::process::id() as i32;
        assert!(read_tasks(me).unwrap().contains(&me));
        assert_eq!(read_link(me, "exe").unwrap(), std::env::current_exe().unwrap());
        assert_eq!(read_personality(me).unwrap() & 0xff, 0);
    }

    #[test]
    fn parses_timers() {
        let t = "ID: 0\nsignal: 14/00000000deadbeef\nnotify: signal/pid.77\nClockID: 1\nID: 3\nsignal: 34/0000000000000000\nnotify: thread/tid.78\nClockID: 0\n";
        let v = parse_timers(t, std::path::Path::new("x")).unwrap();
        assert_eq!(v.len(), 2);
        assert_eq!(v[0], ProcTimer { id: 0, signo: 14, sigval: 0xdeadbeef, notify: "signal".into(), notify_tid: 77, to_thread: false, clock_id: 1 });
        assert_eq!(v[1].notify, "thread");
        assert_eq!(v[1].notify_tid, 78);
        assert_eq!((v[0].sigev_notify(), v[1].sigev_notify()), (0, 2 | 4));
    }
}
