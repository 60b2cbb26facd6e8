//! Pseudo-terminal pairs: the calls on a master (`/dev/ptmx`) and its
//! slave that dump and restore use, and the bytes queued in them.
//!
//! ```text
//!          write(master) ─► slave's line discipline ─► read(slave)     "input"
//!   read(master) ◄─ master's (raw) line discipline ◄─ write(slave)     "output"
//! ```
//!
//! Reading a queue empties it: there is no peek for terminals. The dump
//! reads both queues last, when everything else of the tree is collected,
//! and keeps a [`Queued`] to put the bytes back (a failed dump, or
//! `--leave-running`). The input queue is read on a slave of our own
//! (`TIOCGPTPEER`, so the task's descriptions keep their flags) with the
//! line discipline briefly non-canonical (`VMIN = VTIME = 0`), which makes
//! a partial line readable too; the termios goes back at once. Bytes are
//! put back, at restore as after a failed dump, by [`refill`]: the output
//! through the slave with output processing off, the input through the
//! master with echo, signals and input translation off but the canonical
//! mode as dumped (so that lines are lines again), then the dumped termios.

use rustix::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use rustix::io::Errno;
use std::time::{Duration, Instant};

/// A failed call: its name and errno.
pub type CallError = (&'static str, Errno);
/// Result of a call on a terminal.
pub type CallResult<T> = std::result::Result<T, CallError>;

/// Most bytes read from one queue (the line discipline holds 4 KiB, the
/// pty's buffers 64 KiB more).
const QUEUE_MAX: usize = 1 << 20;
/// How long [`refill`] waits for the line discipline to take the input.
const SETTLE: Duration = Duration::from_secs(2);

fn errno() -> Errno {
    Errno::from_raw_os_error(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
}

/// `ioctl(fd, req, &mut int)`.
pub fn get_int(fd: BorrowedFd<'_>, req: libc::Ioctl, name: &'static str) -> CallResult<i32> {
    let mut v: libc::c_int = 0;
    // SAFETY: a "get int" terminal ioctl writing one int to a valid pointer.
    if unsafe { libc::ioctl(fd.as_raw_fd(), req, &mut v) } < 0 {
        return Err((name, errno()));
    }
    Ok(v)
}

/// `ioctl(fd, req, &int)`.
pub fn set_int(fd: BorrowedFd<'_>, req: libc::Ioctl, v: i32, name: &'static str) -> CallResult<()> {
    // SAFETY: a "set int" terminal ioctl reading one int from a valid pointer.
    if unsafe { libc::ioctl(fd.as_raw_fd(), req, &v) } < 0 {
        return Err((name, errno()));
    }
    Ok(())
}

/// `ioctl(fd, req)` (no argument, or an integer argument by value).
pub fn call(fd: BorrowedFd<'_>, req: libc::Ioctl, arg: libc::c_ulong, name: &'static str) -> CallResult<()> {
    // SAFETY: a terminal ioctl taking its argument by value.
    if unsafe { libc::ioctl(fd.as_raw_fd(), req, arg) } < 0 {
        return Err((name, errno()));
    }
    Ok(())
}

/// `ioctl(fd, TCGETS or TIOCGLCKTRMIOS, &termios)`.
pub fn get_termios(fd: BorrowedFd<'_>, req: libc::Ioctl, name: &'static str) -> CallResult<libc::termios> {
    // SAFETY: an all-zero termios is valid; the ioctl writes the kernel's
    // (smaller) struct termios into its head.
    let mut t: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: a valid pointer to a struct at least as large as the kernel's.
    if unsafe { libc::ioctl(fd.as_raw_fd(), req, &mut t) } < 0 {
        return Err((name, errno()));
    }
    Ok(t)
}

/// `ioctl(fd, TCSETS or TIOCSLCKTRMIOS, &termios)` (`TCSETS`: now, no
/// flush, no wait).
pub fn set_termios(fd: BorrowedFd<'_>, req: libc::Ioctl, t: &libc::termios, name: &'static str) -> CallResult<()> {
    // SAFETY: a set-termios ioctl reading a valid struct.
    if unsafe { libc::ioctl(fd.as_raw_fd(), req, t) } < 0 {
        return Err((name, errno()));
    }
    Ok(())
}

/// `ioctl(master, TIOCGPTPEER, flags)`: a new description of the pair's
/// slave (without a path: the master's own devpts instance), close-on-exec
/// (set on the descriptor only: the ioctl would keep `O_CLOEXEC` in the
/// description's flags too, where `/proc/PID/fdinfo` shows it).
pub fn open_peer(master: BorrowedFd<'_>, flags: i32) -> CallResult<OwnedFd> {
    // SAFETY: TIOCGPTPEER takes open flags by value and returns a new fd.
    let fd = unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCGPTPEER, ((flags & !libc::O_CLOEXEC) | libc::O_NOCTTY) as libc::c_ulong) };
    if fd < 0 {
        return Err(("TIOCGPTPEER", errno()));
    }
    // SAFETY: the ioctl returned a new descriptor we now own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    rustix::io::fcntl_setfd(&fd, rustix::io::FdFlags::CLOEXEC).map_err(|e| ("F_SETFD", e))?;
    Ok(fd)
}

/// Opens the multiplexer at `path` until it gives pair `index` (numbers
/// are handed out lowest free first: the lower ones met are held open
/// meanwhile, as CRIU does), or, if `index` is taken, any pair. Unlocked.
/// Returns the master and the number it got.
pub fn open_master(path: &std::path::Path, index: u32, flags: i32) -> CallResult<(OwnedFd, u32)> {
    let oflags = rustix::fs::OFlags::from_bits_retain((flags & (libc::O_ACCMODE | libc::O_NONBLOCK)) as u32)
        | rustix::fs::OFlags::NOCTTY
        | rustix::fs::OFlags::CLOEXEC;
    let mut below = Vec::new();
    let got = loop {
        let fd = rustix::fs::open(path, oflags, rustix::fs::Mode::empty()).map_err(|e| ("open(ptmx)", e))?;
        let n = get_int(rustix::fd::AsFd::as_fd(&fd), libc::TIOCGPTN, "TIOCGPTN")? as u32;
        if n >= index || below.len() >= 256 {
            if n != index {
                tracing::info!(want = index, got = n, "pty number taken: the pair gets another");
            }
            break (fd, n);
        }
        below.push(fd);
    };
    drop(below);
    set_int(rustix::fd::AsFd::as_fd(&got.0), libc::TIOCSPTLCK, 0, "TIOCSPTLCK")?;
    Ok(got)
}

/// Reads what the master has to read (the slave's output), without
/// blocking and without touching the description's flags: `poll` first.
/// In packet mode each read starts with a status byte, dropped.
pub fn read_output(master: BorrowedFd<'_>, packet: bool) -> CallResult<Vec<u8>> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 4096];
    loop {
        let mut p = [rustix::event::PollFd::new(&master, rustix::event::PollFlags::IN)];
        let n = rustix::event::poll(&mut p, Some(&rustix::event::Timespec { tv_sec: 0, tv_nsec: 0 })).map_err(|e| ("poll", e))?;
        if n == 0 || !p[0].revents().contains(rustix::event::PollFlags::IN) {
            return Ok(out);
        }
        match rustix::io::read(master, &mut buf) {
            Ok(0) | Err(Errno::IO) | Err(Errno::AGAIN) => return Ok(out),
            Ok(n) => out.extend_from_slice(&buf[usize::from(packet)..n]),
            Err(Errno::INTR) => continue,
            Err(e) => return Err(("read(master)", e)),
        }
        if out.len() > QUEUE_MAX {
            return Err(("read(master): more queued than 1 MiB", Errno::FBIG));
        }
    }
}

/// Reads what the slave has to read (the input queue, partial line
/// included) on `slave`, a description of our own opened `O_NONBLOCK`;
/// the termios is back as it was when this returns. Returns the dumped
/// termios and the bytes.
pub fn read_input(slave: BorrowedFd<'_>) -> CallResult<(libc::termios, Vec<u8>)> {
    let t = get_termios(slave, libc::TCGETS, "TCGETS")?;
    let mut raw = t;
    raw.c_lflag &= !libc::ICANON;
    raw.c_cc[libc::VMIN] = 0;
    raw.c_cc[libc::VTIME] = 0;
    set_termios(slave, libc::TCSETS, &raw, "TCSETS (non-canonical)")?;
    let mut out = Vec::new();
    let mut buf = vec![0u8; 4096];
    let read = loop {
        match rustix::io::read(slave, &mut buf) {
            Ok(0) | Err(Errno::AGAIN) => break Ok(()),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(Errno::INTR) => continue,
            Err(e) => break Err(("read(slave)", e)),
        }
        if out.len() > QUEUE_MAX {
            break Err(("read(slave): more queued than 1 MiB", Errno::FBIG));
        }
    };
    let back = set_termios(slave, libc::TCSETS, &t, "TCSETS (back)");
    read.and(back).map(|()| (t, out))
}

/// Writes all of `data` to `fd` (non-blocking or not), waiting for room.
fn write_all(fd: BorrowedFd<'_>, mut data: &[u8], name: &'static str) -> CallResult<()> {
    let deadline = Instant::now() + SETTLE;
    while !data.is_empty() {
        match rustix::io::write(fd, data) {
            Ok(n) => data = &data[n..],
            Err(Errno::INTR) => {}
            Err(Errno::AGAIN) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(1)),
            Err(e) => return Err((name, e)),
        }
    }
    Ok(())
}

/// How many bytes of `input` a canonical reader sees as complete lines
/// (up to the last line end of termios `t`).
fn complete_lines(t: &libc::termios, input: &[u8]) -> usize {
    if t.c_lflag & libc::ICANON == 0 {
        return input.len();
    }
    let ends = [b'\n', t.c_cc[libc::VEOL], t.c_cc[libc::VEOL2]];
    input.iter().rposition(|c| *c != 0 && ends.contains(c)).map_or(0, |i| i + 1)
}

/// Puts queued bytes into a pair and sets termios `t`: `output` becomes
/// readable at the master, `input` at the slave (see the module
/// documentation). `slave` is a description of ours.
pub fn refill(master: BorrowedFd<'_>, slave: BorrowedFd<'_>, t: &libc::termios, output: &[u8], input: &[u8]) -> CallResult<()> {
    if !output.is_empty() || !input.is_empty() {
        let mut quiet = *t;
        quiet.c_lflag &= !(libc::ECHO | libc::ECHOE | libc::ECHOK | libc::ECHONL | libc::ECHOCTL | libc::ECHOPRT | libc::ECHOKE | libc::ISIG);
        // IXON stays: a change of it shows in a packet-mode master's reads.
        quiet.c_iflag &= !(libc::INLCR | libc::IGNCR | libc::ICRNL | libc::IUCLC | libc::ISTRIP);
        quiet.c_oflag &= !libc::OPOST;
        set_termios(slave, libc::TCSETS, &quiet, "TCSETS (quiet)")?;
        write_all(slave, output, "write(slave)")?;
        write_all(master, input, "write(master)")?;
        // The line discipline takes bytes from the pty's buffer in a
        // worker: wait until it has them, before echo comes back on. A
        // poll finding nothing to read runs the worker at once.
        let want = complete_lines(t, input);
        let deadline = Instant::now() + SETTLE;
        loop {
            let mut p = [rustix::event::PollFd::new(&slave, rustix::event::PollFlags::IN)];
            let _ = rustix::event::poll(&mut p, Some(&rustix::event::Timespec { tv_sec: 0, tv_nsec: 0 }));
            let have = get_int(slave, libc::FIONREAD, "FIONREAD")? as usize;
            if have >= want {
                break;
            }
            if Instant::now() > deadline {
                tracing::warn!(have, want, "the terminal did not take all the input queued back");
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    set_termios(slave, libc::TCSETS, t, "TCSETS")
}

/// Bytes read out of a live pair at dump, to put back if the tree runs on.
#[derive(Debug)]
pub struct Queued {
    /// The pair's number (for messages).
    pub index: u32,
    /// Our copy of the task's master.
    pub master: OwnedFd,
    /// A slave of ours, if one was opened to read the input queue.
    pub slave: Option<OwnedFd>,
    /// The termios as dumped (None: the input queue was not read).
    pub termios: Option<libc::termios>,
    /// Read at the master.
    pub output: Vec<u8>,
    /// Read at the slave.
    pub input: Vec<u8>,
}

impl Queued {
    /// Writes the bytes back (errors are logged: the tree runs on anyway).
    pub fn put_back(self) {
        if self.output.is_empty() && self.input.is_empty() {
            return;
        }
        let master = rustix::fd::AsFd::as_fd(&self.master);
        let slave = match self.slave {
            Some(s) => Ok(s),
            None => open_peer(master, libc::O_RDWR | libc::O_NONBLOCK),
        };
        let done = slave.and_then(|s| {
            let s = rustix::fd::AsFd::as_fd(&s);
            let t = match self.termios {
                Some(t) => t,
                None => get_termios(s, libc::TCGETS, "TCGETS")?,
            };
            refill(master, s, &t, &self.output, &self.input)
        });
        match done {
            Ok(()) => tracing::debug!(index = self.index, output = self.output.len(), input = self.input.len(), "pty queues put back"),
            Err((what, e)) => tracing::error!(index = self.index, "putting the queued bytes back into pty {}: {what}: {e}", self.index),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustix::fd::AsFd;

    fn pair() -> (OwnedFd, OwnedFd) {
        let (m, _) = open_master(std::path::Path::new("/dev/ptmx"), 0, libc::O_RDWR).unwrap();
        let s = open_peer(m.as_fd(), libc::O_RDWR | libc::O_NONBLOCK).unwrap();
        (m, s)
    }

    #[test]
    fn queues_read_out_and_back_keep_bytes_and_lines() {
        let (m, s) = pair();
        let mut t = get_termios(s.as_fd(), libc::TCGETS, "TCGETS").unwrap();
        t.c_lflag |= libc::ICANON | libc::ECHO;
        set_termios(s.as_fd(), libc::TCSETS, &t, "TCSETS").unwrap();
        rustix::io::write(&m, b"one\ntwo\npart").unwrap();
        // Nothing to read yet: the poll has the line discipline take the
        // input (and echo it) now.
        let mut p = [rustix::event::PollFd::new(&s, rustix::event::PollFlags::IN)];
        rustix::event::poll(&mut p, Some(&rustix::event::Timespec { tv_sec: 0, tv_nsec: 0 })).unwrap();
        rustix::io::write(&s, b"out\n").unwrap();
        let output = read_output(m.as_fd(), false).unwrap();
        // Echo of the input, then the slave's output with \n made \r\n.
        assert_eq!(output, b"one\r\ntwo\r\npartout\r\n");
        let (t0, input) = read_input(s.as_fd()).unwrap();
        assert_eq!(input, b"one\ntwo\npart");
        assert_eq!(t0.c_lflag & libc::ICANON, libc::ICANON);
        assert!(read_output(m.as_fd(), false).unwrap().is_empty());
        refill(m.as_fd(), s.as_fd(), &t0, &output, &input).unwrap();
        // Line by line again, nothing echoed twice, nothing translated.
        let mut buf = [0u8; 64];
        assert_eq!(rustix::io::read(&s, &mut buf).unwrap(), 4);
        assert_eq!(&buf[..4], b"one\n");
        assert_eq!(rustix::io::read(&s, &mut buf).unwrap(), 4);
        assert_eq!(&buf[..4], b"two\n");
        assert_eq!(rustix::io::read(&s, &mut buf), Err(Errno::AGAIN), "the partial line waits for its end");
        assert_eq!(read_output(m.as_fd(), false).unwrap(), output);
        let back = get_termios(s.as_fd(), libc::TCGETS, "TCGETS").unwrap();
        assert_eq!((back.c_lflag, back.c_iflag, back.c_oflag), (t0.c_lflag, t0.c_iflag, t0.c_oflag));
    }
}
