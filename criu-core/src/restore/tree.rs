//! Restoring every task of `pstree.img`: pids, parents, process groups,
//! sessions, zombies.
//!
//! criu-rs creates what the tasks share ([`super::shared`]), then forks the
//! root with its pid and traces it (with `PTRACE_O_TRACEFORK`/`TRACECLONE`,
//! so every task and thread created below it is traced from birth). Each
//! task, still running criu-rs's code, takes its session (`setsid`) and
//! group (`setpgid`), builds its private memory (so that its children
//! inherit it copy-on-write, [`super::cow`]), then forks its children in
//! `pstree.img` order, each with its pid (`clone3` + `set_tid`): a session
//! or group leader has set itself up before any child exists, so children
//! inherit or join it.
//! Zombies are forked untraced, take their ids and name, exit with their
//! dumped status and are left unreaped for their restored parent. Then the
//! task prepares itself and enters the blob ([`super::child::prepare`]).
//! [`super::barrier`] holds every thread of every task at the blob's last
//! trap until the whole tree is there, then lets them all go.

use super::barrier::{self, Tracked, TreeGuard};
use super::child::{build_memory, guarded, prepare, FdTable};
use super::cow;
use super::clone::{clone3_set_tid_flags, Forked};
use super::error::{RestoreError, Result, SysContext};
use super::finalize::ThreadEnd;
use super::lazy::{self, LazySetup};
use super::load::{load_task, open_dir, LoadOptions, SharedImages};
use super::plan::TaskPlan;
use super::shared::SharedObjects;
use super::{RestoreOptions, RestoreStats, Restored};
use crate::actions::Action;
use crate::images::consts::task_state;
use crate::images::{pb, ImageKind};
use rustix::fd::OwnedFd;
use std::collections::BTreeMap;

/// `CLONE_UNTRACED`: the child is not auto-attached to our tracer.
const CLONE_UNTRACED: u64 = 0x0080_0000;

/// One task of the tree.
#[derive(Debug)]
pub struct TreeTask {
    pub pid: i32,
    /// 0 for the root.
    pub ppid: i32,
    pub pgid: i32,
    pub sid: i32,
    /// Its descriptor table's id (`files_id`; 0 for a zombie): tasks with
    /// the same id shared one table (`CLONE_FILES`).
    pub files_id: u32,
    pub kind: TaskKind,
}

/// A live task or a zombie.
#[derive(Debug)]
pub enum TaskKind {
    Live(Box<TaskPlan>),
    /// Exits with `status` (as `wait` reports it) and stays unreaped.
    Zombie { status: i32, comm: String },
}

/// Every task, parents before children; `tasks[0]` is the root.
#[derive(Debug)]
pub struct TreePlan {
    pub tasks: Vec<TreeTask>,
    /// Per task (same indices as `tasks`), its lazy-pages setup when
    /// restoring with `--lazy-pages` ([`lazy::setup`]); empty until then.
    pub lazy: Vec<Option<LazySetup>>,
    /// `--mmap-page-image`: private anonymous pages are mapped from the
    /// images ([`super::image_map`]).
    pub map_pages: bool,
    /// The pty pairs that are controlling terminals of the tree's sessions.
    pub cttys: Vec<crate::files::tty::Ctty>,
}

impl TreePlan {
    /// The live tasks' plans.
    pub fn live(&self) -> impl Iterator<Item = &TaskPlan> {
        self.tasks.iter().filter_map(|t| match &t.kind {
            TaskKind::Live(p) => Some(&**p),
            TaskKind::Zombie { .. } => None,
        })
    }

    /// Every pid and tid the restore creates.
    pub fn ids(&self) -> Vec<i32> {
        let tids = self.live().flat_map(|p| p.threads.iter().map(|t| t.0));
        self.tasks.iter().map(|t| t.pid).chain(tids).collect()
    }

    /// Whether task `idx` shares its parent's descriptor table (forked with
    /// `CLONE_FILES`).
    fn shares_parent_table(&self, idx: usize) -> bool {
        let t = &self.tasks[idx];
        let parent = self.tasks.iter().find(|p| p.pid == t.ppid && t.ppid != 0);
        matches!(t.kind, TaskKind::Live(_)) && parent.is_some_and(|p| matches!(p.kind, TaskKind::Live(_)) && p.files_id == t.files_id)
    }

    /// The tasks other than `idx` that share task `idx`'s descriptor table.
    fn table_sharers(&self, idx: usize) -> impl Iterator<Item = usize> + '_ {
        let id = self.tasks[idx].files_id;
        let live = |t: &TreeTask| matches!(t.kind, TaskKind::Live(_));
        let mine = live(&self.tasks[idx]);
        self.tasks.iter().enumerate().filter(move |&(i, t)| mine && i != idx && live(t) && t.files_id == id).map(|(i, _)| i)
    }

    /// Indices of the tasks whose parent is task `idx`, in image order.
    fn children(&self, idx: usize) -> impl Iterator<Item = usize> + '_ {
        let pid = self.tasks[idx].pid;
        self.tasks.iter().enumerate().filter(move |(_, t)| t.ppid == pid && t.ppid != 0).map(|(i, _)| i)
    }
}

/// Reads and checks the whole tree of the dump in `dir`.
#[tracing::instrument(level = "debug", skip_all, fields(dir = %dir.display()))]
pub fn load_tree(dir: &std::path::Path, opts: LoadOptions) -> Result<TreePlan> {
    let images = open_dir(dir)?;
    let path = images.image_path(ImageKind::Pstree, 0);
    let entries: Vec<pb::PstreeEntry> = images.read_all(ImageKind::Pstree, 0)?;
    if entries.is_empty() {
        return Err(RestoreError::bad(&path, "no process"));
    }
    let shared = SharedImages::read(&images)?;
    // Asked once here, inherited by every task forked later.
    super::xsave::host_xfeatures();
    let mut tasks: Vec<TreeTask> = Vec::with_capacity(entries.len());
    let mut ids: Vec<i32> = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        let pid = e.pid.unwrap_or_default() as i32;
        let ppid = if i == 0 { 0 } else { e.ppid.unwrap_or_default() as i32 };
        let (pgid, sid) = (e.pgid.unwrap_or_default() as i32, e.sid.unwrap_or_default() as i32);
        // A pgid or sid of 0 is a group or session led from outside the
        // dumping pid namespace: restored like any outside one (inherited).
        if pid <= 0 || pgid < 0 || sid < 0 {
            return Err(RestoreError::bad(&path, format!("task {pid}: bad pid, pgid {pgid} or sid {sid}")));
        }
        let tids: Vec<i32> = e.threads.iter().map(|&t| t as i32).collect();
        if let Some(dup) = std::iter::once(pid).chain(tids.iter().copied().skip(1)).find(|t| ids.contains(t)) {
            return Err(RestoreError::bad(&path, format!("pid {dup} appears twice")));
        }
        ids.push(pid);
        ids.extend(tids.iter().skip(1));
        let parent = tasks.iter().find(|t| t.pid == ppid);
        if i > 0 && !matches!(parent, Some(TreeTask { kind: TaskKind::Live(_), .. })) {
            return Err(RestoreError::bad(&path, format!("task {pid}: parent {ppid} is not a live task listed before it")));
        }
        let core: pb::CoreEntry = images.read_one(ImageKind::Core, pid as u64)?;
        let tc = core.tc.as_ref();
        let mut files_id = 0;
        let kind = if tc.and_then(|tc| tc.task_state) == Some(task_state::DEAD) {
            if i == 0 {
                return Err(RestoreError::Unsupported { file: path, what: format!("the root {pid} is a zombie") });
            }
            let tc = tc.cloned().unwrap_or_default();
            TaskKind::Zombie { status: tc.exit_code.unwrap_or_default() as i32, comm: tc.comm.unwrap_or_default() }
        } else {
            let mut plan = load_task(&images, &shared, e, &opts)?;
            plan.root = i == 0;
            files_id = super::load::files_id(&images, &plan.core, pid)?;
            TaskKind::Live(Box::new(plan))
        };
        let task = TreeTask { pid, ppid, pgid, sid, files_id, kind };
        check_ids(&task, &tasks, &path)?;
        check_table(&task, &tasks, &path)?;
        tasks.push(task);
    }
    let live: Vec<i32> = tasks.iter().filter(|t| matches!(t.kind, TaskKind::Live(_))).map(|t| t.pid).collect();
    let taken = tasks.iter().map(|t| if let TaskKind::Live(p) = &t.kind { p.locks.len() } else { 0 }).sum();
    crate::files::locks::check_all_taken(&images, &opts, &live, taken)?;
    assign_first_held(&images, &mut tasks)?;
    let cttys = crate::files::tty::cttys(tasks.iter().flat_map(|t| match &t.kind {
        TaskKind::Live(p) => Some(p.descs.iter()),
        TaskKind::Zombie { .. } => None,
    }).flatten());
    Ok(TreePlan { tasks, lazy: Vec::new(), map_pages: false, cttys })
}

/// Gives each live task the descriptions it is the first to hold (it
/// finishes them: epoll targets, timers, ...), checking what they need.
fn assign_first_held(images: &crate::images::ImageDir, tasks: &mut [TreeTask]) -> Result<()> {
    let pids: Vec<i32> = tasks.iter().map(|t| t.pid).collect();
    let live: Vec<(i32, &[crate::files::fdtable::FdPlan], &BTreeMap<u32, crate::files::DescPlan>)> = tasks
        .iter()
        .filter_map(|t| match &t.kind {
            TaskKind::Live(p) => Some((t.pid, p.fds.as_slice(), &p.descs)),
            TaskKind::Zombie { .. } => None,
        })
        .collect();
    let held = crate::files::task::first_holders(&live, &pids, &images.image_path(ImageKind::Files, 0))?;
    let plans = tasks.iter_mut().filter_map(|t| match &mut t.kind {
        TaskKind::Live(p) => Some(p),
        TaskKind::Zombie { .. } => None,
    });
    for (p, h) in plans.zip(held) {
        p.first_held = h;
    }
    Ok(())
}

/// A task that shared its descriptor table with tasks listed before it
/// (`CLONE_FILES`) is forked sharing its parent's: the table must be its
/// parent's, and the task one its parent forks itself (not a helper).
fn check_table(t: &TreeTask, before: &[TreeTask], path: &std::path::Path) -> Result<()> {
    if !matches!(t.kind, TaskKind::Live(_)) {
        return Ok(());
    }
    let Some(owner) = before.iter().find(|b| matches!(b.kind, TaskKind::Live(_)) && b.files_id == t.files_id) else { return Ok(()) };
    let parent = before.iter().find(|b| b.pid == t.ppid);
    let what = if parent.is_none_or(|p| p.files_id != t.files_id) {
        format!("task {} shares the fd table of task {} (CLONE_FILES), which is not its parent's", t.pid, owner.pid)
    } else if helper_for(t, before).ok().flatten().is_some() {
        format!("task {} shares its parent's fd table (CLONE_FILES) but its session or group leader is gone", t.pid)
    } else {
        return Ok(());
    };
    Err(RestoreError::Unsupported { file: path.into(), what })
}

/// A task whose session or group leader is gone (and is no task of the
/// tree) is forked by such a helper: one with the leader's pid, forked by
/// the task's parent, that starts the session (`setsid`) or the group
/// (`setpgid(0, 0)`), forks the task and exits. The task is then
/// reparented to its parent, a child subreaper meanwhile (as it must have
/// been at dump time for the task to be its child).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Helper {
    Session(i32),
    Group(i32),
}

/// How task `t` gets its session and group, given the tasks listed before
/// it (`tasks` may hold more; only pids are looked up): by `setsid` or
/// from its parent, and by `setpgid(0, 0)`, from an ancestor, or from a
/// [`Helper`]. `Err` describes a layout that cannot be rebuilt.
fn helper_for(t: &TreeTask, tasks: &[TreeTask]) -> std::result::Result<Option<Helper>, String> {
    if t.ppid == 0 {
        return Ok(None);
    }
    let find = |pid: i32| tasks.iter().find(|p| p.pid == pid);
    let ancestors = || std::iter::successors(find(t.ppid), |p| find(p.ppid));
    let parent_sid = ancestors().next().map_or(0, |p| p.sid);
    let in_tree = |pid: i32| find(pid).is_some();
    if t.sid != t.pid && t.sid != parent_sid {
        if in_tree(t.sid) {
            return Err(format!("task {}: session {} of a task of the tree, not its parent's ({parent_sid})", t.pid, t.sid));
        }
        if t.pgid != t.sid && t.pgid != t.pid {
            return Err(format!("task {}: group {} in session {} whose leaders are both gone", t.pid, t.pgid, t.sid));
        }
        if t.sid == 0 {
            return Err(format!("task {}: session led from outside the pid namespace, not its parent's", t.pid));
        }
        return Ok(Some(Helper::Session(t.sid)));
    }
    if t.pgid == t.pid || ancestors().any(|a| a.pgid == t.pgid && a.sid == t.sid) {
        return Ok(None);
    }
    if in_tree(t.pgid) || t.sid != parent_sid || t.pgid == 0 {
        return Err(format!("task {}: process group {} with no member among its ancestors", t.pid, t.pgid));
    }
    Ok(Some(Helper::Group(t.pgid)))
}

/// Checks at load time that task `t`'s session and group can be rebuilt.
fn check_ids(t: &TreeTask, before: &[TreeTask], path: &std::path::Path) -> Result<()> {
    helper_for(t, before).map(drop).map_err(|what| RestoreError::Unsupported { file: path.into(), what })
}

/// The helper task `idx` is forked by, if any (checked at load time).
fn needs_helper(tree: &TreePlan, idx: usize) -> Option<Helper> {
    helper_for(&tree.tasks[idx], &tree.tasks).ok().flatten()
}

/// Per task (by index): the pipe it reports on, and for the tasks criu-rs
/// seizes itself (the root, and tasks forked by helpers, which are not
/// traced from birth) the pipe it waits on until it is traced.
struct TaskPipes {
    status_rx: Vec<Option<OwnedFd>>,
    status_tx: Vec<Option<OwnedFd>>,
    go_rx: Vec<Option<OwnedFd>>,
    go_tx: Vec<Option<OwnedFd>>,
}

/// Restores the whole tree of the dump in `opts.dir`. On failure every task
/// created is killed (nothing half-restored stays).
///
/// Must be called from a single-threaded process (the tasks are forks).
#[tracing::instrument(level = "debug", skip_all)]
pub fn restore_tree(opts: &RestoreOptions) -> Result<Restored> {
    let start = std::time::Instant::now();
    let load_opts = LoadOptions {
        shell_job: opts.shell_job,
        inherit_fds: opts.inherit_fd.iter().map(|i| (i.key.clone(), i.fd)).collect(),
        ext_unix_sk: opts.ext_unix_sk,
        tcp_established: opts.tcp_established,
        tcp_close: opts.tcp_close,
        file_locks: opts.file_locks,
        ..Default::default()
    };
    let mut tree = load_tree(&opts.dir, load_opts)?;
    let images = open_dir(&opts.dir)?;
    tracing::info!(tasks = tree.tasks.len(), root = tree.tasks[0].pid, "images loaded");
    // Before any task exists: every thread's credentials are ours to give.
    super::creds::check_grantable(tree.live().map(|p| (p.pid, &p.creds[..])))?;
    let mut lazy_setups = Vec::with_capacity(tree.tasks.len());
    for t in &mut tree.tasks {
        lazy_setups.push(match &mut t.kind {
            TaskKind::Live(plan) => lazy::setup(plan, opts.lazy_pages.as_deref())?,
            TaskKind::Zombie { .. } => None,
        });
    }
    tree.lazy = lazy_setups;
    tree.map_pages = opts.mmap_page_image;
    // Private pages filled before the tasks run (shared memory objects are
    // filled once for the tree and not counted, as CRIU's count).
    let pages_restored: u64 = tree
        .live()
        .flat_map(|p| std::iter::once(&p.pages).chain(&p.parent_pages))
        .flat_map(|pages| &pages.runs)
        .map(|r| r.nr_pages)
        .sum();
    // Room for every fd number of every task and the shared descriptions
    // above them (each task's blob puts its dumped limits back).
    let nofile = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    if let Some(max) = nofile.maximum {
        let _ = rustix::process::setrlimit(rustix::process::Resource::Nofile, rustix::process::Rlimit { current: Some(max), maximum: Some(max) });
    }
    let live: Vec<&TaskPlan> = tree.live().collect();
    let mut shared = super::shared::create(&images, &live)?;
    let floor = super::shared::tree_floor(&live);
    // Owners are set once every task exists (the owner may be any of them).
    let owned = crate::files::fdtable::owned(&shared.descs, live.iter().flat_map(|t| &t.owners), floor)?;
    drop(live);
    let mut pipes = TaskPipes { status_rx: Vec::new(), status_tx: Vec::new(), go_rx: Vec::new(), go_tx: Vec::new() };
    let above = |(rx, tx): (OwnedFd, OwnedFd)| -> Result<(Option<OwnedFd>, Option<OwnedFd>)> {
        Ok((Some(super::fds::move_above(rx, floor)?), Some(super::fds::move_above(tx, floor)?)))
    };
    for (i, t) in tree.tasks.iter().enumerate() {
        let live = matches!(t.kind, TaskKind::Live(_));
        let (rx, tx) = if live { above(super::pipe("status")?)? } else { (None, None) };
        pipes.status_rx.push(rx);
        pipes.status_tx.push(tx);
        let (rx, tx) = if live && (i == 0 || needs_helper(&tree, i).is_some()) { above(super::pipe("go")?)? } else { (None, None) };
        pipes.go_rx.push(rx);
        pipes.go_tx.push(tx);
    }
    let root = tree.tasks[0].pid;
    // A dump that just killed the tree leaves zombies for init to reap
    // (threads other than leaders leave none; a tid in use is reported by
    // the blob that cannot create the thread).
    let pids: Vec<i32> = tree.tasks.iter().map(|t| t.pid).collect();
    super::clone::wait_pids_free(&pids, super::clone::PID_PATIENCE)?;
    // A sibling root is not our child, but we trace it (seized below)
    // until it is released, which is all the restore needs of it.
    let flags = if opts.sibling { libc::CLONE_PARENT as u64 } else { 0 };
    // SAFETY: criu-rs is single-threaded here (documented requirement).
    match unsafe { clone3_set_tid_flags(root, flags)? } {
        Forked::Child => task_main(&tree, 0, &mut pipes, &shared, None),
        Forked::Parent { child } => {
            let forking_time = start.elapsed();
            let mut later = std::mem::take(&mut shared.later);
            drop(shared);
            pipes.status_tx.clear();
            pipes.go_rx.clear();
            let mut guard = TreeGuard::new(child);
            let mut tracked = Vec::new();
            let seccomp = tree.live().any(|p| p.seccomp.iter().any(|(_, s)| s.mode != 0));
            for ((t, rx), go) in tree.tasks.iter().zip(pipes.status_rx.drain(..)).zip(pipes.go_tx.drain(..)) {
                let (TaskKind::Live(plan), Some(rx)) = (&t.kind, rx) else { continue };
                rustix::fs::fcntl_setfl(&rx, rustix::fs::OFlags::NONBLOCK).sys(|| "F_SETFL(O_NONBLOCK)".into())?;
                let stopped = plan.core.tc.as_ref().and_then(|tc| tc.task_state) == Some(task_state::STOPPED);
                tracked.push(
                    Tracked::new(t.pid, thread_ends(plan), rx, go, stopped)
                        .suspending_seccomp(seccomp)
                        .with_areas(super::watch::Area::of_image(&plan.vmas)),
                );
            }
            // Every task is held before its first instruction: the caller
            // may still refuse (post-restore) or prepare (pre-resume).
            let hooks = opts.actions.as_ref();
            let watch = barrier::run(&mut tracked, &mut guard, opts.watch, &mut || {
                if !super::failpoint::skip(super::failpoint::SKIP_FOWN) {
                    crate::files::fdtable::set_owners(&owned)?;
                }
                crate::actions::run(hooks, Action::PostRestore, Some(child))?;
                // TCP connections out of repair mode before anything runs.
                later.before_run()?;
                if let Err(e) = crate::actions::run(hooks, Action::PreResume, Some(child)) {
                    tracing::error!("pre-resume: {e} (the tasks resume anyway)");
                }
                Ok(())
            }, &mut || {
                if !opts.verify {
                    return Ok(());
                }
                let tasks: Vec<(i32, Vec<i32>)> = tree.live().map(|p| (p.pid, thread_ends(p).iter().map(|t| t.tid).collect())).collect();
                super::verify::verify_tree(&images, &tasks)
            })?;
            guard.disarm();
            later.after_run();
            let stats = RestoreStats { forking_time, restore_time: start.elapsed(), pages_restored };
            tracing::info!(pid = child, tasks = tracked.len(), restore_ms = stats.restore_time.as_millis() as u64, pages_restored, "restored");
            Ok(Restored { pid: child, stats, watch })
        }
    }
}

/// Every thread of `plan` (the leader first) with its robust futex list,
/// which criu-rs sets in it at the end.
fn thread_ends(plan: &TaskPlan) -> Vec<ThreadEnd> {
    let cores = std::iter::once((plan.pid, &*plan.core)).chain(plan.threads.iter().map(|(t, c)| (*t, c)));
    cores
        .map(|(tid, core)| {
            let tc = core.thread_core.as_ref();
            ThreadEnd {
                tid,
                robust_head: tc.and_then(|t| t.futex_rla).unwrap_or(0),
                robust_len: tc.and_then(|t| t.futex_rla_len).unwrap_or(0) as u64,
            }
        })
        .collect()
}

/// A task's own side: session and group, its children, then itself.
/// Never returns.
fn task_main(tree: &TreePlan, idx: usize, pipes: &mut TaskPipes, objs: &SharedObjects, parent: Option<&cow::Parent>) -> ! {
    let t = &tree.tasks[idx];
    let TaskKind::Live(plan) = &t.kind else {
        // SAFETY: leaving without running exit handlers, as after fork.
        unsafe { libc::_exit(3) }
    };
    let Some(status) = pipes.status_tx.get_mut(idx).and_then(Option::take) else {
        // SAFETY: as above.
        unsafe { libc::_exit(3) }
    };
    let go = pipes.go_rx.get_mut(idx).and_then(Option::take);
    // criu-rs's ends are no business of the tasks (and a task waiting to be
    // traced must see EOF if criu-rs gives up).
    pipes.status_rx.clear();
    pipes.go_tx.clear();
    guarded(plan, status, |status| {
        if let Some(go) = go {
            let mut byte = [0u8; 1];
            if rustix::io::read(&go, &mut byte) != Ok(1) {
                return Err(RestoreError::Prepare("criu-rs went away before tracing the task".into()));
            }
        }
        set_ids(t, &tree.tasks[0])?;
        crate::files::tty::take_ctty(&tree.cttys, t.pid, t.pgid, t.sid, &objs.descs)?;
        if idx == 0 {
            crate::files::tty::take_foreground(plan, t.pid, t.pgid, t.sid)?;
        }
        let pm = build_memory(plan, parent, &tree.ids(), tree.map_pages)?;
        let table = if tree.shares_parent_table(idx) {
            FdTable::Parent
        } else if tree.table_sharers(idx).next().is_some() {
            install_for_sharers(tree, idx, plan, pipes, objs, status)?
        } else {
            FdTable::Own
        };
        // Children inherit this memory copy-on-write (not in a lazy
        // restore, where pages come later, each task's on its own, nor
        // where pages are mapped from each task's own image).
        let shares = tree.lazy.iter().all(Option::is_none) && !tree.map_pages;
        let me = cow::Parent { vmas: &plan.vmas, premap: &pm };
        let me = shares.then_some(&me);
        let subreaper = plan.core.tc.as_ref().and_then(|tc| tc.child_subreaper).unwrap_or(false);
        let kids: Vec<usize> = tree.children(idx).collect();
        let (orphans, kids): (Vec<usize>, Vec<usize>) = kids.into_iter().partition(|&c| needs_helper(tree, c).is_some());
        for c in kids {
            fork_child(tree, c, pipes, objs, me)?;
        }
        // The orphans' helpers exit at once: they must come back to us.
        set_child_subreaper(subreaper || !orphans.is_empty())?;
        let mut helpers: Vec<Helper> = orphans.iter().filter_map(|&c| needs_helper(tree, c)).collect();
        helpers.sort_unstable();
        helpers.dedup();
        for h in helpers {
            let members: Vec<usize> = orphans.iter().copied().filter(|&c| needs_helper(tree, c) == Some(h)).collect();
            fork_helper(tree, h, &members, pipes, objs, me, status)?;
        }
        set_child_subreaper(subreaper)?;
        // The parent-death signal is set by the blob, after the
        // credentials (whose change clears it).
        prepare(plan, tree.lazy.get(idx).and_then(Option::as_ref), status, objs, pm, &table)
    })
}

/// For task `idx` whose descriptor table other tasks below it share: puts
/// its fds in place now, before it forks them (with `CLONE_FILES`: they
/// never touch the table), keeping what the tasks forked below need
/// (their status and go pipes, the tree's descriptions and shmem
/// objects). Those criu-rs fds stay in the shared table until criu-rs
/// closes them in this task at the end, but for the status pipes of the
/// sharers, which each closes as its own.
fn install_for_sharers(tree: &TreePlan, idx: usize, plan: &TaskPlan, pipes: &TaskPipes, objs: &SharedObjects, status: &OwnedFd) -> Result<FdTable> {
    use rustix::fd::AsRawFd;
    let sharers: Vec<usize> = tree.table_sharers(idx).collect();
    let tx = pipes.status_tx.iter().enumerate().filter_map(|(i, f)| Some((i, f.as_ref()?.as_raw_fd())));
    let go = pipes.go_rx.iter().flatten().map(|f| (usize::MAX, f.as_raw_fd()));
    let held = objs.descs.values().chain(objs.shmem.values()).map(|f| (usize::MAX, f.as_raw_fd()));
    let below: Vec<(usize, i32)> = tx.chain(go).chain(held).collect();
    let mut keep: Vec<i32> = below.iter().map(|b| b.1).collect();
    let log = crate::logfd::move_above(crate::files::fdtable::fd_floor(&plan.fds)).sys(|| "moving the log fd out of the task's way".into())?;
    keep.extend([status.as_raw_fd(), log]);
    let files = plan.task_files();
    crate::files::task::install(&files, &objs.descs, &keep)?;
    let leftovers = below.into_iter().filter(|(i, _)| !sharers.contains(i)).map(|b| b.1).collect();
    tracing::debug!(pid = plan.pid, sharers = ?sharers.iter().map(|&i| tree.tasks[i].pid).collect::<Vec<_>>(), "fd table installed before forking the tasks sharing it");
    Ok(FdTable::Installed { leftovers })
}

/// `prctl(PR_SET_CHILD_SUBREAPER, on)`.
fn set_child_subreaper(on: bool) -> Result<()> {
    prctl_int(libc::PR_SET_CHILD_SUBREAPER, on as libc::c_ulong, "PR_SET_CHILD_SUBREAPER")
}

/// `prctl(option, arg, 0, 0, 0)` for an integer-only option.
fn prctl_int(option: libc::c_int, arg: libc::c_ulong, what: &str) -> Result<()> {
    // SAFETY: the options used here take integers only.
    if unsafe { libc::prctl(option, arg, 0, 0, 0) } < 0 {
        let errno = rustix::io::Errno::from_io_error(&std::io::Error::last_os_error()).unwrap_or(rustix::io::Errno::INVAL);
        return Err(RestoreError::sys(format!("{what}({arg})"), errno));
    }
    Ok(())
}

/// Forks, untraced, helper `h` (with the gone leader's pid) that starts
/// its session or group, forks `members` and exits; reaps it. The members
/// wait until criu-rs traces them (they are not traced from birth). The
/// helper reports a failure on the forking task's `status` pipe.
fn fork_helper(
    tree: &TreePlan,
    h: Helper,
    members: &[usize],
    pipes: &mut TaskPipes,
    objs: &SharedObjects,
    parent: Option<&cow::Parent>,
    status: &OwnedFd,
) -> Result<()> {
    let (Helper::Session(pid) | Helper::Group(pid)) = h;
    // SAFETY: the task is single-threaded; the helper only forks and exits.
    if let Forked::Child = unsafe { clone3_set_tid_flags(pid, CLONE_UNTRACED)? } {
        let lead = match h {
            Helper::Session(_) => rustix::process::setsid().map(drop).sys(|| "setsid".into()),
            Helper::Group(_) => rustix::process::setpgid(None, None).sys(|| "setpgid(0, 0)".into()),
        };
        let done = lead.and_then(|()| members.iter().try_for_each(|&m| fork_child(tree, m, pipes, objs, parent)));
        if let Err(e) = &done {
            let _ = rustix::io::write(status, format!("error: helper {pid}: {e}\n").as_bytes());
        }
        // SAFETY: leaving without running exit handlers, as after fork.
        unsafe { libc::_exit(if done.is_ok() { 0 } else { 1 }) }
    }
    match nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None) {
        Ok(nix::sys::wait::WaitStatus::Exited(_, 0)) => Ok(()),
        other => Err(RestoreError::Prepare(format!("the helper for {h:?} failed: {other:?}"))),
    }
}

/// Forks task `idx` with its pid (a zombie untraced, then waits until it
/// is one); the child never returns from here.
fn fork_child(tree: &TreePlan, idx: usize, pipes: &mut TaskPipes, objs: &SharedObjects, parent: Option<&cow::Parent>) -> Result<()> {
    let t = &tree.tasks[idx];
    match &t.kind {
        TaskKind::Live(plan) => {
            // A task that shared its parent's table shares it again (the
            // parent installed it before forking it), with a log fd of its own.
            let sharing = tree.shares_parent_table(idx);
            let flags = if sharing { libc::CLONE_FILES as u64 } else { 0 };
            let floor = crate::files::fdtable::fd_floor(&plan.fds);
            let log = if sharing { crate::logfd::copy_above(floor).sys(|| "copying the log fd".into())? } else { -1 };
            // SAFETY: the task is single-threaded (a fork of criu-rs).
            if let Forked::Child = unsafe { clone3_set_tid_flags(t.pid, flags)? } {
                if sharing {
                    crate::logfd::adopt(log);
                }
                task_main(tree, idx, pipes, objs, parent)
            }
        }
        TaskKind::Zombie { status, comm } => {
            // SAFETY: as above; the child only makes raw calls and exits.
            if let Forked::Child = unsafe { clone3_set_tid_flags(t.pid, CLONE_UNTRACED)? } {
                become_zombie(t, &tree.tasks[0], *status, comm)
            }
            // It must be dead before the tree runs: its SIGCHLD belongs to now.
            rustix::process::waitid(
                rustix::process::WaitId::Pid(
                    rustix::process::Pid::from_raw(t.pid).ok_or_else(|| RestoreError::Prepare(format!("bad zombie pid {}", t.pid)))?,
                ),
                rustix::process::WaitIdOptions::EXITED | rustix::process::WaitIdOptions::NOWAIT,
            )
            .sys(|| format!("waiting for zombie {} to exit", t.pid))?;
        }
    }
    Ok(())
}

/// Takes the task's session and group: `setsid` for a session leader,
/// then `setpgid(0, pgid)` unless already in the group. The root only does
/// what makes it a leader: its session and group are otherwise criu-rs's,
/// and so are they for tasks below that were in the root's (outside) ones.
fn set_ids(t: &TreeTask, root: &TreeTask) -> Result<()> {
    if t.sid == t.pid {
        rustix::process::setsid().sys(|| "setsid".into())?;
    }
    let outside_group = t.pgid == root.pgid && root.pgid != root.pid;
    let cur = getpgrp();
    if cur != t.pgid && !outside_group && (t.ppid != 0 || t.pgid == t.pid) {
        let pgid = rustix::process::Pid::from_raw(t.pgid);
        let own = if t.pgid == t.pid { None } else { pgid };
        rustix::process::setpgid(None, own).sys(|| format!("setpgid(0, {})", t.pgid))?;
    }
    let outside_session = t.sid == root.sid && root.sid != root.pid;
    if t.ppid != 0 && !outside_session {
        let sid = getsid()?;
        if sid != t.sid {
            return Err(RestoreError::Prepare(format!("task {} got session {sid}, not {}", t.pid, t.sid)));
        }
    }
    Ok(())
}

/// `getpgrp()`: our process group, 0 when its leader is outside our pid
/// namespace (rustix's wrapper refuses that answer).
fn getpgrp() -> i32 {
    // SAFETY: getpgrp takes no arguments and cannot fail.
    unsafe { libc::getpgrp() }
}

/// `getsid(0)`: our session, 0 when its leader is outside our pid namespace.
fn getsid() -> Result<i32> {
    // SAFETY: getsid(0) asks about the caller; it only returns a number.
    let sid = unsafe { libc::getsid(0) };
    if sid < 0 {
        return Err(RestoreError::sys("getsid", rustix::io::Errno::from_io_error(&std::io::Error::last_os_error()).unwrap_or(rustix::io::Errno::INVAL)));
    }
    Ok(sid)
}

/// A zombie-to-be: its ids and name, then the dumped exit (a signal it
/// died of is raised again, without a core dump). Never returns.
fn become_zombie(t: &TreeTask, root: &TreeTask, status: i32, comm: &str) -> ! {
    let _ = set_ids(t, root);
    if let Ok(name) = std::ffi::CString::new(comm.bytes().take(15).filter(|&b| b != 0).collect::<Vec<u8>>()) {
        let _ = rustix::thread::set_name(&name);
    }
    let sig = status & 0x7f;
    if sig != 0 {
        // SAFETY: plain syscalls on this process; no Rust state involved.
        unsafe {
            libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
            libc::signal(sig, libc::SIG_DFL);
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, sig);
            libc::sigprocmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
            libc::kill(libc::getpid(), sig);
        }
    }
    // SAFETY: leaving without running exit handlers, as after fork.
    unsafe { libc::_exit((status >> 8) & 0xff) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zombie(pid: i32, ppid: i32, pgid: i32, sid: i32) -> TreeTask {
        TreeTask { pid, ppid, pgid, sid, files_id: 0, kind: TaskKind::Zombie { status: 0, comm: String::new() } }
    }

    fn check(t: &TreeTask, before: &[TreeTask]) -> bool {
        check_ids(t, before, std::path::Path::new("pstree.img")).is_ok()
    }

    #[test]
    fn sessions_and_groups_that_can_be_rebuilt() {
        // R(sid R) > A(own group) > B(own session) > C(B's group): all fine.
        let before = vec![zombie(10, 0, 10, 10), zombie(11, 10, 11, 10), zombie(12, 11, 12, 12)];
        assert!(check(&zombie(13, 12, 12, 12), &before), "inherits");
        assert!(check(&zombie(13, 12, 13, 12), &before), "own group");
        assert!(check(&zombie(13, 12, 13, 13), &before), "own session");
        // A group of an ancestor only within the same session.
        assert!(!check(&zombie(13, 12, 11, 12), &before), "group of another session");
        assert!(check(&zombie(14, 11, 10, 10), &before), "grandparent's group, same session");
        // Gone session leader 20 (no task): a helper does it, with its group or an own one.
        assert!(check(&zombie(15, 10, 20, 20), &before));
        assert!(check(&zombie(15, 10, 15, 20), &before));
        assert!(!check(&zombie(15, 10, 21, 20), &before), "a gone group inside a gone session");
        // Gone group leader 30 in the parent's session: a group helper.
        assert_eq!(helper_for(&zombie(16, 11, 30, 10), &before), Ok(Some(Helper::Group(30))));
        assert!(!check(&zombie(16, 12, 30, 10), &before), "a gone group in a session that is not the parent's");
        // Session of a live task that is not an ancestor.
        assert!(!check(&zombie(15, 10, 12, 12), &before));
    }

    #[test]
    fn ids_led_from_outside_the_pid_namespace() {
        // sid/pgid 0: the root's session and group are led from outside; its
        // children inherit them or make their own, but cannot rejoin them.
        let before = vec![zombie(10, 0, 0, 0), zombie(11, 10, 11, 0)];
        assert!(check(&zombie(12, 10, 0, 0), &before), "inherits both");
        assert!(check(&zombie(12, 11, 0, 0), &before), "grandparent's group");
        assert!(check(&zombie(12, 10, 12, 12), &before), "own session");
        assert!(!check(&zombie(12, 10, 0, 10), &before), "outside group in another session");
        let own = vec![zombie(10, 0, 10, 10)];
        assert!(!check(&zombie(11, 10, 11, 0), &own), "outside session below a session leader");
        assert!(!check(&zombie(11, 10, 0, 10), &own), "outside group below a group leader");
    }

    #[test]
    fn helpers_only_for_sessions_whose_leader_is_gone() {
        let tree = TreePlan {
            tasks: vec![zombie(10, 0, 10, 10), zombie(11, 10, 11, 10), zombie(12, 10, 20, 20), zombie(13, 10, 13, 13)],
            lazy: Vec::new(),
            map_pages: false,
            cttys: Vec::new(),
        };
        let need: Vec<Option<Helper>> = (0..4).map(|i| needs_helper(&tree, i)).collect();
        assert_eq!(need, [None, None, Some(Helper::Session(20)), None]);
        assert_eq!(tree.children(0).collect::<Vec<_>>(), [1, 2, 3]);
    }
}
