//! The kind-specific lines of `/proc/PID/fdinfo/N` for event and
//! notification descriptors (the common `pos`/`flags`/`mnt_id`/`ino` lines
//! are [`super::fds`]'s).
//!
//! What the kernel prints (fs/eventpoll.c, fs/timerfd.c, fs/signalfd.c,
//! fs/notify/fdinfo.c, kernel/pid.c), one line each:
//!
//! ```text
//! tfd:        3 events: 80000019 data: 1122334455667788  pos:0 ino:e4e7 sdev:f      epoll target
//! clockid: 1 / ticks: 0 / settime flags: 03 / it_value: (4, 988668199) / it_interval: (1, 500)
//! sigmask:	0000000800000200                                                          signalfd
//! inotify wd:2 ino:2e1 sdev:fe00000 mask:4000fff ignored_mask:0 fhandle-bytes:8 fhandle-type:1 f_handle:e102000000000000
//! fanotify flags:0 event-flags:8000
//! fanotify mnt_id:1b mflags:0 mask:20 ignored_mask:0
//! fanotify ino:3c4a7 sdev:fe00000 mflags:0 mask:2 ignored_mask:0 fhandle-bytes:8 fhandle-type:1 f_handle:a7c4030000000000
//! Pid:	25611 / NSpid:	25611                                                         pidfd
//! ```
//!
//! Numbers are hexadecimal except `tfd`, `pos`, `clockid`, `ticks`, the
//! timer values and the pids; `settime flags` is octal. `sdev` is the
//! kernel's internal device number (`major << 20 | minor`).
//! The parsers take the text already read, so a descriptor's fdinfo is read
//! once.

use super::{parse_err, Result};
use std::path::Path;

/// `key:value` pairs of one line: `key: value` (value in the next word) and
/// `key:value` (one word) both count. Words without a colon are skipped.
fn pairs(line: &str) -> Vec<(&str, &str)> {
    let mut out = Vec::new();
    let mut words = line.split_whitespace();
    while let Some(w) = words.next() {
        match w.split_once(':') {
            Some((k, "")) => {
                if let Some(v) = words.next() {
                    out.push((k, v));
                }
            }
            Some((k, v)) => out.push((k, v)),
            None => {}
        }
    }
    out
}

/// The value of `key` in `pairs`.
fn field<'a>(pairs: &[(&str, &'a str)], key: &str) -> Option<&'a str> {
    pairs.iter().find(|p| p.0 == key).map(|p| p.1)
}

/// Hexadecimal `key` of a line, or a parse error naming `what`.
fn hex_field(pairs: &[(&str, &str)], key: &str, path: &Path, what: &'static str, line: &str) -> Result<u64> {
    field(pairs, key).and_then(super::hex).ok_or_else(|| parse_err(path, what, line))
}

/// One target of an epoll set (`tfd:` line).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpollTarget {
    /// The fd number the target was registered with (it may since have been
    /// closed or now name another file).
    pub tfd: i32,
    /// The registered `EPOLL*` event bits, flags (ET, ONESHOT, ...) included.
    pub events: u32,
    /// The user data returned with events.
    pub data: u64,
    /// The target file's position.
    pub pos: u64,
    /// The target file's inode number.
    pub ino: u64,
    /// The target file's device (kernel encoding).
    pub sdev: u32,
}

/// Parses the `tfd:` lines of an epoll descriptor's fdinfo, in the order the
/// kernel lists them.
pub fn parse_epoll(text: &str, path: &Path) -> Result<Vec<EpollTarget>> {
    let mut out = Vec::new();
    for line in text.lines().filter(|l| l.starts_with("tfd:")) {
        let p = pairs(line);
        let what = "an epoll target (tfd: line)";
        let dec = |k: &str| field(&p, k).and_then(|v| v.parse::<i64>().ok()).ok_or_else(|| parse_err(path, what, line));
        out.push(EpollTarget {
            tfd: i32::try_from(dec("tfd")?).map_err(|_| parse_err(path, what, line))?,
            events: hex_field(&p, "events", path, what, line)? as u32,
            data: hex_field(&p, "data", path, what, line)?,
            pos: dec("pos")? as u64,
            ino: hex_field(&p, "ino", path, what, line)?,
            sdev: hex_field(&p, "sdev", path, what, line)? as u32,
        });
    }
    Ok(out)
}

/// A timerfd's state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TimerfdState {
    /// `CLOCK_*` id.
    pub clockid: i32,
    /// Expirations not yet read.
    pub ticks: u64,
    /// `TFD_TIMER_ABSTIME` / `TFD_TIMER_CANCEL_ON_SET` as last set.
    pub settime_flags: u32,
    /// Time to the next expiry (sec, nsec); zero when disarmed.
    pub value: (u64, u64),
    /// Period (sec, nsec); zero for a one-shot timer.
    pub interval: (u64, u64),
}

/// `(SEC, NSEC)` as the kernel prints timerfd values.
fn timespec(v: &str) -> Option<(u64, u64)> {
    let (s, ns) = v.trim().strip_prefix('(')?.strip_suffix(')')?.split_once(',')?;
    Some((s.trim().parse().ok()?, ns.trim().parse().ok()?))
}

/// Parses a timerfd's fdinfo.
pub fn parse_timerfd(text: &str, path: &Path) -> Result<TimerfdState> {
    let mut st = TimerfdState::default();
    let mut seen = 0;
    for line in text.lines() {
        let Some((k, v)) = line.split_once(':') else { continue };
        let bad = || parse_err(path, "a timerfd value", line);
        match k.trim() {
            "clockid" => st.clockid = v.trim().parse().map_err(|_| bad())?,
            "ticks" => st.ticks = v.trim().parse().map_err(|_| bad())?,
            "settime flags" => st.settime_flags = u32::from_str_radix(v.trim(), 8).map_err(|_| bad())?,
            "it_value" => st.value = timespec(v).ok_or_else(bad)?,
            "it_interval" => st.interval = timespec(v).ok_or_else(bad)?,
            _ => continue,
        }
        seen += 1;
    }
    if seen < 5 {
        return Err(parse_err(path, "the five timerfd lines", text));
    }
    Ok(st)
}

/// Parses a signalfd's `sigmask:` line: bit `n - 1` stands for signal `n`.
pub fn parse_signalfd(text: &str, path: &Path) -> Result<u64> {
    let line = text.lines().find(|l| l.starts_with("sigmask:")).ok_or_else(|| parse_err(path, "a sigmask line", text))?;
    super::hex(&line["sigmask:".len()..]).ok_or_else(|| parse_err(path, "a signalfd mask", line))
}

/// A file handle as `name_to_handle_at` returns it (and fdinfo prints it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileHandle {
    /// `handle_type`.
    pub handle_type: i32,
    /// `f_handle` bytes (`handle_bytes` of them).
    pub bytes: Vec<u8>,
}

/// Reads the `fhandle-bytes`, `fhandle-type` and `f_handle` fields.
fn file_handle(p: &[(&str, &str)], path: &Path, what: &'static str, line: &str) -> Result<FileHandle> {
    let len = hex_field(p, "fhandle-bytes", path, what, line)? as usize;
    let handle_type = hex_field(p, "fhandle-type", path, what, line)? as i32;
    let raw = field(p, "f_handle").ok_or_else(|| parse_err(path, what, line))?;
    if raw.len() != 2 * len || !raw.is_ascii() {
        return Err(parse_err(path, what, line));
    }
    let bytes = (0..len)
        .map(|i| u8::from_str_radix(&raw[2 * i..2 * i + 2], 16))
        .collect::<std::result::Result<Vec<u8>, _>>()
        .map_err(|_| parse_err(path, what, line))?;
    Ok(FileHandle { handle_type, bytes })
}

/// One inotify watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InotifyWatch {
    /// Watch descriptor.
    pub wd: i32,
    /// Watched inode.
    pub ino: u64,
    /// Its device (kernel encoding).
    pub sdev: u32,
    /// `IN_*` event mask, with `IN_ONESHOT`/`IN_EXCL_UNLINK` as set.
    pub mask: u32,
    /// Always 0 for inotify.
    pub ignored_mask: u32,
    /// A handle to the watched inode.
    pub handle: FileHandle,
}

/// Parses the `inotify wd:` lines.
pub fn parse_inotify(text: &str, path: &Path) -> Result<Vec<InotifyWatch>> {
    let what = "an inotify watch line";
    text.lines()
        .filter(|l| l.starts_with("inotify "))
        .map(|line| {
            let p = pairs(line);
            Ok(InotifyWatch {
                wd: hex_field(&p, "wd", path, what, line)? as i32,
                ino: hex_field(&p, "ino", path, what, line)?,
                sdev: hex_field(&p, "sdev", path, what, line)? as u32,
                mask: hex_field(&p, "mask", path, what, line)? as u32,
                ignored_mask: hex_field(&p, "ignored_mask", path, what, line)? as u32,
                handle: file_handle(&p, path, what, line)?,
            })
        })
        .collect()
}

/// What a fanotify mark is attached to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FanotifyTarget {
    /// An inode, with a handle to it.
    Inode {
        /// Inode number.
        ino: u64,
        /// Its device (kernel encoding).
        sdev: u32,
        /// A handle to it.
        handle: FileHandle,
    },
    /// A mount (`FAN_MARK_MOUNT`).
    Mount {
        /// Mount id.
        mnt_id: i32,
    },
    /// A whole file system (`FAN_MARK_FILESYSTEM`).
    Filesystem {
        /// Its device (kernel encoding).
        sdev: u32,
    },
}

/// One fanotify mark.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FanotifyMark {
    /// Inode, mount or file system.
    pub target: FanotifyTarget,
    /// `FAN_MARK_*` flags kept with the mark.
    pub mflags: u32,
    /// Event mask.
    pub mask: u32,
    /// Ignored-event mask.
    pub ignored_mask: u32,
}

/// A fanotify group: `fanotify_init` flags and its marks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FanotifyState {
    /// `fanotify_init` flags (`FAN_CLASS_*`, ...).
    pub flags: u32,
    /// `fanotify_init` event-file flags (`O_*`).
    pub event_flags: u32,
    /// Marks.
    pub marks: Vec<FanotifyMark>,
}

/// Parses the `fanotify` lines.
pub fn parse_fanotify(text: &str, path: &Path) -> Result<FanotifyState> {
    let what = "a fanotify line";
    let mut st = FanotifyState::default();
    let mut head = false;
    for line in text.lines().filter(|l| l.starts_with("fanotify ")) {
        let p = pairs(line);
        if field(&p, "flags").is_some() {
            st.flags = hex_field(&p, "flags", path, what, line)? as u32;
            st.event_flags = hex_field(&p, "event-flags", path, what, line)? as u32;
            head = true;
            continue;
        }
        let target = if field(&p, "ino").is_some() {
            FanotifyTarget::Inode {
                ino: hex_field(&p, "ino", path, what, line)?,
                sdev: hex_field(&p, "sdev", path, what, line)? as u32,
                handle: file_handle(&p, path, what, line)?,
            }
        } else if field(&p, "mnt_id").is_some() {
            FanotifyTarget::Mount { mnt_id: hex_field(&p, "mnt_id", path, what, line)? as i32 }
        } else {
            FanotifyTarget::Filesystem { sdev: hex_field(&p, "sdev", path, what, line)? as u32 }
        };
        st.marks.push(FanotifyMark {
            target,
            mflags: hex_field(&p, "mflags", path, what, line)? as u32,
            mask: hex_field(&p, "mask", path, what, line)? as u32,
            ignored_mask: hex_field(&p, "ignored_mask", path, what, line)? as u32,
        });
    }
    if !head {
        return Err(parse_err(path, "the fanotify flags line", text));
    }
    Ok(st)
}

/// The process a pidfd refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PidfdTarget {
    /// Its pid as seen from the reader's pid namespace; `None` once it has
    /// been reaped (the kernel prints -1), or when it lives in no namespace
    /// the reader sees (0).
    pub pid: Option<i32>,
    /// Its pid in its own innermost namespace (last `NSpid:` number).
    pub nspid: Option<i32>,
}

/// Parses a pidfd's `Pid:` and `NSpid:` lines.
pub fn parse_pidfd(text: &str, path: &Path) -> Result<PidfdTarget> {
    let num = |s: &str| s.trim().parse::<i32>().map_err(|_| parse_err(path, "a pidfd pid", s));
    let mut pid = None;
    let mut nspid = None;
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("Pid:") {
            pid = Some(num(v)?);
        } else if let Some(v) = line.strip_prefix("NSpid:") {
            nspid = v.split_whitespace().last().map(num).transpose()?;
        }
    }
    let pid = pid.ok_or_else(|| parse_err(path, "a Pid: line", text))?;
    let live = |p: i32| (p > 0).then_some(p);
    Ok(PidfdTarget { pid: live(pid), nspid: nspid.and_then(live) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p() -> &'static Path {
        Path::new("/proc/1/fdinfo/3")
    }

    #[test]
    fn epoll_targets() {
        let text = "pos:\t0\nflags:\t02000002\nmnt_id:\t17\nino:\t1039\n\
tfd:        3 events: 80000019 data: 1122334455667788  pos:0 ino:e4e7 sdev:f\n\
tfd:       12 events:       19 data:                7  pos:42 ino:40f sdev:10\n";
        let t = parse_epoll(text, p()).unwrap();
        assert_eq!(
            t,
            vec![
                EpollTarget { tfd: 3, events: 0x8000_0019, data: 0x1122_3344_5566_7788, pos: 0, ino: 0xe4e7, sdev: 0xf },
                EpollTarget { tfd: 12, events: 0x19, data: 7, pos: 42, ino: 0x40f, sdev: 0x10 },
            ]
        );
        assert!(parse_epoll("pos:\t0\n", p()).unwrap().is_empty());
        assert!(parse_epoll("tfd: 3 events: zz data: 1 pos:0 ino:1 sdev:1\n", p()).is_err());
        assert!(parse_epoll("tfd: 3 events: 1 data: 1 pos:0 ino:1\n", p()).is_err(), "sdev missing");
    }

    #[test]
    fn timerfd_state() {
        let text = "pos:\t0\nflags:\t02\nmnt_id:\t17\nino:\t1039\nclockid: 0\nticks: 5\nsettime flags: 03\n\
it_value: (99, 347717726)\nit_interval: (1, 500)\n";
        let t = parse_timerfd(text, p()).unwrap();
        assert_eq!(t, TimerfdState { clockid: 0, ticks: 5, settime_flags: 3, value: (99, 347_717_726), interval: (1, 500) });
        assert!(parse_timerfd("clockid: 0\nticks: 5\n", p()).is_err(), "lines missing");
        assert!(parse_timerfd(&text.replace("(1, 500)", "(1 500)"), p()).is_err());
        assert!(parse_timerfd(&text.replace("03", "9"), p()).is_err(), "octal");
    }

    #[test]
    fn signalfd_mask() {
        assert_eq!(parse_signalfd("pos:\t0\nsigmask:\t0000000800000200\n", p()).unwrap(), 0x8_0000_0200);
        assert!(parse_signalfd("pos:\t0\n", p()).is_err());
    }

    #[test]
    fn inotify_watches() {
        let text = "pos:\t0\nflags:\t00\n\
inotify wd:2 ino:2e1 sdev:fe00000 mask:4000fff ignored_mask:0 fhandle-bytes:8 fhandle-type:1 f_handle:e102000000000000\n\
inotify wd:1 ino:3c4a7 sdev:fe00000 mask:80000102 ignored_mask:0 fhandle-bytes:8 fhandle-type:1 f_handle:a7c4030000000000\n";
        let w = parse_inotify(text, p()).unwrap();
        assert_eq!(w.len(), 2);
        assert_eq!(w[0].wd, 2);
        assert_eq!(w[0].ino, 0x2e1);
        assert_eq!(w[0].sdev, 0xfe0_0000);
        assert_eq!(w[0].mask, 0x400_0fff);
        assert_eq!(w[0].handle, FileHandle { handle_type: 1, bytes: vec![0xe1, 2, 0, 0, 0, 0, 0, 0] });
        assert_eq!(w[1].mask, 0x8000_0102);
        assert!(parse_inotify(&text.replace("fhandle-bytes:8", "fhandle-bytes:9"), p()).is_err(), "short handle");
    }

    #[test]
    fn fanotify_group() {
        let text = "pos:\t0\nfanotify flags:0 event-flags:8000\n\
fanotify mnt_id:1b mflags:0 mask:20 ignored_mask:0\n\
fanotify ino:3c4a7 sdev:fe00000 mflags:0 mask:2 ignored_mask:0 fhandle-bytes:8 fhandle-type:1 f_handle:a7c4030000000000\n\
fanotify sdev:fe00000 mflags:0 mask:2 ignored_mask:0\n";
        let f = parse_fanotify(text, p()).unwrap();
        assert_eq!((f.flags, f.event_flags), (0, 0x8000));
        assert_eq!(f.marks.len(), 3);
        assert_eq!(f.marks[0].target, FanotifyTarget::Mount { mnt_id: 0x1b });
        assert_eq!(f.marks[0].mask, 0x20);
        assert!(matches!(f.marks[1].target, FanotifyTarget::Inode { ino: 0x3c4a7, .. }));
        assert_eq!(f.marks[2].target, FanotifyTarget::Filesystem { sdev: 0xfe0_0000 });
        assert!(parse_fanotify("pos:\t0\n", p()).is_err());
    }

    #[test]
    fn pidfd_target() {
        let t = parse_pidfd("pos:\t0\nPid:\t25611\nNSpid:\t25611\t3\n", p()).unwrap();
        assert_eq!(t, PidfdTarget { pid: Some(25611), nspid: Some(3) });
        let gone = parse_pidfd("pos:\t0\nPid:\t-1\nNSpid:\t-1\n", p()).unwrap();
        assert_eq!(gone, PidfdTarget { pid: None, nspid: None });
        assert!(parse_pidfd("pos:\t0\n", p()).is_err());
    }

    /// The kernel's own output for descriptors of this process parses.
    #[test]
    fn own_descriptors() {
        use rustix::event::{epoll, eventfd, EventfdFlags};
        use std::os::fd::AsRawFd;
        let me = std::process::id() as i32;
        let own = |fd: i32| std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).unwrap();
        let ep = epoll::create(epoll::CreateFlags::CLOEXEC).unwrap();
        let ev = eventfd(0, EventfdFlags::CLOEXEC).unwrap();
        epoll::add(&ep, &ev, epoll::EventData::new_u64(0xfeed), epoll::EventFlags::IN | epoll::EventFlags::ET).unwrap();
        let t = parse_epoll(&own(ep.as_raw_fd()), p()).unwrap();
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].tfd, ev.as_raw_fd());
        assert_eq!(t[0].data, 0xfeed);
        assert_eq!(t[0].events & (libc::EPOLLIN | libc::EPOLLET) as u32, (libc::EPOLLIN | libc::EPOLLET) as u32);
        let pidfd = rustix::process::pidfd_open(rustix::process::getpid(), rustix::process::PidfdFlags::empty()).unwrap();
        let t = parse_pidfd(&own(pidfd.as_raw_fd()), p()).unwrap();
        assert_eq!(t.pid, Some(me));
    }
}
