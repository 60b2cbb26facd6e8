//! eventfds (`FD_TYPES__EVENTFD`, `eventfd_file_entry` in `files.img`, as
//! CRIU writes them): the counter from fdinfo `eventfd-count` (hex), the
//! semaphore mode from `eventfd-semaphore` (kernel 6.8+; kept in a field of
//! our own, CRIU has none). Restore: `eventfd(counter, flags)`, then the
//! status flags.

use super::fdtable::set_status_flags;
use super::{CollectCtx, FdKind, FdProbe, FileDesc, FileDumpError, FilesSink, LoadCtx, OpenCtx, Opened};
use crate::images::pb::{self, FdTypes};
use crate::images::ImageError;
use crate::restore::error::{Result, SysContext};
use rustix::event::EventfdFlags;
#[cfg(test)]
use rustix::fd::AsRawFd;

/// The kind.
pub struct Eventfd;

/// An eventfd as dumped (its open flags are the description's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventfdState {
    /// The counter.
    pub counter: u64,
    /// `EFD_SEMAPHORE` (None: the kernel does not say).
    pub semaphore: Option<bool>,
}

/// How to recreate an eventfd.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventfdPlan {
    /// Counter and mode.
    pub state: EventfdState,
    /// Open flags (`O_NONBLOCK`).
    pub flags: i32,
}

impl FdKind for Eventfd {
    const FD_TYPE: FdTypes = FdTypes::Eventfd;
    type Dumped = EventfdState;
    type Plan = EventfdPlan;
    type OpenState = ();

    fn claims(p: &FdProbe) -> bool {
        p.target == "anon_inode:[eventfd]"
    }

    fn share_key(p: &FdProbe) -> u64 {
        // One id per eventfd (kernel 5.1+).
        super::fdinfo_key(p, |l| l.starts_with("eventfd-id:"))
    }

    fn collect(p: &FdProbe, _cx: &mut CollectCtx<'_>) -> std::result::Result<EventfdState, FileDumpError> {
        let bad = |what: &str| FileDumpError::UnsupportedState { at: p.at(), what: format!("eventfd with fdinfo {what} {:?}", p.fdinfo) };
        let counter = p.field("eventfd-count").and_then(|v| u64::from_str_radix(v, 16).ok()).ok_or_else(|| bad("without a readable eventfd-count"))?;
        let semaphore = match p.field("eventfd-semaphore") {
            None => None,
            Some("0") => Some(false),
            Some("1") => Some(true),
            Some(_) => return Err(bad("with an unknown eventfd-semaphore")),
        };
        Ok(EventfdState { counter, semaphore })
    }

    fn write(f: &FileDesc, d: &EventfdState, sink: &mut FilesSink<'_>) -> std::result::Result<(), ImageError> {
        let efd = pb::EventfdFileEntry {
            id: Some(f.id),
            flags: Some(f.flags),
            fown: Some(f.fown.entry()),
            counter: Some(d.counter),
            semaphore: d.semaphore,
        };
        sink.push(pb::FileEntry { r#type: Some(FdTypes::Eventfd as i32), id: Some(f.id), efd: Some(efd), ..Default::default() });
        Ok(())
    }

    fn load(e: &pb::FileEntry, cx: &LoadCtx<'_>) -> Result<EventfdPlan> {
        let id = e.id.unwrap_or_default();
        let efd = e.efd.as_ref().ok_or_else(|| cx.bad(format!("file {id:#x} is EVENTFD without eventfd_file_entry")))?;
        let counter = efd.counter.unwrap_or_default();
        // eventfd(2) refuses the largest value; a counter never holds it.
        if counter == u64::MAX {
            return Err(cx.bad(format!("eventfd {id:#x} with counter {counter:#x}")));
        }
        Ok(EventfdPlan { state: EventfdState { counter, semaphore: efd.semaphore }, flags: efd.flags.unwrap_or_default() as i32 })
    }

    fn open(p: &EventfdPlan, _st: &mut (), _cx: &OpenCtx<'_>) -> Result<Opened> {
        let mut flags = EventfdFlags::CLOEXEC;
        if p.state.semaphore == Some(true) {
            flags |= EventfdFlags::SEMAPHORE;
        }
        // eventfd(2) takes an unsigned int; a larger counter is written after.
        let initial = u32::try_from(p.state.counter).unwrap_or(0);
        let fd = rustix::event::eventfd(initial, flags).sys(|| format!("eventfd({initial}, {flags:?})"))?;
        if u64::from(initial) != p.state.counter {
            rustix::io::write(&fd, &p.state.counter.to_ne_bytes()).sys(|| format!("writing counter {:#x} to an eventfd", p.state.counter))?;
        }
        set_status_flags(&fd, p.flags)?;
        Ok(Opened::Fd(fd))
    }

    fn name(p: &EventfdPlan) -> String {
        format!("eventfd (counter {})", p.state.counter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::files::roundtrip::{crit_decodes, desc, roundtrip};
    use crate::files::{fdtable, DescPlan, FileKind, LoadOptions};

    #[test]
    fn counter_and_mode_round_trip_and_reopen() {
        let plain = EventfdState { counter: 5, semaphore: Some(false) };
        let sem = EventfdState { counter: (1 << 40) + 3, semaphore: Some(true) };
        let descs = [desc(1, libc::O_RDWR, FileKind::Eventfd(plain)), desc(2, libc::O_RDWR | libc::O_NONBLOCK, FileKind::Eventfd(sem))];
        let (plans, tmp) = roundtrip(&descs, &LoadOptions::default());
        let plans = plans.unwrap();
        assert_eq!(plans[&2], DescPlan::Eventfd(EventfdPlan { state: sem, flags: libc::O_RDWR | libc::O_NONBLOCK }));
        crit_decodes(&tmp.path().join("files.img"));
        let (opened, _) = fdtable::open_descs(&plans, 3).unwrap();
        let mut v = [0u8; 8];
        rustix::io::read(&opened[&1], &mut v).unwrap();
        assert_eq!(u64::from_ne_bytes(v), 5);
        // Semaphore mode: each read takes 1.
        rustix::io::read(&opened[&2], &mut v).unwrap();
        assert_eq!(u64::from_ne_bytes(v), 1);
        let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", opened[&2].as_raw_fd())).unwrap();
        assert_eq!(crate::proc::fds::fdinfo_field(&info, "eventfd-count"), Some(&format!("{:x}", (1u64 << 40) + 2)[..]));
        assert_eq!(crate::proc::fds::fdinfo_field(&info, "flags").map(|f| i32::from_str_radix(f, 8).unwrap() & libc::O_NONBLOCK), Some(libc::O_NONBLOCK));
    }
}
