//! The guard: a small process forked by the daemon at start that holds a
//! second reference to every task's userfaultfd until the daemon reports the
//! task complete.
//!
//! While any reference is open the kernel keeps the task's lazy ranges
//! registered, so a fault the dead daemon never answers blocks (killably)
//! instead of mapping a zero page. When the daemon's end of the guard socket
//! closes (it exited or was killed) with tasks not reported complete, the
//! guard SIGKILLs those tasks and every descendant they have (children
//! forked after restore), logs it, and only then drops its references.
//!
//! Messages (`SOCK_SEQPACKET`, 16 bytes: op u32, pid u32, token u64):
//! ADD (op 1, SCM_RIGHTS `[uffd, pidfd?]`), CHILD (op 3: a forked task whose
//! pid is not known yet, `pid` is its parent's; SCM_RIGHTS `[uffd]`) and DONE
//! (op 2).

use std::collections::HashMap;
use std::io::IoSlice;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use rustix::io::Errno;
use rustix::net::{
    recvmsg, sendmsg, socketpair, AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage,
    RecvFlags, SendAncillaryBuffer, SendAncillaryMessage, SendFlags, SocketFlags, SocketType,
};
use rustix::process::{pidfd_open, pidfd_send_signal, Pid, PidfdFlags, Signal};

const ADD: u32 = 1;
const DONE: u32 = 2;
const CHILD: u32 = 3;

/// The daemon's handle on its guard process.
pub struct Guard {
    sock: OwnedFd,
    pid: i32,
}

impl Guard {
    /// Forks the guard. Call while the process is single-threaded.
    pub fn spawn() -> Result<Guard, Errno> {
        let (ours, theirs) = socketpair(
            AddressFamily::UNIX,
            SocketType::SEQPACKET,
            SocketFlags::CLOEXEC,
            None,
        )?;
        // SAFETY: the daemon is single-threaded when it starts the guard, so
        // the child may run ordinary Rust code; it never returns (it ends in
        // `_exit`).
        match unsafe { libc::fork() } {
            -1 => Err(Errno::from_raw_os_error(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))),
            0 => {
                drop(ours);
                run(theirs)
            }
            pid => Ok(Guard { sock: ours, pid }),
        }
    }

    /// The guard's pid.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Hands the guard a reference to `uffd` of task `token` (`pid` 0 when
    /// not known yet, e.g. a child reported by a fork event).
    pub fn add(&self, token: u64, pid: u32, uffd: BorrowedFd<'_>, pidfd: Option<BorrowedFd<'_>>) -> Result<(), Errno> {
        let fds: Vec<BorrowedFd<'_>> = std::iter::once(uffd).chain(pidfd).collect();
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(2))];
        let mut anc = SendAncillaryBuffer::new(&mut space);
        anc.push(SendAncillaryMessage::ScmRights(&fds));
        sendmsg(&self.sock, &[IoSlice::new(&msg(ADD, pid, token))], &mut anc, SendFlags::NOSIGNAL)?;
        Ok(())
    }

    /// Hands the guard the uffd of a task reported by a fork event of the
    /// process `ppid`, pid still unknown: on the daemon's death the guard
    /// kills `ppid`'s descendants.
    pub fn add_child(&self, token: u64, ppid: u32, uffd: BorrowedFd<'_>) -> Result<(), Errno> {
        let fds = [uffd];
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
        let mut anc = SendAncillaryBuffer::new(&mut space);
        anc.push(SendAncillaryMessage::ScmRights(&fds));
        sendmsg(&self.sock, &[IoSlice::new(&msg(CHILD, ppid, token))], &mut anc, SendFlags::NOSIGNAL)?;
        Ok(())
    }

    /// Tells the guard task `token` is complete (or gone): it drops its
    /// references.
    pub fn done(&self, token: u64) -> Result<(), Errno> {
        rustix::net::send(&self.sock, &msg(DONE, 0, token), SendFlags::NOSIGNAL)?;
        Ok(())
    }
}

fn msg(op: u32, pid: u32, token: u64) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[0..4].copy_from_slice(&op.to_le_bytes());
    b[4..8].copy_from_slice(&pid.to_le_bytes());
    b[8..16].copy_from_slice(&token.to_le_bytes());
    b
}

struct Held {
    /// The task's pid, or (`child`) its parent's.
    pid: u32,
    child: bool,
    _uffd: OwnedFd,
    pidfd: Option<OwnedFd>,
}

/// The guard process's body.
fn run(sock: OwnedFd) -> ! {
    // Own session, deaf to the terminal and polite signals: only the
    // daemon's end closing makes it act.
    let _ = rustix::process::setsid();
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT, libc::SIGPIPE] {
        // SAFETY: setting a signal to SIG_IGN installs no handler code.
        unsafe { libc::signal(sig, libc::SIG_IGN) };
    }
    // Drop every descriptor inherited from the daemon but our socket
    // (stdio stays for the log).
    // SAFETY: dup2 onto fd 3 then closing 4.. only affects this process's
    // table; nothing here uses the closed descriptors.
    unsafe {
        if sock.as_raw_fd() != 3 {
            libc::dup2(sock.as_raw_fd(), 3);
        }
        libc::syscall(libc::SYS_close_range, 4u32, u32::MAX, 0u32);
    }
    std::mem::forget(sock);
    // SAFETY: fd 3 is our socket, duplicated above; we own it from here.
    let sock: OwnedFd = unsafe { std::os::fd::FromRawFd::from_raw_fd(3) };
    let mut held: HashMap<u64, Held> = HashMap::new();
    loop {
        let mut b = [0u8; 16];
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(2))];
        let mut anc = RecvAncillaryBuffer::new(&mut space);
        let r = match recvmsg(&sock, &mut [std::io::IoSliceMut::new(&mut b)], &mut anc, RecvFlags::CMSG_CLOEXEC) {
            Ok(r) => r,
            Err(Errno::INTR) => continue,
            Err(_) => break,
        };
        let mut fds: Vec<OwnedFd> = Vec::new();
        for m in anc.drain() {
            if let RecvAncillaryMessage::ScmRights(it) = m {
                fds.extend(it);
            }
        }
        if r.bytes == 0 {
            break;
        }
        let op = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        let pid = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
        let token = u64::from_le_bytes([b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]]);
        match op {
            ADD | CHILD if !fds.is_empty() => {
                let mut it = fds.into_iter();
                if let Some(uffd) = it.next() {
                    held.insert(token, Held { pid, child: op == CHILD, _uffd: uffd, pidfd: it.next() });
                }
            }
            DONE => {
                held.remove(&token);
            }
            _ => {}
        }
    }
    if !held.is_empty() {
        kill_all(&held);
    }
    drop(held);
    // SAFETY: leaving the forked guard without running the daemon's exit
    // handlers or destructors.
    unsafe { libc::_exit(0) }
}

/// The daemon is gone with tasks incomplete: kill them and their
/// descendants, before the userfaultfds are released.
fn kill_all(held: &HashMap<u64, Held>) {
    let mut tree: Vec<u32> = Vec::new();
    for h in held.values().filter(|h| h.pid != 0) {
        descendants(h.pid, &mut tree);
    }
    let mut killed = Vec::new();
    for h in held.values().filter(|h| !h.child) {
        if let Some(pidfd) = &h.pidfd {
            if pidfd_send_signal(pidfd.as_fd(), Signal::KILL).is_ok() {
                killed.push(h.pid);
            }
        }
    }
    for &pid in &tree {
        let Some(p) = Pid::from_raw(pid as i32) else { continue };
        if let Ok(fd) = pidfd_open(p, PidfdFlags::empty()) {
            if pidfd_send_signal(&fd, Signal::KILL).is_ok() {
                killed.push(pid);
            }
        }
    }
    tracing::error!(
        "lazy-pages daemon ended with {} task(s) not fully restored: killed {:?} so none runs on missing memory",
        held.len(),
        killed
    );
    eprintln!(
        "criu-rs lazy-pages guard: daemon ended with {} incomplete task(s); killed {:?}",
        held.len(),
        killed
    );
}

/// Appends every descendant of `pid` (children of all its threads, recursively).
fn descendants(pid: u32, out: &mut Vec<u32>) {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return };
    for t in tasks.flatten() {
        let Ok(s) = std::fs::read_to_string(t.path().join("children")) else { continue };
        for c in s.split_whitespace().filter_map(|c| c.parse::<u32>().ok()) {
            if !out.contains(&c) {
                out.push(c);
                descendants(c, out);
            }
        }
    }
}
