//! Who a process is (issue 9): credentials of every thread of a tree of
//! users (`tests/programs/creds.c`) dumped, restored and checked from
//! inside; credentials criu-rs cannot grant refused before any task exists.

mod common;

use common::*;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Starts creds.c (its tree set up and waiting); returns it, the pids of
/// R, A, B, C and D, and the result file.
fn start_creds(name: &str) -> (Program, Vec<i32>, PathBuf) {
    let work = scratch(&format!("{name}-work"));
    // Tasks of other users write their reports there.
    std::fs::set_permissions(&work, std::fs::Permissions::from_mode(0o777)).unwrap();
    let result = work.with_extension("result");
    let _ = std::fs::remove_file(&result);
    let p = Program::spawn("creds", &[&work, &result]);
    let pids = vec![p.pid(), p.int("a"), p.int("b"), p.int("c"), p.int("d")];
    wait_all_suspended(&pids);
    (p, pids, result)
}

/// Handles on every task, so that a failing test leaves none behind.
fn hold(pids: &[i32]) -> Vec<Held> {
    pids.iter().filter_map(|&pid| Held::open(pid).ok()).collect()
}

/// `Uid:`, `Gid:`, `Groups:` and the `Cap*:` lines of a thread's status.
fn identity_lines(pid: i32, tid: i32) -> Vec<String> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/status")).unwrap();
    s.lines()
        .filter(|l| ["Uid:", "Gid:", "Groups:", "Cap", "NoNewPrivs:"].iter().any(|k| l.starts_with(k)))
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect()
}

/// Every thread of every task with its identity lines.
fn identities(pids: &[i32]) -> Vec<(i32, Vec<String>)> {
    pids.iter().flat_map(|&pid| threads_of(pid).into_iter().map(move |tid| (tid, identity_lines(pid, tid)))).collect()
}

#[test]
fn creds_checks_pass_without_checkpoint() {
    let (_p, pids, result) = start_creds("creds-nockpt");
    let tasks = hold(&pids);
    tasks[0].signal(libc::SIGUSR1).unwrap();
    assert_all_ok("creds without checkpoint", &wait_result(&result));
}

/// A tree of three users and root, with reduced capability sets,
/// securebits, no_new_privs and a thread of its own identity: every id
/// and set comes back, as each task and thread sees from inside.
#[test]
fn tree_of_users_restores_every_identity() {
    let (mut p, pids, result) = start_creds("creds-tree");
    let tasks = hold(&pids);
    let before = identities(&pids);
    assert!(before.len() == 6, "five tasks and A's second thread: {before:?}");
    let images = scratch("creds-tree-images");
    dump_ok(p.pid(), &images, &[]);
    p.reap();
    drop(tasks);
    for &pid in &pids {
        wait_pid_gone(pid);
    }
    // crit reads every thread's credentials, as dumped.
    let a_threads: Vec<i32> = before.iter().map(|(t, _)| *t).filter(|t| !pids.contains(t)).collect();
    let core = crit_decode(&images.join(format!("core-{}.img", a_threads[0])));
    let creds = &core["entries"][0]["thread_core"]["creds"];
    assert_eq!((creds["uid"].as_u64(), creds["euid"].as_u64(), creds["suid"].as_u64()), (Some(1002), Some(1002), Some(1001)));
    let core = crit_decode(&images.join(format!("core-{}.img", pids[1])));
    let creds = &core["entries"][0]["thread_core"]["creds"];
    assert_eq!(creds["fsuid"].as_u64(), Some(1004));
    assert_eq!(creds["groups"], serde_json::json!([3001, 3002, 3003]));
    // (Debian's crit predates cap_amb and no_new_privs: not asked here.)
    assert_eq!(creds["cap_prm"], serde_json::json!([1 | 1 << 3 | 1 << 10, 0]));

    let root = restore_detached(&images, pids[0]);
    let _tasks = hold(&pids[1..]);
    wait_all_suspended(&pids);
    let after = identities(&pids);
    root.signal(libc::SIGUSR1).unwrap();
    assert_all_ok("restored creds tree (checked from inside)", &wait_result(&result));
    assert_eq!(after, before, "identities seen from outside");
}

/// Images of a task running as nobody (a `sleep`), dumped into `name`.
fn dumped_nobody(name: &str) -> (PathBuf, i32) {
    use std::os::unix::process::CommandExt;
    use std::process::Stdio;
    let images = scratch(name);
    let mut child = std::process::Command::new("sleep")
        .arg("1000")
        .uid(65534)
        .gid(65534)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id() as i32;
    // Asleep (not still exec'ing) before the dump.
    let t = std::time::Instant::now();
    while std::fs::read_to_string(format!("/proc/{pid}/comm")).map(|c| c.trim() != "sleep").unwrap_or(true) || blocked_in(pid, pid).is_none_or(|nr| nr != 230) {
        assert!(t.elapsed() < PATIENCE, "sleep never went to sleep");
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    dump_ok(pid, &images, &["-j"]);
    let _ = child.wait();
    wait_pid_gone(pid);
    (images, pid)
}

/// Rewrites the first thread_core's credentials in `core-PID.img` with `edit`
/// (through crit's JSON form).
fn edit_creds(images: &Path, pid: i32, edit: impl FnOnce(&mut serde_json::Value)) {
    let img = images.join(format!("core-{pid}.img"));
    let mut core = crit_decode(&img);
    edit(&mut core["entries"][0]["thread_core"]["creds"]);
    let json = images.join("core.json");
    std::fs::write(&json, serde_json::to_vec(&core).unwrap()).unwrap();
    let out = std::process::Command::new("crit").args(["encode", "-i"]).arg(&json).arg("-o").arg(&img).output().unwrap();
    assert!(out.status.success(), "crit encode: {}", String::from_utf8_lossy(&out.stderr));
    std::fs::remove_file(&json).unwrap();
}

/// Restore must fail naming the credentials, with no task left behind.
fn assert_refused(images: &Path, pid: i32, wrapper: &[&str], want: &str) {
    let before = snapshot(images);
    let out = match wrapper.split_first() {
        Some((prog, args)) => std::process::Command::new(prog)
            .args(args)
            .arg(env!("CARGO_BIN_EXE_criu-rs"))
            .args(["restore", "--verify", "-D"])
            .arg(images)
            .output()
            .unwrap(),
        None => restore(images, &[]),
    };
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "restore should fail");
    assert!(err.contains("cannot restore its credentials") && err.contains(want), "{err}");
    assert!(!Path::new(&format!("/proc/{pid}")).exists(), "pid {pid} exists after a refused restore");
    assert_same_dir(&before, &snapshot(images));
}

/// Capabilities beyond criu-rs's own (CAP_SYS_RESOURCE, which this machine
/// withholds) are refused before any task is created.
#[test]
fn caps_beyond_ours_are_refused() {
    let ours = std::fs::read_to_string("/proc/self/status").unwrap();
    let prm = ours.lines().find_map(|l| l.strip_prefix("CapPrm:")).map(|v| u64::from_str_radix(v.trim(), 16).unwrap()).unwrap();
    let Some(missing) = (0..=40).find(|c| prm & (1u64 << c) == 0) else {
        eprintln!("SKIPPED: criu-rs runs with every capability here");
        return;
    };
    let (images, pid) = dumped_nobody("creds-beyond");
    edit_creds(&images, pid, |c| {
        let bit = 1u64 << missing;
        c["cap_prm"] = serde_json::json!([bit as u32, (bit >> 32) as u32]);
    });
    assert_refused(&images, pid, &[], "permitted capabilities");
}

/// Ids criu-rs cannot map in its user namespace (it runs in one that maps
/// only root) are refused before any task is created.
#[test]
fn unmapped_ids_are_refused() {
    let (images, pid) = dumped_nobody("creds-unmapped");
    assert_refused(&images, pid, &["unshare", "--user", "--map-root-user"], "uid 65534 is not mapped");
}
