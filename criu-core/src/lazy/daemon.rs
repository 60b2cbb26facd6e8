//! The daemon's event loop: accepting tasks, serving faults, following
//! events, copying the rest in the background, and deciding when it is done.

use std::collections::BTreeMap;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use rustix::event::epoll::{self, EventData, EventFlags};
use rustix::event::Timespec;
use rustix::io::Errno;
use rustix::process::{pidfd_open, Pid, PidfdFlags};

use super::cpu::Follower;
use super::guard::Guard;
use super::hello;
use super::ranges::{PageSet, Piece};
use super::{LazyError, Stats};
use crate::images::consts::pagemap_flags;
use crate::images::{ImageDir, ImageKind, PAGE_SIZE};
use crate::pageserver::client::PageClient;
use crate::pageserver::store::{read_pagemap, ImagesStore, PageStore};
use crate::uffd::{Copied, Event, Uffd, LAZY_FEATURES};

/// How the daemon runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// Images directory (pagemaps; pages too unless `page_server` is set).
    pub dir: PathBuf,
    /// Unix socket the tasks connect to.
    pub socket: PathBuf,
    /// Fetch page data from this page server instead of `pages-N.img`.
    pub page_server: Option<String>,
    /// Bytes filled per fault (an aligned block around the fault).
    pub fault_chunk: u64,
    /// Bytes per background copy.
    pub bg_chunk: u64,
    /// Copy pages nobody asked for in the background.
    pub background: bool,
    /// Tasks to wait for (default: entries of `pstree.img`, else the number
    /// of `pagemap-*.img` files).
    pub tasks: Option<usize>,
    /// Give up when no new task connects for this long while some are still
    /// expected (the tasks already served are then killed by the guard).
    pub accept_timeout: Duration,
    /// A task handed over before its lazy ranges were registered must have
    /// them all registered within this time, or it is killed.
    pub register_timeout: Duration,
    /// While faults come in, run on the CPU of the faulting thread
    /// ([`super::cpu`]).
    pub follow_cpu: bool,
    /// Told `status-ready` once the socket listens ([`crate::actions`]).
    pub actions: Option<crate::actions::ActionHook>,
}

impl Options {
    /// Defaults for `dir` and `socket`: 16 KiB per fault, 1 MiB background chunks.
    pub fn new(dir: impl Into<PathBuf>, socket: impl Into<PathBuf>) -> Self {
        Options {
            dir: dir.into(),
            socket: socket.into(),
            page_server: None,
            fault_chunk: 4 * PAGE_SIZE,
            bg_chunk: 1 << 20,
            background: true,
            tasks: None,
            accept_timeout: Duration::from_secs(60),
            register_timeout: Duration::from_secs(30),
            follow_cpu: true,
            actions: None,
        }
    }
}

const LISTENER: u64 = 0;
const PIDFD_BIT: u64 = 1 << 63;
const CONN_BIT: u64 = 1 << 62;

struct Task {
    uffd: Uffd,
    image_pid: u32,
    pid: u32,
    pidfd: Option<OwnedFd>,
    missing: PageSet,
    cursor: u64,
    retry: Vec<u64>,
    /// Since when the hand-over happened while some lazy page was not yet
    /// in a registered range (`None`: all covered). No background copy
    /// before; killed if it lasts past [`Options::register_timeout`].
    unregistered_since: Option<Instant>,
    /// For a task reported by a fork event: the parent's pid and the
    /// parent's children at that moment (the new one is not among them).
    parent: Option<(u32, Vec<u32>)>,
    /// Background fills found no VMA (`ENOENT`) since then (first, last):
    /// the layout is changing and the event telling how is not read yet.
    /// Cleared by any event; if it lasts, the range is not registered and
    /// the task dies.
    stalled: Option<(Instant, Instant)>,
    /// To be killed, but its pid is not known yet: its uffd stays open
    /// (faults wait) and is no longer served.
    doomed: bool,
}

/// While faults keep coming, one background chunk is still copied at
/// least this often.
const BG_SHARE: Duration = Duration::from_millis(1);

/// Background fills into a vanished VMA are retried after this pause...
const STALL_PAUSE: Duration = Duration::from_millis(1);
/// ...and the task is killed when no event explains it within this time.
const STALL_LIMIT: Duration = Duration::from_secs(2);

struct Daemon {
    opts: Options,
    source: Box<dyn PageStore>,
    epoll: OwnedFd,
    listener: UnixListener,
    guard: Guard,
    tasks: BTreeMap<u64, Task>,
    next_token: u64,
    bg_token: u64,
    expected: usize,
    connected: usize,
    stats: Stats,
    /// Per fault: read to fill done, and the fill ioctl alone (ns).
    lat_ns: Vec<u32>,
    copy_ns: Vec<u32>,
    lookup_ns: Vec<u32>,
    /// Time the last [`Daemon::fill`] took to find its data.
    lookup: Duration,
    follower: Follower,
    first_task: Option<Instant>,
    last_accept: Instant,
    /// When the last background chunk was copied.
    last_bg: Instant,
    /// Accepted connections whose hello has not arrived yet.
    pending: std::collections::HashMap<u64, UnixStream>,
    next_conn: u64,
}

/// Runs the daemon until every expected task connected and every task's
/// pages are in (or the task is gone). On error the guard kills the tasks
/// not complete (see the [module doc](super)).
pub fn run(opts: Options) -> Result<Stats, LazyError> {
    let sys = |what: &str| {
        let what = what.to_string();
        move |source: Errno| LazyError::Sys { what, source }
    };
    // The guard first, while this process is single-threaded and holds
    // nothing it should not inherit.
    let guard = Guard::spawn().map_err(sys("fork the guard"))?;
    let dir = ImageDir::open(&opts.dir)?;
    let expected = match opts.tasks {
        Some(n) => n,
        None => count_tasks(&dir)?,
    };
    let source: Box<dyn PageStore> = match &opts.page_server {
        Some(addr) => Box::new(PageClient::connect(addr.as_str())?),
        None => {
            check_local_data(&dir)?;
            Box::new(ImagesStore::new(dir))
        }
    };
    let _ = std::fs::remove_file(&opts.socket);
    let listener = UnixListener::bind(&opts.socket)
        .map_err(|source| LazyError::Socket { path: opts.socket.clone(), source })?;
    listener
        .set_nonblocking(true)
        .and_then(|()| {
            use std::os::unix::fs::PermissionsExt;
            // Only our user may hand tasks over (a task named in a hello may
            // be killed later).
            std::fs::set_permissions(&opts.socket, std::fs::Permissions::from_mode(0o600))
        })
        .map_err(|source| LazyError::Socket { path: opts.socket.clone(), source })?;
    let ep = epoll::create(epoll::CreateFlags::CLOEXEC).map_err(sys("epoll_create"))?;
    epoll::add(&ep, &listener, EventData::new_u64(LISTENER), EventFlags::IN).map_err(sys("epoll_ctl"))?;
    tracing::info!(
        "lazy-pages: serving {} on {} for {expected} task(s), guard pid {}",
        opts.dir.display(),
        opts.socket.display(),
        guard.pid()
    );
    crate::actions::run(opts.actions.as_ref(), crate::actions::Action::StatusReady, None)?;
    let follower = Follower::new(opts.follow_cpu);
    let mut d = Daemon {
        opts,
        source,
        epoll: ep,
        listener,
        guard,
        tasks: BTreeMap::new(),
        next_token: 1,
        bg_token: 0,
        expected,
        connected: 0,
        follower,
        stats: Stats::default(),
        lat_ns: Vec::new(),
        copy_ns: Vec::new(),
        lookup_ns: Vec::new(),
        lookup: Duration::ZERO,
        first_task: None,
        last_accept: Instant::now(),
        last_bg: Instant::now(),
        pending: Default::default(),
        next_conn: 0,
    };
    let started = Instant::now();
    d.serve()?;
    d.stats.elapsed = started.elapsed();
    d.stats.served = d.first_task.map_or(Duration::ZERO, |t| t.elapsed());
    d.stats.fault_median = quantile(&mut d.lat_ns, 50);
    d.stats.fault_p90 = quantile(&mut d.lat_ns, 90);
    d.stats.copy_median = quantile(&mut d.copy_ns, 50);
    d.stats.lookup_median = quantile(&mut d.lookup_ns, 50);
    d.stats.cpu_follows = d.follower.follows();
    d.stats.cpu_starved = d.follower.starved();
    let _ = std::fs::remove_file(&d.opts.socket);
    let Daemon { guard, stats, .. } = d;
    let gpid = guard.pid();
    drop(guard);
    // SAFETY: reaping our own child, the guard, which exits once its
    // socket closes.
    unsafe { libc::waitpid(gpid, std::ptr::null_mut(), 0) };
    tracing::info!("lazy-pages: done: {stats}");
    Ok(stats)
}

/// The `pct`-th percentile of `ns` (sorted here), if any.
fn quantile(ns: &mut [u32], pct: usize) -> Option<Duration> {
    ns.sort_unstable();
    ns.get(ns.len() * pct / 100).map(|&n| Duration::from_nanos(n.into()))
}

/// Children of every thread of `pid`.
fn children(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return out };
    for t in tasks.flatten() {
        if let Ok(s) = std::fs::read_to_string(t.path().join("children")) {
            out.extend(s.split_whitespace().filter_map(|c| c.parse::<u32>().ok()));
        }
    }
    out
}

fn nanos(d: Duration) -> u32 {
    d.as_nanos().min(u32::MAX as u128) as u32
}

fn spare_capacity(v: &mut Vec<epoll::Event>) -> rustix::buffer::SpareCapacity<'_, epoll::Event> {
    rustix::buffer::spare_capacity(v)
}

/// Pids of the `pagemap-PID.img` files in `dir`.
fn pagemap_pids(dir: &ImageDir) -> Result<Vec<u32>, LazyError> {
    let rd = std::fs::read_dir(dir.path())
        .map_err(|source| LazyError::Socket { path: dir.path().into(), source })?;
    Ok(rd
        .flatten()
        .filter_map(|e| {
            let n = e.file_name();
            let n = n.to_str()?;
            n.strip_prefix("pagemap-")?.strip_suffix(".img")?.parse().ok()
        })
        .collect())
}

/// Serving from local images: every lazy entry must have its data there
/// (images of `dump --lazy-pages` keep it on the source host).
fn check_local_data(dir: &ImageDir) -> Result<(), LazyError> {
    for pid in pagemap_pids(dir)? {
        let (_, entries) = read_pagemap(dir, pid)?;
        let lazy = pagemap_flags::LAZY;
        if let Some(e) = entries.iter().find(|e| e.flags() & lazy != 0 && e.flags() & pagemap_flags::PRESENT == 0) {
            return Err(LazyError::NoPages { pid, vaddr: e.vaddr() });
        }
    }
    Ok(())
}

/// Tasks to wait for: processes in `pstree.img` but zombies (their core
/// says `TASK_DEAD`: restored without memory, they hand nothing over),
/// else pagemap images.
fn count_tasks(dir: &ImageDir) -> Result<usize, LazyError> {
    use crate::images::consts::task_state;
    use crate::images::pb::{CoreEntry, PstreeEntry};
    if dir.exists(ImageKind::Pstree, 0) {
        let p: Vec<PstreeEntry> = dir.read_all(ImageKind::Pstree, 0)?;
        let mut live = 0;
        for e in &p {
            let pid = u64::from(e.pid.unwrap_or_default());
            let zombie = dir.exists(ImageKind::Core, pid) && {
                let core: CoreEntry = dir.read_one(ImageKind::Core, pid)?;
                core.tc.and_then(|tc| tc.task_state) == Some(task_state::DEAD)
            };
            live += usize::from(!zombie);
        }
        return Ok(live);
    }
    Ok(pagemap_pids(dir)?.len())
}

impl Daemon {
    fn serve(&mut self) -> Result<(), LazyError> {
        let mut events: Vec<epoll::Event> = Vec::with_capacity(64);
        while self.connected < self.expected || self.tasks.values().any(|t| !t.doomed) {
            if self.tasks.values().any(|t| t.pid == 0) {
                self.resolve_children();
            }
            let bg = self.opts.background
                && self.tasks.values().any(|t| !t.missing.is_empty() && t.unregistered_since.is_none());
            let waiting: Vec<u64> =
                self.tasks.iter().filter(|(_, t)| t.unregistered_since.is_some()).map(|(&k, _)| k).collect();
            let mut timeout = match (bg, waiting.is_empty()) {
                (true, _) => Duration::ZERO,
                (false, false) => Duration::from_millis(5),
                (false, true) => Duration::from_secs(1),
            };
            // Following a task's CPU is for one task alone, all connected,
            // and nothing to copy in the background: idle priority next to
            // a busy task would leave the others (or new ones) waiting.
            // Pinned: wake up in time to let go.
            let single = self.tasks.len() == 1 && self.connected >= self.expected && self.pending.is_empty();
            if let Some(release) = self.follower.settle(bg || !single) {
                timeout = timeout.min(release);
            }
            let timeout = Timespec { tv_sec: timeout.as_secs() as i64, tv_nsec: timeout.subsec_nanos().into() };
            for token in waiting {
                self.check_registered(token);
            }
            events.clear();
            match epoll::wait(&self.epoll, spare_capacity(&mut events), Some(&timeout)) {
                Ok(_) => {}
                Err(Errno::INTR) => continue,
                Err(e) => return Err(LazyError::Sys { what: "epoll_wait".into(), source: e }),
            }
            let mut faults = false;
            let ready: Vec<u64> = events.iter().map(|e| e.data.u64()).collect();
            for token in ready {
                if token == LISTENER {
                    self.accept()?;
                } else if token & CONN_BIT != 0 {
                    self.hello(token);
                } else if token & PIDFD_BIT != 0 {
                    self.finish(token & !PIDFD_BIT, "exited");
                } else {
                    faults = true;
                    self.serve_uffd(token)?;
                }
            }
            // Faults first; but a steady stream of them must not stop the
            // background copy altogether.
            if bg && (!faults || self.last_bg.elapsed() >= BG_SHARE) {
                self.background()?;
                self.last_bg = Instant::now();
            }
            if self.connected < self.expected && self.last_accept.elapsed() > self.opts.accept_timeout {
                return Err(LazyError::Hello(format!(
                    "only {} of {} tasks connected within {:?}",
                    self.connected, self.expected, self.opts.accept_timeout
                )));
            }
        }
        if self.tasks.values().any(|t| t.doomed) {
            return Err(LazyError::Hello("forked task(s) to be killed whose pid never showed; the guard kills them".into()));
        }
        Ok(())
    }

    /// Accepts connections; each is read once its hello arrives (a silent
    /// client never stalls the service of others).
    fn accept(&mut self) -> Result<(), LazyError> {
        loop {
            let conn = match self.listener.accept() {
                Ok((c, _)) => c,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(()),
                Err(source) => return Err(LazyError::Socket { path: self.opts.socket.clone(), source }),
            };
            let token = CONN_BIT | self.next_conn;
            self.next_conn += 1;
            let ok = conn.set_nonblocking(true).is_ok()
                && epoll::add(&self.epoll, &conn, EventData::new_u64(token), EventFlags::IN).is_ok();
            if ok {
                self.pending.insert(token, conn);
            }
        }
    }

    /// A pending connection became readable: take the task or refuse it.
    fn hello(&mut self, token: u64) {
        let Some(conn) = self.pending.remove(&token) else { return };
        let status = match self.take_task(&conn) {
            Ok(true) => 0,
            Ok(false) => {
                self.pending.insert(token, conn);
                return;
            }
            Err((errno, e)) => {
                tracing::error!("lazy-pages: refusing a task: {e}");
                errno.raw_os_error()
            }
        };
        let _ = conn.set_nonblocking(false);
        let _ = conn.set_write_timeout(Some(Duration::from_secs(1)));
        if let Err(e) = hello::ack(&conn, status) {
            tracing::warn!("lazy-pages: cannot answer a task: {e}");
        }
    }

    /// Reads a task's hello and takes over its uffd; `false` when the hello
    /// has not arrived yet.
    fn take_task(&mut self, conn: &UnixStream) -> Result<bool, (Errno, LazyError)> {
        let Some((h, fd)) = hello::receive(conn).map_err(|e| (Errno::PROTO, e))? else { return Ok(false) };
        // Without the non-cooperative events a fork, mremap or munmap would
        // go unnoticed (a child would even lose its registration).
        let features = Uffd::from_fd(fd);
        let granted = features.features().unwrap_or(0);
        let fd = features.into_fd();
        if granted & LAZY_FEATURES != LAZY_FEATURES {
            return Err((
                Errno::PROTO,
                LazyError::Hello(format!(
                    "pid {}: the userfaultfd has features {granted:#x}; UFFDIO_API must grant {LAZY_FEATURES:#x} before the hand-over",
                    h.pid
                )),
            ));
        }
        let me = rustix::process::geteuid();
        match rustix::net::sockopt::socket_peercred(conn) {
            Ok(c) if c.uid == me || c.uid.is_root() => {}
            Ok(c) => return Err((Errno::PERM, LazyError::Hello(format!("peer uid {} may not hand tasks over", c.uid.as_raw())))),
            Err(e) => return Err((e, LazyError::Sys { what: "SO_PEERCRED".into(), source: e })),
        }
        let missing = self.lazy_pages(h.image_pid).map_err(|e| (Errno::NOENT, e))?;
        let sys = |what: &str| {
            let what = format!("pid {}: {what}", h.pid);
            move |source: Errno| (source, LazyError::Sys { what, source })
        };
        let pid = Pid::from_raw(h.pid as i32).ok_or((Errno::INVAL, LazyError::Hello("pid 0".into())))?;
        let pidfd = pidfd_open(pid, PidfdFlags::empty()).map_err(sys("pidfd_open"))?;
        rustix::fs::fcntl_setfl(&fd, rustix::fs::OFlags::NONBLOCK).map_err(sys("fcntl"))?;
        let token = self.next_token;
        self.next_token += 1;
        self.guard.add(token, h.pid, fd.as_fd(), Some(pidfd.as_fd())).map_err(sys("hand to the guard"))?;
        epoll::add(&self.epoll, &fd, EventData::new_u64(token), EventFlags::IN).map_err(sys("epoll_ctl"))?;
        epoll::add(&self.epoll, &pidfd, EventData::new_u64(token | PIDFD_BIT), EventFlags::IN)
            .map_err(sys("epoll_ctl"))?;
        tracing::info!("lazy-pages: pid {} (images of {}): {} pages to serve", h.pid, h.image_pid, missing.pages());
        self.connected += 1;
        self.stats.tasks += 1;
        self.last_accept = Instant::now();
        self.first_task.get_or_insert(self.last_accept);
        self.tasks.insert(
            token,
            Task {
                uffd: Uffd::from_fd(fd),
                image_pid: h.image_pid,
                pid: h.pid,
                pidfd: Some(pidfd),
                missing,
                cursor: 0,
                retry: Vec::new(),
                unregistered_since: Some(Instant::now()),
                parent: None,
                stalled: None,
                doomed: false,
            },
        );
        self.check_registered(token);
        self.check_done(token);
        Ok(true)
    }

    /// The lazy pages of an image pid, each at its own address.
    fn lazy_pages(&self, image_pid: u32) -> Result<PageSet, LazyError> {
        let dir = ImageDir::open_unchecked(&self.opts.dir);
        let (_, entries) = read_pagemap(&dir, image_pid)?;
        let mut set = PageSet::new();
        for e in entries.iter().filter(|e| e.flags() & pagemap_flags::LAZY != 0) {
            if self.opts.page_server.is_none() && e.flags() & pagemap_flags::PRESENT == 0 {
                return Err(LazyError::NoPages { pid: image_pid, vaddr: e.vaddr() });
            }
            set.insert(e.vaddr(), e.page_count() * PAGE_SIZE, e.vaddr());
        }
        Ok(set)
    }

    /// Reads and handles everything pending on a task's uffd.
    fn serve_uffd(&mut self, token: u64) -> Result<(), LazyError> {
        let mut evs = Vec::new();
        let mut faulted = false;
        for _ in 0..10_000 {
            let Some(t) = self.tasks.get(&token) else { return Ok(()) };
            let n = match t.uffd.read_events(&mut evs) {
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!("lazy-pages: pid {}: read uffd: {e}", t.pid);
                    self.finish(token, "unreadable");
                    return Ok(());
                }
            };
            if evs.iter().any(|e| !matches!(e, Event::PageFault { .. })) {
                if let Some(t) = self.tasks.get_mut(&token) {
                    t.stalled = None;
                }
            }
            if n == 0 && faulted {
                self.follower.drifted();
            }
            faulted = evs.iter().any(|e| matches!(e, Event::PageFault { .. }));
            for ev in evs.drain(..) {
                self.event(token, ev)?;
            }
            let retry = self.tasks.get_mut(&token).map(|t| std::mem::take(&mut t.retry)).unwrap_or_default();
            for addr in &retry {
                self.fault(token, *addr)?;
            }
            let again = self.tasks.get(&token).is_some_and(|t| !t.retry.is_empty());
            if n == 0 && !again {
                break;
            }
        }
        self.check_done(token);
        Ok(())
    }

    fn event(&mut self, token: u64, ev: Event) -> Result<(), LazyError> {
        match ev {
            Event::PageFault { addr, tid, .. } => {
                if tid != 0 && self.tasks.get(&token).is_some_and(|t| t.pid == 0) {
                    self.learn_pid(token, tid);
                }
                let t0 = Instant::now();
                self.stats.faults += 1;
                self.fault(token, addr & !(PAGE_SIZE - 1))?;
                self.lat_ns.push(nanos(t0.elapsed()));
                if let Some(t) = self.tasks.get(&token) {
                    self.follower.on_fault(t.pid, tid);
                }
            }
            Event::Fork { uffd } => {
                self.stats.forks += 1;
                // Two tasks now: stop following one of them.
                self.follower.settle(true);
                let Some(parent) = self.tasks.get(&token) else { return Ok(()) };
                let (image_pid, missing, ppid) = (parent.image_pid, parent.missing.clone(), parent.pid);
                // The child is not in its parent's children list yet: what
                // is there now is what it is not.
                let siblings = children(ppid);
                let child = self.next_token;
                self.next_token += 1;
                let sys = |what: &'static str| move |source| LazyError::Sys { what: what.into(), source };
                rustix::fs::fcntl_setfl(&uffd, rustix::fs::OFlags::NONBLOCK).map_err(sys("fcntl"))?;
                self.guard.add_child(child, ppid, uffd.as_fd()).map_err(sys("hand to the guard"))?;
                epoll::add(&self.epoll, &uffd, EventData::new_u64(child), EventFlags::IN).map_err(sys("epoll_ctl"))?;
                tracing::debug!("lazy-pages: fork: child task {child} inherits {} pages", missing.pages());
                self.stats.tasks += 1;
                self.tasks.insert(
                    child,
                    Task {
                        uffd: Uffd::from_fd(uffd),
                        image_pid,
                        pid: 0,
                        pidfd: None,
                        missing,
                        cursor: 0,
                        retry: Vec::new(),
                        // A fork copies the registrations.
                        unregistered_since: None,
                        parent: Some((ppid, siblings)),
                        stalled: None,
                        doomed: false,
                    },
                );
                // The child's faults may already be queued: look now.
                self.serve_uffd(child)?;
            }
            Event::Remap { from, to, len } => {
                tracing::debug!("lazy-pages: task {token}: remap {from:#x} -> {to:#x} ({len:#x})");
                self.stats.remaps += 1;
                if let Some(t) = self.tasks.get_mut(&token) {
                    t.missing.remap(from, to, len);
                }
            }
            Event::Remove { start, end } | Event::Unmap { start, end } => {
                tracing::debug!("lazy-pages: task {token}: remove/unmap {start:#x}-{end:#x}");
                self.stats.removes += 1;
                if let Some(t) = self.tasks.get_mut(&token) {
                    t.missing.cut(start, end);
                }
            }
        }
        Ok(())
    }

    /// A task reported by a fork event faulted: its thread id names the
    /// process, so the daemon can watch it and the guard can kill it.
    fn learn_pid(&mut self, token: u64, tid: u32) {
        let tgid = std::fs::read_to_string(format!("/proc/{tid}/status")).ok().and_then(|s| {
            s.lines().find_map(|l| l.strip_prefix("Tgid:").and_then(|v| v.trim().parse::<u32>().ok()))
        });
        if let Some(p) = tgid {
            self.set_pid(token, p);
        }
    }

    /// Forked tasks whose pid is unknown: a child of their parent that was
    /// not there at the fork and belongs to no task is theirs.
    fn resolve_children(&mut self) {
        let unknown: Vec<(u64, u32, Vec<u32>)> = self
            .tasks
            .iter()
            .filter(|(_, t)| t.pid == 0)
            .filter_map(|(&k, t)| t.parent.as_ref().map(|(pp, sib)| (k, *pp, sib.clone())))
            .collect();
        for (token, ppid, siblings) in unknown {
            let known: Vec<u32> = self.tasks.values().map(|t| t.pid).collect();
            let new: Vec<u32> =
                children(ppid).into_iter().filter(|c| !siblings.contains(c) && !known.contains(c)).collect();
            // Two forks at once are told apart by their faults' thread ids.
            if let [pid] = new[..] {
                self.set_pid(token, pid);
            }
        }
    }

    /// Records the pid of a forked task: watched by pidfd, known to the guard.
    fn set_pid(&mut self, token: u64, pid: u32) {
        let Some(pid) = Pid::from_raw(pid as i32) else { return };
        let Ok(pidfd) = pidfd_open(pid, PidfdFlags::empty()) else { return };
        let Some(t) = self.tasks.get_mut(&token) else { return };
        t.pid = pid.as_raw_nonzero().get() as u32;
        // Re-adding under the same token replaces the guard's entry.
        if let Err(e) = self.guard.add(token, t.pid, t.uffd.as_fd(), Some(pidfd.as_fd())) {
            tracing::warn!("lazy-pages: guard: {e}");
        }
        if epoll::add(&self.epoll, &pidfd, EventData::new_u64(token | PIDFD_BIT), EventFlags::IN).is_ok() {
            t.pidfd = Some(pidfd);
        }
        tracing::debug!("lazy-pages: task {token} is pid {}", t.pid);
        if t.doomed {
            self.kill(token);
        }
    }

    /// Serves a fault at page `page`: its block from the images, or a zero
    /// page where the dump had nothing.
    fn fault(&mut self, token: u64, page: u64) -> Result<(), LazyError> {
        let chunk = self.opts.fault_chunk;
        let Some(t) = self.tasks.get_mut(&token) else { return Ok(()) };
        let Some(piece) = t.missing.take_around(page, chunk) else {
            return match t.uffd.zeropage(page, PAGE_SIZE, 0) {
                Ok(Copied::All) => {
                    tracing::debug!("lazy-pages: task {token}: zero page at {page:#x}");
                    self.stats.zero_pages += 1;
                    Ok(())
                }
                Ok(Copied::Exists) => {
                    let _ = t.uffd.wake(page, PAGE_SIZE);
                    Ok(())
                }
                Ok(Copied::Partial(_)) => {
                    t.retry.push(page);
                    Ok(())
                }
                // Unmapped since the fault: nothing owed there.
                Err(Errno::NOENT) => {
                    let _ = t.uffd.wake(page, PAGE_SIZE);
                    Ok(())
                }
                Err(e) => {
                    self.fill_failed(token, page, e);
                    Ok(())
                }
            };
        };
        let image_pid = t.image_pid;
        let t0 = Instant::now();
        let res = self.fill(token, image_pid, piece)?;
        self.copy_ns.push(nanos(t0.elapsed() - self.lookup));
        self.lookup_ns.push(nanos(self.lookup));
        match res {
            // The copy woke the threads waiting in what it filled.
            Ok(n) if (piece.start..piece.start + n).contains(&page) => {
                self.stats.fault_pages += n / PAGE_SIZE;
                return Ok(());
            }
            Ok(n) => self.stats.fault_pages += n / PAGE_SIZE,
            // The VMA went away since the fault (an unmap or remap whose
            // event is on its way): the pages stay owed where the event
            // will put them; the thread, woken, faults again or gets SIGSEGV.
            Err(Errno::NOENT) => {
                if let Some(t) = self.tasks.get(&token) {
                    let _ = t.uffd.wake(page, PAGE_SIZE);
                }
                return Ok(());
            }
            Err(e) => self.fill_failed(token, page, e),
        }
        if let Some(t) = self.tasks.get_mut(&token) {
            if t.missing.contains(page) {
                t.retry.push(page);
            } else {
                let _ = t.uffd.wake(page, PAGE_SIZE);
            }
        }
        Ok(())
    }

    /// Copies `piece` into the task; what did not go in is put back (the
    /// first page dropped if it was already present). Returns the bytes
    /// copied, or the errno that makes the task unservable.
    fn fill(&mut self, token: u64, image_pid: u32, piece: Piece) -> Result<Result<u64, Errno>, LazyError> {
        let t0 = Instant::now();
        let data = match self.source.pages(image_pid, piece.orig, piece.len) {
            Ok(d) => d,
            Err(e) => {
                // No data: this task cannot be completed. Fatal: the guard
                // kills the tasks left.
                return Err(LazyError::Source { pid: image_pid, source: e });
            }
        };
        self.lookup = t0.elapsed();
        let Some(t) = self.tasks.get_mut(&token) else { return Ok(Ok(0)) };
        let rest = |done: u64| Piece { start: piece.start + done, len: piece.len - done, orig: piece.orig + done };
        Ok(match t.uffd.copy(piece.start, data, 0) {
            Ok(Copied::All) => Ok(piece.len),
            Ok(Copied::Partial(n)) => {
                let n = n - n % PAGE_SIZE;
                t.missing.put_back(rest(n));
                Ok(n)
            }
            Ok(Copied::Exists) => {
                tracing::debug!("lazy-pages: task {token}: {:#x} already present", piece.start);
                if piece.len > PAGE_SIZE {
                    t.missing.put_back(rest(PAGE_SIZE));
                }
                Ok(0)
            }
            // ENOENT: not registered (any more) without an event telling
            // so; the pages cannot be delivered: the caller kills the task.
            Err(e) => {
                t.missing.put_back(piece);
                Err(e)
            }
        })
    }

    fn fill_failed(&mut self, token: u64, page: u64, e: Errno) {
        match e {
            Errno::SRCH => self.finish(token, "exited"),
            e => {
                let pid = self.tasks.get(&token).map_or(0, |t| t.pid);
                tracing::error!("lazy-pages: pid {pid}: filling {page:#x}: {e}; killing it");
                self.kill(token);
            }
        }
    }

    /// One background chunk of the next task with pages left.
    fn background(&mut self) -> Result<(), LazyError> {
        let token = self
            .tasks
            .range(self.bg_token + 1..)
            .chain(self.tasks.range(..=self.bg_token))
            .find(|(_, t)| {
                !t.missing.is_empty()
                    && t.unregistered_since.is_none()
                    && !t.doomed
                    && t.stalled.is_none_or(|(_, last)| last.elapsed() >= STALL_PAUSE)
            })
            .map(|(&k, _)| k);
        let Some(token) = token else { return Ok(()) };
        self.bg_token = token;
        let max = self.opts.bg_chunk;
        let Some(t) = self.tasks.get_mut(&token) else { return Ok(()) };
        let Some(piece) = t.missing.take_next(t.cursor, max) else { return Ok(()) };
        t.cursor = piece.start + piece.len;
        let image_pid = t.image_pid;
        let t0 = Instant::now();
        let res = self.fill(token, image_pid, piece)?;
        self.stats.bg_time += t0.elapsed();
        self.stats.bg_data_time += self.lookup;
        match res {
            Ok(n) => {
                self.stats.bg_pages += n / PAGE_SIZE;
                self.stats.bg_chunks += 1;
                if let Some(t) = self.tasks.get_mut(&token) {
                    t.stalled = None;
                }
            }
            Err(Errno::NOENT) => {
                let now = Instant::now();
                let Some(t) = self.tasks.get_mut(&token) else { return Ok(()) };
                let first = t.stalled.map_or(now, |(first, _)| first);
                t.stalled = Some((first, now));
                if first.elapsed() > STALL_LIMIT {
                    self.fill_failed(token, piece.start, Errno::NOENT);
                }
            }
            Err(e) => self.fill_failed(token, piece.start, e),
        }
        self.check_done(token);
        Ok(())
    }

    /// Whether every lazy page of the task is now in a range registered
    /// with userfaultfd (`um` in smaps). Until then nothing is copied in the
    /// background (a copy there would fail, or worse, the task would read
    /// zeroes there unnoticed); past the timeout the task is killed.
    fn check_registered(&mut self, token: u64) {
        let timeout = self.opts.register_timeout;
        let Some(t) = self.tasks.get_mut(&token) else { return };
        let Some(since) = t.unregistered_since else { return };
        let gap = super::smaps::missing_registered(t.pid)
            .ok()
            .map(|r| t.missing.extents().find_map(|(s, e)| super::smaps::uncovered(&r, s, e)));
        match gap {
            Some(None) => {
                t.unregistered_since = None;
                tracing::debug!("lazy-pages: pid {}: every lazy range is registered", t.pid);
            }
            Some(Some((s, e))) if since.elapsed() > timeout => {
                tracing::error!(
                    "lazy-pages: pid {}: lazy pages {s:#x}-{e:#x} still not registered with userfaultfd after {timeout:?}; killing it",
                    t.pid
                );
                self.kill(token);
            }
            // Not yet, or smaps unreadable (the task is exiting): look again later.
            _ => {}
        }
    }

    fn check_done(&mut self, token: u64) {
        if self.tasks.get(&token).is_some_and(|t| t.missing.is_empty()) {
            self.finish(token, "all pages in");
        }
    }

    /// Forgets a task: tells the guard, closes its uffd (the kernel then
    /// unregisters the ranges; what is still missing was zero at dump time).
    fn finish(&mut self, token: u64, why: &str) {
        let Some(t) = self.tasks.remove(&token) else { return };
        let _ = epoll::delete(&self.epoll, &t.uffd);
        if let Some(p) = &t.pidfd {
            let _ = epoll::delete(&self.epoll, p);
        }
        if let Err(e) = self.guard.done(token) {
            tracing::warn!("lazy-pages: guard: {e}");
        }
        tracing::info!("lazy-pages: task {token} (pid {}): {why}, {} pages left", t.pid, t.missing.pages());
        if why != "all pages in" {
            self.stats.gone += 1;
            self.stats.gone_pages += t.missing.pages();
        }
    }

    /// Kills a task. One whose pid is not known yet keeps its uffd open
    /// (its faults wait) until the pid is found; releasing the uffd first
    /// would let it run on zero pages.
    fn kill(&mut self, token: u64) {
        if self.tasks.get(&token).is_some_and(|t| t.pidfd.is_none()) {
            self.resolve_children();
        }
        let Some(t) = self.tasks.get_mut(&token) else { return };
        let Some(p) = t.pidfd.as_ref() else {
            if !t.doomed {
                t.doomed = true;
                let _ = epoll::delete(&self.epoll, &t.uffd);
                tracing::error!("lazy-pages: task {token}: to be killed once its pid is known");
            }
            return;
        };
        let _ = rustix::process::pidfd_send_signal(p, rustix::process::Signal::KILL);
        self.stats.killed += 1;
        self.finish(token, "killed");
    }
}
