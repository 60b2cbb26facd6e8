//! Terminals (`FD_TYPES__TTY`), as CRIU writes them: a `tty_file_entry`
//! (flags, owner, `tty_info_id`, and `regf_id`: a REG entry naming the
//! device's path) per description, one `tty_info_entry` per terminal end in
//! `tty-info.img` (type, index, session and foreground group, termios,
//! locked termios, window size, exclusive/packet/lock modes, owner), and the
//! bytes queued in a pty in `tty-data.img` (`tty_data_entry`, by the info id
//! of the end that reads them). The info id is CRIU's: `index << 1 |
//! is_master` (`index` = the pts number, or a fixed number per driver:
//! console 1002, vt 1004, /dev/tty 1006, serial 1010).
//!
//! - **A pty pair inside the tree** (a `/dev/ptmx` master, and slaves
//!   `/dev/pts/N` or none): restored as a new pair (the same number when it
//!   is free, as CRIU), its slaves opened from the new master
//!   (`TIOCGPTPEER`), with termios, window size, packet mode, lock,
//!   exclusive mode, owner, and both queues ([`pty`]). When the pair is the
//!   controlling terminal of a session of the tree, the session's leader
//!   takes it back once it has its session, and its foreground group gets it
//!   as soon as that group exists ([`take_ctty`]).
//! - **A slave whose master is outside** (a job started from a shell): dump
//!   refuses it without `--shell-job`; restore does not reopen it by its
//!   path (`/dev/pts/N` may be someone else's by then) but gives the task
//!   the restoring criu-rs's own terminal (its stdin), or the fd
//!   `--inherit-fd fd[N]:tty[RDEV:DEV]` names, with the dumped termios,
//!   window size and owner. A hung-up slave (its master closed) comes back
//!   hung up.
//! - `/dev/tty` is opened by each task holding it once its controlling
//!   terminal is back; the console, virtual consoles and serial lines (one
//!   device each, nobody else's by then) are reopened by path, as CRIU does.
//! - Refused by name: pty masters opened from a device node of their own
//!   (majors 128-135, not `/dev/ptmx`) and terminals of no known driver.

pub mod pty;

use super::reg::{self, RegDumped};
use super::{CollectCtx, DescPlan, FdKind, FdProbe, FileDesc, FileDumpError, FileKind, FilesSink, InTaskCtx, LoadCtx, OpenCtx, Opened, SeenFiles, SideImage};
use crate::images::pb::{self, FdTypes, TtyType};
use crate::images::{ImageDir, ImageError, ImageKind};
use crate::restore::error::{RestoreError, Result, SysContext};
use rustix::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

/// The kind.
pub struct Tty;

/// Number of `c_cc` entries in the kernel's `struct termios` (and in
/// `termios_entry`).
const NCC: usize = 19;
/// CRIU's fixed indexes of terminals that are not ptys.
const CONSOLE_INDEX: u32 = 1002;
const VT_INDEX: u32 = 1004;
const CTTY_INDEX: u32 = 1006;
const SERIAL_INDEX: u32 = 1010;
/// Where a hung-up slave's throwaway pair comes from.
const PTMX: &str = "/dev/ptmx";

/// Whether a character device number is a terminal: the tty and pts
/// majors, `/dev/tty`, `/dev/console`, `/dev/ptmx`.
pub fn is_tty(rdev: u64) -> bool {
    let (major, minor) = (libc::major(rdev), libc::minor(rdev));
    major == 4 || (128..=143).contains(&major) || (major == 5 && minor <= 2) || major == 188 || major == 204
}

/// Which end of a Unix 98 pty device `rdev` is: `Some(true)` the master
/// (`/dev/ptmx`), `Some(false)` a slave, `None` no pty.
fn pty_end(rdev: u64) -> Option<bool> {
    match (libc::major(rdev), libc::minor(rdev)) {
        (5, 2) => Some(true),
        (136..=143, _) => Some(false),
        _ => None,
    }
}

/// A terminal description as dumped.
#[derive(Debug, Clone, PartialEq)]
pub struct TtyDumped {
    /// `tty_info_entry.id` (`index << 1 | master`).
    pub info_id: u32,
    /// Id of the REG entry naming the device.
    pub regf_id: u32,
    /// The device's path and stat.
    pub reg: RegDumped,
    /// The terminal's state, on the first description of it only.
    pub info: Option<TtyInfo>,
    /// The task and fd it was collected from (for messages, and to read a
    /// pair's queues once the whole tree is collected).
    pub holder: (i32, i32),
    /// Bytes queued for this end to read (a pty's, on the description
    /// carrying `info`).
    pub queued: Vec<u8>,
}

/// One terminal (`tty_info_entry`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TtyInfo {
    /// Driver type.
    pub ty: TtyType,
    /// pty number (ptys only).
    pub pty_index: Option<u32>,
    /// `st_rdev`, `st_dev` (as CRIU writes them: the raw numbers).
    pub rdev: u32,
    /// `st_dev`.
    pub dev: u32,
    /// Session it is the controlling terminal of (0: none).
    pub sid: u32,
    /// Its foreground process group (0: none).
    pub pgrp: u32,
    /// `TIOCGPTLCK`.
    pub locked: bool,
    /// `TIOCGEXCL`.
    pub exclusive: bool,
    /// `TIOCGPKT`.
    pub packet_mode: bool,
    /// Owner of the device node.
    pub uid: u32,
    /// Group of the device node.
    pub gid: u32,
    /// Termios, locked termios, window size (None: hung up).
    pub params: Option<TtyParams>,
}

/// What a terminal's line discipline is set to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TtyParams {
    /// `TCGETS`.
    pub termios: Termios,
    /// `TIOCGLCKTRMIOS`.
    pub locked: Termios,
    /// `TIOCGWINSZ`: rows, cols, xpixel, ypixel.
    pub winsize: [u16; 4],
}

/// The kernel's `struct termios` (no speeds: they live in `c_cflag`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Termios {
    /// Input modes.
    pub iflag: u32,
    /// Output modes.
    pub oflag: u32,
    /// Control modes.
    pub cflag: u32,
    /// Local modes.
    pub lflag: u32,
    /// Line discipline.
    pub line: u8,
    /// Control characters.
    pub cc: [u8; NCC],
}

impl Termios {
    fn from_raw(t: &libc::termios) -> Termios {
        let mut cc = [0u8; NCC];
        cc.copy_from_slice(&t.c_cc[..NCC]);
        Termios { iflag: t.c_iflag, oflag: t.c_oflag, cflag: t.c_cflag, lflag: t.c_lflag, line: t.c_line, cc }
    }

    fn raw(&self) -> libc::termios {
        // SAFETY: an all-zero termios is valid.
        let mut r: libc::termios = unsafe { std::mem::zeroed() };
        (r.c_iflag, r.c_oflag, r.c_cflag, r.c_lflag, r.c_line) = (self.iflag, self.oflag, self.cflag, self.lflag, self.line);
        r.c_cc[..NCC].copy_from_slice(&self.cc);
        r
    }
}

/// How to give the task its terminal back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TtyHow {
    /// A descriptor of criu-rs: its stdin (`--shell-job`) or an
    /// `--inherit-fd` one.
    Inherit(RawFd),
    /// Reopen the path.
    Path(PathBuf),
    /// The master of a pair of the dump: a new pair.
    Master(Box<PairPlan>),
    /// A slave of pair `index`, whose master is in the dump: opened from
    /// the new master.
    Slave(u32),
    /// A hung-up slave (its master was closed): from a throwaway pair whose
    /// master is closed at once.
    HungUp,
    /// `/dev/tty`: opened by each task holding it, once its controlling
    /// terminal is back.
    Current,
}

/// A pty pair of the dump, as its master's plan carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PairPlan {
    /// The multiplexer the master was opened from (`/dev/ptmx`).
    pub ptmx: PathBuf,
    /// Its number at dump (kept when free).
    pub index: u32,
    /// Termios, locked termios, window size.
    pub params: TtyParams,
    /// Queued for the master to read (the slave's output).
    pub output: Vec<u8>,
    /// Queued for the slave to read (its input).
    pub input: Vec<u8>,
    /// `TIOCPKT`.
    pub packet: bool,
    /// `TIOCSPTLCK`.
    pub locked: bool,
    /// `TIOCEXCL` on the master, on the slave.
    pub exclusive: (bool, bool),
    /// A slave of it was dumped.
    pub slave_held: bool,
    /// (session, foreground group) it is the controlling terminal of.
    pub ctty: Option<(i32, i32)>,
}

/// How to recreate a terminal description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TtyPlan {
    /// Where it comes from.
    pub how: TtyHow,
    /// Open flags.
    pub flags: i32,
    /// What to set on it (None: leave it).
    pub params: Option<TtyParams>,
    /// Owner of the device to restore (uid, gid).
    pub owner: Option<(u32, u32)>,
    /// `tty[RDEV:DEV]`, as CRIU names terminals (and `--inherit-fd` keys).
    pub name: String,
}

/// The masters opened so far, by their pair's number at dump.
#[derive(Default)]
pub struct TtyOpen {
    masters: BTreeMap<u32, OwnedFd>,
}

impl FdKind for Tty {
    const FD_TYPE: FdTypes = FdTypes::Tty;
    type Dumped = TtyDumped;
    type Plan = TtyPlan;
    type OpenState = TtyOpen;

    fn claims(p: &FdProbe) -> bool {
        p.file_type() == libc::S_IFCHR && is_tty(p.md.rdev())
    }

    fn collect(p: &FdProbe, cx: &mut CollectCtx<'_>) -> std::result::Result<TtyDumped, FileDumpError> {
        let path = reg::strip_deleted(&p.target).0.to_owned();
        cx.seen.tty.shell_job = cx.opts.shell_job;
        let unsupported = |what: String| FileDumpError::UnsupportedState { at: p.at(), what };
        let rdev = p.md.rdev();
        let (ty, index, master) = match (libc::major(rdev), libc::minor(rdev)) {
            (5, 2) => {
                let fd = cx.copy_fd(p)?;
                let n = pty::get_int(fd.as_fd(), libc::TIOCGPTN, "TIOCGPTN").map_err(|(what, errno)| FileDumpError::Sys { at: p.at(), what: what.into(), errno })?;
                (TtyType::Pty, n as u32, true)
            }
            (128..=135, _) => return Err(unsupported(format!("{path}: a pty master device node (only masters from /dev/ptmx are supported)"))),
            (136..=143, _) => (TtyType::Pty, pts_index(&path).ok_or_else(|| unsupported(format!("{path}: a pty slave without a number")))?, false),
            (5, 1) => (TtyType::Console, CONSOLE_INDEX, false),
            (5, 0) => (TtyType::Ctty, CTTY_INDEX, false),
            (4, 1..=63) => (TtyType::Vt, VT_INDEX, false),
            (188, _) | (204, _) => (TtyType::Serial, SERIAL_INDEX, false),
            (major, minor) => return Err(unsupported(format!("{path}: terminal {major}:{minor} of no known driver"))),
        };
        let info_id = index << 1 | master as u32;
        let info = if cx.seen.first_sight(FdTypes::Tty, info_id as u64) { Some(tty_info(p, cx, ty, index)?) } else { None };
        let regf_id = cx.alloc_id();
        Ok(TtyDumped { info_id, regf_id, reg: reg::dumped(&path, &p.md, None), info, holder: (cx.pid, p.fd), queued: Vec::new() })
    }

    fn write(f: &FileDesc, d: &TtyDumped, sink: &mut FilesSink<'_>) -> std::result::Result<(), ImageError> {
        let tfe = pb::TtyFileEntry {
            id: Some(f.id),
            tty_info_id: Some(d.info_id),
            flags: Some(f.flags),
            fown: Some(f.fown.entry()),
            regf_id: Some(d.regf_id),
        };
        sink.push(pb::FileEntry { r#type: Some(FdTypes::Tty as i32), id: Some(f.id), tty: Some(tfe), ..Default::default() });
        reg::write_reg(sink, d.regf_id, f.flags, f.pos, &f.fown, &d.reg);
        if let Some(info) = &d.info {
            sink.side(ImageKind::TtyInfo)?.write_entry(&info_entry(d.info_id, info))?;
            if !d.queued.is_empty() {
                sink.side(ImageKind::TtyData)?.write_entry(&pb::TtyDataEntry { tty_id: Some(d.info_id), data: Some(d.queued.clone()) })?;
            }
        }
        Ok(())
    }

    fn load(e: &pb::FileEntry, cx: &LoadCtx<'_>) -> Result<TtyPlan> {
        let id = e.id.unwrap_or_default();
        let tfe = e.tty.as_ref().ok_or_else(|| cx.bad(format!("file {id:#x} is TTY without tty_file_entry")))?;
        let info_id = tfe.tty_info_id.unwrap_or_default();
        let infos = cx.side::<TtyInfos>()?;
        let info_path = cx.images.image_path(ImageKind::TtyInfo, 0);
        let info = infos.0.get(&info_id).ok_or_else(|| RestoreError::bad(&info_path, format!("no tty_info_entry {info_id:#x} (terminal {id:#x} of fd {})", cx.fd)))?;
        let name = format!("tty[{:x}:{:x}]", info.rdev.unwrap_or_default(), info.dev.unwrap_or_default());
        let ty = TtyType::try_from(info.r#type.unwrap_or_default()).unwrap_or(TtyType::Unknown);
        let regf = || -> Result<PathBuf> {
            let regf_id = tfe.regf_id.ok_or_else(|| cx.bad(format!("terminal {id:#x} without the REG entry of its path")))?;
            Ok(reg::reg_file(cx.reg_entry(regf_id, "a terminal")?).path)
        };
        let params = info_params(info, &info_path)?;
        let inherited = cx.opts.inherit_fd(&name);
        let master = info_id & 1 == 1;
        let how = match ty {
            _ if inherited.is_some() => TtyHow::Inherit(inherited.unwrap_or_default()),
            TtyType::Pty if info.pty.is_none() => return Err(RestoreError::bad(&info_path, format!("{info_id:#x}: a pty without its number"))),
            TtyType::Pty if master => TtyHow::Master(Box::new(pair_plan(info_id, info, params.clone(), regf()?, cx)?)),
            TtyType::Pty if params.is_none() => TtyHow::HungUp,
            TtyType::Pty if has_master(cx, info_id | 1) => TtyHow::Slave(info_id >> 1),
            TtyType::Pty if cx.opts.shell_job => TtyHow::Inherit(0),
            TtyType::Pty => return Err(cx.unsupported(format!("{name} (a terminal: use --shell-job)"))),
            TtyType::Ctty => TtyHow::Current,
            TtyType::Console | TtyType::Vt | TtyType::Serial => TtyHow::Path(regf()?),
            TtyType::ExtTty => return Err(cx.unsupported(format!("{name}: an external terminal; pass --inherit-fd fd[N]:{name}"))),
            TtyType::Unknown => return Err(RestoreError::bad(&info_path, format!("{info_id:#x}: unknown terminal type {:?}", info.r#type))),
        };
        let owner = info.uid.zip(info.gid);
        Ok(TtyPlan { how, flags: tfe.flags.unwrap_or_default() as i32, params, owner, name })
    }

    fn open(p: &TtyPlan, st: &mut TtyOpen, cx: &OpenCtx<'_>) -> Result<Opened> {
        let sys = |(what, e): pty::CallError| RestoreError::sys(format!("{what} on {}", p.name), e);
        let fd = match &p.how {
            TtyHow::Inherit(own) => {
                // SAFETY: criu-rs's own fds (stdin, --inherit-fd ones) stay
                // open while descriptions are opened.
                let own = unsafe { BorrowedFd::borrow_raw(*own) };
                if !rustix::termios::isatty(own) {
                    return Err(RestoreError::Prepare(format!(
                        "{}: fd {} of criu-rs is not a terminal to give the task (--shell-job hands over the restoring criu-rs's terminal: run it from one)",
                        p.name,
                        own.as_raw_fd()
                    )));
                }
                rustix::io::fcntl_dupfd_cloexec(own, cx.floor).sys(|| format!("inheriting fd {} for {}", own.as_raw_fd(), p.name))?
            }
            TtyHow::Path(path) => {
                let flags = rustix::fs::OFlags::from_bits_retain((p.flags & !(libc::O_CREAT | libc::O_EXCL | libc::O_TRUNC)) as u32)
                    | rustix::fs::OFlags::NOCTTY
                    | rustix::fs::OFlags::CLOEXEC;
                rustix::fs::open(path, flags, rustix::fs::Mode::empty())
                    .map_err(|e| RestoreError::FileChanged { path: path.clone(), problem: format!("cannot reopen the terminal: {e}") })?
            }
            TtyHow::Current => return Ok(Opened::InTask),
            TtyHow::Master(pair) => {
                let (master, got) = pty::open_master(&pair.ptmx, pair.index, p.flags).map_err(sys)?;
                tracing::debug!(index = pair.index, got, "pty master opened");
                let keep = rustix::io::fcntl_dupfd_cloexec(&master, cx.floor).sys(|| format!("dup of {}", p.name))?;
                let finish = rustix::io::fcntl_dupfd_cloexec(&master, cx.floor).sys(|| format!("dup of {}", p.name))?;
                st.masters.insert(pair.index, keep);
                cx.later.borrow_mut().ttys.push(PairFinish { master: finish, pair: (**pair).clone(), name: p.name.clone() });
                super::fdtable::set_status_flags(&master, p.flags)?;
                return Ok(Opened::Fd(master));
            }
            TtyHow::Slave(index) => {
                let Some(master) = st.masters.get(index) else { return Ok(Opened::NotYet) };
                pty::open_peer(master.as_fd(), p.flags & (libc::O_ACCMODE | libc::O_NONBLOCK)).map_err(sys)?
            }
            TtyHow::HungUp => {
                let (master, _) = pty::open_master(PTMX.as_ref(), 0, libc::O_RDWR).map_err(sys)?;
                let slave = pty::open_peer(master.as_fd(), p.flags & libc::O_ACCMODE).map_err(sys)?;
                drop(master);
                super::fdtable::set_status_flags(&slave, p.flags)?;
                return Ok(Opened::Fd(slave));
            }
        };
        if let Some((uid, gid)) = p.owner {
            rustix::fs::fchown(&fd, Some(rustix::fs::Uid::from_raw(uid)), Some(rustix::fs::Gid::from_raw(gid)))
                .sys(|| format!("fchown({}, {uid}, {gid})", p.name))?;
        }
        if let (Some(params), false) = (&p.params, matches!(p.how, TtyHow::Slave(_))) {
            set_params(fd.as_fd(), params).map_err(|(what, e)| RestoreError::sys(format!("{what} on {}", p.name), e))?;
        }
        super::fdtable::set_status_flags(&fd, p.flags)?;
        Ok(Opened::Fd(fd))
    }

    fn open_in_task(p: &TtyPlan, _cx: &InTaskCtx<'_>) -> Result<OwnedFd> {
        let flags = rustix::fs::OFlags::from_bits_retain((p.flags & (libc::O_ACCMODE | libc::O_NONBLOCK | libc::O_APPEND)) as u32) | rustix::fs::OFlags::CLOEXEC;
        rustix::fs::open("/dev/tty", flags, rustix::fs::Mode::empty()).sys(|| "opening /dev/tty (the task's controlling terminal)".into())
    }

    fn name(p: &TtyPlan) -> String {
        p.name.clone()
    }
}

/// As CRIU does for a restored shell job: if the root took over criu-rs's
/// terminal (`--shell-job`) and leads its own process group in criu-rs's
/// session, that group becomes the terminal's foreground group (else it
/// would be stopped by SIGTTIN at its first read). Called in the root once
/// its group exists; nothing to do when the terminal is not criu-rs's
/// controlling terminal.
pub fn take_foreground(plan: &crate::restore::plan::TaskPlan, pid: i32, pgid: i32, sid: i32) -> Result<()> {
    let inherits = plan.descs.values().any(|d| matches!(d, super::DescPlan::Tty(TtyPlan { how: TtyHow::Inherit(0), .. })));
    if !inherits || sid == pid || pgid != pid {
        return Ok(());
    }
    let stdin = rustix::stdio::stdin();
    let ours = rustix::termios::tcgetsid(stdin).ok().zip(rustix::process::getsid(None).ok());
    if !matches!(ours, Some((a, b)) if a == b) {
        return Ok(());
    }
    let group = rustix::process::Pid::from_raw(pid).ok_or_else(|| RestoreError::Prepare(format!("bad pid {pid}")))?;
    without_ttou(|| rustix::termios::tcsetpgrp(stdin, group).sys(|| format!("tcsetpgrp(stdin, {pid}) for the restored shell job")))
}

/// Runs `f` with SIGTTOU blocked: a background group's `tcsetpgrp` raises
/// it otherwise.
fn without_ttou<T>(f: impl FnOnce() -> T) -> T {
    let set = |how| {
        // SAFETY: sigprocmask on this (single-threaded) task with a set
        // built from one signal number; the old mask is not needed.
        unsafe {
            let mut m: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut m);
            libc::sigaddset(&mut m, libc::SIGTTOU);
            libc::sigprocmask(how, &m, std::ptr::null_mut());
        }
    };
    set(libc::SIG_BLOCK);
    let r = f();
    set(libc::SIG_UNBLOCK);
    r
}

/// A pty pair that is the controlling terminal of a session of the tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ctty {
    /// The session (its leader's pid).
    pub sid: i32,
    /// Its foreground group (0: none).
    pub pgrp: i32,
    /// The file id of the pair's master.
    pub master: u32,
}

/// The controlling terminals among `descs` (every description of the tree).
pub fn cttys<'a>(descs: impl Iterator<Item = (&'a u32, &'a DescPlan)>) -> Vec<Ctty> {
    let mut out: Vec<Ctty> = Vec::new();
    for (&id, d) in descs {
        if let DescPlan::Tty(TtyPlan { how: TtyHow::Master(pair), .. }) = d {
            if let (Some((sid, pgrp)), false) = (pair.ctty, out.iter().any(|c| c.master == id)) {
                out.push(Ctty { sid, pgrp, master: id });
            }
        }
    }
    out
}

/// In a task of the tree being restored, once it has its session and
/// group (and before its children are forked): a session leader takes
/// back its controlling terminal (`TIOCSCTTY` on a slave of the pair,
/// opened for that), a member of a terminal's foreground group makes its
/// group the foreground one (`TIOCSPGRP`, through the master). `descs` are
/// the tree's descriptions, inherited from criu-rs.
pub fn take_ctty(cttys: &[Ctty], pid: i32, pgid: i32, sid: i32, descs: &BTreeMap<u32, OwnedFd>) -> Result<()> {
    for c in cttys {
        let Some(master) = descs.get(&c.master) else { continue };
        let master = master.as_fd();
        let sys = |(what, e): pty::CallError| RestoreError::sys(format!("{what} for the controlling terminal of session {}", c.sid), e);
        if c.sid == pid && sid == pid {
            // A locked pair opens no slave: unlocked for the time it takes.
            let locked = pty::get_int(master, libc::TIOCGPTLCK, "TIOCGPTLCK").map_err(sys)? != 0;
            if locked {
                pty::set_int(master, libc::TIOCSPTLCK, 0, "TIOCSPTLCK").map_err(sys)?;
            }
            let slave = pty::open_peer(master, libc::O_RDWR);
            if locked {
                pty::set_int(master, libc::TIOCSPTLCK, 1, "TIOCSPTLCK").map_err(sys)?;
            }
            pty::call(slave.map_err(sys)?.as_fd(), libc::TIOCSCTTY, 0, "TIOCSCTTY").map_err(sys)?;
            tracing::debug!(sid, "controlling terminal taken back");
        }
        if c.pgrp != 0 && c.pgrp == pgid && c.sid == sid {
            without_ttou(|| pty::set_int(master, libc::TIOCSPGRP, c.pgrp, "TIOCSPGRP")).map_err(sys)?;
        }
    }
    Ok(())
}

/// What is left of a pair once every description is open: its queues,
/// its termios (after the queues: echo is off while they are refilled),
/// exclusive and lock modes (last: they keep others from opening it).
#[derive(Debug)]
pub struct PairFinish {
    master: OwnedFd,
    pair: PairPlan,
    name: String,
}

impl PairFinish {
    /// Does it.
    pub fn finish(self) -> Result<()> {
        let p = &self.pair;
        let sys = |(what, e): pty::CallError| RestoreError::sys(format!("{what} on {}", self.name), e);
        let master = self.master.as_fd();
        let need_slave = p.slave_held || p.exclusive.1 || !p.output.is_empty() || !p.input.is_empty();
        let slave = if need_slave { Some(pty::open_peer(master, libc::O_RDWR | libc::O_NONBLOCK).map_err(sys)?) } else { None };
        let [ws_row, ws_col, ws_xpixel, ws_ypixel] = p.params.winsize;
        rustix::termios::tcsetwinsize(master, rustix::termios::Winsize { ws_row, ws_col, ws_xpixel, ws_ypixel }).map_err(|e| sys(("TIOCSWINSZ", e)))?;
        let t = p.params.termios.raw();
        match &slave {
            Some(s) => pty::refill(master, s.as_fd(), &t, &p.output, &p.input).map_err(sys)?,
            None => pty::set_termios(master, libc::TCSETS, &t, "TCSETS").map_err(sys)?,
        }
        set_locked_termios(master, &p.params.locked).map_err(sys)?;
        if p.packet {
            pty::set_int(master, libc::TIOCPKT, 1, "TIOCPKT").map_err(sys)?;
        }
        if p.exclusive.0 {
            pty::call(master, libc::TIOCEXCL, 0, "TIOCEXCL").map_err(sys)?;
        }
        if let (true, Some(s)) = (p.exclusive.1, &slave) {
            pty::call(s.as_fd(), libc::TIOCEXCL, 0, "TIOCEXCL").map_err(sys)?;
        }
        if p.locked {
            pty::set_int(master, libc::TIOCSPTLCK, 1, "TIOCSPTLCK").map_err(sys)?;
        }
        tracing::debug!(index = p.index, output = p.output.len(), input = p.input.len(), "pty pair finished");
        Ok(())
    }
}

// ---------------------------------------------------------------- dump side

/// What the dump keeps about terminals across tasks.
#[derive(Debug, Default)]
pub struct TtyDumpState {
    /// `--shell-job` was given.
    pub shell_job: bool,
    /// Bytes read out of live pairs, to put back unless the tree dies.
    pub queued: Vec<pty::Queued>,
}

impl TtyDumpState {
    /// Puts every queued byte back (the tree runs on).
    pub fn put_back(&mut self) {
        self.queued.drain(..).for_each(pty::Queued::put_back);
    }
}

/// Once every task is collected: pairs are matched by number; a slave
/// whose master is not in the tree needs `--shell-job` (or is hung up);
/// a pair's session and foreground group are read on its master (the
/// session must be the tree's); then, last, the pairs' queues are read
/// (kept in `seen.tty` to be put back if the tree runs on).
pub fn finish_pairs(procs: &mut [crate::dump::model::ProcessDump], seen: &mut SeenFiles) -> std::result::Result<(), FileDumpError> {
    let mut pairs: BTreeMap<u32, Vec<&mut TtyDumped>> = BTreeMap::new();
    for f in procs.iter_mut().flat_map(|p| p.files.files.iter_mut()) {
        if let FileKind::Tty(d) = &mut f.kind {
            if pty_end(d.reg.rdev).is_some() {
                pairs.entry(d.info_id >> 1).or_default().push(d);
            }
        }
    }
    let mut live = Vec::new();
    for (&index, ends) in pairs.iter_mut() {
        let Some(m) = ends.iter().find(|d| d.info_id & 1 == 1) else {
            let hung = ends.iter().any(|d| d.info.as_ref().is_some_and(|i| i.params.is_none()));
            if let (false, false, Some(d)) = (hung, seen.tty.shell_job, ends.first()) {
                return Err(FileDumpError::Terminal { at: format!("task {} fd {}", d.holder.0, d.holder.1), path: d.reg.path.clone() });
            }
            continue;
        };
        let (pid, fd) = m.holder;
        let at = format!("task {pid} fd {fd}");
        let sys = |(what, errno): pty::CallError| FileDumpError::Sys { at: at.clone(), what: what.into(), errno };
        let master = copy_fd(pid, fd).map_err(|e| sys(("pidfd_getfd", e)))?;
        let ask = |req, name| match pty::get_int(master.as_fd(), req, name) {
            Err((_, rustix::io::Errno::NOTTY)) => Ok(0),
            other => other.map_err(sys),
        };
        let (sid, pgrp) = (ask(libc::TIOCGSID, "TIOCGSID")?, ask(libc::TIOCGPGRP, "TIOCGPGRP")?);
        if sid != 0 && !seen.in_tree(sid) {
            return Err(FileDumpError::UnsupportedState {
                at,
                what: format!("pty {index} is the controlling terminal of session {sid}, whose leader is not in the dump"),
            });
        }
        for i in ends.iter_mut().filter_map(|d| d.info.as_mut()) {
            (i.sid, i.pgrp) = (sid as u32, pgrp.max(0) as u32);
        }
        let packet = ends.iter().filter(|d| d.info_id & 1 == 1).find_map(|d| d.info.as_ref()).is_some_and(|i| i.packet_mode);
        let slave_held = ends.iter().any(|d| d.info_id & 1 == 0);
        live.push((index, master, packet, slave_held, at));
    }
    // Last: what is read here must be put back if anything fails later.
    for (index, master, packet, slave_held, at) in live {
        let sys = |(what, errno): pty::CallError| FileDumpError::Sys { at: at.clone(), what: what.into(), errno };
        let output = pty::read_output(master.as_fd(), packet).map_err(sys)?;
        seen.tty.queued.push(pty::Queued { index, master, slave: None, termios: None, output, input: Vec::new() });
        let q = seen.tty.queued.last_mut().expect("just pushed");
        if slave_held {
            let slave = pty::open_peer(q.master.as_fd(), libc::O_RDWR | libc::O_NONBLOCK).map_err(sys)?;
            let (t, input) = pty::read_input(slave.as_fd()).map_err(sys)?;
            (q.slave, q.termios, q.input) = (Some(slave), Some(t), input);
        }
        tracing::debug!(index, output = q.output.len(), input = q.input.len(), "pty queues read");
        for d in pairs.get_mut(&index).into_iter().flatten().filter(|d| d.info.is_some()) {
            d.queued = if d.info_id & 1 == 1 { q.output.clone() } else { q.input.clone() };
        }
    }
    Ok(())
}

/// `pidfd_getfd(pidfd_open(pid), fd)`.
fn copy_fd(pid: i32, fd: i32) -> std::result::Result<OwnedFd, rustix::io::Errno> {
    use rustix::process::{pidfd_getfd, pidfd_open, Pid, PidfdFlags, PidfdGetfdFlags};
    let pidfd = pidfd_open(Pid::from_raw(pid).ok_or(rustix::io::Errno::SRCH)?, PidfdFlags::empty())?;
    pidfd_getfd(&pidfd, fd, PidfdGetfdFlags::empty())
}

/// The number of `/dev/pts/N`.
fn pts_index(path: &str) -> Option<u32> {
    path.rsplit('/').next()?.parse().ok()
}

/// What the images say about the terminal behind the probed fd (a copy of
/// the task's own description, so nothing is opened on the terminal).
/// A pair's session and group are read later, on its master
/// ([`finish_pairs`]).
fn tty_info(p: &FdProbe, cx: &CollectCtx<'_>, ty: TtyType, index: u32) -> std::result::Result<TtyInfo, FileDumpError> {
    let fd = cx.copy_fd(p)?;
    let sys = |what: &'static str| move |errno| FileDumpError::Sys { at: p.at(), what: what.into(), errno };
    // Session and foreground group: what TIOCGSID/TIOCGPGRP say in the task,
    // which answer only for its controlling terminal.
    let stat = crate::proc::stat::read_stat(cx.pid)?;
    let (sid, pgrp) = if stat.tty_nr as u64 == p.md.rdev() { (stat.sid as u32, stat.tpgid.max(0) as u32) } else { (0, 0) };
    // "Not for this terminal" reads as 0; EIO means hung up.
    let flag = |req, name: &'static str| match pty::get_int(fd.as_fd(), req, name) {
        Ok(v) => Ok(Some(v != 0)),
        Err((_, rustix::io::Errno::NOTTY | rustix::io::Errno::INVAL)) => Ok(Some(false)),
        Err((_, rustix::io::Errno::IO)) => Ok(None),
        Err((name, e)) => Err(sys(name)(e)),
    };
    let exclusive = flag(libc::TIOCGEXCL, "TIOCGEXCL")?;
    let (packet_mode, locked) = match ty {
        TtyType::Pty => (flag(libc::TIOCGPKT, "TIOCGPKT")?, flag(libc::TIOCGPTLCK, "TIOCGPTLCK")?),
        _ => (Some(false), Some(false)),
    };
    let params = match pty::get_termios(fd.as_fd(), libc::TCGETS, "TCGETS") {
        Err((_, rustix::io::Errno::IO)) => None,
        Err((name, e)) => return Err(sys(name)(e)),
        Ok(t) => {
            let locked = pty::get_termios(fd.as_fd(), libc::TIOCGLCKTRMIOS, "TIOCGLCKTRMIOS").map_err(|(n, e)| sys(n)(e))?;
            let w = rustix::termios::tcgetwinsize(&fd).map_err(sys("TIOCGWINSZ"))?;
            Some(TtyParams { termios: Termios::from_raw(&t), locked: Termios::from_raw(&locked), winsize: [w.ws_row, w.ws_col, w.ws_xpixel, w.ws_ypixel] })
        }
    };
    let hung = exclusive.is_none() || packet_mode.is_none() || locked.is_none() || params.is_none();
    Ok(TtyInfo {
        ty,
        pty_index: (ty == TtyType::Pty).then_some(index),
        rdev: kdev_raw(p.md.rdev()),
        dev: kdev_raw(p.md.dev()),
        sid,
        pgrp,
        locked: locked.unwrap_or(false),
        exclusive: exclusive.unwrap_or(false),
        packet_mode: packet_mode.unwrap_or(false),
        uid: p.md.uid(),
        gid: p.md.gid(),
        params: if hung { None } else { params },
    })
}

/// A device number as CRIU stores `tty_info_entry.rdev`/`dev`: the
/// userspace `dev_t`, cut to 32 bits.
fn kdev_raw(dev: u64) -> u32 {
    dev as u32
}

fn termios_entry(t: &Termios) -> pb::TermiosEntry {
    pb::TermiosEntry {
        c_iflag: Some(t.iflag),
        c_oflag: Some(t.oflag),
        c_cflag: Some(t.cflag),
        c_lflag: Some(t.lflag),
        c_line: Some(t.line as u32),
        c_ispeed: Some(0),
        c_ospeed: Some(0),
        c_cc: cc_entry(&t.cc),
    }
}

/// `termios_entry.c_cc` as CRIU writes it: CRIU copies the 32 bytes of
/// glibc's `c_cc` into the repeated `uint32` field (19 entries), so the
/// control characters go four to an entry, little-endian, in the first 8
/// entries; the other entries mean nothing (zero here).
fn cc_entry(cc: &[u8; NCC]) -> Vec<u32> {
    let mut bytes = [0u8; 32];
    bytes[..NCC].copy_from_slice(cc);
    let mut v: Vec<u32> = bytes.chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
    v.resize(NCC, 0);
    v
}

/// The control characters of a `termios_entry.c_cc` ([`cc_entry`]); None
/// if it has fewer than the 8 entries they take.
fn cc_from(v: &[u32]) -> Option<[u8; NCC]> {
    let bytes: Vec<u8> = v.get(..8)?.iter().flat_map(|x| x.to_le_bytes()).collect();
    let mut cc = [0u8; NCC];
    cc.copy_from_slice(&bytes[..NCC]);
    Some(cc)
}

fn info_entry(id: u32, i: &TtyInfo) -> pb::TtyInfoEntry {
    let p = i.params.as_ref();
    pb::TtyInfoEntry {
        id: Some(id),
        r#type: Some(i.ty as i32),
        locked: Some(i.locked),
        exclusive: Some(i.exclusive),
        packet_mode: Some(i.packet_mode),
        sid: Some(i.sid),
        pgrp: Some(i.pgrp),
        rdev: Some(i.rdev),
        termios: p.map(|p| termios_entry(&p.termios)),
        termios_locked: p.map(|p| termios_entry(&p.locked)),
        winsize: p.map(|p| {
            let [r, c, x, y] = p.winsize.map(u32::from);
            pb::WinsizeEntry { ws_row: Some(r), ws_col: Some(c), ws_xpixel: Some(x), ws_ypixel: Some(y) }
        }),
        pty: i.pty_index.map(|index| pb::TtyPtyEntry { index: Some(index) }),
        dev: Some(i.dev),
        uid: Some(i.uid),
        gid: Some(i.gid),
    }
}

// ------------------------------------------------------------- restore side

/// `tty-info.img` by id.
struct TtyInfos(BTreeMap<u32, pb::TtyInfoEntry>);

impl SideImage for TtyInfos {
    fn read(images: &ImageDir) -> Result<Self> {
        let mut out = BTreeMap::new();
        if !images.exists(ImageKind::TtyInfo, 0) {
            return Ok(TtyInfos(out));
        }
        let path = images.image_path(ImageKind::TtyInfo, 0);
        for e in images.read_all::<pb::TtyInfoEntry>(ImageKind::TtyInfo, 0)? {
            let id = e.id.unwrap_or_default();
            if out.insert(id, e).is_some() {
                return Err(RestoreError::bad(&path, format!("tty_info_entry {id:#x} appears twice")));
            }
        }
        Ok(TtyInfos(out))
    }
}

/// `tty-data.img`: queued bytes by the info id of the end that reads them.
struct TtyDatas(BTreeMap<u32, Vec<u8>>);

impl SideImage for TtyDatas {
    fn read(images: &ImageDir) -> Result<Self> {
        let mut out = BTreeMap::new();
        if !images.exists(ImageKind::TtyData, 0) {
            return Ok(TtyDatas(out));
        }
        let path = images.image_path(ImageKind::TtyData, 0);
        for e in images.read_all::<pb::TtyDataEntry>(ImageKind::TtyData, 0)? {
            let id = e.tty_id.unwrap_or_default();
            if out.insert(id, e.data.unwrap_or_default()).is_some() {
                return Err(RestoreError::bad(&path, format!("tty_data_entry for {id:#x} appears twice")));
            }
        }
        Ok(TtyDatas(out))
    }
}

/// The termios, locked termios and window size of `info` (None: hung up;
/// all three or none).
fn info_params(info: &pb::TtyInfoEntry, info_path: &std::path::Path) -> Result<Option<TtyParams>> {
    let id = info.id.unwrap_or_default();
    let termios = |t: &pb::TermiosEntry, what: &str| {
        termios_from(t).ok_or_else(|| RestoreError::bad(info_path, format!("{id:#x}: {what} with {} control characters", t.c_cc.len())))
    };
    match (&info.termios, &info.termios_locked, &info.winsize) {
        (Some(t), Some(l), Some(w)) => Ok(Some(TtyParams {
            termios: termios(t, "termios")?,
            locked: termios(l, "locked termios")?,
            winsize: [w.ws_row, w.ws_col, w.ws_xpixel, w.ws_ypixel].map(|v| v.unwrap_or_default() as u16),
        })),
        (None, None, None) => Ok(None),
        _ => Err(RestoreError::bad(info_path, format!("{id:#x}: some of termios, locked termios and window size, not all"))),
    }
}

/// Whether `files.img` has a description of terminal `info_id`.
fn has_master(cx: &LoadCtx<'_>, info_id: u32) -> bool {
    cx.files.values().any(|f| f.tty.as_ref().and_then(|t| t.tty_info_id) == Some(info_id))
}

/// The pair whose master is `info` (`params`, at `ptmx`), with its slave's
/// info and both queues.
fn pair_plan(info_id: u32, info: &pb::TtyInfoEntry, params: Option<TtyParams>, ptmx: PathBuf, cx: &LoadCtx<'_>) -> Result<PairPlan> {
    let info_path = cx.images.image_path(ImageKind::TtyInfo, 0);
    let params = params.ok_or_else(|| RestoreError::bad(&info_path, format!("{info_id:#x}: a pty master without termios")))?;
    let infos = cx.side::<TtyInfos>()?;
    let slave = infos.0.get(&(info_id & !1));
    let datas = cx.side::<TtyDatas>()?;
    let queued = |id: u32| datas.0.get(&id).cloned().unwrap_or_default();
    let sid = [Some(info), slave].into_iter().flatten().map(|i| (i.sid.unwrap_or_default() as i32, i.pgrp.unwrap_or_default() as i32)).find(|s| s.0 > 0);
    Ok(PairPlan {
        ptmx,
        index: info.pty.as_ref().and_then(|p| p.index).unwrap_or(info_id >> 1),
        params,
        output: queued(info_id),
        input: queued(info_id & !1),
        packet: info.packet_mode.unwrap_or_default(),
        locked: info.locked.unwrap_or_default(),
        exclusive: (info.exclusive.unwrap_or_default(), slave.and_then(|s| s.exclusive).unwrap_or_default()),
        slave_held: slave.is_some(),
        ctty: sid,
    })
}

fn termios_from(e: &pb::TermiosEntry) -> Option<Termios> {
    if e.c_cc.len() > 64 {
        return None;
    }
    let cc = cc_from(&e.c_cc)?;
    Some(Termios {
        iflag: e.c_iflag.unwrap_or_default(),
        oflag: e.c_oflag.unwrap_or_default(),
        cflag: e.c_cflag.unwrap_or_default(),
        lflag: e.c_lflag.unwrap_or_default(),
        line: e.c_line.unwrap_or_default() as u8,
        cc,
    })
}

/// `TIOCSLCKTRMIOS`, only if it differs (it needs CAP_SYS_ADMIN).
fn set_locked_termios(fd: BorrowedFd<'_>, locked: &Termios) -> pty::CallResult<()> {
    let now = pty::get_termios(fd, libc::TIOCGLCKTRMIOS, "TIOCGLCKTRMIOS")?;
    if Termios::from_raw(&now) != *locked {
        pty::set_termios(fd, libc::TIOCSLCKTRMIOS, &locked.raw(), "TIOCSLCKTRMIOS")?;
    }
    Ok(())
}

/// `TIOCSLCKTRMIOS` (if it differs), `TCSETS`, `TIOCSWINSZ`.
fn set_params(fd: BorrowedFd<'_>, p: &TtyParams) -> pty::CallResult<()> {
    set_locked_termios(fd, &p.locked)?;
    pty::set_termios(fd, libc::TCSETS, &p.termios.raw(), "TCSETS")?;
    let [ws_row, ws_col, ws_xpixel, ws_ypixel] = p.winsize;
    rustix::termios::tcsetwinsize(fd, rustix::termios::Winsize { ws_row, ws_col, ws_xpixel, ws_ypixel }).map_err(|e| ("TIOCSWINSZ", e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::files::roundtrip::{crit_decodes, desc, roundtrip};
    use crate::files::{DescPlan, FileKind, LoadOptions};

    fn slave(info: Option<TtyInfo>, regf_id: u32) -> FileKind {
        let reg = RegDumped { path: "/dev/pts/3".into(), size: 0, mode: libc::S_IFCHR | 0o620, dev_ino: (0x19, 6), rdev: libc::makedev(136, 3), unlinked: false, ghost: None, external: false };
        FileKind::Tty(TtyDumped { info_id: 6, regf_id, reg, info, holder: (100, 0), queued: Vec::new() })
    }

    fn info() -> TtyInfo {
        let termios = Termios { iflag: 0x500, oflag: 5, cflag: 0xbf, lflag: 0x8a3b, line: 0, cc: [3; NCC] };
        TtyInfo {
            ty: TtyType::Pty,
            pty_index: Some(3),
            rdev: libc::makedev(136, 3) as u32,
            dev: 0x19,
            sid: 100,
            pgrp: 101,
            locked: false,
            exclusive: false,
            packet_mode: false,
            uid: 1000,
            gid: 5,
            params: Some(TtyParams { locked: Termios { cc: [0; NCC], ..termios.clone() }, termios, winsize: [24, 80, 0, 0] }),
        }
    }

    #[test]
    fn shell_job_terminal_round_trips_as_inherited() {
        let descs = [desc(1, libc::O_RDWR, slave(Some(info()), 10)), desc(2, libc::O_WRONLY, slave(None, 11))];
        let opts = LoadOptions { shell_job: true, ..Default::default() };
        let (plans, tmp) = roundtrip(&descs, &opts);
        let plans = plans.unwrap();
        let DescPlan::Tty(p) = &plans[&1] else { panic!("{plans:?}") };
        assert_eq!(p.how, TtyHow::Inherit(0));
        assert_eq!(p.params, info().params);
        assert_eq!((p.owner, p.name.as_str()), (Some((1000, 5)), "tty[8803:19]"));
        let DescPlan::Tty(p2) = &plans[&2] else { panic!("{plans:?}") };
        assert_eq!(p2.flags, libc::O_WRONLY);
        for name in ["files.img", "tty-info.img"] {
            crit_decodes(&tmp.path().join(name));
        }
        // --inherit-fd names the terminal as CRIU does.
        let opts = LoadOptions { shell_job: false, inherit_fds: vec![("tty[8803:19]".into(), 7)], ..Default::default() };
        let DescPlan::Tty(p) = &roundtrip(&descs, &opts).0.unwrap()[&1] else { panic!() };
        assert_eq!(p.how, TtyHow::Inherit(7));
    }

    #[test]
    fn pty_pair_round_trips_with_its_queues_and_session() {
        let ptmx = RegDumped { path: "/dev/ptmx".into(), rdev: libc::makedev(5, 2), mode: libc::S_IFCHR | 0o666, dev_ino: (0x19, 2), ..match slave(None, 0) {
            FileKind::Tty(d) => d.reg,
            _ => unreachable!(),
        } };
        let mut minfo = info();
        minfo.packet_mode = true;
        minfo.exclusive = true;
        let master = TtyDumped { info_id: 7, regf_id: 20, reg: ptmx, info: Some(minfo), holder: (100, 1), queued: b"out\r\n".to_vec() };
        let FileKind::Tty(mut sl) = slave(Some(info()), 21) else { unreachable!() };
        sl.queued = b"in\npart".to_vec();
        let descs = [desc(1, libc::O_RDWR, FileKind::Tty(master)), desc(2, libc::O_RDWR, FileKind::Tty(sl))];
        let (plans, tmp) = roundtrip(&descs, &LoadOptions::default());
        let plans = plans.unwrap();
        let DescPlan::Tty(TtyPlan { how: TtyHow::Master(pair), .. }) = &plans[&1] else { panic!("{plans:?}") };
        assert_eq!((pair.index, pair.ptmx.as_path()), (3, std::path::Path::new("/dev/ptmx")));
        assert_eq!((pair.output.as_slice(), pair.input.as_slice()), (&b"out\r\n"[..], &b"in\npart"[..]));
        assert_eq!((pair.packet, pair.exclusive, pair.slave_held, pair.ctty), (true, (true, false), true, Some((100, 101))));
        assert_eq!(pair.params, info().params.unwrap());
        let DescPlan::Tty(p) = &plans[&2] else { panic!("{plans:?}") };
        assert_eq!(p.how, TtyHow::Slave(3));
        assert_eq!(cttys(plans.iter()), [Ctty { sid: 100, pgrp: 101, master: 1 }]);
        for name in ["files.img", "tty-info.img", "tty-data.img"] {
            crit_decodes(&tmp.path().join(name));
        }
    }

    #[test]
    fn control_characters_are_packed_as_criu_packs_them() {
        let mut cc = [0u8; NCC];
        cc.iter_mut().enumerate().for_each(|(i, c)| *c = i as u8 + 1);
        let v = cc_entry(&cc);
        assert_eq!(v.len(), NCC, "CRIU wants at least 19 entries");
        assert_eq!(v[0], 0x0403_0201);
        assert_eq!(v[4], 0x0013_1211);
        assert_eq!(cc_from(&v), Some(cc));
        assert_eq!(cc_from(&v[..7]), None);
    }

    #[test]
    fn slave_without_its_master_is_hung_up_or_a_shell_job() {
        let mut hung = info();
        hung.params = None;
        let (plans, _tmp) = roundtrip(&[desc(1, libc::O_RDWR, slave(Some(hung), 10))], &LoadOptions::default());
        let DescPlan::Tty(p) = &plans.unwrap()[&1] else { panic!() };
        assert_eq!(p.how, TtyHow::HungUp);
    }

    #[test]
    fn terminal_without_shell_job_is_refused_by_name() {
        let (plans, _tmp) = roundtrip(&[desc(1, libc::O_RDWR, slave(Some(info()), 10))], &LoadOptions::default());
        let err = plans.unwrap_err().to_string();
        assert!(err.contains("unsupported: fd 0: tty[8803:19] (a terminal: use --shell-job)"), "{err}");
    }
}
