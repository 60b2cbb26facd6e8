//! `/proc/PID/stat`: scheduling state, ids and the mm layout fields.

use super::{parse_err, read_text, Result};
use std::path::Path;

/// The fields of `/proc/PID/stat` a dump needs (names as in proc(5)).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProcStat {
    /// Pid.
    pub pid: i32,
    /// Command name (between the parentheses).
    pub comm: String,
    /// State letter.
    pub state: char,
    /// Parent pid.
    pub ppid: i32,
    /// Process group.
    pub pgid: i32,
    /// Session.
    pub sid: i32,
    /// Controlling terminal device number.
    pub tty_nr: u32,
    /// Foreground process group of the controlling terminal (-1: none).
    pub tpgid: i32,
    /// Kernel task flags (PF_*).
    pub flags: u32,
    /// Nice value.
    pub nice: i32,
    /// Number of threads.
    pub num_threads: u32,
    /// Start time in clock ticks after boot.
    pub start_time: u64,
    /// Start of the text segment.
    pub start_code: u64,
    /// End of the text segment.
    pub end_code: u64,
    /// Start (bottom) of the stack.
    pub start_stack: u64,
    /// Signal sent to the parent on exit.
    pub exit_signal: i32,
    /// Start of the data segment.
    pub start_data: u64,
    /// End of the data segment.
    pub end_data: u64,
    /// Start of the heap (`brk` area).
    pub start_brk: u64,
    /// Start of argv.
    pub arg_start: u64,
    /// End of argv.
    pub arg_end: u64,
    /// Start of the environment.
    pub env_start: u64,
    /// End of the environment.
    pub env_end: u64,
    /// Exit code (for zombies).
    pub exit_code: i32,
    /// Real-time priority (`sched_param.sched_priority`; 0 for normal
    /// policies).
    pub rt_priority: u32,
    /// Scheduling policy (`SCHED_*`, without `SCHED_RESET_ON_FORK`).
    pub policy: u32,
}

/// Kernel task flag: this is a kernel thread.
pub const PF_KTHREAD: u32 = 0x0020_0000;

/// Parses stat text.
pub fn parse_stat(text: &str, path: &Path) -> Result<ProcStat> {
    let bad = || parse_err(path, "a stat line", text);
    let open = text.find('(').ok_or_else(bad)?;
    let close = text.rfind(')').ok_or_else(bad)?;
    let pid = text[..open].trim().parse().map_err(|_| bad())?;
    let comm = text[open + 1..close].to_owned();
    // Fields from the state on; index 0 here is field 3 of proc(5).
    let f: Vec<&str> = text[close + 1..].split_whitespace().collect();
    if f.len() < 50 {
        return Err(bad());
    }
    let n = |i: usize| -> Result<i64> { f[i - 3].parse::<i64>().map_err(|_| bad()) };
    let u = |i: usize| -> Result<u64> { f[i - 3].parse::<u64>().map_err(|_| bad()) };
    Ok(ProcStat {
        pid,
        comm,
        state: f[0].chars().next().ok_or_else(bad)?,
        ppid: n(4)? as i32,
        pgid: n(5)? as i32,
        sid: n(6)? as i32,
        tty_nr: n(7)? as u32,
        tpgid: n(8)? as i32,
        flags: u(9)? as u32,
        nice: n(19)? as i32,
        num_threads: n(20)? as u32,
        start_time: u(22)?,
        start_code: u(26)?,
        end_code: u(27)?,
        start_stack: u(28)?,
        exit_signal: n(38)? as i32,
        start_data: u(45)?,
        end_data: u(46)?,
        start_brk: u(47)?,
        arg_start: u(48)?,
        arg_end: u(49)?,
        env_start: u(50)?,
        env_end: u(51)?,
        exit_code: n(52)? as i32,
        rt_priority: u(40)? as u32,
        policy: u(41)? as u32,
    })
}

/// Reads `/proc/PID/stat` (or another stat file, e.g. `task/TID/stat`).
pub fn read_stat_file(pid: i32, name: &str) -> Result<ProcStat> {
    let path = super::path(pid, name);
    parse_stat(&read_text(&path)?, &path)
}

/// Reads `/proc/PID/stat`.
pub fn read_stat(pid: i32) -> Result<ProcStat> {
    read_stat_file(pid, "stat")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_stat() {
        let me = std::process::id() as i32;
        let s = read_stat(me).unwrap();
        assert_eq!(s.pid, me);
        assert_eq!(s.ppid, rustix::process::getppid().map_or(0, |p| p.as_raw_nonzero().get()));
        assert!(s.start_code < s.end_code);
        assert!(s.arg_start < s.arg_end && s.env_start < s.env_end);
        assert_eq!(s.flags & PF_KTHREAD, 0);
    }

    #[test]
    fn comm_with_parens() {
        let mut t = String::from("42 (a) b) S");
        for i in 4..=52 {
            t.push_str(&format!(" {i}"));
        }
        let s = parse_stat(&t, Path::new("x")).unwrap();
        assert_eq!(s.comm, "a) b");
        assert_eq!(s.ppid, 4);
        assert_eq!(s.env_end, 51);
        assert_eq!(s.exit_code, 52);
        assert_eq!((s.rt_priority, s.policy), (40, 41));
    }
}
