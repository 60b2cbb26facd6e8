//! `criu-rs dump -t ROOT` takes the whole tree (issue 5, dump side):
//! `tests/programs/tree.c` (root, zombie, child in its own group, grandchild
//! in its own session, great-grandchild; a pipe with unread bytes between
//! two tasks, a shared file description, shared anonymous memory) is dumped
//! and its images checked with crit; `--leave-running` and forced failures
//! leave every task as it was (their self-check passes); a stopped or
//! traced task is refused; `tests/programs/forker.c` forks while frozen;
//! `sharers.c` shares a descriptor table (`CLONE_FILES`) and has a second
//! thread in a child; `outsider.c` has a task in a group led from outside
//! the tree (refused without `--shell-job`); a normal dump leaves no
//! descendant behind.

mod common;

use common::*;

use std::path::{Path, PathBuf};

const VMA_ANON_SHARED: u64 = 1 << 8;
const TASK_DEAD: u64 = 2;
const PIPE_OLD: &[u8] = b"bytes A wrote before the checkpoint\0";

/// A running tree.c: the root (our child) and pidfds on its descendants.
struct Tree {
    root: Program,
    held: Vec<Held>,
    /// R, A, B, C (and F with orphans).
    pids: Vec<i32>,
    zombie: i32,
    work: PathBuf,
    result: PathBuf,
}

impl Tree {
    fn start(name: &str, orphans: bool) -> Tree {
        let work = scratch(&format!("{name}-work"));
        let result = work.with_extension("result");
        let _ = std::fs::remove_file(&result);
        let mut args: Vec<&Path> = vec![&work, &result];
        if orphans {
            args.push(Path::new("orphans"));
        }
        let root = Program::spawn("tree", &args);
        let mut pids = vec![root.pid(), root.int("a"), root.int("b"), root.int("c")];
        if orphans {
            pids.push(root.int("f"));
        }
        let held = pids[1..].iter().map(|&p| Held::open(p).unwrap()).collect();
        let zombie = root.int("z");
        let t = Tree { root, held, pids, zombie, work, result };
        wait_all_suspended(&t.pids);
        t
    }

    /// Every task as (pid, ppid, pgid, sid) from /proc, the root's ppid as 0.
    fn layout(&self) -> Vec<(i32, i32, i32, i32)> {
        let mut v: Vec<_> = self
            .pids
            .iter()
            .chain(std::iter::once(&self.zombie))
            .map(|&pid| {
                let (ppid, pgid, sid) = stat_ids(pid);
                (pid, if pid == self.pids[0] { 0 } else { ppid }, pgid, sid)
            })
            .collect();
        v.sort();
        v
    }

    /// The address space of every live task.
    fn maps(&self) -> Vec<Vec<Area>> {
        self.pids.iter().map(|&p| proc_maps(p)).collect()
    }

    /// Asserts every task waits again as it did, untraced, with the same
    /// ids and address space.
    fn assert_as_before(&self, layout: &[(i32, i32, i32, i32)], maps: &[Vec<Area>], what: &str) {
        wait_all_suspended(&self.pids);
        assert_eq!(self.layout(), layout, "{what}");
        for (i, &pid) in self.pids.iter().enumerate() {
            assert_eq!(state_and_tracer(pid), ('S', 0), "{what}: pid {pid}");
            assert_eq!(proc_maps(pid), maps[i], "{what}: pid {pid}: the address space changed");
        }
    }

    /// Runs phase 2 (every task checks itself) and returns the root's report.
    fn self_check(&self) -> String {
        let _ = std::fs::remove_file(&self.result);
        // SAFETY: kill(2) on our own child, not yet reaped.
        unsafe { libc::kill(self.root.pid(), libc::SIGUSR1) };
        wait_result(&self.result)
    }
}

/// ppid, pgid and sid from `/proc/PID/stat`.
fn stat_ids(pid: i32) -> (i32, i32, i32) {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_else(|e| panic!("pid {pid}: {e}"));
    let f: Vec<&str> = s[s.rfind(')').unwrap() + 2..].split_whitespace().collect();
    (f[1].parse().unwrap(), f[2].parse().unwrap(), f[3].parse().unwrap())
}

/// State letter and TracerPid of a task.
fn state_and_tracer(pid: i32) -> (char, i32) {
    let st = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| st.lines().find_map(|l| l.strip_prefix(name)).unwrap().trim().to_owned();
    (field("State:").chars().next().unwrap(), field("TracerPid:").parse().unwrap())
}

/// `pstree.img` as (pid, ppid, pgid, sid, threads), in image order.
fn pstree(dir: &Path) -> Vec<(i32, i32, i32, i32, Vec<i32>)> {
    let v = crit_decode(&dir.join("pstree.img"));
    v["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let n = |k: &str| jnum(&e[k]) as i32;
            let threads = e["threads"].as_array().unwrap().iter().map(|t| jnum(t) as i32).collect();
            (n("pid"), n("ppid"), n("pgid"), n("sid"), threads)
        })
        .collect()
}

/// Asserts that every entry's parent comes before it.
fn assert_parents_first(tree: &[(i32, i32, i32, i32, Vec<i32>)]) {
    for (i, e) in tree.iter().enumerate().skip(1) {
        assert!(tree[..i].iter().any(|p| p.0 == e.1), "pstree entry {e:?} comes before its parent: {tree:?}");
    }
    assert_eq!(tree[0].1, 0, "the root's ppid");
}

fn fdinfo(dir: &Path, files_id: i32) -> Vec<(u64, u64)> {
    let v = crit_decode(&dir.join(format!("fdinfo-{files_id}.img")));
    v["entries"].as_array().unwrap().iter().map(|e| (jnum(&e["fd"]), jnum(&e["id"]))).collect()
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn tree_images_hold_every_task_and_what_they_share() {
    let mut t = Tree::start("dump-tree-images", false);
    let layout = t.layout();
    let images = scratch("dump-tree-images");
    dump_ok(t.pids[0], &images, &[]);

    // pstree: every task with its ids, parents first, the zombie included.
    let tree = pstree(&images);
    assert_parents_first(&tree);
    let mut got: Vec<_> = tree.iter().map(|e| (e.0, e.1, e.2, e.3)).collect();
    got.sort();
    assert_eq!(got, layout, "pstree differs from the tree's ids");
    for e in &tree {
        assert_eq!(e.4, vec![e.0], "threads of {}", e.0);
    }
    let (r, a) = (t.pids[0], t.pids[1]);

    // The zombie: a core with its exit status only.
    let z = crit_decode(&images.join(format!("core-{}.img", t.zombie)));
    let tc = &z["entries"][0]["tc"];
    assert_eq!(jnum(&tc["task_state"]), TASK_DEAD, "{z}");
    assert_eq!(jnum(&tc["exit_code"]), 42 << 8, "{z}");
    assert!(z["entries"][0].get("thread_info").is_none(), "a zombie has no registers: {z}");
    for img in ["mm", "pagemap", "ids", "fs"] {
        assert!(!images.join(format!("{img}-{}.img", t.zombie)).exists(), "{img} image for the zombie");
    }

    // Shared anonymous memory: one object, referenced by every live task, dumped once.
    let mut shmids = Vec::new();
    for &pid in &t.pids {
        let mm = crit_decode(&images.join(format!("mm-{pid}.img")));
        let ids: Vec<u64> = mm["entries"][0]["vmas"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|v| jnum(&v["status"]) & VMA_ANON_SHARED != 0)
            .map(|v| jnum(&v["shmid"]))
            .collect();
        assert_eq!(ids.len(), 1, "pid {pid}: shared anonymous VMAs {ids:?}");
        shmids.push(ids[0]);
    }
    assert!(shmids.iter().all(|&s| s == shmids[0]), "tasks reference different objects: {shmids:?}");
    let shm_images: Vec<_> = std::fs::read_dir(&images)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with("pagemap-shmem-"))
        .collect();
    assert_eq!(shm_images, vec![format!("pagemap-shmem-{}.img", shmids[0])]);
    let pm = crit_decode(&images.join(&shm_images[0]));
    let pages_id = jnum(&pm["entries"][0]["pages_id"]);
    let pages = std::fs::read(images.join(format!("pages-{pages_id}.img"))).unwrap();
    assert!(contains(&pages, b"written by R before fork\0"), "R's data is not in the shared memory's pages");
    assert!(contains(&pages, b"written by A after fork\0"), "A's data is not in the shared memory's pages");

    // Each live task has its own pagemap and pages image, all different.
    let mut ids_seen = vec![pages_id];
    for &pid in &t.pids {
        let pm = crit_decode(&images.join(format!("pagemap-{pid}.img")));
        let id = jnum(&pm["entries"][0]["pages_id"]);
        assert!(!ids_seen.contains(&id), "pages id {id} of {pid} used twice");
        ids_seen.push(id);
        let ids = crit_decode(&images.join(format!("ids-{pid}.img")));
        assert_eq!(jnum(&ids["entries"][0]["files_id"]), pid as u64, "files_id of {pid} (no CLONE_FILES here)");
    }

    // Files: the pipe from A to R is one pipe_id with its bytes saved once;
    // the shared file description has one id used by R and A.
    let files = crit_decode(&images.join("files.img"));
    let entries = files["entries"].as_array().unwrap();
    let pipes: Vec<(u64, u64)> = entries
        .iter()
        .filter(|e| e["type"] == "PIPE")
        .map(|e| (jnum(&e["id"]), jnum(&e["pipe"]["pipe_id"])))
        .collect();
    // A's stdio still holds the test's pipes; the pipe between A and R is
    // the one whose two ends are both in the tree.
    let between: Vec<(u64, u64)> =
        pipes.iter().copied().filter(|p| pipes.iter().filter(|q| q.1 == p.1).count() == 2).collect();
    assert_eq!(between.len(), 2, "one pipe with both ends in the tree expected: {pipes:?}");
    let pipes = between;
    let shared: Vec<(u64, u64)> = entries
        .iter()
        .filter(|e| e["type"] == "REG" && e["reg"]["name"].as_str().is_some_and(|n| n.ends_with("/shared-fd.dat")))
        .map(|e| (jnum(&e["id"]), jnum(&e["reg"]["pos"])))
        .collect();
    assert_eq!(shared.len(), 1, "the shared description must be one file entry: {shared:?}");
    assert_eq!(shared[0].1, 123, "its offset");
    let (fd_r, fd_a) = (fdinfo(&images, r), fdinfo(&images, a));
    let ids_of = |fds: &[(u64, u64)]| fds.iter().map(|f| f.1).collect::<Vec<_>>();
    assert!(ids_of(&fd_r).contains(&shared[0].0) && ids_of(&fd_a).contains(&shared[0].0), "R {fd_r:?} A {fd_a:?}");
    let pipe_ids: Vec<u64> = pipes.iter().map(|p| p.0).collect();
    assert_eq!(ids_of(&fd_r).iter().filter(|i| pipe_ids.contains(i)).count(), 1, "R's pipe end: {fd_r:?}");
    assert_eq!(ids_of(&fd_a).iter().filter(|i| pipe_ids.contains(i)).count(), 1, "A's pipe end: {fd_a:?}");
    let pd = crit_decode(&images.join("pipes-data.img"));
    let pd: Vec<_> = pd["entries"].as_array().unwrap().iter().filter(|e| jnum(&e["pipe_id"]) == pipes[0].1).collect();
    assert_eq!(pd.len(), 1, "pipe data saved once: {pd:?}");
    assert_eq!(jnum(&pd[0]["bytes"]), PIPE_OLD.len() as u64);
    assert!(contains(&std::fs::read(images.join("pipes-data.img")).unwrap(), PIPE_OLD));

    // No task is left behind: the descendants and the zombie leave /proc
    // (init reaps them), the root is killed and ours to reap.
    for h in &t.held {
        assert!(h.wait_exit(PATIENCE), "the dump left tree task {} running", h.pid);
    }
    for &pid in t.pids[1..].iter().chain(std::iter::once(&t.zombie)) {
        wait_pid_gone(pid);
    }
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(t.root.child.wait().unwrap().signal(), Some(libc::SIGKILL));
    assert!(processes_in(&t.work, &[]).is_empty(), "processes still run in the tree's directory");
}

#[test]
fn leave_running_keeps_every_task_intact() {
    let t = Tree::start("dump-tree-leave-running", false);
    let layout = t.layout();
    let maps = t.maps();
    for round in 0..2 {
        let images = scratch(&format!("dump-tree-leave-running-{round}"));
        dump_ok(t.pids[0], &images, &["-R"]);
        assert_eq!(pstree(&images).len(), 5);
        t.assert_as_before(&layout, &maps, &format!("dump -R #{round}"));
    }
    let report = t.self_check();
    assert_all_ok("tree after dump -R", &report);
}

#[test]
fn forced_failures_leave_every_task_running() {
    let t = Tree::start("dump-tree-failures", false);
    let layout = t.layout();
    let maps = t.maps();
    let images = scratch("dump-tree-failures");
    // A complete dump first: a failed one must not leave it looking complete.
    dump_ok(t.pids[0], &images, &["-R"]);
    for point in ["after-freeze", "mid-inject", "mid-memory", "mid-tree", "before-write"] {
        dump_failing_at(t.pids[0], &images, point, &[]);
        t.assert_as_before(&layout, &maps, point);
    }
    let report = t.self_check();
    assert_all_ok("tree after failed dumps", &report);
}

#[test]
fn traced_descendant_is_refused() {
    let t = Tree::start("dump-tree-refused", false);
    let images = scratch("dump-tree-refused");
    let c = t.pids[3];
    let others: Vec<i32> = t.pids.iter().copied().filter(|&p| p != c).collect();
    let check_untouched = |what: &str| {
        // Let go, each returns to its wait.
        wait_all_suspended(&others);
        for &pid in &t.pids {
            let (state, tracer) = state_and_tracer(pid);
            assert!(tracer == 0 || pid == c, "{what}: pid {pid} still traced by {tracer}");
            assert!(state == 'S' || pid == c, "{what}: pid {pid} in state {state}");
        }
        assert!(!images.join("inventory.img").exists(), "{what}: inventory written");
    };

    // Traced by us (another tracer than the dump).
    let npid = c;
    // SAFETY: PTRACE_SEIZE on a task of our own tree; no memory is passed.
    assert_eq!(unsafe { libc::ptrace(libc::PTRACE_SEIZE, npid, 0, 0) }, 0, "seize C");
    let out = criu_rs().args(["dump", "-t", &t.pids[0].to_string(), "-D"]).arg(&images).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains(&format!("process {c} is already traced")), "{err}");
    check_untouched("traced");
    // SAFETY: PTRACE_DETACH of the task we seized (it is not stopped by us, so detach from a
    // running tracee fails with ESRCH unless interrupted: interrupt, wait, then detach).
    unsafe {
        libc::ptrace(libc::PTRACE_INTERRUPT, npid, 0, 0);
        let mut st = 0;
        libc::waitpid(npid, &mut st, libc::__WALL);
        libc::ptrace(libc::PTRACE_DETACH, npid, 0, 0);
    }
    wait_all_suspended(&t.pids);
    let report = t.self_check();
    assert_all_ok("tree after refused dumps", &report);
}

#[test]
fn orphaned_session_is_recorded_as_it_is() {
    let t = Tree::start("dump-tree-orphans", true);
    let (f, e) = (t.pids[4], t.root.int("e"));
    let images = scratch("dump-tree-orphans");
    dump_ok(t.pids[0], &images, &["-R"]);
    let tree = pstree(&images);
    assert_parents_first(&tree);
    let fe = tree.iter().find(|x| x.0 == f).unwrap_or_else(|| panic!("no F in {tree:?}"));
    assert_eq!((fe.1, fe.2, fe.3), (t.pids[0], e, e), "F: parent R, group and session of the gone E");
    assert!(!tree.iter().any(|x| x.0 == e), "E is gone, not a task");
    wait_all_suspended(&t.pids);
    assert_all_ok("orphans tree after dump -R", &t.self_check());

    // Killed, the tree (the subreaper's adopted F too) leaves nothing behind.
    let mut t = Tree::start("dump-tree-orphans-kill", true);
    let images = scratch("dump-tree-orphans-kill");
    dump_ok(t.pids[0], &images, &[]);
    t.root.reap();
    for &pid in t.pids[1..].iter().chain(std::iter::once(&t.zombie)) {
        wait_pid_gone(pid);
    }
    assert!(processes_in(&t.work, &[]).is_empty(), "processes still run in the tree's directory");
}

/// The counter forker.c keeps.
fn forks_done(counter: &Path) -> u64 {
    std::fs::read_to_string(counter).ok().and_then(|s| s.trim().parse().ok()).unwrap_or(0)
}

fn wait_more_forks(counter: &Path, than: u64) -> u64 {
    let t = std::time::Instant::now();
    loop {
        let n = forks_done(counter);
        if n > than {
            return n;
        }
        assert!(t.elapsed() < PATIENCE, "forker stuck at {n}");
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
}

#[test]
fn tree_that_forks_while_freezing() {
    let work = scratch("dump-tree-forker");
    let counter = work.join("counter");
    let mut p = Program::spawn("forker", &[&counter]);
    let root = p.pid();
    let mut n = wait_more_forks(&counter, 0);
    let mut seen_children = 0;
    for round in 0..10 {
        let images = scratch(&format!("dump-tree-forker-{round}"));
        dump_ok(root, &images, &["-R"]);
        let tree = pstree(&images);
        assert_parents_first(&tree);
        assert_eq!(tree[0].0, root);
        seen_children += tree.len() - 1;
        for e in &tree[1..] {
            let state = crit_decode(&images.join(format!("core-{}.img", e.0)))["entries"][0]["tc"]["task_state"].clone();
            assert!(jnum(&state) == 1 || jnum(&state) == TASK_DEAD, "{e:?}: state {state}");
            assert_eq!((e.2, e.3), (root, root), "{e:?}: group and session of the root");
        }
        // Every task was let go: it keeps forking.
        n = wait_more_forks(&counter, n);
        assert_eq!(state_and_tracer(root).1, 0);
    }
    assert!(seen_children > 0, "no dump caught a child");
    // A real dump: nothing of the tree stays.
    let images = scratch("dump-tree-forker-kill");
    dump_ok(root, &images, &[]);
    let tree = pstree(&images);
    p.reap();
    for e in &tree[1..] {
        wait_pid_gone(e.0);
    }
    let after = forks_done(&counter);
    std::thread::sleep(std::time::Duration::from_millis(50));
    assert_eq!(forks_done(&counter), after, "something still forks");
}

/// Waits until a task sleeps again, untraced.
fn wait_sleeping(pid: i32) {
    let t = std::time::Instant::now();
    while state_and_tracer(pid) != ('S', 0) {
        assert!(t.elapsed() < PATIENCE, "pid {pid}: {:?}", state_and_tracer(pid));
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
}

#[test]
fn tasks_sharing_a_descriptor_table_share_its_ids() {
    let work = scratch("dump-tree-sharers-work");
    let mut p = Program::spawn("sharers", &[&work]);
    let (r, x, y, ytid, fd) = (p.pid(), p.int("x"), p.int("y"), p.int("ytid"), p.int("fd"));
    let images = scratch("dump-tree-sharers");
    dump_ok(r, &images, &["-R"]);
    let tree = pstree(&images);
    assert_parents_first(&tree);
    let mut pids: Vec<i32> = tree.iter().map(|e| e.0).collect();
    pids.sort();
    assert_eq!(pids, { let mut v = vec![r, x, y]; v.sort(); v });
    let y_entry = tree.iter().find(|e| e.0 == y).unwrap();
    assert_eq!(y_entry.4, { let mut v = vec![y, ytid]; v.sort(); v }, "Y's threads");
    let core_t = crit_decode(&images.join(format!("core-{ytid}.img")));
    assert!(core_t["entries"][0].get("tc").is_none() && core_t["entries"][0].get("thread_core").is_some(), "{core_t}");

    let ids = |pid: i32| {
        let v = crit_decode(&images.join(format!("ids-{pid}.img")));
        let n = |k: &str| jnum(&v["entries"][0][k]) as i32;
        (n("vm_id"), n("files_id"), n("fs_id"), n("sighand_id"))
    };
    assert_eq!(ids(r), (r, r, r, r));
    assert_eq!(ids(x), (x, r, x, x), "X shares R's descriptor table only");
    assert_eq!(ids(y), (y, y, y, y));
    assert!(!images.join(format!("fdinfo-{x}.img")).exists(), "X's table is R's: no fdinfo of its own");
    let table = fdinfo(&images, r);
    assert!(table.iter().any(|f| f.0 == fd as u64), "fd {fd} in R's table: {table:?}");

    for pid in [r, x, y] {
        wait_sleeping(pid);
    }
    let images = scratch("dump-tree-sharers-kill");
    dump_ok(r, &images, &[]);
    p.reap();
    wait_pid_gone(x);
    wait_pid_gone(y);
}

#[test]
fn group_led_from_outside_the_tree_needs_shell_job() {
    let p = Program::spawn("outsider", &[]);
    let (r, q, s) = (p.pid(), p.int("q"), p.int("s"));
    // Q is not ours to reap (init adopted it); hold it by pidfd to kill it safely at the end.
    let _q = Held::open(q).unwrap();
    let _s = Held::open(s).unwrap();
    assert_eq!(stat_ids(s).1, q, "S joined Q's group");
    assert_ne!(stat_ids(q).0, r, "Q is outside R's tree");
    let images = scratch("dump-tree-outsider");
    let out = criu_rs().args(["dump", "-t", &r.to_string(), "-D"]).arg(&images).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "dump should fail without --shell-job");
    assert!(err.contains(&format!("pid {s} is in session {r} / group {q}")) && err.contains("--shell-job"), "{err}");
    for pid in [r, s] {
        wait_sleeping(pid);
    }
    assert!(!images.join("inventory.img").exists());
    dump_ok(r, &images, &["-R", "-j"]);
    let tree = pstree(&images);
    let se = tree.iter().find(|e| e.0 == s).unwrap_or_else(|| panic!("no S in {tree:?}"));
    assert_eq!((se.1, se.2, se.3), (r, q, r), "S recorded in Q's group");
    assert!(!tree.iter().any(|e| e.0 == q), "Q is not part of the tree");
    for pid in [r, s, q] {
        wait_sleeping(pid);
    }
}
