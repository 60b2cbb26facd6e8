//! Terminals (`FD_TYPES__TTY`), as CRIU writes them: a `tty_file_entry`
//! (flags, owner, `tty_info_id`, and `regf_id`: a REG entry naming the
//! device's path) per description, and one `tty_info_entry` per terminal in
//! `tty-info.img` (type, index, session and foreground group, termios,
//! locked termios, window size, exclusive/packet/lock modes, owner). The
//! info id is CRIU's: `index << 1 | is_master` (`index` = the pts number,
//! or a fixed number per driver: console 1002, vt 1004, /dev/tty 1006,
//! serial 1010).
//!
//! The rule (`--shell-job`): a job started from a shell holds the shell's
//! terminal, whose other end is outside the dump. Dump refuses terminals
//! without `-j`; with it, each is recorded as above. Restore does not
//! reopen a pty slave by its path (`/dev/pts/N` may be someone else's by
//! then): like CRIU, it gives the task the restoring criu-rs's own terminal
//! (its stdin), or the fd `--inherit-fd fd[N]:tty[RDEV:DEV]` names, and
//! applies the dumped termios, window size and owner to it. `/dev/tty`, the
//! console, virtual consoles and serial lines are reopened by path.
//!
//! Not yet: a pty pair whose master (`/dev/ptmx`) is in the dump too;
//! refused at dump by name.

use super::reg::{self, RegDumped};
use super::{CollectCtx, FdKind, FdProbe, FileDesc, FileDumpError, FilesSink, LoadCtx, OpenCtx, Opened, SideImage};
use crate::images::pb::{self, FdTypes, TtyType};
use crate::images::{ImageDir, ImageError, ImageKind};
use crate::restore::error::{RestoreError, Result, SysContext};
use rustix::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
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

/// Whether a character device number is a terminal: the tty and pts
/// majors, `/dev/tty`, `/dev/console`, `/dev/ptmx`.
pub fn is_tty(rdev: u64) -> bool {
    let (major, minor) = (libc::major(rdev), libc::minor(rdev));
    major == 4 || (128..=143).contains(&major) || (major == 5 && minor <= 2) || major == 188 || major == 204
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

/// How to give the task its terminal back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TtyHow {
    /// A descriptor of criu-rs: its stdin (`--shell-job`) or an
    /// `--inherit-fd` one.
    Inherit(RawFd),
    /// Reopen the path.
    Path(PathBuf),
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

impl FdKind for Tty {
    const FD_TYPE: FdTypes = FdTypes::Tty;
    type Dumped = TtyDumped;
    type Plan = TtyPlan;
    type OpenState = ();

    fn claims(p: &FdProbe) -> bool {
        p.file_type() == libc::S_IFCHR && is_tty(p.md.rdev())
    }

    fn collect(p: &FdProbe, cx: &mut CollectCtx<'_>) -> std::result::Result<TtyDumped, FileDumpError> {
        let path = reg::strip_deleted(&p.target).0.to_owned();
        if !cx.opts.shell_job {
            return Err(FileDumpError::Terminal { at: p.at(), path });
        }
        let unsupported = |what: String| FileDumpError::UnsupportedState { at: p.at(), what };
        let rdev = p.md.rdev();
        let (ty, index) = match (libc::major(rdev), libc::minor(rdev)) {
            (5, 2) | (128..=135, _) => return Err(unsupported(format!("{path}: a pty master (pairs inside the dump are not supported yet)"))),
            (136..=143, _) => (TtyType::Pty, pts_index(&path).ok_or_else(|| unsupported(format!("{path}: a pty slave without a number")))?),
            (5, 1) => (TtyType::Console, CONSOLE_INDEX),
            (5, 0) => (TtyType::Ctty, CTTY_INDEX),
            (4, 1..=63) => (TtyType::Vt, VT_INDEX),
            (188, _) | (204, _) => (TtyType::Serial, SERIAL_INDEX),
            (major, minor) => return Err(unsupported(format!("{path}: terminal {major}:{minor} of no known driver"))),
        };
        let info_id = index << 1;
        let info = if cx.seen.first_sight(FdTypes::Tty, info_id as u64) { Some(tty_info(p, cx, ty, index)?) } else { None };
        let regf_id = cx.alloc_id();
        Ok(TtyDumped { info_id, regf_id, reg: reg::dumped(&path, &p.md, None), info })
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
        let inherited = cx.opts.inherit_fd(&name);
        let how = match ty {
            _ if inherited.is_some() => TtyHow::Inherit(inherited.unwrap_or_default()),
            TtyType::Pty if info_id & 1 == 0 && cx.opts.shell_job => TtyHow::Inherit(0),
            TtyType::Pty if info_id & 1 == 0 => return Err(cx.unsupported(format!("{name} (a terminal: use --shell-job)"))),
            TtyType::Pty => return Err(cx.unsupported(format!("{name}: a pty master (pairs are not supported yet)"))),
            TtyType::Ctty | TtyType::Console | TtyType::Vt | TtyType::Serial => TtyHow::Path(regf()?),
            TtyType::ExtTty => return Err(cx.unsupported(format!("{name}: an external terminal; pass --inherit-fd fd[N]:{name}"))),
            TtyType::Unknown => return Err(RestoreError::bad(&info_path, format!("{info_id:#x}: unknown terminal type {:?}", info.r#type))),
        };
        let params = match (&info.termios, &info.termios_locked, &info.winsize) {
            (Some(t), Some(l), Some(w)) => Some(TtyParams {
                termios: termios_from(t).ok_or_else(|| RestoreError::bad(&info_path, format!("{info_id:#x}: termios with {} control characters", t.c_cc.len())))?,
                locked: termios_from(l).ok_or_else(|| RestoreError::bad(&info_path, format!("{info_id:#x}: locked termios with {} control characters", l.c_cc.len())))?,
                winsize: [w.ws_row, w.ws_col, w.ws_xpixel, w.ws_ypixel].map(|v| v.unwrap_or_default() as u16),
            }),
            _ => None,
        };
        let owner = info.uid.zip(info.gid);
        Ok(TtyPlan { how, flags: tfe.flags.unwrap_or_default() as i32, params, owner, name })
    }

    fn open(p: &TtyPlan, _st: &mut (), cx: &OpenCtx<'_>) -> Result<Opened> {
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
        };
        if let Some((uid, gid)) = p.owner {
            rustix::fs::fchown(&fd, Some(rustix::fs::Uid::from_raw(uid)), Some(rustix::fs::Gid::from_raw(gid)))
                .sys(|| format!("fchown({}, {uid}, {gid})", p.name))?;
        }
        if let Some(params) = &p.params {
            set_params(fd.as_fd(), params).map_err(|(what, e)| RestoreError::sys(format!("{what} on {}", p.name), e))?;
        }
        super::fdtable::set_status_flags(&fd, p.flags)?;
        Ok(Opened::Fd(fd))
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
    // A background group's tcsetpgrp raises SIGTTOU unless it is blocked.
    let ttou = [libc::SIGTTOU];
    let set = |how| {
        // SAFETY: sigprocmask on this (single-threaded) task with a set built
        // from one signal number; the old mask is not needed.
        unsafe {
            let mut m: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut m);
            ttou.iter().for_each(|&s| {
                libc::sigaddset(&mut m, s);
            });
            libc::sigprocmask(how, &m, std::ptr::null_mut());
        }
    };
    set(libc::SIG_BLOCK);
    let done = rustix::termios::tcsetpgrp(stdin, group).sys(|| format!("tcsetpgrp(stdin, {pid}) for the restored shell job"));
    set(libc::SIG_UNBLOCK);
    done
}

// ---------------------------------------------------------------- dump side

/// The number of `/dev/pts/N`.
fn pts_index(path: &str) -> Option<u32> {
    path.rsplit('/').next()?.parse().ok()
}

/// `ioctl(fd, req, &mut int)`.
fn ioctl_int(fd: BorrowedFd<'_>, req: libc::Ioctl) -> std::result::Result<i32, rustix::io::Errno> {
    let mut v: libc::c_int = 0;
    // SAFETY: a "get int" terminal ioctl writing one int to a valid pointer.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), req, &mut v) };
    if r < 0 {
        return Err(rustix::io::Errno::from_raw_os_error(std::io::Error::last_os_error().raw_os_error().unwrap_or(0)));
    }
    Ok(v)
}

/// `ioctl(fd, TCGETS or TIOCGLCKTRMIOS, &termios)`.
fn get_termios(fd: BorrowedFd<'_>, req: libc::Ioctl) -> std::result::Result<Termios, rustix::io::Errno> {
    // SAFETY: an all-zero termios is valid; the ioctl writes the kernel's
    // smaller struct termios into its head.
    let mut t: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: a valid pointer to a struct at least as large as the kernel's.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), req, &mut t) };
    if r < 0 {
        return Err(rustix::io::Errno::from_raw_os_error(std::io::Error::last_os_error().raw_os_error().unwrap_or(0)));
    }
    let mut cc = [0u8; NCC];
    cc.copy_from_slice(&t.c_cc[..NCC]);
    Ok(Termios { iflag: t.c_iflag, oflag: t.c_oflag, cflag: t.c_cflag, lflag: t.c_lflag, line: t.c_line, cc })
}

/// What the images say about the terminal behind the probed fd (a copy of
/// the task's own description, so nothing is opened on the terminal).
fn tty_info(p: &FdProbe, cx: &CollectCtx<'_>, ty: TtyType, index: u32) -> std::result::Result<TtyInfo, FileDumpError> {
    let fd = cx.copy_fd(p)?;
    let sys = |what: &str| {
        let what = what.to_owned();
        move |errno| FileDumpError::Sys { at: p.at(), what, errno }
    };
    // Session and foreground group: what TIOCGSID/TIOCGPGRP say in the task,
    // which answer only for its controlling terminal.
    let stat = crate::proc::stat::read_stat(cx.pid)?;
    let (sid, pgrp) = if stat.tty_nr as u64 == p.md.rdev() { (stat.sid as u32, stat.tpgid.max(0) as u32) } else { (0, 0) };
    // "Not for this terminal" reads as 0; EIO means hung up.
    let flag = |req, name: &str| match ioctl_int(fd.as_fd(), req) {
        Ok(v) => Ok(Some(v != 0)),
        Err(rustix::io::Errno::NOTTY) | Err(rustix::io::Errno::INVAL) => Ok(Some(false)),
        Err(rustix::io::Errno::IO) => Ok(None),
        Err(e) => Err(sys(name)(e)),
    };
    let exclusive = flag(libc::TIOCGEXCL, "TIOCGEXCL")?;
    let (packet_mode, locked) = match ty {
        TtyType::Pty => (flag(libc::TIOCGPKT, "TIOCGPKT")?, flag(libc::TIOCGPTLCK, "TIOCGPTLCK")?),
        _ => (Some(false), Some(false)),
    };
    let params = match get_termios(fd.as_fd(), libc::TCGETS) {
        Err(rustix::io::Errno::IO) => None,
        Err(e) => return Err(sys("TCGETS")(e)),
        Ok(termios) => {
            let locked = get_termios(fd.as_fd(), libc::TIOCGLCKTRMIOS).map_err(sys("TIOCGLCKTRMIOS"))?;
            let w = rustix::termios::tcgetwinsize(&fd).map_err(sys("TIOCGWINSZ"))?;
            Some(TtyParams { termios, locked, winsize: [w.ws_row, w.ws_col, w.ws_xpixel, w.ws_ypixel] })
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
        c_cc: t.cc.iter().map(|&c| c as u32).collect(),
    }
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

fn termios_from(e: &pb::TermiosEntry) -> Option<Termios> {
    if e.c_cc.len() > NCC + 13 {
        return None;
    }
    let mut cc = [0u8; NCC];
    for (d, s) in cc.iter_mut().zip(&e.c_cc) {
        *d = *s as u8;
    }
    Some(Termios {
        iflag: e.c_iflag.unwrap_or_default(),
        oflag: e.c_oflag.unwrap_or_default(),
        cflag: e.c_cflag.unwrap_or_default(),
        lflag: e.c_lflag.unwrap_or_default(),
        line: e.c_line.unwrap_or_default() as u8,
        cc,
    })
}

/// `TIOCSLCKTRMIOS` (only if it differs: it needs CAP_SYS_ADMIN), `TCSETS`,
/// `TIOCSWINSZ`.
fn set_params(fd: BorrowedFd<'_>, p: &TtyParams) -> std::result::Result<(), (&'static str, rustix::io::Errno)> {
    let raw = |t: &Termios| {
        // SAFETY: an all-zero termios is valid.
        let mut r: libc::termios = unsafe { std::mem::zeroed() };
        (r.c_iflag, r.c_oflag, r.c_cflag, r.c_lflag, r.c_line) = (t.iflag, t.oflag, t.cflag, t.lflag, t.line);
        r.c_cc[..NCC].copy_from_slice(&t.cc);
        r
    };
    let set = |req: libc::Ioctl, t: &libc::termios, name: &'static str| {
        // SAFETY: a set-termios ioctl reading a valid struct.
        let r = unsafe { libc::ioctl(fd.as_raw_fd(), req, t) };
        if r < 0 {
            return Err((name, rustix::io::Errno::from_raw_os_error(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))));
        }
        Ok(())
    };
    let now = get_termios(fd, libc::TIOCGLCKTRMIOS).map_err(|e| ("TIOCGLCKTRMIOS", e))?;
    if now != p.locked {
        set(libc::TIOCSLCKTRMIOS, &raw(&p.locked), "TIOCSLCKTRMIOS")?;
    }
    set(libc::TCSETS, &raw(&p.termios), "TCSETS")?;
    let [ws_row, ws_col, ws_xpixel, ws_ypixel] = p.winsize;
    rustix::termios::tcsetwinsize(fd, rustix::termios::Winsize { ws_row, ws_col, ws_xpixel, ws_ypixel }).map_err(|e| ("TIOCSWINSZ", e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::files::roundtrip::{crit_decodes, desc, roundtrip};
    use crate::files::{DescPlan, FileKind, LoadOptions};

    fn slave(info: Option<TtyInfo>, regf_id: u32) -> FileKind {
        let reg = RegDumped { path: "/dev/pts/3".into(), size: 0, mode: libc::S_IFCHR | 0o620, dev_ino: (0x19, 6), rdev: libc::makedev(136, 3), unlinked: false, ghost: None };
        FileKind::Tty(TtyDumped { info_id: 6, regf_id, reg, info })
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
    fn terminal_without_shell_job_is_refused_by_name() {
        let (plans, _tmp) = roundtrip(&[desc(1, libc::O_RDWR, slave(Some(info()), 10))], &LoadOptions::default());
        let err = plans.unwrap_err().to_string();
        assert!(err.contains("unsupported: fd 0: tty[8803:19] (a terminal: use --shell-job)"), "{err}");
    }
}
