//! CRIU's RPC: `criu-rs swrk FD` and `criu-rs service`, as runc, podman,
//! go-criu, libcriu and pycriu drive `criu`.
//!
//! ```text
//!  caller ──criu_req──▶ swrk (one SOCK_SEQPACKET packet per message)
//!         ◀─criu_resp──   │ VERSION, FEATURE_CHECK: answered here
//!                         │ DUMP, PRE_DUMP, CHECK: a forked worker
//!                         │   runs the command; with notify_scripts each
//!                         │   stage goes out as a NOTIFY criu_resp and waits
//!                         │   for the caller's NOTIFY criu_req
//!                         │   (notify_success); the worker sends the answer
//!                         │ RESTORE: swrk itself (rst_sibling: the root
//!                         │   becomes the caller's child), answered with
//!                         │   the root's pid
//!                         │ PAGE_SERVER(_CHLD): a forked page server,
//!                         │   answered with its pid and port
//! ```
//!
//! The messages are CRIU's rpc.proto (`criu-core/proto/rpc.proto`). The
//! options (`criu_opts`) become the command line they stand for
//! ([`opts`]). A worker per request keeps each request's log, level and
//! state its own (as CRIU forks for CHECK, PRE_DUMP and the page server);
//! the serving process stays single-threaded so that it may fork. A
//! RESTORE, which ends the conversation, runs in swrk itself, as in CRIU
//! (in a worker under `service` or with `keep_open`).
//!
//! Conversation rules, as CRIU's: a connection serves one request, or more
//! while the caller sets `keep_open`; after a PRE_DUMP it waits for another
//! PRE_DUMP or the final DUMP. RESTORE is detached: the answer carries the
//! root's pid, and the tree is left running (its parent, the worker, exits).
//! A failed request is answered `success = false` with the error in
//! `cr_errmsg` (and `cr_errno` EBADRQC for refused options).
//!
//! `criu-rs service [--address PATH] [-d] [--pidfile F]` listens on a unix
//! SOCK_SEQPACKET socket (default `./criu_service.socket`, mode 0666) and
//! serves each connection in a process of its own; the caller is the
//! connecting process (SO_PEERCRED).

pub mod opts;

use anyhow::{bail, Context, Result};
use criu_core::actions::{Action, ActionFailed};
use criu_core::images::pb::{CriuDumpResp, CriuFeatures, CriuNotify, CriuPageServerInfo, CriuReq, CriuResp, CriuRestoreResp, CriuRpcOpts, CriuVersion};
use prost::Message;
use rustix::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use crate::cli::{Cmd, Opts};
use opts::{BadOpts, Caller};

/// `criu_req_type` (CRIU's rpc.proto).
pub mod req {
    pub const EMPTY: i32 = 0;
    pub const DUMP: i32 = 1;
    pub const RESTORE: i32 = 2;
    pub const CHECK: i32 = 3;
    pub const PRE_DUMP: i32 = 4;
    pub const PAGE_SERVER: i32 = 5;
    pub const NOTIFY: i32 = 6;
    pub const FEATURE_CHECK: i32 = 9;
    pub const VERSION: i32 = 10;
    pub const WAIT_PID: i32 = 11;
    pub const PAGE_SERVER_CHLD: i32 = 12;
}

/// Largest message read (CRIU's are a few KiB).
const MAX_MSG: usize = 1 << 20;

/// A worker's exit code when it has sent the answer itself.
const ANSWERED: i32 = 0;
/// ... when it sent a failure answer.
const ANSWERED_FAILED: i32 = 1;

/// `criu-rs swrk FD`: serves the connected SOCK_SEQPACKET socket `FD`
/// (inherited from the caller). Returns the exit code.
pub fn swrk(args: &[String]) -> i32 {
    let fd = match args {
        [fd] => fd.parse::<RawFd>().ok().filter(|&fd| fd >= 0),
        _ => None,
    };
    let Some(fd) = fd else {
        eprintln!("Usage: criu-rs swrk FD (a connected SOCK_SEQPACKET socket; for RPC clients, not for the command line)");
        return 1;
    };
    open_stdio();
    if rustix::io::fcntl_getfd(unsafe_borrow(fd)).is_err() {
        eprintln!("Error: swrk: descriptor {fd} is not open");
        return 1;
    }
    // SAFETY: the caller handed this descriptor to us on the command line
    // and checked it is open; criu-rs owns it from now on.
    let sk = unsafe { OwnedFd::from_raw_fd(fd) };
    let _ = rustix::io::fcntl_setfd(&sk, rustix::io::FdFlags::CLOEXEC);
    match Conn::new(sk, true) {
        Ok(conn) => conn.serve(),
        Err(e) => {
            eprintln!("Error: swrk: {e:#}");
            1
        }
    }
}

/// Borrows a descriptor number that may not be open (for a check only).
fn unsafe_borrow(fd: RawFd) -> BorrowedFd<'static> {
    // SAFETY: used only for fcntl(F_GETFD), which fails cleanly (EBADF) on
    // a descriptor that is not open.
    unsafe { BorrowedFd::borrow_raw(fd) }
}

/// Descriptors 0-2 on /dev/null where closed (libcriu and pycriu close
/// them before exec'ing swrk): what criu-rs opens next must not land there.
fn open_stdio() {
    for fd in 0..3 {
        if rustix::io::fcntl_getfd(unsafe_borrow(fd)).is_err() {
            // open(2) takes the lowest free number: this one.
            if let Ok(null) = std::fs::OpenOptions::new().read(true).write(true).open("/dev/null") {
                let _ = std::os::fd::IntoRawFd::into_raw_fd(null);
            }
        }
    }
}

/// One caller's connection.
struct Conn {
    sk: OwnedFd,
    caller: Caller,
}

impl Conn {
    fn new(sk: OwnedFd, swrk: bool) -> Result<Conn> {
        let cred = rustix::net::sockopt::socket_peercred(&sk).context("SO_PEERCRED of the RPC socket")?;
        Ok(Conn { sk, caller: Caller { pid: cred.pid.as_raw_nonzero().get(), swrk } })
    }

    /// Serves requests until the conversation ends; the exit code.
    fn serve(&self) -> i32 {
        let mut pre_dumped = false;
        loop {
            let r = match recv(self.sk.as_fd()) {
                Ok(Some(r)) => r,
                // The caller hung up: the conversation is over.
                Ok(None) => return 0,
                Err(e) => {
                    eprintln!("Error: swrk: {e:#}");
                    return 1;
                }
            };
            let ty = r.r#type.unwrap_or(req::EMPTY);
            if pre_dumped && ty != req::PRE_DUMP && ty != req::DUMP {
                let _ = send(self.sk.as_fd(), &failure(req::EMPTY, "bad request sequence: only PRE_DUMP or DUMP may follow a PRE_DUMP", None));
                return 1;
            }
            let ok = match self.one(&r, ty) {
                Ok(ok) => ok,
                Err(e) => {
                    eprintln!("Error: swrk: {e:#}");
                    return 1;
                }
            };
            pre_dumped = ty == req::PRE_DUMP && ok;
            if !pre_dumped && r.keep_open != Some(true) {
                return if ok { 0 } else { 1 };
            }
        }
    }

    /// Answers one request; whether it succeeded. Errors: the socket.
    fn one(&self, r: &CriuReq, ty: i32) -> Result<bool> {
        let opts = r.opts.clone().unwrap_or_default();
        let resp = match ty {
            req::VERSION => version(),
            req::FEATURE_CHECK => features(r.features.as_ref()),
            // As CRIU's swrk: a restore runs in this process, so that with
            // rst_sibling the root becomes a child of the caller (runc and
            // libcriu's criu_restore_child wait for it).
            req::RESTORE if self.caller.swrk && r.keep_open != Some(true) => return Ok(worker(self, ty, &opts) == ANSWERED),
            req::DUMP | req::PRE_DUMP | req::RESTORE | req::CHECK => return self.in_worker(ty, &opts),
            req::PAGE_SERVER | req::PAGE_SERVER_CHLD => self.page_server(ty, &opts),
            req::WAIT_PID => wait_pid(r.pid.unwrap_or(0) as i32),
            req::NOTIFY => failure(ty, "a NOTIFY request outside a notification", None),
            other => failure(
                req::EMPTY,
                &format!("not supported: request type {other} (criu-rs serves DUMP, PRE_DUMP, RESTORE, CHECK, PAGE_SERVER, PAGE_SERVER_CHLD, WAIT_PID, FEATURE_CHECK, VERSION)"),
                None,
            ),
        };
        send(self.sk.as_fd(), &resp)?;
        Ok(resp.success == Some(true))
    }

    /// Runs a command request in a forked worker, which answers; answers
    /// for it if it died before it could.
    fn in_worker(&self, ty: i32, o: &CriuRpcOpts) -> Result<bool> {
        // SAFETY: the serving process is single-threaded (it only reads,
        // writes and forks); the child runs the request and exits.
        let child = unsafe { libc::fork() };
        if child < 0 {
            let resp = failure(ty, &format!("fork: {}", std::io::Error::last_os_error()), None);
            send(self.sk.as_fd(), &resp)?;
            return Ok(false);
        }
        if child == 0 {
            let code = worker(self, ty, o);
            // SAFETY: the worker is done; nothing of it is to be unwound.
            unsafe { libc::_exit(code) };
        }
        let status = wait(child)?;
        match status {
            Some(ANSWERED) => Ok(true),
            Some(ANSWERED_FAILED) => Ok(false),
            _ => {
                let how = status.map_or("was killed by a signal".to_string(), |c| format!("exited with {c}"));
                send(self.sk.as_fd(), &failure(ty, &format!("the criu-rs worker (pid {child}) {how} before answering"), None))?;
                Ok(false)
            }
        }
    }

    /// PAGE_SERVER: a page server in the background (its parent gone),
    /// PAGE_SERVER_CHLD: one that stays our child (for WAIT_PID). Answered
    /// once it listens, with its pid and port (the port it was given, or
    /// the one the kernel chose for 0).
    fn page_server(&self, ty: i32, o: &CriuRpcOpts) -> CriuResp {
        match self.start_page_server(ty, o) {
            Ok((pid, port)) => CriuResp {
                r#type: Some(ty),
                success: Some(true),
                ps: Some(CriuPageServerInfo { pid: Some(pid), port: Some(port.into()), ..Default::default() }),
                ..Default::default()
            },
            Err(e) => failure(ty, &crate::log::one_line(&e), errno_of(&e)),
        }
    }

    fn start_page_server(&self, ty: i32, o: &CriuRpcOpts) -> Result<(i32, u16)> {
        let opts = opts::command_line(Cmd::PageServer, o, self.caller)?.parse(Cmd::PageServer)?;
        let ps = o.ps.clone().unwrap_or_default();
        let address = ps.address.unwrap_or_else(|| "0.0.0.0".into());
        let port = u16::try_from(ps.port.unwrap_or(0)).map_err(|_| BadOpts(format!("criu_opts.ps.port {:?}: not a port", ps.port)))?;
        let dir = opts.images_dir();
        std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        let listener = std::net::TcpListener::bind((address.as_str(), port)).with_context(|| format!("listen on {address}:{port}"))?;
        let port = listener.local_addr()?.port();
        let daemon = ty == req::PAGE_SERVER;
        let (rx, tx) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).context("pipe")?;
        // SAFETY: single-threaded (see in_worker); the child serves pages.
        let child = unsafe { libc::fork() };
        if child < 0 {
            bail!("fork: {}", std::io::Error::last_os_error());
        }
        if child == 0 {
            drop(rx);
            // SAFETY: as above; the child ends in _exit.
            let code = if daemon && unsafe { libc::fork() } != 0 { 0 } else { page_server_child(self, &opts, listener, tx) };
            unsafe { libc::_exit(code) };
        }
        drop(tx);
        drop(listener);
        if daemon {
            // The intermediate process exits at once; the server is orphaned.
            wait(child)?;
        }
        let mut buf = [0u8; 4];
        let n = rustix::io::read(&rx, &mut buf).unwrap_or(0);
        if n != 4 {
            bail!("the page server failed before it was ready; see its log");
        }
        Ok((i32::from_ne_bytes(buf), port))
    }
}

/// The page server's process: log, tell the serving process its pid (it
/// listens already), serve one dump.
fn page_server_child(conn: &Conn, o: &Opts, listener: std::net::TcpListener, ready: OwnedFd) -> i32 {
    crate::lazy_cmd::detach_stdio();
    let _ = rustix::io::fcntl_setfd(&conn.sk, rustix::io::FdFlags::CLOEXEC);
    // SAFETY: the RPC socket is the serving process's; this one closes its copy.
    unsafe { libc::close(conn.sk.as_raw_fd()) };
    let Ok(log) = crate::log::init(o.level(), o.log_file.as_deref(), Some(&o.work_dir()), "images directory") else { return 1 };
    let pid = std::process::id() as i32;
    if rustix::io::write(&ready, &pid.to_ne_bytes()) != Ok(4) {
        return 1;
    }
    drop(ready);
    match crate::lazy_cmd::serve_pages(o, &listener) {
        Ok(code) => code,
        Err(e) => {
            log.error(&e);
            1
        }
    }
}

/// The worker: runs the request and answers it. Its exit code.
fn worker(conn: &Conn, ty: i32, o: &CriuRpcOpts) -> i32 {
    let mut log = None;
    let resp = match run_request(conn, ty, o, &mut log) {
        Ok(resp) => resp,
        Err(e) => {
            if let Some(log) = &log {
                crate::log::Log::error(log, &e);
            }
            failure(ty, &crate::log::one_line(&e), errno_of(&e))
        }
    };
    let ok = resp.success == Some(true);
    match send(conn.sk.as_fd(), &resp) {
        Ok(()) if ok => ANSWERED,
        Ok(()) => ANSWERED_FAILED,
        Err(_) => 2,
    }
}

fn run_request(conn: &Conn, ty: i32, o: &CriuRpcOpts, log: &mut Option<crate::log::Log>) -> Result<CriuResp> {
    let cmd = opts::command(ty).context("not a command request")?;
    let mut opts = opts::command_line(cmd, o, conn.caller)?.parse(cmd)?;
    opts.status_fd = opts::status_fd(o, conn.caller)?;
    // The caller's stdout is not ours to print on (CRIU's RPC prints nothing).
    if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
        let _ = rustix::stdio::dup2_stdout(&null);
    }
    let work = (cmd != Cmd::Check || opts.images_dir.is_some() || opts.work_dir.is_some()).then(|| opts.work_dir());
    let label = if opts.work_dir.is_some() { "work directory" } else { "images directory" };
    *log = Some(crate::log::init(opts.level(), opts.log_file.as_deref(), work.as_deref(), label)?);
    tracing::info!(request = ty, caller = conn.caller.pid, "RPC request: criu-rs {}", cmd.name());
    if o.notify_scripts == Some(true) {
        let fd = conn.sk.as_raw_fd();
        crate::stages::set_rpc_notify(Box::new(move |action, root| notify(fd, action, root)));
    }
    let code = crate::run(cmd, &opts)?;
    let mut resp = CriuResp { r#type: Some(ty), success: Some(code == 0), ..Default::default() };
    if code != 0 {
        resp.cr_errmsg = Some(format!("criu-rs {} exited with {code}", cmd.name()));
    }
    match cmd {
        Cmd::Dump => resp.dump = Some(CriuDumpResp { restored: Some(false) }),
        Cmd::Restore => {
            let pid = crate::restore_cmd::restored_pid().context("the restore did not say which pid it restored")?;
            resp.restore = Some(CriuRestoreResp { pid: Some(pid) });
        }
        _ => {}
    }
    Ok(resp)
}

/// One stage as a NOTIFY message; waits for the caller's verdict. The
/// root's pid goes with `setup-namespaces` and `post-restore` only (CRIU's).
fn notify(fd: RawFd, action: Action, root: Option<i32>) -> Result<(), ActionFailed> {
    // SAFETY: the RPC socket stays open for as long as the worker runs.
    let sk = unsafe { BorrowedFd::borrow_raw(fd) };
    let with_pid = matches!(action, Action::SetupNamespaces | Action::PostRestore);
    let msg = CriuResp {
        r#type: Some(req::NOTIFY),
        success: Some(true),
        notify: Some(CriuNotify { script: Some(action.name().into()), pid: root.filter(|_| with_pid) }),
        ..Default::default()
    };
    let failed = |what: String| ActionFailed { what, code: 1 };
    tracing::debug!(action = action.name(), "RPC notify");
    send(sk, &msg).map_err(|e| failed(format!("notifying the RPC client of {}: {e:#}", action.name())))?;
    match recv(sk) {
        Ok(Some(r)) if r.r#type == Some(req::NOTIFY) && r.notify_success == Some(true) => Ok(()),
        Ok(Some(_)) => Err(failed(format!("the RPC client reported an error at {}", action.name()))),
        Ok(None) => Err(failed(format!("the RPC client hung up at {}", action.name()))),
        Err(e) => Err(failed(format!("waiting for the RPC client at {}: {e:#}", action.name()))),
    }
}

/// VERSION: CRIU's version criu-rs speaks for (4.2), named criu-rs.
fn version() -> CriuResp {
    CriuResp {
        r#type: Some(req::VERSION),
        success: Some(true),
        version: Some(CriuVersion {
            major_number: Some(4),
            minor_number: Some(2),
            sublevel: Some(0),
            gitid: Some(format!("criu-rs {}", env!("CARGO_PKG_VERSION"))),
            name: Some("criu-rs".into()),
            extra: None,
        }),
        ..Default::default()
    }
}

/// FEATURE_CHECK: each feature asked for, probed here (CRIU's answer has
/// all three fields, false where not asked).
fn features(asked: Option<&CriuFeatures>) -> CriuResp {
    let asked = asked.cloned().unwrap_or_default();
    let probe = |on: Option<bool>, name: &str| on == Some(true) && criu_core::check::find_criu(name).is_some_and(|f| f.check().is_ok());
    CriuResp {
        r#type: Some(req::FEATURE_CHECK),
        success: Some(true),
        features: Some(CriuFeatures {
            mem_track: Some(probe(asked.mem_track, "mem_dirty_track")),
            lazy_pages: Some(probe(asked.lazy_pages, "uffd-noncoop")),
            // criu-rs takes no pidfd store socket (pidfd_store_sk).
            pidfd_store: Some(false),
        }),
        ..Default::default()
    }
}

/// WAIT_PID: waits for a child of this process (a PAGE_SERVER_CHLD server).
fn wait_pid(pid: i32) -> CriuResp {
    let mut status = 0;
    // SAFETY: waitpid writes the status into our local.
    let r = unsafe { libc::waitpid(pid, &mut status, 0) };
    if r != pid {
        let e = std::io::Error::last_os_error();
        return failure(req::WAIT_PID, &format!("waitpid({pid}): {e}"), e.raw_os_error());
    }
    CriuResp { r#type: Some(req::WAIT_PID), success: Some(true), status: Some(status), ..Default::default() }
}

/// A failure answer.
fn failure(ty: i32, msg: &str, errno: Option<i32>) -> CriuResp {
    CriuResp { r#type: Some(ty), success: Some(false), cr_errmsg: Some(msg.into()), cr_errno: errno, ..Default::default() }
}

/// The errno to report: EBADRQC for refused options (as CRIU), else the
/// first system error in the chain.
fn errno_of(e: &anyhow::Error) -> Option<i32> {
    if e.chain().any(|c| c.is::<BadOpts>()) {
        return Some(libc::EBADRQC);
    }
    e.chain().find_map(|c| {
        c.downcast_ref::<std::io::Error>().and_then(|io| io.raw_os_error()).or_else(|| c.downcast_ref::<rustix::io::Errno>().map(|n| n.raw_os_error()))
    })
}

/// Waits for our child; its exit code, or None if a signal killed it.
fn wait(child: i32) -> Result<Option<i32>> {
    let mut status = 0;
    loop {
        // SAFETY: waitpid writes the status into our local.
        let r = unsafe { libc::waitpid(child, &mut status, 0) };
        if r == child {
            break;
        }
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINTR) {
            return Err(e).with_context(|| format!("waiting for the worker {child}"));
        }
    }
    Ok(libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status)))
}

/// One message, or None when the caller hung up.
fn recv(sk: BorrowedFd<'_>) -> Result<Option<CriuReq>> {
    let mut buf = vec![0u8; MAX_MSG];
    let n = loop {
        match rustix::net::recv(sk, &mut buf, rustix::net::RecvFlags::empty()) {
            Ok((n, _)) => break n,
            Err(rustix::io::Errno::INTR) => continue,
            Err(rustix::io::Errno::CONNRESET) => return Ok(None),
            Err(e) => return Err(e).context("recv on the RPC socket"),
        }
    };
    if n == 0 {
        return Ok(None);
    }
    let r = CriuReq::decode(&buf[..n]).context("decoding a criu_req")?;
    Ok(Some(r))
}

fn send(sk: BorrowedFd<'_>, resp: &CriuResp) -> Result<()> {
    let bytes = resp.encode_to_vec();
    let n = rustix::net::send(sk, &bytes, rustix::net::SendFlags::NOSIGNAL).context("send on the RPC socket")?;
    if n != bytes.len() {
        bail!("criu_resp cut to {n} of {} bytes", bytes.len());
    }
    Ok(())
}

/// CRIU's default service socket.
const SERVICE_SOCKET: &str = "criu_service.socket";

/// `criu-rs service`: see the module doc. Runs until killed.
pub fn service(o: &Opts) -> Result<i32> {
    use rustix::net::{AddressFamily, SocketFlags, SocketType};
    let path = std::path::PathBuf::from(o.address.clone().unwrap_or_else(|| SERVICE_SOCKET.into()));
    let sk = rustix::net::socket_with(AddressFamily::UNIX, SocketType::SEQPACKET, SocketFlags::CLOEXEC, None).context("socket")?;
    let _ = std::fs::remove_file(&path);
    let addr = rustix::net::SocketAddrUnix::new(&path).with_context(|| format!("service address {}", path.display()))?;
    rustix::net::bind(&sk, &addr).with_context(|| format!("bind {}", path.display()))?;
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o666)).with_context(|| format!("chmod {}", path.display()))?;
    rustix::net::listen(&sk, 16).context("listen")?;
    tracing::info!("the service socket is bound to {}", path.display());
    let pidfile = o.pidfile.as_ref().map(|p| o.in_work_dir(p));
    if o.detach {
        // SAFETY: single-threaded here; the parent exits at once.
        match unsafe { libc::fork() } {
            -1 => bail!("fork: {}", std::io::Error::last_os_error()),
            0 => crate::lazy_cmd::detach_stdio(),
            child => {
                if let Some(p) = &pidfile {
                    std::fs::write(p, child.to_string()).with_context(|| format!("writing the pid file {}", p.display()))?;
                }
                return Ok(0);
            }
        }
    } else if let Some(p) = &pidfile {
        std::fs::write(p, std::process::id().to_string()).with_context(|| format!("writing the pid file {}", p.display()))?;
    }
    crate::stages::Stages::new(&o.action_scripts, &o.images_dir(), o.status_fd).run(Action::StatusReady, None)?;
    loop {
        let conn = match rustix::net::accept_with(&sk, SocketFlags::CLOEXEC) {
            Ok(c) => c,
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e).context("accept"),
        };
        reap();
        // SAFETY: single-threaded; the child serves the connection and exits.
        match unsafe { libc::fork() } {
            -1 => tracing::error!("fork: {}", std::io::Error::last_os_error()),
            0 => {
                drop(sk);
                let code = match Conn::new(conn, false) {
                    Ok(c) => c.serve(),
                    Err(e) => {
                        tracing::error!("{e:#}");
                        1
                    }
                };
                // SAFETY: the connection is served; exit without unwinding.
                unsafe { libc::_exit(code) };
            }
            child => tracing::info!(worker = child, "connection served by {child}"),
        }
    }
}

/// Collects the connection servers that ended.
fn reap() {
    let mut status = 0;
    // SAFETY: waitpid writes the status into our local.
    while unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) } > 0 {}
}
