//! File kinds end to end: `tests/programs/fdkinds.c` puts known state on
//! its descriptors, is dumped (and dies), restored, and checks itself from
//! inside after SIGUSR1. From outside: the images decode with crit and say
//! what the program holds, the restored fds point at the same kinds of
//! files, restore leaves the images alone.

mod common;

use common::*;

/// The `files.img` entries of `type` (crit's JSON).
fn entries_of(images: &std::path::Path, ty: &str) -> Vec<serde_json::Value> {
    let files = crit_decode(&images.join("files.img"));
    files["entries"].as_array().unwrap().iter().filter(|e| e["type"] == ty).cloned().collect()
}

#[test]
fn eventfds_pipes_and_unlinked_files_come_back_with_their_state() {
    let work = scratch("fdkinds-work");
    let images = scratch("fdkinds-images");
    let result = work.join("result");
    let mut p = Program::spawn("fdkinds", &[&result]);
    let pid = p.pid();
    wait_all_suspended(&[pid]);
    let fds = fd_kinds(pid);
    assert_eq!(fds.iter().filter(|(_, k)| k == "anon_inode:[eventfd]").count(), 4, "{fds:?}");
    dump_ok(pid, &images, &[]);
    p.reap();

    let efds = entries_of(&images, "EVENTFD");
    let mut counters: Vec<u64> = efds.iter().map(|e| jnum(&e["efd"]["counter"])).collect();
    counters.sort();
    assert_eq!(counters, vec![3, 5, (1 << 40) + 7], "one entry per description (the dup shares one): {efds:?}");
    let data = crit_decode(&images.join("pipes-data.img"));
    let pipes: Vec<(u64, u64)> = data["entries"].as_array().unwrap().iter().map(|e| (jnum(&e["size"]), jnum(&e["bytes"]))).collect();
    for want in [(4096, 100), (256 << 10, 0), (1 << 20, 1 << 20)] {
        assert!(pipes.contains(&want), "no pipe of capacity {} holding {} bytes: {pipes:?}", want.0, want.1);
    }
    // The sparse unlinked file in CRIU 4.2's chunked form: one chunk per extent.
    let ghosts: Vec<serde_json::Value> = std::fs::read_dir(&images)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_str().unwrap().starts_with("ghost-file-"))
        .map(|p| crit_decode(&p))
        .collect();
    let sparse = ghosts.iter().find(|g| g["entries"][0]["chunks"] == true).expect("a chunked ghost file");
    let chunks: Vec<(u64, u64)> = sparse["entries"].as_array().unwrap()[1..].iter().map(|c| (jnum(&c["off"]), jnum(&c["len"]))).collect();
    assert_eq!((jnum(&sparse["entries"][0]["size"]), chunks.len()), (7 << 20, 2), "chunks {chunks:?}");
    assert!(ghosts.iter().any(|g| g["entries"][0].get("size").is_none()), "the small one is raw, without a size");
    // One ghost per inode: the file opened twice has one image, both remaps name it.
    assert_eq!(ghosts.len(), 3, "sparse, small, and one for the file opened twice");
    let remaps = crit_decode(&images.join("remap-fpath.img"));
    let mut ids: Vec<u64> = remaps["entries"].as_array().unwrap().iter().map(|r| jnum(&r["remap_id"]) & 0x7fff_ffff).collect();
    ids.sort();
    ids.dedup();
    assert_eq!((remaps["entries"].as_array().unwrap().len(), ids.len()), (4, 3), "{remaps}");
    let before = snapshot(&images);

    let held = restore_detached(&images, pid);
    wait_all_suspended(&[pid]);
    assert_eq!(fd_kinds(pid), fds, "fds differ from before the dump");
    held.signal(libc::SIGUSR1).unwrap();
    let report = wait_result(&result);
    assert!(held.wait_exit(PATIENCE), "pid {pid} did not exit after its self-check");
    assert_all_ok("restored fdkinds", &report);
    assert_same_dir(&before, &snapshot(&images));
}

#[test]
fn fdkinds_checks_pass_without_checkpoint_and_fail_on_change() {
    let work = scratch("fdkinds-nockpt");
    let result = work.join("result");
    let p = Program::spawn("fdkinds", &[&result]);
    wait_all_suspended(&[p.pid()]);
    // Disturb one counter from outside (through a copy of its fd 10): the
    // program must notice.
    let pidfd = rustix::process::pidfd_open(rustix::process::Pid::from_raw(p.pid()).unwrap(), rustix::process::PidfdFlags::empty()).unwrap();
    let ours = rustix::process::pidfd_getfd(&pidfd, 10, rustix::process::PidfdGetfdFlags::empty()).unwrap();
    rustix::io::write(&ours, &1u64.to_ne_bytes()).unwrap();
    // SAFETY: kill(2) on our own unreaped child.
    unsafe { libc::kill(p.pid(), libc::SIGUSR1) };
    let report = wait_result(&result);
    assert!(report.contains("FAIL eventfd-counter: read 6"), "{report}");
    assert!(report.ends_with("FAIL 1 check(s)\n"), "{report}");
    for name in ["eventfd-semaphore", "eventfd-big-counter", "eventfd-cloexec", "eventfd-dup-shares", "ghost-holes", "ghost-mtime", "pipe-1MiB-full",
                 "ghost-twice-shared-writes"] {
        assert!(report.contains(&format!("ok {name}\n")), "no check {name}:\n{report}");
    }
}

/// A pty pair: the master (ours) and the slave's path.
struct Pty {
    master: std::os::fd::OwnedFd,
    path: String,
}

impl Pty {
    fn new() -> Pty {
        use std::os::fd::FromRawFd;
        // SAFETY: posix_openpt/grantpt/unlockpt/ptsname_r on a descriptor we
        // own; ptsname_r writes at most the buffer length given.
        unsafe {
            let m = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC);
            assert!(m >= 0);
            assert_eq!(libc::grantpt(m), 0);
            assert_eq!(libc::unlockpt(m), 0);
            let mut name = [0u8; 64];
            assert_eq!(libc::ptsname_r(m, name.as_mut_ptr().cast(), name.len()), 0);
            let len = name.iter().position(|b| *b == 0).unwrap();
            Pty { master: std::os::fd::OwnedFd::from_raw_fd(m), path: String::from_utf8(name[..len].to_vec()).unwrap() }
        }
    }

    /// The slave, opened without making it our controlling terminal.
    fn slave(&self) -> std::fs::File {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new().read(true).write(true).custom_flags(libc::O_NOCTTY).open(&self.path).unwrap()
    }

    /// What the master has to read now (never blocks).
    fn output(&self) -> String {
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let mut p = libc::pollfd { fd: std::os::fd::AsRawFd::as_raw_fd(&self.master), events: libc::POLLIN, revents: 0 };
            // SAFETY: one valid pollfd.
            if unsafe { libc::poll(&mut p, 1, 0) } != 1 || p.revents & libc::POLLIN == 0 {
                break;
            }
            match rustix::io::read(&self.master, &mut buf) {
                Ok(n) if n > 0 => out.extend_from_slice(&buf[..n]),
                _ => break,
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    }
}

/// A job started from a shell on terminal A is dumped with --shell-job
/// (refused without), and restored by a criu-rs running on terminal B: the
/// job's terminal fds become B (never A, nor whatever /dev/pts/N is by
/// then), with the dumped raw mode, control characters and window size;
/// /dev/tty is reopened (B, criu-rs's controlling terminal); the job
/// becomes B's foreground group; its output appears on B.
#[test]
fn shell_job_takes_over_the_restoring_terminal() {
    let work = scratch("shelljob-work");
    let images = scratch("shelljob-images");
    let result = work.join("result");
    let (a, b) = (Pty::new(), Pty::new());
    let exe = compile("shelljob");
    let slave_a = a.slave();
    let shell = std::process::Command::new(exe)
        .arg(&result)
        .stdin(slave_a.try_clone().unwrap())
        .stdout(slave_a.try_clone().unwrap())
        .stderr(slave_a)
        .spawn()
        .unwrap();
    let _shell = Held::open(shell.id() as i32).unwrap();
    let job: i32 = wait_result(&result.with_extension("ready")).trim().parse().unwrap();
    wait_all_suspended(&[job]);

    let out = criu_rs().args(["dump", "-t", &job.to_string(), "-D"]).arg(&images).output().unwrap();
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("--shell-job"), "{out:?}");
    dump_ok(job, &images, &["-j"]);
    wait_pid_gone(job);
    let ttys = entries_of(&images, "TTY");
    assert_eq!(ttys.len(), 2, "fds 0-2 (one description) and /dev/tty: {ttys:?}");
    let infos = crit_decode(&images.join("tty-info.img"));
    let pts = infos["entries"].as_array().unwrap().iter().find(|i| i["type"] == "PTY").expect("the pty in tty-info").clone();
    let index: u64 = a.path.rsplit('/').next().unwrap().parse().unwrap();
    assert_eq!((jnum(&pts["pty"]["index"]), jnum(&pts["winsize"]["ws_row"]), jnum(&pts["winsize"]["ws_col"])), (index, 33, 77), "{pts}");
    assert_eq!((jnum(&pts["sid"]), jnum(&pts["pgrp"])), (shell.id() as u64, job as u64), "session and foreground group: {pts}");
    let before = snapshot(&images);

    // criu-rs on terminal B, as its session leader (a shell would be).
    let err_log = work.join("restore.err");
    let slave_b = b.slave();
    let mut restore = std::process::Command::new("setsid")
        .arg("-c")
        .arg(env!("CARGO_BIN_EXE_criu-rs"))
        .args(["restore", "--verify", "-j", "-D"])
        .arg(&images)
        .stdin(slave_b.try_clone().unwrap())
        .stdout(std::fs::File::create(work.join("restore.out")).unwrap())
        .stderr(std::fs::File::create(&err_log).unwrap())
        .spawn()
        .unwrap();
    let t = std::time::Instant::now();
    while !(std::path::Path::new(&format!("/proc/{job}")).exists() && threads_of(job).iter().all(|&t| blocked_in(job, t) == Some(NR_RT_SIGSUSPEND))) {
        assert!(restore.try_wait().unwrap().is_none(), "restore ended: {}", std::fs::read_to_string(&err_log).unwrap());
        assert!(t.elapsed() < PATIENCE, "the job was not restored");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let held = Held::open(job).unwrap();
    // As CRIU does: the restored job (a group leader) is B's foreground group.
    let mut fg: libc::pid_t = 0;
    // SAFETY: TIOCGPGRP on our own master fd writes one pid_t.
    assert_eq!(unsafe { libc::ioctl(std::os::fd::AsRawFd::as_raw_fd(&b.master), libc::TIOCGPGRP, &mut fg) }, 0);
    assert_eq!(fg, job, "the job is the foreground group of the restoring terminal");
    let link = |fd: i32| std::fs::read_link(format!("/proc/{job}/fd/{fd}")).unwrap().display().to_string();
    assert_eq!([link(0), link(1), link(2), link(5)], [b.path.clone(), b.path.clone(), b.path.clone(), "/dev/tty".into()]);
    let _ = std::fs::remove_file(&result);
    held.signal(libc::SIGUSR1).unwrap();
    let report = wait_result(&result);
    let status = loop {
        if let Some(s) = restore.try_wait().unwrap() {
            break s;
        }
        assert!(t.elapsed() < PATIENCE, "criu-rs restore did not end");
        std::thread::sleep(std::time::Duration::from_millis(5));
    };
    assert_all_ok("restored shell job", &report);
    assert_eq!(status.code(), Some(0), "criu-rs exits with the job's status: {}", std::fs::read_to_string(&err_log).unwrap());
    assert!(b.output().contains("HELLO FROM THE JOB"), "the job's output is on the restoring terminal");
    assert!(!a.output().contains("HELLO"), "nothing reached the old terminal");
    // SAFETY: tcgetattr on our own open slave fd into a local struct.
    let lflag = unsafe {
        let mut t: libc::termios = std::mem::zeroed();
        assert_eq!(libc::tcgetattr(std::os::fd::AsRawFd::as_raw_fd(&slave_b), &mut t), 0);
        t.c_lflag
    };
    assert_eq!(lflag & (libc::ECHO | libc::ICANON) as u32, 0, "terminal B is in the dumped raw mode");
    assert_same_dir(&before, &snapshot(&images));
}

/// Tasks sharing one descriptor table (`CLONE_FILES`, two levels deep)
/// share it again after the restore: a dup2 or close in one is seen by the
/// others (checked from inside, `tests/programs/fdtshared.c`), and not by
/// a forked task with its own copy.
#[test]
fn tasks_sharing_an_fd_table_share_it_after_restore() {
    let d = Dirs::new("fdtshared");
    let mut p = Program::spawn("fdtshared", &[&d.work, &d.result]);
    let (pid, x, y, z) = (p.pid(), p.int("x"), p.int("y"), p.int("z"));
    wait_all_suspended(&[pid]);
    dump_ok(pid, &d.images, &[]);
    p.reap();
    for t in [x, y, z] {
        wait_pid_gone(t);
    }
    let ids = |t: i32| jnum(&crit_decode(&d.images.join(format!("ids-{t}.img")))["entries"][0]["files_id"]) as i32;
    assert_eq!([ids(x), ids(z), ids(y)], [pid, pid, y], "X and Z share R's table, Y has its own");
    let held = restore_detached(&d.images, pid);
    let report = d.trigger(&held);
    assert_all_ok("restored fdtshared", &report);
}

/// A table shared with a task that is not the parent (X left the table R
/// and its child Z share) cannot be rebuilt by forking: the dump refuses
/// it by name and the tree runs on.
#[test]
fn an_fd_table_shared_past_a_parent_is_refused_at_dump() {
    let d = Dirs::new("fdtshared-split");
    let p = Program::spawn("fdtshared", &[&d.work, &d.result, std::path::Path::new("split")]);
    let (pid, z) = (p.pid(), p.int("z"));
    wait_all_suspended(&[pid]);
    let out = dump(pid, &d.images, &[]);
    let err = text(&out.stderr);
    assert!(!out.status.success(), "dump succeeded");
    assert!(err.contains(&format!("pid {z}: unsupported: fd table shared (CLONE_FILES) with task {pid}, which is not its parent")), "{err}");
    let held = Held::open(pid).unwrap();
    let report = d.trigger(&held);
    assert_all_ok("fdtshared after the refused dump", &report);
}
