//! `criu-rs lazy-pages` and `criu-rs page-server`.
//!
//! Both are daemons, as in CRIU: `--status-fd FD` gets a NUL byte once
//! they listen (and `status-ready` action scripts run); with `-d`/`--daemon`
//! they go to the background once listening, the foreground process writes
//! the daemon's pid to `--pidfile` and exits 0 (1 if the daemon failed
//! before it was ready). Without `-d`, `--pidfile` gets their own pid.

use anyhow::{bail, Context, Result};
use criu_core::actions::Action;
use criu_core::images::ImageDir;
use criu_core::lazy;
use criu_core::pageserver::{server, store::ImagesStore};
use std::os::fd::OwnedFd;
use std::time::Duration;

use crate::cli::Opts;
use crate::stages::Stages;

/// `criu-rs lazy-pages`.
pub fn lazy_pages(o: &Opts) -> Result<i32> {
    let dir = o.images_dir();
    let default_socket = || o.work_dir().join("lazy-pages.socket");
    let (socket, remote) = if o.page_server {
        let host = o.address.clone().context("--page-server needs --address HOST")?;
        let port = o.port.context("--page-server needs --port PORT")?;
        (o.lazy_socket.clone().unwrap_or_else(default_socket), Some(format!("{host}:{port}")))
    } else {
        let s = o.lazy_socket.clone().or_else(|| o.address.clone().map(Into::into));
        (s.unwrap_or_else(default_socket), None)
    };
    let daemon = Daemon::start(o)?;
    let mut opts = lazy::Options::new(&dir, socket);
    opts.page_server = remote;
    opts.fault_chunk = (o.fault_chunk.max(4) * 1024).next_power_of_two();
    opts.bg_chunk = o.bg_chunk.max(4) * 1024;
    opts.background = !o.no_background;
    opts.tasks = o.tasks;
    opts.follow_cpu = !o.no_follow_cpu;
    opts.register_timeout = Duration::from_secs(o.register_timeout);
    opts.accept_timeout = Duration::from_secs(o.connect_timeout);
    opts.actions = Some(daemon.stages.hook());
    let stats = lazy::run(opts).context("lazy-pages")?;
    println!("lazy-pages: {stats}");
    if stats.killed > 0 {
        tracing::error!("lazy-pages: {} task(s) had to be killed", stats.killed);
        return Ok(1);
    }
    Ok(0)
}

/// `criu-rs page-server`.
pub fn page_server(o: &Opts) -> Result<i32> {
    let dir = o.images_dir();
    let port = o.port.context("page-server needs --port PORT")?;
    let address = o.address.clone().unwrap_or_else(|| "0.0.0.0".into());
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    let listener = std::net::TcpListener::bind((address.as_str(), port)).with_context(|| format!("listen on {address}:{port}"))?;
    let daemon = Daemon::start(o)?;
    daemon.stages.run(Action::StatusReady, None)?;
    serve_pages(o, &listener)
}

/// The page server's work once it listens on `listener` (also for
/// `swrk`'s PAGE_SERVER requests): receives one dump's pages into the
/// images directory, or serves them from it.
pub fn serve_pages(o: &Opts, listener: &std::net::TcpListener) -> Result<i32> {
    tracing::info!("page server: listening on {}", listener.local_addr()?);
    let dir = ImageDir::open_unchecked(o.images_dir());
    let mut store = ImagesStore::new(dir.clone());
    let stats = server::serve_one(listener, Some(&dir), Some(&mut store)).context("page server")?;
    println!("page-server: {} pages received, {} pages sent, {} requests", stats.pages_put, stats.pages_got, stats.requests);
    Ok(0)
}

/// The daemon side after [`Daemon::start`]: its stage handler (which
/// also tells a waiting foreground process that it is ready).
struct Daemon {
    stages: std::sync::Arc<Stages>,
}

impl Daemon {
    /// Without `-d`: writes our pid to `--pidfile`. With `-d`: forks; the
    /// foreground process waits until the daemon is ready (its status pipe
    /// gets the byte, or closes without it), writes the pidfile and exits.
    /// Must be called while single-threaded.
    fn start(o: &Opts) -> Result<Daemon> {
        let pidfile = o.pidfile.as_ref().map(|p| o.in_work_dir(p));
        let write_pid = |pid: i32| -> Result<()> {
            if let Some(p) = &pidfile {
                std::fs::write(p, pid.to_string()).with_context(|| format!("writing the pid file {}", p.display()))?;
            }
            Ok(())
        };
        if !o.detach {
            write_pid(std::process::id() as i32)?;
            return Ok(Daemon { stages: Stages::new(&o.action_scripts, &o.images_dir(), o.status_fd) });
        }
        let (rx, tx) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).context("pipe")?;
        // SAFETY: criu-rs is single-threaded here (documented requirement);
        // the child goes on with the command, the parent only waits.
        match unsafe { libc::fork() } {
            -1 => bail!("fork: {}", std::io::Error::last_os_error()),
            0 => {
                drop(rx);
                detach_stdio();
                // The foreground's status descriptor is the foreground's to
                // write: the daemon reports to it through `tx`.
                let stages = Stages::new(&o.action_scripts, &o.images_dir(), Some(into_raw(tx)));
                Ok(Daemon { stages })
            }
            child => {
                drop(tx);
                let mut byte = [1u8];
                let ready = matches!(rustix::io::read(&rx, &mut byte), Ok(1)) && byte[0] == 0;
                if !ready {
                    bail!("the daemon (pid {child}) failed before it was ready; see its log");
                }
                write_pid(child)?;
                Stages::new(&[], &o.images_dir(), o.status_fd).ready()?;
                std::process::exit(0);
            }
        }
    }
}

fn into_raw(fd: OwnedFd) -> i32 {
    use std::os::fd::IntoRawFd;
    fd.into_raw_fd()
}

/// A daemon's own session, stdin/stdout/stderr on /dev/null (CRIU's
/// `cr_daemon(1, 0, ...)`); the log goes to `-o` if given.
pub fn detach_stdio() {
    // SAFETY: setsid and dup2 on descriptors we own; no memory is shared.
    unsafe {
        libc::setsid();
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
        if null >= 0 {
            for fd in 0..3 {
                libc::dup2(null, fd);
            }
            if null > 2 {
                libc::close(null);
            }
        }
    }
}
