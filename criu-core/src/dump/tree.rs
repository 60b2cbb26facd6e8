//! Dumping a process tree: the root and every descendant.
//!
//! Taking the tree: the root is frozen first; then, round after round, the
//! children of the tasks frozen in the last round are listed
//! (`/proc/PID/task/TID/children`, or a scan of `/proc` on kernels without
//! it), and each new one is frozen
//! (every thread seized and interrupted, see [`Frozen::begin`]; all of a
//! round's before any is waited for) or, if it has exited, recorded as a
//! zombie. A frozen task cannot fork, so once a
//! round finds nothing new the tree is complete; a task that forks while we
//! freeze it has its child found in the next round, and a child that exits
//! before we reach it is recorded as a zombie (or skipped once reaped).
//! Tasks traced by someone else and criu-rs itself inside the tree are
//! refused with a clear error; a task stopped by job control is dumped
//! stopped (`TASK_STOPPED` and its stop signal in `task_core`) and, with
//! `--leave-running`, left stopped; a thread under seccomp is seized with
//! its filters suspended, so the injected calls run.
//!
//! Sessions and groups: every task's pgid and sid must be a task of the
//! tree or a leader that no longer exists (restore recreates such a group
//! or session with a helper task); a live leader outside the tree means the
//! tree belongs to a shell session, refused without `--shell-job` (as the
//! root not leading its own session and group is).
//!
//! Then each task is collected in order (parents first) with state shared
//! across the tree in [`Shared`]: file ids, pages images (one per task,
//! `pages-1.img` for the root; with `--page-server` the server writes each
//! task's under the id given here, so it never collides with a shared
//! memory object's local one), shared memory objects (dumped once, by the
//! first task mapping them, over the largest extent any task maps), open
//! file descriptions (one id for a description shared across tasks), pipe
//! data (saved once per pipe) and `kcmp`-compared kernel objects.
//!
//! Afterwards every task is let go (`--leave-running`, or on any failure:
//! each as it was) or killed: SIGKILL to every live task, each thread's
//! exit collected as its tracer (so the kernel passes it on to the real
//! parent), then we wait until every task is dead (a zombie, or gone): it
//! can run no code any more. Reaping is left to whoever is its parent now
//! (init for the orphans, which may take its time); a restore that needs
//! one of the pids waits for it ([`crate::restore::clone::wait_pids_free`]).

use super::track::{self, TaskTrack};
use super::tracker::{self, Adopted};
use super::failpoint;
use super::memory::MemStats;
use super::model::{ProcessDump, ZombieDump};

use super::shared::Shared;
use super::remote::{self, HeldPages, PagesTo};
use super::{check_target, collect, create_pages_image, prepare_dir, vmas, write, DumpError, DumpOptions, DumpSummary, PAGES_ID};
use crate::pageserver::client::PageSink;
use crate::proc::stat::{read_stat, ProcStat};
use crate::ptrace::freeze::{Freezing, Frozen};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use std::time::{Duration, Instant};

/// How long a task that failed to freeze gets to show it was exiting.
const EXIT_GRACE: Duration = Duration::from_millis(100);
/// How long a dump waits for killed tasks to disappear.
const KILL_PATIENCE: Duration = Duration::from_secs(10);

/// A live task of the tree, frozen.
#[derive(Debug)]
pub struct LiveTask {
    /// Its threads, stopped.
    pub frozen: Frozen,
    /// The task that forked it (0 for the root).
    pub ppid: i32,
}

/// A frozen tree: live tasks parents first (the root first), and zombies.
/// Dropping it lets every task go.
#[derive(Debug, Default)]
pub struct FrozenTree {
    /// Live tasks, each after its parent.
    pub live: Vec<LiveTask>,
    /// Zombies (children of live tasks).
    pub zombies: Vec<ZombieDump>,
    /// Real-time priority for the thread working on the frozen tree, given
    /// up when the tree runs again (a live snapshot's, see [`super::boost`]).
    pub boost: Option<super::boost::Boost>,
}

/// Refuses a task holding a file lock: criu-rs does not dump locks yet,
/// and a restore without them would run on unlocked files (CRIU refuses
/// too unless `--file-locks`, and then dumps them). The kernel lists a
/// descriptor's locks (POSIX, OFD, flock, lease) in its fdinfo `lock:` lines.
fn refuse_file_locks(pid: i32, asked: bool) -> Result<(), DumpError> {
    // With --file-locks they are dumped (crate::files::locks).
    if asked {
        return Ok(());
    }
    let dir = crate::proc::path(pid, "fdinfo");
    let Ok(rd) = std::fs::read_dir(&dir) else { return Ok(()) };
    for e in rd.flatten() {
        let text = std::fs::read_to_string(e.path()).unwrap_or_default();
        if let Some(lock) = text.lines().find_map(|l| l.strip_prefix("lock:")) {
            let fd = e.file_name().to_string_lossy().into_owned();
            let why = format!("pid {pid} fd {fd} holds a file lock ({}); dump with --file-locks (-l) to keep it", lock.trim());
            return Err(DumpError::NotSupported(why));
        }
    }
    Ok(())
}

/// Every process (not thread) whose parent is in `parents` and that is not
/// in `known`, as (pid, parent): from each parent thread's
/// `/proc/PID/task/TID/children`, or (kernels without that file) from a
/// scan of `/proc`.
pub fn children_of(parents: &[i32], known: &[i32]) -> Result<Vec<(i32, i32)>, DumpError> {
    let mut out = Vec::new();
    for &parent in parents {
        match children_files(parent) {
            Some(kids) => out.extend(kids.into_iter().filter(|k| !known.contains(k)).map(|k| (k, parent))),
            None => return scan_children_of(parents, known),
        }
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

/// The children of every thread of `pid` from `/proc/PID/task/*/children`;
/// None if the kernel has no such file. A task that vanished has none.
fn children_files(pid: i32) -> Option<Vec<i32>> {
    let Ok(rd) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return Some(Vec::new()) };
    let mut kids = Vec::new();
    for e in rd.flatten() {
        match std::fs::read_to_string(e.path().join("children")) {
            Ok(text) => kids.extend(text.split_whitespace().filter_map(|k| k.parse::<i32>().ok())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && std::path::Path::new(&format!("/proc/{pid}")).exists() => {
                // The thread may have exited; the file is missing for all
                // threads on a kernel without CONFIG_PROC_CHILDREN.
                if !std::path::Path::new(&format!("/proc/self/task/{}/children", rustix::thread::gettid().as_raw_nonzero())).exists() {
                    return None;
                }
            }
            Err(_) => {}
        }
    }
    Some(kids)
}

/// [`children_of`] by a scan of `/proc`.
fn scan_children_of(parents: &[i32], known: &[i32]) -> Result<Vec<(i32, i32)>, DumpError> {
    let rd = std::fs::read_dir("/proc").map_err(|source| crate::proc::ProcError::Io { path: "/proc".into(), source })?;
    let mut out = Vec::new();
    for e in rd.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else { continue };
        if known.contains(&pid) {
            continue;
        }
        // A process that vanished since the listing is no child of ours any more.
        if let Ok(st) = read_stat(pid) {
            if parents.contains(&st.ppid) {
                out.push((pid, st.ppid));
            }
        }
    }
    out.sort_unstable();
    Ok(out)
}

/// A zombie's record from its `stat`; None if it is no zombie.
fn zombie_of(st: &ProcStat, ppid: i32) -> Option<ZombieDump> {
    (st.state == 'Z').then(|| ZombieDump {
        pid: st.pid,
        ppid,
        pgid: st.pgid,
        sid: st.sid,
        comm: st.comm.clone(),
        exit_code: st.exit_code,
    })
}

impl FrozenTree {
    /// Pids of every task (live and zombie).
    pub fn pids(&self) -> Vec<i32> {
        self.live.iter().map(|t| t.frozen.pid()).chain(self.zombies.iter().map(|z| z.pid)).collect()
    }

    /// Freezes `root` (already checked with [`check_target`]) and all its
    /// descendants within `timeout`.
    #[tracing::instrument(level = "debug", skip_all, fields(root))]
    pub fn freeze(root: i32, timeout: Duration) -> Result<FrozenTree, DumpError> {
        let deadline = Instant::now() + timeout;
        let mut tree = FrozenTree::default();
        tree.live.push(LiveTask { frozen: Frozen::freeze(root, timeout)?, ppid: 0 });
        // Tasks frozen in the last round: the only ones whose children are
        // not known yet (a frozen task cannot fork).
        let mut fresh = 0;
        loop {
            let parents: Vec<i32> = tree.live[fresh..].iter().map(|t| t.frozen.pid()).collect();
            fresh = tree.live.len();
            let mut known = tree.pids();
            known.sort_unstable();
            let new: Vec<(i32, i32)> = children_of(&parents, &[])?.into_iter().filter(|(k, _)| known.binary_search(k).is_err()).collect();
            if new.is_empty() {
                break;
            }
            // Every new task is interrupted before any is waited for: they
            // stop together, not one scheduling round each.
            let begun: Vec<(i32, i32, Result<Freezing, DumpError>)> = new
                .into_iter()
                .map(|(pid, ppid)| (pid, ppid, check_target(pid).and_then(|_| Frozen::begin(pid).map_err(DumpError::from))))
                .collect();
            let mut failed = None;
            for (pid, ppid, b) in begun {
                // After a failure the rest are still finished (and dropped,
                // so let go): none is left interrupted.
                let res = b.and_then(|f| f.finish(deadline).map_err(DumpError::from));
                if failed.is_none() {
                    failed = tree.add(pid, ppid, res).err();
                }
            }
            if let Some(e) = failed {
                return Err(e);
            }
        }
        tracing::info!(
            root,
            tasks = tree.live.len(),
            zombies = tree.zombies.len(),
            threads = tree.live.iter().map(|t| t.frozen.tids().len()).sum::<usize>(),
            "tree frozen"
        );
        Ok(tree)
    }

    /// Records `pid`, a child of the frozen `ppid`, as frozen (`res`) or as
    /// a zombie. A failure to freeze it is forgiven if the child turns out
    /// to have exited meanwhile (then it is recorded as a zombie, or
    /// skipped once reaped).
    fn add(&mut self, pid: i32, ppid: i32, res: Result<Frozen, DumpError>) -> Result<(), DumpError> {
        match res {
            Ok(frozen) => {
                tracing::debug!(pid, ppid, threads = frozen.tids().len(), "frozen");
                self.live.push(LiveTask { frozen, ppid });
                Ok(())
            }
            Err(e) => {
                // An exiting task takes a moment to become a zombie.
                let until = Instant::now() + EXIT_GRACE;
                loop {
                    match read_stat(pid) {
                        Ok(st) if st.state == 'Z' => {
                            self.zombies.extend(zombie_of(&st, ppid));
                            return Ok(());
                        }
                        Ok(st) if st.state != 'X' && Instant::now() >= until => return Err(e),
                        Ok(st) if st.state != 'X' => std::thread::sleep(Duration::from_millis(1)),
                        // Gone, or being reaped.
                        _ => return Ok(()),
                    }
                }
            }
        }
    }

    /// Refuses groups and sessions led by a live process outside the tree
    /// (unless `shell_job`); see the module documentation.
    pub fn check_sessions(&self, shell_job: bool) -> Result<(), DumpError> {
        if shell_job {
            return Ok(());
        }
        let pids = self.pids();
        let mut ids: Vec<(i32, i32, i32)> = self.zombies.iter().map(|z| (z.pid, z.pgid, z.sid)).collect();
        for t in &self.live {
            let st = read_stat(t.frozen.pid())?;
            ids.push((st.pid, st.pgid, st.sid));
        }
        for (pid, pgid, sid) in ids {
            // 0: led by a process outside our pid namespace (or by none,
            // for a session the kernel started): outside the tree too.
            let led_outside = |id: i32, session: bool| {
                id == 0
                    || !pids.contains(&id)
                        && read_stat(id).is_ok_and(|s| if session { s.sid == id } else { s.pgid == id })
            };
            if led_outside(sid, true) || led_outside(pgid, false) {
                return Err(DumpError::ShellJob { pid, sid, pgid });
            }
        }
        Ok(())
    }

    /// Lets every live task run on (the zombies stay recorded): the tree
    /// runs while a live copy goes on; a later `detach` has nothing to do.
    pub fn let_go(&mut self) -> Result<(), DumpError> {
        FrozenTree { live: std::mem::take(&mut self.live), zombies: Vec::new(), boost: self.boost.take() }.detach()
    }

    /// Lets every task run on as it was.
    pub fn detach(self) -> Result<(), DumpError> {
        let mut first = Ok(());
        for t in self.live {
            if let Err(e) = t.frozen.detach() {
                tracing::error!("resuming a task: {e}");
                if first.is_ok() {
                    first = Err(e.into());
                }
            }
        }
        first
    }

    /// Kills every task and waits for them to go (see the module documentation).
    pub fn kill(self) -> Result<(), DumpError> {
        // Start times tell a task from a later process given its pid.
        let pids: Vec<(i32, u64)> = self.pids().into_iter().map(|p| (p, read_stat(p).map_or(0, |s| s.start_time))).collect();
        for t in &self.live {
            // A task that is already gone needs no signal.
            let _ = nix::sys::signal::kill(crate::ptrace::npid(t.frozen.pid()), nix::sys::signal::Signal::SIGKILL);
        }
        let deadline = Instant::now() + KILL_PATIENCE;
        for t in self.live {
            let pid = t.frozen.pid();
            let mut tids = t.frozen.release();
            // The leader's exit is reported once its other threads are gone.
            tids.sort_by_key(|&tid| (tid == pid, tid));
            for tid in tids {
                reap_traced(tid, deadline);
            }
            tracing::debug!(pid, "exits collected");
        }
        let mut left = Vec::new();
        for (pid, start) in pids {
            if !wait_task_dead(pid, start, deadline) {
                left.push(pid);
            }
            tracing::debug!(pid, "dead");
        }
        if !left.is_empty() {
            return Err(DumpError::Tree(format!("tasks {left:?} still run after SIGKILL")));
        }
        Ok(())
    }
}

/// Collects the exit of a killed thread we trace (`waitpid(tid, __WALL)`),
/// until `deadline`.
fn reap_traced(tid: i32, deadline: Instant) {
    loop {
        match waitpid(crate::ptrace::npid(tid), Some(WaitPidFlag::__WALL | WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(..) | WaitStatus::Signaled(..)) | Err(_) => return,
            Ok(WaitStatus::StillAlive) if Instant::now() >= deadline => return,
            Ok(WaitStatus::StillAlive) => std::thread::sleep(Duration::from_millis(1)),
            // A stop reported before the kill took effect.
            Ok(_) => {}
        }
    }
}

/// Waits until task `pid` (started at `start`) is dead: a zombie or gone
/// from `/proc`. It can no longer run code then; whoever its parent now is
/// (its own parent, init, a subreaper) reaps it when it gets to it, and a
/// restore that needs the pid waits for that. False if it still runs at
/// `deadline`.
fn wait_task_dead(pid: i32, start: u64, deadline: Instant) -> bool {
    loop {
        let st = match read_stat(pid) {
            Ok(st) if st.start_time == start => st,
            _ => return true,
        };
        if matches!(st.state, 'Z' | 'X') {
            return true;
        }
        if Instant::now() >= deadline {
            tracing::warn!(pid, state = %st.state, ppid = st.ppid, "task still there after SIGKILL");
            return false;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// The sizes of the shared anonymous objects over every task's mappings.
fn note_shared_memory(tree: &FrozenTree, sh: &mut Shared) -> Result<(), DumpError> {
    for t in &tree.live {
        // `maps`, not `smaps`: sizes and kinds only, without counting every
        // area's pages (tens of ms per GiB, the tree frozen).
        for m in crate::proc::maps::read_maps(t.frozen.pid())? {
            if vmas::classify(&m).is_shmem_object() {
                sh.note_shmem(m.inode, m.offset + m.len());
            }
        }
    }
    Ok(())
}

fn add_stats(a: &mut MemStats, b: &MemStats) {
    a.pages_scanned += b.pages_scanned;
    a.pages_skipped_zero += b.pages_skipped_zero;
    a.pages_written += b.pages_written;
    a.pages_lazy += b.pages_lazy;
    a.pages_in_parent += b.pages_in_parent;
    a.read_time += b.read_time;
    a.write_time += b.write_time;
}

/// Where one task's pages go: the local pages image, and (page server,
/// held) the memfd collection writes into instead.
fn task_pages(opts: &DumpOptions, id: u32, root_pages: &Option<std::fs::File>) -> Result<(Option<std::fs::File>, std::fs::File), DumpError> {
    let local = match (&opts.pages_to, id == PAGES_ID) {
        (PagesTo::PageServer(_), _) => None,
        // Held pages' neighbours are appended unaligned: no O_DIRECT.
        (PagesTo::Held, _) => Some(remote::plain_pages_image(&opts.dir, id)?),
        (PagesTo::Local, true) => Some(root_pages.as_ref().ok_or(DumpError::Internal("no pages image"))?.try_clone().map_err(DumpError::WritePages)?),
        (PagesTo::Local, false) => Some(create_pages_image(&opts.dir, id)?),
    };
    let collect_into = match (&opts.pages_to, &local) {
        (PagesTo::Local, Some(f)) => f.try_clone().map_err(DumpError::WritePages)?,
        _ => remote::memfd_create()?,
    };
    Ok((local, collect_into))
}

/// Collects every task of a frozen tree and writes the images; with
/// `sink`, the private pages go to the page server, with
/// [`PagesTo::Held`] those of lazy areas are returned.
#[tracing::instrument(level = "debug", skip_all)]
fn collect_tree(
    tree: &mut FrozenTree,
    opts: &DumpOptions,
    root_pages: Option<std::fs::File>,
    mut sink: Option<PageSink>,
    t0: Instant,
    adopted: &mut Option<Adopted>,
    sh: &mut Shared,
    armed: Option<&super::live::Armed>,
    ahead: &super::live::SmapsAhead,
) -> Result<(DumpSummary, Option<HeldPages>), DumpError> {
    if !opts.pre_dump {
        tree.check_sessions(opts.shell_job)?;
        for t in &tree.live {
            refuse_file_locks(t.frozen.pid(), opts.file_locks)?;
        }
    }
    sh.seen.set_tree(tree.live.iter().map(|t| t.frozen.pid()).chain(tree.zombies.iter().map(|z| z.pid)));
    sh.seen.unix.ext = crate::files::unix::ExtUnixSk::from_options(opts.ext_unix_sk.as_deref(), &opts.external);
    sh.seen.external_files = opts.external.iter().filter(|e| crate::files::reg::external_file_key(e)).cloned().collect();
    note_shared_memory(tree, sh)?;
    let mut procs: Vec<ProcessDump> = Vec::new();
    let mut mem = MemStats::default();
    let mut memdump_time = Duration::ZERO;
    let mut held = (opts.pages_to == PagesTo::Held).then(HeldPages::default);
    let mut tracked: Vec<(i32, crate::uffd::Uffd)> = Vec::new();
    let copy = mem_copy(opts);
    let mut pending: Vec<(usize, collect::PendingCopy, std::fs::File)> = Vec::new();
    for (i, t) in tree.live.iter().enumerate() {
        if i > 0 && i + 1 == tree.live.len() {
            failpoint::check(failpoint::MID_TREE)?;
        }
        let pages_id = if i == 0 { PAGES_ID } else { sh.alloc_pages_id() };
        let (local, mut pages) = task_pages(opts, pages_id, &root_pages)?;
        let pid = t.frozen.pid();
        let mut track = TaskTrack { want: opts.pre_dump || opts.track_mem, ..Default::default() };
        if let (Some(a), Some(parent)) = (adopted.as_mut(), opts.parent.as_ref()) {
            track.uffd = a.uffds.remove(&pid);
            if track.uffd.is_some() {
                track.parent_pages = track::parent_pages(&opts.dir.join(parent), pid);
            }
        }
        if let Some(t) = armed.and_then(|a| a.take_track(pid)) {
            track.uffd = Some(t.uffd);
            track.armed = t.areas;
        }
        if let Some(s) = armed.and_then(|a| a.take_swap(pid)) {
            track.swapped = s.ranges;
            track.written_before_swap = s.written;
        }
        let armed_task = armed.and_then(|a| a.tasks.get(&pid).cloned());
        let files_opts = crate::files::FilesOptions { shell_job: opts.shell_job, file_locks: opts.file_locks, ghost_limit: opts.ghost_limit };
        let (mut p, mut m, d, later) = collect::collect(&t.frozen, &opts.dir, &mut pages, files_opts, sh, &mut track, copy, armed_task, ahead.get(pid))?;
        if let Some(later) = later {
            pending.push((i, later, pages.try_clone().map_err(DumpError::WritePages)?));
        }
        if let Some(uffd) = track.uffd.take() {
            tracked.push((pid, uffd));
        }
        p.pages_id = pages_id;
        if i > 0 {
            p.ppid = t.ppid;
        }
        p.kobj = sh.kobj_ids(p.pid).map_err(|e| DumpError::Tree(format!("kcmp on pid {}: {e}", p.pid)))?;
        // A shared descriptor table is restored by forking with CLONE_FILES
        // from the parent: one shared with another task cannot be.
        if p.kobj.files != p.pid as u32 && procs.iter().find(|q| q.pid == p.ppid).is_none_or(|q| q.kobj.files != p.kobj.files) {
            let what = format!("fd table shared (CLONE_FILES) with task {}, which is not its parent", p.kobj.files);
            return Err(DumpError::Unsupported { pid: p.pid, what });
        }
        // As CRIU: the pages a lazy restore may leave to the daemon are
        // flagged in every dump (not a pre-dump's: it is never restored).
        if !opts.pre_dump {
            remote::flag_lazy(&mut p);
        }
        if let Some(sink) = sink.as_mut() {
            // The root's were removed with the directory's other stale files.
            if i > 0 {
                super::remove_served(&opts.dir, pid, pages_id)?;
            }
            remote::send_pages(sink, &p, &pages)?;
        } else if let (Some(all), Some(mut local)) = (held.as_mut(), local) {
            let h = remote::hold_lazy(&mut p, pages, &mut local)?;
            m.pages_lazy = h.pages();
            m.pages_written -= m.pages_lazy;
            all.add(h);
        }
        add_stats(&mut mem, &m);
        memdump_time += d;
        procs.push(p);
    }
    crate::files::finish_tree(&mut procs, &mut sh.seen, &mut sh.next_file_id)?;
    let mut frozen_time = t0.elapsed();
    if !pending.is_empty() {
        // Everything but the pages is collected: the tree runs from here
        // on, its connections out of repair mode first.
        sh.sockets.release_now();
        tree.let_go()?;
        frozen_time = t0.elapsed();
        tracing::info!(frozen_ms = frozen_time.as_millis() as u64, "tree let go; copying memory live");
        let t = Instant::now();
        // The flags read ahead are checked again meanwhile.
        let to_check = ahead.to_check(&procs);
        std::thread::scope(|s| {
            let checked = s.spawn(|| super::live::SmapsAhead::check(&to_check));
            let copied = copy_live(pending, &mut procs, &mut mem, armed, !opts.pre_dump);
            copied.and(checked.join().unwrap_or(Err(DumpError::Internal("the smaps check panicked"))))
        })?;
        memdump_time += t.elapsed();
    }
    failpoint::check(failpoint::BEFORE_WRITE)?;
    let pages_remote = sink.is_some();
    if let Some(sink) = sink.take() {
        // Everything sent and accepted before the inventory is written.
        sink.finish()?;
    }
    let summary = DumpSummary {
        process: procs.first().cloned().ok_or(DumpError::Internal("empty tree"))?,
        mem,
        freezing_time: Duration::ZERO,
        frozen_time,
        memdump_time,
        tasks: procs.len(),
        zombies: tree.zombies.len(),
        pages_remote,
    };
    if let Some(parent) = &opts.parent {
        let link = opts.dir.join(super::PARENT_LINK);
        std::os::unix::fs::symlink(parent, &link).map_err(|source| DumpError::ImagesDir { path: link, source })?;
    }
    if opts.pre_dump {
        write::write_pagemaps(&opts.dir, &procs)?;
    } else {
        write::write_images(&opts.dir, &procs, &tree.zombies, &summary, &sh.sockets)?;
    }
    if opts.pre_dump || (opts.track_mem && opts.leave_running) {
        let tasks: Vec<(i32, &crate::uffd::Uffd)> = tracked.iter().map(|(p, u)| (*p, u)).collect();
        tracker::spawn(&opts.dir, &tasks)?;
    }
    Ok((summary, held))
}

/// How this dump copies private memory ([`super::live`]): while the tree
/// runs for `pre-dump` and `dump --leave-running` to local images (unless
/// `--track-mem` asks the dump to go on tracking), frozen otherwise.
fn mem_copy(opts: &DumpOptions) -> collect::MemCopy {
    use collect::MemCopy;
    if !opts.live || opts.pages_to != PagesTo::Local {
        MemCopy::Frozen
    } else if opts.pre_dump {
        MemCopy::Tracked
    } else if opts.leave_running && !opts.track_mem {
        MemCopy::Exact
    } else {
        MemCopy::Frozen
    }
}

/// Copies the pending tasks' memory while the tree runs, serving the
/// exact-mode tasks' write faults meanwhile; fills each task's pagemap.
/// The tasks armed ahead have their server already (`armed`'s, serving
/// since the arming, through the freeze).
fn copy_live(
    pending: Vec<(usize, collect::PendingCopy, std::fs::File)>,
    procs: &mut [ProcessDump],
    mem: &mut MemStats,
    armed: Option<&super::live::Armed>,
    lazy_flags: bool,
) -> Result<(), DumpError> {
    let unserved = |pid: i32| armed.is_none_or(|a| !a.tasks.contains_key(&pid));
    let server = super::live::Server::start(pending.iter().filter(|(i, ..)| unserved(procs[*i].pid)).map(|(_, p, _)| p.live.clone()).collect())?;
    failpoint::live_pause();
    let mut lives = Vec::new();
    for (i, p, file) in pending {
        let pid = procs[i].pid;
        let mut batches = 0u32;
        let (entries, stats) = super::memory::copy_private(pid, p.plan, &file, Some(&p.live), || {
            batches += 1;
            if batches == 1 {
                failpoint::check(failpoint::MID_MEMORY)?;
            }
            Ok(())
        })?;
        // Pages still to come may fault until the last batch; the task is
        // done only once every batch is in.
        if let Some(why) = p.live.broken() {
            return Err(DumpError::LiveBroken(why));
        }
        procs[i].pagemap = entries;
        // As for a frozen copy: the pages a lazy restore may leave to the
        // daemon, flagged once the pagemap is there.
        if lazy_flags {
            remote::flag_lazy(&mut procs[i]);
        }
        add_stats(mem, &stats);
        lives.push((pid, p.live));
    }
    server.stop();
    for (pid, live) in lives {
        live.finish();
        super::live::log_stats(pid, &live.stats());
    }
    Ok(())
}

/// Dumps `opts.pid` and all its descendants. See the module documentation.
/// A live copy that can no longer be exact ([`DumpError::LiveBroken`]) is
/// given up and the dump made again with the memory copied frozen.
pub fn dump_tree(opts: &DumpOptions) -> Result<(DumpSummary, Option<HeldPages>), DumpError> {
    match dump_tree_once(opts) {
        Err(DumpError::LiveBroken(why)) => {
            tracing::warn!("live copy abandoned ({why}); dumping again with the memory copied frozen");
            let mut frozen = opts.clone();
            frozen.live = false;
            dump_tree_once(&frozen)
        }
        r => r,
    }
}

#[tracing::instrument(level = "debug", skip_all, fields(pid = opts.pid))]
fn dump_tree_once(opts: &DumpOptions) -> Result<(DumpSummary, Option<HeldPages>), DumpError> {
    super::check_supported(opts)?;
    let stat = check_target(opts.pid)?;
    if !opts.shell_job && !opts.pre_dump && (stat.sid != opts.pid || stat.pgid != opts.pid) {
        return Err(DumpError::ShellJob { pid: opts.pid, sid: stat.sid, pgid: stat.pgid });
    }
    // Connect before touching the tree: a server that is not there is an
    // error with nothing to undo.
    let sink = match &opts.pages_to {
        PagesTo::PageServer(addr) => Some(PageSink::connect(addr.as_str())?),
        _ => None,
    };
    let pages = prepare_dir(&opts.dir, opts.pid, &opts.pages_to)?;
    let mut adopted = match &opts.parent {
        Some(parent) => {
            let parent = opts.dir.join(parent);
            if !parent.is_dir() {
                return Err(DumpError::ImagesDir { path: parent, source: std::io::Error::from_raw_os_error(libc::ENOTDIR) });
            }
            tracker::adopt(&parent)
        }
        None => None,
    };
    // A live copy protects the memory ahead of the freeze: for itself
    // (exact), or for the tracking a pre-dump leaves (unless the parent's
    // tracking holds the areas).
    let armed = match mem_copy(opts) {
        collect::MemCopy::Exact => super::live::arm(opts.pid, opts.freeze_timeout, super::live::ArmFor::Exact, adopted.as_ref().map(|a| &a.uffds))?,
        collect::MemCopy::Tracked if adopted.is_none() => super::live::arm(opts.pid, opts.freeze_timeout, super::live::ArmFor::Tracking, None)?,
        _ => None,
    };
    // A copy made while the tree runs reads the areas' flags (smaps, which
    // counts every page) before the freeze too.
    let ahead = match mem_copy(opts) {
        collect::MemCopy::Frozen => super::live::SmapsAhead::default(),
        _ => super::live::SmapsAhead::read(opts.pid),
    };
    let boost = (mem_copy(opts) != collect::MemCopy::Frozen).then(|| super::boost::Boost::now("dump freeze"));
    let t0 = Instant::now();
    let mut tree = match FrozenTree::freeze(opts.pid, opts.freeze_timeout) {
        Ok(t) => FrozenTree { boost, ..t },
        Err(e) => {
            // Nothing was scanned: the parent's tracking is still good.
            drop(adopted);
            return Err(e);
        }
    };
    let freezing_time = t0.elapsed();
    let mut sh = Shared::new(crate::net::dump_state::DumpSockets::new(opts.socket_opts(), crate::net::lock::new_run_id()));
    let result = collect_tree(&mut tree, opts, pages, sink, t0, &mut adopted, &mut sh, armed.as_ref(), &ahead).map(|(mut s, held)| {
        s.freezing_time = freezing_time;
        (s, held)
    });
    // Scanning re-protected what it reported: the parent's tracker has
    // nothing left to tell anyone (its successor, if any, holds the rest).
    if let Some(a) = adopted {
        a.retire();
    }
    // The images are complete and the tree still frozen: the caller may
    // act on both (CRIU's post-dump scripts, not run by a pre-dump); if it
    // refuses, the tree runs on.
    let result = result.and_then(|done| {
        if !opts.pre_dump {
            crate::actions::run(opts.actions.as_ref(), crate::actions::Action::PostDump, Some(opts.pid))?;
        }
        Ok(done)
    });
    let Shared { sockets, mut seen, .. } = sh;
    match result {
        Ok(done) => {
            if opts.leave_running || opts.pre_dump {
                // Connections out of repair mode before anything runs.
                sockets.release();
                seen.tty.put_back();
                tree.detach()?;
            } else {
                tree.kill()?;
                // The sockets died in repair mode: silently, still locked.
                sockets.keep();
            }
            Ok(done)
        }
        Err(e) => {
            sockets.release();
            seen.tty.put_back();
            // The caller reports `e`; here only what happens next.
            tracing::info!("dump failed ({e}); resuming every task");
            if let Err(d) = tree.detach() {
                tracing::error!("resuming after the failure: {d}");
            }
            Err(e)
        }
    }
}
