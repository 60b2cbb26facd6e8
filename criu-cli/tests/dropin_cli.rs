//! criu-rs as a drop-in for `criu` on the command line: action scripts at
//! each stage with CRIU's environment, `--status-fd`, `--pidfile` and
//! `stats-restore` in the work directory (`-W`), configuration files,
//! `--display-stats`, options refused where criu-rs would do something
//! else, and `check` answering CRIU's feature names.

mod common;

use common::*;
use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};

/// Still running, untraced, not reaped.
fn running(p: &Sleeper) -> bool {
    p.untouched()
}

/// An action script that appends `ACTION INIT_PID IMAGE_DIR` to `log` and
/// exits with `code` at `fail_at`.
fn script(dir: &Path, log: &Path, fail_at: &str, code: i32) -> std::path::PathBuf {
    let path = dir.join(format!("script-{fail_at}.sh"));
    std::fs::write(
        &path,
        format!(
            "#!/bin/sh\necho \"$CRTOOLS_SCRIPT_ACTION ${{CRTOOLS_INIT_PID:--}} $CRTOOLS_IMAGE_DIR\" >> {}\n\
             [ \"$CRTOOLS_SCRIPT_ACTION\" = \"{fail_at}\" ] && exit {code}\nexit 0\n",
            log.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    path
}

fn lines(log: &Path) -> Vec<String> {
    std::fs::read_to_string(log).unwrap_or_default().lines().map(String::from).collect()
}

fn run(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null()).output().unwrap()
}

#[test]
fn scripts_status_fd_pidfile_and_stats_as_criu() {
    let base = scratch("dropin-stages");
    let (images, work) = (base.join("images"), base.join("work"));
    std::fs::create_dir_all(&images).unwrap();
    std::fs::create_dir_all(&work).unwrap();
    let log = base.join("actions.log");
    let s = script(&base, &log, "none", 0);
    let mut p = Sleeper::start();
    let pid = p.pid();
    let out = run(criu_rs().args(["dump", "--no-default-config", "-t", &pid.to_string(), "-D"]).arg(&images).arg("--action-script").arg(&s));
    assert!(out.status.success(), "{}", text(&out.stderr));
    p.reap();
    let dir = std::fs::canonicalize(&images).unwrap();
    let d = dir.display();
    assert_eq!(lines(&log), [format!("pre-dump {pid} {d}"), format!("post-dump {pid} {d}")]);

    // Restore with -W: the pid file (relative), the log and stats-restore go there.
    let (rx, tx) = rustix::pipe::pipe().unwrap();
    let tx_fd = tx.as_raw_fd();
    let mut cmd = criu_rs();
    cmd.args(["restore", "--verify", "--no-default-config", "-d", "--pidfile", "root.pid", "-o", "restore.log", "-v4", "-D"])
        .arg(&images)
        .arg("-W")
        .arg(&work)
        .arg("--action-script")
        .arg(&s)
        .args(["--status-fd", &tx_fd.to_string()]);
    // SAFETY: clears FD_CLOEXEC on our own pipe end in the child, before exec.
    unsafe {
        cmd.pre_exec(move || {
            libc::fcntl(tx_fd, libc::F_SETFD, 0);
            Ok(())
        })
    };
    let out = run(&mut cmd);
    drop(tx);
    let held = Held::open(pid);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let held = held.expect("the restored task is there");
    let mut status = Vec::new();
    std::fs::File::from(rx).read_to_end(&mut status).unwrap();
    assert_eq!(status, [0], "one NUL byte on --status-fd, then closed");
    assert_eq!(std::fs::read_to_string(work.join("root.pid")).unwrap().trim(), pid.to_string());
    assert!(std::fs::read_to_string(work.join("restore.log")).unwrap().contains("restored"));
    assert!(work.join("stats-restore").is_file() && !images.join("stats-restore").exists());
    let stats = crit_decode(&work.join("stats-restore"));
    assert!(jnum(&stats["entries"][0]["restore"]["pages_restored"]) > 0, "{stats}");
    assert_eq!(
        lines(&log)[2..],
        [format!("pre-restore - {d}"), format!("post-restore {pid} {d}"), format!("pre-resume {pid} {d}"), format!("post-resume {pid} {d}")]
    );
    assert!(std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap().contains("State:\tS"), "the restored sleep runs");
    drop(held);
}

#[test]
fn failing_scripts_stop_the_command() {
    let base = scratch("dropin-script-fails");
    let log = base.join("actions.log");
    // post-dump fails: the dump fails with the script's status and the
    // tree runs on (CRIU's rule), the images complete.
    let mut p = Sleeper::start();
    let out = run(criu_rs().args(["dump", "-t", &p.pid().to_string(), "-D"]).arg(&base).arg("--action-script").arg(script(&base, &log, "post-dump", 7)));
    assert_eq!(out.status.code(), Some(7), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("post-dump"), "{}", text(&out.stderr));
    assert!(running(&p), "the tree was not resumed");
    assert!(base.join("inventory.img").exists());
    // pre-dump fails: nothing is touched.
    let out = run(criu_rs().args(["dump", "-t", &p.pid().to_string(), "-D"]).arg(&base).arg("--action-script").arg(script(&base, &log, "pre-dump", 3)));
    assert!(!out.status.success());
    assert!(running(&p));
    // post-restore fails: the restored tree is killed, the restore fails.
    let out = run(criu_rs().args(["dump", "-t", &p.pid().to_string(), "-D"]).arg(&base));
    assert!(out.status.success(), "{}", text(&out.stderr));
    p.reap();
    let out = run(criu_rs().args(["restore", "--verify", "-d", "-D"]).arg(&base).arg("--action-script").arg(script(&base, &log, "post-restore", 5)));
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("post-restore"), "{}", text(&out.stderr));
    wait_pid_gone(p.pid());
}

#[test]
fn configuration_files_are_read_unless_told_not_to() {
    let base = scratch("dropin-config");
    let home = base.join("home");
    std::fs::create_dir_all(home.join(".criu")).unwrap();
    std::fs::write(home.join(".criu/default.conf"), "# left running, as CRIU's R\nleave-running\n").unwrap();
    let mut p = Sleeper::start();
    let pid = p.pid().to_string();
    let out = run(criu_rs().env("HOME", &home).env_remove("CRIU_CONFIG_FILE").args(["dump", "-t", &pid, "-D"]).arg(&base));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(running(&p), "$HOME/.criu/default.conf was not read");
    // CRIU_CONFIG_FILE is read even with --no-default-config.
    let env_conf = base.join("env.conf");
    std::fs::write(&env_conf, "log-file \"env log.txt\"\n").unwrap();
    let out = run(criu_rs().env("HOME", &home).env("CRIU_CONFIG_FILE", &env_conf).args(["dump", "--no-default-config", "-R", "-t", &pid, "-D"]).arg(&base));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(base.join("env log.txt").exists());
    // --no-default-config: the home file is not read, so the dump kills the tree.
    let out = run(criu_rs().env("HOME", &home).env_remove("CRIU_CONFIG_FILE").args(["dump", "--no-default-config", "-t", &pid, "-D"]).arg(&base));
    assert!(out.status.success(), "{}", text(&out.stderr));
    p.reap();
}

#[test]
fn unsupported_options_are_refused_before_anything_happens() {
    let base = scratch("dropin-refused");
    let p = Sleeper::start();
    let pid = p.pid().to_string();
    for extra in [&["--stream"][..], &["--auto-dedup"], &["--manage-cgroups=full"], &["--leave-stopped"], &["--external", "mnt[/x]:y"]] {
        let out = run(criu_rs().args(["dump", "-t", &pid, "-D"]).arg(&base).args(extra));
        let err = text(&out.stderr);
        assert!(!out.status.success() && err.contains("not supported:"), "{extra:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(running(&p), "{extra:?} touched the process");
    }
    // Options that cannot change criu-rs's result are accepted.
    let out = run(criu_rs()
        .args(["dump", "-R", "-t", &pid, "-D"])
        .arg(&base)
        .args(["--pre-dump-mode=read", "--network-lock", "skip", "--tcp-established", "--file-locks", "--log-pid", "--display-stats"]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("Memory pages written:"), "--display-stats: {}", text(&out.stdout));
    let out = run(criu_rs().args(["restore", "--restore-sibling", "-D"]).arg(&base));
    assert!(!out.status.success() && text(&out.stderr).contains("--restore-sibling only makes sense with --restore-detached"), "{}", text(&out.stderr));
    let out = run(criu_rs().args(["restore", "--inherit-fd", "fd[0]", "-D"]).arg(&base));
    assert!(!out.status.success() && text(&out.stderr).contains("fd[0]"), "{}", text(&out.stderr));
    assert!(running(&p));
}

/// `restore -d --restore-sibling`: the root is a child of criu-rs's
/// parent (here, the test), which can wait for it.
#[test]
fn restore_sibling_gives_the_root_to_criu_rs_s_parent() {
    let images = scratch("dropin-sibling");
    let mut p = Sleeper::start();
    let pid = p.pid();
    dump_ok(pid, &images, &[]);
    p.reap();
    let out = run(criu_rs().args(["restore", "-d", "--restore-sibling", "-D"]).arg(&images));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let ppid: u32 = stat.rsplit(')').next().unwrap().split_whitespace().nth(1).unwrap().parse().unwrap();
    assert_eq!(ppid, std::process::id(), "the restored root's parent");
    // Ours to kill and to reap.
    // SAFETY: plain syscalls on the pid this test restored.
    let (killed, waited) = unsafe { (libc::kill(pid, libc::SIGKILL), libc::waitpid(pid, std::ptr::null_mut(), 0)) };
    assert_eq!((killed, waited), (0, pid));
}

#[test]
fn check_answers_criu_s_feature_names() {
    let check = |args: &[&str]| run(criu_rs().arg("check").args(args));
    // zdtm's exact call.
    let out = check(&["--no-default-config", "-verbosity=0", "--feature", "userns"]);
    assert_eq!(out.status.code(), Some(1), "criu-rs restores no user namespace");
    for yes in ["uffd", "uffd-noncoop", "clone3_set_tid", "mem_dirty_track", "pagemap_scan", "timer_cr_ids"] {
        let out = check(&["--feature", yes]);
        assert_eq!(out.status.code(), Some(0), "{yes}: {}", text(&out.stdout));
        assert_eq!(text(&out.stdout), format!("{yes} is supported\n"));
    }
    let out = check(&["--feature", "list"]);
    let list = text(&out.stdout);
    for name in criu_core::check::CRIU_FEATURES.iter().map(|f| f.name) {
        assert!(list.split_whitespace().any(|n| n == name), "{name} not listed");
        let out = check(&["--feature", name]);
        assert!(matches!(out.status.code(), Some(0 | 1)), "{name}: {}", text(&out.stderr));
    }
    let out = check(&[]);
    assert!(text(&out.stdout).ends_with("Looks good.\n"), "{}", text(&out.stdout));
    let out = check(&["--all"]);
    assert_eq!(out.status.code(), Some(1), "criu-rs cannot do all of CRIU's features");
    assert!(text(&out.stdout).contains("Looks good but some kernel features are missing"), "{}", text(&out.stdout));
    assert!(text(&out.stdout).contains("userns"));
}
