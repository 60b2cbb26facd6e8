//! timerfds (`FD_TYPES__TIMERFD`, `timerfd_entry` in `files.img`, as CRIU
//! writes them): clock, time to the next expiry, period, the flags it was
//! last set with (`TFD_TIMER_ABSTIME`, `TFD_TIMER_CANCEL_ON_SET`) and the
//! expirations not read yet.
//!
//! Dump: the kernel counts the periods of an expired, unread periodic timer
//! only when it is read or queried (its fdinfo says one tick and no time
//! left meanwhile), so criu-rs first takes the description with
//! `pidfd_getfd` and calls `timerfd_gettime` on it: that brings the count
//! and the next expiry up to date without consuming anything, as any query
//! by the program would. Then fdinfo is read.
//!
//! Restore: the timer is created with the other descriptions and armed by
//! the task just before it resumes ([`TaskStage::BeforeResume`]), so it
//! fires as long after the restore as it had left at the dump, as with
//! CRIU: the time the program is not running does not count. An absolute
//! timer is set to that remaining time from the clock's current value.
//! Expirations not read are put back with `TFD_IOC_SET_TICKS`. An image of
//! an expired unread periodic timer written without the query (CRIU's: no
//! time left, a period, ticks) is armed one period ahead, not disarmed.

use super::fdtable::set_status_flags;
use super::{CollectCtx, FdKind, FdProbe, FileDesc, FileDumpError, FilesSink, InTaskCtx, LoadCtx, OpenCtx, Opened, TaskStage};
use crate::images::pb::{self, FdTypes};
use crate::images::ImageError;
use crate::proc::kind_fdinfo::{parse_timerfd, TimerfdState};
use crate::restore::error::{Result, SysContext};
use rustix::fd::{AsRawFd, BorrowedFd};
use rustix::time::{Itimerspec, TimerfdClockId, TimerfdFlags, TimerfdTimerFlags, Timespec};

/// The kind.
pub struct Timerfd;

/// `TFD_IOC_SET_TICKS`: `_IOW('T', 0, u64)`.
const TFD_IOC_SET_TICKS: rustix::ioctl::Opcode = rustix::ioctl::opcode::write::<u64>(b'T', 0);

/// Nanoseconds in a second.
const NSEC: u64 = 1_000_000_000;

/// A timerfd as dumped, or how to recreate it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimerfdPlan {
    /// Open flags of the description (`O_NONBLOCK`).
    pub flags: i32,
    /// Clock, ticks, flags, times.
    pub state: TimerfdState,
}

/// The clock ids a timerfd can use.
fn clock(id: i32) -> Option<TimerfdClockId> {
    Some(match id {
        libc::CLOCK_REALTIME => TimerfdClockId::Realtime,
        libc::CLOCK_MONOTONIC => TimerfdClockId::Monotonic,
        libc::CLOCK_BOOTTIME => TimerfdClockId::Boottime,
        libc::CLOCK_REALTIME_ALARM => TimerfdClockId::RealtimeAlarm,
        libc::CLOCK_BOOTTIME_ALARM => TimerfdClockId::BoottimeAlarm,
        _ => return None,
    })
}

fn timespec((sec, nsec): (u64, u64)) -> Timespec {
    Timespec { tv_sec: sec as i64, tv_nsec: nsec as _ }
}

impl FdKind for Timerfd {
    const FD_TYPE: FdTypes = FdTypes::Timerfd;
    type Dumped = TimerfdState;
    type Plan = TimerfdPlan;
    type OpenState = ();

    fn claims(p: &FdProbe) -> bool {
        p.target == "anon_inode:[timerfd]"
    }

    fn share_key(p: &FdProbe) -> u64 {
        // What does not change as the timer runs.
        super::fdinfo_key(p, |l| l.starts_with("clockid:") || l.starts_with("settime flags:") || l.starts_with("it_interval:"))
    }

    fn collect(p: &FdProbe, cx: &mut CollectCtx<'_>) -> std::result::Result<TimerfdState, FileDumpError> {
        let ours = cx.copy_fd(p)?;
        rustix::time::timerfd_gettime(&ours).map_err(|errno| FileDumpError::Sys { at: p.at(), what: "timerfd_gettime".into(), errno })?;
        let path = std::path::PathBuf::from(format!("/proc/self/fdinfo/{}", ours.as_raw_fd()));
        let text = crate::proc::read_text(&path)?;
        Ok(parse_timerfd(&text, &path)?)
    }

    fn write(f: &FileDesc, d: &TimerfdState, sink: &mut FilesSink<'_>) -> std::result::Result<(), ImageError> {
        let tfd = pb::TimerfdEntry {
            id: Some(f.id),
            flags: Some(f.flags),
            fown: Some(f.fown.entry()),
            clockid: Some(d.clockid as u32),
            ticks: Some(d.ticks),
            settime_flags: Some(d.settime_flags),
            vsec: Some(d.value.0),
            vnsec: Some(d.value.1),
            isec: Some(d.interval.0),
            insec: Some(d.interval.1),
        };
        sink.push(pb::FileEntry { r#type: Some(FdTypes::Timerfd as i32), id: Some(f.id), tfd: Some(tfd), ..Default::default() });
        Ok(())
    }

    fn load(e: &pb::FileEntry, cx: &LoadCtx<'_>) -> Result<TimerfdPlan> {
        let id = e.id.unwrap_or_default();
        let t = e.tfd.as_ref().ok_or_else(|| cx.bad(format!("file {id:#x} is TIMERFD without timerfd_entry")))?;
        let clockid = t.clockid.unwrap_or_default() as i32;
        if clock(clockid).is_none() {
            return Err(cx.bad(format!("timerfd {id:#x} has unknown clock {clockid}")));
        }
        let settime_flags = t.settime_flags.unwrap_or_default();
        let known = (libc::TFD_TIMER_ABSTIME | libc::TFD_TIMER_CANCEL_ON_SET) as u32;
        if settime_flags & !known != 0 {
            return Err(cx.bad(format!("timerfd {id:#x} has unknown settime flags {settime_flags:#x}")));
        }
        let value = (t.vsec.unwrap_or_default(), t.vnsec.unwrap_or_default());
        let interval = (t.isec.unwrap_or_default(), t.insec.unwrap_or_default());
        for (what, (s, ns)) in [("value", value), ("interval", interval)] {
            if ns >= NSEC || s > i64::MAX as u64 / 2 {
                return Err(cx.bad(format!("timerfd {id:#x} has {what} ({s}, {ns})")));
            }
        }
        let ticks = t.ticks.unwrap_or_default();
        let state = TimerfdState { clockid, ticks, settime_flags, value, interval };
        Ok(TimerfdPlan { flags: t.flags.unwrap_or_default() as i32, state })
    }

    fn open(p: &TimerfdPlan, _st: &mut (), _cx: &OpenCtx<'_>) -> Result<Opened> {
        let clock = clock(p.state.clockid).unwrap_or(TimerfdClockId::Monotonic);
        let fd = rustix::time::timerfd_create(clock, TimerfdFlags::CLOEXEC).sys(|| format!("timerfd_create({clock:?})"))?;
        set_status_flags(&fd, p.flags)?;
        Ok(Opened::Fd(fd))
    }

    fn name(p: &TimerfdPlan) -> String {
        format!("timerfd (clock {})", p.state.clockid)
    }

    fn in_task(p: &TimerfdPlan, fd: BorrowedFd<'_>, stage: TaskStage, _cx: &InTaskCtx<'_>) -> Result<()> {
        if stage == TaskStage::BeforeResume {
            arm(fd, &p.state)?;
        }
        Ok(())
    }
}

/// Sets the timer going with its remaining time and period, then puts back
/// the expirations not read.
fn arm(fd: BorrowedFd<'_>, st: &TimerfdState) -> Result<()> {
    let mut value = st.value;
    if value == (0, 0) && st.interval != (0, 0) && st.ticks > 0 {
        // Expired and unread, its periods not counted: next one a period on.
        value = st.interval;
    }
    let flags = TimerfdTimerFlags::from_bits_retain(st.settime_flags);
    if value != (0, 0) && flags.contains(TimerfdTimerFlags::ABSTIME) {
        let now = now(st.clockid)?;
        let ns = now.1 + value.1;
        value = (now.0 + value.0 + ns / NSEC, ns % NSEC);
    }
    let spec = Itimerspec { it_interval: timespec(st.interval), it_value: timespec(value) };
    rustix::time::timerfd_settime(fd, flags, &spec)
        .sys(|| format!("timerfd_settime(fd {}, {flags:?}, value {value:?}, interval {:?})", fd.as_raw_fd(), st.interval))?;
    if st.ticks > 0 {
        // SAFETY: TFD_IOC_SET_TICKS reads one u64 through the pointer the
        // Setter passes.
        let ioctl = unsafe { rustix::ioctl::Setter::<TFD_IOC_SET_TICKS, u64>::new(st.ticks) };
        // SAFETY: the opcode and argument type match (see above).
        unsafe { rustix::ioctl::ioctl(fd, ioctl) }.sys(|| format!("TFD_IOC_SET_TICKS({}) on fd {}", st.ticks, fd.as_raw_fd()))?;
    }
    Ok(())
}

/// `clock_gettime(clockid)` as (sec, nsec).
fn now(clockid: i32) -> Result<(u64, u64)> {
    use rustix::time::DynamicClockId;
    let id = match clockid {
        libc::CLOCK_REALTIME => DynamicClockId::Known(rustix::time::ClockId::Realtime),
        libc::CLOCK_MONOTONIC => DynamicClockId::Known(rustix::time::ClockId::Monotonic),
        libc::CLOCK_BOOTTIME => DynamicClockId::Known(rustix::time::ClockId::Boottime),
        libc::CLOCK_REALTIME_ALARM => DynamicClockId::RealtimeAlarm,
        _ => DynamicClockId::BoottimeAlarm,
    };
    let ts = rustix::time::clock_gettime_dynamic(id).sys(|| format!("clock_gettime({clockid})"))?;
    Ok((ts.tv_sec as u64, ts.tv_nsec as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(value: (u64, u64), interval: (u64, u64), ticks: u64, flags: u32) -> TimerfdState {
        TimerfdState { clockid: libc::CLOCK_MONOTONIC, ticks, settime_flags: flags, value, interval }
    }

    fn armed(st: &TimerfdState) -> (Itimerspec, u64) {
        let fd = rustix::time::timerfd_create(TimerfdClockId::Monotonic, TimerfdFlags::CLOEXEC | TimerfdFlags::NONBLOCK).unwrap();
        arm(rustix::fd::AsFd::as_fd(&fd), st).unwrap();
        let cur = rustix::time::timerfd_gettime(&fd).unwrap();
        let path = format!("/proc/self/fdinfo/{}", fd.as_raw_fd());
        let info = parse_timerfd(&std::fs::read_to_string(&path).unwrap(), path.as_ref()).unwrap();
        (cur, info.ticks)
    }

    #[test]
    fn remaining_time_period_and_ticks_come_back() {
        let (cur, ticks) = armed(&state((3600, 5), (2, 0), 3, 0));
        assert!(cur.it_value.tv_sec > 3500 && cur.it_value.tv_sec <= 3600, "{cur:?}");
        assert_eq!(cur.it_interval.tv_sec, 2);
        assert_eq!(ticks, 3);
        // Absolute: the remaining time counts from now.
        let (cur, _) = armed(&state((3600, 999_999_999), (0, 0), 0, libc::TFD_TIMER_ABSTIME as u32));
        assert!(cur.it_value.tv_sec > 3500 && cur.it_value.tv_sec <= 3601, "{cur:?}");
        // Disarmed stays disarmed, ticks kept.
        let (cur, ticks) = armed(&state((0, 0), (0, 0), 1, 0));
        assert_eq!((cur.it_value.tv_sec, cur.it_value.tv_nsec), (0, 0));
        assert_eq!(ticks, 1);
        // Expired, unread and periodic (as CRIU writes it): armed a period on.
        let (cur, ticks) = armed(&state((0, 0), (600, 0), 1, 0));
        assert!(cur.it_value.tv_sec > 500, "{cur:?}");
        assert_eq!(ticks, 1);
    }

    /// The query at dump time counts the periods of an unread timer.
    #[test]
    fn gettime_counts_missed_periods() {
        let fd = rustix::time::timerfd_create(TimerfdClockId::Monotonic, TimerfdFlags::CLOEXEC).unwrap();
        let spec = Itimerspec { it_interval: timespec((0, 1_000_000)), it_value: timespec((0, 1_000_000)) };
        rustix::time::timerfd_settime(&fd, TimerfdTimerFlags::empty(), &spec).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(30));
        rustix::time::timerfd_gettime(&fd).unwrap();
        let path = format!("/proc/self/fdinfo/{}", fd.as_raw_fd());
        let info = parse_timerfd(&std::fs::read_to_string(&path).unwrap(), path.as_ref()).unwrap();
        assert!(info.ticks >= 20, "{info:?}");
        assert_ne!(info.value, (0, 0));
    }
}
