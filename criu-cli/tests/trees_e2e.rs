//! Threads and process trees acceptance tests (issue 5):
//! `tests/programs/threads.c` (8 threads + main, each with its own
//! registers, TLS, mask, altstack, pending signal) and `tests/programs/tree.c`
//! (root, zombie, child in its own group, grandchild in its own session,
//! great-grandchild; a pipe with unread bytes, a shared file offset, shared
//! anonymous memory; optionally a task in a session whose leader is gone,
//! under a child subreaper) are dumped, die, are restored and check
//! themselves. The `..._checks_pass_without_checkpoint` tests run the
//! programs' self-checks alone, so a failure there is the program's, not
//! the restore's.

mod common;

use common::*;

use std::path::PathBuf;

struct Dirs {
    work: PathBuf,
    result: PathBuf,
}

fn dirs(name: &str) -> Dirs {
    let work = scratch(&format!("{name}-work"));
    Dirs { result: work.with_extension("result"), work }
}

/// Trigger the root's self-check (it passes SIGUSR1 on) and return its report.
fn trigger(d: &Dirs, root: &Held) -> String {
    let _ = std::fs::remove_file(&d.result);
    root.signal(libc::SIGUSR1).unwrap();
    let report = wait_result(&d.result);
    assert!(root.wait_exit(PATIENCE), "pid {} did not exit after its self-check", root.pid);
    report
}

/// State, ppid, pgid and sid from `/proc/PID/stat`.
fn ids(pid: i32) -> (char, i32, i32, i32) {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_else(|e| panic!("pid {pid}: {e}"));
    let rest: Vec<&str> = s[s.rfind(')').unwrap() + 2..].split_whitespace().collect();
    (rest[0].chars().next().unwrap(), rest[1].parse().unwrap(), rest[2].parse().unwrap(), rest[3].parse().unwrap())
}

// ---------- threads ----------

fn start_threads(d: &Dirs) -> (Program, Vec<i32>) {
    let _ = std::fs::remove_file(&d.result);
    let p = Program::spawn("threads", &[&d.work, &d.result]);
    let mut tids: Vec<i32> = p.info["tids"].split(',').map(|t| t.parse().unwrap()).collect();
    tids.push(p.pid());
    tids.sort();
    assert_eq!(tids.len(), 9);
    wait_all_suspended(&[p.pid()]);
    assert_eq!(threads_of(p.pid()), tids);
    (p, tids)
}

#[test]
fn threads_checks_pass_without_checkpoint() {
    let d = dirs("threads-nockpt");
    let (mut p, _) = start_threads(&d);
    // SAFETY: kill(2) on our own unreaped child.
    unsafe { libc::kill(p.pid(), libc::SIGUSR1) };
    let st = p.child.wait().unwrap();
    let report = wait_result(&d.result);
    assert_all_ok("threads without checkpoint", &report);
    assert_eq!(st.code(), Some(0));
    for t in 0..=8 {
        for check in ["gp-registers", "ymm0-15", "tls", "signal-mask", "own-pending-signal", "sigaltstack"] {
            assert!(report.contains(&format!("thread {t}: ok {check}\n")), "thread {t} lacks {check}:\n{report}");
        }
    }
}

#[test]
fn leave_running_dump_keeps_threads_intact() {
    let d = dirs("threads-leave-running");
    let (mut p, tids) = start_threads(&d);
    let images = scratch("threads-leave-running-images");
    dump_ok(p.pid(), &images, &["-R"]);
    wait_all_suspended(&[p.pid()]);
    assert_eq!(threads_of(p.pid()), tids);
    // SAFETY: kill(2) on our own unreaped child.
    unsafe { libc::kill(p.pid(), libc::SIGUSR1) };
    let st = p.child.wait().unwrap();
    assert_all_ok("threads after dump -R", &wait_result(&d.result));
    assert_eq!(st.code(), Some(0));
}

/// Starts threads.c as `name`, dumps it (the dump kills it) and waits
/// until all its tids are free; returns the dirs, images, pid and tids.
fn dumped_threads(name: &str) -> (Dirs, PathBuf, i32, Vec<i32>) {
    let d = dirs(name);
    let images = scratch(&format!("{name}-images"));
    let (mut p, tids) = start_threads(&d);
    let pid = p.pid();
    dump_ok(pid, &images, &[]);
    p.reap();
    for &t in &tids {
        wait_pid_gone(t);
    }
    (d, images, pid, tids)
}

/// Restores threads.c detached; checks its tids, mappings and self-check.
fn restore_threads_and_check(d: &Dirs, images: &std::path::Path, pid: i32, tids: &[i32], what: &str) {
    let held = restore_detached(images, pid);
    wait_all_suspended(&[pid]);
    assert_eq!(threads_of(pid), tids, "{what}: threads restored with other tids");
    assert_maps_match_image(images, pid);
    assert_all_ok(what, &trigger(d, &held));
}

#[test]
fn threads_dump_restore() {
    let (d, images, pid, tids) = dumped_threads("threads-restore");
    restore_threads_and_check(&d, &images, pid, &tids, "restored threads");
}

// ---------- trees ----------

/// A running tree: the root (our child) and pidfds on its descendants.
struct Tree {
    root: Option<Program>,
    held: Vec<Held>,
    /// R, A, B, C (and F with orphans)
    pids: Vec<i32>,
    zombie: i32,
    /// E, the exited session leader of F (with orphans)
    gone: Option<i32>,
}

impl Tree {
    fn start(d: &Dirs, orphans: bool) -> Tree {
        let _ = std::fs::remove_file(&d.result);
        let mut args: Vec<&std::path::Path> = vec![&d.work, &d.result];
        if orphans {
            args.push(std::path::Path::new("orphans"));
        }
        let p = Program::spawn("tree", &args);
        let mut pids = vec![p.pid(), p.int("a"), p.int("b"), p.int("c")];
        let gone = orphans.then(|| {
            pids.push(p.int("f"));
            p.int("e")
        });
        let held = pids[1..].iter().map(|&pid| Held::open(pid).unwrap()).collect();
        let zombie = p.int("z");
        let t = Tree { root: Some(p), held, pids, zombie, gone };
        wait_all_suspended(&t.pids);
        t
    }

    /// (pid, state, ppid, pgid, sid) of every task (the root's ppid as 0).
    fn layout(&self) -> Vec<(i32, char, i32, i32, i32)> {
        if let Some(e) = self.gone {
            wait_pid_gone(e);
        }
        let mut v: Vec<_> = self
            .pids
            .iter()
            .chain(std::iter::once(&self.zombie))
            .map(|&pid| {
                let (st, ppid, pgid, sid) = ids(pid);
                (pid, st, if pid == self.pids[0] { 0 } else { ppid }, pgid, sid)
            })
            .collect();
        v.sort();
        v
    }

    /// Dumps the tree (killing it) and waits until all its pids are free.
    fn dump(&mut self, images: &std::path::Path) {
        self.dump_with(images, &[]);
    }

    /// [`Tree::dump`] with extra `criu-rs dump` arguments.
    fn dump_with(&mut self, images: &std::path::Path, extra: &[&str]) {
        dump_ok(self.pids[0], images, extra);
        if let Some(mut root) = self.root.take() {
            root.reap();
        }
        for h in &self.held {
            assert!(h.wait_exit(PATIENCE), "the dump left tree task {} running", h.pid);
        }
        self.held.clear();
        for &pid in self.pids.iter().chain(std::iter::once(&self.zombie)) {
            wait_pid_gone(pid);
        }
    }

    /// Restores it detached and takes hold of every task again.
    fn restore(&mut self, images: &std::path::Path) {
        let root = restore_detached(images, self.pids[0]);
        self.held = std::iter::once(root)
            .chain(self.pids[1..].iter().map(|&pid| {
                Held::open(pid).unwrap_or_else(|e| panic!("restored tree lacks pid {pid}: {e}"))
            }))
            .collect();
        wait_all_suspended(&self.pids);
    }

    fn root_handle(&self) -> Held {
        Held::open(self.pids[0]).unwrap()
    }

    /// Checks the layout it started with from outside.
    fn assert_initial_layout(&self) {
        let lay = self.layout();
        let (r, a, b, c) = (self.pids[0], self.pids[1], self.pids[2], self.pids[3]);
        let find = |pid| lay.iter().find(|x| x.0 == pid).copied().unwrap();
        assert_eq!(find(self.zombie), (self.zombie, 'Z', r, r, r), "zombie");
        assert_eq!(find(a), (a, 'S', r, a, r), "A: own group");
        assert_eq!(find(b), (b, 'S', a, b, b), "B: own session");
        assert_eq!(find(c), (c, 'S', b, b, b), "C");
        if let Some(e) = self.gone {
            let f = self.pids[4];
            assert_eq!(find(f), (f, 'S', r, e, e), "F: in the gone E's session and group, reparented to R");
        }
    }
}

#[test]
fn tree_checks_pass_without_checkpoint() {
    let d = dirs("tree-nockpt");
    let t = Tree::start(&d, false);
    t.assert_initial_layout();
    let report = trigger(&d, &t.root_handle());
    assert_all_ok("tree without checkpoint", &report);
    for task in ["R", "A", "B", "C"] {
        for check in ["pid", "sid", "tls", "signal-mask", "shared-memory-still-shared"] {
            assert!(report.contains(&format!("{task}: ok {check}\n")), "{task} lacks {check}:\n{report}");
        }
    }
    assert!(report.contains("R: ok pipe-old-bytes\n") && report.contains("R: ok zombie-status\n"), "{report}");
}

#[test]
fn tree_pre_dump_then_incremental_dump_restore() {
    let d = dirs("tree-predump");
    let base = scratch("tree-predump-images");
    let (pre, images) = (base.join("pre"), base.join("final"));
    std::fs::create_dir_all(&pre).unwrap();
    std::fs::create_dir_all(&images).unwrap();
    let mut t = Tree::start(&d, false);
    let before = t.layout();
    let out = criu_rs().args(["pre-dump", "-t", &t.pids[0].to_string(), "-D"]).arg(&pre).output().unwrap();
    assert!(out.status.success(), "pre-dump failed: {}", String::from_utf8_lossy(&out.stderr));
    wait_all_suspended(&t.pids);
    assert_eq!(t.layout(), before, "the pre-dump changed the tree");
    t.dump_with(&images, &["--prev-images-dir", "../pre"]);
    // Every live task left its unchanged pages to the pre-dump.
    for &pid in &t.pids {
        let v = crit_decode(&images.join(format!("pagemap-{pid}.img")));
        let in_parent = v["entries"].as_array().unwrap().iter().skip(1).any(|e| e.get("in_parent").and_then(|b| b.as_bool()) == Some(true));
        assert!(in_parent, "task {pid} has no pages in the parent");
    }
    t.restore(&images);
    assert_eq!(t.layout(), before, "pids, parents, groups, sessions or the zombie differ");
    let report = trigger(&d, &t.held[0]);
    assert_all_ok("tree from a pre-dump and an incremental dump", &report);
}

#[test]
fn tree_dump_restore() {
    dump_restore_tree("tree-restore", false);
}

fn dump_restore_tree(name: &str, orphans: bool) {
    let d = dirs(name);
    let images = scratch(&format!("{name}-images"));
    let mut t = Tree::start(&d, orphans);
    let before = t.layout();
    t.dump(&images);
    let snap = snapshot(&images);
    t.restore(&images);
    assert_eq!(t.layout(), before, "pids, parents, groups, sessions or the zombie differ");
    for &pid in &t.pids {
        assert_maps_match_image(&images, pid);
    }
    let report = trigger(&d, &t.held[0]);
    assert_all_ok(name, &report);
    assert_same_dir(&snap, &snapshot(&images));
}

/// A lazy restore of the tree: the zombie hands no memory over, so the
/// lazy-pages daemon must not wait for it (it counts the live tasks).
#[test]
fn tree_lazy_restore_with_a_zombie() {
    let d = dirs("tree-lazy");
    let images = scratch("tree-lazy-images");
    let mut t = Tree::start(&d, false);
    let before = t.layout();
    t.dump(&images);
    let sock = d.work.join("lazy.sock");
    let _ = std::fs::remove_file(&sock);
    let mut daemon = spawn_criu_rs(&["lazy-pages", "-D", images.to_str().unwrap(), "--address", sock.to_str().unwrap()]);
    wait_for(&sock, &mut daemon);
    let root = restore_detached_with(&images, t.pids[0], &["--lazy-pages", "--address", sock.to_str().unwrap()]);
    t.held = std::iter::once(root).chain(t.pids[1..].iter().map(|&pid| Held::open(pid).unwrap())).collect();
    wait_all_suspended(&t.pids);
    assert_eq!(t.layout(), before, "pids, parents, groups, sessions or the zombie differ");
    // The tasks wait untouched: the daemon copies everything in the
    // background and leaves by itself, having served the four live tasks.
    let (st, out, err) = daemon.finish();
    assert!(st.success(), "lazy-pages failed ({st}):\n{out}\n{err}");
    assert!(out.contains("lazy-pages: 4 task(s)"), "{out}");
    let report = trigger(&d, &t.held[0]);
    assert_all_ok("tree restored lazily", &report);
}

#[test]
fn tree_with_orphaned_session_checks_pass_without_checkpoint() {
    let d = dirs("orphans-nockpt");
    let t = Tree::start(&d, true);
    t.assert_initial_layout();
    let report = trigger(&d, &t.root_handle());
    assert_all_ok("tree with orphans without checkpoint", &report);
    assert!(report.contains("F: ok leader-gone\n") && report.contains("R: ok child-subreaper\n"), "{report}");
}

/// Beyond issue 5's "done when": a session and group whose leader is gone
/// (restore needs a helper task for it) and a child subreaper.
#[test]
fn tree_with_orphaned_session_dump_restore() {
    dump_restore_tree("orphans-restore", true);
}

#[test]
fn tree_twenty_dump_restore_cycles() {
    let d = dirs("tree-cycles");
    let mut t = Tree::start(&d, false);
    let before = t.layout();
    for cycle in 1..=20 {
        let images = scratch(&format!("tree-cycles-images-{cycle}"));
        t.dump(&images);
        t.restore(&images);
        assert_eq!(t.layout(), before, "cycle {cycle}: the tree changed");
    }
    let report = trigger(&d, &t.held[0]);
    assert_all_ok("tree after 20 cycles", &report);
}

/// Holds one pid with a process of ours (forked with `clone3` + `set_tid`,
/// it only waits); killed and reaped by pid on drop.
struct PidHolder(i32);

impl PidHolder {
    fn take(pid: i32) -> PidHolder {
        #[repr(C)]
        struct CloneArgs([u64; 11]);
        let tid: libc::pid_t = pid;
        let mut a = CloneArgs([0; 11]);
        a.0[4] = libc::SIGCHLD as u64; // exit_signal
        a.0[8] = &tid as *const libc::pid_t as u64; // set_tid
        a.0[9] = 1; // set_tid_size
        // SAFETY: a fork (no CLONE_VM); the child only makes raw pause
        // syscalls until it is killed, which is safe in a threaded parent.
        let r = unsafe { libc::syscall(libc::SYS_clone3, &a as *const CloneArgs, std::mem::size_of::<CloneArgs>()) };
        if r == 0 {
            loop {
                // SAFETY: pause(2) has no arguments.
                unsafe { libc::syscall(libc::SYS_pause) };
            }
        }
        assert_eq!(r, pid as i64, "could not take pid {pid}: {}", std::io::Error::last_os_error());
        PidHolder(pid)
    }
}

impl Drop for PidHolder {
    fn drop(&mut self) {
        // SAFETY: kill/waitpid on our own child.
        unsafe {
            libc::kill(self.0, libc::SIGKILL);
            libc::waitpid(self.0, std::ptr::null_mut(), 0);
        }
    }
}

/// A tree restore that fails mid-way (B's pid is taken when A forks it:
/// R and A and the zombie exist by then) leaves no task behind, names the
/// pid, keeps the images as they were; once the pid is free the same
/// images restore and pass every check.
#[test]
fn tree_restore_with_a_pid_in_use_leaves_nothing() {
    pid_in_use_leaves_nothing("tree-pid-in-use", false, 2);
}

/// The same when the pid taken is F's, which the helper for the gone
/// session leader E forks.
#[test]
fn orphaned_session_restore_with_a_pid_in_use_leaves_nothing() {
    pid_in_use_leaves_nothing("orphans-pid-in-use", true, 4);
}

/// Dumps a tree, takes the pid of `pids[victim]`, checks the failed
/// restore, frees the pid and restores for real.
fn pid_in_use_leaves_nothing(name: &str, orphans: bool, victim: usize) {
    let d = dirs(name);
    let images = scratch(&format!("{name}-images"));
    let mut t = Tree::start(&d, orphans);
    let before = t.layout();
    t.dump(&images);
    let snap = snapshot(&images);
    let taken = t.pids[victim];
    let holder = PidHolder::take(taken);
    let out = restore(&images, &["-d"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the restore succeeded with pid {taken} taken");
    assert!(err.contains(&format!("pid {taken} is already in use")), "the error does not name pid {taken}: {err}");
    for &pid in t.pids.iter().chain(std::iter::once(&t.zombie)).chain(t.gone.iter()).filter(|&&p| p != taken) {
        wait_pid_gone(pid);
    }
    assert_eq!(ids(taken).0, 'S', "the holder of pid {taken} was touched");
    assert_same_dir(&snap, &snapshot(&images));
    drop(holder);
    wait_pid_gone(taken);
    t.restore(&images);
    assert_eq!(t.layout(), before, "the tree differs after the failed restore and a good one");
    let report = trigger(&d, &t.held[0]);
    assert_all_ok(&format!("{name}: restored after a failed restore"), &report);
}

/// A thread's tid taken: the blob cannot clone it, the restore fails and
/// leaves no process; once the tid is free the same images restore.
#[test]
fn threads_restore_with_a_tid_in_use_leaves_nothing() {
    let (d, images, pid, tids) = dumped_threads("threads-tid-in-use");
    let taken = *tids.iter().find(|&&t| t != pid).unwrap();
    let holder = PidHolder::take(taken);
    let out = restore(&images, &["-d"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the restore succeeded with tid {taken} taken");
    assert!(err.contains(&format!("thread {taken} ")), "the error does not name thread {taken}: {err}");
    wait_pid_gone(pid);
    assert_eq!(ids(taken).0, 'S', "the holder of tid {taken} was touched");
    drop(holder);
    wait_pid_gone(taken);
    restore_threads_and_check(&d, &images, pid, &tids, "threads restored after a failed restore");
}

/// A process group whose leader is gone (`tests/programs/orphan_group.c`):
/// restore needs a helper with the leader's pid that makes the group,
/// forks the task and exits.
#[test]
fn orphaned_group_dump_restore() {
    let d = dirs("orphan-group");
    let images = scratch("orphan-group-images");
    let _ = std::fs::remove_file(&d.result);
    let mut p = Program::spawn("orphan_group", &[&d.result]);
    let (r, t, g) = (p.pid(), p.int("t"), p.int("g"));
    wait_all_suspended(&[r, t]);
    wait_pid_gone(g);
    assert_eq!(ids(t), ('S', r, g, r), "T before the dump");
    dump_ok(r, &images, &[]);
    p.reap();
    wait_pid_gone(r);
    wait_pid_gone(t);
    let root = restore_detached(&images, r);
    let held_t = Held::open(t).unwrap_or_else(|e| panic!("restored tree lacks pid {t}: {e}"));
    wait_all_suspended(&[r, t]);
    assert_eq!(ids(t), ('S', r, g, r), "T after the restore");
    assert!(!std::path::Path::new(&format!("/proc/{g}")).exists(), "the helper {g} is still there");
    let report = trigger(&d, &root);
    assert_all_ok("orphaned group", &report);
    assert!(held_t.wait_exit(PATIENCE), "T did not exit");
}
