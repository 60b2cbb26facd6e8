//! `/proc/PID/status`: credentials, capabilities, signal sets and counts.

use super::{hex, parse_err, read_text, Result};
use std::path::Path;

/// The fields of `/proc/PID/status` that a dump needs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProcStatus {
    /// `Name`: the command name.
    pub name: String,
    /// `Umask` (absent on old kernels).
    pub umask: Option<u32>,
    /// First letter of `State` (R, S, D, T, t, Z, X, ...).
    pub state: char,
    /// `Tgid`.
    pub tgid: i32,
    /// `Pid`.
    pub pid: i32,
    /// `PPid`.
    pub ppid: i32,
    /// `TracerPid` (0 when not traced).
    pub tracer_pid: i32,
    /// `Uid`: real, effective, saved, filesystem.
    pub uid: [u32; 4],
    /// `Gid`: real, effective, saved, filesystem.
    pub gid: [u32; 4],
    /// `Groups`: supplementary groups.
    pub groups: Vec<u32>,
    /// `NSpid`: the pid in each nested pid namespace, outermost first.
    pub ns_pid: Vec<i32>,
    /// `Kthread`: 1 for kernel threads (absent on old kernels).
    pub kthread: Option<bool>,
    /// `Threads`.
    pub threads: u32,
    /// `SigQ`: queued signals / limit.
    pub sigq: (u64, u64),
    /// `SigPnd`: pending for this thread.
    pub sig_pnd: u64,
    /// `ShdPnd`: pending for the whole process.
    pub shd_pnd: u64,
    /// `SigBlk`: blocked mask.
    pub sig_blk: u64,
    /// `SigIgn`: ignored signals.
    pub sig_ign: u64,
    /// `SigCgt`: caught signals.
    pub sig_cgt: u64,
    /// `CapInh`.
    pub cap_inh: u64,
    /// `CapPrm`.
    pub cap_prm: u64,
    /// `CapEff`.
    pub cap_eff: u64,
    /// `CapBnd`.
    pub cap_bnd: u64,
    /// `CapAmb`.
    pub cap_amb: u64,
    /// `NoNewPrivs`.
    pub no_new_privs: bool,
    /// `Seccomp` mode (0 none, 1 strict, 2 filter).
    pub seccomp: u32,
    /// `Seccomp_filters`: filters attached to the thread (absent on old
    /// kernels).
    pub seccomp_filters: Option<u32>,
    /// `THP_enabled`: false after `PR_SET_THP_DISABLE` (absent on old
    /// kernels).
    pub thp_enabled: Option<bool>,
    /// `VmPin`: memory whose pages something holds pinned (io_uring
    /// registered buffers, RDMA memory regions), in kB.
    pub vm_pin_kb: u64,
}

fn ids<T: std::str::FromStr>(v: &str) -> Option<Vec<T>> {
    v.split_whitespace().map(|x| x.parse().ok()).collect()
}

fn quad(v: &str) -> Option<[u32; 4]> {
    ids::<u32>(v)?.try_into().ok()
}

/// Parses status text.
pub fn parse_status(text: &str, path: &Path) -> Result<ProcStatus> {
    let mut s = ProcStatus::default();
    for line in text.lines() {
        let Some((key, val)) = line.split_once(':') else { continue };
        let val = val.trim();
        let bad = || parse_err(path, "a status value", line);
        let num = |v: &str| v.parse::<i64>().map_err(|_| bad());
        match key {
            "Name" => s.name = val.to_owned(),
            "Umask" => s.umask = Some(u32::from_str_radix(val, 8).map_err(|_| bad())?),
            "State" => s.state = val.chars().next().ok_or_else(bad)?,
            "Tgid" => s.tgid = num(val)? as i32,
            "Pid" => s.pid = num(val)? as i32,
            "PPid" => s.ppid = num(val)? as i32,
            "TracerPid" => s.tracer_pid = num(val)? as i32,
            "Uid" => s.uid = quad(val).ok_or_else(bad)?,
            "Gid" => s.gid = quad(val).ok_or_else(bad)?,
            "Groups" => s.groups = ids(val).ok_or_else(bad)?,
            "NSpid" => s.ns_pid = ids(val).ok_or_else(bad)?,
            "Kthread" => s.kthread = Some(num(val)? != 0),
            "Threads" => s.threads = num(val)? as u32,
            "SigQ" => {
                let (a, b) = val.split_once('/').ok_or_else(bad)?;
                s.sigq = (num(a)? as u64, num(b)? as u64);
            }
            "SigPnd" => s.sig_pnd = hex(val).ok_or_else(bad)?,
            "ShdPnd" => s.shd_pnd = hex(val).ok_or_else(bad)?,
            "SigBlk" => s.sig_blk = hex(val).ok_or_else(bad)?,
            "SigIgn" => s.sig_ign = hex(val).ok_or_else(bad)?,
            "SigCgt" => s.sig_cgt = hex(val).ok_or_else(bad)?,
            "CapInh" => s.cap_inh = hex(val).ok_or_else(bad)?,
            "CapPrm" => s.cap_prm = hex(val).ok_or_else(bad)?,
            "CapEff" => s.cap_eff = hex(val).ok_or_else(bad)?,
            "CapBnd" => s.cap_bnd = hex(val).ok_or_else(bad)?,
            "CapAmb" => s.cap_amb = hex(val).ok_or_else(bad)?,
            "NoNewPrivs" => s.no_new_privs = num(val)? != 0,
            "Seccomp" => s.seccomp = num(val)? as u32,
            "Seccomp_filters" => s.seccomp_filters = Some(num(val)? as u32),
            "THP_enabled" => s.thp_enabled = Some(num(val)? != 0),
            "VmPin" => s.vm_pin_kb = num(val.strip_suffix("kB").ok_or_else(bad)?.trim())? as u64,
            _ => {}
        }
    }
    if s.pid == 0 {
        return Err(parse_err(path, "a Pid line", ""));
    }
    Ok(s)
}

/// Reads `/proc/PID/status` (or `/proc/PID/task/TID/status` with `name`).
pub fn read_status_file(pid: i32, name: &str) -> Result<ProcStatus> {
    let path = super::path(pid, name);
    parse_status(&read_text(&path)?, &path)
}

/// Reads `/proc/PID/status`.
pub fn read_status(pid: i32) -> Result<ProcStatus> {
    read_status_file(pid, "status")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_status() {
        let me = std::process::id() as i32;
        let s = read_status(me).unwrap();
        assert_eq!(s.pid, me);
        assert_eq!(s.tgid, me);
        assert_eq!(s.uid[0], rustix::process::getuid().as_raw());
        assert_eq!(s.kthread, Some(false));
        assert!(s.umask.is_some());
        assert!(s.threads >= 1);
    }

    #[test]
    fn parses_sets() {
        let t = "Name:\ta b\nPid:\t5\nSigBlk:\t0000000000010002\nGroups:\t1 2 3 \nSigQ:\t1/100\nCapEff:\t000001ffffffffff\n";
        let s = parse_status(t, Path::new("x")).unwrap();
        assert_eq!(s.name, "a b");
        assert_eq!(s.sig_blk, 0x10002);
        assert_eq!(s.groups, vec![1, 2, 3]);
        assert_eq!(s.sigq, (1, 100));
        assert_eq!(s.cap_eff, 0x1ff_ffff_ffff);
    }

    /// Every field a dump uses, each with a value no default has (a
    /// process of another user: all four uids and gids differ), so that a
    /// parser that drops one is caught (mutation testing found `Uid`,
    /// `State`, `PPid` and `TracerPid` unchecked: a dump of a non-root
    /// process would have recorded root).
    #[test]
    fn parses_every_field_of_another_users_process() {
        let t = "Name:\tworker\nUmask:\t0027\nState:\tT (stopped)\nTgid:\t41\nPid:\t42\nPPid:\t7\n\
                 TracerPid:\t9\nUid:\t65534\t1001\t1002\t1003\nGid:\t65533\t2001\t2002\t2003\n\
                 Groups:\t27 100\nNSpid:\t42\t3\nKthread:\t0\nThreads:\t2\nSigQ:\t3/96363\n\
                 SigPnd:\t0000000000000001\nShdPnd:\t0000000000000002\nSigBlk:\t0000000000000004\n\
                 SigIgn:\t0000000000000008\nSigCgt:\t0000000000000010\nCapInh:\t0000000000000020\n\
                 CapPrm:\t0000000000000040\nCapEff:\t0000000000000080\nCapBnd:\t0000000000000100\n\
                 CapAmb:\t0000000000000200\nNoNewPrivs:\t1\nSeccomp:\t2\nSeccomp_filters:\t3\nTHP_enabled:\t0\n\
                 VmPin:\t      12 kB\n";
        let s = parse_status(t, Path::new("x")).unwrap();
        let want = ProcStatus {
            name: "worker".into(),
            umask: Some(0o27),
            state: 'T',
            tgid: 41,
            pid: 42,
            ppid: 7,
            tracer_pid: 9,
            uid: [65534, 1001, 1002, 1003],
            gid: [65533, 2001, 2002, 2003],
            groups: vec![27, 100],
            ns_pid: vec![42, 3],
            kthread: Some(false),
            threads: 2,
            sigq: (3, 96363),
            sig_pnd: 1,
            shd_pnd: 2,
            sig_blk: 4,
            sig_ign: 8,
            sig_cgt: 0x10,
            cap_inh: 0x20,
            cap_prm: 0x40,
            cap_eff: 0x80,
            cap_bnd: 0x100,
            cap_amb: 0x200,
            no_new_privs: true,
            seccomp: 2,
            seccomp_filters: Some(3),
            thp_enabled: Some(false),
            vm_pin_kb: 12,
        };
        assert_eq!(s, want);
        // Three ids where four belong is an error, not a guess.
        assert!(parse_status("Pid:\t1\nUid:\t1 2 3\n", Path::new("x")).is_err());
    }
}
