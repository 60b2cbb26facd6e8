//! The `SOL_SOCKET` options every socket kind saves, as CRIU's
//! `sk_opts_entry` holds them: [`SockOpts::read`] on a socket at dump,
//! [`SockOpts::to_entry`] / [`SockOpts::from_entry`] for the image, and
//! [`SockOpts::apply`] on the recreated socket.
//!
//! Buffer sizes are kept as `getsockopt` reports them (the kernel doubles
//! what `setsockopt` asks for) and set again with the `*FORCE` variants at
//! half that, so a size above `wmem_max`/`rmem_max` comes back too.
//! `SO_PEEK_OFF` has no field in CRIU's `sk_opts_entry`: criu-rs keeps an
//! enabled peek offset in an extension field (1000) that CRIU and crit skip.

use super::sockopt;
use crate::images::pb;
use rustix::fd::BorrowedFd;
use rustix::io::Errno;

/// `SO_BUF_LOCK` (Linux 5.14).
pub const SO_BUF_LOCK: i32 = 72;

/// The saved options of one socket (the fields of `sk_opts_entry`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SockOpts {
    /// `SO_SNDBUF` as read (doubled by the kernel).
    pub sndbuf: u32,
    /// `SO_RCVBUF` as read.
    pub rcvbuf: u32,
    /// `SO_SNDTIMEO` (seconds, microseconds).
    pub snd_timeout: (u64, u64),
    /// `SO_RCVTIMEO`.
    pub rcv_timeout: (u64, u64),
    /// `SO_REUSEADDR`.
    pub reuseaddr: bool,
    /// `SO_REUSEPORT`.
    pub reuseport: bool,
    /// `SO_PRIORITY`.
    pub priority: u32,
    /// `SO_RCVLOWAT`.
    pub rcvlowat: u32,
    /// `SO_MARK` (0: not set).
    pub mark: u32,
    /// `SO_PASSCRED` (unix and netlink sockets).
    pub passcred: bool,
    /// `SO_PASSSEC` (unix and netlink sockets).
    pub passsec: bool,
    /// `SO_DONTROUTE`.
    pub dontroute: bool,
    /// `SO_NO_CHECK`.
    pub no_check: bool,
    /// `SO_BROADCAST`.
    pub broadcast: bool,
    /// `SO_KEEPALIVE`.
    pub keepalive: bool,
    /// `SO_OOBINLINE`.
    pub oobinline: bool,
    /// `SO_LINGER` seconds when lingering is on.
    pub linger: Option<u32>,
    /// `SO_BUF_LOCK` bits (kernels that have it).
    pub buf_lock: Option<u32>,
    /// `SO_BINDTODEVICE` interface name.
    pub bound_dev: Option<String>,
    /// `SO_GET_FILTER`: the classic BPF program, one `struct sock_filter`
    /// (8 bytes, native endian) per entry.
    pub filter: Vec<u64>,
    /// `SO_PEEK_OFF` when enabled (families that have it; -1 is disabled).
    pub peek_off: Option<i32>,
}

/// `getsockopt(fd, SOL_SOCKET, opt, &int)`.
pub fn get_int(fd: BorrowedFd<'_>, opt: i32) -> Result<i32, Errno> {
    sockopt::get::<i32>(fd, libc::SOL_SOCKET as u32, opt as u32)
}

/// `setsockopt(fd, SOL_SOCKET, opt, &int)`.
pub fn set_int(fd: BorrowedFd<'_>, opt: i32, v: i32) -> Result<(), Errno> {
    sockopt::set(fd, libc::SOL_SOCKET as u32, opt as u32, &v)
}

/// `setsockopt(fd, SOL_SOCKET, opt, value)` for a plain C struct value.
fn set_raw<T: Copy>(fd: BorrowedFd<'_>, opt: i32, v: &T) -> Result<(), Errno> {
    sockopt::set(fd, libc::SOL_SOCKET as u32, opt as u32, v)
}

/// `getsockopt(fd, SOL_SOCKET, opt, buf)` into raw bytes; returns the
/// length the kernel reported.
fn get_bytes(fd: BorrowedFd<'_>, opt: i32, buf: &mut [u8]) -> Result<usize, Errno> {
    sockopt::get_bytes(fd, libc::SOL_SOCKET as u32, opt as u32, buf)
}

/// A `SO_*TIMEO` value as (seconds, microseconds): a `struct timeval`,
/// two 64-bit words.
fn get_timeout(fd: BorrowedFd<'_>, opt: i32) -> Result<(u64, u64), Errno> {
    let [sec, usec] = sockopt::get::<[i64; 2]>(fd, libc::SOL_SOCKET as u32, opt as u32)?;
    Ok((sec as u64, usec as u64))
}

/// One option's name and the error, for messages.
#[derive(Debug, thiserror::Error)]
#[error("{opt}: {errno}")]
pub struct SockOptError {
    /// The option (`SO_SNDBUF`, ...), with `get`/`set`.
    pub opt: &'static str,
    /// What the kernel said.
    pub errno: Errno,
}

fn named(opt: &'static str) -> impl FnOnce(Errno) -> SockOptError {
    move |errno| SockOptError { opt, errno }
}

impl SockOpts {
    /// Reads the options of socket `fd`; `passcred` is read for the
    /// families that have it (`AF_UNIX`, `AF_NETLINK`).
    pub fn read(fd: BorrowedFd<'_>, family: i32) -> Result<SockOpts, SockOptError> {
        let flag = |opt, name| get_int(fd, opt).map(|v| v != 0).map_err(named(name));
        let mut o = SockOpts {
            sndbuf: get_int(fd, libc::SO_SNDBUF).map_err(named("get SO_SNDBUF"))? as u32,
            rcvbuf: get_int(fd, libc::SO_RCVBUF).map_err(named("get SO_RCVBUF"))? as u32,
            snd_timeout: get_timeout(fd, libc::SO_SNDTIMEO).map_err(named("get SO_SNDTIMEO"))?,
            rcv_timeout: get_timeout(fd, libc::SO_RCVTIMEO).map_err(named("get SO_RCVTIMEO"))?,
            reuseaddr: flag(libc::SO_REUSEADDR, "get SO_REUSEADDR")?,
            reuseport: flag(libc::SO_REUSEPORT, "get SO_REUSEPORT")?,
            priority: get_int(fd, libc::SO_PRIORITY).map_err(named("get SO_PRIORITY"))? as u32,
            rcvlowat: get_int(fd, libc::SO_RCVLOWAT).map_err(named("get SO_RCVLOWAT"))? as u32,
            mark: get_int(fd, libc::SO_MARK).map_err(named("get SO_MARK"))? as u32,
            dontroute: flag(libc::SO_DONTROUTE, "get SO_DONTROUTE")?,
            no_check: flag(libc::SO_NO_CHECK, "get SO_NO_CHECK")?,
            broadcast: flag(libc::SO_BROADCAST, "get SO_BROADCAST")?,
            keepalive: flag(libc::SO_KEEPALIVE, "get SO_KEEPALIVE")?,
            oobinline: flag(libc::SO_OOBINLINE, "get SO_OOBINLINE")?,
            ..Default::default()
        };
        if family == libc::AF_UNIX || family == libc::AF_NETLINK {
            o.passcred = flag(libc::SO_PASSCRED, "get SO_PASSCRED")?;
            o.passsec = flag(libc::SO_PASSSEC, "get SO_PASSSEC")?;
        }
        // struct linger { int l_onoff; int l_linger; }
        let [onoff, secs] = sockopt::get::<[i32; 2]>(fd, libc::SOL_SOCKET as u32, libc::SO_LINGER as u32).map_err(named("get SO_LINGER"))?;
        o.linger = (onoff != 0).then_some(secs as u32);
        o.buf_lock = match get_int(fd, SO_BUF_LOCK) {
            Ok(v) => Some(v as u32),
            Err(Errno::NOPROTOOPT) => None,
            Err(e) => return Err(SockOptError { opt: "get SO_BUF_LOCK", errno: e }),
        };
        let mut dev = [0u8; libc::IFNAMSIZ];
        let n = get_bytes(fd, libc::SO_BINDTODEVICE, &mut dev).map_err(named("get SO_BINDTODEVICE"))?;
        let dev = &dev[..n.min(dev.len())];
        let dev = dev.split(|&b| b == 0).next().unwrap_or_default();
        o.bound_dev = (!dev.is_empty()).then(|| String::from_utf8_lossy(dev).into_owned());
        o.filter = read_filter(fd)?;
        o.peek_off = match get_int(fd, libc::SO_PEEK_OFF) {
            Ok(v) if v >= 0 => Some(v),
            Ok(_) | Err(Errno::OPNOTSUPP) => None,
            Err(e) => return Err(SockOptError { opt: "get SO_PEEK_OFF", errno: e }),
        };
        Ok(o)
    }

    /// Sets the options on a recreated socket. Boolean options are only
    /// turned on (a new socket has them off), `SO_REUSEADDR`/`SO_REUSEPORT`
    /// included (a kind that binds sets those before binding).
    pub fn apply(&self, fd: BorrowedFd<'_>) -> Result<(), SockOptError> {
        let set = |opt, name, v: i32| set_int(fd, opt, v).map_err(named(name));
        set(libc::SO_SNDBUFFORCE, "set SO_SNDBUFFORCE", (self.sndbuf / 2) as i32)?;
        set(libc::SO_RCVBUFFORCE, "set SO_RCVBUFFORCE", (self.rcvbuf / 2) as i32)?;
        if let Some(lock) = self.buf_lock {
            set(SO_BUF_LOCK, "set SO_BUF_LOCK", lock as i32)?;
        }
        if self.priority != 0 {
            set(libc::SO_PRIORITY, "set SO_PRIORITY", self.priority as i32)?;
        }
        if self.rcvlowat != 1 {
            set(libc::SO_RCVLOWAT, "set SO_RCVLOWAT", self.rcvlowat as i32)?;
        }
        if self.mark != 0 {
            set(libc::SO_MARK, "set SO_MARK", self.mark as i32)?;
        }
        for (on, opt, name) in [
            (self.reuseaddr, libc::SO_REUSEADDR, "set SO_REUSEADDR"),
            (self.reuseport, libc::SO_REUSEPORT, "set SO_REUSEPORT"),
            (self.passcred, libc::SO_PASSCRED, "set SO_PASSCRED"),
            (self.passsec, libc::SO_PASSSEC, "set SO_PASSSEC"),
            (self.dontroute, libc::SO_DONTROUTE, "set SO_DONTROUTE"),
            (self.no_check, libc::SO_NO_CHECK, "set SO_NO_CHECK"),
            (self.broadcast, libc::SO_BROADCAST, "set SO_BROADCAST"),
            (self.keepalive, libc::SO_KEEPALIVE, "set SO_KEEPALIVE"),
            (self.oobinline, libc::SO_OOBINLINE, "set SO_OOBINLINE"),
        ] {
            if on {
                set(opt, name, 1)?;
            }
        }
        if let Some(secs) = self.linger {
            let l = libc::linger { l_onoff: 1, l_linger: secs as i32 };
            set_raw(fd, libc::SO_LINGER, &l).map_err(named("set SO_LINGER"))?;
        }
        for ((sec, usec), opt, name) in [
            (self.snd_timeout, libc::SO_SNDTIMEO, "set SO_SNDTIMEO"),
            (self.rcv_timeout, libc::SO_RCVTIMEO, "set SO_RCVTIMEO"),
        ] {
            if (sec, usec) != (0, 0) {
                let tv = libc::timeval { tv_sec: sec as libc::time_t, tv_usec: usec as libc::suseconds_t };
                set_raw(fd, opt, &tv).map_err(named(name))?;
            }
        }
        if let Some(dev) = &self.bound_dev {
            let mut name = [0u8; libc::IFNAMSIZ];
            let n = dev.len().min(libc::IFNAMSIZ - 1);
            name[..n].copy_from_slice(&dev.as_bytes()[..n]);
            set_raw(fd, libc::SO_BINDTODEVICE, &name).map_err(named("set SO_BINDTODEVICE"))?;
        }
        if let Some(off) = self.peek_off {
            set(libc::SO_PEEK_OFF, "set SO_PEEK_OFF", off)?;
        }
        if !self.filter.is_empty() {
            let prog = libc::sock_fprog { len: self.filter.len() as u16, filter: self.filter.as_ptr() as *mut libc::sock_filter };
            set_raw(fd, libc::SO_ATTACH_FILTER, &prog).map_err(named("set SO_ATTACH_FILTER"))?;
        }
        Ok(())
    }

    /// The image form.
    pub fn to_entry(&self) -> pb::SkOptsEntry {
        pb::SkOptsEntry {
            so_sndbuf: Some(self.sndbuf),
            so_rcvbuf: Some(self.rcvbuf),
            so_snd_tmo_sec: Some(self.snd_timeout.0),
            so_snd_tmo_usec: Some(self.snd_timeout.1),
            so_rcv_tmo_sec: Some(self.rcv_timeout.0),
            so_rcv_tmo_usec: Some(self.rcv_timeout.1),
            reuseaddr: Some(self.reuseaddr),
            so_priority: Some(self.priority),
            so_rcvlowat: Some(self.rcvlowat),
            so_mark: (self.mark != 0).then_some(self.mark),
            so_passcred: Some(self.passcred),
            so_passsec: Some(self.passsec),
            so_dontroute: Some(self.dontroute),
            so_no_check: Some(self.no_check),
            so_bound_dev: self.bound_dev.clone(),
            so_filter: self.filter.clone(),
            so_reuseport: Some(self.reuseport),
            so_broadcast: Some(self.broadcast),
            so_keepalive: Some(self.keepalive),
            so_oobinline: Some(self.oobinline as u32),
            so_linger: self.linger,
            so_buf_lock: self.buf_lock,
            so_peek_off: self.peek_off,
            ..Default::default()
        }
    }

    /// From the image form (required fields already checked by the reader;
    /// absent optional ones are the kernel's defaults).
    pub fn from_entry(e: &pb::SkOptsEntry) -> Result<SockOpts, String> {
        if e.so_filter.len() > u16::MAX as usize {
            return Err(format!("a socket filter of {} instructions", e.so_filter.len()));
        }
        let usec_ok = |u: Option<u64>| u.unwrap_or(0) < 1_000_000;
        if !usec_ok(e.so_snd_tmo_usec) || !usec_ok(e.so_rcv_tmo_usec) {
            return Err("a timeout with 1,000,000 microseconds or more".into());
        }
        if e.so_bound_dev.as_ref().is_some_and(|d| d.len() >= libc::IFNAMSIZ || d.contains('\0')) {
            return Err(format!("bad device name {:?}", e.so_bound_dev));
        }
        Ok(SockOpts {
            sndbuf: e.so_sndbuf.unwrap_or(0),
            rcvbuf: e.so_rcvbuf.unwrap_or(0),
            snd_timeout: (e.so_snd_tmo_sec.unwrap_or(0), e.so_snd_tmo_usec.unwrap_or(0)),
            rcv_timeout: (e.so_rcv_tmo_sec.unwrap_or(0), e.so_rcv_tmo_usec.unwrap_or(0)),
            reuseaddr: e.reuseaddr.unwrap_or(false),
            reuseport: e.so_reuseport.unwrap_or(false),
            priority: e.so_priority.unwrap_or(0),
            rcvlowat: e.so_rcvlowat.unwrap_or(1),
            mark: e.so_mark.unwrap_or(0),
            passcred: e.so_passcred.unwrap_or(false),
            passsec: e.so_passsec.unwrap_or(false),
            dontroute: e.so_dontroute.unwrap_or(false),
            no_check: e.so_no_check.unwrap_or(false),
            broadcast: e.so_broadcast.unwrap_or(false),
            keepalive: e.so_keepalive.unwrap_or(false),
            oobinline: e.so_oobinline.unwrap_or(0) != 0,
            linger: e.so_linger,
            buf_lock: e.so_buf_lock,
            bound_dev: e.so_bound_dev.clone().filter(|d| !d.is_empty()),
            filter: e.so_filter.clone(),
            peek_off: e.so_peek_off.filter(|&o| o >= 0),
        })
    }
}

/// `getsockopt(SO_GET_FILTER)`: the attached classic BPF program, if any
/// (for this option the length is counted in instructions).
fn read_filter(fd: BorrowedFd<'_>) -> Result<Vec<u64>, SockOptError> {
    let err = |errno| SockOptError { opt: "get SO_GET_FILTER", errno };
    // With a zero length the kernel reports the number of instructions.
    let count = get_bytes(fd, libc::SO_GET_FILTER, &mut []).map_err(err)?;
    if count == 0 {
        return Ok(Vec::new());
    }
    let mut prog = vec![0u64; count];
    // SAFETY: viewing the u64 buffer as bytes (plain integers).
    let bytes = unsafe { std::slice::from_raw_parts_mut(prog.as_mut_ptr().cast::<u8>(), count * 8) };
    let got = get_bytes(fd, libc::SO_GET_FILTER, bytes).map_err(err)?;
    prog.truncate(got);
    Ok(prog)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustix::fd::AsFd;
    use rustix::net::{AddressFamily, SocketFlags, SocketType};

    fn sock() -> rustix::fd::OwnedFd {
        rustix::net::socket_with(AddressFamily::UNIX, SocketType::DGRAM, SocketFlags::CLOEXEC, None).unwrap()
    }

    #[test]
    fn options_read_written_and_set_again_round_trip() {
        let a = sock();
        let fd = a.as_fd();
        set_int(fd, libc::SO_SNDBUFFORCE, 3 << 20).unwrap();
        set_int(fd, libc::SO_RCVBUF, 50_000).unwrap();
        set_int(fd, libc::SO_PASSCRED, 1).unwrap();
        set_int(fd, libc::SO_RCVLOWAT, 9).unwrap();
        set_int(fd, libc::SO_PRIORITY, 3).unwrap();
        set_int(fd, libc::SO_MARK, 77).unwrap();
        set_raw(fd, libc::SO_LINGER, &libc::linger { l_onoff: 1, l_linger: 4 }).unwrap();
        set_raw(fd, libc::SO_RCVTIMEO, &libc::timeval { tv_sec: 2, tv_usec: 500_000 }).unwrap();
        set_int(fd, libc::SO_PEEK_OFF, 3).unwrap();
        // A one-instruction filter: accept everything.
        let ret_all = libc::sock_filter { code: 0x06, jt: 0, jf: 0, k: 0xffff_ffff };
        let prog = libc::sock_fprog { len: 1, filter: &ret_all as *const _ as *mut _ };
        set_raw(fd, libc::SO_ATTACH_FILTER, &prog).unwrap();
        let o = SockOpts::read(fd, libc::AF_UNIX).unwrap();
        assert_eq!((o.sndbuf, o.rcvlowat, o.priority, o.mark, o.linger), (6 << 20, 9, 3, 77, Some(4)));
        assert!(o.passcred && !o.passsec);
        assert_eq!(o.rcv_timeout, (2, 500_000));
        assert_eq!(o.filter.len(), 1);
        assert_eq!(o.peek_off, Some(3));
        let back = SockOpts::from_entry(&o.to_entry()).unwrap();
        assert_eq!(back, o);
        let b = sock();
        back.apply(b.as_fd()).unwrap();
        assert_eq!(SockOpts::read(b.as_fd(), libc::AF_UNIX).unwrap(), o);
    }

    #[test]
    fn bad_entries_are_refused() {
        let mut e = SockOpts::default().to_entry();
        e.so_rcv_tmo_usec = Some(2_000_000);
        assert!(SockOpts::from_entry(&e).is_err());
        let mut e = SockOpts::default().to_entry();
        e.so_bound_dev = Some("x".repeat(40));
        assert!(SockOpts::from_entry(&e).is_err());
    }
}
