//! signalfds (`FD_TYPES__SIGNALFD`, `signalfd_entry` in `files.img`, as
//! CRIU writes them): the signal mask from fdinfo (`sigmask:`, bit `n - 1`
//! for signal `n`) and the description's flags. The signals themselves are
//! the task's pending signals, restored with the task. Restore:
//! `signalfd(-1, mask)` and the status flags.

use super::fdtable::set_status_flags;
use super::{CollectCtx, FdKind, FdProbe, FileDesc, FileDumpError, FilesSink, LoadCtx, OpenCtx, Opened};
use crate::images::pb::{self, FdTypes};
use crate::images::ImageError;
use crate::proc::kind_fdinfo::parse_signalfd;
use crate::restore::error::{RestoreError, Result};
use rustix::fd::{FromRawFd, OwnedFd};

/// The kind.
pub struct Signalfd;

/// How to recreate a signalfd.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignalfdPlan {
    /// Open flags (`O_NONBLOCK`).
    pub flags: i32,
    /// Bit `n - 1` set: signal `n` is read through the fd.
    pub sigmask: u64,
}

impl FdKind for Signalfd {
    const FD_TYPE: FdTypes = FdTypes::Signalfd;
    type Dumped = u64;
    type Plan = SignalfdPlan;
    type OpenState = ();

    fn claims(p: &FdProbe) -> bool {
        p.target == "anon_inode:[signalfd]"
    }

    fn share_key(p: &FdProbe) -> u64 {
        super::fdinfo_key(p, |l| l.starts_with("sigmask:"))
    }

    fn collect(p: &FdProbe, _cx: &mut CollectCtx<'_>) -> std::result::Result<u64, FileDumpError> {
        let path = crate::proc::path(p.pid, &format!("fdinfo/{}", p.fd));
        Ok(parse_signalfd(&p.fdinfo, &path)?)
    }

    fn write(f: &FileDesc, mask: &u64, sink: &mut FilesSink<'_>) -> std::result::Result<(), ImageError> {
        let sgfd = pb::SignalfdEntry { id: Some(f.id), flags: Some(f.flags), fown: Some(f.fown.entry()), sigmask: Some(*mask) };
        sink.push(pb::FileEntry { r#type: Some(FdTypes::Signalfd as i32), id: Some(f.id), sgfd: Some(sgfd), ..Default::default() });
        Ok(())
    }

    fn load(e: &pb::FileEntry, cx: &LoadCtx<'_>) -> Result<SignalfdPlan> {
        let id = e.id.unwrap_or_default();
        let s = e.sgfd.as_ref().ok_or_else(|| cx.bad(format!("file {id:#x} is SIGNALFD without signalfd_entry")))?;
        Ok(SignalfdPlan { flags: s.flags.unwrap_or_default() as i32, sigmask: s.sigmask.unwrap_or_default() })
    }

    fn open(p: &SignalfdPlan, _st: &mut (), _cx: &OpenCtx<'_>) -> Result<Opened> {
        let fd = signalfd(p.sigmask)?;
        set_status_flags(&fd, p.flags)?;
        Ok(Opened::Fd(fd))
    }

    fn name(p: &SignalfdPlan) -> String {
        format!("signalfd (mask {:#x})", p.sigmask)
    }
}

/// `signalfd(-1, mask, SFD_CLOEXEC)`: a new signalfd for the signals of
/// `mask` (bit `n - 1` for signal `n`; SIGKILL and SIGSTOP are ignored by
/// the kernel, as when the program made it).
fn signalfd(mask: u64) -> Result<OwnedFd> {
    // SAFETY: an all-zero sigset_t is a valid empty set.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    for sig in 1..=64 {
        if mask & (1u64 << (sig - 1)) != 0 {
            // SAFETY: `set` is a valid sigset_t and 1..=64 are valid signal numbers.
            unsafe { libc::sigaddset(&mut set, sig) };
        }
    }
    // SAFETY: signalfd reads one sigset_t from the pointer given and returns a new fd.
    let fd = unsafe { libc::signalfd(-1, &set, libc::SFD_CLOEXEC) };
    if fd < 0 {
        let errno = rustix::io::Errno::from_io_error(&std::io::Error::last_os_error()).unwrap_or(rustix::io::Errno::INVAL);
        return Err(RestoreError::sys(format!("signalfd(-1, {mask:#x})"), errno));
    }
    // SAFETY: the fd was just returned to us and is owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustix::fd::AsRawFd;

    #[test]
    fn mask_comes_back() {
        let mask = (1u64 << (libc::SIGUSR2 - 1)) | (1u64 << 36);
        let fd = signalfd(mask).unwrap();
        let path = format!("/proc/self/fdinfo/{}", fd.as_raw_fd());
        assert_eq!(parse_signalfd(&std::fs::read_to_string(&path).unwrap(), path.as_ref()).unwrap(), mask);
    }
}
